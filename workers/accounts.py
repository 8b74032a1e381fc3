"""Every account of a provider in a home (SPEC §18), decided here from the home's files and
probed side by side -- the one place that turns ``credential_pool`` rows and a provider's
other ``CREDENTIALS`` places into accounts. The parent sees ids, labels and statuses,
never a token.

**Which accounts, in order:**

1. the home's ``auth.json`` ``credential_pool[P]`` rows (P: the pool key the provider's
   ``CREDENTIALS`` name, ``credential_pool.P[]``), sorted by ``priority`` then file order.
   A Hermes profile home (its parent directory is named ``profiles``) with no row for P
   uses the root's (``../..``) rows for P -- and the root's ``providers.P`` login -- read
   only, as Hermes does; ``.env`` never falls back (a stripped ``env:NAME`` row of the
   root takes its token from the profile's own ``.env``);
2. then each of the provider's other places holding a value not already counted, in
   ``CREDENTIALS`` order, a ``.env`` name followed by Hermes' numbered keys ``NAME_2``,
   ``NAME_3``, … up to the first missing (or empty) one.

A profile lists (SPEC §17) only the providers it has a credential of its own for; the root's
rows join the accounts of a listed provider that has no row in the profile's pool. (Whether
a profile with no credential at all for a provider should list it from the root's rows
alone -- Hermes would use them -- is left open: the fixtures' ``scratch`` profile says no.)

One account per secret: a value already counted is not counted again (the first place
keeps its id and label); a stripped row (no token) takes its token from ``.env`` ``NAME``
when its source is ``env:NAME``, else from the place whose value matches its
``secret_fingerprint`` (``sha256:`` + 16 hex digits); Codex: tokens with the same
(``chatgpt_account_id``, ``sub``) JWT claims are one account. Machine-wide rows (source
``gh_cli``, ``claude_code``) are skipped.

**Which token** (PROVIDERS.md "Accounts"): ``access_token`` (the place's field); Nous
``agent_key``, else ``access_token``; Copilot rows may hold an exchanged Copilot token the
endpoint refuses, so an ``env:NAME`` Copilot row always takes ``.env`` ``NAME``, and a
classic ``ghp_`` token is no Copilot account at all. A ``.env`` value that is a 1Password
reference is resolved first (``workers.onepassword``, SPEC §2: a reference is never sent);
one ``op`` cannot read is an ``unavailable`` account carrying that error.

**Identity:** ``id`` = the row's ``id`` (a string of at most 64 printable characters), else
the place (``env:NAME``, ``auth.json:providers.P``, ``auth.json:credential_pool.P[i]``); a
repeated row id gets ``#2``, ``#3``. ``label`` = the row's ``label``, else its ``source``,
else the place -- whitespace collapsed, control characters dropped, at most 64
characters; a label that contains a secret of the home, or looks like one (a JWT, or 24+
characters without a space from ``[A-Za-z0-9_-]``), is ``Account N`` (N: its position).

**Status** (Hermes' ``agent/credential_pool.py`` cooldown): ``last_status`` ``dead`` →
``dead`` (error ``unauthorized``); ``exhausted`` → ``exhausted`` (error ``rate_limited``)
until ``last_error_reset_at`` (epoch s, ms or ISO; ≤ 0 or garbage counts as unset), else
``last_status_at`` + 300 s for ``last_error_code`` 401, 60 s when it is the only account
not ``dead`` and the failure is not billing (402 or ``failure_reason`` ``billing``), 60 s
for ``failure_reason`` ``billing_unverified`` (not 402), else 3600 s; an ``exhausted`` row
with neither time is usable again (Hermes clears it). A login expired in the file (Codex
JWT ``exp``, Anthropic ``expires_at_ms``, Nous ``expires_at``) is ``unavailable`` with
``token_expired``; a row with no token anywhere is ``unavailable`` with ``no_credentials``.
None of these is probed; every other account is.

**Malformed rows never crash a read:** a row that is not an object is skipped; a
``priority`` that is not an integer (a string, a float, ``true``) sorts as 0 (a string of
digits is read as its number, as Hermes' ``int()`` does); a non-list ``credential_pool[P]``
or non-object ``credential_pool`` has no rows; a place in a malformed file is skipped here
(the provider's single-credential probe names the file when no account is left).

**Cost:** the accounts of one provider are probed by at most :data:`MAX_PARALLEL`
threads at once over the worker's one HTTP client (50 accounts: 8 in flight, the rest
queued, every one within the request's deadline).
"""
from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.result import SECRET_KEY_PARTS, ProbeFailure, epoch_seconds, iso_utc, number

if TYPE_CHECKING:
    from workers.credentials import HomeCredentials
    from workers.http import ProviderHttp
    from workers.providers import Provider

#: accounts of one provider probed at once (threads over the one HTTP client)
MAX_PARALLEL = 8
_threads: ThreadPoolExecutor | None = None
_threads_lock = threading.Lock()


def _account_threads() -> ThreadPoolExecutor:
    """The worker's account threads (:data:`MAX_PARALLEL` - 1), started once and kept: a
    pool made per request started its threads anew each time, ~1 ms a thread under the
    GIL -- most of a warm 5-account read's cost. Made on first use, in the worker (the
    template forks workers and must hold no thread), and published only once built."""
    global _threads
    if _threads is None:
        with _threads_lock:
            if _threads is None:
                _threads = ThreadPoolExecutor(MAX_PARALLEL - 1, thread_name_prefix="probe-accounts")
    return _threads
#: accounts a provider shows at most (the parent refuses more: probe.snapshot.MAX_ACCOUNTS)
MAX_ACCOUNTS = 256
MAX_LABEL = 64
MACHINE_WIDE = frozenset({"gh_cli", "claude_code"})
UNAUTHORIZED_COOLDOWN_S = 300.0
SOLE_COOLDOWN_S = 60.0
DEFAULT_COOLDOWN_S = 3600.0
_SECRETISH = re.compile(r"[A-Za-z0-9_-]{24,}|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.")


@dataclass
class Account:
    """One account as the worker knows it: ``token`` never leaves the worker."""

    id: str
    label: str
    source: str | None
    token: str | None
    #: the object that held the token (its pool row, ``providers.P``; ``{}`` for .env)
    fields: dict[str, Any] = field(default_factory=dict)
    #: None: to be probed; else ("exhausted"|"dead"|"unavailable", error code, message)
    verdict: tuple[str, str, str] | None = None
    retry_after: float | None = None
    #: the raw row label (sanitized once the list is complete)
    raw_label: Any = None
    #: other secrets the row holds (a Nous row's access_token beside its agent_key): a
    #: place holding one of them is this account too
    aliases: tuple[str, ...] = ()


def fingerprint(token: str) -> str:
    """Hermes' ``secret_fingerprint``: ``sha256:`` + the first 16 hex digits."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def absolute_time(value: Any) -> float | None:
    """Hermes' ``_parse_absolute_timestamp``: epoch seconds, epoch ms or ISO-8601; None for
    anything else, and for a number at or below 0."""
    if isinstance(value, bool):
        return None
    seconds = epoch_seconds(value)
    return seconds if seconds is not None and seconds > 0 and math.isfinite(seconds) else None


def _is_billing(code: float | None, reason: Any) -> bool:
    return code == 402 or reason == "billing"


def cooldown_until(row: dict[str, Any], sole: bool) -> float | None:
    """When an ``exhausted`` row may be used again (Hermes' ``_exhausted_until``); None when
    neither ``last_error_reset_at`` nor ``last_status_at`` is known."""
    reset = absolute_time(row.get("last_error_reset_at"))
    if reset is not None:
        return reset
    since = absolute_time(row.get("last_status_at"))
    if since is None:
        return None
    code, reason = number(row.get("last_error_code")), row.get("failure_reason")
    if code == 401:
        ttl = UNAUTHORIZED_COOLDOWN_S
    elif sole and not _is_billing(code, reason):
        ttl = SOLE_COOLDOWN_S
    elif reason == "billing_unverified" and code != 402:
        ttl = SOLE_COOLDOWN_S
    else:
        ttl = DEFAULT_COOLDOWN_S
    return since + ttl


def machine_wide(row: dict[str, Any]) -> bool:
    """A row Hermes seeds from the machine, not the home (``gh_cli``, ``claude_code``):
    SPEC §18 skips it everywhere a home's pool is read."""
    return _text(row.get("source"), 200) in MACHINE_WIDE


def _priority(row: dict[str, Any]) -> int:
    value = row.get("priority")
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
        return int(value)
    return 0


def _text(value: Any, limit: int = 4096) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() and len(value) <= limit else None


# -- the provider's places ---------------------------------------------------------------
def _pool_key(provider: "Provider") -> tuple[str, str] | None:
    """(pool key, token field) of the provider's ``credential_pool.P[].field`` place."""
    for place in provider.places:
        steps = place.steps
        if place.file == "auth.json" and len(steps) == 3 and steps[0].key == "credential_pool" and steps[1].each \
                and not steps[0].each and not steps[2].each:
            return steps[1].key, steps[2].key
    return None


def _token_fields(name: str, default: str) -> tuple[str, ...]:
    return ("agent_key", default) if name == "nous" else (default,)


def _usable(name: str, token: str | None) -> bool:
    return bool(token) and not (name == "copilot" and token.startswith("ghp_"))   # type: ignore[union-attr]


def _rows(auth: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    pool = auth.get("credential_pool")
    rows = pool.get(key) if isinstance(pool, dict) else None
    if not isinstance(rows, list):
        return []
    indexed = [(index, row) for index, row in enumerate(rows) if isinstance(row, dict)]
    return sorted(indexed, key=lambda item: _priority(item[1]))   # stable: file order within a priority


def root_of(home: "HomeCredentials") -> Path | None:
    """The root home of a Hermes profile home (``<root>/profiles/<name>``), else None."""
    path = Path(home.home)
    return path.parent.parent if path.parent.name == "profiles" else None


def _env_names(name: str, env: dict[str, str]) -> Iterable[str]:
    yield name
    number_ = 2
    while (env.get(f"{name}_{number_}") or "").strip():
        yield f"{name}_{number_}"
        number_ += 1


# -- enumeration -------------------------------------------------------------------------
def enumerate_accounts(provider: "Provider", home: "HomeCredentials", now: float,
                       load_root: Callable[[Path], "HomeCredentials"] | None = None, *,
                       resolve: bool = True) -> list[Account]:
    """The provider's accounts in SPEC §18's order, each with its verdict (None: probe it).
    ``resolve=False``: a ``.env`` 1Password reference stands for itself (listing a home
    must not run ``op``)."""
    name = provider.spec.name
    env = {} if home.env_error else home.env
    pool = _pool_key(provider)
    auth = {} if home.auth_error else home.auth
    rows_home: "HomeCredentials | None" = home
    rows = _rows(auth, pool[0]) if pool else []
    root = None
    if pool and not rows and load_root is not None and (root_dir := root_of(home)) is not None:
        root = load_root(root_dir)
        rows = _rows({} if root.auth_error else root.auth, pool[0])
        rows_home = root
    accounts: list[Account] = []
    for index, row in rows:
        if machine_wide(row):
            continue
        source = _text(row.get("source"), 200)
        token, unresolved = None, None
        if name == "copilot" and source and source.startswith("env:"):
            token, unresolved = _env_secret(home, source[4:], resolve)
        else:
            token = next((t for f in _token_fields(name, pool[1]) if (t := _text(row.get(f)))), None)  # type: ignore[index]
        if token is None and unresolved is None and source and source.startswith("env:"):
            token, unresolved = _env_secret(home, source[4:], resolve)
        row_id = _text(row.get("id"), MAX_LABEL)
        place = f"auth.json:credential_pool.{pool[0]}[{index}]"  # type: ignore[index]
        aliases = tuple(t for f in _token_fields(name, pool[1]) if (t := _text(row.get(f))) and t != token)  # type: ignore[index]
        account = Account(row_id if row_id and row_id.isprintable() else place, "", source, token, dict(row),
                          raw_label=row.get("label") if row.get("label") is not None else source, aliases=aliases)
        if token is not None and not _usable(name, token):
            continue
        if unresolved is not None:
            account.verdict = ("unavailable", unresolved.code, unresolved.message)
        accounts.append(account)
    # the provider's other places
    others: list[tuple[str, str, dict[str, Any]]] = []   # (id, token, fields)
    unresolvable: list[Account] = []   # .env 1Password references op could not read
    for place in provider.places:
        if pool and place.file == "auth.json" and place.steps and place.steps[0].key == "credential_pool":
            continue
        if place.file == ".env":
            for var in _env_names(place.name, env):
                value, unresolved = _env_secret(home, var, resolve)
                if value is not None:
                    others.append((f"env:{var}", value, {}))
                elif unresolved is not None:
                    unresolvable.append(Account(f"env:{var}", "", f"env:{var}", None, raw_label=f"env:{var}",
                                                verdict=("unavailable", unresolved.code, unresolved.message)))
            continue
        found = _auth_values(place, home, name) or (_auth_values(place, root, name) if root is not None else [])
        parent = ".".join(step.key for step in place.steps[:-1])
        holder = ".".join(step.key for step in place.steps[:2]) if len(place.steps) > 2 else parent
        others += [(f"auth.json:{holder or place.steps[0].key}", value, fields) for value, fields in found]
    # stripped rows: a token by fingerprint
    for account in accounts:
        if account.token is None:
            wanted = account.fields.get("secret_fingerprint")
            account.token = next((value for _, value, _ in others if isinstance(wanted, str)
                                  and fingerprint(value) == wanted), None)
    seen: dict[Any, Account] = {}
    kept: list[Account] = []
    for account in accounts + [Account(place_id, "", place_id, value, fields, raw_label=place_id)
                               for place_id, value, fields in others]:
        if account.token is not None:
            if not _usable(name, account.token):
                continue
            keys = [account.token, *account.aliases] + ([identity] if name == "openai-codex"
                                      and (identity := _codex_identity(account.token)) else [])
            if any(key in seen for key in keys):
                continue
            for key in keys:
                seen[key] = account
        kept.append(account)
    kept = (kept + unresolvable)[:MAX_ACCOUNTS]
    _unique_ids(kept)
    _label(kept, home, rows_home)
    _judge(name, provider.label, kept, now)
    return kept


def _env_secret(home: "HomeCredentials", name: str, resolve: bool = True) -> tuple[str | None, ProbeFailure | None]:
    """(``.env`` ``name`` with a 1Password reference resolved, None) -- or (None, why not):
    a reference is never an account's token (SPEC §2: it is never sent)."""
    if home.env_error:
        return None, None
    try:
        return _text(home.env_get(name, resolve=resolve)), None
    except ProbeFailure as exc:
        return None, exc


def _auth_values(place: Any, creds: "HomeCredentials | None", name: str) -> list[tuple[str, dict[str, Any]]]:
    """(token, the object holding it) at an ``auth.json`` place -- the provider's preferred
    token field of that object first (Nous: ``agent_key``); [] for a malformed file."""
    from workers import places as place_rules

    if creds is None or creds.auth_error:
        return []
    try:
        holders = place_rules.lookup(place_rules.Place("auth.json", steps=place.steps[:-1]), creds) \
            if len(place.steps) > 1 else [creds.auth]
    except ProbeFailure:
        return []
    out = []
    for holder in holders:
        if isinstance(holder, dict) and _text(holder.get(place.steps[-1].key)):
            value = next(t for f in _token_fields(name, place.steps[-1].key) if (t := _text(holder.get(f))))
            out.append((value, dict(holder)))
    return out


def _codex_identity(token: str) -> tuple[str, str, str] | None:
    from workers.providers.openai_codex import jwt_identity

    identity = jwt_identity(token)
    return None if identity is None else ("jwt", *identity)


def _unique_ids(accounts: list[Account]) -> None:
    counts: dict[str, int] = {}
    for account in accounts:
        base = account.id
        counts[base] = counts.get(base, 0) + 1
        if counts[base] > 1:
            account.id = f"{base}#{counts[base]}"


def label_secrets(rows: Iterable[dict[str, Any]], *homes: "HomeCredentials | None") -> set[str]:
    """Values a label must not quote (SPEC §18): every secret-named field of ``rows``
    (``token``, ``key``, ``secret``, ``password`` in its name) and each home's ``.env``
    values -- 8 characters or more."""
    secrets: set[str] = set()
    for creds in homes:
        if creds is not None and not creds.env_error:
            secrets |= {v.strip() for v in creds.env.values() if isinstance(v, str) and len(v.strip()) >= 8}
    for row in rows:
        secrets |= {v.strip() for k, v in row.items() if isinstance(k, str) and isinstance(v, str)
                    and len(v.strip()) >= 8 and any(part in k.lower() for part in SECRET_KEY_PARTS)}
    return secrets


def _home_secrets(accounts: list[Account], *homes: "HomeCredentials | None") -> set[str]:
    return {a.token for a in accounts if a.token and len(a.token) >= 8} | \
        label_secrets([a.fields for a in accounts], *homes)


def clean_label(raw: Any, position: int, secrets: set[str]) -> str:
    """SPEC §18's label rule; ``Account N`` for anything unusable or secret-looking."""
    fallback = f"Account {position}"
    if not isinstance(raw, str) or len(raw) > 100_000:
        return fallback
    text = " ".join("".join(ch if ch.isprintable() or ch.isspace() else " " for ch in raw).split())
    if not text or _SECRETISH.search(text) or any(secret in text for secret in secrets):
        return fallback
    return text[:MAX_LABEL].rstrip()


def _label(accounts: list[Account], home: "HomeCredentials", rows_home: "HomeCredentials | None") -> None:
    secrets = _home_secrets(accounts, home, rows_home if rows_home is not home else None)
    for position, account in enumerate(accounts, start=1):
        account.label = clean_label(account.raw_label, position, secrets)


def _expired_at(name: str, account: Account) -> float | None:
    token, fields = account.token or "", account.fields
    if name == "openai-codex":
        from workers.providers.openai_codex import jwt_expiry

        expiry = jwt_expiry(token)
    elif name == "anthropic":
        expiry = absolute_time(fields.get("expires_at_ms"))
    elif name == "nous" and token != _text(fields.get("agent_key")):
        expiry = absolute_time(fields.get("expires_at"))
    else:
        return None
    return expiry


def _expired_message(name: str, label: str, expiry: float) -> str:
    if name == "nous":
        from workers.providers.nous import REFRESH_HINT

        return f"The {label} login expired at {iso_utc(expiry)}. {REFRESH_HINT}"
    return f"The {label} login expired at {iso_utc(expiry)}. Open Hermes once to refresh it."


def _judge(name: str, label: str, accounts: list[Account], now: float) -> None:
    """Each account's verdict: dead, cooling down, expired, no token -- or None (probe it)."""
    alive = sum(1 for a in accounts if a.fields.get("last_status") != "dead")
    for account in accounts:
        if account.verdict is not None:   # decided while enumerating (a 1Password reference op could not read)
            continue
        row = account.fields
        status = row.get("last_status") if "last_status" in row else None
        if status == "dead":
            account.verdict = ("dead", "unauthorized", "Hermes marked this account dead (its credential was "
                                                       "refused); sign in again in Hermes.")
            continue
        if status == "exhausted":
            until = cooldown_until(row, sole=alive <= 1)
            if until is not None and until > now and iso_utc(until) is not None:
                code = number(row.get("last_error_code"))
                why = f" (HTTP {int(code)})" if code is not None and code.is_integer() and 100 <= code < 600 else ""
                account.retry_after = until
                account.verdict = ("exhausted", "rate_limited", f"Hermes marked this account exhausted{why}; it is "
                                                                f"not probed before {iso_utc(until)}.")
                continue
        if account.token is None:
            account.verdict = ("unavailable", "no_credentials", "This pool entry holds no token, and the home's "
                                                                ".env has none that matches it.")
            continue
        expiry = _expired_at(name, account)
        if expiry is not None and expiry <= now:
            account.verdict = ("unavailable", "token_expired", _expired_message(name, label, expiry))


def identities(provider: "Provider", home: "HomeCredentials",
               load_root: Callable[[Path], "HomeCredentials"] | None = None) -> list[str]:
    """What identifies the provider's account set (SPEC §6, §18): ``id`` + the sha256 of
    its token, per account -- no status, label, priority or time, so a Hermes bookkeeping
    write is no change while an account added, removed or re-logged (a new token) is.
    ``workers.digest`` hashes the set (order-insensitive)."""
    def who(account: Account) -> str:   # a row without Hermes' id is known by its token alone: its
        return "row" if account.id.startswith("auth.json:credential_pool.") else account.id  # index moves

    accounts = enumerate_accounts(provider, home, 0.0, load_root, resolve=False)
    if not accounts and (unreadable_root := _unreadable_root(provider, home, load_root)) is not None:
        # a profile borrowing from a root whose auth.json cannot be read: unknown, not "no
        # accounts" -- which would rotate it (and drop its last good reading) for a cut write
        from workers.result import UNREADABLE

        raise ProbeFailure(UNREADABLE, unreadable_root)
    return [f"{who(account)}={hashlib.sha256((account.token or '').encode()).hexdigest()}"
            for account in accounts]


def _unreadable_root(provider: "Provider", home: "HomeCredentials",
                     load_root: Callable[[Path], "HomeCredentials"] | None) -> str | None:
    """Why a profile with no account of its own for ``provider`` cannot read the root's
    pool it borrows (SPEC §18): the root's ``auth.json`` is unreadable -- its message,
    naming the root's file (never a path). None when that is not the case."""
    if load_root is None or _pool_key(provider) is None or (root_dir := root_of(home)) is None:
        return None
    root = load_root(root_dir)
    return f"The Hermes root's {root.auth_error}" if root.auth_error else None


# -- probing -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AccountView:
    """What ``ctx.account`` shows a provider module."""

    id: str
    token: str
    fields: dict[str, Any]


def probe_accounts(provider_name: str, home: "HomeCredentials", http: "ProviderHttp", timeout_s: float, *,
                   skip: Iterable[str] = (), only: str | None = None, now: float | None = None,
                   load_root: Callable[[Path], "HomeCredentials"] | None = None) -> dict[str, Any]:
    """The provider's snapshot dict with ``accounts``: every account to be probed is probed
    (at most :data:`MAX_PARALLEL` at once); one with a verdict, or in ``skip`` (the
    parent's per-account back-off), is listed without a request. ``only``: that account
    alone (no such account: ``accounts`` is empty). A provider whose accounts cannot be
    told (no ``CREDENTIALS``, a pool-only id, a broken plugin, no credential at all) is
    probed as before 0.4, without ``accounts``."""
    import time

    from workers.providers import load, run_probe

    now = time.time() if now is None else now
    try:
        loaded = load(provider_name)
    except KeyError:
        loaded = None
    if loaded is None or loaded.error is not None or not loaded.declares_credentials:
        return run_probe(provider_name, home, http, timeout_s)
    accounts = enumerate_accounts(loaded, home, now, load_root)
    if only is not None:
        accounts = [a for a in accounts if a.id == only]
        if not accounts:   # no request: the parent tells its caller the id is unknown
            from workers.result import failure

            return {**failure(provider_name, "no_credentials", f"This home has no {loaded.label} account with "
                                                               "that id."), "accounts": []}
    elif not accounts:
        unreadable_root = _unreadable_root(loaded, home, load_root)
        if unreadable_root is not None:   # not "no credentials": the profile borrows them
            from workers.result import UNREADABLE, failure

            return {**failure(provider_name, UNREADABLE, unreadable_root), "accounts": []}
        return run_probe(provider_name, home, http, timeout_s)
    skipped = frozenset(skip)
    todo = [a for a in accounts if a.verdict is None and a.id not in skipped]
    results: dict[str, dict[str, Any]] = {}
    claimed: set[str] = set()
    lock = threading.Lock()

    deadline = time.monotonic() + timeout_s

    def one(account: Account) -> None:
        with lock:   # each account is probed once, whichever thread gets to it first
            if account.id in claimed:
                return
            claimed.add(account.id)
        # an account queued behind MAX_PARALLEL others gets what is left of the request's
        # time, not a fresh timeout: every answer is in before the parent's deadline
        left_s = deadline - time.monotonic()
        if left_s <= 0.01:
            from workers.result import failure

            snap = failure(provider_name, "timeout", f"The {loaded.label} accounts did not all answer in time.")
        else:
            view = AccountView(account.id, account.token or "", account.fields)
            snap = run_probe(provider_name, home, http, left_s, view)
        with lock:
            results[account.id] = snap

    rest = []
    if len(todo) > 1:   # this thread probes too; the worker's account threads take the others
        pool = _account_threads()
        for account in todo[1:]:
            try:
                rest.append(pool.submit(one, account))
            except RuntimeError:   # no thread could be started ("can't start new thread"):
                break              # this thread probes what is left, below
    for account in todo:   # this thread takes every account no pool thread has claimed yet
        one(account)
    for future in rest:    # (one() returns at once for an account this thread probed)
        future.result()
    entries = [_entry(a, results.get(a.id), a.id in skipped) for a in accounts]
    answered = [results[a.id] for a in accounts if a.id in results]
    # the snapshot's own title and source: an account that answered names them (a failed
    # one's are null)
    first = next((r for r in answered if r.get("error") is None), answered[0] if answered else None)
    top = dict(first) if first is not None else {
        "provider": provider_name, "available": False, "title": None, "plan": None, "source": None,
        "windows": [], "details": [], "balances": [], "unavailable_reason": None,
        "error": dict(entries[0]["error"] or {"code": "no_credentials", "message": "No account was probed."})}
    if first is None:   # nothing probed: the provider's own title and source, when it names them
        top.update(title=_text(getattr(loaded.module, "TITLE", None), 200),
                   source=_text(getattr(loaded.module, "SOURCE", None), 200))
    top["accounts"] = entries
    return top


_PARTS = ("plan", "windows", "balances", "details", "unavailable_reason", "error")


def _entry(account: Account, result: dict[str, Any] | None, skipped: bool) -> dict[str, Any]:
    """The account as the parent sees it: no token, no fields."""
    entry: dict[str, Any] = {"id": account.id, "label": account.label, "source": account.source,
                             "retry_after": iso_utc(account.retry_after) if account.retry_after else None,
                             "probed": result is not None, "skipped": skipped}
    if result is not None:
        entry.update({part: result.get(part) for part in _PARTS})
        ok = result.get("error") is None and result.get("unavailable_reason") is None
        entry["status"] = "available" if ok else "unavailable"
        return entry
    entry.update({"plan": None, "windows": [], "balances": [], "details": [], "unavailable_reason": None})
    if account.verdict is not None:
        status, code, message = account.verdict
        error: dict[str, Any] = {"code": code, "message": message}
        entry.update(status=status, error=error)
    else:   # skipped: the parent fills in its last good reading
        entry.update(status="unavailable", error=None)
    return entry
