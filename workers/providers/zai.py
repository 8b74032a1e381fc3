"""z.ai GLM Coding Plan quota (PROVIDERS.md § zai).

The endpoint answers HTTP 200 even for a failure, so ``success``/``code`` are checked
before anything else. ``percentage`` is already the *used* share; ``nextResetTime`` is
epoch milliseconds. A ``TIME_LIMIT`` is the monthly tool-call quota: its ``unit 5,
number 1`` is a marker, not a one-minute window, so its length is fixed at 30 days.

A China account is served from ``open.bigmodel.cn``: a ``GLM_BASE_URL`` on that host in
the home's ``.env`` moves the default there (``PROBE_ZAI_BASE_URL`` still wins).

Choices where PROVIDERS.md is silent:

* title "GLM Coding Plan";
* the China host is always reached over ``https`` at its root, whatever scheme, port or
  path ``GLM_BASE_URL`` carries (the quota path hangs off the host's root; a plain-http
  URL must not downgrade the request that carries the key); any other host, or an
  unparsable value, leaves the default;
* ``code`` may be a number or a decimal string (``"200"``); a failure without ``msg`` says
  "z.ai reported an error (code N).";
* a limit whose used share is not a number, or of another ``type``, is skipped;
  ``currentValue / usage`` replaces ``percentage`` only when both are numbers and
  ``usage > 0``;
* a token/credit limit whose length is unknown (a missing ``number`` or an unknown
  ``unit``) sorts after the known ones, and ties keep the response's order;
  the middle limits of three or more are labelled by length in the largest whole unit
  (``"1-day"``, ``"12-hour"``, ``"90-minute"``; ``"Limit"`` when the length is unknown);
* the tool-call window's ``detail`` is ``"224 of 1,000 tool calls used"`` when
  ``currentValue`` and ``usage`` are numbers;
* no usable limit at all → ``unavailable_reason`` "z.ai reported no quota limits for this
  account."
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from workers.result import (ProbeFailure, as_dict, count, first_text, number, provider_text, result, run_pure,
                            window)

LABEL = "z.ai"
CREDENTIALS = [".env:GLM_API_KEY", ".env:ZAI_API_KEY", ".env:Z_AI_API_KEY",
               "auth.json:credential_pool.zai[].access_token"]
DEFAULT_BASE_URL = "https://api.z.ai"
CHINA_HOST = "open.bigmodel.cn"
PATH = "/api/monitor/usage/quota/limit"
TITLE = "GLM Coding Plan"
SOURCE = "quota_api"
#: ``unit`` code -> seconds (1 day, 3 hour, 5 minute, 6 week)
UNIT_SECONDS = {1: 86400, 3: 3600, 5: 60, 6: 604800}
WINDOW_TYPES = ("TOKENS_LIMIT", "CREDIT_LIMIT")
TOOL_CALLS = "Tool calls (month)"
MONTH_S = 30 * 86400
PLAN_KEYS = ("planName", "plan", "plan_type", "packageName", "level")
NO_CREDENTIAL = ("No z.ai credential in this home (GLM_API_KEY, ZAI_API_KEY or Z_AI_API_KEY in .env, "
                 "or a zai entry in auth.json's credential_pool).")
NO_LIMITS = "z.ai reported no quota limits for this account."
#: largest first, for labels by length
_LENGTH_UNITS = ((604800, "week"), (86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def default_base_url(glm_base_url: str | None) -> str:
    """``https://open.bigmodel.cn`` when the home's ``GLM_BASE_URL`` is on that host, else
    the international default."""
    if not glm_base_url:
        return DEFAULT_BASE_URL
    try:
        host = urlsplit(glm_base_url.strip()).hostname
    except ValueError:
        return DEFAULT_BASE_URL
    return f"https://{CHINA_HOST}" if host == CHINA_HOST else DEFAULT_BASE_URL


def length_s(limit: dict[str, Any]) -> float | None:
    """``number × unit`` in seconds; None for an unknown unit or a missing count."""
    unit, how_many = number(limit.get("unit")), number(limit.get("number"))
    if unit is None or how_many is None or how_many <= 0 or not unit.is_integer():
        return None
    seconds = UNIT_SECONDS.get(int(unit))
    return None if seconds is None else how_many * seconds


def length_label(seconds: float | None) -> str:
    """``"1-day"``, ``"12-hour"``: the length in the largest unit that divides it."""
    if seconds is None:
        return "Limit"
    for size, name in _LENGTH_UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{count(seconds / size)}-{name}"
    return f"{count(seconds)}-second"


def used_percent(limit: dict[str, Any]) -> float | None:
    """``currentValue / usage × 100`` when ``usage`` > 0 and ``currentValue`` is a number,
    else ``percentage`` (already the used share)."""
    allowance, current = number(limit.get("usage")), number(limit.get("currentValue"))
    if allowance is not None and allowance > 0 and current is not None:
        return current / allowance * 100
    return number(limit.get("percentage"))


def check_answer(body: dict[str, Any]) -> None:
    """``success == true and code == 200``, else provider_error with the provider's ``msg``."""
    if body.get("success") is True and number(body.get("code")) == 200:
        return
    message = provider_text(body.get("msg"))
    if message is None:
        code = provider_text(str(body.get("code")), 20) if body.get("code") is not None else "none"
        message = f"z.ai reported an error (code {code})."
    raise ProbeFailure("provider_error", message)


def limit_windows(limits: list[Any]) -> list[dict[str, Any]]:
    """Token/credit windows by length (Session … Weekly), then the monthly tool calls."""
    timed: list[tuple[float | None, dict[str, Any], float]] = []
    tools: list[dict[str, Any]] = []
    for limit in limits:
        if not isinstance(limit, dict) or (used := used_percent(limit)) is None:
            continue
        kind = limit.get("type")
        if kind in WINDOW_TYPES:
            timed.append((length_s(limit), limit, used))
        elif kind == "TIME_LIMIT":
            allowance, current = number(limit.get("usage")), number(limit.get("currentValue"))
            detail = (f"{count(current)} of {count(allowance)} tool calls used"
                      if allowance is not None and allowance > 0 and current is not None else None)
            tools.append(window(TOOL_CALLS, used, limit.get("nextResetTime"), detail, window_s=MONTH_S))
    timed.sort(key=lambda item: (item[0] is None, item[0] or 0))
    windows = []
    for index, (seconds, limit, used) in enumerate(timed):
        if index == 0:
            label = "Session"
        elif index == len(timed) - 1:
            label = "Weekly"
        else:
            label = length_label(seconds)
        windows.append(window(label, used, limit.get("nextResetTime"), window_s=seconds))
    return windows + tools


def normalize(body: Any) -> dict[str, Any]:
    """The §16 result from the quota/limit response (raises provider_error / bad_response)."""
    answer = as_dict(body, LABEL)
    check_answer(answer)
    data = as_dict(answer.get("data"), LABEL)
    limits = data.get("limits")
    if not isinstance(limits, list):
        raise ProbeFailure("bad_response", "The z.ai quota response has no list of limits.")
    windows = limit_windows(limits)
    return result(title=TITLE, source=SOURCE, windows=windows, plan=first_text(data, *PLAN_KEYS),
                  unavailable_reason=None if windows else NO_LIMITS)


def probe(ctx: Any) -> dict[str, Any]:
    token = ctx.credential()
    if not token:
        ctx.fail("no_credentials", NO_CREDENTIAL)
    base = ctx.base_url(default_base_url(ctx.env("GLM_BASE_URL")))
    body = ctx.get_json(base + PATH, token=token)
    return run_pure(ctx, normalize, body, secret=token)
