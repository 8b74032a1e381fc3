"""Workers die with their parent; killing a worker takes its whole process tree."""
from __future__ import annotations

import subprocess
import sys
import textwrap

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
