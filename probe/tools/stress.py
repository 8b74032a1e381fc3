"""``probe stress``: a load run against the built-in emulator that checks invariants.

Each throw-away home gets a DeepSeek token whose emulator answer encodes (home, generation)
in its balance, so every snapshot says whose credential produced it. The run checks:

* ``no_cross_home`` — a result for home i never carries another home's data;
* ``no_stale_after_rotation`` — a fetch that began after rotation g of its home returned
  never carries a generation older than g;
* ``all_answered_in_deadline`` — every caller answered within its deadline (plus a small
  grace for thread scheduling);
* ``no_leaked_processes`` / ``_fds`` / ``_threads`` — after shutdown the parent has what it
  had before the run;
* ``no_zombies`` — once the callers are done, no exited worker is left unreaped: no
  descendant stays a zombie for ``ZOMBIE_GRACE_S`` (the report's ``zombies`` names any
  that did, and whose child each was).

Two shapes of load: callers that fetch random homes back to back (the default), or, with
``poll_interval_s``, every home polled on a fixed schedule (first polls spread evenly over
one interval), as a settings backend with many accounts is. The report's ``service_cpu``
is the CPU the service used (this process minus the in-process emulator's threads, plus
every worker and template process), as a share of one core over the run.

Injected faults (``--fault-rate``) are expected errors: they are counted, not failures.
"""
from __future__ import annotations

import array
import contextlib
import heapq
import math
import os
import random
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from probe.config import ProbeConfig
from probe.tools.emulator import Emulator
from probe.service import ProbeService

#: answered later than its deadline by more than this = a violated invariant
DEADLINE_GRACE_S = 1.0
#: a descendant still a zombie this long after it was first seen = a violated invariant
ZOMBIE_GRACE_S = 2.0
STRESS_PROVIDER = "deepseek"


@dataclass
class StressOptions:
    homes: int = 3
    concurrency: int = 8
    requests: int | None = 300
    duration_s: float | None = None
    pool_size: int = 2
    latency_ms: int = 0
    fault_rate: float = 0.0
    rotate_every_s: float = 0.0
    kill_every_s: float = 0.0
    timeout_s: float = 10.0
    refresh: bool = True
    #: > 0: poll every home once per this many seconds instead of back-to-back random fetches
    poll_interval_s: float = 0.0
    #: the service's ``max_total_workers`` (None: the ProbeConfig default)
    max_total_workers: int | None = None


def token_for(home: int, generation: int, latency_ms: int) -> str:
    slow = f"-slow{latency_ms}-" if latency_ms else ""
    return f"sk-stress-h{home}-g{generation}{slow}"


GENERATIONS_PER_HOME = 1_000_000


def balance_for(home: int, generation: int) -> str:
    """The emulator's answer for (home, generation): a whole-dollar balance that encodes
    both (the adapter shows two decimals, so the cents cannot carry anything)."""
    return f"{home * GENERATIONS_PER_HOME + generation}.00"


def process_footprint() -> dict[str, int]:
    me = psutil.Process()
    children = 0
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                children += 1
    return {"processes": children, "threads": threading.active_count(), "fds": me.num_fds()}


def kill_own_worker(pid: int) -> bool:
    """SIGKILL ``pid`` if it is (still) a child of this process or of one of its children
    (a worker forked by the template); True if a signal went out.

    The pid comes from a ``stats()`` snapshot, so by now it may have been reaped and
    reused by any process on the host. A pidfd pins one process: if the ppid check below
    reads a newcomer instead, the pidfd still names the dead original and the signal
    fails with ESRCH -- a stranger is never signalled."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfds (not Linux): no chaos rather than a risk
        return False
    try:
        parent = psutil.Process(pid).ppid()
        if parent != os.getpid() and psutil.Process(parent).ppid() != os.getpid():
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except (OSError, psutil.Error):
        return False
    finally:
        os.close(pidfd)


def percentile(values: "list[float] | array.array", q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class LatencyHistogram:
    """Latencies in log-spaced buckets (0.5 % apart, 1 µs to ~17 min): fixed memory however
    long the run, so a 10-minute soak measures the service's RSS and not the harness's own
    sample list (824k samples in an array were 6.6 MB, the whole growth the first soak saw).
    A percentile is the upper edge of its bucket, at most 0.5 % above the exact value; the
    maximum is kept exactly."""

    FLOOR_MS = 0.001
    RATIO = 1.005

    def __init__(self) -> None:
        self._log_ratio = math.log(self.RATIO)
        self.counts = array.array("Q", bytes(8 * (1 + int(math.log(1e6 / self.FLOOR_MS) / self._log_ratio))))
        self.total = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        index = 0 if ms <= self.FLOOR_MS else math.ceil(math.log(ms / self.FLOOR_MS) / self._log_ratio)
        self.counts[min(index, len(self.counts) - 1)] += 1
        self.total += 1
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, q: float) -> float:
        """Same rank rule as :func:`percentile` on the raw samples."""
        if not self.total:
            return 0.0
        rank = min(self.total - 1, int(round(q / 100 * (self.total - 1))))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen > rank:
                return min(self.FLOOR_MS * self.RATIO ** index, self.max_ms)
        return self.max_ms


class _Homes:
    """The throw-away homes, their token generations and the rotation timeline."""

    def __init__(self, root: Path, count: int, emulator: Emulator, latency_ms: int) -> None:
        self.root, self.emulator, self.latency_ms = root, emulator, latency_ms
        self.paths = [root / f"home{i}" for i in range(count)]
        self.generation = [0] * count
        self.rotated_at: list[list[tuple[float, int]]] = [[(0.0, 0)] for _ in range(count)]
        self.lock = threading.Lock()
        for index, path in enumerate(self.paths):
            path.mkdir(parents=True)
            self._write(index, 0)

    def _write(self, index: int, generation: int) -> None:
        token = token_for(index, generation, self.latency_ms)
        self.emulator.script(token, {"is_available": True, "balance_infos": [{
            "currency": "USD", "total_balance": balance_for(index, generation),
            "granted_balance": "0", "topped_up_balance": "0"}]})
        tmp = self.paths[index] / ".env.tmp"
        tmp.write_text(f"DEEPSEEK_API_KEY={token}\n")
        os.replace(tmp, self.paths[index] / ".env")

    def rotate(self, index: int, service: ProbeService) -> None:
        with self.lock:
            self.generation[index] += 1
            generation = self.generation[index]
        self._write(index, generation)
        service.invalidate(home=self.paths[index])
        with self.lock:
            self.rotated_at[index].append((time.monotonic(), generation))

    def floor(self, index: int, started: float) -> int:
        """The newest generation whose rotation had returned before ``started``."""
        with self.lock:
            return max(g for t, g in self.rotated_at[index] if t <= started)


class _PollSchedule:
    """When each home is next due: home i first at ``start + (i + ½) / n`` intervals, so
    the polls are spread evenly, then every ``interval_s``. A poll that starts late does
    not shift the schedule, nor is it dropped when the run's duration is up (the lag is
    reported): a run makes every poll due in its duration, so its size does not depend on
    how fast the machine is."""

    def __init__(self, homes: int, interval_s: float, start: float) -> None:
        self.interval_s = interval_s
        self._due = [(start + (i + 0.5) * interval_s / homes, i) for i in range(homes)]
        heapq.heapify(self._due)
        self._lock = threading.Lock()

    def take(self, stop: threading.Event, end: float | None) -> tuple[int, float] | None:
        """(home, when it was due), after waiting until then; None when ``stop`` is set or
        the next poll falls after ``end``."""
        with self._lock:
            due, index = heapq.heappop(self._due)
            heapq.heappush(self._due, (due + self.interval_s, index))
        if end is not None and due >= end:
            return None
        if stop.wait(max(0.0, due - time.monotonic())):
            return None
        return index, due


def service_cpu_s(exclude: set[int] = frozenset()) -> float:
    """CPU seconds of this process (all threads), of its reaped children, and of every
    live descendant (and what those reaped: a template's exited workers), leaving out the
    processes in ``exclude`` (an emulator running as a child)."""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        if proc.pid in exclude:
            continue
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _zombie_pids() -> dict[int, str]:
    """This process's descendants that exited and were not reaped yet: pid -> what it
    was and whose child (a template's worker, or one of ours)."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                parent = child.parent()
                found[child.pid] = (f"{child.name()} (pid {child.pid}, child of "
                                    f"{parent.name() if parent else '?'} pid {child.ppid()})")
    return found


def _zombies() -> int:
    return len(_zombie_pids())


def lingering_zombies(grace_s: float = ZOMBIE_GRACE_S, *, read: Callable[[], dict[int, str]] = _zombie_pids,
                      clock: Callable[[], float] = time.monotonic,
                      pause: Callable[[], None] = lambda: time.sleep(0.02)) -> list[str]:
    """The descendants that stayed zombies for ``grace_s`` (described); [] as soon as one
    reading finds none.

    Each zombie gets its own grace from the reading that first saw it, and the verdict
    comes from one reading. Counting again after a clean reading (as this check once did)
    blamed a process that exited in between -- a parked surge worker expiring, a
    retirement finishing: the service is still running here -- for a zombie its parent
    reaps a moment later, and a loaded machine makes that moment longer. Readings stop
    after ``10 * grace_s`` whatever they show (then every zombie present counts)."""
    first_seen: dict[int, float] = {}
    give_up = clock() + 10 * grace_s
    while True:
        current = read()
        now = clock()
        first_seen = {pid: first_seen.get(pid, now) for pid in current}
        lingering = [what for pid, what in sorted(current.items()) if now - first_seen[pid] >= grace_s]
        if not current or lingering:
            return lingering
        if now >= give_up:
            return [what for _, what in sorted(current.items())]
        pause()


def identify(snap_details: tuple[str, ...]) -> tuple[int, int] | None:
    """(home, generation) from a stress snapshot's balance line, or None."""
    for line in snap_details:
        if line.startswith("Balance: $"):
            amount = line.split("$", 1)[1].split()[0].replace(",", "")
            with contextlib.suppress(ValueError):
                return divmod(int(float(amount)), GENERATIONS_PER_HOME)
    return None


def run_stress(options: StressOptions, progress: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """Run the load and return the report (SPEC §10 ``--json`` shape)."""
    before = process_footprint()
    root = Path(tempfile.mkdtemp(prefix="quota-probe-stress-"))
    latencies = LatencyHistogram()
    lags = LatencyHistogram()
    paths: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    injected: Counter[str] = Counter()
    rss_samples = array.array("f")   # 4 bytes a sample, one sample a worker every 0.5 s (5 s past 50 homes)
    parent_rss: list[float] = []
    lock = threading.Lock()
    issued = 0
    stop = threading.Event()
    try:
        with Emulator() as emulator:
            emulator.set_fault_rate(options.fault_rate, seed=1)
            homes = _Homes(root, options.homes, emulator, options.latency_ms)
            limits = {} if options.max_total_workers is None else {"max_total_workers": options.max_total_workers}
            config = ProbeConfig(pool_size=options.pool_size, provider_urls=emulator.provider_urls(),
                                 probe_timeout_s=options.timeout_s, **limits)
            started_at = time.monotonic()   # the homes are written: the load starts now
            end = None if options.duration_s is None else started_at + options.duration_s
            schedule = (_PollSchedule(options.homes, options.poll_interval_s, started_at)
                        if options.poll_interval_s > 0 else None)
            cpu_before = service_cpu_s()
            with ProbeService(config) as service:
                def take_ticket() -> bool:
                    nonlocal issued
                    with lock:
                        if stop.is_set():
                            return False
                        if options.requests is not None and issued >= options.requests:
                            return False
                        # A poll schedule ends by itself (``take`` hands out no poll due at or
                        # after ``end``) and every poll due before that is made however late:
                        # a service that falls behind shows as schedule lag, not as fewer polls.
                        if (schedule is None and options.duration_s is not None
                                and time.monotonic() - started_at >= options.duration_s):
                            return False
                        issued += 1
                        return True

                def caller(seed: int) -> None:
                    rng = random.Random(seed)
                    while take_ticket():
                        if schedule is None:
                            index = rng.randrange(options.homes)
                        else:
                            due = schedule.take(stop, end)
                            if due is None:
                                return
                            index = due[0]
                            with lock:
                                lags.add(max(0.0, time.monotonic() - due[1]) * 1000)
                        start = time.monotonic()
                        floor = homes.floor(index, start)
                        snap = service.fetch(STRESS_PROVIDER, home=homes.paths[index], refresh=options.refresh,
                                             timeout=options.timeout_s)
                        elapsed = time.monotonic() - start
                        identity = identify(snap.details)
                        with lock:
                            latencies.add(elapsed * 1000)
                            paths[snap.probe.path] += 1
                            if snap.error:
                                errors[snap.error.code] += 1
                            if elapsed > options.timeout_s + DEADLINE_GRACE_S:
                                violations["all_answered_in_deadline"] += 1
                            if identity is not None:
                                if identity[0] != index:
                                    violations["no_cross_home"] += 1
                                elif identity[1] < floor:
                                    violations["no_stale_after_rotation"] += 1
                        progress(1)

                def rotator() -> None:
                    rng = random.Random(7)
                    while not stop.wait(options.rotate_every_s):
                        homes.rotate(rng.randrange(options.homes), service)

                me = psutil.Process()

                def sample() -> None:
                    with lock:
                        parent_rss.append(me.memory_info().rss / 1048576)
                    for state in service.stats()["homes"].values():
                        for worker in state["workers"]:
                            if worker["rss_mb"]:
                                with lock:
                                    rss_samples.append(worker["rss_mb"])

                # a sample reads every worker's RSS through stats(): with many homes that is
                # the harness's own load, charged to the service's CPU, so sample less often
                period_s = 0.5 if options.homes <= 50 else 5.0

                def sampler() -> None:
                    while not stop.wait(period_s):
                        sample()

                def killer() -> None:
                    rng = random.Random(11)
                    while not stop.wait(options.kill_every_s):
                        pids = [w["pid"] for state in service.stats()["homes"].values() for w in state["workers"]]
                        if pids and kill_own_worker(rng.choice(pids)):
                            with lock:
                                injected["worker_kills"] += 1

                helpers = [threading.Thread(target=sampler, name="stress-sampler")]
                if options.rotate_every_s > 0:
                    helpers.append(threading.Thread(target=rotator, name="stress-rotator"))
                if options.kill_every_s > 0:
                    helpers.append(threading.Thread(target=killer, name="stress-killer"))
                callers = [threading.Thread(target=caller, args=(i,), name=f"stress-caller-{i}")
                           for i in range(options.concurrency)]
                for thread in helpers + callers:
                    thread.start()
                for thread in callers:
                    thread.join()
                sample()   # with the workers still up: a run shorter than one period gets a reading too
                stop.set()
                for thread in helpers:
                    thread.join()
                duration_s = time.monotonic() - started_at
                # an exited forked worker is reaped by the template as it exits; an exec-started
                # one when the pool sees it exited (its next claim or reap pass, stats())
                zombies = lingering_zombies()
                stats = service.stats()
        service_cpu = service_cpu_s() - cpu_before - emulator.cpu_s
    finally:
        shutil.rmtree(root, ignore_errors=True)
    after = _settled_footprint(before)
    invariants = {
        "no_leaked_processes": after["processes"] <= before["processes"],
        "no_leaked_fds": after["fds"] <= before["fds"],
        "no_leaked_threads": after["threads"] <= before["threads"],
        "no_zombies": not zombies,
        "no_cross_home": violations["no_cross_home"] == 0,
        "no_stale_after_rotation": violations["no_stale_after_rotation"] == 0,
        "all_answered_in_deadline": violations["all_answered_in_deadline"] == 0,
    }
    total = sum(paths.values())
    return {
        "ok": all(invariants.values()),
        "requests": total,
        "duration_s": round(duration_s, 3),
        "throughput_rps": round(total / duration_s, 1) if duration_s else 0.0,
        "latency_ms": {"p50": round(latencies.percentile(50), 3), "p95": round(latencies.percentile(95), 3),
                       "p99": round(latencies.percentile(99), 3), "max": round(latencies.max_ms, 3)},
        "paths": dict(paths),
        "errors": dict(errors),
        "injected": {"fault_rate": options.fault_rate, "worker_kills": injected["worker_kills"]},
        "before": before,
        "after": after,
        "worker_rss_mb": {"median": round(statistics.median(rss_samples), 1) if rss_samples else None,
                          "max": round(max(rss_samples), 1) if rss_samples else None},
        "parent_rss_mb": _rss_trend(parent_rss),
        "service_cpu": {"seconds": round(service_cpu, 3),
                        "percent_of_one_core": round(100 * service_cpu / duration_s, 2) if duration_s else None},
        "spawns": stats["spawns"],
        "spawn": stats["spawn"],
        "schedule_lag_ms": ({"p50": round(lags.percentile(50), 3), "p99": round(lags.percentile(99), 3),
                             "max": round(lags.max_ms, 3)} if lags.total else None),
        "violations": dict(violations),
        "zombies": zombies,
        "invariants": invariants,
        "options": {"homes": options.homes, "concurrency": options.concurrency, "pool_size": options.pool_size,
                    "latency_ms": options.latency_ms, "fault_rate": options.fault_rate,
                    "rotate_every_s": options.rotate_every_s, "kill_every_s": options.kill_every_s,
                    "poll_interval_s": options.poll_interval_s, "max_total_workers": config.max_total_workers},
    }


def _rss_trend(samples: list[float]) -> dict[str, float | None]:
    """Parent RSS early (after the first tenth of the run: warm-up allocations are not a
    leak) and at the end; ``growth`` is end / early."""
    if len(samples) < 4:
        return {"early": None, "end": None, "max": None, "growth": None}
    early = statistics.median(samples[len(samples) // 10: len(samples) // 10 + max(1, len(samples) // 10)])
    end = statistics.median(samples[-max(1, len(samples) // 10):])
    return {"early": round(early, 1), "end": round(end, 1), "max": round(max(samples), 1),
            "growth": round(end / early, 3)}


def _settled_footprint(before: dict[str, int], timeout_s: float = 5.0) -> dict[str, int]:
    """The footprint after shutdown, given a moment for exiting threads and processes to be
    gone (they were all told to stop; this only waits for the kernel and the interpreter to
    finish the job)."""
    deadline = time.monotonic() + timeout_s
    after = process_footprint()
    while time.monotonic() < deadline and any(after[k] > before[k] for k in before):
        time.sleep(0.02)
        after = process_footprint()
    return after

