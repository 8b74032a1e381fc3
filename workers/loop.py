"""The probe loop a worker runs, however it was started (``python -m workers`` or forked
from the template process, ``workers.template``).

Protocol: one JSON object per line each way. Requests carry an ``id`` that the reply
echoes, so the parent can never hand a caller somebody else's answer::

    {"id": "7", "op": "probe", "provider": "anthropic", "timeout_s": 20}
    {"id": "7", "ok": true, "snapshot": {...}}
    {"id": "7", "op": "probe", "provider": "openai-codex", "skip": ["a1b2c3"], "account": "d4e5f6"}
    {"id": "7", "op": "probe_home", "providers": ["anthropic", "zai"], "timeout_s": 20,
     "skip": {"anthropic": ["a1b2c3"]}}
    {"id": "7", "ok": true, "partial": true, "snapshot": {...zai...}}
    {"id": "7", "ok": true, "partial": true, "snapshot": {...anthropic...}}
    {"id": "7", "ok": true, "done": 2}
    {"id": "8", "op": "providers"} -> {"id": "8", "ok": true, "providers": ["anthropic", "xai"],
                                       "pool_only": ["xai"], "undeclared": [],
                                       "digests": {"anthropic": "9f2c…", "xai": "41d0…"}}
    {"id": "8", "op": "active_provider"} -> {"id": "8", "ok": true, "provider": "openrouter"}
    {"id": "8", "op": "pool_accounts", "provider": "xai"} -> {"id": "8", "ok": true, "accounts": [...]}
    {"id": "8", "op": "ping"}      -> {"id": "8", "ok": true, "pid": 4242}
    {"id": "9", "op": "shutdown"}  -> {"id": "9", "ok": true}, then exit

``probe_home`` reads several providers of the home in one request (SPEC §17): they are
probed concurrently -- one thread each over the worker's one kept-alive client, every one
with the request's ``timeout_s`` -- and each snapshot goes out as its own ``partial`` line
the moment it is ready, in whatever order they finish, so the parent can hand a fast
provider's answer on while a slow one is still out; the ``done`` line (with the count)
ends the request. Every partial line carries the request's id like any reply.

Every account of a provider (SPEC §18, ``workers.accounts``) is probed in the same request,
side by side; a snapshot then carries ``accounts`` (ids, labels, statuses, readings -- never a
token). ``skip`` names accounts the parent is backing off (listed, not probed); ``account``
reads that one account only.

``providers`` answers which providers the home has a credential for (SPEC §17,
``workers.listing``): names only, never a value; ``pool_only`` are the ids read from
``auth.json``'s ``credential_pool`` records (a ``probe`` of one answers from those records,
no request), ``undeclared`` the plugins without ``CREDENTIALS`` (listed until a probe answers
``no_credentials``), ``digests`` each provider's credential digest (``workers.digest``: a
hash, ``null`` when unknown) so the parent rotates only a provider whose credentials
changed. Its home missing: ``{"ok": false, "error": {"code": "home_not_found"}}``.

``active_provider`` answers the home's ``config.yaml`` ``model.provider`` (``null`` when it
names none; ``workers.hermes_config``) -- what hermes-webui's quota route reads when no
provider is named (SPEC §19). ``pool_accounts`` answers a pool-only id's accounts from
Hermes' records (``workers.pool_accounts``; ``null`` when ``credential_pool`` has no row
for it; ``auth.json`` unreadable: ``{"ok": false, "error": {"code":
"credentials_unreadable", ...}}``). Either, its home missing: the same ``home_not_found`` error.

A line that is not a valid request gets ``{"id": <id or null>, "ok": false, "error":
{"code": "bad_request", ...}}`` and the loop goes on. EOF on stdin ends the loop.
``--once`` answers a single request and exits (the cold one-shot path). The first reply
of a worker also carries ``"ready_at"``: the worker's ``time.monotonic()`` when it became
ready to serve (imports done, HTTP client built). ``CLOCK_MONOTONIC`` is one clock for every
process of the machine, so the parent can measure how long a start really took, however
long the worker then sat idle before its first request.

stdout carries protocol lines only: at start-up the real stdout is moved to a private
descriptor and fd 1 is pointed at stderr, so a stray print() in any library cannot
corrupt the protocol.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

#: a request is a few hundred bytes; anything longer is garbage, not worth buffering
MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_TIMEOUT_S = 20.0
#: a home lists at most the registered providers plus 64 pool-only ids (``probe.home_list``)
MAX_HOME_PROVIDERS = 1024


#: the reply of a home question whose home directory is gone
HOME_GONE = {"ok": False, "error": {"code": "home_not_found", "message": "The worker's home directory does not exist."}}


class BadRequest(Exception):
    pass


def _take_protocol_stdout() -> BinaryIO:
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def _read_request_line(stdin: BinaryIO) -> bytes | None:
    """One line, or None at EOF. An over-long line is drained and reported as bad."""
    line = stdin.readline(MAX_REQUEST_BYTES + 1)
    if not line:
        return None
    if len(line) > MAX_REQUEST_BYTES and not line.endswith(b"\n"):
        while True:  # drain the rest of the oversized line
            rest = stdin.readline(MAX_REQUEST_BYTES)
            if not rest or rest.endswith(b"\n"):
                break
        return b"\x00oversized"
    return line


def _decode(line: bytes) -> tuple[Any, dict]:
    """Return (id, request) or raise BadRequest carrying whatever id could be recovered."""
    if line.startswith(b"\x00oversized"):
        raise BadRequest(None, "request line is longer than 64 KiB")
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(None, "request is not valid JSON") from None
    if not isinstance(request, dict):
        raise BadRequest(None, "request is not a JSON object")
    request_id = request.get("id")
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        raise BadRequest(None, "request has no string or integer id")
    op = request.get("op")
    if op not in ("probe", "probe_home", "providers", "active_provider", "pool_accounts", "ping", "shutdown"):
        raise BadRequest(request_id, "unknown op")
    if op in ("probe", "pool_accounts") and not isinstance(request.get("provider"), str):
        raise BadRequest(request_id, "probe needs a provider name")
    if op == "probe_home":
        names = request.get("providers")
        if not isinstance(names, list) or not 0 < len(names) <= MAX_HOME_PROVIDERS \
                or not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
            raise BadRequest(request_id, "probe_home needs a list of distinct provider names")
    if op == "probe":
        skip, account = request.get("skip", []), request.get("account")
        if not _names(skip) or not (account is None or isinstance(account, str) and 0 < len(account) <= 256):
            raise BadRequest(request_id, "skip must be a list of account ids and account one id")
    if op == "probe_home":
        skip = request.get("skip", {})
        if not isinstance(skip, dict) or not all(isinstance(k, str) and _names(v) for k, v in skip.items()):
            raise BadRequest(request_id, "skip must map provider names to lists of account ids")
    if op in ("probe", "probe_home"):
        timeout_s = request.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 3600:
            raise BadRequest(request_id, "timeout_s must be a number of seconds in (0, 3600]")
    return request_id, request


def _names(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 256 and all(isinstance(v, str) and len(v) <= 256 for v in value)


class Loop:
    """Owns the worker's one HTTP client, so keep-alive connections outlive single probes."""

    def __init__(self) -> None:
        self._http = None
        #: ``time.monotonic()`` when this worker became ready; sent with the first reply only
        self.ready_at: float | None = None
        self.home = os.environ.get("HERMES_HOME", "")
        self._credentials = None
        self._credentials_stat: tuple | None = None
        self._credentials_settled = False

    def http(self):
        if self._http is None:
            from workers.http import ProviderHttp

            self._http = ProviderHttp()
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def handle(self, line: bytes, emit: Callable[[dict], None] | None = None) -> tuple[dict, bool]:
        """Return (reply, keep_going). ``emit`` writes a ``partial`` line of a
        ``probe_home`` request (from any of its threads); without it, none is expected."""
        reply, keep_going = self._dispatch(line, emit)
        if self.ready_at is not None:
            reply["ready_at"], self.ready_at = self.ready_at, None
        return reply, keep_going

    def _dispatch(self, line: bytes, emit: Callable[[dict], None] | None) -> tuple[dict, bool]:
        try:
            request_id, request = _decode(line)
        except BadRequest as exc:
            request_id, message = exc.args
            return {"id": request_id, "ok": False, "error": {"code": "bad_request", "message": message}}, True
        op = request["op"]
        if op == "ping":
            return {"id": request_id, "ok": True, "pid": os.getpid()}, True
        if op == "shutdown":
            return {"id": request_id, "ok": True}, False
        if op == "providers":
            return {"id": request_id, **self.providers()}, True
        if op == "active_provider":
            return {"id": request_id, **self.active_provider()}, True
        if op == "pool_accounts":
            return {"id": request_id, **self.pool_accounts(request["provider"])}, True
        timeout_s = float(request.get("timeout_s", DEFAULT_TIMEOUT_S))
        if op == "probe_home":
            def partial(snapshot: dict) -> None:
                if emit is not None:
                    emit({"id": request_id, "ok": True, "partial": True, "snapshot": snapshot})
            return {"id": request_id, "ok": True,
                    "done": self.probe_home(request["providers"], timeout_s, partial, request.get("skip", {}))}, True
        return {"id": request_id, "ok": True,
                "snapshot": self.probe(request["provider"], timeout_s, request.get("skip", ()), request.get("account"))}, True

    def credentials(self):
        """The home's credentials, re-read whenever a credential file's stat data changed
        (inode, size, mtime, ctime) or the last read came so soon after a change that equal
        stat data cannot prove equal content (see ``stat_is_settled``): a rewritten
        ``.env`` -- even one rewritten in place twice within one timestamp tick -- takes
        effect on the next probe, and a settled one costs two stat calls instead of two
        reads and a parse."""
        from workers.credentials import credential_stat, load_home, log_skipped, stat_is_settled

        home = Path(self.home)
        now_ns = time.time_ns()
        stat = credential_stat(home)
        if stat != self._credentials_stat or not self._credentials_settled or self._credentials is None:
            before = self._credentials
            self._credentials, self._credentials_stat = load_home(home), stat
            self._credentials_settled = stat_is_settled(stat, now_ns)
            if before is None or before.env_skipped != self._credentials.env_skipped:
                log_skipped(self._credentials.env_skipped)   # once per worker, not once per re-read
        return self._credentials

    def providers(self) -> dict:
        """The home's provider list (``workers.listing``) as reply fields."""
        from workers.listing import home_listing

        if not self.home or not os.path.isdir(self.home):
            return HOME_GONE
        return {"ok": True, **home_listing(self.credentials())}

    def active_provider(self) -> dict:
        """The home's ``config.yaml`` ``model.provider`` (``workers.hermes_config``) as reply fields."""
        from workers.hermes_config import active_provider

        if not self.home or not os.path.isdir(self.home):
            return HOME_GONE
        return {"ok": True, "provider": active_provider(self.home)}

    def pool_accounts(self, provider: str) -> dict:
        """A pool-only id's accounts (``workers.pool_accounts``) as reply fields."""
        from workers.pool_accounts import pool_only_accounts
        from workers.result import ProbeFailure

        home = self._present_home()
        if home is None:
            return HOME_GONE
        try:
            return {"ok": True, "accounts": pool_only_accounts(provider, home, time.time())}
        except ProbeFailure as exc:   # credentials_unreadable: the message names the file, never a path
            return {"ok": False, "error": {"code": exc.code, "message": exc.message}}

    def probe(self, provider: str, timeout_s: float, skip: Any = (), account: str | None = None) -> dict:
        return self._probe_in(self._present_home(), provider, timeout_s, skip, account)

    def _present_home(self):
        """The home's credentials, or None when the home directory is gone."""
        return self.credentials() if self.home and os.path.isdir(self.home) else None

    def _probe_in(self, home, provider: str, timeout_s: float, skip: Any = (), account: str | None = None) -> dict:
        from workers.accounts import probe_accounts
        from workers.credentials import load_home
        from workers.providers import contained
        from workers.result import failure

        if home is None:
            return failure(provider, "home_not_found", "The worker's home directory does not exist.")
        try:
            return probe_accounts(provider, home, self.http(), timeout_s, skip=skip, only=account,
                                  load_root=load_home)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 -- one provider's failure is that provider's answer: an
            return contained(provider, exc)   # exception here would cost the others of a home read theirs

    def probe_home(self, providers: list[str], timeout_s: float, partial: Callable[[dict], None],
                   skip: dict[str, list[str]] | None = None) -> int:
        """Probe ``providers`` side by side and hand each snapshot to ``partial`` as soon
        as it is ready; the count once all are in. One thread per provider but the first,
        which this thread probes itself (a home of one costs no thread). The home's files
        are read once, before the threads start: every provider of one request sees the
        same credentials, and no two threads re-read them at once. A provider whose code
        raises is answered ``bad_response`` at once (``workers.providers.contained``), on
        whichever thread it ran -- never a missing line the parent waits for. A provider that
        outlives its ``timeout_s`` (a plugin stuck outside ``ctx``) holds the request
        open: the parent answers it ``timeout`` at its own deadline and kills this
        process -- the others' lines have gone out already."""
        home = self._present_home()
        self.http()   # built here, not raced for by the threads

        def one(name: str) -> None:
            partial(self._probe_in(home, name, timeout_s, (skip or {}).get(name, ())))

        def in_thread(name: str) -> None:
            try:
                one(name)
            except OSError:   # the parent hung up: the main thread's write ends the loop
                pass

        threads = [threading.Thread(target=in_thread, args=(name,), name=f"probe-{name}", daemon=True)
                   for name in providers[1:]]
        for thread in threads:
            thread.start()
        one(providers[0])
        for thread in threads:
            thread.join()
        return len(providers)


def preload(plugins: bool = False) -> None:
    """Import everything a probe needs. Warm workers pay for it before their first probe; the
    template process pays for it once, for every worker forked from it.

    ``plugins``: also import every provider plugin (SPEC §16). The template does, so forked
    workers start with them loaded (a plugin that fails to import is remembered as such and
    answers ``plugin_error``); an exec-started worker imports a plugin on its first probe
    of it instead, so a worker that never probes a plugin never pays for importing it."""
    import importlib

    from workers.providers import BUILTINS, load_all

    for module in ("workers.credentials", "dotenv.main", "dotenv.variables", "workers.http", "workers.context",
                   "workers.places", "workers.accounts", "workers.validate", "workers.listing", "workers.digest",
                   "workers.providers.credential_pool", *BUILTINS.values()):
        importlib.import_module(module)
    if plugins:
        load_all()


def _write(out: BinaryIO, reply: dict) -> None:
    out.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")


_write_lock = threading.Lock()


def _write_locked(out: BinaryIO, reply: dict) -> None:
    """One whole line at a time: a ``probe_home`` request's threads write their partial
    lines concurrently, and two interleaved writes would be garbage to the parent."""
    with _write_lock:
        _write(out, reply)


def prepare() -> Loop:
    """Everything a worker needs that does not depend on its home: the imports (already
    done in a forked worker) and its own HTTP client."""
    preload()
    loop = Loop()
    loop.http().client()
    return loop


def serve(once: bool, loop: Loop | None = None) -> int:
    """Run the loop on stdin/stdout until EOF (or one request with ``once``); the exit code.

    Before the first read the worker is made ready: ``loop`` prepared (by a spare process
    before it knew its home) or prepared now, and ``gc.freeze()`` -- every object that
    exists now lives as long as the worker, so the collector need not walk it again, and
    in a forked worker it leaves the pages shared with the template alone (copy-on-write).

    The HTTP client is not closed on the way out: every caller ends the process with
    ``os._exit`` right after this returns, and the kernel closes its sockets then (the same
    FIN a close sends). Closing the pool first cost ~0.15 ms of a forked start's CPU."""
    out = _take_protocol_stdout()
    stdin = sys.stdin.buffer
    if loop is None:
        loop = prepare()
    loop.home = os.environ.get("HERMES_HOME", "")
    loop.http().match_environment()
    gc.freeze()
    loop.ready_at = time.monotonic()
    try:
        while True:
            line = _read_request_line(stdin)
            if line is None:
                return 0
            try:
                reply, keep_going = loop.handle(line, lambda partial: _write_locked(out, partial))
                _write_locked(out, reply)
            except BrokenPipeError:
                return 0
            if once or not keep_going:
                return 0
    except KeyboardInterrupt:
        return 0
