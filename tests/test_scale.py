"""Many homes, a global worker budget: 50 homes polled round-robin with
``max_total_workers=16`` never run more than 16 workers, and the parent's FDs stay flat.

CI runs it for 10 s; ``PROBE_SCALE_SECONDS=60`` gives the full-length run."""
from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from probe import ProbeConfig, ProbeService
from support import live_workers, wait_until

SECONDS = float(os.environ.get("PROBE_SCALE_SECONDS", "10"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS + 120)]


def test_fifty_homes_round_robin_under_a_sixteen_worker_budget(emulator, make_home):
    homes = [make_home(f"scale{i:02d}", deepseek=f"sk-scale-{i:02d}") for i in range(50)]
    me = psutil.Process()
    fds_before = me.num_fds()
    peak_alive, peak_children, fds, answered = [0], [0], [], [0]
    stop = threading.Event()
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls(), max_total_workers=16,
                                  cache_ttl_s=0)) as service:
        def poll(offset: int) -> None:
            i = offset
            while not stop.is_set():
                snap = service.fetch("deepseek", home=homes[i % 50], timeout=10)
                assert snap.available, snap.error
                answered[0] += 1
                i += 4

        def watch() -> None:
            while not stop.is_set():
                stats = service.stats()
                peak_alive[0] = max(peak_alive[0], sum(h["alive"] for h in stats["homes"].values()))
                peak_children[0] = max(peak_children[0], len(live_workers()))
                fds.append(me.num_fds())
                stop.wait(0.05)

        threads = [threading.Thread(target=poll, args=(n,)) for n in range(4)] + [threading.Thread(target=watch)]
        for t in threads:
            t.start()
        time.sleep(SECONDS)   # the test's duration, not a synchronisation
        stop.set()
        for t in threads:
            t.join()
        final_alive = sum(h["alive"] for h in service.stats()["homes"].values())
    assert peak_alive[0] <= 16 and final_alive <= 16
    # + the cold fallbacks the budget sends callers to when all 16 are busy elsewhere
    cold = service.config.max_cold_spawns
    assert peak_children[0] <= 16 + cold
    # bounded by design: per process (16 workers + the cold ones) two pipe ends and (forked) a
    # pidfd, plus the in-process emulator's end of its keep-alive connection; the template's
    # control socket and a few sockets besides
    assert max(fds) <= fds_before + 4 * (16 + cold) + 8, (fds_before, max(fds))
    assert wait_until(lambda: me.num_fds() <= fds_before), "the parent kept descriptors after the service closed"
    print(f"\n50 homes, {SECONDS:.0f} s: {answered[0]} fetches, peak alive {peak_alive[0]}, "
          f"peak children {peak_children[0]}, parent fds {fds_before} before, {min(fds)}..{max(fds)} "
          f"during, {me.num_fds()} after")
