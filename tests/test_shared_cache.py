"""The shared on-disk cache (SPEC §7): several processes, one probe per (home, provider)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from probe import ProbeConfig, ProbeService

pytestmark = pytest.mark.timeout(90)


def test_two_processes_twenty_fetches_one_provider_request(emulator, make_home, tmp_path):
    token = "sk-shared-slow300-"
    home = make_home("shared", deepseek=token)
    cache_dir, go = tmp_path / "cache", tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, threading, time, json
        from probe import ProbeConfig, ProbeService
        service = ProbeService(ProbeConfig(cache_dir={str(cache_dir)!r}, provider_urls={emulator.provider_urls()!r}))
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.005)
        out = []
        threads = [threading.Thread(target=lambda: out.append(service.fetch("deepseek", home={str(home)!r})))
                   for _ in range(10)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(json.dumps([(s.available, s.probe.path) for s in out]), flush=True)
        service.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        results = [json.loads(proc.stdout.readline()) for proc in procs]
    finally:
        for proc in procs:
            proc.wait(30)
            proc.stdout.close()
    flat = [r for result in results for r in result]
    assert len(flat) == 20 and all(available for available, _ in flat)
    assert emulator.count(token=token) == 1, f"{emulator.count(token=token)} provider requests"
    paths = [path for _, path in flat]
    probed = [p for p in paths if p not in ("cache", "coalesced")]
    assert len(probed) == 1, paths       # one probe on the host; the other process read its result
    assert "cache" in paths
    for name in (p.name for p in cache_dir.rglob("*")):
        assert token not in name and "shared" not in name


def test_corrupt_cache_file_is_ignored_and_replaced(emulator, make_home, tmp_path):
    home = make_home("corrupt", deepseek="sk-corrupt")
    config = ProbeConfig(cache_dir=tmp_path / "cache", provider_urls=emulator.provider_urls())
    with ProbeService(config) as service:
        service.fetch("deepseek", home=home)
    (cached,) = list((tmp_path / "cache").rglob("*.json"))
    for garbage in (b"", b"{\"truncat", b"[]", json.dumps({"expires_at": 9e12, "written_at": 0, "snapshot": {}}).encode()):
        cached.write_bytes(garbage)
        with ProbeService(config) as service:
            snap = service.fetch("deepseek", home=home)
        assert snap.available and snap.probe.path != "cache"
        assert json.loads(cached.read_bytes())["snapshot"]["provider"] == "deepseek"


def test_unwritable_cache_dir_degrades_with_one_warning(emulator, make_home, tmp_path, caplog):
    if os.geteuid() == 0:
        cache_dir = tmp_path / "not-a-dir"
        cache_dir.write_text("a file where the cache directory should be")
    else:
        cache_dir = tmp_path / "ro"
        cache_dir.mkdir(mode=0o500)
    home = make_home("ro", deepseek="sk-ro")
    caplog.set_level(logging.WARNING, logger="probe.disk_cache")
    with ProbeService(ProbeConfig(cache_dir=cache_dir, provider_urls=emulator.provider_urls())) as service:
        snaps = [service.fetch("deepseek", home=home, refresh=True) for _ in range(3)]
    assert all(s.available for s in snaps)
    warnings = [r for r in caplog.records if r.name == "probe.disk_cache"]
    assert len(warnings) == 1 and "continuing without it" in warnings[0].getMessage()


def test_rotation_drops_shared_entries(emulator, make_home, tmp_path):
    home = make_home("rot-shared", deepseek="sk-rot-shared")
    config = ProbeConfig(cache_dir=tmp_path / "cache", provider_urls=emulator.provider_urls())
    with ProbeService(config) as one, ProbeService(config) as two:
        one.fetch("deepseek", home=home)
        assert two.fetch("deepseek", home=home).probe.path == "cache"
        one.invalidate(home=home)
        assert not list((tmp_path / "cache").rglob("*.json"))
        assert two.fetch("deepseek", home=home, refresh=True).probe.path != "cache"


def test_credential_changes_leave_one_entry_and_sweep_orphaned_temp_files(emulator, make_home, tmp_path):
    """Rotating credentials many times must not leave a file per rotation: each noticed
    change drops the home's entries, and temp files a killed writer left behind go too --
    but not a temp file young enough to be another process's write in progress."""
    import time

    home = make_home("sweep", deepseek="sk-sweep-0")
    cache_dir = tmp_path / "cache"
    with ProbeService(ProbeConfig(cache_dir=cache_dir, provider_urls=emulator.provider_urls())) as service:
        service.fetch("deepseek", home=home)
        (home_dir,) = cache_dir.iterdir()
        orphan, in_progress = home_dir / ".tmp-orphan", home_dir / ".tmp-in-progress"
        orphan.write_text("{")
        in_progress.write_text("{")
        an_hour_ago = time.time() - 3600
        os.utime(orphan, (an_hour_ago, an_hour_ago))
        for n in range(1, 4):
            (home / ".env").write_text(f"DEEPSEEK_API_KEY=sk-sweep-{n}\n")
            assert service.fetch("deepseek", home=home).available
            assert len(list(home_dir.glob("*.json"))) == 1
        assert not orphan.exists() and in_progress.exists()
        assert service.fetch("deepseek", home=home).probe.path == "cache"


class SteppedClocks:
    """A host's two clocks for the disk cache, moved by the test: the wall clock (which an
    operator or NTP may step either way) and the time since boot (which only runs on)."""

    def __init__(self) -> None:
        self.wall_s = 2_000_000_000.0
        self.boot_s = 5_000.0

    def wall(self) -> float:
        return self.wall_s

    def since_boot(self) -> float:
        return self.boot_s

    def run(self, seconds: float) -> None:
        self.wall_s += seconds
        self.boot_s += seconds


def _disk_entry(tmp_path, clocks, *, since_boot=True):
    from pathlib import Path

    from probe.shared import Fetch
    from probe.shared.disk import DiskCache
    from probe.snapshot import Snapshot

    cache = DiskCache(tmp_path / "cache", wall=clocks.wall, since_boot=clocks.since_boot if since_boot else None)
    home = str(tmp_path / "home")
    fetch = Fetch("deepseek", Path(home), (home, "deepseek", ("fingerprint",)), 0, 0.0, 10.0, False)
    cache.write(fetch, Snapshot(provider="deepseek", home=home, available=True), ttl_s=45)
    return cache, fetch


@pytest.mark.parametrize("step_s", [-3600.0, -40.0, 3600.0])
def test_a_backward_clock_step_keeps_expired_disk_cache_entries_fresh(tmp_path, step_s):
    """Issue #26 item 9: freshness was wall clock only, so a backward step kept an expired
    entry fresh for the length of the step (and a forward one expired good entries). On
    one host the age comes from the time since boot, which no step moves."""
    clocks = SteppedClocks()
    cache, fetch = _disk_entry(tmp_path, clocks)
    clocks.run(30)
    clocks.wall_s += step_s
    fresh = cache.read(fetch)
    assert fresh is not None, "30 s into a 45 s entry it is fresh, whatever the wall clock did"
    clocks.run(16)
    assert cache.read(fetch) is None, "46 s into a 45 s entry it has expired, whatever the wall clock did"


def test_a_disk_cache_entry_stamped_in_the_future_is_stale(tmp_path):
    """Without the time since boot (another boot's file, a platform without CLOCK_BOOTTIME)
    the wall clock decides -- and an entry stamped after "now" (written before a backward
    step) is stale, not fresh until its stamp comes round again."""
    clocks = SteppedClocks()
    cache, fetch = _disk_entry(tmp_path, clocks, since_boot=False)
    assert cache.read(fetch) is not None
    clocks.wall_s -= 3600
    assert cache.read(fetch) is None


def test_a_cache_file_nested_100000_deep_is_ignored_not_a_recursion_error(emulator, make_home, tmp_path):
    """The disk cache trusts its files no more than Redis (issue 26 second look): a file
    another process or a broken disk left nested past any depth is a corrupt entry."""
    home = make_home("deep", deepseek="sk-deep-file")
    config = ProbeConfig(cache_dir=tmp_path / "cache", provider_urls=emulator.provider_urls())
    with ProbeService(config) as service:
        service.fetch("deepseek", home=home)
    (cached,) = list((tmp_path / "cache").rglob("*.json"))
    cached.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with ProbeService(config) as service:
        snap = service.fetch("deepseek", home=home)
    assert snap.available and snap.probe.path != "cache"
