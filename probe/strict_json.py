"""JSON from a party the parent does not trust -- a worker's pipe, a value in Redis -- as
plain data the parent can use, or ValueError.

``json.loads`` alone is not that border: it accepts ``NaN`` and ``Infinity`` (and turns
``1e999`` into ``inf``), which later break every strict encoder (the HTTP body: a 500) and
every ``int()`` of them (OverflowError); and it recurses, so one line of 100,000 ``[``
raises RecursionError -- not a ValueError -- out of whoever asked. Every value the parent
reads from those places goes through :func:`loads`, so one ``except ValueError`` contains
all of it (issue 26 #4, #7).
"""
from __future__ import annotations

import json
import math
from typing import Any

#: deeper than anything quota-probe writes (a snapshot is 4 levels, a Redis value 5)
MAX_DEPTH = 32


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number out of range")
    return value


def loads(data: str | bytes | bytearray) -> Any:
    """``json.loads`` that refuses NaN/Infinity, numbers out of float range and nesting
    deeper than MAX_DEPTH: ValueError for all of it (and for anything not text)."""
    if not isinstance(data, (str, bytes, bytearray)):
        raise ValueError("not JSON text")
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if _brackets(data) > MAX_DEPTH:   # fewer openings than the limit cannot nest past it: no walk
        check_depth(value)
    return value


def _brackets(data: str | bytes | bytearray) -> int:
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """ValueError when lists/objects nest deeper than ``limit`` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise ValueError("nested too deeply")
        stack.extend((child, depth + 1) for child in children)
