"""The child loop over real pipes: protocol, robustness, lifetime."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from probe.env import child_env
from probe.pool.spawner import Spawner
from probe.pool.worker import Worker, WorkerProtocolError

pytestmark = pytest.mark.timeout(30)
ROOT = Path(__file__).resolve().parent.parent


def start_raw(home: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-P", "-m", "workers", *extra], env=child_env(home),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def ask(proc: subprocess.Popen, line: bytes) -> dict:
    proc.stdin.write(line + b"\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def test_ping_echoes_id_and_pid(tmp_path):
    """The first reply also says when the worker became ready (its monotonic clock, the
    same clock as the parent's), so the parent can time the start; later ones do not."""
    asked_at = time.monotonic()
    proc = start_raw(tmp_path)
    try:
        first = ask(proc, b'{"id": "a1", "op": "ping"}')
        ready_at = first.pop("ready_at")
        assert first == {"id": "a1", "ok": True, "pid": proc.pid}
        assert asked_at < ready_at < time.monotonic()
        assert ask(proc, b'{"id": 7, "op": "ping"}') == {"id": 7, "ok": True, "pid": proc.pid}
    finally:
        proc.stdin.close()
        assert proc.wait(10) == 0
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("line, expected_id", [
    (b"not json at all", None),
    (b"[1, 2, 3]", None),
    (b'{"op": "ping"}', None),
    (b'{"id": true, "op": "ping"}', None),
    (b'{"id": "x", "op": "explode"}', "x"),
    (b'{"id": "y", "op": "probe"}', "y"),
    (b'{"id": "z", "op": "probe", "provider": "anthropic", "timeout_s": -1}', "z"),
    (b"\xff\xfe\x00garbage", None),
    (b"x" * 200_000, None),
])
def test_malformed_request_gets_error_reply_and_loop_survives(tmp_path, line, expected_id):
    proc = start_raw(tmp_path)
    try:
        reply = ask(proc, line)
        assert reply["ok"] is False and reply["id"] == expected_id
        assert reply["error"]["code"] == "bad_request"
        assert ask(proc, b'{"id": "after", "op": "ping"}')["ok"] is True
    finally:
        proc.stdin.close()
        assert proc.wait(10) == 0
        assert proc.stderr.read() == b"", "no traceback on stderr"
        proc.stdout.close()
        proc.stderr.close()


def test_shutdown_replies_then_exits(tmp_path):
    proc = start_raw(tmp_path)
    reply = ask(proc, b'{"id": "s", "op": "shutdown"}')
    assert reply.pop("ready_at") and reply == {"id": "s", "ok": True}
    assert proc.wait(10) == 0
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()


def test_eof_on_stdin_ends_the_loop(tmp_path):
    proc = start_raw(tmp_path)
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert proc.stdout.read() == b""
    proc.stdout.close()
    proc.stderr.close()


def test_once_answers_a_single_request_and_exits(tmp_path):
    proc = start_raw(tmp_path, "--once")
    out, err = proc.communicate(b'{"id": 1, "op": "ping"}\n{"id": 2, "op": "ping"}\n', timeout=10)
    assert [json.loads(l)["id"] for l in out.splitlines()] == [1]
    assert proc.returncode == 0 and err == b""


def test_probe_without_home_is_typed_error(tmp_path):
    env = child_env(tmp_path / "gone")
    proc = subprocess.Popen([sys.executable, "-P", "-m", "workers", "--once"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = proc.communicate(b'{"id": 1, "op": "probe", "provider": "anthropic"}\n', timeout=20)
    snap = json.loads(out)["snapshot"]
    assert snap["available"] is False and snap["error"]["code"] == "home_not_found"


def test_workers_package_never_imports_probe():
    for path in (ROOT / "workers").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "probe" or n.startswith("probe.") for n in names), f"{path} imports {names}"


def test_reply_with_wrong_id_is_never_returned_and_retires_the_worker(tmp_path, spawn_method):
    """A reply that belongs to another request (here the answer to one injected behind the
    handle's back) is never handed to the caller: the handle reports ``bad_response`` and
    kills the confused process instead of reading on."""
    spawner = Spawner()
    worker = Worker(tmp_path, child_env(tmp_path), spawner)
    try:
        worker.start()
        worker.proc.stdin.write(b'{"id": "intruder", "op": "ping"}\n')
        with pytest.raises(WorkerProtocolError) as failure:
            worker.request({"op": "ping"}, time.monotonic() + 10)
        assert failure.value.code == "bad_response" and "another request" in str(failure.value)
        assert worker.closed and worker.proc.returncode == -9
    finally:
        worker.close()
        spawner.close()


def test_worker_survives_exit_of_the_thread_that_asked_for_it(tmp_path, spawn_method):
    """PR_SET_PDEATHSIG fires when the forking *thread* exits. A worker requested from a
    short-lived thread must outlive that thread (it is forked by the spawner thread)."""
    spawner = Spawner()
    worker = Worker(tmp_path, child_env(tmp_path), spawner)
    starter = threading.Thread(target=worker.start)
    starter.start()
    starter.join()
    try:
        reply = worker.request({"op": "ping"}, time.monotonic() + 10)
        assert reply["pid"] == worker.pid
    finally:
        worker.close()
        spawner.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_trap_is_real_a_child_forked_by_a_dying_thread_is_killed(tmp_path):
    """Control for the test above: forking from the short-lived thread itself gets the
    worker SIGKILLed when that thread ends, so the spawner thread is what saves it."""
    box: list[subprocess.Popen] = []
    pinged: list[bool] = []

    def fork_and_leave():
        proc = start_raw(tmp_path)
        box.append(proc)   # before anything can fail: the process is reaped below whatever happens
        pinged.append(ask(proc, b'{"id": 1, "op": "ping"}')["ok"])  # the child is up: its prctl is armed

    thread = threading.Thread(target=fork_and_leave)
    thread.start()
    thread.join()
    proc = box[0]
    try:
        assert pinged == [True]
        assert proc.wait(10) == -9
    finally:
        if proc.poll() is None:   # a Popen left unreaped warns "still running" at some later GC,
            proc.kill()           # blamed on whichever test runs then
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_spawner_close_takes_its_workers_along(tmp_path, spawn_method):
    """The worker's life is bound to the spawner thread (exec) or to the template process
    the spawner thread started (fork): when the spawner closes, the kernel kills the worker
    even though nobody closed its stdin."""
    spawner = Spawner()
    worker = Worker(tmp_path, child_env(tmp_path), spawner)
    worker.start()
    assert worker.request({"op": "ping"}, time.monotonic() + 10)["ok"]
    assert spawner.method == spawn_method and (spawner.template_pid is not None) == (spawn_method == "fork")
    spawner.close()
    # a forked worker's handle only knows that it exited (the template reaped it), and
    # wait() returning at all is the pidfd saying so
    assert worker.proc.wait(10) == (-9 if spawn_method == "exec" else 0)
    assert spawner.template_pid is None
    worker.close()


def _frozen_stat(home: Path, mtime_s_ago: float, ctime_s_ago: float):
    """What a file system with coarse timestamps shows: the same stat data before and
    after an in-place, same-size rewrite (this machine's ext4 gives every write its own
    mtime, so the coarse tick is simulated -- the one thing that cannot exist here)."""
    import workers.credentials as credentials

    stat = credentials.credential_stat(home)
    now = time.time_ns()
    mtime, ctime = now - int(mtime_s_ago * 1e9), now - int(ctime_s_ago * 1e9)
    return lambda _home: tuple(None if p is None else (p[0], p[1], mtime, ctime) for p in stat)


@pytest.mark.parametrize("mtime_s_ago, ctime_s_ago, expected", [
    (0.0, 0.0, "sk-after--rewrite"),    # just written: equal stat proves nothing, re-read
    (10.0, 10.0, "sk-before-rewrite"),  # settled: the parsed copy is reused (control row)
    (10.0, 0.0, "sk-before-rewrite"),   # mtime set back (touch -d): no rewrite can reproduce it
])
def test_child_rereads_credentials_until_their_stat_data_has_settled(tmp_path, monkeypatch, mtime_s_ago,
                                                                     ctime_s_ago, expected):
    """A file changed within the racy window may change again without its stat data
    showing it, so the child re-reads it on every probe until the window has passed
    (git's racy-index rule); a settled file's parsed copy is reused (the control rows show
    the reuse is real, so the rule is what makes the difference)."""
    import workers.loop as loop_module
    import workers.credentials as credentials

    (tmp_path / ".env").write_text("DEEPSEEK_API_KEY=sk-before-rewrite\n")
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    monkeypatch.setattr(credentials, "credential_stat", _frozen_stat(tmp_path, mtime_s_ago, ctime_s_ago))
    loop = loop_module.Loop()
    assert loop.credentials().env_value("DEEPSEEK_API_KEY")[1] == "sk-before-rewrite"
    with open(tmp_path / ".env", "r+") as handle:  # same size, in place
        handle.write("DEEPSEEK_API_KEY=sk-after--rewrite\n")
    assert loop.credentials().env_value("DEEPSEEK_API_KEY")[1] == expected
