"""``probe stress``: a load run against the built-in emulator that checks invariants.

Each throw-away home gets credentials whose scripted emulator answers encode (home,
generation) in a dollar amount, so every snapshot says whose credential produced it: a
DeepSeek token (its balance) by default, or ``providers_per_home`` K of the four built-ins
DeepSeek, Anthropic (extra usage), OpenAI Codex (credits) and OpenRouter (credits), home i
holding K consecutive ones of that order starting at i mod 4 -- so with K=2 each provider
is in half the homes and each home lacks two. The run checks:

* ``no_cross_home`` — a result for home i never carries another home's data;
* with ``accounts_per_home`` K > 1 (each provider of a home holds K accounts, SPEC §18:
  Hermes' numbered ``.env`` keys ``NAME``, ``NAME_2``, …, Codex as K ``credential_pool``
  rows), ``no_cross_account`` — every account's answer carries its own account's value
  (isolation per account, not only per home: each account's token has its own amount,
  read from that account's details and matched to the account's id);
* ``no_stale_after_rotation`` — a fetch that began after rotation g of its home returned
  never carries a generation older than g;
* ``all_answered_in_deadline`` — every caller answered within its deadline (plus a small
  grace for thread scheduling);
* ``no_leaked_processes`` / ``_fds`` / ``_threads`` — after shutdown the parent has what it
  had before the run;
* ``no_zombies`` — once the callers are done, no exited worker is left unreaped: no
  descendant stays a zombie for ``ZOMBIE_GRACE_S`` (the report's ``zombies`` names any
  that did, and whose child each was);
* with ``home_reads``, ``home_reads_list_the_home`` — every home read (SPEC §17) answers
  exactly the providers the home has a credential for: none missing, none it lacks (the
  one ``"provider": null`` snapshot of a read that failed as a whole is an error, counted).

Two shapes of load: callers that fetch random homes back to back (the default), or, with
``poll_interval_s``, every home polled on a fixed schedule (first polls spread evenly over
one interval), as a settings backend with many accounts is. What one poll is: a fetch of
the home's provider (K=1); with ``home_reads``, one ``fetch_home`` of the whole home (one
worker request, SPEC §17 -- the panel's read); with K>1 and no ``home_reads``, a fetch of
each of the home's providers in turn (what a panel did before §17, for comparison).
``requests`` counts polls, ``provider_answers`` the snapshots they returned, and
``starts_per_poll`` is worker starts over polls. The report's ``service_cpu``
is the CPU the service used (this process minus the in-process emulator's threads, plus
every worker and template process), as a share of one core over the run.

Injected faults (``--fault-rate``) are expected errors: they are counted, not failures.
"""
from __future__ import annotations

import array
import contextlib
import heapq
import json
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
#: the built-ins a home may hold with ``providers_per_home`` > 1, in the order homes take them
HOME_PROVIDERS = ("deepseek", "anthropic", "openai-codex", "openrouter")


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
    #: how many of HOME_PROVIDERS each home holds (1: DeepSeek only, as before)
    providers_per_home: int = 1
    #: each poll is one ``fetch_home`` (SPEC §17) instead of a fetch per provider
    home_reads: bool = False
    #: accounts each provider of a home holds (SPEC §18; 1: one credential, as before)
    accounts_per_home: int = 1


def home_providers(index: int, count: int) -> tuple[str, ...]:
    """The providers home ``index`` has a credential for when homes hold ``count`` of
    HOME_PROVIDERS: DeepSeek alone for 1, else ``count`` consecutive ones from ``index``
    mod 4 (so the pairs rotate and each provider is missing from some homes)."""
    if not 1 <= count <= len(HOME_PROVIDERS):
        raise ValueError(f"providers_per_home must be 1..{len(HOME_PROVIDERS)}")
    if count == 1:
        return (STRESS_PROVIDER,)
    return tuple(HOME_PROVIDERS[(index + j) % len(HOME_PROVIDERS)] for j in range(count))


def token_for(home: int, generation: int, latency_ms: int, provider: str = STRESS_PROVIDER, account: int = 0) -> str:
    """The stress token of (provider, home, generation, account); DeepSeek's first
    account keeps its old form."""
    slow = f"-slow{latency_ms}-" if latency_ms else ""
    kind = "" if provider == STRESS_PROVIDER else f"{provider}-"
    prefix = "sk-ant-oat01-stress-" if provider == "anthropic" else "sk-stress-"
    which = f"-a{account}" if account else ""
    return f"{prefix}{kind}h{home}-g{generation}{which}{slow}"


GENERATIONS_PER_HOME = 1_000_000
#: a home's amounts stay below this (homes < 1,000,000); the account index counts in it
ACCOUNT_STRIDE = 10 ** 12


def balance_for(home: int, generation: int, account: int = 0) -> str:
    """The emulator's answer for (home, generation, account): a whole-dollar balance that
    encodes all three (the adapter shows two decimals, so the cents cannot carry
    anything); account 0 keeps 0.3's amount."""
    return f"{account * ACCOUNT_STRIDE + home * GENERATIONS_PER_HOME + generation}.00"


def account_id(provider: str, account: int, accounts: int) -> str:
    """The id the worker gives account ``account`` of ``provider`` in a stress home holding
    ``accounts`` of them (SPEC §18 ids: the place, or the pool row's id)."""
    from probe.tools.demo import ENV_NAMES

    if provider == "openai-codex":
        return "auth.json:providers.openai-codex" if accounts == 1 else f"stress{account}"
    name = ENV_NAMES[{"kimi-coding": "kimi"}.get(provider, provider)]
    return f"env:{name}" if account == 0 else f"env:{name}_{account + 1}"


def scripted_body(provider: str, home: int, generation: int, account: int = 0) -> dict[str, Any]:
    """What the emulator answers ``provider``'s stress token: a body whose one dollar
    amount (DeepSeek's balance, Codex's and OpenRouter's credits, Anthropic's extra usage)
    is :func:`balance_for` -- a line of the snapshot's details :func:`identify` reads."""
    amount = balance_for(home, generation, account)
    if provider == "deepseek":
        return {"is_available": True, "balance_infos": [{
            "currency": "USD", "total_balance": amount, "granted_balance": "0", "topped_up_balance": "0"}]}
    if provider == "anthropic":
        return {"five_hour": {"utilization": 10.0, "resets_at": "2099-01-01T00:00:00.000001+00:00"},
                "extra_usage": {"is_enabled": True, "used_credits": int(float(amount)) * 100,
                                "monthly_limit": None, "currency": "USD"}}
    if provider == "openai-codex":
        return {"plan_type": "plus", "credits": {"has_credits": True, "unlimited": False, "balance": float(amount)}}
    if provider == "openrouter":   # the same body for /credits and /key (which finds no key fields in it)
        return {"data": {"total_credits": float(amount), "total_usage": 0}}
    raise ValueError(f"no stress body for {provider}")


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

    def __init__(self, root: Path, count: int, emulator: Emulator, latency_ms: int, providers_per_home: int = 1,
                 accounts: int = 1) -> None:
        self.root, self.emulator, self.latency_ms, self.accounts = root, emulator, latency_ms, accounts
        self.paths = [root / f"home{i}" for i in range(count)]
        self.providers = [home_providers(i, providers_per_home) for i in range(count)]
        self.generation = [0] * count
        self.rotated_at: list[list[tuple[float, int]]] = [[(0.0, 0)] for _ in range(count)]
        self.lock = threading.Lock()
        for index, path in enumerate(self.paths):
            path.mkdir(parents=True)
            self._write(index, 0)

    def _write(self, index: int, generation: int) -> None:
        """Script the emulator for the generation's tokens, then replace the home's files
        (each atomically: a reader sees the old file or the new one)."""
        from probe.tools.demo import ENV_NAMES

        env, auth = [], {}
        for provider in self.providers[index]:
            tokens = [token_for(index, generation, self.latency_ms, provider, j) for j in range(self.accounts)]
            for j, token in enumerate(tokens):
                self.emulator.script(token, scripted_body(provider, index, generation, j))
            if provider == "openai-codex" and self.accounts == 1:
                auth = {"providers": {"openai-codex": {"tokens": {"access_token": tokens[0]}}}}
            elif provider == "openai-codex":   # K logins: K pool rows, as Hermes keeps them
                auth = {"credential_pool": {"openai-codex": [
                    {"id": account_id(provider, j, self.accounts), "label": f"stress {j}", "auth_type": "oauth",
                     "priority": j, "source": "manual:device_code", "access_token": token}
                    for j, token in enumerate(tokens)]}}
            else:   # Hermes' numbered keys: NAME, NAME_2, NAME_3, ...
                env += [f"{account_id(provider, j, self.accounts)[4:]}={token}\n" for j, token in enumerate(tokens)]
        files = [(".env", "".join(env))] + ([("auth.json", json.dumps(auth))] if auth else [])
        for name, text in files:
            tmp = self.paths[index] / f"{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.paths[index] / name)

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
    return sum(service_cpu_split(exclude))


def service_cpu_split(exclude: set[int] = frozenset()) -> tuple[float, float]:
    """:func:`service_cpu_s` in two: (this process's own threads, every other process --
    the template, the workers, exited ones included), so a report can say where it goes."""
    me = psutil.Process()
    own = descendants = 0.0
    for proc in [me, *me.children(recursive=True)]:
        if proc.pid in exclude:
            continue
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            if proc.pid == me.pid:
                own += times.user + times.system
                descendants += times.children_user + times.children_system
            else:
                descendants += times.user + times.system + times.children_user + times.children_system
    return own, descendants


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


#: the detail lines that carry a stress body's amount (DeepSeek, Codex and OpenRouter, Anthropic)
_IDENTITY_LINES = ("Balance: $", "Credits balance: $", "Extra usage: $")


def identify(snap_details: tuple[str, ...]) -> tuple[int, int] | None:
    """(home, generation) from a stress snapshot's amount line, or None."""
    found = identify_account(snap_details)
    return None if found is None else found[1:]


def identify_account(snap_details: tuple[str, ...]) -> tuple[int, int, int] | None:
    """(account, home, generation) from a stress snapshot's (or account's) amount line, or None."""
    for line in snap_details:
        if line.startswith(_IDENTITY_LINES):
            amount = line.split("$", 1)[1].split()[0].replace(",", "")
            with contextlib.suppress(ValueError):
                account, rest = divmod(int(float(amount)), ACCOUNT_STRIDE)
                return (account, *divmod(rest, GENERATIONS_PER_HOME))
    return None


def check_accounts(snap: Any, index: int, floor: int, accounts: int) -> Counter[str]:
    """The per-account identity check (SPEC §18): every account of ``snap`` that answered
    carries its own account's amount, of home ``index`` and a generation at least
    ``floor``. Returns the violations found."""
    found: Counter[str] = Counter()
    expected = {account_id(snap.provider, j, accounts): j for j in range(accounts)}
    for account in snap.accounts:
        identity = identify_account(account.details)
        if identity is None:
            continue
        if identity[1] != index:
            found["no_cross_home"] += 1
        elif expected.get(account.id) != identity[0]:
            found["no_cross_account"] += 1
        elif identity[2] < floor:
            found["no_stale_after_rotation"] += 1
    return found


def run_stress(options: StressOptions, progress: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """Run the load and return the report (SPEC §10 ``--json`` shape)."""
    before = process_footprint()
    root = Path(tempfile.mkdtemp(prefix="quota-probe-stress-"))
    latencies = LatencyHistogram()
    lags = LatencyHistogram()
    paths: Counter[str] = Counter()
    answers: Counter[str | None] = Counter()
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
            homes = _Homes(root, options.homes, emulator, options.latency_ms, options.providers_per_home,
                           options.accounts_per_home)
            limits = {} if options.max_total_workers is None else {"max_total_workers": options.max_total_workers}
            config = ProbeConfig(pool_size=options.pool_size, provider_urls=emulator.provider_urls(),
                                 probe_timeout_s=options.timeout_s, **limits)
            started_at = time.monotonic()   # the homes are written: the load starts now
            end = None if options.duration_s is None else started_at + options.duration_s
            schedule = (_PollSchedule(options.homes, options.poll_interval_s, started_at)
                        if options.poll_interval_s > 0 else None)
            cpu_before = service_cpu_split()
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

                def poll(index: int) -> list:
                    """One poll of home ``index``: a home read, or a fetch of each of its providers."""
                    home = homes.paths[index]
                    if options.home_reads:
                        return service.fetch_home(home=home, refresh=options.refresh, timeout=options.timeout_s)
                    deadline = time.monotonic() + options.timeout_s
                    return [service.fetch(provider, home=home, refresh=options.refresh,
                                          timeout=max(0.1, deadline - time.monotonic()))
                            for provider in homes.providers[index]]

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
                        snaps = poll(index)
                        elapsed = time.monotonic() - start
                        with lock:
                            latencies.add(elapsed * 1000)
                            if elapsed > options.timeout_s + DEADLINE_GRACE_S:
                                violations["all_answered_in_deadline"] += 1
                            if options.home_reads and not (len(snaps) == 1 and snaps[0].provider is None) \
                                    and sorted(snap.provider for snap in snaps) != sorted(homes.providers[index]):
                                violations["home_reads_list_the_home"] += 1
                            for snap in snaps:
                                answers[snap.provider] += 1
                                paths[snap.probe.path] += 1
                                if snap.error:
                                    errors[snap.error.code] += 1
                                if options.accounts_per_home > 1 and snap.provider is not None:
                                    violations.update(check_accounts(snap, index, floor, options.accounts_per_home))
                                    continue
                                identity = identify(snap.details)
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
            emulator_counts = emulator.counts()
        cpu_after = service_cpu_split()
        parent_cpu = cpu_after[0] - cpu_before[0] - emulator.cpu_s
        workers_cpu = cpu_after[1] - cpu_before[1]
        service_cpu = parent_cpu + workers_cpu
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
    if options.home_reads:
        invariants["home_reads_list_the_home"] = violations["home_reads_list_the_home"] == 0
    if options.accounts_per_home > 1:
        invariants["no_cross_account"] = violations["no_cross_account"] == 0
    total = latencies.total
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
        "service_cpu": {"seconds": round(service_cpu, 3), "parent_seconds": round(parent_cpu, 3),
                        "children_seconds": round(workers_cpu, 3),
                        "percent_of_one_core": round(100 * service_cpu / duration_s, 2) if duration_s else None},
        "spawns": stats["spawns"],
        "starts_per_poll": round(stats["spawns"] / total, 4) if total else None,
        "home_reads": stats["home_reads"],
        "provider_answers": {str(name): n for name, n in sorted(answers.items(), key=lambda kv: str(kv[0]))},
        "service_errors": stats["errors"],
        "emulator_requests": _requests_by_provider(emulator_counts),
        "spawn": stats["spawn"],
        "schedule_lag_ms": ({"p50": round(lags.percentile(50), 3), "p99": round(lags.percentile(99), 3),
                             "max": round(lags.max_ms, 3)} if lags.total else None),
        "violations": dict(violations),
        "zombies": zombies,
        "invariants": invariants,
        "options": {"homes": options.homes, "concurrency": options.concurrency, "pool_size": options.pool_size,
                    "latency_ms": options.latency_ms, "fault_rate": options.fault_rate,
                    "rotate_every_s": options.rotate_every_s, "kill_every_s": options.kill_every_s,
                    "poll_interval_s": options.poll_interval_s, "max_total_workers": config.max_total_workers,
                    "providers_per_home": options.providers_per_home, "home_reads": options.home_reads,
                    "accounts_per_home": options.accounts_per_home},
    }


def _requests_by_provider(counts: dict[tuple[str, str | None], int]) -> dict[str, int]:
    """The emulator's request counts by the provider whose stress token asked (OpenRouter
    makes two requests a probe: ``/credits`` and ``/key``); ``without_token`` counts requests
    that carried none -- a probe of a provider the home has no credential for would."""
    out: Counter[str] = Counter()
    for (_, token), n in counts.items():
        if token is None:
            out["without_token"] += n
            continue
        kind = next((p for p in HOME_PROVIDERS[1:] if f"-{p}-h" in token), STRESS_PROVIDER)
        out[kind] += n
    out.setdefault("without_token", 0)
    return dict(sorted(out.items()))


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

