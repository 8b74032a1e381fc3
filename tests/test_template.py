"""The template process workers are forked from (SPEC §12): it holds no credential, dies
and is replaced without losing a caller, falls back to exec starts when it cannot start,
reaps every worker, and a forked worker keeps every promise an exec-started one makes."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import probe.pool.spawner as spawner_module
from probe.env import child_env
from probe.pool.spawner import ForkedProcess, Spawner, default_method
from probe.tools.stress import balance_for, identify
from probe.pool.worker import Worker, kill_tree
from support import is_spare, is_template, live_children, live_workers, run_threads, wait_until

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(default_method({}) != "fork", reason="fork starts need Linux pidfds")]


def _template_of(service) -> psutil.Process:
    templates = [p for p in live_children() if is_template(p) and p.ppid() == os.getpid()]
    assert len(templates) == 1, templates
    return templates[0]


def test_template_is_titled_started_by_us_and_parent_of_every_worker(make_service, make_home):
    service = make_service(pool_size=2)
    homes = [make_home(f"t{i}", deepseek=f"sk-title-{i}") for i in range(3)]
    pids = {service.fetch("deepseek", home=home).probe.worker_pid for home in homes}
    template = _template_of(service)
    assert " ".join(template.cmdline()).rstrip() == "quota-probe template"
    # the spare titles itself just after its fork
    assert wait_until(lambda: sum(1 for p in template.children() if is_spare(p)) == 1), "one spare, ahead of need"
    assert {p.pid for p in template.children() if not is_spare(p)} == pids
    assert service.stats()["spawn"]["method"] == "fork"
    assert service.stats()["spawn"]["median_ms"] > 0


def test_a_template_sigkilled_under_load_is_replaced_and_every_caller_is_answered(make_service, make_home):
    """SIGKILL the template while 6 callers probe 3 homes: its workers die with it (their
    callers are answered at once with ``worker_crashed``, well inside the deadline), the
    next spawn starts a new template, and every later probe succeeds."""
    service = make_service(pool_size=2, cache_ttl_s=0)
    homes = [make_home(f"k{i}", deepseek=f"sk-kill-{i}-slow20-") for i in range(3)]
    for home in homes:
        service.fetch("deepseek", home=home)
    first = _template_of(service)
    stop = threading.Event()
    answers: list[tuple[float, object]] = []
    lock = threading.Lock()

    def poll(offset: int) -> None:
        i = offset
        while not stop.is_set():
            started = time.monotonic()
            snap = service.fetch("deepseek", home=homes[i % 3], timeout=5)
            with lock:
                answers.append((time.monotonic() - started, snap))
            i += 1

    callers = [threading.Thread(target=poll, args=(n,)) for n in range(6)]
    for thread in callers:
        thread.start()
    assert wait_until(lambda: len(answers) > 20)
    first.kill()
    assert wait_until(lambda: any(s.error and s.error.code == "worker_crashed" for _, s in answers))
    seen = len(answers)
    assert wait_until(lambda: sum(1 for _, s in answers[seen:] if s.error is None) > 20)
    stop.set()
    for thread in callers:
        thread.join()
    assert all(elapsed < 5 + 1 for elapsed, _ in answers), max(e for e, _ in answers)
    assert {s.error.code for _, s in answers if s.error} <= {"worker_crashed"}
    second = _template_of(service)
    assert second.pid != first.pid and not first.is_running()
    assert all(service.fetch("deepseek", home=home, refresh=True).available for home in homes)


@pytest.mark.parametrize("args, reason", [
    (("-P", "-m", "workers._no_such_module"), "No module named"),
    (("-c", "import sys; sys.exit(3)"), "exited before it was ready"),
])
def test_a_template_that_cannot_start_is_a_logged_error_and_exec_takes_over(make_service, make_home, monkeypatch,
                                                                           caplog, args, reason):
    monkeypatch.setattr(spawner_module, "TEMPLATE_ARGS", args)
    service = make_service()
    home = make_home("broken-template", deepseek="sk-broken-template")
    with caplog.at_level(logging.ERROR, logger="probe.spawner"):
        snaps = [service.fetch("deepseek", home=home, refresh=True) for _ in range(3)]
    assert all(s.available for s in snaps) and snaps[0].probe.path == "slot_start"
    assert service.stats()["spawn"]["method"] == "exec"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and reason in errors[0].getMessage() and "exec" in errors[0].getMessage()
    assert not any(is_template(p) for p in live_children())


def test_a_template_that_never_says_ready_does_not_hang_anyone(make_service, make_home, monkeypatch, caplog):
    monkeypatch.setattr(spawner_module, "TEMPLATE_ARGS", ("-c", "import time; time.sleep(60)"))
    monkeypatch.setattr(spawner_module, "TEMPLATE_START_TIMEOUT_S", 1.0)
    service = make_service()
    home = make_home("silent-template", deepseek="sk-silent-template")
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="probe.spawner"):
        snap = service.fetch("deepseek", home=home, timeout=10)
    assert snap.available and time.monotonic() - started < 10
    assert service.stats()["spawn"]["method"] == "exec"
    assert "not ready within 1 s" in caplog.text


def test_every_result_of_two_hundred_homes_matches_its_home(emulator, make_service, make_home):
    """A home's token reaches only its own workers: 200 homes through a 16-worker budget
    (so workers are forked, evicted and forked again all the time), 4 callers, and every
    answer carries its own home's balance."""
    homes = []
    for i in range(200):
        token = f"sk-iso-{i}"
        emulator.script(token, {"is_available": True, "balance_infos": [
            {"currency": "USD", "total_balance": balance_for(i, 0), "granted_balance": "0",
             "topped_up_balance": "0"}]})
        homes.append(make_home(f"iso{i:03d}", deepseek=token))
    service = make_service(max_total_workers=16, cache_ttl_s=0)
    order = [i for _ in range(2) for i in range(200)]
    lock = threading.Lock()
    mismatches, answered = [], [0]

    def caller() -> None:
        while True:
            with lock:
                if not order:
                    return
                index = order.pop()
            snap = service.fetch("deepseek", home=homes[index], timeout=20)
            with lock:
                answered[0] += 1
                if not snap.available or identify(snap.details) != (index, 0):
                    mismatches.append((index, snap.details, snap.error))

    run_threads(4, caller)
    assert answered[0] == 400 and not mismatches, mismatches[:3]
    assert service.stats()["spawns"] >= 200


def test_kill_tree_takes_a_forked_workers_descendants_through_its_pidfd():
    """The forked-worker branch of kill_tree: the handle is not our Popen, the kill goes
    through the pidfd and the descendants found before it die too."""
    script = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; "
              "time.sleep(60)']); print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        grandchildren = psutil.Process(proc.pid).children(recursive=True)
        r, w = os.pipe()
        handle = ForkedProcess(proc.pid, os.pidfd_open(proc.pid), open(w, "wb"), open(r, "rb", buffering=0))
        kill_tree(handle)
        assert handle.returncode == -9
        _, alive = psutil.wait_procs(grandchildren, timeout=10)
        assert not alive
        handle.stdin.close()
        handle.stdout.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ten_thousand_spawns_leave_no_zombie_and_no_descriptor(tmp_path):
    """The template reaps every worker it forked: 10,000 starts (50 at a time, each
    closed by EOF), then no zombie below the template and the parent's FD count back
    where it was."""
    me = psutil.Process()
    fds_before = me.num_fds()
    spawner = Spawner()
    env = child_env(tmp_path)
    try:
        for _ in range(200):
            workers = [Worker(tmp_path, env, spawner) for _ in range(50)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.close()
        template = psutil.Process(spawner.template_pid)

        def zombies() -> list[psutil.Process]:
            return [c for c in template.children() if c.status() == psutil.STATUS_ZOMBIE]

        assert wait_until(lambda: all(is_spare(c) for c in template.children())), \
            (len(template.children()), len(zombies()))
        assert me.num_fds() <= fds_before + 1   # + the template's control socket
    finally:
        spawner.close()
    assert me.num_fds() <= fds_before


@pytest.mark.parametrize("where", ["cwd", "home"])
def test_an_httpx_py_in_the_working_directory_or_a_home_shadows_nothing(make_service, make_home, tmp_path,
                                                                        monkeypatch, spawn_method, where):
    """``python -P`` (template and exec workers alike): files beside the service or in a
    home are never imported in place of httpx or the worker code."""
    home = make_home("shadow", deepseek="sk-shadow")
    trap = "import os\nos._exit(97)\n"
    target = tmp_path / "cwd" if where == "cwd" else home
    target.mkdir(exist_ok=True)
    for name in ("httpx.py", "setproctitle.py", "json.py"):
        (target / name).write_text(trap)
    (target / "workers").mkdir()
    (target / "workers" / "__init__.py").write_text(trap)
    monkeypatch.chdir(tmp_path / "cwd" if where == "cwd" else home)
    service = make_service()
    snaps = [service.fetch("deepseek", home=home, refresh=True) for _ in range(2)]
    assert all(s.available for s in snaps), [s.error for s in snaps]
    assert service.fetch("deepseek", home=home, refresh=True, timeout=5).probe.path == "warm"
    assert len(live_workers()) == 1


def test_a_forked_workers_handle_may_be_polled_from_many_threads_as_it_exits():
    """A stats reader polls a worker while its owner waits for it to exit: however many
    threads see the exit at once, the pidfd is closed exactly once -- a second close of
    the same number would close whatever file got that number in between, or raise."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        r, w = os.pipe()
        handle = ForkedProcess(proc.pid, os.pidfd_open(proc.pid), open(w, "wb"), open(r, "rb", buffering=0))
        bystander_r, bystander_w = os.pipe()   # open files whose numbers a double close could hit
        failures: list[BaseException] = []
        barrier = threading.Barrier(17)

        def watch() -> None:
            barrier.wait()
            try:
                while handle.poll() is None:
                    pass
            except BaseException as exc:  # noqa: BLE001 -- collected for the assertion
                failures.append(exc)

        threads = [threading.Thread(target=watch) for _ in range(16)]
        for thread in threads:
            thread.start()
        barrier.wait()
        proc.stdin.close()                      # the process exits now
        assert handle.wait(10) == 0
        for thread in threads:
            thread.join()
        assert not failures, failures
        os.fstat(bystander_r), os.fstat(bystander_w)   # still ours
        handle.stdin.close()
        handle.stdout.close()
        os.close(bystander_r)
        os.close(bystander_w)
    finally:
        proc.kill()
        proc.wait()


REAP_WITHOUT_HANDLER = r"""
import os, select, signal, socket, sys, threading, time
from workers import template

wakeup = template._watch_children()
# The Python-level SIGCHLD handler does nothing here: exactly the state of a template whose
# SIGCHLD arrived after its last bytecode check and before it blocked (the handler runs
# only once the block ends). The C-level handler still runs, as it always does.
signal.signal(signal.SIGCHLD, lambda signum, frame: None)
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
stdin_r, stdin_w = os.pipe()
pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "import sys; sys.stdin.buffer.read()"], dict(os.environ),
                     file_actions=[(os.POSIX_SPAWN_DUP2, stdin_r, 0)])
os.close(stdin_r)
pidfd = os.pidfd_open(pid)   # the child waits for EOF on stdin: its pid cannot have been reused
verdict = []


def observe():
    exited = select.poll()
    exited.register(pidfd, select.POLLIN)
    os.close(stdin_w)        # the child exits now ...
    exited.poll()            # ... and has: a zombie until its parent reaps it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            verdict.append("reaped")
            break
        time.sleep(0.005)
    else:
        verdict.append("zombie")
    ours.send(b"done")       # only now a control message: it must not be what wakes the reaper


observer = threading.Thread(target=observe)
observer.start()
message, fds = template._next_message(theirs, wakeup)
observer.join()
print(verdict[0], message.decode())
"""


def test_an_exited_worker_is_reaped_while_the_template_waits_for_no_request():
    """The template reaps a child that exits while it waits for a spawn request, even when
    no request ever comes and its Python-level SIGCHLD handler has not run: the exit wakes
    the loop through the signal wakeup pipe. A template that reaped in that handler left a
    worker whose SIGCHLD landed just before ``recvmsg`` blocked a zombie until the next
    spawn (forever on a quiet service), which the stress run's ``no_zombies`` counts."""
    result = subprocess.run([sys.executable, "-P", "-c", REAP_WITHOUT_HANDLER], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["reaped", "done"], result.stdout


@pytest.mark.parametrize("args", [("fetch", "deepseek"), ("fetch", "--home")], ids=["provider", "home"])
def test_a_cli_run_leaves_a_zombie(emulator, make_home, args):
    """Issue #26 item 11: after ``probe fetch`` exited, the template's spare child was left
    behind -- ``[quota-probe spa] <defunct>`` until init reaped it, and never under an init
    that does not reap (a container's PID 1). The CLI runs under a subreaper that reaps
    nobody but the CLI: when it has exited, nothing of quota-probe is left, alive or not."""
    import json

    home = make_home("zombie-cli", deepseek="sk-zombie-cli")
    argv = [*args, str(home)] if args[-1] == "--home" else [*args, "--home", str(home)]
    env = {**os.environ, **emulator.env()}
    env.pop("PROBE_SPAWN", None)
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("subreaper.py")), sys.executable, "-m",
                             "probe.cli", *argv], capture_output=True, text=True, env=env, timeout=60)
    report = json.loads(result.stdout)
    assert report["rc"] == 0
    assert report["left"] == []


def test_the_first_start_waits_for_the_template_only_until_the_callers_deadline(make_service, make_home,
                                                                               monkeypatch, caplog):
    """A template that never comes up: the first caller (1 s deadline) gets ``timeout`` at
    its deadline, not when the template start gives up (5 s here, 15 s by default); its
    queued start is dropped and nothing is left running for it. Once the template start
    gives up, one error is logged and exec-started workers answer everyone after."""
    monkeypatch.setattr(spawner_module, "TEMPLATE_ARGS", ("-c", "import time; time.sleep(60)"))
    monkeypatch.setattr(spawner_module, "TEMPLATE_START_TIMEOUT_S", 5.0)
    service = make_service()
    home = make_home("never-template", deepseek="sk-never-template")
    with caplog.at_level(logging.ERROR, logger="probe.spawner"):
        started = time.monotonic()
        first = service.fetch("deepseek", home=home, timeout=1.0)
        waited_s = time.monotonic() - started
        assert first.error is not None and first.error.code == "timeout", first
        assert waited_s < 4.0, f"the caller waited {waited_s:.1f} s for the template"
        assert wait_until(lambda: service.stats()["spawn"]["method"] == "exec", 20)
        later = service.fetch("deepseek", home=home, timeout=10)
    assert later.available
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "exec" in errors[0].getMessage()
    assert not any(is_template(p) for p in live_children())
