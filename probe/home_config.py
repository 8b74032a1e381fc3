"""Two facts of a home that only hermes-webui's answers need (SPEC §19), asked of one of
the home's workers like every home file -- the parent stats files, never opens them:

* the active provider, Hermes' ``config.yaml`` ``model.provider`` (``{"op":
  "active_provider"}``, ``workers.hermes_config``), kept with the file's stat data so it
  is asked again only when ``config.yaml`` changed. The racy rule of ``probe.home_list``
  applies: an answer read within one timestamp tick of the file's last change is used for
  that call and asked again next time;
* a pool-only id's accounts (``{"op": "pool_accounts"}``, ``workers.pool_accounts``), not
  kept: their cooldowns run on the clock, and a warm worker answers in a round trip.

What a reply may hold is checked here; anything else is a confused worker (``Unanswered``
with ``bad_response``), never an answer a caller sees.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probe.snapshot import MAX_ACCOUNT_LABEL, MAX_ACCOUNTS, Account
from workers.credentials import stat_is_settled
from workers.hermes_config import CONFIG_NAME, PROVIDER_ID

POOL_STATUSES = ("available", "exhausted", "dead")


class Unanswered(Exception):
    """No worker of the home answered the question; ``code`` is why (``home_not_found``,
    ``timeout``, ``worker_crashed``, ``saturated``, ``bad_response``; ``credentials_unreadable``
    when the worker could not read the file the answer is in)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def config_stat(home: Path) -> tuple:
    """(inode, size, mtime_ns, ctime_ns) of the home's ``config.yaml`` (None when missing),
    as a one-part tuple in ``credential_stat``'s form."""
    try:
        st = os.stat(home / CONFIG_NAME)
    except OSError:
        return (None,)
    return ((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),)


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    error = reply.get("error")
    if not reply.get("ok") and isinstance(error, dict) and error.get("code") == "home_not_found":
        raise Unanswered("home_not_found", "The home directory does not exist.")
    if not reply.get("ok") and isinstance(error, dict) and error.get("code") == "credentials_unreadable" \
            and isinstance(error.get("message"), str):   # the worker names the file, never a path
        raise Unanswered("credentials_unreadable", error["message"][:300])
    if not reply.get("ok"):
        raise Unanswered("bad_response", "The worker sent a malformed answer.")
    return reply


def parse_active_provider(reply: dict[str, Any]) -> str | None:
    """A worker's ``active_provider`` reply."""
    provider = _checked(reply).get("provider")
    if not (provider is None or isinstance(provider, str) and PROVIDER_ID.fullmatch(provider)):
        raise Unanswered("bad_response", "The worker sent a malformed answer.")
    return provider


def _short(value: Any, limit: int, optional: bool = False) -> bool:
    return (optional and value is None) or (isinstance(value, str) and 0 < len(value) <= limit)


def parse_pool_accounts(reply: dict[str, Any]) -> tuple[Account, ...] | None:
    """A worker's ``pool_accounts`` reply as accounts (not probed: no reading, no
    ``fetched_at``); None when the pool has no row for the id."""
    rows = _checked(reply).get("accounts")
    if rows is None:
        return None
    if not isinstance(rows, list) or len(rows) > MAX_ACCOUNTS:
        raise Unanswered("bad_response", "The worker sent a malformed answer.")
    accounts = []
    for row in rows:
        if not (isinstance(row, dict) and _short(row.get("id"), 256) and _short(row.get("label"), MAX_ACCOUNT_LABEL)
                and _short(row.get("source"), 200, True) and row.get("status") in POOL_STATUSES
                and _short(row.get("retry_after"), 40, True)):
            raise Unanswered("bad_response", "The worker sent a malformed answer.")
        accounts.append(Account(id=row["id"], label=row["label"], source=row["source"], status=row["status"],
                                retry_after=row["retry_after"]))
    return tuple(accounts)


class ActiveProviders:
    """The cached answer per home (resolved path), keyed by ``config.yaml``'s stat data."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple, bool, str | None]] = {}

    def get(self, home: Path, ask: Callable[[], str | None]) -> str | None:
        """The home's active provider: the cached one while ``config.yaml`` is unchanged and
        settled, else ``ask()``'s answer, stored. Exceptions of ``ask`` propagate."""
        now_ns = time.time_ns()   # before the stat: see the module docstring
        stat = config_stat(home)
        with self._lock:
            entry = self._entries.get(str(home))
        if entry is not None and entry[0] == stat and entry[1]:
            return entry[2]
        provider = ask()
        with self._lock:
            self._entries[str(home)] = (stat, stat[0] is None or stat_is_settled(stat, now_ns), provider)
        return provider
