"""Anthropic account limits from the OAuth usage endpoint (PROVIDERS.md § anthropic).

Only OAuth tokens have account limits: a plain API key (``sk-ant-api…``) is answered as
unavailable without any request. ``utilization`` is a percentage (0–100) and is never
rescaled — a value of 0.5 means half a percent, not half the quota.
"""
from __future__ import annotations

from typing import Any

from workers.credentials import HomeCredentials
from workers.http import ProviderHttp, base_url
from workers.result import CURRENCY_SYMBOLS, ProbeFailure, as_dict, money, number, snapshot, window

NAME = "anthropic"
LABEL = "Anthropic"
DEFAULT_BASE_URL = "https://api.anthropic.com"
PATH = "/api/oauth/usage"
TITLE = "Account limits"
SOURCE = "oauth_usage_api"
ENV_NAMES = ("ANTHROPIC_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY")
WINDOWS = (("five_hour", "Current session"), ("seven_day", "Current week"), ("seven_day_opus", "Opus week"),
           ("seven_day_sonnet", "Sonnet week"), ("seven_day_oauth_apps", "OAuth apps week"))
API_KEY_REASON = "Anthropic account limits are only available for OAuth-backed Claude accounts."


def find_token(home: HomeCredentials) -> str | None:
    found = home.env_value(*ENV_NAMES)
    if found:
        return found[1]
    pool = home.auth_json().get("credential_pool")
    entries = pool.get("anthropic") if isinstance(pool, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        token = entry.get("access_token") if isinstance(entry, dict) else None
        if isinstance(token, str) and token.strip():
            return token.strip()
    return None


def is_api_key(token: str) -> bool:
    return token.startswith("sk-ant-api")


def extra_usage_line(extra: Any) -> str | None:
    """``Extra usage: $3.50 of $50.00`` — credits are in cents."""
    if not isinstance(extra, dict) or extra.get("is_enabled") is not True:
        return None
    used = number(extra.get("used_credits"))
    if used is None:
        return None
    currency = extra.get("currency") if isinstance(extra.get("currency"), str) else "USD"
    limit = number(extra.get("monthly_limit"))
    of = "unlimited" if not limit else money(limit / 100, currency)
    line = f"Extra usage: {money(used / 100, currency)} of {of}"
    code = currency.upper()
    # Another currency with a symbol gets its code too ("€5.00 of €100.00 EUR"); one
    # without a symbol already reads "5.00 CHF".
    return f"{line} {code}" if code != "USD" and code in CURRENCY_SYMBOLS else line


def normalize(body: Any) -> dict[str, Any]:
    data = as_dict(body, LABEL)
    windows = []
    for key, label in WINDOWS:
        part = data.get(key)
        if isinstance(part, dict) and number(part.get("utilization")) is not None:
            windows.append(window(label, part.get("utilization"), part.get("resets_at")))
    extra = extra_usage_line(data.get("extra_usage"))
    return snapshot(NAME, title=TITLE, source=SOURCE, windows=windows, details=[extra] if extra else [])


def probe(home: HomeCredentials, http: ProviderHttp, timeout_s: float) -> dict[str, Any]:
    token = find_token(home)
    if token is None:
        raise ProbeFailure("no_credentials", "No Anthropic credential in this home (.env ANTHROPIC_TOKEN, "
                                             "CLAUDE_CODE_OAUTH_TOKEN or ANTHROPIC_API_KEY, or auth.json).")
    if is_api_key(token):
        return snapshot(NAME, title=TITLE, source=SOURCE, unavailable_reason=API_KEY_REASON)
    try:
        body = http.get_json(base_url(NAME, DEFAULT_BASE_URL) + PATH, token=token, provider_label=LABEL,
                             timeout_s=timeout_s, headers={"anthropic-beta": "oauth-2025-04-20",
                                                           "Content-Type": "application/json"})
    except ProbeFailure as exc:
        if exc.code == "forbidden":
            raise ProbeFailure("forbidden", "Anthropic refused the usage request (HTTP 403): the token "
                                            "probably lacks the user:profile scope; sign in again.") from None
        raise
    return normalize(body)
