"""What a provider's ``probe(ctx)`` returned, checked and normalized into the worker's
snapshot dict (SPEC §16) -- the one border between provider code and everything else.

Built-in providers pass through here exactly like plugins, so the rules cannot drift:

* **shape**: a dict whose keys are among ``windows, balances, details, title, plan,
  unavailable_reason, source`` (every key optional); windows are dicts of ``label,
  used_percent, reset_at, window_s, detail`` (``label`` required); balances dicts of
  ``label, amount, currency`` (``label`` and ``amount`` required); ``details`` strings.
  An unknown key, a value of the wrong type or anything unreadable is ``bad_response``
  naming the field (``windows[1].used_percent``) -- never its content, which may be
  anything the provider sent;
* **numbers**: JSON numbers or decimal strings. ``used_percent`` is clamped into 0-100 and
  rounded to two decimals (as for built-ins: a provider that says 1e9 % is "full", not an
  error); ``window_s`` of zero or less means unknown;
* **times**: ISO-8601 with any offset and fraction digits, or epoch seconds (milliseconds
  above 1e11), normalized to ``YYYY-MM-DDTHH:MM:SSZ``; an unreadable time is ``bad_response``;
* **currency**: missing means ``USD``; a three-letter code is money: upper-cased (``usd`` ->
  ``USD``) and the amount rounded to cents; anything else is a unit (MiniMax ``points``):
  lower-cased, its amount kept as sent (cents mean nothing for points);
* **sizes are capped, and an oversized value is refused, never cut**: a cut label or detail
  line would be shown as if the provider had said it. Labels 100 characters, title / plan /
  source 200, details and window details and ``unavailable_reason`` 500, currency 16, at most
  50 windows, 50 balances and 50 detail lines. A result that breaks a cap is
  ``bad_response`` saying which cap;
* ``available`` = has windows, details or balances, and no ``unavailable_reason``.

A provider's own failure (``ctx.fail`` / ``ctx.Failure``) keeps its code when it is one a
provider may report (:data:`PROVIDER_CODES`); another code, or a message that is not a
string of at most 500 characters, becomes ``bad_response`` / a generic message.
"""
from __future__ import annotations

from typing import Any

from workers.result import ProbeFailure, balance, failure, iso_utc, number, snapshot, window

RESULT_KEYS = ("windows", "balances", "details", "title", "plan", "unavailable_reason", "source")
WINDOW_KEYS = ("label", "used_percent", "reset_at", "window_s", "detail")
BALANCE_KEYS = ("label", "amount", "currency")
#: the SPEC §4 codes a provider may answer with; the rest are the parent's own
#: (``timeout`` is both: a provider's own HTTP timeout fired)
PROVIDER_CODES = frozenset({"no_credentials", "unauthorized", "forbidden", "rate_limited", "provider_error",
                            "bad_response", "timeout", "token_expired", "credentials_unreadable"})
MAX_LABEL = 100
MAX_NAME = 200       # title, plan, source
MAX_TEXT = 500       # details, window detail, unavailable_reason
#: a failure message may name a file under a home path (PATH_MAX is 4096)
MAX_MESSAGE = 8192
MAX_CURRENCY = 16
MAX_ITEMS = 50


class _Unusable(Exception):
    """Why a result cannot be used: a field path and a reason, never a value."""


def to_snapshot(provider: str, label: str, result: Any) -> dict[str, Any]:
    """The worker's snapshot dict for a result; ProbeFailure(``bad_response``) when the
    result cannot be used."""
    try:
        return _snapshot(provider, result)
    except _Unusable as exc:
        raise ProbeFailure("bad_response", f"The {label} result could not be used: {exc}.") from None


def from_failure(provider: str, label: str, exc: ProbeFailure) -> dict[str, Any]:
    """The worker's snapshot dict for a provider's failure, with its code checked."""
    code, message = exc.code, exc.message
    if code not in PROVIDER_CODES:
        return failure(provider, "bad_response", f"The {label} provider reported an error code quota-probe "
                                                 "does not know.")
    if not isinstance(message, str) or not message.strip() or len(message) > MAX_MESSAGE:
        message = f"The {label} provider reported {code} (without a usable message)."
    retry = number(exc.retry_after_s) if code == "rate_limited" else None
    return failure(provider, code, message, retry_after_s=retry if retry is not None and retry >= 0 else None)


def _snapshot(provider: str, result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise _Unusable(f"probe() returned {_kind(result)}, not a dict")
    _known_keys(result, RESULT_KEYS, "the result")
    windows = [_window(item, f"windows[{index}]") for index, item in enumerate(_list(result, "windows"))]
    balances = [_balance(item, f"balances[{index}]") for index, item in enumerate(_list(result, "balances"))]
    details = [_text(item, f"details[{index}]", MAX_TEXT, required=True)
               for index, item in enumerate(_list(result, "details"))]
    reason = _text(result.get("unavailable_reason"), "unavailable_reason", MAX_TEXT)
    snap = snapshot(provider, title=_text(result.get("title"), "title", MAX_NAME),
                    source=_text(result.get("source"), "source", MAX_NAME), windows=windows, details=details,
                    plan=_text(result.get("plan"), "plan", MAX_NAME), unavailable_reason=reason, balances=balances)
    snap["available"] = bool(windows or details or balances) and not reason
    return snap


def _window(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _Unusable(f"{where} is {_kind(item)}, not a dict")
    _known_keys(item, WINDOW_KEYS, where)
    used = item.get("used_percent")
    if used is not None and number(used) is None:
        raise _Unusable(f"{where}.used_percent is not a number")
    reset = item.get("reset_at")
    if reset is not None and iso_utc(reset) is None:
        raise _Unusable(f"{where}.reset_at is not an ISO-8601 time or epoch seconds")
    length = item.get("window_s")
    if length is not None and number(length) is None:
        raise _Unusable(f"{where}.window_s is not a number of seconds")
    return window(_text(item.get("label"), f"{where}.label", MAX_LABEL, required=True), used, reset,
                  _text(item.get("detail"), f"{where}.detail", MAX_TEXT), window_s=length)


def _balance(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _Unusable(f"{where} is {_kind(item)}, not a dict")
    _known_keys(item, BALANCE_KEYS, where)
    label = _text(item.get("label"), f"{where}.label", MAX_LABEL, required=True)
    if number(item.get("amount")) is None:
        raise _Unusable(f"{where}.amount is not a number")
    currency = _text(item.get("currency"), f"{where}.currency", MAX_CURRENCY)
    code = (currency or "").strip() or "USD"
    money_code = len(code) == 3 and code.isascii() and code.isalpha()
    return balance(label, item["amount"], code, unit=not money_code)


def _list(result: dict[str, Any], key: str) -> list[Any]:
    value = result.get(key)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise _Unusable(f"{key} is {_kind(value)}, not a list")
    if len(value) > MAX_ITEMS:
        raise _Unusable(f"{key} has more than {MAX_ITEMS} entries")
    return list(value)


def _text(value: Any, where: str, cap: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _Unusable(f"{where} is {_kind(value)}, not a string")
    if len(value) > cap:
        raise _Unusable(f"{where} is longer than {cap} characters")
    return value


def _known_keys(item: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    # the unknown key itself is not quoted: a provider may have put anything there
    if any(key not in known for key in item):
        raise _Unusable(f"{where} has a key other than {', '.join(known)}")


def _kind(value: Any) -> str:
    """A value's JSON kind for a message (``a string``), never the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a dict"
    return "another kind of object"
