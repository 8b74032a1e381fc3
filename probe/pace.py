"""Pace of a quota window (SPEC §13): is the account burning its quota faster than the
window allows, and at this rate, when does it run out?

Pure arithmetic on one window's numbers and one instant, so it can be tested table by
table and evaluated anywhere (the service stamps it on a snapshot at its ``fetched_at``;
the CLI and the panel only format it).

Formula, at instant ``now``::

    elapsed  = window_s - (reset_at - now)
    expected = elapsed / window_s * 100                      # where usage "should" be
    delta    = used - expected                               # > 0 deficit, < 0 reserve
    rate     = used / elapsed                                # average since the window began
    runs out = now + (100 - used) / rate                     # if that is before reset_at,
                                                             # and not on track

No pace (None) when the window's length or reset is unknown, when the reset is not in
``(now, now + window_s]`` (past, or further away than one window: the numbers describe
some other window), when less than 3 % of the window has elapsed (too early to tell a
rate from noise), or when the quota is already used up.

An "on pace" window (|delta| < 2) never has a run-out: at its average rate it can reach
100 % a little before the reset, and "On pace · Runs out in 3h" reads as a contradiction
(issue #25). At the average rate only a window in deficit can run out; the recent basis
(SPEC §14) may also see one in reserve that burns fast now -- but never one on pace.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

#: |delta| below this many percentage points reads "on track"
ON_TRACK_BAND = 2.0
#: below this share of the window elapsed there is no pace
MIN_ELAPSED_SHARE = 0.03


@dataclass(frozen=True)
class Pace:
    expected_used_percent: float
    delta_percent: float
    #: "deficit" | "reserve" | "on_track"
    status: str
    #: ISO UTC instant the quota runs out at the average rate, when that is before the reset
    runs_out_at: str | None
    lasts_until_reset: bool
    #: "average" (the rate since the window began) or "recent" (the burn rate of recent
    #: history, SPEC §14)
    basis: str = "average"


def parse_instant(value: str | None) -> datetime | None:
    """An ISO-8601 instant (``Z`` or an offset) as an aware datetime; None if unusable."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def compute(used_percent: float | None, reset_at: str | None, window_s: float | None,
            now: datetime) -> Pace | None:
    """The window's pace at ``now`` (an aware datetime), or None (see the module docstring)."""
    reset = parse_instant(reset_at)
    if used_percent is None or reset is None or not window_s or window_s <= 0 or used_percent >= 100:
        return None
    until_reset_s = (reset - now).total_seconds()
    if not 0 < until_reset_s <= window_s:
        return None
    elapsed_s = window_s - until_reset_s
    if elapsed_s < MIN_ELAPSED_SHARE * window_s:
        return None
    expected = elapsed_s / window_s * 100
    delta = used_percent - expected
    status = "on_track" if abs(delta) < ON_TRACK_BAND else "deficit" if delta > 0 else "reserve"
    runs_out_at = None
    if status != "on_track" and used_percent > 0:   # "on pace" never also "runs out" (SPEC §13)
        rate_per_s = used_percent / elapsed_s
        left_s = (100 - used_percent) / rate_per_s
        if left_s < until_reset_s:
            runs_out_at = iso(now + timedelta(seconds=left_s))
    return Pace(expected_used_percent=round(expected, 2), delta_percent=round(delta, 2), status=status,
                runs_out_at=runs_out_at, lasts_until_reset=runs_out_at is None)


#: the recent basis needs at least this many points of the current window instance ...
RECENT_MIN_POINTS = 3
#: ... spanning at least this share of the window
RECENT_MIN_SPAN = 0.10
#: the burn rate is fitted over the points of the last this-share of the window (widened
#: to all points of the instance when that is too little)
RECENT_SPAN = 0.25


def compute_recent(used_percent: float | None, reset_at: str | None, window_s: float | None, now: datetime,
                   points: list[tuple[float, float]]) -> Pace | None:
    """Like :func:`compute`, but projecting the run-out from the recent burn rate when the
    current window instance has enough history (``points``: (Unix seconds, used %) of this
    instance, oldest first, the current reading included or not). The rate is a least-squares
    slope, so one noisy reading does not swing the projection; a flat or falling recent
    rate lasts until the reset. Expected share and delta stay defined by elapsed time."""
    base = compute(used_percent, reset_at, window_s, now)
    if base is None:
        return None
    t_now = now.timestamp()
    series = sorted({t: u for t, u in [*points, (t_now, used_percent)] if t <= t_now}.items())
    recent = [p for p in series if p[0] >= t_now - RECENT_SPAN * window_s]
    if len(recent) < RECENT_MIN_POINTS or recent[-1][0] - recent[0][0] < RECENT_MIN_SPAN * window_s:
        recent = series
    if len(recent) < RECENT_MIN_POINTS or recent[-1][0] - recent[0][0] < RECENT_MIN_SPAN * window_s:
        return base
    mean_t = sum(t for t, _ in recent) / len(recent)
    mean_u = sum(u for _, u in recent) / len(recent)
    spread = sum((t - mean_t) ** 2 for t, _ in recent)
    rate_per_s = sum((t - mean_t) * (u - mean_u) for t, u in recent) / spread if spread else 0.0
    until_reset_s = (parse_instant(reset_at) - now).total_seconds()
    runs_out_at = None
    if base.status != "on_track" and rate_per_s > 0:
        left_s = (100 - used_percent) / rate_per_s
        if left_s < until_reset_s:
            runs_out_at = iso(now + timedelta(seconds=left_s))
    return Pace(base.expected_used_percent, base.delta_percent, base.status, runs_out_at, runs_out_at is None,
                basis="recent")


def duration_text(seconds: float) -> str:
    """``3d``, ``5h``, ``12m``: the largest whole unit, as the pace line shows it."""
    seconds = max(0, int(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    return f"{max(1, seconds // 60)}m"


def line(pace: Pace, now: datetime | None = None) -> str:
    """``7% in deficit · Runs out in 3d``, ``33% in reserve · Lasts until reset``,
    ``On pace · Lasts until reset`` (SPEC §13; |delta| rounded to a whole percent)."""
    if pace.status == "on_track":
        head = "On pace"
    else:
        head = f"{round(abs(pace.delta_percent))}% in {pace.status}"
    when = parse_instant(pace.runs_out_at)
    if when is None:
        return f"{head} · Lasts until reset"
    left_s = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return f"{head} · " + ("Runs out now" if left_s <= 0 else f"Runs out in {duration_text(left_s)}")
