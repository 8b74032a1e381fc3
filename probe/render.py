"""Human-readable text for snapshots (the CLI's table)."""
from __future__ import annotations

from datetime import datetime, timezone

from probe.pace import line as pace_line
from probe.snapshot import Account, Snapshot, Window

BAR_WIDTH = 20


def countdown(reset_at: str | None, now: datetime | None = None) -> str:
    """``2026-11-23 05:00 UTC (in 3h 12m)`` — a date for the record, a countdown to act on."""
    if not reset_at:
        return ""
    try:
        when = datetime.fromisoformat(reset_at.replace("Z", "+00:00"))
    except ValueError:
        return reset_at
    now = now or datetime.now(timezone.utc)
    seconds = int((when - now).total_seconds())
    stamp = when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if seconds <= 0:
        return f"{stamp} (now)"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        left = f"{days}d {hours}h"
    elif hours:
        left = f"{hours}h {minutes}m"
    else:
        left = f"{max(minutes, 1)}m"
    return f"{stamp} (in {left})"


def bar(remaining_percent: float | None) -> str:
    if remaining_percent is None:
        return " " * (BAR_WIDTH + 2)
    filled = round(max(0.0, min(100.0, remaining_percent)) / 100 * BAR_WIDTH)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def snapshot_text(snap: Snapshot, now: datetime | None = None, label: str | None = None) -> str:
    """A card: ``provider — title (plan plan)   home H``, then its lines. A card without a
    title (an error) shows the provider's ``label`` there instead, so it says whose error
    it is. The one answer of a home-wide read whose home or list could not be had
    (``"provider": null``, SPEC §17) is its error line alone."""
    if snap.provider is None and snap.error is not None:
        return f"error {snap.error.code}: {snap.error.message}"
    heading = snap.title or label
    title = f" — {heading}" if heading else ""
    plan = f" ({snap.plan} plan)" if snap.plan else ""
    lines = [f"{snap.provider or 'home'}{title}{plan}   home {snap.home}"]
    if snap.error:
        lines.append(f"  error {snap.error.code}: {snap.error.message}")
    if snap.unavailable_reason:
        lines.append(f"  unavailable: {snap.unavailable_reason}")
    if snap.stale:
        lines.append("  (stale: showing the last good reading)")
    lines.extend(_window_lines(snap.windows, "  ", now))
    lines.extend(f"  {detail}" for detail in snap.details)
    if len(snap.accounts) > 1:
        lines.extend(_account_lines(snap, now))
    pid = f", pid {snap.probe.worker_pid}" if snap.probe.worker_pid else ""
    lines.append(f"  via {snap.probe.path} in {snap.probe.latency_ms:.1f} ms{pid}")
    return "\n".join(lines)


def _window_lines(windows: tuple[Window, ...], indent: str, now: datetime | None) -> list[str]:
    lines = []
    label_width = max((len(w.label) for w in windows), default=0)
    for window in windows:
        remaining = "   n/a" if window.remaining_percent is None else f"{window.remaining_percent:5.1f}%"
        reset = countdown(window.reset_at, now)
        lines.append(f"{indent}{window.label:<{label_width}}  {remaining} left {bar(window.remaining_percent)}"
                     + (f"  resets {reset}" if reset else ""))
        if window.pace is not None:
            lines.append(f"{indent}{'':<{label_width}}  {pace_line(window.pace, now)}")
        if window.detail:
            lines.append(f"{indent}{'':<{label_width}}  {window.detail}")
    return lines


#: marks the account a quota-aware picker should use now (``pool.next_account``)
NEXT_MARK = "→"


def _account_status(account: Account, now: datetime | None) -> str:
    """``available``, ``exhausted, retry after … (in 2h 5m)``, ``unavailable: rate_limited …``."""
    text = account.status
    if account.plan:
        text += f" ({account.plan} plan)"
    if account.retry_after:
        text += f", retry after {countdown(account.retry_after, now)}"
    if account.error is not None:
        text += f": {account.error.code}: {account.error.message}"
    elif account.unavailable_reason and not account.available:
        text += f": {account.unavailable_reason}"
    if account.stale:
        text += " (stale: its last good reading)"
    return text


def _account_lines(snap: Snapshot, now: datetime | None) -> list[str]:
    """SPEC §18: each account of a provider with several, in the snapshot's order -- its
    label, status, windows, details (a credits-only account's balance is there: the best
    windows above have nothing of it) and retry time; the next one to use marked ``→``, with its reason."""
    chosen = snap.pool.next_account if snap.pool is not None else None
    lines = ["  accounts:"]
    for account in snap.accounts:
        is_next = chosen is not None and chosen.id == account.id
        mark = f"{NEXT_MARK} " if is_next else "  "
        lines.append(f"  {mark}{account.label}  {_account_status(account, now)}")
        lines.extend(_window_lines(account.windows, "      ", now))
        lines.extend(f"      {detail}" for detail in account.details)   # a balance-only account's figures
        if is_next:
            lines.append(f"      next: {chosen.reason}")   # type: ignore[union-attr]
    if chosen is None and snap.pool is not None and snap.pool.next_reset_at:
        lines.append(f"  no account available; one frees up at {countdown(snap.pool.next_reset_at, now)}")
    return lines


SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 48


def sparkline(values: list[float], low: float | None = None, high: float | None = None,
              width: int = SPARK_WIDTH) -> str:
    """``▁▂▅█``: ``values`` (oldest first) squeezed into ``width`` buckets, each showing its
    highest value, scaled between ``low`` and ``high`` (default: the values' own range)."""
    if not values:
        return ""
    if len(values) > width:
        size = len(values) / width
        values = [max(values[int(i * size):max(int(i * size) + 1, int((i + 1) * size))]) for i in range(width)]
    low = min(values) if low is None else low
    high = max(values) if high is None else high
    span = (high - low) or 1.0
    return "".join(SPARK[max(0, min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1) + 0.5)))] for v in values)


def history_text(body: dict, days: float) -> str:
    """``probe history``: one line per window and balance with a sparkline; a provider with
    several accounts in the file (SPEC §18): those lines under each account's id."""
    if body["home"] is None:
        return f"No history for this home and provider {body['provider']} (is it configured in probe serve?)."
    which = f" account {body['account']}" if body.get("account") is not None else ""
    lines = [f"{body['provider']}{which} history of home {body['home']}, last {days:g} days"]
    accounts = body.get("accounts") or []
    if len(accounts) > 1:
        for account in accounts:
            lines.append(f"  account {account['account'] or '(before 0.4: not yet known)'}")
            lines.extend(_history_rows(account["series"], account["balances"], "    "))
        return "\n".join(lines)
    lines.extend(_history_rows(body["series"], body["balances"], "  "))
    return "\n".join(lines)


def _history_rows(series: list[dict], balances: list[dict], indent: str) -> list[str]:
    lines = []
    rows = [(s["window"], [p["used_percent"] for p in s["points"]], 0.0, 100.0, "%") for s in series]
    # money has cents; a unit that is not money (MiniMax "points") is a count, shown as sent
    rows += [(f"{b['label']} ({b['currency']})", [p["amount"] for p in b["points"]], None, None,
              "" if b["currency"].isupper() else "count") for b in balances]
    width = max((len(r[0]) for r in rows), default=0)
    for label, values, low, high, unit in rows:
        if not values:
            lines.append(f"{indent}{label:<{width}}  (no points)")
            continue
        if unit == "count":
            latest = f"{values[-1]:,.6f}".rstrip("0").rstrip(".")
        else:
            latest = f"{values[-1]:.1f}{unit}" if unit else f"{values[-1]:,.2f}"
        lines.append(f"{indent}{label:<{width}}  {sparkline(values, low, high)}  now {latest}  ({len(values)} points)")
    if not rows:
        lines.append(f"{indent}(no points yet)")
    return lines
