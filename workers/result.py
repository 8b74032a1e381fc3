"""The child-side snapshot dict and the normalization helpers every adapter shares.

A worker answers with the provider part of the snapshot (SPEC §4); the parent adds
``home``, ``stale``, ``fetched_at`` and ``probe``. Keeping every rounding, clamping, time
and money rule here means the four adapters cannot drift apart on them.

Every helper here takes untrusted JSON values and answers ``None`` (or a neutral value)
for anything it cannot use instead of raising: one odd field must cost one line of the
snapshot, not the whole snapshot.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

#: currency code -> symbol. JPY shares ``¥`` with CNY; callers that may show both append
#: the code (anthropic's ``€5.00 of €100.00 EUR``, deepseek's ``¥12.30 CNY``).
CURRENCY_SYMBOLS = {"USD": "$", "CNY": "¥", "EUR": "€", "GBP": "£", "JPY": "¥"}
#: epoch values above this are milliseconds (1e11 s is the year 5138)
_MILLISECONDS_FROM = 1e11


#: SPEC §4: a credential file (or a secret it refers to) that cannot be read right now; the
#: provider stays listed and the parent keeps its last good reading (stale)
UNREADABLE = "credentials_unreadable"
#: fragments of a key name that says its value is a secret (``access_token``, ``api_key``,
#: ``client_secret``, ``password``): what label checks, digests and pool-entry lines treat so
SECRET_KEY_PARTS = ("token", "key", "secret", "password")


class ProbeFailure(Exception):
    """A provider-side problem with a typed code (SPEC §4) and a message safe to show.

    ``retry_after_s`` carries a 429's ``Retry-After`` so the parent can back off (SPEC §8);
    ``status`` is the HTTP status that caused it (None when no response did), so a provider
    can catch, say, a 404 and fall back to another endpoint. This is ``ctx.Failure``.
    """

    def __init__(self, code: str, message: str, *, retry_after_s: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.status = status


# -- numbers, times, money --------------------------------------------------------------
def number(value: Any) -> float | None:
    """A finite float from a JSON number or numeric string; None for anything else
    (booleans included: ``true`` is not 1 % used)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, Decimal)):
        try:
            result = float(value)
        except OverflowError:   # a 400-digit JSON integer
            return None
    elif isinstance(value, str):
        if len(value) > 100:
            return None
        try:
            result = float(Decimal(value.strip()))
        except (InvalidOperation, ValueError, OverflowError):
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def clamp_percent(value: float) -> float:
    return max(0.0, min(100.0, value))


def percent(value: Any) -> float | None:
    """A percentage as given (0–100, never rescaled: 0.5 means half a percent), clamped
    into 0–100 and rounded to two decimals; None when not a number."""
    used = number(value)
    return None if used is None else round(clamp_percent(used), 2)


def epoch_seconds(value: Any) -> float | None:
    """Seconds since the epoch from epoch seconds (number or numeric string; milliseconds
    are recognised by size) or ISO-8601 with any offset; None for anything unusable.
    Fractions of any length (Kimi sends nanoseconds) are cut to microseconds by
    ``datetime.fromisoformat`` itself on every Python this project supports (3.11+)."""
    if value is None or isinstance(value, bool):
        return None
    seconds = number(value)
    if seconds is not None:
        return seconds / 1000 if abs(seconds) > _MILLISECONDS_FROM else seconds
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:   # no offset: the providers mean UTC
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def iso_utc(value: Any) -> str | None:
    """Epoch seconds (number or numeric string) or ISO-8601 (any offset, microseconds,
    ``Z``) → ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, seconds precision; None for anything unusable
    (including instants outside years 1–9999)."""
    seconds = epoch_seconds(value)
    if seconds is None:
        return None
    try:
        when = datetime.fromtimestamp(math.floor(seconds), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    # isoformat, not strftime: "%Y" does not zero-pad years below 1000 on glibc
    return when.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _decimal(amount: float | int | str | Decimal) -> Decimal:
    # repr() of a float is its shortest round-tripping form, so 12.345 rounds as written
    # (half up → 12.35), not as the binary 12.34499… it is stored as.
    return amount if isinstance(amount, Decimal) else Decimal(repr(amount) if isinstance(amount, float) else str(amount))


def money(amount: float | int | str | Decimal, currency: str | None = "USD", *,
          symbols: Mapping[str, str] = CURRENCY_SYMBOLS) -> str:
    """``$3.50``, ``¥12.30``, ``-$1.00``, ``$1,234.50``: always two decimals (half up) and
    the symbol; a currency without a known symbol is the amount plus its code: ``3.50 CHF``
    (SPEC §4). A missing currency means USD, as every provider here bills in dollars.
    ``symbols`` narrows the table for a provider whose rules name fewer symbols."""
    code = (currency or "USD").strip().upper() or "USD"
    value = _decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    text = f"{abs(value):,.2f}"
    sign = "-" if value < 0 else ""
    symbol = symbols.get(code)
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {code}"


# -- snapshot dicts ---------------------------------------------------------------------
def window(label: str, used_percent: Any, reset_at: Any = None, detail: str | None = None,
           window_s: Any = None) -> dict[str, Any]:
    """One quota window; ``remaining_percent`` = clamp(100 − used), both None when the
    used share is unknown; ``reset_at`` normalized by :func:`iso_utc`; ``window_s`` the
    window's length in seconds when known (a positive number, else None). The parent adds
    ``pace`` (SPEC §13): it owns the clock the pace is evaluated at."""
    used = percent(used_percent)
    length = number(window_s)
    return {
        "label": label,
        "used_percent": used,
        "remaining_percent": None if used is None else round(clamp_percent(100.0 - used), 2),
        "reset_at": iso_utc(reset_at),
        "detail": detail,
        "window_s": length if length is not None and length > 0 else None,
    }


def balance(label: str, amount: Any, currency: str | None = "USD", *, unit: bool = False) -> dict[str, Any] | None:
    """A balance as a number (SPEC §13), rounded to cents exactly as :func:`money` rounds
    (so the number and the detail line never disagree); None when the amount is not a
    number. A missing currency is USD, as in :func:`money`.

    ``unit=True`` marks a non-money unit (MiniMax ``points``): SPEC §13 keeps its own
    lower-case ``currency``, and the amount is not rounded to cents, which mean nothing
    for points."""
    value = number(amount)
    if value is None:
        return None
    if unit:
        return {"label": label, "amount": value, "currency": (currency or "").strip().lower() or "units"}
    code = (currency or "USD").strip().upper() or "USD"
    cents = _decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)   # as the detail line rounds
    return {"label": label, "amount": float(cents), "currency": code}


def snapshot(provider: str, *, title: str, source: str, windows: Iterable[dict] = (), details: Iterable[str] = (),
             plan: str | None = None, unavailable_reason: str | None = None,
             balances: Iterable[dict | None] = ()) -> dict[str, Any]:
    """A successful probe. ``available`` = has windows or details, and no unavailable_reason.
    ``balances`` may hold None entries (amounts that were not numbers); they are dropped."""
    windows, details = list(windows), list(details)
    return {
        "provider": provider,
        "available": bool(windows or details) and not unavailable_reason,
        "title": title,
        "plan": plan,
        "source": source,
        "windows": windows,
        "details": details,
        "balances": [b for b in balances if b is not None],
        "unavailable_reason": unavailable_reason,
        "error": None,
    }


def failure(provider: str, code: str, message: str, *, title: str | None = None, source: str | None = None,
            retry_after_s: float | None = None) -> dict[str, Any]:
    """A failed probe: ``error = {code, message}`` plus ``retry_after_s`` when the provider
    sent a ``Retry-After`` (the parent's back-off reads it)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if retry_after_s is not None:
        error["retry_after_s"] = retry_after_s
    return {
        "provider": provider, "available": False, "title": title, "plan": None, "source": source,
        "windows": [], "details": [], "balances": [], "unavailable_reason": None, "error": error,
    }


def as_dict(value: Any, what: str) -> dict[str, Any]:
    """The response (or a part of it) must be a JSON object: anything else is bad_response."""
    if not isinstance(value, dict):
        raise ProbeFailure("bad_response", f"The {what} response has an unexpected shape.")
    return value


# -- the provider contract (SPEC §16) ---------------------------------------------------
#: the keys of a §16 window; :func:`window` adds ``remaining_percent``, which the parent
#: derives itself from ``used_percent``
RESULT_WINDOW_KEYS = ("label", "used_percent", "reset_at", "window_s", "detail")


def result(*, title: str, source: str, windows: Iterable[dict] = (), details: Iterable[str] = (),
           plan: str | None = None, unavailable_reason: str | None = None,
           balances: Iterable[dict | None] = ()) -> dict[str, Any]:
    """The dict ``probe(ctx)`` returns (SPEC §16), with exactly the contract's keys: the
    parent validates and completes it (``available``, ``remaining_percent``, pace), so
    nothing here claims more than a plugin could. Windows are built with :func:`window`
    (already clamped and in ``Z`` time), balances with :func:`balance` (None entries,
    amounts that were not numbers, are dropped)."""
    return {
        "windows": [{key: w.get(key) for key in RESULT_WINDOW_KEYS} for w in windows],
        "balances": [b for b in balances if b is not None],
        "details": list(details),
        "title": title,
        "plan": plan,
        "unavailable_reason": unavailable_reason,
        "source": source,
    }


def run_pure(ctx: Any, step: Any, *args: Any, secret: str | None = None) -> Any:
    """``step(*args)``, with its :class:`ProbeFailure` re-raised through ``ctx.fail`` so the
    probe ends with the ctx's own failure type whatever class that is.

    Only pure steps (no ``ctx.get_json`` inside) go through here: a ctx whose ``Failure``
    is a ProbeFailure would otherwise lose an HTTP failure's status and Retry-After.
    ``secret`` (the credential) is cut out of the message, a last guard for provider
    text quoted in an error."""
    try:
        return step(*args)
    except ProbeFailure as exc:
        failed = exc
    # outside the except block, so the ctx's failure does not chain the original (whose
    # text the guard below has not seen)
    message = failed.message.replace(secret, "…") if secret else failed.message
    ctx.fail(failed.code, message)
    raise ProbeFailure(failed.code, message)   # only reached if a ctx's fail() returned


def provider_text(value: Any, limit: int = 200) -> str | None:
    """A provider's own message (``msg``, ``status_msg``, ``error``) made fit for one line of
    an error: whitespace and control characters collapsed, at most ``limit`` characters;
    None when it is not a non-empty string."""
    if not isinstance(value, str):
        return None
    text = " ".join("".join(c if c.isprintable() else " " for c in value[: limit * 4]).split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def first_text(data: Mapping[str, Any], *keys: str) -> str | None:
    """The first non-empty string among ``data[key]`` for ``keys``, stripped, as sent
    (plan names are never re-cased for the 0.3 providers)."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def count(value: float) -> str:
    """A request or token count for a detail line: ``2,048``; a fractional one keeps up to
    two decimals (``12.5``)."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")
