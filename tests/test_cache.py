"""SnapshotCache's bookkeeping: one entry per (home, provider), found without a scan."""
from __future__ import annotations

from probe.cache import SnapshotCache
from probe.snapshot import Snapshot


def snap(home: str, provider: str, title: str) -> Snapshot:
    return Snapshot(provider=provider, home=home, available=True, title=title)


def test_a_new_fingerprint_replaces_the_old_entry_of_its_home_and_provider_only():
    """Entries outlive their TTL (for ``last_good``), so a put under a new credential
    fingerprint must drop the old fingerprint's entry -- and nothing of other homes or
    providers."""
    cache = SnapshotCache(ttl_s=60)
    old, new = ("/h1", "deepseek", ("fp", 1)), ("/h1", "deepseek", ("fp", 2))
    other_provider, other_home = ("/h1", "kimi", ("fp", 1)), ("/h2", "deepseek", ("fp", 1))
    for key in (old, other_provider, other_home):
        assert cache.put(key, snap(key[0], key[1], "first"), 0)
    assert cache.put(new, snap("/h1", "deepseek", "second"), 0)
    assert cache.get(old) is None and cache.last_good(old, 0) is None
    assert cache.get(new).title == "second"
    assert cache.get(other_provider).title == "first" and cache.get(other_home).title == "first"
    assert len(cache._entries) == 3
    assert cache.put(old, snap("/h1", "deepseek", "back"), 0)        # back to the first fingerprint
    assert cache.get(new) is None and cache.get(old).title == "back" and len(cache._entries) == 3


def test_invalidate_forgets_the_entries_and_puts_work_again_after_it():
    cache = SnapshotCache(ttl_s=60)
    key, other = ("/h1", "deepseek", ("fp", 1)), ("/h2", "deepseek", ("fp", 1))
    cache.put(key, snap("/h1", "deepseek", "a"), 0)
    cache.put(other, snap("/h2", "deepseek", "a"), 0)
    cache.invalidate("/h1")
    assert cache.get(key) is None and cache.get(other).title == "a"
    assert cache.put(key, snap("/h1", "deepseek", "b"), 1)
    assert cache.put(("/h1", "deepseek", ("fp", 2)), snap("/h1", "deepseek", "c"), 1)
    assert cache.get(key) is None and len(cache._entries) == 2
    cache.invalidate()
    assert cache._entries == {}
    assert cache.put(other, snap("/h2", "deepseek", "d"), 1)
