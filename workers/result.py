"""The child-side snapshot dict and the normalization helpers every adapter shares.

A worker answers with the provider part of the snapshot (SPEC §4); the parent adds
``home``, ``stale``, ``fetched_at`` and ``probe``. Keeping every rounding, clamping, time
and money rule here means the four adapters cannot drift apart on them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

#: currency code -> symbol; a currency not listed is written as "3.50 CHF"
CURRENCY_SYMBOLS = {"USD": "$", "CNY": "¥", "EUR": "€", "GBP": "£", "JPY": "¥"}


class ProbeFailure(Exception):
    """A provider-side problem with a typed code (SPEC §4) and a message safe to show."""

    def __init__(self, code: str, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


# -- numbers, times, money --------------------------------------------------------------
def number(value: Any) -> float | None:
    """A finite float from a JSON number or numeric string; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(Decimal(value.strip()))
        except (InvalidOperation, ValueError):
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def clamp_percent(value: float) -> float:
    return max(0.0, min(100.0, value))


def iso_utc(value: Any) -> str | None:
    """Epoch seconds (number or numeric string) or ISO-8601 (any offset, microseconds,
    ``Z``) → ``YYYY-MM-DDTHH:MM:SSZ`` in UTC; None for anything unusable."""
    if value is None or isinstance(value, bool):
        return None
    when: datetime | None = None
    seconds = number(value)
    if seconds is not None:
        if seconds > 1e11:  # milliseconds, as some clients send
            seconds /= 1000
        try:
            when = datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    if when is None:
        return None
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(amount: float, currency: str | None = "USD") -> str:
    """``$3.50``, ``¥12.30``; a currency without a known symbol: ``3.50 CHF``."""
    code = (currency or "USD").upper()
    symbol = CURRENCY_SYMBOLS.get(code)
    text = f"{amount:,.2f}"
    if amount < 0:
        return f"-{symbol}{text[1:]}" if symbol else f"{text} {code}"
    return f"{symbol}{text}" if symbol else f"{text} {code}"


def money_with_code(amount: float, currency: str | None) -> str:
    """``€5.00`` for a known symbol other than the dollar needs no code; used where the
    spec writes the code after a symbol-formatted amount (``¥12.30 CNY``)."""
    code = (currency or "USD").upper()
    return f"{money(amount, code)} {code}" if code in CURRENCY_SYMBOLS else money(amount, code)


# -- snapshot dicts ---------------------------------------------------------------------
def window(label: str, used_percent: Any, reset_at: Any = None, detail: str | None = None) -> dict[str, Any]:
    used = number(used_percent)
    used = None if used is None else round(clamp_percent(used), 2)
    return {
        "label": label,
        "used_percent": used,
        "remaining_percent": None if used is None else round(clamp_percent(100.0 - used), 2),
        "reset_at": iso_utc(reset_at),
        "detail": detail,
    }


def snapshot(provider: str, *, title: str, source: str, windows: Iterable[dict] = (), details: Iterable[str] = (),
             plan: str | None = None, unavailable_reason: str | None = None) -> dict[str, Any]:
    windows, details = list(windows), list(details)
    return {
        "provider": provider,
        "available": bool(windows or details) and not unavailable_reason,
        "title": title,
        "plan": plan,
        "source": source,
        "windows": windows,
        "details": details,
        "unavailable_reason": unavailable_reason,
        "error": None,
    }


def failure(provider: str, code: str, message: str, *, title: str | None = None, source: str | None = None,
            retry_after_s: float | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if retry_after_s is not None:
        error["retry_after_s"] = retry_after_s
    return {
        "provider": provider, "available": False, "title": title, "plan": None, "source": source,
        "windows": [], "details": [], "unavailable_reason": None, "error": error,
    }


def as_dict(value: Any, what: str) -> dict[str, Any]:
    """The response (or a part of it) must be a JSON object: anything else is bad_response."""
    if not isinstance(value, dict):
        raise ProbeFailure("bad_response", f"The {what} response has an unexpected shape.")
    return value
