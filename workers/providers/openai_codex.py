"""OpenAI Codex (ChatGPT plan) usage limits (PROVIDERS.md § openai-codex).

The account id header comes from the *selected* credential only — two pool entries may
share a token, and sending another entry's account id would read the wrong account.
"""
from __future__ import annotations

import base64
import json
import time
from typing import Any

from workers.credentials import HomeCredentials
from workers.http import ProviderHttp, base_url
from workers.result import ProbeFailure, as_dict, iso_utc, money, number, snapshot, window

NAME = "openai-codex"
LABEL = "OpenAI Codex"
DEFAULT_BASE_URL = "https://chatgpt.com/backend-api/codex"
TITLE = "Usage limits"
SOURCE = "usage_api"
WINDOW_LABELS = {18000: "Session", 604800: "Weekly"}


def usage_url(base: str) -> str:
    """Strip a trailing ``/codex``; ``…/backend-api`` → ``/wham/usage``, else ``/api/codex/usage``."""
    rest = base.rstrip("/")
    if rest.endswith("/codex"):
        rest = rest[: -len("/codex")]
    return rest + ("/wham/usage" if "/backend-api" in rest else "/api/codex/usage")


def _epoch(value: Any) -> float | None:
    seconds = number(value)
    if seconds is not None:
        return seconds
    iso = iso_utc(value)
    if iso is None:
        return None
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _usable(entry: dict[str, Any], now: float) -> bool:
    if entry.get("last_status") != "exhausted":
        return True
    reset = _epoch(entry.get("last_error_reset_at"))
    return reset is not None and reset <= now


def find_credential(home: HomeCredentials, now: float | None = None) -> tuple[str, str | None] | None:
    """(access_token, account_id of that same credential or None)."""
    auth = home.auth_json()
    now = time.time() if now is None else now
    providers = auth.get("providers")
    entry = providers.get(NAME) if isinstance(providers, dict) else None
    tokens = entry.get("tokens") if isinstance(entry, dict) else None
    if isinstance(tokens, dict) and isinstance(tokens.get("access_token"), str) and tokens["access_token"].strip():
        account = tokens.get("account_id")
        return tokens["access_token"].strip(), account if isinstance(account, str) and account else None
    pool = auth.get("credential_pool")
    entries = pool.get(NAME) if isinstance(pool, dict) else None
    for candidate in entries if isinstance(entries, list) else ():
        if not isinstance(candidate, dict):
            continue
        token = candidate.get("access_token")
        if not isinstance(token, str) or not token.strip() or not _usable(candidate, now):
            continue
        account = candidate.get("account_id")
        return token.strip(), account if isinstance(account, str) and account else None
    return None


def jwt_account_id(token: str) -> str | None:
    """``["https://api.openai.com/auth"].chatgpt_account_id`` of an unverified JWT."""
    parts = token.split(".")
    if len(parts) < 2:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        claim = payload["https://api.openai.com/auth"]["chatgpt_account_id"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return claim if isinstance(claim, str) and claim else None


def plan_name(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.replace("_", " ").replace("-", " ").strip().title()


def normalize(body: Any) -> dict[str, Any]:
    data = as_dict(body, LABEL)
    limits = data.get("rate_limit") if isinstance(data.get("rate_limit"), dict) else {}
    windows = []
    for key, positional in (("primary_window", "Session"), ("secondary_window", "Weekly")):
        part = limits.get(key)
        if not isinstance(part, dict) or number(part.get("used_percent")) is None:
            continue
        seconds = number(part.get("limit_window_seconds"))
        label = WINDOW_LABELS.get(int(seconds), positional) if seconds is not None else positional
        windows.append(window(label, part.get("used_percent"), part.get("reset_at")))
    details = []
    credits = data.get("credits")
    if isinstance(credits, dict) and credits.get("has_credits") is True:
        if credits.get("unlimited") is True:
            details.append("Credits balance: unlimited")
        elif number(credits.get("balance")) is not None:
            details.append(f"Credits balance: {money(number(credits['balance']))}")
    resets = data.get("rate_limit_reset_credits")
    count = number(resets.get("available_count")) if isinstance(resets, dict) else None
    if count is not None and count > 0:
        details.append(f"Rate-limit resets banked: {int(count)}")
    return snapshot(NAME, title=TITLE, source=SOURCE, windows=windows, details=details,
                    plan=plan_name(data.get("plan_type")))


def probe(home: HomeCredentials, http: ProviderHttp, timeout_s: float) -> dict[str, Any]:
    found = find_credential(home)
    if found is None:
        raise ProbeFailure("no_credentials", "No usable OpenAI Codex credential in this home's auth.json.")
    token, account_id = found
    headers = {"User-Agent": "codex-cli"}
    account_id = account_id or jwt_account_id(token)
    if account_id:
        headers["ChatGPT-Account-ID"] = account_id
    body = http.get_json(usage_url(base_url(NAME, DEFAULT_BASE_URL)), token=token, provider_label=LABEL,
                         timeout_s=timeout_s, headers=headers)
    return normalize(body)
