"""Example Cloud -- a made-up provider that shows every part of a quota-probe plugin.

Example Cloud answers ``GET {base}/v1/quota`` with::

    {"plan": "team",
     "quotas": [{"name": "daily", "used": 120, "limit": 1000, "period_s": 86400,
                 "resets_at": 1790000000},
                {"name": "monthly", "used": "5300", "limit": "20000", "period_s": 2592000,
                 "resets_at": "2026-12-31T00:00:00Z"}],
     "credit_usd": "12.5"}

The module imports nothing from quota-probe: the home's files, the HTTP client, the
deadline and the error codes all come through ``ctx`` (SPEC §16). quota-probe imports it in
its template process only, and validates what ``probe`` returns (clamps percentages, writes
times as ``...Z``, adds ``remaining_percent`` and pace), so this module only maps fields.
"""
from __future__ import annotations

from typing import Any

#: the name panels and ``probe providers`` show
LABEL = "Example Cloud"
#: where a home keeps the credential, in lookup order (``probe doctor`` shows these, and a
#: home "has" this provider when any of them holds a value)
CREDENTIALS = [".env:EXAMPLE_CLOUD_API_KEY", "auth.json:credential_pool.example-cloud[].access_token"]
DEFAULT_BASE_URL = "https://api.example-cloud.invalid"
PATH = "/v1/quota"
LABELS = {"daily": "Today", "monthly": "This month"}


def normalize(body: Any) -> dict[str, Any]:
    """Example Cloud's answer as a quota-probe result. Raises ``ValueError`` for a shape it
    does not know (``probe`` turns that into ``bad_response``)."""
    if not isinstance(body, dict) or not isinstance(body.get("quotas"), list):
        raise ValueError("unexpected shape")
    windows = []
    for quota in body["quotas"]:
        used, limit = float(quota["used"]), float(quota["limit"])
        if limit <= 0:
            continue
        name = str(quota.get("name", ""))
        windows.append({"label": LABELS.get(name, name.title() or "Quota"),
                        "used_percent": used / limit * 100,
                        "reset_at": quota.get("resets_at"),          # epoch seconds or ISO: both fine
                        "window_s": quota.get("period_s"),
                        "detail": f"{used:,.0f} of {limit:,.0f} requests used"})
    balances = []
    if body.get("credit_usd") is not None:
        balances.append({"label": "Credit", "amount": float(body["credit_usd"]), "currency": "USD"})
    return {"title": "Example Cloud quota", "source": "quota_api", "plan": body.get("plan"),
            "windows": windows, "balances": balances}


def probe(ctx) -> dict[str, Any]:
    token = ctx.credential()
    if token is None:
        ctx.fail("no_credentials", "No EXAMPLE_CLOUD_API_KEY in this home's .env.")
    body = ctx.get_json(ctx.base_url(DEFAULT_BASE_URL) + PATH, token=token)   # 401, 429, 5xx: mapped for us
    try:
        return normalize(body)
    except (ValueError, TypeError, KeyError):
        ctx.fail("bad_response", "The Example Cloud quota response has an unexpected shape.")


# -- the built-in emulator serves this too (probe emulator, probe serve --demo) -------------
def emulated_response(token: str) -> tuple[int, dict[str, Any]]:
    """A plausible answer per token; a token containing ``-401-`` is refused."""
    if "-401-" in token:
        return 401, {"error": "invalid api key"}
    used = sum(token.encode()) % 1000
    return 200, {"plan": "team", "credit_usd": "12.5",
                 "quotas": [{"name": "daily", "used": used, "limit": 1000, "period_s": 86400,
                             "resets_at": 4102444800},
                            {"name": "monthly", "used": str(used * 9), "limit": "20000", "period_s": 2592000,
                             "resets_at": "2100-01-01T00:00:00Z"}]}


EMULATOR = {"path": PATH, "response": emulated_response}
