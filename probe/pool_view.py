"""Several accounts of one provider, seen as one (SPEC §18): the best reading per window,
the account a quota-aware picker should use next, when one frees up, and the ``pool``
summary -- pure functions of a snapshot's ``accounts``, so the service, the web UI
adapter, the CLI and the panel all read the same answer (none of them re-derives it).

:func:`assemble` is what the service applies to every snapshot that has accounts, after
per-account back-off and stale readings were merged in: with one account the snapshot is
that account's reading (as before 0.4, ``pool`` null); with several, its ``windows`` are
the best per window and its ``details`` a summary.

Rules (SPEC §18) and the choices where it is silent:

* **best** per window label (case-insensitive; named as the best account names it):
  among *available* accounts with a ``remaining_percent`` for that window, the most
  remaining; a tie goes to the earlier account. Windows appear in the order they first
  appear over the accounts. Its ``detail`` on the snapshot is "Best of N accounts", N =
  the accounts compared for that window ("Best of 1 account" when only one has it).
* **next_account**: among available accounts, the one whose tightest window (least
  ``remaining_percent``) has the most room, a tie to the earlier; reason "most room in its
  tightest window: Weekly 62% left". When no available account has a window to compare
  (balance-only providers), the first available one, reason "first available account (no
  quota windows to compare)". None when no account is available.
* **next_reset_at** (only when no account is available): the earliest ``retry_after``, or
  ``reset_at`` of a window at 100 % used, over every account; None when none is known.
* **counts**: ``available`` / ``exhausted`` / ``dead`` by status; ``queried`` accounts
  probed in this read that answered without an error, ``failed`` those probed in this read
  with an error (a stale reading shown for one counts as ``available`` *and* ``failed``).
* the snapshot with several accounts: ``available`` when any account is; ``error`` null
  while one is available, else the first probed account's error (the first account's
  when none was probed, e.g. all are cooling down); ``plan`` the accounts' common plan,
  else null (``pool.plans`` lists them); ``balances`` empty (they belong to an account);
  ``stale`` when no available account has a fresh reading but one has a stale one;
  ``unavailable_reason`` the first account's when none is available and none failed.
"""
from __future__ import annotations

import dataclasses
from probe.pace import parse_instant
from probe.snapshot import Account, BestWindow, NextAccount, PoolView, Snapshot, Window

NO_WINDOWS_REASON = "first available account (no quota windows to compare)"


def _pct(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def best_windows(accounts: tuple[Account, ...] | list[Account]) -> tuple[tuple[BestWindow, int], ...]:
    """(best, accounts compared) per window label, in first-seen order."""
    order: list[str] = []
    best: dict[str, tuple[Account, Window]] = {}
    compared: dict[str, int] = {}
    for account in accounts:
        for window in account.windows:
            key = window.label.casefold()
            if key not in compared:
                order.append(key)
                compared[key] = 0
            if not account.available or window.remaining_percent is None:
                continue
            compared[key] += 1
            held = best.get(key)
            if held is None or window.remaining_percent > (held[1].remaining_percent or 0.0):
                best[key] = (account, window)
    return tuple((BestWindow(window.label, account.id, account.label, window.remaining_percent, window.used_percent,
                             window.reset_at), compared[key])
                 for key in order if key in best for account, window in (best[key],))


def _tightest(account: Account) -> Window | None:
    windows = [w for w in account.windows if w.remaining_percent is not None]
    return min(windows, key=lambda w: w.remaining_percent) if windows else None   # type: ignore[arg-type,return-value]


def next_account(accounts: tuple[Account, ...] | list[Account]) -> NextAccount | None:
    """The account a quota-aware picker should use now (see the module docstring)."""
    available = [a for a in accounts if a.available]
    if not available:
        return None
    chosen: tuple[Account, Window] | None = None
    for account in available:
        tight = _tightest(account)
        if tight is not None and (chosen is None or tight.remaining_percent > chosen[1].remaining_percent):  # type: ignore[operator]
            chosen = (account, tight)
    if chosen is None:
        return NextAccount(available[0].id, available[0].label, NO_WINDOWS_REASON)
    account, window = chosen
    return NextAccount(account.id, account.label,
                       f"most room in its tightest window: {window.label} {_pct(window.remaining_percent)}% left")  # type: ignore[arg-type]


def next_reset_at(accounts: tuple[Account, ...] | list[Account]) -> str | None:
    """When no account is available: the earliest moment one frees up, else None."""
    if any(a.available for a in accounts):
        return None
    moments = [a.retry_after for a in accounts if a.retry_after]
    moments += [w.reset_at for a in accounts for w in a.windows
                if w.reset_at and w.used_percent is not None and w.used_percent >= 100]
    known = [(when, iso) for iso in moments if (when := parse_instant(iso)) is not None]
    return min(known)[1] if known else None


def summarize(accounts: tuple[Account, ...] | list[Account]) -> PoolView:
    """SPEC §18 ``pool`` for a provider's accounts."""
    plans: list[str] = []
    for account in accounts:
        if account.plan and account.plan not in plans:
            plans.append(account.plan)
    return PoolView(
        total=len(accounts),
        available=sum(a.available for a in accounts),
        exhausted=sum(a.status == "exhausted" for a in accounts),
        dead=sum(a.status == "dead" for a in accounts),
        failed=sum(a.probed and a.error is not None for a in accounts),
        queried=sum(a.probed and a.error is None for a in accounts),
        plans=tuple(plans), next_reset_at=next_reset_at(accounts),
        best=tuple(best for best, _ in best_windows(accounts)), next_account=next_account(accounts))


def summary_lines(pool: PoolView) -> tuple[str, ...]:
    """``2/3 accounts available``, then ``1 exhausted``, ``1 dead``, ``1 failed``, ``1
    unavailable`` (the non-zero ones; *unavailable*: not probed, e.g. a pool row with no
    token, a 1Password reference that cannot be read -- the lines add up to the total). No
    label: details may reach places labels must not."""
    lines = [f"{pool.available}/{pool.total} accounts available"]
    unprobed = pool.total - pool.available - pool.exhausted - pool.dead - pool.failed
    lines += [f"{count} {word}" for count, word in ((pool.exhausted, "exhausted"), (pool.dead, "dead"),
                                                     (pool.failed, "failed"), (unprobed, "unavailable")) if count]
    return tuple(lines)


def assemble(snap: Snapshot) -> Snapshot:
    """The snapshot's own fields from its accounts (see the module docstring); a snapshot
    without accounts is returned as it is."""
    accounts = snap.accounts
    if not accounts:
        return snap
    if len(accounts) == 1:
        one = accounts[0]
        return dataclasses.replace(snap, available=one.available, plan=one.plan, windows=one.windows,
                                   balances=one.balances, details=one.details,
                                   unavailable_reason=one.unavailable_reason, error=one.error, stale=one.stale,
                                   fetched_at=one.fetched_at or snap.fetched_at, pool=None)
    pool = summarize(accounts)
    by_label = {a.id: a for a in accounts}
    windows = []
    for best, compared in best_windows(accounts):
        source = next(w for w in by_label[best.account_id].windows if w.label.casefold() == best.window.casefold())
        noun = "account" if compared == 1 else "accounts"
        windows.append(dataclasses.replace(source, detail=f"Best of {compared} {noun}"))
    any_available = pool.available > 0
    probed = [a for a in accounts if a.probed and a.error is not None]
    error = None if any_available else (probed[0].error if probed else accounts[0].error)
    unavailable = None if any_available or error is not None else accounts[0].unavailable_reason
    fresh = any(a.available and not a.stale for a in accounts)
    return dataclasses.replace(
        snap, available=any_available, plan=pool.plans[0] if len(pool.plans) == 1 else None,
        windows=tuple(windows), balances=(), details=summary_lines(pool), unavailable_reason=unavailable,
        error=error, stale=not fresh and any(a.available and a.stale for a in accounts), pool=pool)


def only(snap: Snapshot, account_id: str) -> Snapshot:
    """The snapshot of one of its accounts, as for a provider with that account alone."""
    return assemble(dataclasses.replace(snap, accounts=tuple(a for a in snap.accounts if a.id == account_id)))
