"""OpenRouter credits and API-key quota (PROVIDERS.md § openrouter).

``/credits`` is the probe: its failure fails the snapshot. ``/key`` only adds the key's
own limit and usage lines, so its failure just leaves them out.

Choices where PROVIDERS.md is silent:

* title "Credits" (the account's credit balance is what is always shown);
* both requests share the one ``timeout_s`` budget: ``/key`` gets what ``/credits`` left
  and is skipped when nothing is left, so a slow provider cannot double the probe time;
* ``/credits`` with non-numeric totals is ``bad_response``; a ``/key`` body it does not
  understand adds nothing.
"""
from __future__ import annotations

from typing import Any

from workers.result import ProbeFailure, as_dict, money, number

NAME = "openrouter"
LABEL = "OpenRouter"
#: the pool rows are accounts of their own since 0.4 (SPEC §18; Hermes pools OpenRouter keys)
CREDENTIALS = [".env:OPENROUTER_API_KEY", "auth.json:credential_pool.openrouter[].access_token"]
DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
TITLE = "Credits"
SOURCE = "credits_api"
#: below this much budget left, /key is not attempted
MIN_KEY_BUDGET_S = 0.05
USAGE_PARTS = (("usage", "total"), ("usage_daily", "today"), ("usage_weekly", "this week"),
               ("usage_monthly", "this month"))


def credits_left(body: Any) -> float:
    """total_credits − total_usage, never below zero."""
    data = as_dict(as_dict(body, LABEL).get("data"), LABEL)
    total, usage = number(data.get("total_credits")), number(data.get("total_usage"))
    if total is None or usage is None:
        raise ProbeFailure("bad_response", "The OpenRouter credits response has an unexpected shape.")
    return max(0.0, total - usage)


def credits_line(body: Any) -> str:
    """``Credits balance: $12.50``."""
    return f"Credits balance: {money(credits_left(body))}"


def key_parts(body: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """(windows, details) from ``/key``; a shape it does not understand adds nothing."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return [], []
    windows = []
    limit, remaining = number(data.get("limit")), number(data.get("limit_remaining"))
    if limit is not None and limit > 0 and remaining is not None and 0 <= remaining <= limit:
        reset = data.get("limit_reset")
        detail = f"{money(remaining)} of {money(limit)} remaining"
        if isinstance(reset, str) and reset.strip():
            detail += f" • resets {reset.strip()}"
        windows.append({"label": "API key quota", "used_percent": (limit - remaining) / limit * 100,
                        "reset_at": None, "detail": detail})
    parts = []
    for key, suffix in USAGE_PARTS:
        value = number(data.get(key))
        if value:
            parts.append(f"{money(value)} {suffix}")
    return windows, ["API key usage: " + " • ".join(parts)] if parts else []


def probe(ctx: Any) -> dict[str, Any]:
    token = ctx.credential()
    if token is None:
        ctx.fail("no_credentials", "No OPENROUTER_API_KEY in this home's .env.")
    base = ctx.base_url(DEFAULT_BASE_URL)
    left = credits_left(ctx.get_json(base + "/credits", token=token))
    windows: list[dict[str, Any]] = []
    details: list[str] = []
    if ctx.deadline_s >= MIN_KEY_BUDGET_S:
        try:
            windows, details = key_parts(ctx.get_json(base + "/key", token=token))
        except ctx.Failure:
            pass   # the key lines are extras; the balance above is the probe's answer
    return {"title": TITLE, "source": SOURCE, "windows": windows, "details": [f"Credits balance: {money(left)}", *details],
            "balances": [{"label": "Credits", "amount": left, "currency": "USD"}]}
