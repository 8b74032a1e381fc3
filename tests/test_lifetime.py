"""Workers die with their parent; killing a worker takes its whole process tree."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from probe.pool.worker import kill_tree
from support import demo_root, reaped, still_running, wait_until

#: every test here runs once per way a worker starts (fork from the template, exec)
pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("spawn_method")]


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
def test_parent_sigkill_takes_idle_warm_and_busy_workers_within_one_second(emulator, make_home, spawn_method):
    """Two homes with full warm pools sitting idle (blocked reading stdin) and one worker
    busy inside a hung provider request: SIGKILL the parent and every quota-probe process
    it had -- the template and its spare too, with fork starts -- must be gone within 1 s, checked from
    outside with psutil (SPEC §12)."""
    idle_a = make_home("orphans-a", deepseek="sk-orphans-a")
    idle_b = make_home("orphans-b", openrouter="sk-or-v1-orphans-b")
    busy = make_home("orphans-busy", deepseek="sk-orphans-busy-hang-")
    script = textwrap.dedent(f"""
        import threading, time
        from probe import ProbeConfig, ProbeService
        service = ProbeService(ProbeConfig(pool_size=2, prewarm=True, provider_urls={emulator.provider_urls()!r}))
        service.fetch("deepseek", home={str(idle_a)!r})
        service.fetch("openrouter", home={str(idle_b)!r})
        threading.Thread(target=service.fetch, args=("deepseek",),
                         kwargs={{"home": {str(busy)!r}, "timeout": 60}}, daemon=True).start()
        def ready():
            homes = service.stats()["homes"]
            return (all(homes.get(h, {{}}).get("alive") == 2 for h in ({str(idle_a)!r}, {str(idle_b)!r}))
                    and homes.get({str(busy)!r}, {{}}).get("busy") == 1)
        while not ready():
            time.sleep(0.01)
        print(" ".join(str(w["pid"]) for s in service.stats()["homes"].values() for w in s["workers"]), flush=True)
        time.sleep(120)
    """)
    with reaped(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)) as parent:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert emulator.wait_for(token="sk-orphans-busy-hang-")
        workers = [psutil.Process(pid) for pid in pids]
        assert len(workers) >= 5 and all(w.is_running() for w in workers)
        everything = psutil.Process(parent.pid).children(recursive=True)
        assert {w.pid for w in workers} <= {p.pid for p in everything}
        assert len(everything) == len(workers) + 2 * (spawn_method == "fork")   # + the template and its spare
        parent.kill()
        parent.wait()
        alive = still_running(everything, 1.0)
        assert not alive, f"processes outlived their parent by 1 s: {[p.pid for p in alive]}"


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
    with reaped(server):
        assert "quota-probe backend on" in server.stdout.readline()
        home = str(demo_root(server) / "main")
        base = f"http://127.0.0.1:{port}"
        httpx.get(f"{base}/api/quota", params={"home": "main"}, timeout=30)
        # 1.5 s: well inside the 4 s a request in flight gets after SIGTERM (GRACEFUL_S), even
        # with an exec-started worker on a loaded machine
        (Path(home) / ".env").write_text("DEEPSEEK_API_KEY=sk-demo-slow1500-\n")
        in_flight = threading.Thread(target=lambda: answers.append(
            httpx.get(f"{base}/api/quota", params={"home": "main", "provider": "deepseek"}, timeout=30)))
        in_flight.start()
        assert wait_until(lambda: httpx.get(f"{base}/api/pool", timeout=30).json()["homes"]["main"]["busy"] >= 1)
        workers = psutil.Process(server.pid).children(recursive=True)
        assert workers
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) is not None
        in_flight.join(30)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived the backend: {[p.pid for p in alive]}"
    assert answers and answers[0].status_code == 200 and answers[0].json()["available"], "in-flight caller dropped"
    entries = list(cache_dir.glob("*/*.json"))
    assert entries and not list(cache_dir.glob("*/.tmp-*"))
    for entry in entries:
        assert Snapshot.from_dict(json.loads(entry.read_bytes())["snapshot"]).provider


def test_wait_for_exit_reaps_an_exited_worker_and_gives_up_on_a_running_one():
    """The retire path's wait: True (and reaped) once the process is gone, False after the
    timeout for one that keeps running -- which the caller then kills."""
    from probe.pool.worker import wait_for_exit

    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    assert wait_for_exit(quick, 10) and quick.returncode == 0
    assert wait_for_exit(quick, 0)          # already reaped: no pidfd on a recycled pid
    stubborn = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with reaped(stubborn):
        assert not wait_for_exit(stubborn, 0.2) and stubborn.poll() is None
        kill_tree(stubborn)
        assert stubborn.returncode == -9
