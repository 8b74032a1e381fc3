"""Hermes' own records for a pooled provider that has no adapter (PROVIDERS.md, last
section): ``auth.json`` ``credential_pool[<provider id>]`` already says, per credential,
whether it works, so ``xai``, ``gemini``, ``openai-api``… get a snapshot without any
request. This is not a provider module (no ``probe(ctx)``): the worker lists the pool ids
that no built-in or plugin claims (:func:`pool_only_ids`, for SPEC §17's home list) and
answers a probe of one of them with :func:`read_records` (``pool_result`` on the home's
file) -- never an HTTP request.

An entry is shown by its ``label`` only, never a token; a machine-wide row (``gh_cli``,
``claude_code``: ``workers.accounts.machine_wide``) is not the home's and is skipped, as
SPEC §18 skips it for every provider. ``exhausted`` lasts until
``last_error_reset_at``, else ``last_status_at`` + Hermes' cooldown (300 s after a 401, 60 s
for the only entry not ``dead`` unless the failure is billing, else 3600 s: the one rule,
``workers.accounts.cooldown_until``); ``dead`` is ``revoked``. Available while one entry is usable; when none is,
``rate_limited`` naming the earliest recovery (with ``retry_after_s`` so the parent backs
off until then), or ``unauthorized`` when every entry is dead.

Choices where PROVIDERS.md is silent:

* times read ``14:05 UTC`` when they fall on the current UTC day, else
  ``2026-08-05 14:05 UTC``; they are rounded *up* to the minute, so "until" never names a
  minute in which the entry is still exhausted;
* an ``exhausted`` entry whose end has passed is usable again: ``"work key: ok since
  13:05 UTC"``;
* an entry without ``last_status`` is ``ok`` (never used yet); an unknown status is shown
  as written (at most 40 characters) and counts as usable — Hermes would still try it;
* the HTTP status is added as ``(429)`` only when ``last_error_code`` is a number, and
  only to exhausted lines;
* an entry without a usable ``label`` — or whose label contains one of the entry's own
  token/key/secret values — is shown as ``entry N`` (1-based, in file order);
* an exhausted entry with no known end is unusable with no recovery time: when every
  entry is like that (or dead), the ``rate_limited`` message says there is no known
  recovery time and carries no ``retry_after_s``;
* a pool that holds no entry object at all is ``no_credentials``;
* title "Hermes credential pool", no plan, no windows.
"""
from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from workers.result import SECRET_KEY_PARTS, UNREADABLE, ProbeFailure, iso_utc, number, provider_text, result

if TYPE_CHECKING:
    from workers.credentials import HomeCredentials

SOURCE = "credential_pool"
TITLE = "Hermes credential pool"


@dataclass(frozen=True)
class EntryState:
    """One pooled credential as Hermes recorded it, evaluated at ``now``."""

    line: str
    usable: bool
    dead: bool = False
    until: float | None = None    # exhausted: when it recovers (None = unknown)


def clock(seconds: float, now: float) -> str:
    """``14:05 UTC`` on the current UTC day, else ``2026-08-05 14:05 UTC``; rounded up to
    the minute."""
    when = datetime.fromtimestamp(math.ceil(seconds / 60) * 60, tz=timezone.utc)
    today = datetime.fromtimestamp(now, tz=timezone.utc).date()
    return f"{when:%H:%M} UTC" if when.date() == today else f"{when.date().isoformat()} {when:%H:%M} UTC"


def label_of(entry: dict[str, Any], index: int) -> str:
    """The entry's ``label``, or ``entry N`` when it has none or it quotes a secret."""
    label = provider_text(entry.get("label"), 64)
    if label is None:
        return f"entry {index + 1}"
    for key, value in entry.items():
        if (isinstance(key, str) and key != "label" and any(part in key.lower() for part in SECRET_KEY_PARTS)
                and isinstance(value, str) and len(value.strip()) >= 4 and value.strip() in label):
            return f"entry {index + 1}"
    return label


def exhausted_until(entry: dict[str, Any], sole: bool = False) -> float | None:
    """``last_error_reset_at``, else ``last_status_at`` + Hermes' cooldown
    (``workers.accounts.cooldown_until``: 300 s after a 401, 60 s for the only entry not
    dead unless the failure is billing, else 3600 s); None when neither time is known."""
    from workers.accounts import cooldown_until

    reset = cooldown_until(entry, sole)
    # an instant no calendar can show (year 10000+) is as good as unknown
    return reset if reset is not None and iso_utc(reset + 60) is not None else None


def entry_state(entry: dict[str, Any], index: int, now: float, sole: bool = False) -> EntryState:
    label = label_of(entry, index)
    status = entry.get("last_status")
    if status == "dead":
        return EntryState(f"{label}: revoked", usable=False, dead=True)
    if status == "exhausted":
        code = number(entry.get("last_error_code"))
        suffix = f" ({int(code)})" if code is not None and code.is_integer() else ""
        until = exhausted_until(entry, sole)
        if until is None:
            return EntryState(f"{label}: exhausted{suffix}", usable=False)
        if until > now:
            return EntryState(f"{label}: exhausted until {clock(until, now)}{suffix}", usable=False, until=until)
        return EntryState(f"{label}: ok since {clock(until, now)}", usable=True)
    shown = provider_text(status, 40) if status is not None else None
    return EntryState(f"{label}: {shown or 'ok'}", usable=True)


def pool_result(provider: str, entries: Any, now: float) -> dict[str, Any]:
    """The §16 result (``source="credential_pool"``, one detail line per entry) when an
    entry is usable; raises ProbeFailure rate_limited (earliest recovery, ``retry_after_s``)
    or unauthorized (all dead) when none is, no_credentials when there is no entry."""
    name = provider_text(provider, 64) or "this provider's"
    from workers.accounts import machine_wide

    rows = [(index, entry) for index, entry in enumerate(entries if isinstance(entries, list) else [])
            if isinstance(entry, dict) and not machine_wide(entry)]
    sole = sum(1 for _, entry in rows if entry.get("last_status") != "dead") == 1
    states = [entry_state(entry, index, now, sole) for index, entry in rows]
    if not states:
        raise ProbeFailure("no_credentials", f"No {name} entry in auth.json's credential_pool.")
    if any(state.usable for state in states):
        return result(title=TITLE, source=SOURCE, details=[state.line for state in states])
    if all(state.dead for state in states):
        raise ProbeFailure("unauthorized", f"Every {name} credential in Hermes' pool is revoked; sign in again in "
                                           "Hermes.")
    what = "exhausted" if not any(state.dead for state in states) else "exhausted or revoked"
    ends = [state.until for state in states if state.until is not None]
    if not ends:
        raise ProbeFailure("rate_limited", f"Every {name} credential in Hermes' pool is {what}, with no known "
                                           "recovery time.")
    first = min(ends)
    raise ProbeFailure("rate_limited", f"Every {name} credential in Hermes' pool is {what}; the first recovers at "
                                       f"{clock(first, now)}.", retry_after_s=float(math.ceil(first - now)))


# -- the home-wide reader's two questions (SPEC §17) ------------------------------------
#: a home lists at most this many pool-only ids (the first by name): auth.json is the
#: user's file, and a 1 MiB one must not turn one home-wide read into thousands of cards
MAX_POOL_ONLY = 64
#: SPEC §4 codes :func:`pool_result` may raise
_CODES = frozenset({"no_credentials", "unauthorized", "rate_limited"})


def _pool(home: "HomeCredentials") -> dict[str, Any]:
    """``auth.json``'s ``credential_pool`` object, ``{}`` when the file is absent, cannot be
    read or holds no such object (:func:`pool_readable` tells those apart)."""
    if home.auth_error:
        return {}
    pool = home.auth.get("credential_pool")
    return pool if isinstance(pool, dict) else {}


def pool_readable(home: "HomeCredentials") -> bool:
    """False when the pool-only ids cannot be known: ``auth.json`` could not be read, or
    its ``credential_pool`` is there with another type than an object."""
    if home.auth_error:
        return False
    pool = home.auth.get("credential_pool")
    return pool is None or isinstance(pool, dict)


def unreadable(home: "HomeCredentials") -> str | None:
    """Why the home's pool cannot be read (the file's own error, or a ``credential_pool``
    that is not an object), None when it can: what ``credentials_unreadable`` says."""
    if pool_readable(home):
        return None
    return home.auth_error or "auth.json is malformed: credential_pool should be an object."


def pool_only_ids(home: "HomeCredentials", registered: Collection[str]) -> list[str]:
    """The ``credential_pool`` keys that no registered provider (built-in or plugin) claims,
    by name: only valid provider names (SPEC §16's ``[a-z][a-z0-9-]{1,31}``; anything else
    is ignored -- it could not be addressed, and may be any text), and only keys holding at
    least one entry object that is not machine-wide (an empty list is no credential). At most :data:`MAX_POOL_ONLY`."""
    from workers.accounts import machine_wide
    from workers.plugins import NAME_PATTERN

    found = sorted(key for key, entries in _pool(home).items()
                   if isinstance(key, str) and NAME_PATTERN.fullmatch(key) and key not in registered
                   and isinstance(entries, list)
                   and any(isinstance(entry, dict) and not machine_wide(entry) for entry in entries))
    return found[:MAX_POOL_ONLY]


def read_records(provider: str, home: "HomeCredentials", now: float) -> dict[str, Any] | None:
    """The worker's snapshot dict for a pool-only ``provider``, read from Hermes' records
    without any request; None when ``credential_pool`` has no such key (the caller answers
    ``unknown_provider``). A failure keeps this source and title, so a card still says
    where its answer came from. More than 50 entries (the snapshot's cap on detail lines)
    are shown as the first 49 and one ``and N more entries`` line."""
    from workers.plugins import NAME_PATTERN
    from workers.result import failure, snapshot

    if not NAME_PATTERN.fullmatch(provider):
        return None
    why = unreadable(home)
    if why is not None:
        # the parent lists a pool-only id it saw before the file broke: it stays, with why
        return failure(provider, UNREADABLE, why, title=TITLE, source=SOURCE)
    pool = _pool(home)
    if provider not in pool:
        return None

    try:
        records = pool_result(provider, pool[provider], now)
    except ProbeFailure as exc:
        code = exc.code if exc.code in _CODES else "bad_response"
        return failure(provider, code, exc.message, title=TITLE, source=SOURCE, retry_after_s=exc.retry_after_s)
    details = records["details"]
    if len(details) > 50:
        details = details[:49] + [f"and {len(details) - 49} more entries"]
    return snapshot(provider, title=TITLE, source=SOURCE, details=details)
