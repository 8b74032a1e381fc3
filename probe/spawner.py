"""Start every worker process from one long-lived thread.

Why a thread of its own: on Linux ``PR_SET_PDEATHSIG`` fires when the *thread* that forked
the child exits, not when the process does. Callers that claim a pool slot are often
short-lived threads (a request handler, an ``asyncio.to_thread`` call); a worker forked from
one of them would be SIGKILLed the moment that thread finished. Forking from this thread
instead binds each worker's life to the spawner's, which lives as long as its service.
"""
from __future__ import annotations

import queue
import subprocess
import threading
from concurrent.futures import Future
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class SpawnerClosed(RuntimeError):
    pass


class Spawner:
    def __init__(self, name: str = "probe-spawner") -> None:
        self._name = name
        self._requests: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen(argv, **kwargs)``, run on the spawner thread."""
        if threading.current_thread() is self._thread:
            return subprocess.Popen(argv, **kwargs)
        return self.submit(lambda: subprocess.Popen(argv, **kwargs)).result()

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

    def _run(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            future, fn = item
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 — handed to whoever waits on the future
                future.set_exception(exc)

    def close(self) -> None:
        """Stop the thread. Workers it started get SIGKILL from the kernel when it exits, so
        close them first; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._requests.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
