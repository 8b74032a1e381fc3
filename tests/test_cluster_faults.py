"""Cluster mode against a real redis-server when Redis holds what it should not or the
timing is against us (issue 26 #3, #4, #5): a back-off of a rotated-away credential, any
value any process wrote into the prefix's keys or channel, and a probe that began before a
rotation finishing after the backend learnt of it."""
from __future__ import annotations

import logging
import threading

import pytest

from support import live_workers, wait_until, worker_pids
from test_cluster import backends, redis_server  # noqa: F401 -- fixtures

pytestmark = pytest.mark.timeout(90)


def key(service, *parts: str) -> str:
    return service.config.redis_prefix + ":".join(("home", "alice", *parts))


# -- #3 the shared back-off ends with the credential it was for ---------------------------------
def test_a_shared_back_off_ends_when_the_home_rotates_to_a_new_credential(emulator, make_home, backends):
    """A 429 for the old token holds every backend off it; after the home's files name a
    healthy token, the next fetch probes that token (before the fix: ``rate_limited ...
    (seen by another backend)`` and 0 requests for the new token, until the old back-off
    expired)."""
    old, new = "sk-or-v1-cluster-bo-old", "sk-or-v1-cluster-bo-new"
    emulator.script(old, {"error": "slow down"}, status=429, headers={"Retry-After": "120"})
    home = make_home("cluster-bo", openrouter=old)
    a, b = backends(2, {"alice": home})
    assert a.fetch("openrouter", home=home).error.code == "rate_limited"
    assert b.fetch("openrouter", home=home).error.code == "rate_limited"
    make_home("cluster-bo", openrouter=new)        # the user rotated the key
    for service in (b, a):
        snap = service.fetch("openrouter", home=home)
        assert snap.error is None and snap.available, snap.error
    assert emulator.count(token=new) >= 1


def test_a_shared_back_off_ends_with_an_announced_rotation(emulator, make_home, backends):
    token = "sk-or-v1-cluster-bo-rot"
    emulator.script(token, {"error": "slow down"}, status=429, headers={"Retry-After": "120"})
    home = make_home("cluster-bo-rot", openrouter=token)
    a, b = backends(2, {"alice": home})
    assert a.fetch("openrouter", home=home).error.code == "rate_limited"
    a.invalidate(home=home)
    before = emulator.count(token=token)
    assert b.fetch("openrouter", home=home).error.code == "rate_limited"
    assert emulator.count(token=token) == before + 1     # asked the provider again, not the old back-off


# -- #4 garbage in every key the backends read --------------------------------------------------
DEEP = b"[" * 100_000 + b"]" * 100_000
GARBAGE = {
    "gen": [b"garbage", b"-1", b"1e999", b"9" * 40, b"", DEEP],
    "deepseek:backoff": [b"{", b"[1]", b'"text"', b'{"until": Infinity, "gen": 0, "message": "x"}',
                         b'{"until": 1e999, "gen": 0, "message": "x"}', b'{"until": NaN, "gen": 0, "message": "x"}',
                         b'{"until": "soon", "gen": 0, "message": "x"}', b'{"until": 9e15, "gen": "0", "message": 1}',
                         DEEP],
    "deepseek:snap": [b"{", b"[]", b'{"gen": NaN, "written_at": 1, "snapshot": {}}',
                      b'{"gen": 0, "written_at": Infinity, "snapshot": {"provider": "deepseek"}}',
                      b'{"gen": 0, "written_at": 1e300, "snapshot": {"provider": "deepseek", "home": "x", '
                      b'"available": true, "windows": [{"label": "w", "used_percent": 1e999}]}}',
                      b'{"gen": 0, "written_at": 1e300, "snapshot": {"provider": "deepseek", "home": "x", '
                      b'"available": true, "probe": {"path": "warm", "latency_ms": 1, "worker_pid": [[1]]}}}',
                      DEEP],
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_in_a_key_is_absent_never_an_exception(emulator, make_home, backends, redis_server, kind, caplog):
    """Every value a misbehaving process could write (and a key of the wrong type): each
    fetch answers -- probing, since nothing usable is shared -- nothing raises, the
    backend stays connected, and one warning says so (not one per read)."""
    home = make_home(f"cluster-garbage-{kind.replace(':', '-')}", deepseek=f"sk-cluster-junk-{kind}")
    a, b = backends(2, {"alice": home})
    client = redis_server.client()
    with caplog.at_level(logging.WARNING, logger="quota_probe.cluster"):
        for value in [*GARBAGE[kind], None]:
            client.delete(key(a, kind))
            if value is None:
                client.hset(key(a, kind), "wrong", "type")
            else:
                client.set(key(a, kind), value)
            for service in (a, b):
                snap = service.fetch("deepseek", home=home, refresh=True)
                assert snap.error is None and snap.available, (value[:60] if value else "hash", snap.error)
                assert service.stats()["cluster"]["connected"]
    assert len([r for r in caplog.records if "unexpected" in r.getMessage()]) <= 2 * 3   # per backend, per kind


def test_a_lock_key_that_is_no_lock_holds_no_probe_off(emulator, make_home, backends, redis_server):
    """A value without an expiry in the probe-lock key would have made every backend wait
    for it until its deadline, for ever (``timeout`` on every fetch)."""
    home = make_home("cluster-garbage-lock", deepseek="sk-cluster-junk-lock")
    a, = backends(1, {"alice": home})
    client = redis_server.client()
    for write in (lambda k: client.set(k, "garbage"), lambda k: client.set(k, "f" * 32),
                  lambda k: client.set(k, "e" * 32, ex=10 ** 6), lambda k: client.rpush(k, "x")):
        client.delete(key(a, "deepseek", "lock"))
        write(key(a, "deepseek", "lock"))
        snap = a.fetch("deepseek", home=home, refresh=True, timeout=10)
        assert snap.error is None and snap.available, snap.error


def test_garbage_written_over_a_held_lock_does_not_hold_its_waiters_off(emulator, make_home, backends, redis_server):
    """Backend a probes (held at the provider) under the lock; b waits for it. Garbage
    without an expiry lands on the lock key meanwhile, so a's release finds no lock of its
    own and leaves it. b still gets the lock -- and a's stored answer -- within its
    deadline (before: it waited until the deadline and answered ``timeout``)."""
    token = "sk-cluster-junk-overwritten"
    home = make_home("cluster-garbage-overwritten", deepseek=token)
    a, b = backends(2, {"alice": home})
    gate = emulator.hold(token)
    results: dict[str, object] = {}
    probing = threading.Thread(target=lambda: results.setdefault("a", a.fetch("deepseek", home=home, timeout=20)))
    probing.start()
    assert emulator.wait_for(token=token)
    client = redis_server.client()

    def lock_attempts() -> int:   # SET NX: each attempt of a lock waiter (nothing else SETs now)
        return client.info("commandstats").get("cmdstat_set", {}).get("calls", 0)

    before = lock_attempts()
    waiting = threading.Thread(target=lambda: results.setdefault("b", b.fetch("deepseek", home=home, timeout=8)))
    waiting.start()
    assert wait_until(lambda: lock_attempts() >= before + 3)    # b is waiting for a's lock
    client.set(key(a, "deepseek", "lock"), "garbage")
    gate.set()
    probing.join()
    waiting.join()
    assert results["a"].available
    assert results["b"].error is None and results["b"].available, results["b"].error
    assert emulator.count(token=token) == 1


def test_garbage_in_the_peers_key_is_no_outage(emulator, make_home, backends, redis_server):
    home = make_home("cluster-garbage-peers", deepseek="sk-cluster-junk-peers")
    a, = backends(1, {"alice": home})
    redis_server.client().set(a.config.redis_prefix + "peers", "garbage")
    for _ in range(2):   # the first count's error reply must not make the backend think Redis is gone
        assert a.stats()["cluster"] == {"connected": True, "peers": 1}
    assert a.fetch("deepseek", home=home, refresh=True).available


BAD_MESSAGES = [b"\xff\xfe", b"[1]", b"null", b"5", b'"alice"', b'{"home": [1]}', b'{"home": {"a": 1}}',
                b'{"home": "alice", "from": [1]}', b'{"home": NaN}', b"1e999", DEEP, b'{"home": "nobody"}']


def test_the_subscriber_survives_any_message_and_hears_the_next_rotation(emulator, make_home, backends,
                                                                        redis_server):
    """Malformed broadcasts (and one naming the home while its generation key holds
    garbage) do not end the subscriber: a rotation broadcast afterwards still closes the
    home's idle workers on the other backend within a second."""
    home = make_home("cluster-sub", deepseek="sk-cluster-sub")
    a, b = backends(2, {"alice": home})
    b.fetch("deepseek", home=home, refresh=True)
    pids = worker_pids(b, home)
    assert pids
    client = redis_server.client()
    channel = a.config.redis_prefix + "rotations"
    for message in BAD_MESSAGES:
        client.publish(channel, message)
    client.set(key(a, "gen"), "garbage")
    client.publish(channel, b'{"home": "alice", "from": "someone"}')   # acted on: b rotates, reads garbage gen
    assert wait_until(lambda: not (pids & {p.pid for p in live_workers()}), 5)
    b.fetch("deepseek", home=home, refresh=True)
    pids = worker_pids(b, home)
    a.invalidate(home=home)
    assert wait_until(lambda: not (pids & {p.pid for p in live_workers()}), 1.0)
    assert b.stats()["cluster"]["connected"]


# -- #5 a probe is stored under the generation it began in --------------------------------------
def test_a_probe_begun_before_a_rotation_is_never_stored_under_the_new_generation(emulator, make_home, backends):
    """Scripted interleaving: backend a's probe is in flight (held at the provider) when b
    rotates the home; a has learnt the new generation (its subscriber did) but has not yet
    rotated locally (its rotation lock is busy, as while it closes workers) when the probe
    ends. Before the fix the result was stored stamped with the *new* generation, and b
    answered the old account's reading from the shared cache after its rotation returned."""
    token = "sk-cluster-stamp"
    home = make_home("cluster-stamp", deepseek=token)
    a, b = backends(2, {"alice": home})
    assert a.fetch("deepseek", home=home).available
    gate = emulator.hold(token)
    results = []

    probe = threading.Thread(target=lambda: results.append(a.fetch("deepseek", home=home, refresh=True, timeout=20)))
    probe.start()
    assert emulator.wait_for(2, token=token)
    busy = a._rotation_lock(str(home.resolve()))
    with busy:
        b.invalidate(home=home)
        assert wait_until(lambda: a._cluster._known.get("alice") == 1)
        gate.set()
        probe.join()
    assert results[0].available
    before = emulator.count(token=token)
    after = b.fetch("deepseek", home=home)
    assert after.probe.path != "cache" and emulator.count(token=token) == before + 1, after.probe
