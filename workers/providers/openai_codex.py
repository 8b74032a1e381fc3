"""OpenAI Codex (ChatGPT plan) usage limits (PROVIDERS.md § openai-codex).

The account id header comes from the *selected* credential only — two pool entries may
share a token, and sending another entry's account id would read the wrong account.

Choices where PROVIDERS.md is silent:

* title "Usage limits" (the ChatGPT plan's rate-limit windows);
* an exhausted pool entry with no (or an unreadable) ``last_error_reset_at`` is usable:
  the rule makes an entry unusable only while its reset time is known to be in the future;
* when every pool entry is exhausted the error is ``no_credentials`` naming the earliest
  reset time (a time, not a secret);
* plan words are capitalized one by one (``team_plus-max`` → ``Team Plus Max``; ``plus2x``
  → ``Plus2x``, where ``str.title`` would give ``Plus2X``);
* a window whose ``used_percent`` is not a number is skipped;
* ``credits.unlimited: true`` (with ``has_credits``) reads "Credits balance: unlimited";
* a response with no window and no detail gets ``unavailable_reason`` "OpenAI Codex
  reported no usage limits for this account."
"""
from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from workers.result import ProbeFailure, as_dict, epoch_seconds, iso_utc, money, number

NAME = "openai-codex"
LABEL = "OpenAI Codex"
TOKENS = 'auth.json:providers."openai-codex".tokens'
POOL = 'auth.json:credential_pool."openai-codex"[]'
#: where a credential may be (the probe then skips exhausted pool entries, see find_credential)
CREDENTIALS = [TOKENS + ".access_token", POOL + ".access_token"]
DEFAULT_BASE_URL = "https://chatgpt.com/backend-api/codex"
TITLE = "Usage limits"
SOURCE = "usage_api"
USER_AGENT = "codex-cli"
JWT_CLAIM = "https://api.openai.com/auth"
WINDOW_LABELS = {18000: "Session", 604800: "Weekly"}
NO_LIMITS_REASON = "OpenAI Codex reported no usage limits for this account."


def usage_url(base: str) -> str:
    """Strip a trailing ``/codex``; ``…/backend-api…`` → ``<rest>/wham/usage``, else
    ``<rest>/api/codex/usage``."""
    rest = base.rstrip("/")
    if rest.endswith("/codex"):
        rest = rest[: -len("/codex")]
    return rest + ("/wham/usage" if "/backend-api" in rest else "/api/codex/usage")


def _exhausted_until(entry: dict[str, Any], now: float) -> float | None:
    """The reset time of an entry that is unusable now, else None."""
    if entry.get("last_status") != "exhausted":
        return None
    reset = epoch_seconds(entry.get("last_error_reset_at"))
    return reset if reset is not None and reset > now else None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def find_credential(ctx: Any, now: float | None = None) -> tuple[str, str | None] | None:
    """(access_token, account id of that same credential or None), or None when the home
    has no credential at all. Raises no_credentials when every pool entry is exhausted."""
    account = getattr(ctx, "account", None)
    if account is not None:   # one account of several (SPEC §18): its own token and its own id
        return account.token, _text(account.fields.get("account_id"))
    now = time.time() if now is None else now
    token = next(iter(ctx.values(TOKENS + ".access_token")), None)
    if token is not None:
        return token, _text(next(iter(ctx.lookup(TOKENS + ".account_id")), None))
    resets = []
    for entry in ctx.lookup(POOL):
        if not isinstance(entry, dict) or not _text(entry.get("access_token")):
            continue
        until = _exhausted_until(entry, now)
        if until is not None:
            resets.append(until)
            continue
        return _text(entry["access_token"]), _text(entry.get("account_id"))
    if resets:
        raise ProbeFailure("no_credentials", "Every OpenAI Codex credential in auth.json is exhausted until "
                                             f"{iso_utc(min(resets))}.")
    return None


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of an unverified JWT; ``{}`` for anything that is not one."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 16384:
        return {}
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return {}
    return payload if isinstance(payload, dict) else {}


def jwt_account_id(token: str) -> str | None:
    """``["https://api.openai.com/auth"].chatgpt_account_id`` of an unverified JWT; None for
    anything that is not such a JWT."""
    auth = jwt_claims(token).get(JWT_CLAIM)
    return _text(auth.get("chatgpt_account_id")) if isinstance(auth, dict) else None


def jwt_identity(token: str) -> tuple[str, str] | None:
    """(``chatgpt_account_id``, ``sub``): one ChatGPT account (SPEC §18) -- two tokens with
    the same pair are one account; members of one workspace share the id, not the sub."""
    account_id, sub = jwt_account_id(token), _text(jwt_claims(token).get("sub"))
    return (account_id, sub) if account_id and sub else None


def jwt_expiry(token: str) -> float | None:
    """The token's ``exp`` (epoch seconds), None when it has none."""
    return number(jwt_claims(token).get("exp"))


def plan_name(value: Any) -> str | None:
    """``plus`` → ``Plus``, ``team_plus-max`` → ``Team Plus Max``."""
    if not isinstance(value, str):
        return None
    words = value.replace("_", " ").replace("-", " ").split()
    return " ".join(word[:1].upper() + word[1:].lower() for word in words) or None


def _windows(limits: Any) -> list[dict[str, Any]]:
    if not isinstance(limits, dict):
        return []
    windows = []
    for key, positional in (("primary_window", "Session"), ("secondary_window", "Weekly")):
        part = limits.get(key)
        if not isinstance(part, dict) or number(part.get("used_percent")) is None:
            continue
        seconds = number(part.get("limit_window_seconds"))
        label = WINDOW_LABELS.get(int(seconds), positional) if seconds is not None else positional
        windows.append({"label": label, "used_percent": part.get("used_percent"),
                        "reset_at": iso_utc(part.get("reset_at")), "window_s": seconds})
    return windows


def _balances(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Codex credits as a number (an unlimited balance has no amount, so no entry)."""
    credits = data.get("credits")
    if isinstance(credits, dict) and credits.get("has_credits") is True and credits.get("unlimited") is not True \
            and number(credits.get("balance")) is not None:
        return [{"label": "Credits", "amount": credits.get("balance"), "currency": "USD"}]
    return []


def _details(data: dict[str, Any]) -> list[str]:
    details = []
    credits = data.get("credits")
    if isinstance(credits, dict) and credits.get("has_credits") is True:
        balance = number(credits.get("balance"))
        if credits.get("unlimited") is True:
            details.append("Credits balance: unlimited")
        elif balance is not None:
            details.append(f"Credits balance: {money(balance)}")
    resets = data.get("rate_limit_reset_credits")
    count = number(resets.get("available_count")) if isinstance(resets, dict) else None
    if count is not None and count >= 1:
        details.append(f"Rate-limit resets banked: {int(count)}")
    return details


def normalize(body: Any) -> dict[str, Any]:
    """The usage body as a SPEC §16 result (workers.validate finishes it)."""
    data = as_dict(body, LABEL)
    windows, details = _windows(data.get("rate_limit")), _details(data)
    return {"title": TITLE, "source": SOURCE, "windows": windows, "details": details,
            "plan": plan_name(data.get("plan_type")), "balances": _balances(data),
            "unavailable_reason": None if windows or details else NO_LIMITS_REASON}


def request_headers(token: str, account_id: str | None) -> dict[str, str]:
    """User-Agent, plus ChatGPT-Account-ID from the selected credential or else the token's
    JWT claim; no account header at all when neither has one."""
    headers = {"User-Agent": USER_AGENT}
    account_id = account_id or jwt_account_id(token)
    if account_id:
        headers["ChatGPT-Account-ID"] = account_id
    return headers


def probe(ctx: Any) -> dict[str, Any]:
    found = find_credential(ctx)
    if found is None:
        ctx.fail("no_credentials", "No OpenAI Codex credential in this home's auth.json "
                                   "(providers.openai-codex.tokens or credential_pool).")
    token, account_id = found
    return normalize(ctx.get_json(usage_url(ctx.base_url(DEFAULT_BASE_URL)), token=token,
                                  headers=request_headers(token, account_id)))
