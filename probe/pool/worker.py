"""One worker process: start it, talk to it over its pipes, kill it and its tree.

A ``Worker`` is owned by whoever holds ``worker.lock`` (the pool hands it out held). Any
thread may set ``closed`` (e.g. a credential rotation flagging a busy worker); only the
owner terminates the process. That split is what lets a rotation retire a busy worker
without tearing the pipe out from under the caller using it.
"""
from __future__ import annotations

import itertools
import math
import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from probe import strict_json
from probe.pool.spawner import ForkedProcess, SpawnDeadline, Spawner, SpawnerClosed

#: a snapshot is a few KiB; a reply past this is a broken worker, not data
MAX_REPLY_BYTES = 4 * 1024 * 1024
#: how long a worker may take to exit after EOF on stdin before it is killed
EXIT_GRACE_S = 1.0

_request_ids = itertools.count(1)


class WorkerFailed(Exception):
    """The worker could not answer; it has been killed and marked closed."""

    code = "worker_crashed"


class WorkerTimeout(WorkerFailed):
    code = "timeout"


class WorkerProtocolError(WorkerFailed):
    """The worker wrote something that is not the reply to the request in flight: bytes
    that are not a JSON object, an oversized line, or a reply carrying another id. A healthy
    worker never does that (one request in flight, one reply, stdout reserved for the
    protocol), so the process is treated as confused and killed; the caller's snapshot says
    ``bad_response`` -- what it got back was not a usable answer -- rather than
    ``worker_crashed``, which is kept for a process that died."""

    code = "bad_response"


def kill_tree(proc: "subprocess.Popen | ForkedProcess") -> None:
    """SIGKILL the process and every descendant, then reap (or, for a forked worker, await)
    the process.

    Descendants are listed *before* the kill: once the parent dies they are re-parented
    and can no longer be found through it. The pid cannot have been reused while we list:
    an exec-started worker is our child and we have not called wait() yet, so it is at
    worst a zombie still holding its pid. A forked worker is reaped by the template, so
    its pid is only trusted while its pidfd says it is alive (the kill itself goes through
    the pidfd and can never hit a stranger).
    """
    descendants = []
    if isinstance(proc, subprocess.Popen) or proc.poll() is None:
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            pass
    for child in descendants:
        try:
            child.kill()
        except psutil.Error:
            pass
    try:
        proc.kill()
    except OSError:
        pass
    proc.wait()
    psutil.wait_procs(descendants, timeout=EXIT_GRACE_S)


def wait_for_exit(proc: "subprocess.Popen | ForkedProcess", timeout_s: float) -> bool:
    """Reap ``proc`` if it exits within ``timeout_s``; True if it did.

    ``Popen.wait(timeout)`` sleeps in growing steps (0.5, 1, 2, 4, 8 ms, ...), so a worker
    that exits 8 ms after EOF was reaped after 15.5 ms, on the thread of whichever caller
    retired it. A pidfd (Linux >= 5.3) becomes readable the moment the process exits.
    ``poll()`` first: once a process is reaped its pid may be reused, and a pidfd opened
    then could name a stranger; before ``wait`` the pid stays ours, even as a zombie. A
    forked worker's handle waits on its own pidfd already."""
    if proc.poll() is not None:
        return True
    if not isinstance(proc, subprocess.Popen):
        try:
            proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or an old kernel
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(0, math.ceil(timeout_s * 1000))):
            return False
    finally:
        os.close(pidfd)
    proc.wait()
    return True


class Worker:
    """A handle on one worker process for one home (maybe not started yet); how the process
    comes to exist is the spawner's business."""

    def __init__(self, home: Path, env: dict[str, str], spawner: Spawner, *, once: bool = False) -> None:
        self.home = home
        self.once = once
        self.lock = threading.Lock()
        #: set by anyone who wants this worker gone; the owner retires it on release
        self.closed = False
        self.requests_served = 0
        self.idle_since = time.monotonic()
        self.proc: subprocess.Popen | None = None
        self._env = env
        self._spawner = spawner
        self._buffer = bytearray()
        self._poller: select.poll | None = None
        self._asked_at: float | None = None

    # -- state ---------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self.proc is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def has_unsolicited_output(self) -> bool:
        """True when an idle worker has written something nobody asked for (or hung up).

        Only meaningful while no request is in flight: then a healthy worker is silent, so
        any readable byte is garbage or a stray reply that must never reach the next
        caller. Costs one ``poll(0)``; the pool asks before handing the worker out."""
        if self.proc is None or self._poller is None:
            return False
        return bool(self._buffer) or bool(self._poller.poll(0))

    def rss_mb(self) -> float | None:
        if self.proc is None:
            return None
        try:
            return round(psutil.Process(self.proc.pid).memory_info().rss / 1048576, 1)
        except psutil.Error:
            return None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, deadline: float | None = None) -> None:
        """Start the process (caller owns the worker). Raises WorkerFailed if it cannot,
        WorkerTimeout when no process was ready by ``deadline`` (``time.monotonic()``)."""
        self._asked_at = time.monotonic()
        try:
            self.proc = self._spawner.start_worker(self._env, once=self.once, deadline=deadline)
        except SpawnDeadline:
            self.closed = True
            raise WorkerTimeout("No worker process was ready before the deadline (the template process "
                                "is still starting).") from None
        except SpawnerClosed:
            self.closed = True
            raise WorkerFailed("The service is shutting down.") from None
        except OSError as exc:
            self.closed = True
            raise WorkerFailed(f"Could not start a worker process ({type(exc).__name__}).") from None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._poller = select.poll()
        self._poller.register(self.proc.stdout.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)

    def kill(self) -> None:
        """Kill the whole tree now (timeouts, crashes, protocol garbage)."""
        self.closed = True
        if self.proc is not None:
            kill_tree(self.proc)
            self._close_pipes()

    def close(self) -> None:
        """Ask the worker to leave (EOF), kill it if it does not; idempotent."""
        self.closed = True
        proc = self.proc
        if proc is None:
            return
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if not wait_for_exit(proc, EXIT_GRACE_S):
            kill_tree(proc)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass

    # -- talking -------------------------------------------------------------------------
    def request(self, message: dict[str, Any], deadline: float,
                partial: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Send one request and return the reply carrying its id.

        ``partial``: the request is answered in several lines (``probe_home``); each line
        marked ``"partial": true`` is handed to it as it arrives, on this thread, and the
        final line is returned. Without it a partial line is a protocol error.

        ``deadline`` is a ``time.monotonic()`` value. On timeout, EOF, a broken pipe, garbage
        or a reply with another id the worker is killed (with its tree) and marked closed
        before WorkerTimeout / WorkerProtocolError / WorkerFailed is raised, so no caller can
        reuse a confused process and no stray reply can reach a later caller.
        """
        if self.proc is None:
            raise WorkerFailed("The worker was never started.")
        request_id = f"{os.getpid()}-{next(_request_ids)}"
        line = json.dumps({**message, "id": request_id}, separators=(",", ":")).encode() + b"\n"
        try:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
            if self.once:
                self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            self.kill()
            raise WorkerFailed("The worker process exited before it took the request.") from None
        except BaseException:   # half a line may be in the pipe: nobody may use this worker again
            self.kill()
            raise
        try:
            reply = self._read_reply(deadline)
            while reply.get("id") == request_id and reply.get("partial") is True and partial is not None:
                partial(reply)
                reply = self._read_reply(deadline)
            if reply.get("id") != request_id:
                raise WorkerProtocolError("The worker answered with a reply to another request.")
            if "partial" in reply:
                raise WorkerProtocolError("The worker answered in parts where one reply was due.")
            ready_at = reply.pop("ready_at", None)
            if isinstance(ready_at, float) and self._asked_at is not None:
                self._spawner.record_ready(ready_at - self._asked_at)
                self._asked_at = None
            self.requests_served += 1
            return reply
        except BaseException:
            # anything, not only WorkerFailed: an exception from ``partial``, a signal's, a
            # reply the parent could not decode. The request may still be answered later,
            # and a late reply must never reach the next owner of this worker.
            self.kill()
            raise

    def _read_reply(self, deadline: float) -> dict[str, Any]:
        fd = self.proc.stdout.fileno()
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                try:
                    reply = strict_json.loads(line)   # NaN, 1e999, a 100,000-deep line: all ValueError
                except ValueError:
                    raise WorkerProtocolError("The worker sent a malformed reply.") from None
                if not isinstance(reply, dict):
                    raise WorkerProtocolError("The worker sent a malformed reply.")
                return reply
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise WorkerTimeout("The probe did not finish before its deadline.")
            if not self._poller.poll(max(1, math.ceil(remaining_s * 1000.0))):
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise WorkerFailed("The worker process exited in the middle of a probe.")
            self._buffer += chunk
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise WorkerProtocolError("The worker sent an oversized reply.")
