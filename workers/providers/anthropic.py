"""Anthropic account limits from the OAuth usage endpoint (PROVIDERS.md § anthropic).

Only OAuth tokens have account limits: a plain API key (``sk-ant-api…``) is answered as
unavailable without any request. ``utilization`` is a percentage (0–100) and is never
rescaled — a value of 0.5 means half a percent, not half the quota.

Choices where PROVIDERS.md is silent:

* title "Account limits" (the SPEC §4 example);
* a window whose ``utilization`` is not a number is skipped like a null one;
* a response without any window or extra-usage line is not an error but
  ``unavailable_reason`` "Anthropic reported no usage limits for this account.", so the
  user sees a sentence rather than an empty card;
* ``extra_usage`` without a currency is USD; a non-USD currency gets its code appended
  once at the end (``€5.00 of €100.00 EUR``, ``€5.00 of unlimited EUR``), and one without
  a symbol is already self-describing (``3.50 CHF of 50.00 CHF``).
"""
from __future__ import annotations

from typing import Any

from workers.result import CURRENCY_SYMBOLS, as_dict, iso_utc, money, number

NAME = "anthropic"
LABEL = "Anthropic"
#: first found wins: the .env names in this order, then the auth.json pool (PROVIDERS.md)
CREDENTIALS = [".env:ANTHROPIC_TOKEN", ".env:CLAUDE_CODE_OAUTH_TOKEN", ".env:ANTHROPIC_API_KEY",
               "auth.json:credential_pool.anthropic[].access_token"]
DEFAULT_BASE_URL = "https://api.anthropic.com"
PATH = "/api/oauth/usage"
TITLE = "Account limits"
SOURCE = "oauth_usage_api"
HEADERS = {"anthropic-beta": "oauth-2025-04-20", "Content-Type": "application/json"}
#: (response key, label, window length in seconds)
WINDOWS = (("five_hour", "Current session", 18000), ("seven_day", "Current week", 604800),
           ("seven_day_opus", "Opus week", 604800), ("seven_day_sonnet", "Sonnet week", 604800),
           ("seven_day_oauth_apps", "OAuth apps week", 604800))
API_KEY_REASON = "Anthropic account limits are only available for OAuth-backed Claude accounts."
NO_LIMITS_REASON = "Anthropic reported no usage limits for this account."
SCOPE_MESSAGE = ("Anthropic refused the usage request (HTTP 403): the token probably lacks the "
                 "user:profile scope; sign in again with a Claude account login.")


def find_token(ctx: Any) -> str | None:
    """The first of ANTHROPIC_TOKEN, CLAUDE_CODE_OAUTH_TOKEN, ANTHROPIC_API_KEY in ``.env``,
    else the first ``auth.json`` ``credential_pool.anthropic`` entry with an access_token."""
    return ctx.credential()


def is_api_key(token: str) -> bool:
    return token.startswith("sk-ant-api")


def extra_usage_line(extra: Any) -> str | None:
    """``Extra usage: $3.50 of $50.00`` — credits are in cents; None unless enabled with a
    numeric ``used_credits``."""
    if not isinstance(extra, dict) or extra.get("is_enabled") is not True:
        return None
    used = number(extra.get("used_credits"))
    if used is None:
        return None
    currency = extra.get("currency")
    code = currency.strip().upper() if isinstance(currency, str) and currency.strip() else "USD"
    limit = number(extra.get("monthly_limit"))
    of = "unlimited" if not limit else money(limit / 100, code)
    line = f"Extra usage: {money(used / 100, code)} of {of}"
    return f"{line} {code}" if code != "USD" and code in CURRENCY_SYMBOLS else line


def normalize(body: Any) -> dict[str, Any]:
    """The usage body as a SPEC §16 result (workers.validate finishes it)."""
    data = as_dict(body, LABEL)
    windows = []
    for key, label, length_s in WINDOWS:
        part = data.get(key)
        if isinstance(part, dict) and number(part.get("utilization")) is not None:
            windows.append({"label": label, "used_percent": part.get("utilization"),
                            "reset_at": iso_utc(part.get("resets_at")), "window_s": length_s})
    extra = extra_usage_line(data.get("extra_usage"))
    details = [extra] if extra else []
    return {"title": TITLE, "source": SOURCE, "windows": windows, "details": details,
            "unavailable_reason": None if windows or details else NO_LIMITS_REASON}


def probe(ctx: Any) -> dict[str, Any]:
    token = find_token(ctx)
    if token is None:
        ctx.fail("no_credentials", "No Anthropic credential in this home (ANTHROPIC_TOKEN, "
                                   "CLAUDE_CODE_OAUTH_TOKEN or ANTHROPIC_API_KEY in .env, or an "
                                   "anthropic entry in auth.json's credential_pool).")
    if is_api_key(token):
        return {"title": TITLE, "source": SOURCE, "unavailable_reason": API_KEY_REASON}
    try:
        body = ctx.get_json(ctx.base_url(DEFAULT_BASE_URL) + PATH, token=token, headers=HEADERS)
    except ctx.Failure as exc:
        if exc.code == "forbidden":
            ctx.fail("forbidden", SCOPE_MESSAGE)
        raise
    return normalize(body)
