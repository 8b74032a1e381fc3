"""hermes-webui's quota answers from quota-probe's snapshots (SPEC §19).

hermes-webui's settings panel reads ``GET /api/provider/quota`` (its ``api/providers.py``
``get_provider_quota``); quota-probe serves the same route (``probe.server``) and
:func:`provider_quota` returns the same dict in-process. This module is a translation
*above* the service, a caller like the server: it asks for snapshots and reshapes them;
nothing below it knows hermes-webui exists.

The envelope is hermes-webui's: ``ok``, ``provider``, ``display_name``, ``supported``,
``status`` (``available`` | ``unavailable`` | ``no_key`` | ``invalid_key`` |
``unsupported``), ``quota``, ``message``, and ``label`` / ``account_limits`` where
hermes-webui has them, with its messages word for word. Which answer a provider gets:

* ``openrouter``: hermes-webui's key answer -- ``label`` ``OpenRouter credits`` and
  ``quota: {limit_remaining, usage, limit}``; no key → ``no_key``; a refused key (401/403:
  ``unauthorized`` / ``forbidden``) → ``invalid_key``; anything else → ``unavailable``.
  The three numbers are read back from the snapshot's ``API key quota`` window and its
  ``API key usage`` line (their format is fixed by PROVIDERS.md), to the cent -- the
  precision hermes-webui's panel shows. A number the key does not report is null.
* every other provider quota-probe probes (built-in or plugin): hermes-webui's account-limits
  answer, with the provider's real windows, details and plan -- hermes-webui itself reads
  only Anthropic and Codex, and shows the rest as a local pool or unsupported. A provider
  with several accounts (SPEC §18) carries ``account_limits.pool`` in hermes-webui's shape;
* a pool-only id (``credential_pool`` records only, SPEC §17): hermes-webui's local-pool
  answer (``source`` ``local_pool``, ``title`` ``Credential pool``), one row per account;
* anything else: ``unsupported`` with hermes-webui's follow-up message.

Choices where hermes-webui's code has no case (written down in the README as well):

* a probe that failed (an ``error``, no data): ``account_limits`` null, as hermes-webui's
  failed probe; the message is hermes-webui's "Confirm provider authentication" one for a
  credential problem (``no_credentials``, ``unauthorized``, ``forbidden``,
  ``token_expired``, ``credentials_unreadable``), else hermes-webui's "unavailable with the
  reason" form carrying quota-probe's own (sanitized) reason -- a timeout is not an
  authentication problem;
* a transient failure answered with the last good reading (``stale``): that reading is
  shown (``available``); its ``fetched_at`` says how old it is;
* every pool row has every key (hermes-webui's probed Codex rows lack ``retry_after``, and
  its Codex pool lacks ``dead_credentials``): one shape, a superset of both of its own.

Every reason a client sees is sanitized as hermes-webui sanitizes a pool row's: whitespace
collapsed, a text that mentions a token (or holds token-like text: a JWT, or 24+ characters
of ``[A-Za-z0-9_-]`` with a digit) becomes "Usage unavailable for this credential.", at
most 180 characters; the server's path of the home is never in one.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from probe.home_config import Unanswered
from probe.pace import parse_instant
from probe.snapshot import Snapshot, Window, utc_now_iso
from workers.plugins import NAME_PATTERN
from workers.providers import provider_names

#: hermes-webui's ``api/config.py`` ``_PROVIDER_DISPLAY``; any other id is title-cased as it does
DISPLAY_NAMES = {
    "nous": "Nous Portal", "openrouter": "OpenRouter", "anthropic": "Anthropic", "openai": "OpenAI",
    "openai-api": "OpenAI API", "openai-codex": "OpenAI Codex", "xai-oauth": "xAI Grok OAuth",
    "copilot": "GitHub Copilot", "moa": "Mixture of Agents", "cursor-acp": "Cursor ACP", "zai": "Z.AI / GLM",
    "kimi-coding": "Kimi / Moonshot", "deepseek": "DeepSeek", "minimax": "MiniMax", "minimax-cn": "MiniMax (China)",
    "google": "Google", "meta-llama": "Meta Llama", "huggingface": "HuggingFace", "alibaba": "Alibaba",
    "ollama": "Ollama", "ollama-cloud": "Ollama Cloud", "opencode-zen": "OpenCode Zen", "opencode-go": "OpenCode Go",
    "lmstudio": "LM Studio", "mistralai": "Mistral", "qwen": "Qwen", "x-ai": "xAI", "nvidia": "NVIDIA NIM",
    "xiaomi": "Xiaomi", "bedrock": "AWS Bedrock",
}
#: the title hermes-webui shows for the providers it reads itself (Hermes' own ``Account limits``)
HERMES_TITLES = {"anthropic": "Account limits", "openai-codex": "Account limits"}
NO_ACTIVE_PROVIDER = "No active provider is configured."
UNSUPPORTED_DETAIL = "OpenAI/Anthropic rate-limit headers are a follow-up once WebUI captures provider response metadata."
CONFIRM_AUTH = "Confirm provider authentication and try again."
OPENROUTER_NO_KEY = "OpenRouter quota status needs an OPENROUTER_API_KEY configured on the server."
OPENROUTER_INVALID_KEY = "OpenRouter rejected the configured API key."
OPENROUTER_UNAVAILABLE = "OpenRouter quota status is temporarily unavailable."
OPENROUTER_LOADED = "OpenRouter quota status loaded."
SANITIZED_REASON = "Usage unavailable for this credential."
DEAD_REASON = "Credential permanently revoked or invalid."
LOCAL_POOL_UNAVAILABLE = "All pool credentials are unavailable."
#: a failure that is the credential's: hermes-webui's "Confirm provider authentication" message fits
CREDENTIAL_ERRORS = frozenset({"no_credentials", "unauthorized", "forbidden", "token_expired",
                               "credentials_unreadable"})
MAX_REASON = 180
#: the longest provider text echoed back (hermes-webui echoes whatever it was given)
MAX_PROVIDER_ECHO = 64
SENSITIVE_TERMS = ("access_token", "refresh_token", "authorization", "bearer ", "jwt", "secret")
TOKEN_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.|(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}")
MONEY = r"-?\$([0-9,]+(?:\.[0-9]+)?)"
KEY_QUOTA = re.compile(rf"^{MONEY} of {MONEY} remaining")
KEY_USAGE = re.compile(rf"^API key usage: {MONEY} total")


class Unread(Exception):
    """A read the answer needs could not be made (the home's active provider, a pool-only
    id's accounts): the answer is hermes-webui's unavailable one with this reason."""


@dataclass(frozen=True)
class HomeReads:
    """What :func:`answer` asks of one home. The module function reads through a
    :class:`~probe.service.ProbeService`; the server through its reader, so the route's
    reads are recorded (readings, history, ``/metrics``) exactly as ``/api/quota``'s."""

    #: a registered provider's snapshot (refresh: skip the cache)
    fetch: Callable[[str, bool], Snapshot]
    #: a pool-only id's accounts from Hermes' records (None: the pool has no row for it)
    pool_accounts: Callable[[str], tuple | None]
    #: ``config.yaml`` ``model.provider``, or None; raises Unread when it cannot be read
    active_provider: Callable[[], str | None]
    #: text a reason must never hold (the server's path of the home) -> what replaces it
    hidden: tuple[tuple[str, str], ...] = ()


def display_name(provider: str) -> str:
    return DISPLAY_NAMES.get(provider, provider.replace("-", " ").title())


def safe_reason(text: Any, hidden: Iterable[tuple[str, str]] = ()) -> str | None:
    """hermes-webui's ``_safe_unavailable_reason`` and then some: token-like text too."""
    reason = " ".join(str(text or "").split())
    for secret, shown in hidden:
        if secret:
            reason = reason.replace(secret, shown)
    if not reason:
        return None
    if any(term in reason.lower() for term in SENSITIVE_TERMS) or TOKEN_LIKE.search(reason):
        return SANITIZED_REASON
    return reason[:MAX_REASON]


def _number(value: float | None) -> int | float | None:
    """hermes-webui's ``_quota_number`` for what we hold: an integral float as an int."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def _money(text: str) -> int | float:
    return _number(round(float(text.replace(",", "")), 2))


# -- the envelope -------------------------------------------------------------------------
def _envelope(provider: str | None, display: str | None, *, ok: bool, supported: bool, status: str,
              message: str, **extra: Any) -> dict[str, Any]:
    """hermes-webui's key order: ok, provider, display_name, supported, status, then
    ``label`` where it has one, quota, ``account_limits``, message."""
    body: dict[str, Any] = {"ok": ok, "provider": provider, "display_name": display, "supported": supported,
                            "status": status}
    if "label" in extra:
        body["label"] = extra.pop("label")
    body["quota"] = extra.pop("quota", None)
    if "account_limits" in extra:
        body["account_limits"] = extra.pop("account_limits")
    body["message"] = message
    return body


def no_active_provider() -> dict[str, Any]:
    return _envelope(None, None, ok=False, supported=False, status="unavailable", message=NO_ACTIVE_PROVIDER)


def unavailable(provider: str | None, reason: str) -> dict[str, Any]:
    """hermes-webui's unavailable shape for a request quota-probe cannot read at all (a
    home that is not configured, an unreadable ``config.yaml``): no provider data."""
    return _envelope(provider, display_name(provider) if provider else None, ok=False, supported=False,
                     status="unavailable", message=reason)


def unsupported(provider: str) -> dict[str, Any]:
    display = display_name(provider)
    return _envelope(provider, display, ok=False, supported=False, status="unsupported",
                     message=f"Quota status is not available for {display}. {UNSUPPORTED_DETAIL}")


def normalized(provider: Any) -> str | None:
    """The provider as hermes-webui reads its query: stripped, lower-cased; blank → None."""
    if provider is None:
        return None
    text = str(provider).strip().lower()
    return text[:MAX_PROVIDER_ECHO] or None


def answer(provider: str | None, reads: HomeReads, *, refresh: bool = False) -> dict[str, Any]:
    """hermes-webui's answer for ``provider`` (None: the home's active provider)."""
    name = normalized(provider)
    if name is None:
        try:
            name = reads.active_provider()
        except Unread as exc:
            return unavailable(None, str(exc))
        if name is None:
            return no_active_provider()
    if name in provider_names():
        snap = reads.fetch(name, refresh)
        return openrouter_answer(snap, reads.hidden) if name == "openrouter" else account_answer(name, snap, reads.hidden)
    if NAME_PATTERN.fullmatch(name):
        try:
            accounts = reads.pool_accounts(name)
        except Unread as exc:
            return unavailable(name, str(exc))
        if accounts:
            return local_pool_answer(name, accounts)
    return unsupported(name)


# -- OpenRouter ---------------------------------------------------------------------------
def openrouter_quota(snap: Snapshot) -> dict[str, int | float | None]:
    """``{limit_remaining, usage, limit}`` from the key lines of an OpenRouter snapshot --
    of its first available account when it has several (hermes-webui reads the one key)."""
    quota: dict[str, int | float | None] = {"limit_remaining": None, "usage": None, "limit": None}
    reading: Any = next((a for a in _accounts(snap) if a.status == "available"), snap)
    for window in reading.windows:
        match = KEY_QUOTA.match(window.detail or "") if window.label == "API key quota" else None
        if match:
            quota["limit_remaining"], quota["limit"] = _money(match.group(1)), _money(match.group(2))
    for line in reading.details:
        match = KEY_USAGE.match(line)
        if match:
            quota["usage"] = _money(match.group(1))
    return quota


def _has_data(snap: Snapshot) -> bool:
    """A reading worth showing: a good one, or the last good one served stale."""
    return snap.available or (snap.stale and bool(snap.windows or snap.details))


def openrouter_answer(snap: Snapshot, hidden: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    display = display_name("openrouter")
    if _has_data(snap):
        return _envelope("openrouter", display, ok=True, supported=True, status="available",
                         label="OpenRouter credits", quota=openrouter_quota(snap), message=OPENROUTER_LOADED)
    code = snap.error.code if snap.error else None
    if code == "no_credentials":
        return _envelope("openrouter", display, ok=False, supported=True, status="no_key", message=OPENROUTER_NO_KEY)
    if code in ("unauthorized", "forbidden"):
        return _envelope("openrouter", display, ok=False, supported=True, status="invalid_key",
                         message=OPENROUTER_INVALID_KEY)
    return _envelope("openrouter", display, ok=False, supported=True, status="unavailable",
                     message=OPENROUTER_UNAVAILABLE)


# -- account limits -----------------------------------------------------------------------
def _remaining(used: int | float | None) -> float | None:
    """hermes-webui's remaining share: clamp(100 − used), as it computes it."""
    return None if used is None else max(0.0, min(100.0, 100.0 - float(used)))


def window_dict(window: Window, detail: str | None = None) -> dict[str, Any]:
    """hermes-webui's window."""
    used = _number(window.used_percent)
    return {"label": window.label, "used_percent": used, "remaining_percent": _remaining(used),
            "reset_at": window.reset_at, "detail": detail if detail is not None else window.detail}


def _accounts(snap: Snapshot) -> tuple:
    """SPEC §18's accounts, where the snapshot has them (tolerated absent)."""
    return tuple(getattr(snap, "accounts", None) or ())


def _title(snap: Snapshot) -> str:
    return HERMES_TITLES.get(snap.provider or "") or snap.title or "Account limits"


def account_limits(snap: Snapshot, hidden: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """hermes-webui's ``account_limits`` for one snapshot; with several accounts, its pool."""
    accounts = _accounts(snap)
    if len(accounts) > 1:
        return pooled_limits(snap, accounts, hidden)
    reason = safe_reason(snap.unavailable_reason, hidden)
    windows = [window_dict(w) for w in snap.windows if w.label.strip()]
    return {"provider": snap.provider, "source": snap.source, "title": _title(snap),
            "plan": snap.plan, "windows": windows, "details": [d for d in snap.details if d.strip()],
            "available": _has_data(snap) and not reason, "unavailable_reason": reason,
            "fetched_at": snap.fetched_at}


def account_answer(provider: str, snap: Snapshot, hidden: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """hermes-webui's ``_provider_account_usage_status`` for a snapshot."""
    display = display_name(provider)
    if snap.error is not None and not _has_data(snap) and not _accounts(snap)[1:]:
        code = snap.error.code
        reason = None if code in CREDENTIAL_ERRORS else _error_reason(code, snap.error.message, hidden)
        return _account_unavailable(provider, display, None, reason)
    limits = account_limits(snap, hidden)
    if limits["available"]:
        return _envelope(provider, display, ok=True, supported=True, status="available",
                         label=limits["title"] or "Account limits", account_limits=limits,
                         message=f"{display} account limits loaded.")
    return _account_unavailable(provider, display, limits, limits["unavailable_reason"])


def _error_reason(code: str, message: str, hidden: Iterable[tuple[str, str]]) -> str | None:
    if code == "home_not_found":
        return "The home directory does not exist."
    return safe_reason(message, hidden)


def _account_unavailable(provider: str, display: str, limits: dict[str, Any] | None,
                         reason: str | None) -> dict[str, Any]:
    message = (f"{display} account limits are unavailable. {reason}" if reason
               else f"{display} account limits are unavailable. {CONFIRM_AUTH}")
    return _envelope(provider, display, ok=False, supported=True, status="unavailable", account_limits=limits,
                     message=message)


# -- pools ---------------------------------------------------------------------------------
def credential_row(account: Any, hidden: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """One account as a row of hermes-webui's ``pool.credentials``."""
    status = account.status
    if status == "available":
        reason = None
    elif status == "dead":
        reason = DEAD_REASON
    elif status == "exhausted":
        reason = "Credential pool marked this credential exhausted"
        reason += f"; retry after {account.retry_after}." if account.retry_after else "."
    else:
        reason = safe_reason(account.unavailable_reason or (account.error.message if account.error else None), hidden)
    return {"label": account.label, "status": status, "plan": account.plan,
            "windows": [window_dict(w) for w in account.windows if w.label.strip()],
            "details": [d for d in account.details if d.strip()], "unavailable_reason": reason,
            "retry_after": account.retry_after, "fetched_at": account.fetched_at}


def _earliest_reset(rows: list[dict[str, Any]]) -> str | None:
    """hermes-webui's ``next_reset_at``: the earliest window reset among the rows."""
    found = [(parse_instant(w["reset_at"]), w["reset_at"]) for row in rows for w in row["windows"] if w["reset_at"]]
    found = [(when, text) for when, text in found if when is not None]
    return min(found)[1] if found else None


def _counts(accounts: tuple) -> dict[str, int]:
    return {status: sum(1 for a in accounts if a.status == status) for status in ("available", "exhausted", "dead")}


def _summary(available: int, total: int, exhausted: int, dead: int, failed: int, plans: list[str]) -> list[str]:
    details = [f"{available}/{total} credentials available"]
    if exhausted:
        details.append(f"{exhausted} exhausted")
    if dead:
        details.append(f"{dead} dead")
    if failed:
        details.append(f"{failed} failed to load")
    if plans:
        details.append("Plans: " + ", ".join(plans))
    return details


def _best(pool: Any, accounts: tuple) -> list[dict[str, Any]]:
    """``pool.best`` (SPEC §18, ``probe.pool_view``) in hermes-webui's shape; the detail is
    that account's window detail, as hermes-webui copies it."""
    by_id = {a.id: a for a in accounts}
    best = []
    for entry in getattr(pool, "best", ()) or ():
        account = by_id.get(entry.account_id)
        window = next((w for w in (account.windows if account else ()) if w.label.lower() == entry.window.lower()),
                      None)
        best.append({"label": entry.window, "remaining_percent": _number(entry.remaining_percent),
                     "used_percent": _number(entry.used_percent), "reset_at": entry.reset_at,
                     "detail": window.detail if window else None, "credential_label": entry.account_label})
    return best


def _pool_reason(provider: str) -> str:
    name = "Codex" if provider == "openai-codex" else display_name(provider)
    return f"No {name} pool credentials returned available account limits."


def pooled_limits(snap: Snapshot, accounts: tuple, hidden: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """hermes-webui's pooled ``account_limits`` (its Codex pool, for every provider)."""
    rows = [credential_row(a, hidden) for a in accounts]
    pool = getattr(snap, "pool", None)
    counts = _counts(accounts)
    failed = getattr(pool, "failed", sum(1 for a in accounts if a.status == "unavailable"))
    plans = list(getattr(pool, "plans", ()) or dict.fromkeys(a.plan for a in accounts if a.plan))
    best = _best(pool, accounts)
    available = counts["available"]
    body = {"total_credentials": len(accounts), "queried_credentials": getattr(pool, "queried", 0),
            "available_credentials": available, "exhausted_credentials": counts["exhausted"],
            "dead_credentials": counts["dead"], "failed_credentials": failed, "plans": plans,
            "next_reset_at": _earliest_reset(rows), "best_remaining_by_window": best, "credentials": rows}
    detail = f"Best of {available} available credentials"
    windows = [{"label": b["label"], "used_percent": b["used_percent"], "remaining_percent": _remaining(b["used_percent"]),
                "reset_at": b["reset_at"], "detail": detail} for b in best]
    return {"provider": snap.provider, "source": f"{snap.source or 'usage_api'}_pool",
            "title": _title(snap), "plan": plans[0] if len(plans) == 1 else None,
            "windows": windows,
            "details": _summary(available, len(accounts), counts["exhausted"], counts["dead"], failed, plans),
            "available": available > 0, "unavailable_reason": None if available else _pool_reason(snap.provider or ""),
            "fetched_at": snap.fetched_at, "pool": body}


def local_pool_answer(provider: str, accounts: tuple, fetched_at: str | None = None) -> dict[str, Any]:
    """hermes-webui's local-pool answer (``_local_pool_snapshot``) for a pool-only id:
    Hermes' own records, no request; one row per account."""
    display = display_name(provider)
    rows = [credential_row(a) for a in accounts]
    counts = _counts(accounts)
    available, total = counts["available"], len(rows)
    limits = {"provider": provider, "source": "local_pool", "title": "Credential pool", "plan": None, "windows": [],
              "details": _summary(available, total, counts["exhausted"], counts["dead"], 0, []),
              "available": available > 0, "unavailable_reason": None if available else LOCAL_POOL_UNAVAILABLE,
              "fetched_at": fetched_at or utc_now_iso(),
              "pool": {"total_credentials": total, "queried_credentials": 0, "available_credentials": available,
                       "exhausted_credentials": counts["exhausted"], "dead_credentials": counts["dead"],
                       "failed_credentials": 0, "plans": [], "next_reset_at": None, "best_remaining_by_window": [],
                       "credentials": rows}}
    if available:
        return _envelope(provider, display, ok=True, supported=True, status="available", label="Credential pool",
                         account_limits=limits, message=f"{display} credential pool status loaded.")
    return _envelope(provider, display, ok=False, supported=True, status="unavailable", account_limits=limits,
                     message=f"{display} credential pool: all credentials are unavailable.")


# -- the in-process API ----------------------------------------------------------------------
def service_reads(service: Any, home: Any, hidden: tuple[tuple[str, str], ...] = (), *,
                  fetch: Callable[[str, bool], Snapshot] | None = None) -> HomeReads:
    """:class:`HomeReads` of ``home`` (a path) through ``service`` (a ProbeService);
    ``fetch`` replaces the service's own (the server's reader, which records readings)."""
    def unread(exc: Unanswered) -> Unread:
        return Unread("The home directory does not exist." if exc.code == "home_not_found" else
                      "This home's files could not be read in time. Try again.")

    def asked(question: Callable[[], Any]) -> Any:
        try:
            return question()
        except Unanswered as exc:
            raise unread(exc) from None

    def pool_accounts(name: str) -> tuple | None:
        try:
            return service.pool_accounts(name, home)
        except Unanswered as exc:
            if exc.code == "credentials_unreadable":   # hermes-webui: a pool it cannot load is no pool
                return None   # (its test_local_pool_snapshot_handles_load_pool_exception): unsupported
            raise unread(exc) from None

    return HomeReads(fetch=fetch or (lambda name, refresh: service.fetch(name, home=home, refresh=refresh)),
                     pool_accounts=pool_accounts,
                     active_provider=lambda: asked(lambda: service.active_provider(home)), hidden=hidden)


def provider_quota(provider: str | None = None, *, home: Any = None, refresh: bool = False) -> dict[str, Any]:
    """hermes-webui's ``get_provider_quota`` answer for ``provider`` in ``home`` (default:
    ``$HERMES_HOME``, else ``~/.hermes``, as every call of ``probe``), through the default
    service. ``provider`` None (or blank): the home's ``config.yaml`` ``model.provider``.
    ``refresh=True`` skips the cache, as hermes-webui's does. Never raises for provider-side
    trouble; ValueError for a ``home`` that is not a path."""
    import probe
    from probe.homes import home_path

    if not isinstance(refresh, bool):
        raise ValueError("refresh must be a bool")
    home_dir = home_path(home)
    return answer(provider, service_reads(probe._service(), home_dir, ((str(home_dir), "the home"),)), refresh=refresh)
