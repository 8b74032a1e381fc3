"""Cluster mode (SPEC §15): several backends, on several hosts, sharing one Redis.

Per (home cluster id, provider) the backends share, through Redis:

* the snapshot cache -- so N backends polling one account make one provider request per
  TTL between them;
* a single-flight probe lock with a lease (redis-py's ``Lock``: ``SET NX PX`` with a token,
  released by a compare-and-delete script), so a backend that dies holding it delays the
  others by at most the lease;
* the rate-limit back-off -- after a 429 seen by any backend, none calls that provider for
  that home until it ends;
* a per-home **cluster generation**, bumped by a rotation on any backend and broadcast on a
  pub/sub channel: every backend checks it (one round trip, together with the back-off) at
  the start of every fetch, so none serves a pre-rotation snapshot once the rotating call
  has returned, and the broadcast closes idle workers within a second.

A home's cluster identity is its configured id (``--home ID=PATH``), so the same id on two
hosts names the same account even where the paths differ; a home without an id is known by
a hash of its path. Redis never holds a path or a credential: stored snapshots carry the
cluster id in ``home`` and get the local path back when read. Every key expires.

Nothing read from Redis is trusted (issue 26 #4): any process that can reach it can write
any value to our keys and channel. Every value is parsed strictly (``probe.strict_json``)
and checked for its shape; one that does not fit is treated as absent and logged once per
kind of key. A key of the wrong type answers as absent too (a Redis error *reply* is not an
outage); a lock key without an expiry gets the lease; a garbage generation is replaced by
the next rotation; the subscriber survives any message.

Redis down, slow or restarted: every call has a socket timeout far below any caller's
deadline; the first failure logs one warning and the backend goes on alone (its local
cache, back-off and locks), re-trying Redis at most once a second; it logs one line when
Redis is back and re-subscribes. A rotation made while Redis was unreachable reaches the
others when their cached entries expire (SPEC §15).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from probe import strict_json
from probe.backoff import MAX_DELAY_S
from probe.redact import mask
from probe.shared import Fetch
from probe.snapshot import Snapshot

log = logging.getLogger("quota_probe.cluster")

DEFAULT_PREFIX = "quota-probe:"
#: socket timeouts: far below any caller's deadline, above a loaded Redis's latency
SOCKET_TIMEOUT_S = 0.25
#: after a failure, Redis is not tried again for this long (the reconnect thread tries)
RETRY_EVERY_S = 1.0
#: keys that have no natural TTL (generations, peers) still expire after this
LONG_TTL_S = 30 * 86400
PEER_TTL_S = 60
HEARTBEAT_S = 10.0
#: a waiter for the probe lock checks this often that the holder is a lock at all
LOCK_CHECK_EVERY_S = 0.5
#: a generation is a counter: digits only, well inside a double (Lua's numbers)
_GENERATION = re.compile(rb"\d{1,15}")

#: one rotation, atomically: the next generation above both Redis's (a garbage value counts
#: as 0) and the caller's own (a Redis restarted empty must not hand out one already used),
#: stored with its expiry, and broadcast
_ROTATE = """
local kind = redis.call('TYPE', KEYS[1])['ok']
local current = 0
if kind == 'string' then
  local raw = redis.call('GET', KEYS[1])
  if string.len(raw) <= 15 and string.match(raw, '^%d+$') then current = tonumber(raw) end
end
local known = tonumber(ARGV[1])
if known > current then current = known end
local nextgen = current + 1
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], string.format('%d', nextgen), 'EX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return nextgen
"""

#: a probe-lock key that is no lock of ours -- not a string, not a 32-hex-digit token, without
#: an expiry or with one past any lease (a garbage write) -- is deleted: it would otherwise
#: hold every backend off that account until it expires, maybe never
_CLEAR_FOREIGN_LOCK = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return 0 end
if kind == 'string' then
  local token = redis.call('GET', KEYS[1])
  local left = redis.call('PTTL', KEYS[1])
  if string.len(token) == 32 and string.match(token, '^%x+$') and left >= 0 and left <= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
return 1
"""


def home_key(home: Path, cluster_ids: Mapping[Path, str]) -> str:
    """The home's cluster identity: its configured id, else a hash of its path."""
    found = cluster_ids.get(home)
    return found if found is not None else "path-" + hashlib.sha256(str(home).encode()).hexdigest()[:16]


class ClusterUnavailable(Exception):
    pass


class RedisCluster:
    """The Redis side of one backend. ``on_rotation(home_path)`` is called (from the
    subscriber thread, or a fetch) when another backend rotated a home we serve."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, cluster_ids: Mapping[Path, str] | None = None,
                 lease_s: float = 25.0, on_rotation: Callable[[Path], None] = lambda home: None) -> None:
        self.url = url
        self.prefix = prefix
        self.lease_s = lease_s
        self._ids: dict[Path, str] = dict(cluster_ids or {})
        self._paths: dict[str, list[Path]] = {}
        for path, home_id in self._ids.items():
            self._paths.setdefault(home_id, []).append(path)
        self._on_rotation = on_rotation
        # no client-side retries: redis-py retries a timed-out command (with back-off) by
        # default, which turns a 0.25 s timeout into a second or more; we go on alone instead
        self._redis = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S,
                                           socket_connect_timeout=SOCKET_TIMEOUT_S, health_check_interval=0,
                                           retry=Retry(NoBackoff(), 0))
        self._known: dict[str, int] = {}
        #: per thread: the snapshot value fetched by the last ``sync`` (see ``read``)
        self._prefetched = threading.local()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down = False
        self._stop = threading.Event()
        #: set when Redis is back after an outage (and on close): the heartbeat re-announces
        #: this backend at once instead of at its next period -- a restarted Redis has lost
        #: every backend's entry, and ``peers`` would read low for up to HEARTBEAT_S
        self._announce = threading.Event()
        self._threads: list[threading.Thread] = []
        #: kinds of unexpected value already logged (one warning per kind, not per read)
        self._garbage_seen: set[str] = set()
        self.backend_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    # -- life --------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the URL once (a wrong password is a clear error here, at start-up), then
        run the subscriber and heartbeat threads."""
        self.check(unreachable_ok=True)
        for target, name in ((self._subscribe_loop, "probe-cluster-sub"), (self._heartbeat_loop, "probe-cluster-beat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def check(self, *, unreachable_ok: bool = False) -> None:
        """Ping once: ClusterUnavailable for a wrong or missing password (always) and for an
        unreachable server (unless ``unreachable_ok``: a backend goes on alone)."""
        try:
            self._redis.ping()
        except redis.AuthenticationError:
            if urlsplit(self.url).password is None:
                raise ClusterUnavailable("Redis needs a password (put it in the URL: redis://:PASSWORD@host)") from None
            raise ClusterUnavailable("Redis refused the password in the URL") from None
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise ClusterUnavailable("Redis needs a password (put it in the URL: redis://:PASSWORD@host)") from None
            raise ClusterUnavailable(f"Redis answered an error ({exc})") from None
        except redis.RedisError as exc:
            if not unreachable_ok:
                raise ClusterUnavailable(f"Redis at {_safe_url(self.url)} is unreachable ({type(exc).__name__})") from None
            self._failed(exc)   # unreachable now: go on alone, rejoin when it is back

    def close(self) -> None:
        self._stop.set()
        self._announce.set()
        for thread in self._threads:
            thread.join(5)
        self._redis.close()

    # -- availability ------------------------------------------------------------------------
    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._down_until = time.monotonic() + RETRY_EVERY_S
            first = not self._down
            self._down = True
        if first:
            log.warning("Redis at %s is unreachable (%s); this backend goes on alone until it is back",
                        _safe_url(self.url), type(exc).__name__)

    def _ok(self) -> None:
        if self._down:
            with self._lock:
                back = self._down
                self._down = False
            if back:
                log.warning("Redis is reachable again; sharing resumes")
                self._announce.set()

    @property
    def connected(self) -> bool:
        return not self._down

    def _call(self, fn: Callable[[], Any], default: Any = None) -> Any:
        """``fn()``'s result, or ``default`` while Redis is down or when it fails. An error
        *reply* (a key of the wrong type, a value INCR cannot take) is no outage: Redis
        answered; only that call gets ``default``."""
        if not self._usable():
            return default
        try:
            result = fn()
        except redis.ResponseError as exc:
            self._ok()
            self._garbage("reply", exc)
            return default
        except redis.RedisError as exc:
            self._failed(exc)
            return default
        self._ok()
        return result

    def _garbage(self, kind: str, exc: BaseException | None = None) -> None:
        """An unexpected value (or error reply) where ``kind`` was expected: treated as
        absent by the caller; logged once per kind for this backend's life."""
        with self._lock:
            first = kind not in self._garbage_seen
            self._garbage_seen.add(kind)
        if first:
            log.warning("Redis held an unexpected %s under prefix %r%s; treated as absent (logged once)", kind,
                        self.prefix, f" ({type(exc).__name__})" if exc is not None else "")

    def _generation(self, raw: Any) -> int:
        """A stored generation: absent is 0, so is garbage (logged)."""
        if raw is None:
            return 0
        if isinstance(raw, bytes) and _GENERATION.fullmatch(raw):
            return int(raw)
        self._garbage("generation")
        return 0

    # -- keys --------------------------------------------------------------------------------
    def _key(self, home_id: str, *parts: str) -> str:
        return self.prefix + ":".join(("home", home_id, *parts))

    def home_id(self, home: Path) -> str:
        return home_key(home, self._ids)

    # -- generation and back-off: checked at the start of every fetch -------------------------
    def sync(self, home: Path, provider: str) -> tuple[int | None, float | None]:
        """(cluster generation, end of the shared back-off as a wall-clock time, or None) in
        one round trip. A generation newer than the one we knew means another backend
        rotated the home: the caller rotates locally before going on. A back-off counts
        only when it was set under the generation read with it: a rotation (and with it a
        new credential) ends it. (None, None) while Redis is unreachable."""
        home_id = self.home_id(home)
        values = self._call(lambda: self._redis.mget(self._key(home_id, "gen"), self._key(home_id, provider, "backoff"),
                                                     self._key(home_id, provider, "snap")), None)
        # the shared snapshot came along in the same round trip: the read that usually
        # follows on this thread takes it instead of asking again
        self._prefetched.value = None if values is None else (home_id, provider, values[2])
        if values is None:
            return None, None
        generation = self._generation(values[0])
        return generation, self._backoff_until(values[1], generation)

    def _backoff_until(self, raw: Any, generation: int) -> float | None:
        if raw is None:
            return None
        try:
            data = strict_json.loads(raw)
            until, set_under, message = data["until"], data["gen"], data["message"]
            if isinstance(until, bool) or not isinstance(until, (int, float)) or isinstance(set_under, bool) \
                    or not isinstance(set_under, int) or not isinstance(message, str):
                raise ValueError("not a back-off")
        except (ValueError, KeyError, TypeError):
            self._garbage("back-off")
            return None
        if set_under != generation or until <= time.time():
            return None
        return min(until, time.time() + MAX_DELAY_S)   # no value holds a provider off longer than we would

    def newer_generation(self, home: Path, generation: int) -> bool:
        """Record ``generation`` as known for ``home``; True when it is newer than what we
        knew (another backend rotated it since)."""
        home_id = self.home_id(home)
        with self._lock:
            known = self._known.get(home_id)
            self._known[home_id] = max(generation, known or 0)
        return known is not None and generation > known

    def known_generation(self, home: Path) -> int:
        """The newest cluster generation this backend knows for ``home``."""
        return self._known.get(self.home_id(home), 0)

    def share_backoff(self, fetch: Fetch, seconds: float, message: str) -> None:
        """Tell every backend about a 429, stamped with the generation the probe began under
        (a back-off of a rotated-away credential must not hold the new one off)."""
        if seconds <= 0 or fetch.shared_generation is None:
            return
        payload = json.dumps({"until": time.time() + seconds, "message": message, "gen": fetch.shared_generation})
        self._call(lambda: self._redis.set(self._key(self.home_id(fetch.home), fetch.provider, "backoff"), payload,
                                           px=max(1, int(seconds * 1000))))

    # -- SharedCache ---------------------------------------------------------------------------
    def read(self, fetch: Fetch, *, written_after: float | None = None) -> Snapshot | None:
        home_id = self.home_id(fetch.home)
        prefetched, self._prefetched.value = getattr(self._prefetched, "value", None), None
        if written_after is None and prefetched is not None and prefetched[:2] == (home_id, fetch.provider):
            raw = prefetched[2]          # fetched with the generation, a moment ago
        else:
            raw = self._call(lambda: self._redis.get(self._key(home_id, fetch.provider, "snap")))
        if raw is None:
            return None
        try:
            data = strict_json.loads(raw)
            stamped, written_at = data["gen"], data["written_at"]
            if isinstance(stamped, bool) or not isinstance(stamped, int) or isinstance(written_at, bool) \
                    or not isinstance(written_at, (int, float)) or not isinstance(data["snapshot"], dict):
                raise ValueError("not a stored snapshot")
            snap = Snapshot.from_dict({**data["snapshot"], "home": str(fetch.home)})
        except (ValueError, KeyError, TypeError):
            self._garbage("snapshot")
            return None
        if stamped != self._known.get(home_id, 0):
            return None   # written before a rotation we know of (or after one we have not seen yet)
        if written_after is not None and written_at < written_after:
            return None
        return snap if snap.provider == fetch.provider else None

    def write(self, fetch: Fetch, snap: Snapshot, ttl_s: float) -> None:
        """Store ``snap`` stamped with the generation its probe began under -- not a newer
        one learnt meanwhile (then it is not stored at all): a probe that began before a
        rotation never answers for after it (issue 26 #5). A success also ends the shared
        back-off of that generation (issue 26 #3)."""
        home_id = self.home_id(fetch.home)
        if fetch.shared_generation is None or self._known.get(home_id, 0) > fetch.shared_generation:
            return
        payload = json.dumps({"gen": fetch.shared_generation, "written_at": time.time(),
                              "snapshot": {**snap.to_dict(), "home": home_id}})

        def store() -> None:
            pipe = self._redis.pipeline()
            pipe.set(self._key(home_id, fetch.provider, "snap"), payload, px=max(1, int(ttl_s * 1000)))
            if snap.error is None:
                pipe.delete(self._key(home_id, fetch.provider, "backoff"))
            pipe.execute()

        self._call(store)

    @contextlib.contextmanager
    def probe_lock(self, fetch: Fetch, timeout_s: float) -> Iterator[bool]:
        """The cluster-wide single-flight lock, leased for ``lease_s``. Unreachable Redis:
        yields True unlocked (probing unshared beats not probing). Found taken, the key is
        checked for being a lock at all (``_CLEAR_FOREIGN_LOCK``) before we wait and again
        every LOCK_CHECK_EVERY_S while we do."""
        if not self._usable():
            yield True
            return
        give_up = time.monotonic() + max(0.0, timeout_s)
        name = self._key(self.home_id(fetch.home), fetch.provider, "lock")
        lock = self._redis.lock(name, timeout=self.lease_s, sleep=0.01, thread_local=False)
        token = uuid.uuid4().hex   # our own token, in the one shape _CLEAR_FOREIGN_LOCK accepts
        try:
            acquired = lock.acquire(blocking=False, token=token)
            while not acquired:   # checked again every slice: garbage may land while we wait
                if self._redis.eval(_CLEAR_FOREIGN_LOCK, 1, name, int(self.lease_s * 1000)):
                    self._garbage("lock")
                left_s = give_up - time.monotonic()
                if left_s <= 0:
                    break
                acquired = lock.acquire(blocking_timeout=min(left_s, LOCK_CHECK_EVERY_S), token=token)
        except redis.ResponseError as exc:   # Redis answered: not an outage, but no lock either
            self._garbage("lock", exc)
            yield False
            return
        except redis.RedisError as exc:
            self._failed(exc)
            yield True
            return
        if not acquired:
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(redis.RedisError):   # expired or Redis gone: the lease ends it
                lock.release()

    def drop(self, home: str | None, provider: str | None) -> None:
        """A rotation here: bump the cluster generation (so no backend serves what was
        stored before) and broadcast it, so every backend closes the home's workers."""
        homes = [Path(home)] if home is not None else list(self._ids)
        for path in homes:
            self.rotate(self.home_id(path))

    def rotate(self, home_id: str) -> int | None:
        """Bump ``home_id``'s cluster generation and broadcast it; the new generation, or
        None when Redis is unreachable (the others then learn of it when their entries
        expire). ``probe rotate --redis`` calls this with no backend running."""
        def bump() -> int:
            message = json.dumps({"home": home_id, "from": self.backend_id})
            return int(self._redis.eval(_ROTATE, 1, self._key(home_id, "gen"), self._known.get(home_id, 0),
                                        LONG_TTL_S, self.prefix + "rotations", message))

        generation = self._call(bump)
        if generation is not None:
            with self._lock:
                self._known[home_id] = generation
        return generation

    # -- rotations from elsewhere ----------------------------------------------------------------
    def _subscribe_loop(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.prefix + "rotations")
                self._ok()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    try:   # the subscriber survives any message, and any trouble acting on one
                        self._rotation_message(message.get("data"))
                    except Exception as exc:   # noqa: BLE001 -- logged once; the next message still counts
                        self._garbage("rotation handling", exc)
            except redis.RedisError as exc:
                self._failed(exc)
                self._stop.wait(RETRY_EVERY_S)
            except Exception as exc:   # noqa: BLE001 -- whatever the client raises, only close() ends this thread
                self._garbage("subscriber failure", exc)
                self._stop.wait(RETRY_EVERY_S)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError):
                        pubsub.close()

    def _rotation_message(self, data: Any) -> None:
        try:
            message = strict_json.loads(data)
            home_id, sender = message["home"], message.get("from")
            if not isinstance(home_id, str) or not isinstance(sender, (str, type(None))):
                raise ValueError("not a rotation")
        except (ValueError, TypeError, KeyError, AttributeError):
            self._garbage("rotation message")
            return
        if sender == self.backend_id:
            return
        paths = self._paths.get(home_id, [])
        if not paths:
            return
        # learn the new generation first, so the next fetch does not rotate the home again
        raw = self._call(lambda: self._redis.get(self._key(home_id, "gen")))
        for path in paths:
            if raw is not None:
                self.newer_generation(path, self._generation(raw))
            self._on_rotation(path)

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            key = self.prefix + "peers"
            now = time.time()

            def beat() -> None:
                def announce() -> None:
                    pipe = self._redis.pipeline()
                    pipe.zadd(key, {self.backend_id: now})
                    pipe.zremrangebyscore(key, 0, now - PEER_TTL_S)
                    pipe.expire(key, PEER_TTL_S * 2)
                    pipe.execute()

                try:
                    announce()
                except redis.ResponseError:   # not a sorted set: garbage; the heartbeats own this key
                    self._garbage("peers")
                    self._redis.delete(key)
                    announce()

            if not self._usable():
                self._down_until = 0.0   # this thread is the one that tries again
            self._announce.clear()      # a reconnect noticed from here on beats again at once
            self._call(beat)
            self._announce.wait(min(HEARTBEAT_S, RETRY_EVERY_S) if self._down else HEARTBEAT_S)

    def peers(self) -> int:
        """Backends seen in the last minute, this one always among them: it is live whatever
        Redis holds (a Redis that just restarted holds nobody until the heartbeats)."""
        key = self.prefix + "peers"
        now = time.time()

        def count() -> int:
            pipe = self._redis.pipeline()
            pipe.zcount(key, now - PEER_TTL_S, "+inf")
            pipe.zscore(key, self.backend_id)
            seen, mine = pipe.execute()
            return int(seen) + (0 if mine is not None and float(mine) >= now - PEER_TTL_S else 1)

        return self._call(count, 1)

    def state(self) -> dict[str, Any]:
        return {"connected": self.connected, "peers": self.peers()}


def _safe_url(url: str) -> str:
    return mask(url)
