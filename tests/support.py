"""Test support. wait_until: deadline-bounded waiting for a condition another thread or
process brings about.

Not a sleep to paper over a race: the condition is the assertion, the deadline only
bounds how long a broken build takes to fail."""
from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def live_children() -> list["psutil.Process"]:
    """This process's descendants that are still running (zombies excluded)."""
    import psutil

    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.Error:
            pass
    return out
