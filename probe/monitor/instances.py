"""Window instances (SPEC §14): which readings of a quota window belong to the same
"instance" of it -- the stretch between two resets.

Why a rule and not the exact ``reset_at``: real providers report the same reset a little
differently from read to read (sub-second jitter; a reset computed from "seconds until
reset" and rounded), so an exact comparison turns every read into a "new window": alerts
re-arm and fire again, the chart draws a boundary per read, and the recent pace basis
forgets its history. This module is the **one** place that decides; alerts, the chart's
reset boundaries (served by ``/api/history``) and the recent pace basis all go through
:func:`advance`.

The rule: a reading belongs to the window's current instance unless its ``reset_at`` is
later than that instance's reference reset by more than ``max(60 s, 1 % of window_s)``
-- then it starts a new instance (the old reset has come, or the provider moved it later).

Decisions, where the SPEC is silent:

* **The reference reset is the first reading's**, and it never moves while the instance
  lasts. A reference that followed each reading would let a reset that creeps forward in
  steps below the tolerance hide a rollover for ever; anchored to the first reading, any
  drift beyond the tolerance is a new instance. Jitter around the reference -- later or
  earlier by seconds -- never is.
* **Earlier is never new**: a reset reported earlier than the reference, by any amount,
  stays in the instance (the SPEC rule only counts "later"); when that earlier reset
  comes, the provider's next reset is a window length later, which is new.
* **Unknown reset** (``reset_at`` null): such a reading cannot be "later", so it belongs
  to the current instance (a provider that omits the reset for a read changes nothing).
  Only a series' very first instance can have an unknown reference; the first reading
  with a known reset then starts a new instance (for Anthropic, a window that had not
  started yet reports no reset -- the first reset is the window starting).
* **Unknown length** (``window_s`` null): 1 % of nothing is nothing, so the 60 s floor.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

#: a reset later than the reference by at most this many seconds is the same instance ...
FLOOR_S = 60.0
#: ... or by at most this share of the window's length, when that is more
WINDOW_SHARE = 0.01


@dataclass(frozen=True)
class Instance:
    """One instance of a window, named by its reference reset (Unix seconds; None when the
    window reported no reset). References of a series' instances strictly increase, so
    the reference identifies the instance within its series."""
    reset: int | None

    @property
    def key(self) -> str:
        """The instance as text (``YYYY-MM-DDTHH:MM:SSZ``, ``""`` for an unknown reset): the
        ``instance`` of an alert's exactly-once key. The same text as a snapshot's
        ``reset_at``, so an instance whose readings never jittered keeps the key it had when
        keys were exact resets."""
        return "" if self.reset is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.reset))


def tolerance_s(window_s: float | None) -> float:
    """How much later than the reference a reset may be and still be the same instance."""
    return max(FLOOR_S, WINDOW_SHARE * window_s) if window_s and window_s > 0 else FLOOR_S


def starts_new(reference: int | None, reset: int | None, window_s: float | None) -> bool:
    """Does a reading with ``reset`` start a new instance after the one whose reference
    reset is ``reference``?"""
    if reset is None:
        return False
    return reference is None or reset - reference > tolerance_s(window_s)


def advance(current: Instance | None, reset: int | None, window_s: float | None) -> Instance:
    """The instance a reading with ``reset`` belongs to, given the window's ``current``
    instance (None: the series has none yet). Returns ``current`` itself (the same object)
    when the reading belongs to it, else the new instance the reading starts."""
    if current is None:
        return Instance(reset)
    return Instance(reset) if starts_new(current.reset, reset, window_s) else current


def assign(resets: Iterable[int | None], window_s: float | None = None) -> list[Instance]:
    """The instance of each reading of one series, in time order (for re-deriving
    instances of stored points)."""
    out: list[Instance] = []
    current: Instance | None = None
    for reset in resets:
        current = advance(current, reset, window_s)
        out.append(current)
    return out
