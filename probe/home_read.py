"""The state of one home-wide read (SPEC §17, ``ProbeService.fetch_home``): for each
provider on the home's list, how its answer comes about.

Each listed provider is one :class:`HomePart`, decided by the same per-(home, provider)
rules as a single fetch, in this order: answered at once (a fresh cached snapshot, or the
provider's back-off), or joined to an identical probe already in flight (``follows``), or
ours to probe (``leads``). The parts we lead go to **one** worker in **one**
``probe_home`` request -- except, with a cross-process cache, a part whose shared probe
lock another process holds: it waits for that lock afterwards, exactly as a single fetch
would (``waits_for_lock``), so no two processes probe one account at once.

Why a record of its own: the worker's answers arrive one line at a time, in the order the
providers finish, and each must reach the cache, the back-off and any caller coalesced on
it the moment it arrives -- a fast provider's followers never wait for a slow one.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from probe.coalesce import Call
from probe.home_list import HomeProviders
from probe.shared import Fetch
from probe.snapshot import Snapshot


@dataclass(eq=False)
class HomePart:
    fetch: Fetch
    #: the answer, once there is one
    answer: Snapshot | None = None
    #: the in-flight entry we lead or follow (None with coalescing off, or when answered at once)
    flight: tuple | None = None
    call: Call | None = None
    leads: bool = False
    #: another process holds the shared probe lock: probe after the batch, waiting for it
    waits_for_lock: bool = False

    @property
    def provider(self) -> str:
        return self.fetch.provider

    @property
    def in_batch(self) -> bool:
        """Still to be probed by the home's worker in the one request."""
        return self.answer is None and self.leads and not self.waits_for_lock


@dataclass(eq=False)
class HomeRead:
    home: Path
    fingerprint: tuple
    refresh: bool
    #: ``time.monotonic()`` values of the call
    started: float
    deadline: float
    #: wall clock before the fingerprint was taken (``probe.home_list``'s racy rule)
    listed_after_ns: int
    #: only these of the list (None: all of it)
    only: frozenset[str] | None = None
    listing: HomeProviders | None = None
    parts: list[HomePart] = field(default_factory=list)
    #: the shared probe locks of the batch's parts, held until the batch is answered
    locks: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    #: ``fetch_home(on_snapshot=)``: each answer, in the list's order, as early as it can go
    emitter: "InOrder | None" = None

    def emit_ready(self) -> None:
        """Hand the answers now due to :attr:`emitter` (a no-op without one)."""
        if self.emitter is not None and self.listing is not None:
            self.emitter.ready(self.parts, self.listing)

    def batch(self) -> list[HomePart]:
        return [part for part in self.parts if part.in_batch]

    def answers(self) -> list[Snapshot]:
        """In the list's order; every part has its answer by the time this is asked."""
        return [part.answer for part in self.parts if part.answer is not None]


class InOrder:
    """Calls ``on_snapshot`` with a home read's answers in the list's order, each as soon as
    it and every earlier one are answered: the CLI prints a fast provider while a slow one
    is still out, and never out of order (issue #25). Answers arrive on several threads (the
    worker's reply lines, followers of other callers' probes), so the calls are serialized
    by a lock and never overlap. The parts a read leaves out (``HomeProviders.left_out``) are
    skipped, and :meth:`finish` hands over whatever the read returns that was not handed yet
    (a home's single failure snapshot, say) -- so ``on_snapshot`` sees exactly the returned
    list, in order."""

    def __init__(self, on_snapshot: Callable[[Snapshot], None]) -> None:
        self._on_snapshot = on_snapshot
        self._lock = threading.Lock()
        self._next = 0           # index of the first part not handed over or skipped
        self._sent: list[Snapshot] = []

    def ready(self, parts: list[HomePart], listing: HomeProviders) -> None:
        with self._lock:
            while self._next < len(parts) and parts[self._next].answer is not None:
                answer = parts[self._next].answer
                self._next += 1
                if not listing.left_out(answer):
                    self._sent.append(answer)
                    self._on_snapshot(answer)

    def finish(self, answers: list[Snapshot]) -> list[Snapshot]:
        """``answers`` (what the read returns), after handing over the ones not yet sent."""
        with self._lock:
            sent = len(self._sent)
            if answers[:sent] != self._sent:   # cannot happen: the same rule picked both
                raise RuntimeError("a home read's answers differ from the ones it handed over")
            for answer in answers[sent:]:
                self._sent.append(answer)
                self._on_snapshot(answer)
        return answers
