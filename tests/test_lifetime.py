"""Workers die with their parent; killing a worker takes its whole process tree."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from probe.worker import kill_tree
from support import wait_until

pytestmark = pytest.mark.timeout(60)


def test_kill_tree_kills_grandchildren_too():
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    grandchildren = psutil.Process(proc.pid).children(recursive=True)
    assert len(grandchildren) == 1
    kill_tree(proc)
    proc.stdout.close()
    assert proc.returncode == -9
    gone, alive = psutil.wait_procs(grandchildren, timeout=10)
    assert not alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_worker_busy_on_a_hung_provider_dies_when_its_parent_is_killed(emulator, make_home, tmp_path):
    """The worker is blocked inside a provider request (not reading stdin, so EOF cannot
    save us); SIGKILL of the parent process must still take it down at once, long before
    its 30 s probe timeout — that is PR_SET_PDEATHSIG at work."""
    home = make_home("orphan", deepseek="sk-orphan-hang-")
    parent_script = textwrap.dedent(f"""
        import threading, time, sys
        from probe import ProbeConfig, ProbeService
        service = ProbeService(ProbeConfig(provider_urls={emulator.provider_urls()!r}))
        # fetch from a short-lived thread, as a web handler would
        threading.Thread(target=service.fetch, args=("deepseek",), kwargs={{"home": {str(home)!r}, "timeout": 30}}).start()
        while True:
            state = service.stats()["homes"].get({str(home.resolve())!r})
            if state and state["busy"]:
                print(state["workers"][0]["pid"], flush=True)
                break
            time.sleep(0.01)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_script], stdout=subprocess.PIPE)
    try:
        worker_pid = int(parent.stdout.readline())
        assert wait_until(lambda: emulator.count(token="sk-orphan-hang-") == 1)
        worker = psutil.Process(worker_pid)
        assert worker.is_running()
        parent.kill()
        parent.wait()
        worker.wait(timeout=10)  # raises TimeoutExpired if the worker outlived its parent
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def test_sigterm_to_the_backend_mid_probe_reaps_every_child(tmp_path):
    """``probe serve`` gets SIGTERM while a probe is in flight: it shuts down in order --
    the in-flight caller still gets its answer, no worker outlives the backend (checked
    from outside with psutil), and the shared cache holds only whole entries."""
    import json
    import os
    import signal
    import socket
    import threading

    import httpx

    from probe.snapshot import Snapshot

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cache_dir = tmp_path / "cache"
    server = subprocess.Popen([sys.executable, "-m", "probe.cli", "serve", "--demo", "--port", str(port),
                               "--cache-dir", str(cache_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, "PROBE_TOKEN": "t"})
    answers: list[httpx.Response] = []
    try:
        assert "quota-probe backend on" in server.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        httpx.get(f"{base}/api/quota", params={"home": "main"}, timeout=30)
        home = httpx.get(f"{base}/api/pool", timeout=30).json()["home_ids"]["main"]
        (Path(home) / ".env").write_text("DEEPSEEK_API_KEY=sk-demo-slow3000-\n")
        in_flight = threading.Thread(target=lambda: answers.append(
            httpx.get(f"{base}/api/quota", params={"home": "main", "provider": "deepseek"}, timeout=30)))
        in_flight.start()
        assert wait_until(lambda: httpx.get(f"{base}/api/pool", timeout=30).json()["homes"][home]["busy"] >= 1)
        workers = psutil.Process(server.pid).children(recursive=True)
        assert workers
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) is not None
        in_flight.join(30)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived the backend: {[p.pid for p in alive]}"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()
    assert answers and answers[0].status_code == 200 and answers[0].json()["available"], "in-flight caller dropped"
    entries = list(cache_dir.glob("*/*.json"))
    assert entries and not list(cache_dir.glob("*/.tmp-*"))
    for entry in entries:
        assert Snapshot.from_dict(json.loads(entry.read_bytes())["snapshot"]).provider
