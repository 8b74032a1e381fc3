"""How a worker process comes to exist: forked from a template process, or exec-started.
Nothing outside this module knows which.

**One long-lived thread starts every process.** On Linux ``PR_SET_PDEATHSIG`` fires when
the *thread* that forked the child exits, not when the process does. Callers that claim a
pool slot are often short-lived threads (a request handler, an ``asyncio.to_thread`` call);
a process forked from one of them would be SIGKILLed the moment that thread finished.
Starting everything from this thread binds each process's life to the spawner's, which
lives as long as its service. It also owns the template's control socket, so no lock is
needed around it: spawn requests are serialized here (a fork costs ~1 ms).

**fork (default where Linux pidfds exist)**: the spawner starts ``python -P -m
workers.template`` once (lazily, on the first spawn), with the workers' environment
allowlist and no home; each worker is then a ``fork()`` of it (``workers/template.py``
explains the child side). The worker is the template's child, not ours, so we hold a
**pidfd** for it (sent by the template): we can wait for it and signal it without any risk
of hitting a recycled pid, and the template reaps it. A template that dies is restarted on
the next spawn; one that cannot start (or stops answering) is logged once as an error and
the service falls back to exec starts for good.

**exec** (``PROBE_SPAWN=exec`` in the environment when the spawner is created, or a
platform without pidfds): ``python -P -m workers`` per worker, as in 0.1.

Why not ``multiprocessing``'s forkserver: it is one server per interpreter, started from
whichever thread first needs it (not ours, so PDEATHSIG would follow that thread), with
the parent's *whole* environment (provider keys included) and its ``sys.path`` (no ``-P``);
its children are ``Process`` objects with pickled targets rather than pipe-speaking
workers. The template here is ~150 lines and keeps every rule above.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Any, BinaryIO, TypeVar

from probe.env import template_env

T = TypeVar("T")
log = logging.getLogger("probe.spawner")

#: a template imports httpx and loads a CA bundle; more than this means it is broken
TEMPLATE_START_TIMEOUT_S = 15.0
#: a fork takes milliseconds; a template that does not answer within this is broken
TEMPLATE_REPLY_TIMEOUT_S = 5.0
#: how many recent starts ``spawn_stats`` takes its median over (SPEC §12)
SPAWN_SAMPLES = 100
#: how the template is started (after ``sys.executable``; its control socket's fd is appended)
TEMPLATE_ARGS: tuple[str, ...] = ("-P", "-m", "workers.template")


class SpawnerClosed(RuntimeError):
    pass


class TemplateUnavailable(RuntimeError):
    """The template process could not be started or stopped answering."""


class SpawnDeadline(TimeoutError):
    """No process was ready before the caller's deadline (the spawner thread was busy:
    typically starting the template, which may take up to ``TEMPLATE_START_TIMEOUT_S``)."""


def default_method(environ: dict[str, str] | None = None) -> str:
    """``fork`` where the platform has what the template needs (fork, fd passing, pidfds),
    unless ``PROBE_SPAWN=exec``."""
    requested = (os.environ if environ is None else environ).get("PROBE_SPAWN", "").strip().lower()
    if requested == "exec":
        return "exec"
    supported = (hasattr(os, "fork") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")
                 and hasattr(signal, "pidfd_send_signal") and hasattr(socket, "SOCK_SEQPACKET"))
    return "fork" if supported else "exec"


class ForkedProcess:
    """The parent's handle on a worker forked by the template: the slice of the
    ``subprocess.Popen`` interface the worker handle uses, backed by a pidfd.

    The template, not us, reaps the process and sees its exit status, so ``returncode``
    is only what we know: ``-SIGKILL`` when we killed it, else 0 once it has exited."""

    def __init__(self, pid: int, pidfd: int, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None
        self._pidfd: int | None = pidfd
        self._killed = False
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        if self.returncode is None:
            self._wait_exit(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and not self._wait_exit(timeout):
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
        return self.returncode

    def kill(self) -> None:
        with self._lock:
            if self.returncode is not None or self._pidfd is None:
                return
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                self._killed = True
            except ProcessLookupError:
                pass

    def _wait_exit(self, timeout: float | None) -> bool:
        """Any thread may ask (a stats reader polls while an owner closes): each waits on
        a private duplicate of the pidfd, and the pidfd itself is closed once, under the
        lock -- a second close of the same number could close somebody else's file."""
        with self._lock:
            if self._pidfd is None:
                return True
            mine = os.dup(self._pidfd)
        try:
            poller = select.poll()
            poller.register(mine, select.POLLIN)
            if not poller.poll(-1 if timeout is None else max(0, math.ceil(timeout * 1000))):
                return False
        finally:
            os.close(mine)
        with self._lock:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
                self.returncode = -signal.SIGKILL if self._killed else 0
        return True

    def __del__(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)


class Template:
    """The parent's side of one template process. Used from the spawner thread only."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...] = TEMPLATE_ARGS) -> None:
        self._env = env
        self._args = args
        self._proc: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self.pid: int | None = None

    def fork(self, env: dict[str, str], *, once: bool, debug: bool) -> ForkedProcess:
        """A new worker with ``env``; a dead template is restarted once, transparently."""
        if self._control is not None:
            try:
                return self._fork(env, once=once, debug=debug)
            except (ConnectionError, EOFError, TimeoutError):
                log.warning("the quota-probe template process died or hung; starting a new one")
                self.close()
        self._start()
        return self._fork(env, once=once, debug=debug)

    def _start(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        debug = bool(self._env.get("PROBE_DEBUG"))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, *self._args, str(child_end.fileno())], env=self._env,
                pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=None if debug else subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            parent_end.close()
            raise TemplateUnavailable(f"could not start it ({type(exc).__name__})") from None
        finally:
            child_end.close()
        self._control = parent_end
        proc = self._proc
        try:
            hello, _ = self._receive(TEMPLATE_START_TIMEOUT_S)
        except (ConnectionError, EOFError, TimeoutError) as exc:
            hello = {"error": self._failure_reason(exc)}
        finally:
            if proc.stderr is not None:
                proc.stderr.close()
        if not hello.get("ready"):
            self.close()
            raise TemplateUnavailable(str(hello.get("error", "it did not say it was ready"))[:500])
        self.pid = proc.pid

    def _failure_reason(self, exc: BaseException) -> str:
        """The last line the template wrote to stderr (a traceback's verdict), if any."""
        if isinstance(exc, TimeoutError):
            return f"it was not ready within {TEMPLATE_START_TIMEOUT_S:g} s"
        text = b""
        if self._proc is not None and self._proc.stderr is not None:
            try:
                self._proc.wait(TEMPLATE_START_TIMEOUT_S)
                text = self._proc.stderr.read(65536)
            except (OSError, subprocess.TimeoutExpired):
                pass
        lines = [line.strip() for line in text.decode(errors="replace").splitlines() if line.strip()]
        return (lines[-1] if lines else "it exited before it was ready")[:500]

    def _fork(self, env: dict[str, str], *, once: bool, debug: bool) -> ForkedProcess:
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        fds = [stdin_r, stdout_w] + ([2] if debug else [])
        try:
            message = json.dumps({"env": env, "once": once}, separators=(",", ":")).encode()
            try:
                socket.send_fds(self._control, [message], fds)
            except OSError as exc:
                raise ConnectionError(str(exc)) from None
            reply, pidfds = self._receive(TEMPLATE_REPLY_TIMEOUT_S)
        except BaseException:
            for fd in (stdin_w, stdout_r):
                os.close(fd)
            raise
        finally:
            os.close(stdin_r)
            os.close(stdout_w)
        if "pid" not in reply or len(pidfds) != 1:
            for fd in (stdin_w, stdout_r, *pidfds):
                os.close(fd)
            raise OSError(f"the template could not fork a worker: {str(reply.get('error'))[:200]}")
        return ForkedProcess(int(reply["pid"]), pidfds[0], open(stdin_w, "wb"), open(stdout_r, "rb", buffering=0))

    def _receive(self, timeout_s: float) -> tuple[dict, list[int]]:
        """One message from the template (EOFError when it is gone, TimeoutError when it
        does not answer: then it is killed, since a half-answered request cannot be trusted)."""
        poller = select.poll()
        poller.register(self._control, select.POLLIN)
        if not poller.poll(math.ceil(timeout_s * 1000)):
            if self._proc is not None:
                self._proc.kill()
            raise TimeoutError
        message, fds, _, _ = socket.recv_fds(self._control, 65536, 1)
        if not message:
            raise EOFError
        try:
            return json.loads(message), fds
        except ValueError:
            for fd in fds:
                os.close(fd)
            raise EOFError from None

    def close(self) -> None:
        """EOF to the template, then reap it. On EOF it kills and reaps its own children
        (the spare, any worker left) before it exits, so nothing is left for init to reap;
        it is given the reply timeout for that (milliseconds normally), then SIGKILLed."""
        if self._control is not None:
            self._control.close()
            self._control = None
        proc, self._proc, self.pid = self._proc, None, None
        if proc is not None:
            try:
                proc.wait(TEMPLATE_REPLY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _discard_late_start(future: Future) -> None:
    """A process that came up after its caller gave up: nobody will ever talk to it."""
    if future.cancelled() or future.exception() is not None:
        return
    proc = future.result()
    proc.kill()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        log.warning("a worker started too late for its caller did not exit after SIGKILL (pid %s)", proc.pid)


class Spawner:
    def __init__(self, name: str = "probe-spawner", *, method: str | None = None) -> None:
        self._name = name
        self._requests: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: "fork" or "exec"; turns to "exec" for good when the template cannot start
        self.method = method or default_method()
        #: read now, so a test can start a service with a broken template
        self._template_args = TEMPLATE_ARGS
        self._template: Template | None = None
        self._ready_ms: deque[float] = deque(maxlen=SPAWN_SAMPLES)
        self._ready_lock = threading.Lock()

    # -- starting workers ----------------------------------------------------------------
    def start_worker(self, env: dict[str, str], *, once: bool = False,
                     deadline: float | None = None) -> subprocess.Popen | ForkedProcess:
        """A new worker process with ``env``, talking the worker protocol on its
        stdin/stdout, started on the spawner thread. Raises SpawnerClosed once closed,
        OSError when no process could be started, and :class:`SpawnDeadline` when none was
        ready by ``deadline`` (``time.monotonic()``; None: no bound).

        Why a deadline: the first start waits for the template process, which may take up
        to ``TEMPLATE_START_TIMEOUT_S`` when it is broken, and every start queues behind it.
        A caller gives up at its own deadline instead; its request is dropped if it has not
        run yet, and a process started after the caller left is killed and reaped. The
        template start goes on meanwhile, and a template that never comes up still ends
        in the exec fall-back (one logged error) for the callers after."""
        if deadline is None or threading.current_thread() is self._thread:
            return self._on_thread(lambda: self._start_here(env, once))
        future = self.submit(lambda: self._start_here(env, once))
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            if not future.cancel():
                future.add_done_callback(_discard_late_start)
            raise SpawnDeadline("no worker process was ready before the deadline") from None

    def _start_here(self, env: dict[str, str], once: bool) -> subprocess.Popen | ForkedProcess:
        debug = bool(env.get("PROBE_DEBUG"))
        if self.method == "fork":
            if self._template is None:
                self._template = Template(template_env(), self._template_args)
            try:
                return self._template.fork(env, once=once, debug=debug)
            except (TemplateUnavailable, ConnectionError, EOFError, TimeoutError) as exc:
                log.error("quota-probe could not use its template process (%s); starting workers "
                          "with exec from now on, which costs ~100x more CPU per start", exc)
                self._template.close()
                self.method = "exec"
        argv = [sys.executable, "-P", "-m", "workers"] + (["--once"] if once else [])
        # Own session: a Ctrl-C in the terminal goes to the parent, which shuts the pool
        # down in order, instead of killing workers mid-reply.
        return subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=None if debug else subprocess.DEVNULL, start_new_session=True)

    def record_ready(self, seconds: float) -> None:
        """A worker reported ready ``seconds`` after it was asked for."""
        with self._ready_lock:
            self._ready_ms.append(seconds * 1000.0)

    def spawn_stats(self) -> dict[str, Any]:
        """SPEC §12: the method in use and the median start time (asked → ready to serve)
        over the last 100 starts; ``median_ms`` is null before the first one."""
        with self._ready_lock:
            samples = list(self._ready_ms)
        return {"method": self.method,
                "median_ms": round(statistics.median(samples), 3) if samples else None}

    @property
    def template_pid(self) -> int | None:
        template = self._template
        return template.pid if template is not None else None

    # -- the thread ----------------------------------------------------------------------
    def submit(self, fn: Callable[[], T]) -> "Future[T]":
        """Run ``fn`` on the spawner thread (background work that may start processes, such
        as prewarming a slot). Raises SpawnerClosed once the service is closed."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise SpawnerClosed("the service is closed")
            if self._thread is None:
                # Daemon: a non-daemon thread would be joined before atexit handlers run,
                # so a service nobody closed would hang interpreter exit.
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._requests.put((future, fn))
        return future

    def _on_thread(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return fn()
        return self.submit(fn).result()

    def _run(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                if self._template is not None:
                    self._template.close()
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue             # its caller's deadline passed while it queued
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 — handed to whoever waits on the future
                future.set_exception(exc)

    def close(self) -> None:
        """Stop the template and the thread. Workers get SIGKILL from the kernel when their
        parent (the template, or this thread) exits, so close them first; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._requests.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
