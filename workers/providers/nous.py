"""Nous Portal subscription and credits (PROVIDERS.md § nous).

**Never refresh the token.** Nous rotates refresh tokens: using one here would silently
log Hermes out. An access token whose ``expires_at`` has passed is answered with
``token_expired`` (a definitive error, like ``unauthorized``) without any request, asking
the user to open Hermes, which owns the login and refreshes it.

The credential is ``providers.nous`` in ``auth.json`` when it holds an access token, else
the ``credential_pool.nous`` OAuth entry with the latest ``expires_at``; the chosen
credential's own ``portal_base_url`` is the default base (``PROBE_NOUS_BASE_URL`` wins).

Choices where PROVIDERS.md is silent:

* ``providers.nous`` with an access token is used even when expired (→ token_expired),
  never skipped for a pool entry: it is the login Hermes itself uses, so an expired one
  is what the user must fix;
* a pool entry needs a non-empty ``access_token`` and an ``auth_type`` starting ``oauth``;
  an entry without a readable ``expires_at`` ranks below every dated one and is taken as
  not expired; ties keep the file's order;
* ``expires_at`` may be ISO or epoch (seconds or ms); expired means at or before now;
* a ``portal_base_url`` that is not an ``http(s)://`` URL is ignored (the default is used);
* ``auth.json`` parts of an unexpected type count as absent (the home-wide reader reports
  malformed files);
* LABEL "Nous Portal", title "Account credits"; the "Subscription" window's ``detail`` is
  ``"$12.00 of $20.00 remaining"`` and its ``window_s`` null (the period length is not
  sent);
* one detail line ``"Credits: $17.00 usable (subscription $12.00, top-up $5.00)"`` with
  the parts that are numbers, so the card shows the balances (which have no line in
  PROVIDERS.md) and an account without a subscription window is still available;
* an ``error`` that is not a non-empty string is ignored; nothing usable →
  ``unavailable_reason`` "Nous Portal reported no subscription or credits for this
  account."
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from workers.result import (ProbeFailure, as_dict, balance, epoch_seconds, first_text, iso_utc, money, number,
                            provider_text, result, run_pure, window)

LABEL = "Nous Portal"
CREDENTIALS = ["auth.json:providers.nous.access_token", "auth.json:credential_pool.nous[].access_token"]
DEFAULT_BASE_URL = "https://portal.nousresearch.com"
PATH = "/api/oauth/account"
TITLE = "Account credits"
SOURCE = "portal_account"
REFRESH_HINT = "Open Hermes once to refresh the Nous login."
NO_CREDENTIAL = ("No Nous Portal login in this home's auth.json (providers.nous, or an OAuth entry in "
                 "credential_pool.nous).")
NO_CREDITS = "Nous Portal reports no usable credits."
NO_ACCOUNT = "Nous Portal reported no subscription or credits for this account."
#: (key in paid_service_access / subscription, balance label, word in the detail line)
BALANCES = (("subscription", "credits_remaining", "Subscription credits", "subscription"),
            ("paid_service_access", "purchased_credits_remaining", "Top-up credits", "top-up"),
            ("paid_service_access", "total_usable_credits", "Total usable", None))


@dataclass(frozen=True)
class NousCredential:
    """The chosen login: its token and its own portal (None = the default)."""

    token: str
    portal_base_url: str | None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _token(entry: dict[str, Any]) -> str | None:
    token = entry.get("access_token")
    return token.strip() if isinstance(token, str) and token.strip() else None


def _portal(entry: dict[str, Any]) -> str | None:
    url = entry.get("portal_base_url")
    if not isinstance(url, str) or not url.strip().lower().startswith(("http://", "https://")):
        return None
    return url.strip().rstrip("/")


def _expiry(entry: dict[str, Any]) -> float | None:
    return epoch_seconds(entry.get("expires_at"))


def choose(auth: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The login the probe uses and where it is (``providers.nous`` or
    ``credential_pool.nous[i]``, for ``probe doctor``), expired or not; None when there is
    none. One rule for the probe and the doctor."""
    chosen = _dict(_dict(auth.get("providers")).get("nous"))
    if _token(chosen) is not None:
        return "providers.nous", chosen
    pool = _dict(auth.get("credential_pool")).get("nous")
    entries = [(index, entry) for index, entry in enumerate(pool) if isinstance(entry, dict) and _token(entry)
               and isinstance(entry.get("auth_type"), str) and entry["auth_type"].startswith("oauth")
               ] if isinstance(pool, list) else []
    if not entries:
        return None
    index, entry = max(entries, key=lambda item: (_expiry(item[1]) is not None, _expiry(item[1]) or 0.0))
    return f"credential_pool.nous[{index}]", entry


def portal(entry: dict[str, Any]) -> str | None:
    """A login's own portal URL (None: the default portal)."""
    return _portal(entry)


def expires_at(entry: dict[str, Any]) -> float | None:
    """A login's ``expires_at`` in epoch seconds (None when absent or unreadable)."""
    return _expiry(entry)


def select_credential(auth: dict[str, Any], now: float) -> NousCredential:
    """``providers.nous``, else the OAuth pool entry with the latest ``expires_at``.
    Raises no_credentials when there is none, token_expired when the chosen token's
    ``expires_at`` has passed (no request, no refresh)."""
    found = choose(auth)
    if found is None:
        raise ProbeFailure("no_credentials", NO_CREDENTIAL)
    chosen = found[1]
    expires = _expiry(chosen)
    if expires is not None and expires <= now:
        raise ProbeFailure("token_expired", f"The Nous Portal login expired at {iso_utc(expires)}. {REFRESH_HINT}")
    return NousCredential(_token(chosen) or "", _portal(chosen))


def normalize(body: Any) -> dict[str, Any]:
    """The §16 result from ``/api/oauth/account``."""
    data = as_dict(body, LABEL)
    error = provider_text(data.get("error"))
    if error is not None:
        raise ProbeFailure("provider_error", error)
    parts = {"subscription": _dict(data.get("subscription")),
             "paid_service_access": _dict(data.get("paid_service_access"))}
    sub = parts["subscription"]
    monthly, left = number(sub.get("monthly_credits")), number(sub.get("credits_remaining"))
    windows = []
    if monthly is not None and monthly > 0 and left is not None and 0 <= left <= monthly:
        windows.append(window("Subscription", (monthly - left) / monthly * 100, sub.get("current_period_end"),
                              f"{money(left)} of {money(monthly)} remaining"))
    amounts = [(label, word, number(parts[part].get(key))) for part, key, label, word in BALANCES]
    named = [f"{word} {money(amount)}" for _, word, amount in amounts if word and amount is not None]
    usable = amounts[2][2]
    details = []
    if usable is not None:
        details.append(f"Credits: {money(usable)} usable" + (f" ({', '.join(named)})" if named else ""))
    elif named:
        details.append("Credits: " + ", ".join(named))
    reason = None
    if parts["paid_service_access"].get("allowed") is False:
        reason = NO_CREDITS
    elif not windows and not details:
        reason = NO_ACCOUNT
    return result(title=TITLE, source=SOURCE, windows=windows, details=details, plan=first_text(sub, "plan"),
                  balances=[balance(label, amount, "USD") for label, _, amount in amounts], unavailable_reason=reason)


def probe(ctx: Any) -> dict[str, Any]:
    account = getattr(ctx, "account", None)
    if account is not None:   # one account of several (SPEC §18; its expiry was checked then)
        login = NousCredential(account.token, _portal(account.fields))
    else:
        login = run_pure(ctx, select_credential, ctx.auth(), time.time())
    body = ctx.get_json(ctx.base_url(login.portal_base_url or DEFAULT_BASE_URL) + PATH, token=login.token)
    return run_pure(ctx, normalize, body, secret=login.token)
