"""A provider's credential digest: what identifies its credentials in a home, as one hash.

Why: Hermes rewrites ``auth.json`` on ordinary use (``request_count``, ``last_status_at``,
``priority`` under ``round_robin``, refreshed timestamps), so a change of the files' stat
data says only that *something* was written. The parent asks a worker of the home for
each provider's digest when the stat changed (``{"op": "providers"}``, ``workers.listing``)
and rotates only a provider whose digest changed (SPEC §6). The digest therefore holds
what tells one credential from another and nothing Hermes keeps books with:

* a registered provider (``name`` given): sha256 over the sorted *set* of its accounts'
  identities (SPEC §18, ``workers.accounts.identities``: each account's id and the sha256
  of its token -- every pool row, numbered ``.env`` keys, logins; no status, label,
  priority or time). Order-insensitive, so Hermes re-sorting a pool is no change; an
  account added, removed or re-logged (a new token) is one. Without ``name``, the set of
  sha256 hashes of every credential value its ``CREDENTIALS`` places hold
  (``workers.places.credentials_at``).
* a plugin that declares no ``CREDENTIALS`` (it reads what it likes through ``ctx.env`` /
  ``ctx.auth``): every ``.env`` value, and every string in ``auth.json`` under a key naming
  a secret (``token``, ``key``, ``secret``, ``password`` -- the same rule the pool-only reader
  uses to keep secrets out of labels). Counters, statuses and timestamps stay out.
* a pool-only id (``credential_pool`` records without an adapter, given as its ``str``
  id): the set of its rows' identities -- a row's ``id`` (Hermes' own, stable once
  written), else its token, else its label. Such a provider's snapshot is read from the
  rows' labels and statuses and never uses a token, so a refreshed token in a known row is
  no change, while a row added or removed is one. Statuses are read afresh at its next probe.
* a plugin that cannot be used: the digest of nothing (it answers ``plugin_error`` whatever
  the files hold).

A ``.env`` value that is a 1Password reference (``op://…``) enters as the reference: a
digest never runs ``op`` (a home's listing must not), so a reference pointed elsewhere is a
change, a secret replaced inside 1Password is not (``probe rotate`` says so).

``None`` means "unknown": a file one of the provider's places reads could not be read
(malformed, unreadable, too large). The parent then rotates nothing for it, so its last good
reading survives and a restored file with the same token is no change.

Only hashes leave this module; the parent never sees a value.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from workers.result import SECRET_KEY_PARTS, ProbeFailure

if TYPE_CHECKING:
    from workers.credentials import HomeCredentials

#: how deep the undeclared-plugin walk goes into ``auth.json``
MAX_DEPTH = 16


def provider_digest(module: Any, home: "HomeCredentials", name: str | None = None) -> str | None:
    """The digest of ``module``'s credentials in ``home`` (see the module docstring):
    ``module`` is a provider module (its ``CREDENTIALS``), a pool-only id (``str``), or None
    for a provider that cannot be used. None when a file it reads is unreadable. ``name``:
    the registered provider ``module`` implements -- its digest is then that of its account
    set (SPEC §18, ``workers.accounts.identities``: each account's id and token hash), so a
    pool row added, removed or re-logged rotates it and a bookkeeping write does not."""
    try:
        if isinstance(module, str):
            return _digest(_pool_rows(module, home))
        if module is None:
            return _digest(())
        declared = getattr(module, "CREDENTIALS", None)
        if declared is None:
            return _digest(_undeclared(home))
        from workers.places import credentials_at, parse_all

        values = [found.value for place in parse_all(declared)    # raises for an unreadable file
                  for found in credentials_at(place, home, resolve=False)]
        if name is None:
            return _digest(values)
        from workers.accounts import identities
        from workers.credentials import load_home
        from workers.providers import load

        return _digest(identities(load(name), home, load_home))
    except ProbeFailure:
        return None


def _digest(parts: Iterable[str]) -> str:
    hashes = sorted({hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest() for part in parts})
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def _pool_rows(provider: str, home: "HomeCredentials") -> list[str]:
    rows = home.auth_list("credential_pool", provider)
    identities = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        for field, tag in (("id", "id"), ("access_token", "token"), ("agent_key", "token"), ("label", "label")):
            value = row.get(field)
            if isinstance(value, str) and value.strip():
                identities.append(f"{tag}:{value.strip()}")
                break
        else:
            identities.append("row")
    return identities


def _undeclared(home: "HomeCredentials") -> list[str]:
    if home.env_error or home.auth_error:
        raise ProbeFailure("no_credentials", "unreadable")
    values = [f"env:{name}={value}" for name, value in home.env.items()]
    _secrets(home.auth, (), 0, values)
    return values


def _secrets(value: Any, trail: tuple[str, ...], depth: int, out: list[str]) -> None:
    """Every string under a secret-naming key, with its path (list indexes left out: a
    re-sorted pool is the same set)."""
    if depth > MAX_DEPTH:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            if isinstance(key, str):
                _secrets(child, (*trail, key), depth + 1, out)
    elif isinstance(value, list):
        for child in value:
            _secrets(child, trail, depth + 1, out)
    elif isinstance(value, str) and value.strip() and trail \
            and any(part in trail[-1].lower() for part in SECRET_KEY_PARTS):
        out.append("auth:" + ".".join(trail) + "=" + value.strip())
