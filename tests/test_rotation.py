"""Credential rotation (SPEC §6) and the 429 back-off (SPEC §8)."""
from __future__ import annotations

import os
import threading
import time

import pytest

from probe import ProbeConfig, ProbeService
from probe.backoff import FIRST_DELAY_S, MAX_DELAY_S, Backoff, delay_s
from support import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def service(emulator):
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        yield service


def pids(service, home) -> set[int]:
    state = service.stats()["homes"].get(str(home.resolve()))
    return {w["pid"] for w in state["workers"]} if state else set()


def balance_body(index: int) -> dict:
    return {"is_available": True, "balance_infos": [
        {"currency": "USD", "total_balance": f"{index}.00", "granted_balance": "0", "topped_up_balance": "0"}]}


def test_scoped_flush_leaves_other_homes_warm_and_cached(service, make_home, emulator):
    home_a = make_home("flush-a", deepseek="sk-flush-a", openrouter="sk-or-flush-a")
    home_b = make_home("flush-b", deepseek="sk-flush-b", openrouter="sk-or-flush-b")
    for home in (home_a, home_b):
        for provider in ("deepseek", "openrouter"):
            service.fetch(provider, home=home)
    pids_a, pids_b = pids(service, home_a), pids(service, home_b)
    service.invalidate(home=home_b, provider="deepseek")
    assert pids(service, home_a) == pids_a, "another home's workers were touched"
    assert not pids(service, home_b) & pids_b, "the rotated home's workers must be closed"
    assert service.fetch("deepseek", home=home_a).probe.path == "cache"
    assert service.fetch("openrouter", home=home_b).probe.path == "cache", "other providers keep their cache"
    assert service.fetch("deepseek", home=home_b).probe.path != "cache"
    generations = {h: s["generation"] for h, s in service.stats()["homes"].items()}
    assert generations[str(home_b.resolve())] == generations[str(home_a.resolve())] + 1


def test_invalidate_everything(service, make_home):
    homes = [make_home(f"all-{i}", deepseek=f"sk-all-{i}") for i in range(2)]
    for home in homes:
        service.fetch("deepseek", home=home)
    service.invalidate()
    assert all(pids(service, h) == set() for h in homes)
    assert all(service.fetch("deepseek", home=h).probe.path != "cache" for h in homes)


def test_rewritten_credentials_are_noticed_without_a_hook(service, make_home, emulator):
    home = make_home("auto", deepseek="sk-auto-old")
    old = service.fetch("deepseek", home=home)
    (home / ".env").write_text("DEEPSEEK_API_KEY=sk-auto-new\n")
    new = service.fetch("deepseek", home=home)
    assert new.probe.path != "cache" and new.details != old.details
    assert emulator.requests()[-1].token == "sk-auto-new"
    assert old.probe.worker_pid not in pids(service, home), "the home was rotated: old workers closed"


def test_rotations_of_one_home_are_serialized_and_of_different_homes_parallel(service, make_home, monkeypatch):
    """Three rotations of A; the first is held inside its flush. A rotation of B completes
    meanwhile (homes rotate in parallel), and A's other two never enter while the first
    is inside (one home's rotations are serialized)."""
    home_a, home_b = make_home("ser-a", deepseek="sk-ser-a"), make_home("ser-b", deepseek="sk-ser-b")
    for home in (home_a, home_b):
        service.fetch("deepseek", home=home)
    key_a = str(home_a.resolve())
    inside = {key_a: 0}
    peak = {key_a: 0}
    gate = threading.Event()
    lock = threading.Lock()
    original = service._registry.flush

    def slow_flush(home):
        if str(home) == key_a:
            with lock:
                inside[key_a] += 1
                peak[key_a] = max(peak[key_a], inside[key_a])
            gate.wait(10)
            with lock:
                inside[key_a] -= 1
        original(home)

    monkeypatch.setattr(service._registry, "flush", slow_flush)
    rotations = [threading.Thread(target=service.invalidate, kwargs={"home": home_a}) for _ in range(3)]
    for t in rotations:
        t.start()
    assert wait_until(lambda: inside[key_a] == 1)
    done_b = threading.Event()
    threading.Thread(target=lambda: (service.invalidate(home=home_b), done_b.set())).start()
    assert done_b.wait(10), "a rotation of B waited for a rotation of A"
    assert not gate.is_set() and peak[key_a] == 1
    gate.set()
    for t in rotations:
        t.join()
    assert peak[key_a] == 1, "two rotations of one home overlapped"


@pytest.mark.timeout(120)
def test_rotation_under_load(service, make_home, emulator):
    """8 threads fetch two homes while B's token is rewritten and invalidated every 100 ms
    for ~5 s: no result for B is older than the last rotation finished before its fetch
    began, none is newer than what was written before it ended, and A's workers never change."""
    home_a = make_home("load-a", deepseek="sk-load-a")
    home_b = make_home("load-b")
    tokens = [f"sk-load-b-{i}" for i in range(50)]
    for index, token in enumerate(tokens):
        emulator.script(token, balance_body(index))

    def write(index: int) -> None:
        tmp = home_b / ".env.tmp"
        tmp.write_text(f"DEEPSEEK_API_KEY={tokens[index]}\n")
        os.replace(tmp, home_b / ".env")

    write(0)
    service.fetch("deepseek", home=home_a)
    pids_a = pids(service, home_a)
    rotated_at: list[tuple[float, int]] = [(time.monotonic(), 0)]   # (invalidate returned, index)
    written_at: list[tuple[float, int]] = [(time.monotonic(), 0)]   # (write began, index)
    results: list[tuple[float, float, object]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def rotate():
        for index in range(1, len(tokens)):
            time.sleep(0.1)
            with lock:  # stamped before the write: a probe may read the file the moment it lands
                written_at.append((time.monotonic(), index))
            write(index)
            service.invalidate(home=home_b)
            with lock:
                rotated_at.append((time.monotonic(), index))
        stop.set()

    def poll(thread_index: int):
        while not stop.is_set():
            home = home_b if thread_index % 2 else home_a
            start = time.monotonic()
            snap = service.fetch("deepseek", home=home, refresh=thread_index % 4 == 1)
            with lock:
                results.append((start, time.monotonic(), snap))

    threads = [threading.Thread(target=rotate)] + [threading.Thread(target=poll, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    checked = 0
    for start, end, snap in results:
        if snap.home != str(home_b.resolve()):
            assert snap.available
            continue
        if not snap.available:
            continue
        index = int(float(snap.details[0].split("$")[1].split()[0]))
        floor = max(i for t, i in rotated_at if t <= start)
        ceiling = max(i for t, i in written_at if t <= end)
        assert floor <= index <= ceiling, (snap.probe.path, floor, index, ceiling)
        checked += 1
    assert checked > 20
    assert pids(service, home_a) == pids_a


# -- back-off ----------------------------------------------------------------------------
def test_backoff_schedule_with_a_fake_clock():
    now = [1000.0]
    backoff = Backoff(clock=lambda: now[0])
    key = ("h", "anthropic", ())
    assert backoff.blocked(key) is None
    waits = [backoff.rate_limited(key, None) for _ in range(7)]
    assert waits == [30, 60, 120, 240, 480, 600, 600]
    assert backoff.blocked(key) is not None
    now[0] += 599
    assert backoff.blocked(key) is not None
    now[0] += 2
    assert backoff.blocked(key) is None
    backoff.succeeded(key)
    assert backoff.rate_limited(key, None) == FIRST_DELAY_S, "a success resets the schedule"


def test_retry_after_is_honoured_when_larger_and_capped():
    assert delay_s(1, 90) == 90
    assert delay_s(1, 5) == FIRST_DELAY_S
    assert delay_s(1, 0) == FIRST_DELAY_S      # Anthropic's retry-after: 0 is not "retry now"
    assert delay_s(1, 86400) == MAX_DELAY_S


def test_rate_limit_serves_last_good_snapshot_stale_and_stops_probing(service, make_home, emulator):
    home = make_home("limited", anthropic="sk-ant-oat01-limited")
    good = service.fetch("anthropic", home=home)
    assert good.available and not good.stale
    emulator.script("sk-ant-oat01-limited", {"error": {"type": "rate_limit_error"}}, status=429,
                    headers={"Retry-After": "0"})
    limited = service.fetch("anthropic", home=home, refresh=True)
    assert limited.stale and limited.available
    assert limited.error.code == "rate_limited"
    assert limited.windows == good.windows and limited.fetched_at == good.fetched_at
    requests = emulator.count(token="sk-ant-oat01-limited")
    again = service.fetch("anthropic", home=home, refresh=True)   # refresh does not bypass the back-off
    assert again.stale and again.error.code == "rate_limited"
    assert emulator.count(token="sk-ant-oat01-limited") == requests, "probed again during the back-off"
    body = again.to_dict()
    assert body["stale"] is True and body["error"]["code"] == "rate_limited" and body["windows"]


def test_rate_limit_without_a_good_snapshot_is_the_error(service, make_home):
    home = make_home("limited-fresh", anthropic="sk-ant-oat01-fresh-429-")
    snap = service.fetch("anthropic", home=home)
    assert snap.error.code == "rate_limited" and not snap.stale and not snap.available


def test_rotation_clears_the_backoff(service, make_home, emulator):
    home = make_home("limited-rotate", deepseek="sk-rot-429-")
    assert service.fetch("deepseek", home=home).error.code == "rate_limited"
    (home / ".env").write_text("DEEPSEEK_API_KEY=sk-rot-fine\n")
    assert service.fetch("deepseek", home=home).available
