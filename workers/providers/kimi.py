"""Kimi Code plan windows, or a Moonshot platform balance (PROVIDERS.md § kimi-coding).

The key decides the endpoint: ``sk-kimi-…`` is a Kimi Code subscription key (plan windows
at ``api.kimi.com/coding``), anything else a Moonshot platform key (the account balance at
``api.moonshot.ai``). ``PROBE_KIMI_CODING_BASE_URL`` replaces whichever base the key
selects. ``kimi-coding-cn`` (module :mod:`workers.providers.kimi_cn`) always reads the
balance at ``api.moonshot.cn`` in CNY, through the same :func:`normalize_balance`.

Kimi sends counts as decimal strings (``"2048"``) and reset times with nanoseconds
(``…13.716839300Z``); both go through :mod:`workers.result`'s parsers.

Choices where PROVIDERS.md is silent:

* windows shortest first, as for every other provider: "Rate window", then "Weekly";
* a window whose limit is not a positive number, or whose used count cannot be had from
  ``used`` nor from ``limit − remaining``, is skipped;
* a ``limits[0]`` without a ``detail`` object is read from the entry itself; a ``window``
  with an unknown ``timeUnit`` has ``window_s`` null (only a missing ``window`` means the
  documented 300 minutes);
* the balance line lists the voucher and cash parts whenever they are numbers, zero
  included, like the balances; without a numeric ``available_balance`` it reads
  ``"Balance: voucher $50.00, cash $12.34"``; a negative part keeps its sign
  (``cash -$3.00``, a deficit);
* ``code`` may be a number or a decimal string; ``scode`` is compared case-insensitively,
  and a failure without one reads "Moonshot reported an error (code N).";
* nothing usable in a response → ``unavailable_reason`` ("Kimi Code reported no usage
  limits for this key." / "Moonshot reported no balance for this account.").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from workers.result import ProbeFailure, as_dict, balance, count, money, number, provider_text, result, run_pure, window

LABEL = "Kimi Coding"
CREDENTIALS = [".env:KIMI_API_KEY", ".env:KIMI_CODING_API_KEY",
               'auth.json:credential_pool."kimi-coding"[].access_token']
KIMI_CODE_PREFIX = "sk-kimi-"
KIMI_CODE_BASE_URL = "https://api.kimi.com/coding"
KIMI_CODE_PATH = "/v1/usages"
MOONSHOT_BASE_URL = "https://api.moonshot.ai"
MOONSHOT_CN_BASE_URL = "https://api.moonshot.cn"
BALANCE_PATH = "/v1/users/me/balance"
USAGE_TITLE, USAGE_SOURCE = "Kimi Code", "usage_api"
BALANCE_TITLE, BALANCE_SOURCE = "Moonshot balance", "balance_api"
WEEK_S = 604800
TIME_UNITS = {"TIME_UNIT_MINUTE": 60, "TIME_UNIT_HOUR": 3600, "TIME_UNIT_DAY": 86400}
DEFAULT_RATE_WINDOW_S = 300 * 60
RESET_KEYS = ("resetTime", "resetAt", "reset_time", "reset_at")
#: (response key, balance label, word in the detail line's parentheses)
BALANCE_PARTS = (("available_balance", "Available", None), ("voucher_balance", "Voucher", "voucher"),
                 ("cash_balance", "Cash", "cash"))
NO_CREDENTIAL = ("No Kimi credential in this home (KIMI_API_KEY or KIMI_CODING_API_KEY in .env, or a "
                 "kimi-coding entry in auth.json's credential_pool).")
NO_USAGE = "Kimi Code reported no usage limits for this key."
NO_BALANCE = "Moonshot reported no balance for this account."


@dataclass(frozen=True)
class Route:
    """Where one key is read: the default base (``PROBE_…_BASE_URL`` replaces it), the path,
    and the normalizer for that endpoint's body."""

    base_url: str
    path: str
    normalize: Callable[[Any], dict[str, Any]]


def route(token: str) -> Route:
    """``sk-kimi-`` keys read the Kimi Code plan windows, every other key the Moonshot
    balance (in USD)."""
    if token.startswith(KIMI_CODE_PREFIX):
        return Route(KIMI_CODE_BASE_URL, KIMI_CODE_PATH, normalize_usage)
    return Route(MOONSHOT_BASE_URL, BALANCE_PATH, normalize_balance)


# -- Kimi Code windows ------------------------------------------------------------------
def _reset(part: dict[str, Any]) -> Any:
    return next((part[key] for key in RESET_KEYS if part.get(key) is not None), None)


def usage_window(label: str, part: Any, window_s: float | None) -> dict[str, Any] | None:
    """``{limit, used, remaining, resetTime}`` → a window with ``"214 of 2,048 requests
    used"``; used = ``used`` when it parses, else ``limit − remaining``."""
    if not isinstance(part, dict):
        return None
    limit, used, remaining = (number(part.get(key)) for key in ("limit", "used", "remaining"))
    if limit is None or limit <= 0:
        return None
    if used is None:
        if remaining is None:
            return None
        used = limit - remaining
    return window(label, used / limit * 100, _reset(part), f"{count(used)} of {count(limit)} requests used",
                  window_s=window_s)


def rate_window_s(entry: dict[str, Any]) -> float | None:
    """``duration × timeUnit`` in seconds; 300 minutes when ``window`` is absent."""
    spec = entry.get("window")
    if spec is None:
        return DEFAULT_RATE_WINDOW_S
    if not isinstance(spec, dict):
        return None
    duration, unit = number(spec.get("duration")), TIME_UNITS.get(spec.get("timeUnit"))
    return None if duration is None or unit is None else duration * unit


def normalize_usage(body: Any) -> dict[str, Any]:
    """The §16 result from ``/v1/usages``: "Rate window" (``limits[0]``) and "Weekly"
    (``usage``)."""
    data = as_dict(body, "Kimi Code")
    windows = []
    limits = data.get("limits")
    if isinstance(limits, list) and limits and isinstance(limits[0], dict):
        entry = limits[0]
        detail = entry.get("detail") if isinstance(entry.get("detail"), dict) else entry
        windows.append(usage_window("Rate window", detail, rate_window_s(entry)))
    windows.append(usage_window("Weekly", data.get("usage"), WEEK_S))
    windows = [w for w in windows if w is not None]
    return result(title=USAGE_TITLE, source=USAGE_SOURCE, windows=windows,
                  unavailable_reason=None if windows else NO_USAGE)


# -- Moonshot balance -------------------------------------------------------------------
def check_balance_answer(body: dict[str, Any]) -> None:
    """``code != 0`` or ``status == false`` → unauthorized for ``scode`` "unauthorized",
    else provider_error naming ``scode``."""
    code = body.get("code")
    if (code is None or number(code) == 0) and body.get("status") is not False:
        return
    scode = provider_text(body.get("scode"), 60)
    if scode is not None and scode.lower() == "unauthorized":
        raise ProbeFailure("unauthorized", "Moonshot rejected the API key (unauthorized).")
    if scode is None:
        shown = provider_text(str(code), 20) if code is not None else "none"
        raise ProbeFailure("provider_error", f"Moonshot reported an error (code {shown}).")
    raise ProbeFailure("provider_error", f"Moonshot reported an error ({scode}).")


def normalize_balance(body: Any, currency: str = "USD") -> dict[str, Any]:
    """The §16 result from ``/v1/users/me/balance``: three balances and one line,
    ``"Balance: $49.58 (voucher $50.00, cash $12.34)"``."""
    answer = as_dict(body, "Moonshot balance")
    check_balance_answer(answer)
    data = as_dict(answer.get("data"), "Moonshot balance")
    values = {key: number(data.get(key)) for key, _, _ in BALANCE_PARTS}
    balances = [balance(label, values[key], currency) for key, label, _ in BALANCE_PARTS]
    parts = [f"{word} {money(values[key], currency)}" for key, _, word in BALANCE_PARTS[1:]
             if values[key] is not None]
    available = values["available_balance"]
    details = []
    if available is not None:
        details.append(f"Balance: {money(available, currency)}" + (f" ({', '.join(parts)})" if parts else ""))
    elif parts:
        details.append("Balance: " + ", ".join(parts))
    return result(title=BALANCE_TITLE, source=BALANCE_SOURCE, details=details, balances=balances,
                  unavailable_reason=None if details else NO_BALANCE)


def probe(ctx: Any) -> dict[str, Any]:
    token = ctx.credential()
    if not token:
        ctx.fail("no_credentials", NO_CREDENTIAL)
    chosen = route(token)
    body = ctx.get_json(ctx.base_url(chosen.base_url) + chosen.path, token=token)
    return run_pure(ctx, chosen.normalize, body, secret=token)
