"""Per-account state the service keeps between reads of a provider with accounts (SPEC §18):
each account's last good reading and which accounts the last read asked the worker for,
so that

* a 429 for one account backs off **that account only** (``probe.backoff`` keyed by
  ``(home, provider, account id)``): the next request tells the worker to
  skip it, and its last good reading is shown with ``stale: true`` and the back-off error
  while the others are probed;
* a transient failure of one account (timeout, 5xx, 429) shows its last good reading,
  stale, with the error -- the single-provider rule of SPEC §8, per account;
* when the last read asked the worker for every account and each is backing off now, no
  request is made at all (the answer comes from here, path ``cache``); otherwise the worker
  is asked, with the skip list, since an account cooling down in Hermes' records then may
  be due now.

Entries are keyed by ``(home, provider)`` and carry the
home's generation: a rotation (a credential change rotates the provider, SPEC §6)
forgets them, so no pre-rotation reading is ever shown for a new account set.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection
from dataclasses import dataclass, field

from probe import pool_view
from probe.backoff import Backoff
from probe.snapshot import TRANSIENT_ERRORS, Account, ProbeError, Snapshot

BACKING_OFF = "The provider is rate-limiting this account; it is not probed until its back-off ends."


def account_key(key: tuple, account_id: str) -> tuple[str, str, str]:
    """An account's back-off key: (home, provider, account id). Like the provider's own
    back-off (keyed by (home, provider)), it outlives the credential part of the cache key
    and goes with a rotation of the provider."""
    return (key[0], key[1], account_id)


@dataclass
class _Entry:
    generation: int
    #: account id -> its last reading without an error
    good: dict[str, Account] = field(default_factory=dict)
    #: the ids the worker probed or skipped last time (the ones it would probe next)
    asked: tuple[str, ...] = ()
    last: Snapshot | None = None
    #: (title, source) of the last read with a fresh account: what a stale answer shows
    #: (a failed probe's own are null)
    top: tuple[str | None, str | None] | None = None


class AccountReadings:
    """Thread-safe; one entry per (home, provider)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}

    def _entry(self, key: tuple, generation: int) -> _Entry | None:
        # (home, provider) and the generation, not the whole cache key: the key's credential
        # part changes from the files' stat to their digest when a home is first listed
        # (probe.digests) with no credential changed -- a change rotates the provider,
        # which bumps the generation and forgets the entry.
        entry = self._entries.get(key[:2])
        return entry if entry is not None and entry.generation == generation else None

    def skip(self, backoff: Backoff, key: tuple, generation: int) -> tuple[tuple[str, ...], bool]:
        """(accounts to skip, whether no request is needed at all). The latter only when
        the last read asked for every account and each is backing off now: an account the
        worker did not ask about then (cooling down in Hermes' records, dead, expired) may
        be due by now, and only the worker can tell -- it is asked, with the skip list."""
        with self._lock:
            entry = self._entry(key, generation)
            asked = entry.asked if entry is not None else ()
            every = entry is not None and entry.last is not None and len(asked) == len(entry.last.accounts)
        skipped = tuple(account_id for account_id in asked if backoff.blocked(account_key(key, account_id)) is not None)
        return skipped, every and bool(asked) and len(skipped) == len(asked)

    def settle(self, snap: Snapshot, key: tuple, generation: int, backoff: Backoff, skipped: Collection[str] = (),
               *, remember: bool = True) -> Snapshot:
        """A worker's per-account answer made final: per-account back-off learned, skipped
        and transiently failed accounts shown by their last good reading (stale), the
        snapshot's own fields assembled (``probe.pool_view``)."""
        with self._lock:
            entry = self._entry(key, generation)
            good = dict(entry.good) if entry is not None else {}
            top = entry.top if entry is not None else None
        accounts = []
        for account in snap.accounts:
            key_of_account = account_key(key, account.id)
            if account.id in skipped:
                blocked = backoff.blocked(key_of_account)
                account = dataclasses.replace(account, status="unavailable", probed=False, error=ProbeError(
                    "rate_limited", blocked.message if blocked is not None else BACKING_OFF))
            elif account.probed:
                if account.error is None:
                    backoff.succeeded(key_of_account)
                elif account.error.code == "rate_limited":
                    backoff.rate_limited(key_of_account, account.error.retry_after_s)
            if (account.probed or account.id in skipped) and account.error is not None \
                    and account.error.code in TRANSIENT_ERRORS and account.id in good:
                account = dataclasses.replace(good[account.id], stale=True, error=account.error, probed=account.probed)
            accounts.append(account)
        final = pool_view.assemble(dataclasses.replace(snap, accounts=tuple(accounts)))
        if final.stale and top is not None:   # it looks like the last good reading (SPEC §8)
            final = dataclasses.replace(final, title=top[0], source=top[1])
        if remember:
            self._remember(final, key, generation, skipped)
        return final

    def _remember(self, snap: Snapshot, key: tuple, generation: int, skipped: Collection[str]) -> None:
        asked = tuple(a.id for a in snap.accounts if a.probed or a.id in skipped)
        with self._lock:
            entry = self._entry(key, generation)
            if entry is None:
                entry = self._entries[key[:2]] = _Entry(generation)
            ids = {a.id for a in snap.accounts}
            entry.good = {i: a for i, a in entry.good.items() if i in ids}
            entry.good.update({a.id: a for a in snap.accounts if a.error is None and a.available and a.fetched_at})
            entry.asked, entry.last = asked, snap
            if any(a.error is None and a.available and not a.stale for a in snap.accounts):
                entry.top = (snap.title, snap.source)

    def backed_off(self, key: tuple, generation: int, backoff: Backoff) -> Snapshot | None:
        """The answer when every account the worker would probe is backing off: the last
        read's accounts with those shown stale (or failed) -- no request. None when
        there is no such last read."""
        with self._lock:
            entry = self._entry(key, generation)
            last, asked = (entry.last, entry.asked) if entry is not None else (None, ())
        if last is None:
            return None
        return self.settle(last, key, generation, backoff, skipped=asked, remember=False)

    def forget(self, home: str | None, provider: str | None) -> None:
        with self._lock:
            for index in [k for k in self._entries if (home is None or k[0] == home)
                          and (provider is None or k[1] == provider)]:
                del self._entries[index]
