"""``probe stress`` as a smoke test of the invariants, and a bounded soak."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from probe.tools.stress import LatencyHistogram, StressOptions, balance_for, percentile, run_stress

pytestmark = pytest.mark.timeout(180)
SPEC_KEYS = {"ok", "requests", "duration_s", "throughput_rps", "latency_ms", "paths", "errors", "before", "after",
             "worker_rss_mb", "invariants"}
INVARIANTS = {"no_leaked_processes", "no_leaked_fds", "no_leaked_threads", "no_zombies", "no_cross_home",
              "no_stale_after_rotation", "all_answered_in_deadline"}


def stress_cli(*args: str) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, "-m", "probe.cli", "stress", "--json", *args],
                            capture_output=True, text=True, timeout=170, env=dict(os.environ))
    return result.returncode, json.loads(result.stdout)


def test_quick_stress_run_holds_every_invariant():
    code, report = stress_cli("--requests", "200", "--homes", "3", "--concurrency", "8",
                              "--rotate-every", "0.1", "--fault-rate", "0.05")
    assert SPEC_KEYS <= set(report) and set(report["invariants"]) == INVARIANTS
    assert report["ok"] and code == 0, why(report)
    assert report["requests"] == 200
    assert set(report["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert report["before"] == report["after"]
    assert report["worker_rss_mb"]["median"] > 0, "a short run still reports worker RSS"


def test_workers_sigkilled_under_load_leave_every_invariant_intact():
    """Chaos on top of load: a random pool worker SIGKILLed every 50 ms while 8 callers
    probe 3 homes. Callers of a killed worker get ``worker_crashed`` (counted, expected);
    the pools heal, nobody waits past the deadline, and nothing leaks."""
    code, report = stress_cli("--requests", "600", "--homes", "3", "--concurrency", "8", "--latency-ms", "3",
                              "--kill-every", "0.05")
    assert report["ok"] and code == 0, why(report)
    assert report["injected"]["worker_kills"] > 0 and report["errors"].get("worker_crashed", 0) > 0
    assert report["before"] == report["after"]


def test_kill_own_worker_never_signals_a_stranger():
    """The chaos helper signals only this process's children: not itself, not pid 1, not a
    pid that is gone."""
    import os

    from probe.tools.stress import kill_own_worker

    assert not kill_own_worker(os.getpid()) and not kill_own_worker(1)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert kill_own_worker(child.pid) and child.wait(10) == -9
    assert not kill_own_worker(child.pid)


def test_latency_histogram_matches_exact_percentiles_in_fixed_memory():
    """The soak's latencies live in a histogram so the harness cannot grow the parent's RSS;
    its percentiles stay within the bucket width (0.5 %) of the exact ones."""
    import random

    rng = random.Random(3)
    samples = [rng.lognormvariate(1.0, 1.2) for _ in range(20_000)] + [0.0004, 250_000.0]
    histogram = LatencyHistogram()
    size = len(histogram.counts)
    for value in samples:
        histogram.add(value)
    assert len(histogram.counts) == size and histogram.total == len(samples)
    for q in (0, 50, 95, 99, 100):
        exact = percentile(samples, q)
        assert exact <= histogram.percentile(q) <= max(exact * 1.005, LatencyHistogram.FLOOR_MS), q
    assert histogram.max_ms == 250_000.0 and LatencyHistogram().percentile(50) == 0.0


def test_stress_detects_a_cross_home_result(monkeypatch):
    """The checker is not vacuous: make home 1's credential answer with home 0's data."""
    import probe.tools.stress as stress

    original = stress.balance_for
    monkeypatch.setattr(stress, "balance_for", lambda home, generation, account=0: original(0, generation, account))
    report = run_stress(StressOptions(homes=2, concurrency=2, requests=40))
    assert report["invariants"]["no_cross_home"] is False and report["ok"] is False
    assert balance_for(1, 2) == "1000002.00"


def why(report: dict) -> str:
    """What failed, first (a whole report is cut short in a CI log)."""
    failed = [name for name, ok in report.get("invariants", {}).items() if not ok]
    return (f"failed: {failed}; violations {report.get('violations')}; zombies {report.get('zombies')}; "
            f"before {report.get('before')}; after {report.get('after')}; errors {report.get('errors')}; "
            f"latency {report.get('latency_ms')}; spawn {report.get('spawn')}")


@pytest.mark.slow
def test_soak_five_homes_faults_and_rotations():
    """The CI-sized soak: 20 s over 5 homes, 5 % faults, a rotation every second, a worker
    SIGKILLed every 2 s."""
    code, report = stress_cli("--duration", "20", "--homes", "5", "--concurrency", "8",
                              "--fault-rate", "0.05", "--rotate-every", "1", "--latency-ms", "2",
                              "--kill-every", "2")
    assert report["ok"] and code == 0, why(report)
    assert report["requests"] > 1000


def test_polling_many_homes_on_a_schedule_reports_service_cpu_and_spawns():
    """The scale scenario in small: 60 homes, each polled once a second for 3 s, through
    a budget of 8 workers -- every home gets its polls, every answer is its own, and the
    report says what the service spent (CPU, worker starts) and how late polls started."""
    code, report = stress_cli("--homes", "60", "--poll-interval", "1", "--duration", "3", "--concurrency", "8",
                              "--max-total-workers", "8", "--pool-size", "1")
    assert report["ok"] and code == 0, why(report)
    assert report["requests"] == 180, report["requests"]     # 60 homes x 3 polls, however late some start
    assert report["spawns"] >= report["requests"] - 8, "a budget of 8 for 60 homes: nearly every poll starts a worker"
    assert report["service_cpu"]["seconds"] > 0 and report["service_cpu"]["percent_of_one_core"] > 0
    assert set(report["schedule_lag_ms"]) == {"p50", "p99", "max"}
    assert report["options"]["poll_interval_s"] == 1 and report["options"]["max_total_workers"] == 8


def test_the_zombie_count_sees_an_unreaped_child():
    """Control for ``no_zombies``: a child that exited and was not reaped is counted."""
    from probe.tools.stress import _zombies

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        import time

        deadline = time.monotonic() + 10
        while _zombies() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _zombies() == 1
    finally:
        child.wait()
    assert _zombies() == 0


def test_a_zombie_left_unreaped_is_named_with_its_parent():
    """Control for ``no_zombies`` as the run decides it: a child that exited and stays
    unreaped past the grace is reported, saying what it was and whose child."""
    from probe.tools.stress import lingering_zombies

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)   # it has exited; still unreaped
        found = lingering_zombies(0.05)
        assert len(found) == 1 and f"pid {child.pid}, child of " in found[0] and f"pid {os.getpid()})" in found[0]
    finally:
        child.wait()
    assert lingering_zombies(0.05) == []


def test_a_zombie_is_blamed_only_once_it_outlived_its_own_grace():
    """The verdict comes from one reading, and each exited process gets its own grace from
    when it was first seen: one that exits while the check runs (a surge worker expiring;
    the service is still up) and is reaped a moment later is no leak, but one that stays
    is. Readings scripted as (time, {pid: what}), so no timing is involved."""
    from probe.tools.stress import lingering_zombies

    def scripted(*readings):
        clock_values = iter(t for t, _ in readings)
        pids = iter(p for _, p in readings)
        now = [0.0]

        def clock():
            return now[0]

        def read():
            now[0] = next(clock_values)
            return next(pids)
        return {"read": read, "clock": clock, "pause": lambda: None}

    # clean at once: one reading, no second count that could catch a fresh exit
    assert lingering_zombies(2.0, **scripted((0.0, {}), (0.1, {7: "late"}))) == []
    # 5 is reaped after 1.5 s; 6, first seen at 1.5 s, is reaped at 3.4 s: neither outlived its grace
    assert lingering_zombies(2.0, **scripted((0.0, {5: "a"}), (1.5, {5: "a", 6: "b"}), (2.5, {6: "b"}),
                                             (3.4, {6: "b"}), (3.5, {}))) == []
    # 6 is still there 2 s after it was first seen: blamed, 5 (still young) is not
    assert lingering_zombies(2.0, **scripted((0.0, {6: "b"}), (1.0, {5: "a", 6: "b"}),
                                             (2.0, {5: "a", 6: "b"}))) == ["b"]


def test_home_reads_of_homes_with_two_of_four_providers_hold_every_invariant():
    """``--providers-per-home 2 --home-reads``: each poll is one fetch_home answering exactly
    the home's two providers, each answer its own home's and generation's (every one of the
    four providers carries the identity, rotations included), and no provider a home lacks
    is ever asked for -- not at the emulator, not in the service's stats."""
    code, report = stress_cli("--requests", "120", "--homes", "8", "--concurrency", "4", "--providers-per-home", "2",
                              "--home-reads", "--rotate-every", "0.1")
    assert report["ok"] and code == 0, why(report)
    assert set(report["invariants"]) == INVARIANTS | {"home_reads_list_the_home"}
    assert report["requests"] == 120 and sum(report["provider_answers"].values()) == 240
    assert set(report["provider_answers"]) == {"deepseek", "anthropic", "openai-codex", "openrouter"}
    assert 0 < report["home_reads"] and report["starts_per_poll"] is not None
    assert report["emulator_requests"]["without_token"] == 0 and "no_credentials" not in report["service_errors"]
    assert report["options"]["providers_per_home"] == 2 and report["options"]["home_reads"] is True


def test_without_home_reads_each_provider_of_a_home_is_fetched_on_its_own():
    """K > 1 without ``--home-reads``: the panel before SPEC §17, a fetch per provider --
    the comparison the home-read shape is measured against; no home read is made."""
    report = run_stress(StressOptions(homes=4, concurrency=2, requests=30, providers_per_home=3))
    assert report["ok"], why(report)
    assert sum(report["provider_answers"].values()) == 90 and report["home_reads"] == 0
    assert "home_reads_list_the_home" not in report["invariants"]


def test_each_home_holds_k_of_the_four_providers_rotating():
    from probe.tools.stress import HOME_PROVIDERS, home_providers

    assert {home_providers(i, 1) for i in range(8)} == {("deepseek",)}, "K=1 keeps the DeepSeek-only homes"
    pairs = [home_providers(i, 2) for i in range(8)]
    assert all(len(set(p)) == 2 for p in pairs)
    assert all(sum(name in p for p in pairs) == 4 for name in HOME_PROVIDERS), "each provider in half the homes"
    assert home_providers(5, 4) and set(home_providers(5, 4)) == set(HOME_PROVIDERS)
    with pytest.raises(ValueError):
        home_providers(0, 5)


def test_stress_detects_a_cross_home_result_from_a_provider_other_than_deepseek(monkeypatch):
    """The identity check covers every provider of a home read: make every non-DeepSeek
    token answer with home 0's data and the run must say so."""
    import probe.tools.stress as stress

    original = stress.scripted_body
    monkeypatch.setattr(stress, "scripted_body", lambda provider, home, generation, account=0: original(
        provider, 0 if provider != "deepseek" else home, generation, account))
    report = run_stress(StressOptions(homes=4, concurrency=2, requests=20, providers_per_home=4, home_reads=True))
    assert report["invariants"]["no_cross_home"] is False and report["ok"] is False
    assert report["violations"]["no_cross_home"] >= 15   # homes 1-3: three foreign answers a read


def test_three_accounts_per_provider_each_answer_carries_its_own_accounts_value():
    """``--accounts 3`` (SPEC §18): each provider of a home holds three accounts (numbered
    ``.env`` keys, Codex pool rows), every poll one home read probing all of them, while
    credentials rotate; each account's answer is its own account's, home's and
    generation's (``no_cross_account``), and all six accounts of a home are one request."""
    code, report = stress_cli("--requests", "60", "--homes", "6", "--concurrency", "4", "--providers-per-home", "2",
                              "--accounts", "3", "--home-reads", "--rotate-every", "0.2")
    assert report["ok"] and code == 0, why(report)
    assert set(report["invariants"]) == INVARIANTS | {"home_reads_list_the_home", "no_cross_account"}
    assert report["options"]["accounts_per_home"] == 3
    assert report["emulator_requests"]["without_token"] == 0
    # every poll asked the provider of each of its three accounts (OpenRouter: two requests each)
    asked = sum(n for name, n in report["emulator_requests"].items() if name != "openrouter")
    assert asked >= 3 * sum(n for name, n in report["provider_answers"].items() if name != "openrouter") - 3 * 60


def test_stress_detects_an_account_answering_with_another_accounts_value(monkeypatch):
    """The per-account identity check is real: make every second account answer with the
    first account's amount (same home, same generation) and the run must say so."""
    import probe.tools.stress as stress

    original = stress.scripted_body
    monkeypatch.setattr(stress, "scripted_body", lambda provider, home, generation, account=0: original(
        provider, home, generation, 0 if account == 1 else account))
    report = run_stress(StressOptions(homes=3, concurrency=2, requests=12, providers_per_home=2, home_reads=True,
                                      accounts_per_home=3))
    assert report["invariants"]["no_cross_account"] is False and report["ok"] is False
    assert report["violations"]["no_cross_account"] >= 12 * 2 * 0.5   # account 1 of both providers, most polls
    assert report["invariants"]["no_cross_home"] is True


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_homes_of_three_accounts_polled_through_home_reads_start_at_most_once_a_poll():
    """Issue #27's scale target in small (BENCHMARKS.md "Accounts under load" has 200
    homes): 40 homes x 2 providers x 3 accounts, a home read every 4 s for 8 s: at most one
    process start per home poll (all six accounts ride one worker request), every
    account's answer its own."""
    code, report = stress_cli("--homes", "40", "--poll-interval", "4", "--duration", "8", "--concurrency", "8",
                              "--providers-per-home", "2", "--accounts", "3", "--home-reads")
    assert report["ok"] and code == 0, why(report)
    assert report["requests"] == 80
    assert report["starts_per_poll"] <= 1.0, report["starts_per_poll"]
    assert report["invariants"]["no_cross_account"] is True
