"""GitHub Copilot monthly quotas (PROVIDERS.md § copilot).

The endpoint takes a GitHub token as ``Authorization: token <x>`` (not Bearer) and refuses
classic personal access tokens, so any ``ghp_…`` value is skipped during the lookup and
the next place is tried. Paid plans report ``quota_snapshots``; free plans only
``monthly_quotas`` (totals) and ``limited_user_quotas`` (what is left).

Choices where PROVIDERS.md is silent:

* the ``ghp_`` skip applies to ``credential_pool.copilot`` entries too (the endpoint
  refuses a classic token wherever it was found). A home whose only tokens are classic
  ones has no Copilot credential (PROVIDERS.md): :func:`accepts_credential` keeps it out of
  the home's list (those tokens are there for Hermes' GitHub tools), and a probe asked for
  Copilot by name answers ``no_credentials`` saying why (the message names the ``ghp_``
  prefix, never a token);
* LABEL "GitHub Copilot", title "Monthly quotas";
* a window's ``detail`` is ``"240 of 300 remaining"`` when the counts are known;
* a snapshot whose used share cannot be had (no ``percent_remaining`` and no positive
  ``entitlement`` with a numeric ``remaining``) is skipped like an unlimited one; a free
  plan's quota is skipped when its total is not positive or ``limited_user_quotas`` lacks
  it;
* ``quota_snapshots`` of another type than an object is ``bad_response``;
* no window at all → ``unavailable_reason`` "GitHub Copilot reports unlimited usage on this
  plan." when a snapshot was skipped as unlimited, else "GitHub Copilot reported no usage
  quotas for this account."
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from workers.result import ProbeFailure, as_dict, count, first_text, number, result, run_pure, window

LABEL = "GitHub Copilot"
CREDENTIALS = [".env:COPILOT_GITHUB_TOKEN", ".env:GH_TOKEN", ".env:GITHUB_TOKEN",
               "auth.json:credential_pool.copilot[].access_token"]
CLASSIC_PREFIX = "ghp_"
DEFAULT_BASE_URL = "https://api.github.com"
PATH = "/copilot_internal/user"
API_VERSION = "2025-04-01"
TITLE = "Monthly quotas"
SOURCE = "copilot_internal"
SNAPSHOT_WINDOWS = (("premium_interactions", "Premium requests"), ("chat", "Chat"))
FREE_WINDOWS = (("completions", "Completions"), ("chat", "Chat"))
NO_CREDENTIAL = ("No GitHub Copilot credential in this home (COPILOT_GITHUB_TOKEN, GH_TOKEN or GITHUB_TOKEN "
                 "in .env, or a copilot entry in auth.json's credential_pool).")
ONLY_CLASSIC = ("Only classic GitHub tokens (ghp_…) in this home, which the Copilot usage endpoint does not "
                "accept; set COPILOT_GITHUB_TOKEN to a fine-grained or OAuth GitHub token.")
UNLIMITED = "GitHub Copilot reports unlimited usage on this plan."
NO_QUOTAS = "GitHub Copilot reported no usage quotas for this account."


def accepts_credential(value: str) -> bool:
    """A value at one of the CREDENTIALS places is a Copilot credential unless it is a
    classic ``ghp_`` token (the one rule the home's list and the probe share)."""
    return not value.strip().startswith(CLASSIC_PREFIX)


def select_token(values: Iterable[str]) -> str:
    """The first value (over the CREDENTIALS places, in order) that is not a classic
    ``ghp_`` token; raises no_credentials when there is none."""
    classic = False
    for value in values:
        token = value.strip() if isinstance(value, str) else ""
        if token and not accepts_credential(token):
            classic = True
        elif token:
            return token
    raise ProbeFailure("no_credentials", ONLY_CLASSIC if classic else NO_CREDENTIAL)


def request_headers(token: str) -> dict[str, str]:
    """``Authorization: token <x>`` and the API version (``Accept`` comes from the ctx)."""
    return {"Authorization": f"token {token}", "X-Github-Api-Version": API_VERSION}


def _counted(label: str, total: float | None, left: float | None, reset: Any) -> dict[str, Any] | None:
    if total is None or total <= 0 or left is None:
        return None
    return window(label, (total - left) / total * 100, reset, f"{count(left)} of {count(total)} remaining")


def snapshot_window(label: str, snap: Any, reset: Any) -> dict[str, Any] | None:
    """used = 100 − ``percent_remaining``, else (entitlement − remaining) / entitlement;
    None for an unlimited or empty (0 of 0) snapshot."""
    if not isinstance(snap, dict) or snap.get("unlimited") is True:
        return None
    total, left = number(snap.get("entitlement")), number(snap.get("remaining"))
    if total == 0 and left == 0:
        return None
    left_pct = number(snap.get("percent_remaining"))
    if left_pct is None:
        return _counted(label, total, left, reset)
    detail = f"{count(left)} of {count(total)} remaining" if total and total > 0 and left is not None else None
    return window(label, 100 - left_pct, reset, detail)


def normalize(body: Any) -> dict[str, Any]:
    """The §16 result: paid-plan snapshots, else the free plan's monthly quotas."""
    data = as_dict(body, LABEL)
    reset = data.get("quota_reset_date")
    snaps = data.get("quota_snapshots")
    if snaps is not None and not isinstance(snaps, dict):
        raise ProbeFailure("bad_response", "The GitHub Copilot response has an unexpected shape.")
    snaps = snaps or {}
    windows = [snapshot_window(label, snaps.get(key), reset) for key, label in SNAPSHOT_WINDOWS]
    windows = [w for w in windows if w is not None]
    totals, left = data.get("monthly_quotas"), data.get("limited_user_quotas")
    if not windows and isinstance(totals, dict):
        left = left if isinstance(left, dict) else {}
        windows = [_counted(label, number(totals.get(key)), number(left.get(key)), reset) for key, label in FREE_WINDOWS]
        windows = [w for w in windows if w is not None]
    unlimited = any(isinstance(s, dict) and s.get("unlimited") is True for s in snaps.values())
    return result(title=TITLE, source=SOURCE, windows=windows, plan=first_text(data, "copilot_plan"),
                  unavailable_reason=None if windows else UNLIMITED if unlimited else NO_QUOTAS)


def probe(ctx: Any) -> dict[str, Any]:
    token = run_pure(ctx, select_token, [value for place in CREDENTIALS for value in ctx.values(place)])
    body = ctx.get_json(ctx.base_url(DEFAULT_BASE_URL) + PATH, headers=request_headers(token))
    return run_pure(ctx, normalize, body, secret=token)
