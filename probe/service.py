"""``ProbeService``: orchestration only.

One fetch: validate → resolve the home → cache → join an identical in-flight probe →
claim a warm worker (``probe.pool.pool`` via ``probe.pool.registry``) → or the bounded cold fallback
(``probe.pool.cold``) → store the result unless the home was rotated meanwhile (``probe.cache``).
Each of those boxes owns its own state and lock; this module holds none across a probe.

A home's provider list (SPEC §17, :meth:`ProbeService.home_providers`) is one more request
to one of the home's workers over the same claim path (``probe.home_list`` caches it with
the home's credential fingerprint). :meth:`ProbeService.fetch_home` reads the listed
providers (pool-only ids included: only a listed name is ever asked for) with the same
steps as :meth:`ProbeService.fetch` for each, the probes in one request to one worker
(``probe.home_read`` holds one such read's state).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from probe import pool_view
from probe.account_state import AccountReadings, account_key
from probe.backoff import Backoff, Blocked
from probe.cache import SnapshotCache
from probe.coalesce import Call, InFlight
from probe.pool.cold import ColdLimiter
from probe.config import ProbeConfig
from probe.shared import Fetch, SharedCache

if TYPE_CHECKING:
    from probe.shared.cluster import RedisCluster
from probe.shared.disk import DiskCache
from probe.digests import EVERY_PROVIDER, CredentialDigests
from probe.env import child_env
from probe.errors import check_provider, check_timeout
from probe.home_config import ActiveProviders, Unanswered, parse_active_provider, parse_pool_accounts
from probe.home_list import HomeListFailed, HomeLists, HomeProviders, parse_listing
from probe.home_read import HomePart, HomeRead, InOrder
from probe.homes import HomeNotFound, credential_fingerprint, home_path, resolve_home
from probe.pool.pool import RecycleLimits, close_workers
from probe.pool.registry import PoolRegistry
from probe.snapshot import TRANSIENT_ERRORS, Account, ProbeInfo, Snapshot, monotonic_ms_since
from probe.pool.spawner import Spawner
from probe.stats import Stats
from probe.pool.worker import Worker, WorkerFailed, WorkerProtocolError

T = TypeVar("T")

HomeArg = str | PathLike[str] | None


SATURATED = "Every probe slot is busy; try again shortly."
#: the ``source`` of a pool-only provider's snapshot (no request: Hermes' own records)
POOL_RECORDS = "credential_pool"

#: threads that run ``afetch`` calls; each blocks on a pipe, not the CPU
AFETCH_THREADS = 64


def child_timeout_s(deadline: float) -> float:
    """The provider timeout we hand the child: a little under the caller's deadline, so a
    hung provider is reported by a live child (which stays warm) instead of by a kill."""
    remaining_s = deadline - time.monotonic()
    return max(0.05, remaining_s * 0.9 - 0.05)


def _cold_limiter(config: ProbeConfig) -> ColdLimiter:
    """Cold processes linger for reuse only beside a pool: ``pool_size=0`` keeps every
    probe a true one-shot (the baseline the benchmarks compare against)."""
    return ColdLimiter(config.max_cold_spawns, config.cold_linger_s if config.pool_size > 0 else 0.0)


def _limits(config: ProbeConfig) -> RecycleLimits:
    return RecycleLimits(config.idle_s, config.max_requests_per_worker, config.max_worker_rss_mb)


class ProbeService:
    """Embeddable quota prober; thread-safe; ``close()`` (or ``with``) when done."""

    def __init__(self, config: ProbeConfig | None = None) -> None:
        config = config or ProbeConfig()
        if not isinstance(config, ProbeConfig):
            raise ValueError("ProbeService takes a ProbeConfig")
        self._config = config
        self._config_lock = threading.Lock()
        self._stats = Stats()
        self._spawner = Spawner()
        self._cache = SnapshotCache(config.cache_ttl_s)
        self._inflight = InFlight()
        self._backoff = Backoff()
        #: per-account last good readings and who the worker was asked for (SPEC §18)
        self._account_readings = AccountReadings()
        self._cluster: RedisCluster | None = None   # started last: its callbacks use everything below
        self._shared: SharedCache | None = DiskCache(config.cache_dir) if config.cache_dir else None
        #: each home's providers' credential digests: which a change of its files rotates
        self._digests = CredentialDigests()
        self._home_lists = HomeLists()
        self._active_providers = ActiveProviders()
        self._cold = _cold_limiter(config)
        self._registry = PoolRegistry(
            pool_size=config.pool_size, max_total_workers=config.max_total_workers, limits=_limits(config),
            prewarm=config.prewarm, spawner=self._spawner, env_for=self._env_factory(config),
            on_retire=self._on_retire, on_spawn=lambda worker: self._stats.count("spawns"))
        self._rotation_locks: dict[str, threading.Lock] = {}
        self._rotation_locks_guard = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._closed = False
        self._cluster = self._start_cluster(config)
        if self._cluster is not None:
            self._shared = self._cluster

    @property
    def config(self) -> ProbeConfig:
        return self._config

    @property
    def closed(self) -> bool:
        """True once :meth:`close` began: every read raises RuntimeError from then on. A
        caller that loops over reads (the refresher) ends on this, never on the exception
        type -- a RecursionError or "can't start new thread" is a RuntimeError too."""
        return self._closed

    # -- public API ----------------------------------------------------------------------
    def fetch(self, provider: str, *, home: HomeArg = None, refresh: bool = False,
              timeout: float | None = None, account: str | None = None) -> Snapshot:
        """The provider's quota for ``home``. Never raises for provider-side trouble (the
        snapshot carries an ``error``); raises ValueError / UnknownProviderError for caller
        mistakes and RuntimeError once the service is closed.

        ``account`` (SPEC §18): read that account of the provider only -- a snapshot as
        for a provider with one account; an id the home does not hold → ValueError."""
        started = time.monotonic()
        provider = check_provider(provider)
        timeout_s = self._checked_call(timeout, refresh)
        if account is not None and (not isinstance(account, str) or not 0 < len(account) <= 256):
            raise ValueError("account must be an account id (a non-empty string)")
        try:
            home_dir = resolve_home(home)
        except HomeNotFound as exc:
            return self._record(Snapshot.failed(provider, str(exc.path), "home_not_found", str(exc),
                                                probe=ProbeInfo("cold", monotonic_ms_since(started))))
        if account is not None:
            return self._fetch_account(provider, home_dir, account, refresh, started, started + timeout_s)
        return self._fetch(provider, home_dir, refresh, started, started + timeout_s)

    def fetch_home(self, *, home: HomeArg = None, refresh: bool = False, timeout: float | None = None,
                   providers: Collection[str] | None = None,
                   on_snapshot: Callable[[Snapshot], None] | None = None) -> list[Snapshot]:
        """Every provider ``home`` has a credential for (SPEC §17), one snapshot each, in
        the list's order (:meth:`home_providers`). The providers that need a probe are read
        by **one** worker of the home in **one** request, concurrently inside it, so a
        cold home costs one process start, not one per provider; every per-(home,
        provider) rule of :meth:`fetch` holds for each (cache, back-off, coalescing, the
        rotation guard, the shared cache and its lock). Each snapshot has its own
        ``latency_ms``, up to that provider's answer. ``timeout`` covers the whole call.

        A home with no credential: ``[]``. A home that does not exist, or whose list could
        not be read: exactly one snapshot with ``"provider": null`` and the error
        (``home_not_found``, ``timeout``, ...), never one per provider.

        ``providers`` (an addition to SPEC §17): read only those of the home's list -- the
        backend's panel asks for the ones its latest readings lack. A name the list does
        not hold is left out, never probed.

        ``on_snapshot`` (for a caller that shows answers as they come, like ``probe fetch``):
        called with each snapshot of the returned list, in that order, as soon as it and
        every earlier one are answered -- on whichever thread answered it, one call at a
        time, so keep it short (``probe.home_read.InOrder``). An exception it raises ends the
        read and propagates."""
        emitter = InOrder(on_snapshot) if on_snapshot is not None else None
        snaps = self._fetch_home(home, refresh, timeout, providers, emitter)
        return emitter.finish(snaps) if emitter is not None else snaps

    def _fetch_home(self, home: HomeArg, refresh: bool, timeout: float | None, providers: Collection[str] | None,
                    emitter: InOrder | None) -> list[Snapshot]:
        started = time.monotonic()
        timeout_s = self._checked_call(timeout, refresh)
        try:
            home_dir = resolve_home(home)
        except HomeNotFound as exc:
            return [self._record(_list_failed(exc.path, "home_not_found", str(exc), "cold", None, started).snapshot)]
        listed_after_ns = time.time_ns()
        # a change of the files is noticed by the list read below (its digests, SPEC §6)
        fingerprint = credential_fingerprint(home_dir)
        read = HomeRead(home_dir, fingerprint, refresh, started, started + timeout_s, listed_after_ns,
                        None if providers is None else frozenset(providers), emitter=emitter)
        try:
            try:
                with read.locks:
                    listing = self._home_lists.fresh(home_dir, fingerprint)
                    if listing is not None:
                        self._plan_home(read, listing)
                    if read.listing is None or read.batch():
                        self._read_home(read)
                    if read.batch():   # the worker that listed was a one-shot: the batch needs another
                        self._read_home(read)
            except HomeListFailed as exc:
                return [self._record(exc.snapshot)]
            finally:
                for part in read.parts:   # a leader interrupted before its answer: followers probe alone
                    if part.leads and part.answer is None and part.call is not None and not part.waits_for_lock:
                        self._inflight.done(part.flight, part.call, None)
            self._finish_alone(read)
        finally:
            # Whatever escaped (an exception from any step, a signal's): no in-flight entry
            # this read leads outlives it -- the parts waiting for another process's probe
            # lock included, whose followers would otherwise wait for ever (issue 26 #1).
            for part in read.parts:
                if part.leads and part.call is not None and not part.call.finished:
                    self._inflight.done(part.flight, part.call, part.answer)
        return self.settle_home_list(home_dir, read.listing, read.answers())

    async def afetch_home(self, *, home: HomeArg = None, refresh: bool = False, timeout: float | None = None,
                          providers: Collection[str] | None = None) -> list[Snapshot]:
        """:meth:`fetch_home` on the service's own thread pool (see :meth:`afetch`)."""
        call = functools.partial(self.fetch_home, home=home, refresh=refresh, timeout=timeout, providers=providers)
        return await asyncio.get_running_loop().run_in_executor(self._afetch_executor(), call)

    def home_providers(self, home: HomeArg = None, *, timeout: float | None = None) -> HomeProviders:
        """Which providers ``home`` has a credential for (SPEC §17): names only, in the
        fixed order (built-ins in PROVIDERS.md's table order, plugins by name, then
        pool-only ids by name). Asked of one of the home's workers -- a warm one when
        there is one -- and cached with the home's credential fingerprint, so the files'
        next change (and only that, or a rotation) makes it ask again.

        Raises HomeListFailed carrying the one snapshot a home-wide read answers instead:
        ``"provider": null`` with ``home_not_found``, or the failure of the worker asked
        (``timeout``, ``worker_crashed``, ``saturated``, ``bad_response``)."""
        started = time.monotonic()
        timeout_s = self._checked_call(timeout)
        deadline = started + timeout_s
        try:
            home_dir = resolve_home(home)
        except HomeNotFound as exc:
            raise HomeListFailed(Snapshot.failed(None, str(exc.path), "home_not_found", str(exc),
                                                 probe=ProbeInfo("cold", monotonic_ms_since(started)))) from None
        now_ns = time.time_ns()   # before the stat: see probe.home_list on the racy rule
        fingerprint = credential_fingerprint(home_dir)
        listing = self._home_lists.get(home_dir, fingerprint, now_ns, deadline - time.monotonic(),
                                       lambda: self._ask_listing(home_dir, fingerprint, deadline, started))
        if listing is None:
            raise HomeListFailed(Snapshot.failed(None, str(home_dir), "timeout",
                                                 "The home's provider list was not read before the deadline.",
                                                 probe=ProbeInfo("cache", monotonic_ms_since(started))))
        return listing

    def active_provider(self, home: HomeArg = None, *, timeout: float | None = None) -> str | None:
        """The home's active provider, Hermes' ``config.yaml`` ``model.provider`` (SPEC §19),
        or None when it names none. Asked of one of the home's workers -- the service never
        opens a home file -- and cached with the file's stat data (``probe.home_config``).
        Raises Unanswered when the home does not exist or no worker answered."""
        home_dir, deadline = self._home_question(home, timeout)
        return self._active_providers.get(home_dir, lambda: parse_active_provider(
            self._ask_home(home_dir, {"op": "active_provider"}, deadline)))

    def pool_accounts(self, provider: str, home: HomeArg = None, *,
                      timeout: float | None = None) -> tuple[Account, ...] | None:
        """A pool-only id's accounts (SPEC §17, §18) from Hermes' ``credential_pool``
        records, read by one of the home's workers without any request (not probed: no
        reading); None when the home's pool has no row for ``provider``. Raises
        Unanswered as :meth:`active_provider`, and with ``credentials_unreadable`` when the
        home's ``auth.json`` cannot be read (SPEC §2: not an empty pool)."""
        if not isinstance(provider, str) or not provider:
            raise ValueError("provider must be a non-empty string")
        home_dir, deadline = self._home_question(home, timeout)
        return parse_pool_accounts(self._ask_home(home_dir, {"op": "pool_accounts", "provider": provider}, deadline))

    def _home_question(self, home: HomeArg, timeout: float | None) -> tuple[Path, float]:
        deadline = time.monotonic() + self._checked_call(timeout)
        try:
            return resolve_home(home), deadline
        except HomeNotFound as exc:
            raise Unanswered("home_not_found", str(exc)) from None

    def _ask_home(self, home: Path, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        """One request to a worker of ``home`` (warm, slot start or cold, as a probe), its
        reply; Unanswered when none answered (a confused worker is killed, as after a probe)."""
        def failed(exc: WorkerFailed, path: str, pid: int | None) -> dict[str, Any]:
            raise Unanswered(exc.code, str(exc))

        def saturated() -> dict[str, Any]:
            raise Unanswered("saturated", SATURATED)

        def ask(worker: Worker, path: str) -> dict[str, Any]:
            try:
                return worker.request(message, deadline)
            except WorkerFailed as exc:
                worker.kill()
                self._stats.count("kills")
                raise Unanswered(exc.code, str(exc)) from None

        return self._on_worker(home, deadline, use=ask, failed=failed, saturated=saturated)

    def settle_home_list(self, home: HomeArg, listing: HomeProviders, snaps: list[Snapshot]) -> list[Snapshot]:
        """A home-wide read's answers as its caller shows them: a plugin that declares no
        ``CREDENTIALS`` and answered ``no_credentials`` is left out, and out of the home's
        cached list until its files change (SPEC §16); everything else as it came."""
        dropped = frozenset(s.provider for s in snaps if listing.left_out(s))
        if dropped:
            self._home_lists.drop(home_path(home), listing, dropped)
        return [s for s in snaps if s.provider not in dropped]

    async def afetch(self, provider: str, *, home: HomeArg = None, refresh: bool = False,
                     timeout: float | None = None, account: str | None = None) -> Snapshot:
        """``fetch`` on the service's own thread pool: the event loop is never blocked.

        Cancelling the awaiting task raises CancelledError here as usual; the probe already
        running in its thread finishes and releases its worker, so no lock leaks and no late
        reply is left in a pipe for the next caller.
        """
        call = functools.partial(self.fetch, provider, home=home, refresh=refresh, timeout=timeout, account=account)
        return await asyncio.get_running_loop().run_in_executor(self._afetch_executor(), call)

    def invalidate(self, *, home: HomeArg = None, provider: str | None = None) -> None:
        """Credential-rotation hook (SPEC §6): drop the home's cache entries (for
        ``provider``, or all), bump its generation so probes already running cannot store
        their results, and close its workers. Other homes are untouched. With no
        arguments, every home is flushed."""
        if provider is not None:
            check_provider(provider)
        target = None if home is None else home_path(home)
        with self._rotation_lock(str(target)):
            self._rotate_locked(target, None if provider is None else (provider,))

    def forget_home(self, home: HomeArg) -> None:
        """The backend stopped serving ``home`` (a profile removed, a reload): everything
        :meth:`invalidate` drops, and its pool leaves the registry. A request still in
        flight for it answers as usual; a later one for the same directory starts over."""
        target = home_path(home)
        self.invalidate(home=target)
        self._registry.remove(target)

    def _rotate_locked(self, home: Path | None, providers: Collection[str] | None, *,
                       announce: bool = True) -> None:
        """Generation bump + cache drop first, so no probe running now can store its
        result; then the workers, closed outside every lock but this home's rotation lock.
        ``providers``: the ones whose entries go (every one when None). ``announce=False``:
        another backend rotated it and told us (cluster mode), so the shared state already
        says so."""
        for provider in (None,) if providers is None else providers:
            self._cache.invalidate(home, provider)
            self._account_readings.forget(None if home is None else str(home), provider)
            if self._shared is not None and announce:
                self._shared.drop(None if home is None else str(home), provider)
        if providers is None:
            self._home_lists.forget(home)
        self._backoff.forget(lambda key: (home is None or key[0] == str(home))
                             and (providers is None or key[1] in providers))
        self._registry.flush(home)
        self._cold.flush(home)

    def generation(self, home: HomeArg = None) -> int:
        """The home's rotation generation, after noticing a credential change on disk (two
        stat calls; after a change of the files, the one digest request that tells whether
        any provider's credentials changed). A reader that keeps snapshots outside the
        service (the backend's latest readings) records the generation it saw *before*
        fetching and serves a snapshot only while the generation is unchanged: no
        pre-rotation reading survives a rotation, whether it was announced or only written
        to the files -- and a bookkeeping write of Hermes' leaves the generation alone."""
        home_dir = home_path(home)
        if home_dir.is_dir():
            started = time.monotonic()
            self._notice_rotation(home_dir, started + self._config.probe_timeout_s, started)
        return self._cache.generation(home_dir)

    def stats(self) -> dict[str, Any]:
        """Counters plus per-home pool state (SPEC §9); plain JSON-able data."""
        data = self._stats.as_dict()
        homes = self._registry.state()
        for home, state in homes.items():
            state["generation"] = self._cache.generation(home)
        data["homes"] = {home: {k: state[k] for k in ("slots", "alive", "busy", "generation", "workers")}
                         for home, state in homes.items()}
        data["cold_running"], data["cold_parked"] = self._cold.counts()
        data["spawn"] = self._spawner.spawn_stats()
        if self._cluster is not None:
            data["cluster"] = self._cluster.state()
        return data

    def configure(self, config: ProbeConfig) -> None:
        """Apply a new configuration. Unchanged values are a no-op (no worker restarted, no
        connection dropped); a change touches only what depends on it.

        The new settings are swapped in under ``_config_lock``; the processes they retire
        (a smaller pool, new provider URLs, a new cold bound's parked workers) are closed
        after it is released -- a worker slow to exit must not hold up another
        ``configure`` (a reload's no-op one), ``close`` or anything else that takes it."""
        if not isinstance(config, ProbeConfig):
            raise ValueError("configure() takes a ProbeConfig")
        old_cold: ColdLimiter | None = None
        with self._config_lock:
            old = self._config
            if config == old:
                return
            if (config.redis_url, config.redis_prefix, config.home_ids) != \
                    (old.redis_url, old.redis_prefix, old.home_ids):
                raise ValueError("cluster settings (redis_url, redis_prefix, home_ids) cannot change on a running "
                                 "service; close it and create a new one")
            self._config = config
            self._cache.ttl_s = config.cache_ttl_s
            if config.cache_dir != old.cache_dir:
                if self._cluster is None:
                    self._shared = DiskCache(config.cache_dir) if config.cache_dir else None
            new_cold = _cold_limiter(config)
            if (new_cold.max_concurrent, new_cold.linger_s) != (self._cold.max_concurrent, self._cold.linger_s):
                old_cold, self._cold = self._cold, new_cold
            urls_changed = config.provider_urls != old.provider_urls
            retired = self._registry.reconfigure(
                pool_size=config.pool_size, max_total_workers=config.max_total_workers,
                limits=_limits(config), prewarm=config.prewarm,
                env_for=self._env_factory(config) if urls_changed else None)
        if old_cold is not None:
            old_cold.close()
        close_workers(retired)

    def close(self) -> None:
        """Close every worker and thread of this service; idempotent."""
        with self._config_lock:
            if self._closed:
                return
            self._closed = True
        if self._cluster is not None:
            self._cluster.close()
        self._registry.close()
        self._cold.close()
        executor = self._executor
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        # Ends the spawner thread; any worker still running (a busy one, a cold one-shot)
        # gets SIGKILL from the kernel through PR_SET_PDEATHSIG.
        self._spawner.close()
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> "ProbeService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _checked_call(self, timeout: float | None, refresh: bool = False) -> float:
        """The checks every public read makes of its caller's arguments, and of the
        service: the timeout in seconds, or ValueError / RuntimeError (closed)."""
        timeout_s = check_timeout(timeout, self._config.probe_timeout_s)
        if not isinstance(refresh, bool):
            raise ValueError("refresh must be a bool")
        if self._closed:
            raise RuntimeError("this ProbeService is closed")
        return timeout_s

    def _fetch(self, provider: str, home_dir: Path, refresh: bool, started: float, deadline: float) -> Snapshot:
        """The fetch path after the caller's input was checked and the home found."""
        fingerprint = self._notice_rotation(home_dir, deadline, started)
        fetch, answer = self._begin(provider, home_dir, fingerprint, refresh, started, deadline)
        if answer is not None:
            return answer
        if not self._config.coalesce:
            return self._probe_shared(fetch)
        flight = (*fetch.key[:2], fetch.generation)
        call, leader = self._inflight.join(flight)
        if not leader:
            return self._follow(fetch, call)
        result = None
        try:
            result = self._probe_shared(fetch)
            return result
        finally:
            self._inflight.done(flight, call, result)

    def _fetch_account(self, provider: str, home_dir: Path, account: str, refresh: bool, started: float,
                       deadline: float) -> Snapshot:
        """``fetch(account=)``: one account of the provider, as a one-account snapshot. A
        fresh cached read of the provider that holds the account answers it; else the
        worker is asked for that account alone (its per-account back-off holds: an account
        backing off is answered from its last good reading, no request). Such a partial
        read is not cached as the provider's."""
        fingerprint = self._notice_rotation(home_dir, deadline, started)
        key = self._cache_key(home_dir, provider, fingerprint)
        generation = self._cache.generation(home_dir)
        cached = None if refresh else self._cache.get(key)
        if cached is not None and cached.account(account) is not None:
            return self._record(pool_view.only(cached, account).with_probe(
                ProbeInfo("cache", monotonic_ms_since(started), cached.probe.worker_pid)))
        blocked = self._backoff.blocked(account_key(key, account))
        snap = self._probe(provider, home_dir, deadline, started, (account,) if blocked else (), account)
        if snap.account(account) is None:
            if snap.error is not None and snap.error.code in TRANSIENT_ERRORS:
                return self._record(snap)   # no worker answered: nothing says the id is unknown
            raise ValueError(f"the home has no {provider} account with id {account!r}")
        snap = self._account_readings.settle(pool_view.only(snap, account), key, generation, self._backoff,
                                             (account,) if blocked else (), remember=False)
        return self._record(snap)

    def _cache_key(self, home_dir: Path, provider: str, fingerprint: tuple) -> tuple:
        """(home, provider, its credential part): the provider's digest, or the files' stat
        until the home is first listed (``probe.digests``) -- the one key the caches, the
        back-off and the per-account state are reached by."""
        return (str(home_dir), provider, self._digests.key_part(home_dir, provider, fingerprint))

    def _begin(self, provider: str, home_dir: Path, fingerprint: tuple, refresh: bool, started: float,
               deadline: float) -> tuple[Fetch, Snapshot | None]:
        """The steps before a probe, for one (home, provider): the fetch, and the answer
        when none is needed -- a fresh cached snapshot (unless ``refresh``) or the
        provider's rate-limit back-off (``refresh`` does not bypass that)."""
        shared_backoff, shared_generation = self._sync_cluster(home_dir, provider)
        key = self._cache_key(home_dir, provider, fingerprint)
        generation = self._cache.generation(home_dir)
        fetch = Fetch(provider, home_dir, key, generation, started, deadline, refresh,
                      shared_generation=shared_generation, fingerprint=fingerprint)
        if not refresh:
            cached = self._cache.get(key) or self._read_shared(fetch)
            if cached is not None:
                return fetch, self._record(cached.with_probe(ProbeInfo("cache", monotonic_ms_since(started),
                                                                       cached.probe.worker_pid)))
        skip, every = self._account_readings.skip(self._backoff, key, generation)
        if every:   # every account the worker would probe is backing off: no request at all
            answer = self._account_readings.backed_off(key, generation, self._backoff)
            if answer is not None:
                return fetch, self._record(answer.with_probe(ProbeInfo("cache", monotonic_ms_since(started))))
        fetch = dataclasses.replace(fetch, skip=skip)
        blocked = self._backoff.blocked(key[:2]) or shared_backoff
        if blocked is not None:
            snap = Snapshot.failed(provider, str(home_dir), "rate_limited", blocked.message,
                                   probe=ProbeInfo("cache", monotonic_ms_since(started)))
            return fetch, self._record(self._stale_if_possible(snap, key, generation))
        return fetch, None

    def _follow(self, fetch: Fetch, call: Call) -> Snapshot:
        """Wait for the identical probe another caller is running and answer with its
        snapshot (``coalesced``); probe on our own if it ended without one."""
        shared = call.wait(fetch.deadline - time.monotonic())
        if shared is not None:
            return self._record(shared.with_probe(ProbeInfo("coalesced", monotonic_ms_since(fetch.started),
                                                            shared.probe.worker_pid)))
        if time.monotonic() >= fetch.deadline:
            return self._record(Snapshot.failed(fetch.provider, str(fetch.home), "timeout",
                                                "The probe did not finish before its deadline.",
                                                probe=ProbeInfo("coalesced", monotonic_ms_since(fetch.started))))
        # The leader ended without a snapshot (it was interrupted): probe on our own.
        return self._probe_shared(fetch)

    # -- a home read (SPEC §17; the state is probe.home_read's) ----------------------------
    def _read_home(self, read: HomeRead) -> None:
        """One claim of a worker of the home: the home's list first if it is not known (on
        this very worker, so a cold home starts one process), then the batch."""
        def failed(exc: WorkerFailed, path: str, pid: int | None) -> None:
            self._batch_failed(read, exc.code, str(exc), path, pid)

        def saturated() -> None:
            self._batch_failed(read, "saturated", SATURATED, "cold", None)

        self._on_worker(read.home, read.deadline, use=lambda worker, path: self._read_home_on(read, worker, path),
                        failed=failed, saturated=saturated)

    def _read_home_on(self, read: HomeRead, worker: Worker, path: str) -> None:
        if read.listing is None:
            # never wait for the home-list lock while holding a worker: home_providers holds
            # that lock while it waits for a worker (probe.home_list on the lock order)
            listing = self._home_lists.fresh(read.home, read.fingerprint) or self._home_lists.put(
                read.home, read.fingerprint, read.listed_after_ns,
                self._listing_on(worker, path, read.home, read.fingerprint, read.deadline, read.started))
            self._plan_home(read, listing)
            if worker.once:   # it has answered its one request; fetch_home claims another
                return
        batch = {part.provider: part for part in read.batch()}
        if not batch:
            return

        def on_line(reply: dict[str, Any]) -> None:
            snap = self._child_snapshot(reply, read.home, path, read.started, worker.pid)
            part = batch.pop(snap.provider, None)
            if part is None:
                raise WorkerProtocolError("The worker answered for a provider it was not asked for.")
            self._settle(part, snap)
            read.emit_ready()

        message: dict[str, Any] = {"op": "probe_home", "providers": list(batch),
                                   "timeout_s": child_timeout_s(read.deadline)}
        skip = {name: list(part.fetch.skip) for name, part in batch.items() if part.fetch.skip}
        if skip:
            message["skip"] = skip
        try:
            self._stats.count("home_reads")
            reply = worker.request(message, read.deadline, on_line)
            if not reply.get("ok") or batch:
                raise WorkerProtocolError("The worker sent a malformed reply.")
        except WorkerFailed as exc:
            worker.kill()
            self._stats.count("kills")
            self._batch_failed(read, exc.code, str(exc), path, worker.pid)

    def _batch_failed(self, read: HomeRead, code: str, message: str, path: str, pid: int | None) -> None:
        """No worker answered: before the list is known, the home's one failure snapshot
        (HomeListFailed); after, each provider still unanswered gets the failure, stored
        and handed to its followers as a single fetch's would be."""
        if read.listing is None:
            raise _list_failed(read.home, code, message, path, pid, read.started)
        for part in read.batch():
            self._settle(part, Snapshot.failed(part.provider, str(read.home), code, message,
                                               probe=ProbeInfo(path, monotonic_ms_since(read.started), pid)))
        read.emit_ready()

    def _plan_home(self, read: HomeRead, listing: HomeProviders) -> None:
        """Decide each listed provider's part by the single-fetch rules (see
        ``probe.home_read``): answered now, followed, or ours -- and for ours, with a
        shared cache, its cross-process probe lock taken without waiting (held on
        ``read.locks`` until the batch is answered)."""
        read.listing = listing
        for name in listing.names:
            if read.only is not None and name not in read.only:
                continue
            fetch, answer = self._begin(name, read.home, read.fingerprint, read.refresh, read.started, read.deadline)
            part = HomePart(fetch, answer)
            read.parts.append(part)
            if answer is not None:
                continue
            if self._config.coalesce:
                part.flight = (*fetch.key[:2], fetch.generation)
                part.call, part.leads = self._inflight.join(part.flight)
            else:
                part.leads = True
            if part.leads and self._shared is not None:
                waiting_since = time.time()
                if not read.locks.enter_context(self._shared.probe_lock(fetch, 0.0)):
                    part.waits_for_lock = True
                else:
                    stored = self._stored_meanwhile(fetch, waiting_since)
                    if stored is not None:
                        self._settled(part, stored)
        read.emit_ready()

    def _settle(self, part: HomePart, snap: Snapshot) -> None:
        """A probe's result for one part: stored as a single fetch's, then answered."""
        self._settled(part, self._store(part.fetch, snap))

    def _settled(self, part: HomePart, answer: Snapshot) -> None:
        part.answer = answer
        if part.call is not None and part.leads:
            self._inflight.done(part.flight, part.call, answer)

    def _finish_alone(self, read: HomeRead) -> None:
        """The parts the batch did not answer: those coalesced on another caller's probe
        (waiting for it) and those whose shared lock another process held (waiting for
        that lock, then probing unless it stored an answer) -- side by side, each within
        the call's deadline."""
        def finish(part: HomePart) -> None:
            if part.leads:   # waits_for_lock: ours to probe, once the lock is free
                result = None
                try:
                    result = self._probe_shared(part.fetch)
                finally:
                    part.answer = result
                    if part.call is not None:
                        self._inflight.done(part.flight, part.call, result)
            else:
                part.answer = self._follow(part.fetch, part.call)
            read.emit_ready()

        parts = [part for part in read.parts if part.answer is None]
        if len(parts) == 1:
            finish(parts[0])
        elif parts:
            with ThreadPoolExecutor(len(parts), thread_name_prefix="probe-home") as pool:
                list(pool.map(finish, parts))

    def _start_cluster(self, config: ProbeConfig) -> RedisCluster | None:
        """Cluster mode's Redis side, or None. A wrong password is a ValueError here (the
        caller's start-up fails clearly); an unreachable Redis is not: we go on alone."""
        if not config.redis_url:
            return None
        from probe.shared.cluster import ClusterUnavailable, RedisCluster

        cluster = RedisCluster(config.redis_url, prefix=config.redis_prefix,
                               cluster_ids={Path(path): home_id for home_id, path in config.home_ids.items()},
                               lease_s=config.probe_timeout_s + 5, on_rotation=self._rotated_elsewhere)
        try:
            cluster.start()
        except ClusterUnavailable as exc:
            raise ValueError(str(exc)) from None
        return cluster

    def _sync_cluster(self, home: Path, provider: str) -> tuple[Blocked | None, int | None]:
        """Cluster mode, at the start of every fetch: one round trip for the home's cluster
        generation and the provider's shared back-off. A newer generation means another
        backend rotated the home: rotate here too before anything is read from a cache.
        Returns the shared back-off (only one set under this generation) and the
        generation the fetch begins under (None: Redis could not say)."""
        if self._cluster is None:
            return None, None
        generation, backoff = self._cluster.sync(home, provider)
        if generation is None:
            return None, None
        if self._cluster.newer_generation(home, generation):
            self._rotated_elsewhere(home)
        started_under = self._cluster.known_generation(home)
        if backoff is None:
            return None, started_under
        left_s = int(backoff - time.time()) + 1
        return Blocked(time.monotonic() + left_s, "The provider is rate-limiting this account (seen by another "
                       f"backend); next try in {left_s} s."), started_under

    def _rotated_elsewhere(self, home: Path) -> None:
        with self._rotation_lock(str(home)):
            self._rotate_locked(home, None, announce=False)

    @staticmethod
    def _env_factory(config: ProbeConfig):
        return lambda home: child_env(home, config.provider_urls)

    def _afetch_executor(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(AFETCH_THREADS, thread_name_prefix="probe-afetch")
            return self._executor

    def _rotation_lock(self, home: str) -> threading.Lock:
        with self._rotation_locks_guard:
            return self._rotation_locks.setdefault(home, threading.Lock())

    def _on_retire(self, worker: Worker, reason: str) -> None:
        if reason == "recycle":
            self._stats.count("recycles")

    def _record(self, snap: Snapshot) -> Snapshot:
        self._stats.fetched(snap.probe.path, snap.error.code if snap.error else None)
        return snap

    def _read_shared(self, fetch: Fetch, written_after: float | None = None) -> Snapshot | None:
        """Another process's fresh result from the shared cache, adopted into ours."""
        if self._shared is None:
            return None
        snap = self._shared.read(fetch, written_after=written_after)
        if snap is not None:
            self._cache.put(fetch.key, snap, fetch.generation)
        return snap

    def _probe_shared(self, fetch: Fetch) -> Snapshot:
        """With a shared cache, probe under the (home, provider) lock so at most one process
        probes it at a time; a process that waited for the lock takes the result the holder
        just stored instead of probing again."""
        shared = self._shared
        if shared is None:
            return self._probe_and_store(fetch)
        waiting_since = time.time()
        with shared.probe_lock(fetch, fetch.deadline - time.monotonic()) as locked:
            if not locked:
                return self._lock_timed_out(fetch)
            stored = self._stored_meanwhile(fetch, waiting_since)
            if stored is not None:
                return stored
            return self._probe_and_store(fetch)

    def _lock_timed_out(self, fetch: Fetch) -> Snapshot:
        snap = Snapshot.failed(fetch.provider, str(fetch.home), "timeout",
                               "Another process is probing this account; it did not finish in time.",
                               probe=ProbeInfo("cache", monotonic_ms_since(fetch.started)))
        return self._record(self._stale_if_possible(snap, fetch.key, fetch.generation))

    def _stored_meanwhile(self, fetch: Fetch, waiting_since: float) -> Snapshot | None:
        """Once the shared probe lock is ours: the snapshot its last holder stored (for a
        refresh, only one stored after we began to wait), answered from the cache."""
        stored = self._read_shared(fetch, written_after=waiting_since if fetch.refresh else None)
        if stored is None:
            return None
        return self._record(stored.with_probe(ProbeInfo("cache", monotonic_ms_since(fetch.started),
                                                        stored.probe.worker_pid)))

    def _probe_and_store(self, fetch: Fetch) -> Snapshot:
        return self._store(fetch, self._probe(fetch.provider, fetch.home, fetch.deadline, fetch.started, fetch.skip))

    def _store(self, fetch: Fetch, snap: Snapshot) -> Snapshot:
        """What every probe's result goes through, a single fetch's or one of a home
        read's: the back-off learns from it, the caches keep it unless the home was
        rotated since ``fetch`` began, and the caller gets it (or, for a transient
        failure, the last good snapshot marked stale). A snapshot with accounts (SPEC
        §18) learns and goes stale per account (``probe.account_state``) before its own
        fields are assembled from them."""
        if snap.accounts:
            snap = self._account_readings.settle(snap, fetch.key, fetch.generation, self._backoff, fetch.skip)
            self._share_backoff(fetch, snap)
        elif snap.error is None:
            self._backoff.succeeded(fetch.key[:2])
        elif snap.error.code == "rate_limited" and snap.source != POOL_RECORDS:
            # (Hermes' own records answered without a request: nothing to back off from --
            # the records say when an entry frees up, and the next read asks them again)
            wait_s = self._backoff.rate_limited(fetch.key[:2], snap.error.retry_after_s)
            if self._cluster is not None:
                self._cluster.share_backoff(fetch, wait_s, snap.error.message)
        if self._cache.put(fetch.key, snap, fetch.generation) and self._shared is not None:
            self._shared.write(fetch, snap, self._config.cache_ttl_s)
        # (a snapshot with accounts went stale per account above)
        return self._record(snap if snap.accounts else self._stale_if_possible(snap, fetch.key, fetch.generation))

    def _share_backoff(self, fetch: Fetch, snap: Snapshot) -> None:
        """Cluster mode (SPEC §15), a snapshot settled per account: when no account is
        available and the provider rate-limited every one it was asked about, every backend
        holds off the (home, provider) -- the back-off ``probe.account_state`` keeps per
        account stays this backend's, since the cluster's keys name no account."""
        if self._cluster is None or snap.available or snap.error is None or snap.error.code != "rate_limited":
            return
        probed = [a for a in snap.accounts if a.probed]
        if not probed or any(a.error is None or a.error.code != "rate_limited" for a in probed):
            return
        waits = [self._backoff.blocked(account_key(fetch.key, a.id)) for a in probed]
        left_s = min((b.until - time.monotonic() for b in waits if b is not None), default=0.0)
        self._cluster.share_backoff(fetch, left_s, snap.error.message)

    def _stale_if_possible(self, snap: Snapshot, key: tuple, generation: int) -> Snapshot:
        """A transient failure is answered with the last good snapshot of the same
        credential and generation, marked stale, with the error attached; a definitive
        one (or no good snapshot) is answered as it is."""
        if snap.error is None or snap.error.code not in TRANSIENT_ERRORS:
            return snap
        good = self._cache.last_good(key, generation)
        if good is None:
            return snap
        return dataclasses.replace(good, stale=True, error=snap.error, probe=snap.probe)

    def _notice_rotation(self, home: Path, deadline: float, started: float) -> tuple:
        """Notice on our own a credential change of ``home`` (a credential manager that only
        rewrites the file is enough); the files' fingerprint, taken first.

        Two stat calls while the files are the ones the digests were read for. After a
        change, one request to a worker of the home: the home's list with each provider's
        credential digest (``_listing_on`` rotates those that changed, ``probe.digests``).
        A home this service never listed is not asked while its files are the ones first
        seen. A list that could not be read (timeout, saturated) rotates nothing; the next
        read asks again."""
        now_ns = time.time_ns()   # before the stat: see probe.home_list on the racy rule
        fingerprint = credential_fingerprint(home)
        if self._digests.read_for(home, fingerprint) or self._digests.seen(home, fingerprint):
            return fingerprint
        with contextlib.suppress(HomeListFailed):
            self._home_lists.get(home, fingerprint, now_ns, deadline - time.monotonic(),
                                 lambda: self._ask_listing(home, fingerprint, deadline, started))
        return fingerprint

    def _digests_read(self, home: Path, fingerprint: tuple, listing: HomeProviders) -> None:
        """A list just read for the files at ``fingerprint``: rotate the providers whose
        credential digest changed (every one, for a home this service had seen but never
        listed whose files changed since), under the home's rotation lock. Nothing at all
        for a write that changed no credential (Hermes' bookkeeping)."""
        with self._rotation_lock(str(home)):
            applied = self._digests.apply(home, fingerprint, listing.digests)
            if applied.adopt is not None:
                self._cache.rekey(home, applied.adopt,
                                  lambda provider: self._digests.key_part(home, provider, fingerprint))
            if applied.rotate is EVERY_PROVIDER or applied.rotate:
                self._stats.count("credential_rotations", len(applied.rotate or (None,)))
                self._rotate_locked(home, applied.rotate)
            # a file that turned unreadable rotates nothing, but the providers it hides must
            # say so at their next read (stale + credentials_unreadable), not be served from
            # the cache as fresh; the same file back revives what was cached
            self._cache.expire(home, listing.unreadable)
            self._cache.revive(home, [name for name, digest in listing.digests.items()
                                      if digest is not None and name not in listing.unreadable])

    def _probe(self, provider: str, home: Path, deadline: float, started: float, skip: tuple[str, ...] = (),
               account: str | None = None) -> Snapshot:
        return self._on_worker(
            home, deadline,
            use=lambda worker, path: self._ask(worker, provider, home, deadline, started, path, skip, account),
            failed=lambda exc, path, pid: self._failed(provider, home, exc, started, path, pid),
            saturated=lambda: Snapshot.failed(provider, str(home), "saturated", SATURATED,
                                              probe=ProbeInfo("cold", monotonic_ms_since(started))))

    def _on_worker(self, home: Path, deadline: float, *, use: Callable[[Worker, str], T],
                   failed: Callable[[WorkerFailed, str, int | None], T], saturated: Callable[[], T]) -> T:
        """Run one request on a worker of ``home``: a pool slot (``warm``, or
        ``slot_start`` when it had to start its process), else the cold fallback. ``use``
        gets the worker (its lock held) and the path; ``failed`` answers a worker that
        could not start, ``saturated`` the cold bound being full until the deadline."""
        config = self._config
        if config.pool_size > 0:
            pool = self._registry.pool(home)
            worker = pool.claim(max(0.0, min(config.claim_wait_s, deadline - time.monotonic())))
            if worker is not None:
                try:
                    if worker.started:
                        return use(worker, "warm")
                    if self._registry.start(worker, deadline):
                        return use(worker, "slot_start")
                except WorkerFailed as exc:
                    return failed(exc, "slot_start", worker.pid)
                finally:
                    pool.release(worker)
        return self._on_cold_worker(home, deadline, use, failed, saturated)

    def _on_cold_worker(self, home: Path, deadline: float, use: Callable[[Worker, str], T],
                        failed: Callable[[WorkerFailed, str, int | None], T], saturated: Callable[[], T]) -> T:
        """The fallback when no pool slot was free: a surge worker of this home parked by an
        earlier cold probe (``warm``), else a new process under the cold bound (``cold``).
        Afterwards the worker is parked for the next such caller, or retired (see
        ``probe.pool.cold``). The permit goes back on every path: a worker that could not
        even be built (its environment, a thread, memory) returns it at once -- built
        before the ``try``, each such failure used to lose one for good, shrinking the
        cold bound until every cold caller was ``saturated``."""
        cold = self._cold
        generation = self._cache.generation(home)
        granted, worker = cold.claim(home, generation, deadline)
        if worker is None and not granted:
            return saturated()
        path = "warm" if worker is not None else "cold"
        try:
            if worker is None:
                worker = Worker(home, self._env_factory(self._config)(home), self._spawner, once=not cold.lingers)
            if not worker.started:
                worker.start(deadline)
                self._stats.count("spawns")
            return use(worker, path)
        except WorkerFailed as exc:
            return failed(exc, path, None if worker is None else worker.pid)
        finally:
            if worker is None:
                cold.release()          # no process was made: nothing to wait for
            elif not cold.park(worker, home, generation, lambda: self._cache.generation(home)):
                cold.release_after(worker.close)

    def _ask_listing(self, home: Path, fingerprint: tuple, deadline: float, started: float) -> HomeProviders:
        """One ``providers`` request to a worker of ``home``; HomeListFailed when none
        answered usably (a confused worker is killed, as after a probe)."""
        def failed(exc: WorkerFailed, path: str, pid: int | None) -> HomeProviders:
            raise _list_failed(home, exc.code, str(exc), path, pid, started)

        def saturated() -> HomeProviders:
            raise _list_failed(home, "saturated", SATURATED, "cold", None, started)

        return self._on_worker(home, deadline, failed=failed, saturated=saturated,
                               use=lambda worker, path: self._listing_on(worker, path, home, fingerprint, deadline,
                                                                         started))

    def _listing_on(self, worker: Worker, path: str, home: Path, fingerprint: tuple, deadline: float,
                    started: float) -> HomeProviders:
        """The ``providers`` request itself, on a worker the caller owns; the digests it
        carries rotate what changed (:meth:`_digests_read`) before anyone uses the list."""
        try:
            self._stats.count("provider_lists")
            reply = worker.request({"op": "providers"}, deadline)
            error = reply.get("error")
            if not reply.get("ok") and isinstance(error, dict) and error.get("code") == "home_not_found":
                raise _list_failed(home, "home_not_found", f"Home directory {home} does not exist.", path,
                                   worker.pid, started)
            if not reply.get("ok"):
                raise WorkerProtocolError("The worker sent a malformed reply.")
            listing = parse_listing(reply)
        except WorkerFailed as exc:
            worker.kill()
            self._stats.count("kills")
            raise _list_failed(home, exc.code, str(exc), path, worker.pid, started) from None
        self._digests_read(home, fingerprint, listing)
        return listing

    def _ask(self, worker: Worker, provider: str, home: Path, deadline: float, started: float,
             path: str, skip: tuple[str, ...] = (), account: str | None = None) -> Snapshot:
        """One probe request to a worker the caller owns; always a Snapshot."""
        message: dict[str, Any] = {"op": "probe", "provider": provider, "timeout_s": child_timeout_s(deadline)}
        if skip:
            message["skip"] = list(skip)
        if account is not None:
            message["account"] = account
        try:
            return self._child_snapshot(worker.request(message, deadline), home, path, started, worker.pid)
        except WorkerFailed as exc:
            worker.kill()
            self._stats.count("kills")
            return self._failed(provider, home, exc, started, path, worker.pid)

    @staticmethod
    def _child_snapshot(reply: dict[str, Any], home: Path, path: str, started: float, pid: int | None) -> Snapshot:
        """A worker's snapshot line as a Snapshot (latency: from ``started`` until now);
        WorkerProtocolError for anything else."""
        if not reply.get("ok") or not isinstance(reply.get("snapshot"), dict):
            raise WorkerProtocolError("The worker sent a malformed reply.")
        try:
            return Snapshot.from_child(reply["snapshot"], home=str(home),
                                       probe=ProbeInfo(path, monotonic_ms_since(started), pid))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError):
            # the one border for a worker's snapshot: whatever it holds, a confused worker
            # (killed by the caller), never an exception out of fetch (issue 26 #7)
            raise WorkerProtocolError("The worker sent a malformed snapshot.") from None

    def _failed(self, provider: str, home: Path, exc: WorkerFailed, started: float, path: str,
                pid: int | None) -> Snapshot:
        return Snapshot.failed(provider, str(home), exc.code, str(exc),
                               probe=ProbeInfo(path, monotonic_ms_since(started), pid))


def _list_failed(home: Path, code: str, message: str, path: str, pid: int | None, started: float) -> HomeListFailed:
    return HomeListFailed(Snapshot.failed(None, str(home), code, message,
                                          probe=ProbeInfo(path, monotonic_ms_since(started), pid)))
