"""Worker replies the parent cannot use are contained at the one border (issue 26 #7): a
line nested 100,000 deep, NaN / Infinity / a number past float range in a snapshot, an
unhashable ``pool_only`` item. Each kills that worker and answers ``bad_response`` (a
home list: HomeListFailed carrying it) -- never an exception out of the service, never a
snapshot that a strict JSON encoder (the HTTP body) refuses.

How a reply is forged: the home's warm worker is SIGSTOPped, the request is written to its
stdin (seen queued there), and the test writes the forged line on the worker's protocol
pipe carrying the request's id (the id counter is set to a known value)."""
from __future__ import annotations

import array
import contextlib
import fcntl
import itertools
import json
import os
import signal
import termios
import threading

import pytest

import probe.pool.worker as worker_module
from probe.home_list import HomeListFailed
from support import wait_until, worker_pids
from test_faults import gone, write_as_worker

pytestmark = pytest.mark.timeout(60)
FIRST_ID = 7_000_001


def queued_requests(pid: int) -> int:
    """Bytes waiting in the worker's stdin: the parent's request, not yet read."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        count = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, count)
        return count[0]
    finally:
        os.close(fd)


def all_threads_stopped(pid: int) -> bool:
    """Every thread of ``pid`` in state T: SIGSTOP is delivered asynchronously, and a thread
    woken by data before it stops would still take the request."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                states.append(stat.read().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


@contextlib.contextmanager
def stopped(pid: int):
    os.kill(pid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: all_threads_stopped(pid))
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def forge(service, home, monkeypatch, call, reply: bytes):
    """Run ``call`` while the home's one warm worker is stopped and answer its request with
    ``reply`` (``__ID__`` in it becomes the request's id). Returns (result, pid)."""
    (pid,) = worker_pids(service, home)
    monkeypatch.setattr(worker_module, "_request_ids", itertools.count(FIRST_ID))
    reply = reply.replace(b"__ID__", f"{os.getpid()}-{FIRST_ID}".encode())
    result: list = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:   # noqa: BLE001 -- the defect is an exception escaping
            result.append(exc)

    with stopped(pid):
        caller = threading.Thread(target=run)
        caller.start()
        assert wait_until(lambda: queued_requests(pid) > 0)
        write_as_worker(pid, reply + b"\n")
        caller.join(30)
    return result[0], pid


def snapshot_line(window: str) -> bytes:
    return (b'{"id": "__ID__", "ok": true, "snapshot": {"provider": "deepseek", "available": true, "windows": '
            b'[{"label": "5h", "used_percent": 10.0, "remaining_percent": 90.0, "reset_at": null, '
            + window.encode() + b'}]}}')


REPLIES = {
    "nested_100000_deep": b"[" * 100_000 + b"]" * 100_000,
    "nan": snapshot_line('"window_s": NaN'),
    "infinity": snapshot_line('"window_s": Infinity'),
    "float_past_range": snapshot_line('"window_s": 1e999'),
    "integer_past_float_range": snapshot_line('"window_s": 1' + "0" * 400),
    "nested_inside_the_reply": snapshot_line('"detail": null, "extra": ' + "[" * 500 + "]" * 500),
}


@pytest.mark.parametrize("kind", sorted(REPLIES))
def test_a_worker_reply_the_parent_cannot_use_kills_the_worker_and_is_bad_response(
        make_service, make_home, monkeypatch, kind):
    home = make_home(f"reply-{kind}", deepseek=f"sk-reply-{kind}")
    service = make_service(pool_size=1)
    assert service.fetch("deepseek", home=home).available
    snap, pid = forge(service, home, monkeypatch,
                      lambda: service.fetch("deepseek", home=home, refresh=True, timeout=20), REPLIES[kind])
    assert not isinstance(snap, BaseException), repr(snap)
    assert snap.error is not None and snap.error.code == "bad_response", snap
    json.dumps(snap.to_dict(), allow_nan=False)      # what GET /api/quota sends
    assert wait_until(lambda: gone(pid))
    healed = service.fetch("deepseek", home=home, refresh=True)
    assert healed.available and healed.probe.worker_pid != pid


def test_an_unhashable_pool_only_item_is_bad_response_not_a_type_error(make_service, make_home, monkeypatch):
    home = make_home("reply-pool-only", deepseek="sk-reply-pool-only")
    service = make_service(pool_size=1)
    assert service.fetch("deepseek", home=home).available
    failed, pid = forge(service, home, monkeypatch, lambda: service.home_providers(home, timeout=20),
                        b'{"id": "__ID__", "ok": true, "providers": ["deepseek"], "pool_only": [["deepseek"]], '
                        b'"undeclared": []}')
    assert isinstance(failed, HomeListFailed), repr(failed)
    assert failed.snapshot.provider is None and failed.snapshot.error.code == "bad_response"
    assert wait_until(lambda: gone(pid))
    assert service.home_providers(home).names == ("deepseek",)
