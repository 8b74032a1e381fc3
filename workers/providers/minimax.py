"""MiniMax Coding / Token Plan usage (PROVIDERS.md § minimax / minimax-cn).

**The trap:** ``current_interval_usage_count`` and ``current_weekly_usage_count`` are the
*remaining* counts despite their names, so used = total − usage_count (total 1000,
usage_count 250 → 75 % used). ``*_remaining_percent``, when sent, wins: used = 100 − it.

Two endpoints: ``/v1/token_plan/remains`` first, then the older
``/v1/api/openplatform/coding_plan/remains`` when the first answers 404/405 or a fine status
without ``model_remains``. A non-zero ``base_resp.status_code`` is an answer (an error),
never a reason to fall back. ``minimax-cn`` (:mod:`workers.providers.minimax_cn`) reads
the same paths at ``api.minimaxi.com`` through :func:`read` and :func:`normalize`.

Choices where PROVIDERS.md is silent:

* title "Coding Plan";
* an empty ``model_remains`` list counts as absent (fall back); a ``model_remains`` of
  another type than a list is ``bad_response``;
* when the first endpoint answered a fine body without ``model_remains`` and the fallback
  path answers 404/405, the first body is the answer (its plan and points are still
  true); any other failure of the fallback is the probe's failure;
* ``base_resp`` is looked for at the top first, then in ``data``; a ``status_code`` that is
  absent is fine; errors read "MiniMax rejected the API key (1004: …)." /
  "MiniMax reported an error (1008: …)." with the provider's ``status_msg``;
* a window's ``detail`` is ``"750 of 1,000 used"`` when its total count is positive
  (PROVIDERS.md names no unit for these counts, so none is invented);
  a window whose used share cannot be had from either rule is skipped; ``window_s`` is
  ``end − start`` only when both are times and the difference is positive;
* the points balance also gets the detail line ``"Points: 14,000"`` (a count, never a
  money symbol), so a plan with points but no window still shows something;
* nothing usable → ``unavailable_reason`` "MiniMax reported no plan usage for this
  account."
"""
from __future__ import annotations

from typing import Any

from workers.result import (ProbeFailure, as_dict, balance, count, epoch_seconds, first_text, number, provider_text,
                            result, run_pure, window)

LABEL = "MiniMax"
CREDENTIALS = [".env:MINIMAX_CODING_API_KEY", ".env:MINIMAX_API_KEY",
               "auth.json:credential_pool.minimax[].access_token"]
DEFAULT_BASE_URL = "https://api.minimax.io"
TOKEN_PLAN_PATH = "/v1/token_plan/remains"
CODING_PLAN_PATH = "/v1/api/openplatform/coding_plan/remains"
#: HTTP statuses of the first path that mean "ask the older path"
FALLBACK_STATUSES = (404, 405)
TITLE = "Coding Plan"
SOURCE = "usage_api"
UNAUTHORIZED_STATUS = 1004
UNAUTHORIZED_WORDS = ("invalid api key", "log in", "cookie")
#: label -> (remaining %, total count, "usage" count = remaining, start, end)
WINDOW_FIELDS = (
    ("Session", ("current_interval_remaining_percent", "current_interval_total_count",
                 "current_interval_usage_count", "start_time", "end_time")),
    ("Weekly", ("current_weekly_remaining_percent", "current_weekly_total_count",
                "current_weekly_usage_count", "weekly_start_time", "weekly_end_time")),
)
NO_CREDENTIAL = ("No MiniMax credential in this home (MINIMAX_CODING_API_KEY or MINIMAX_API_KEY in .env, "
                 "or a minimax entry in auth.json's credential_pool).")
NO_USAGE = "MiniMax reported no plan usage for this account."


def _payload(body: dict[str, Any]) -> dict[str, Any]:
    """``data`` in the current shape, the body itself in the legacy one."""
    data = body.get("data")
    return data if isinstance(data, dict) else body


def check_status(body: dict[str, Any]) -> None:
    """A non-zero ``base_resp.status_code`` → unauthorized (1004, or a message about an
    invalid key, logging in or a cookie) or provider_error."""
    for holder in (body, _payload(body)):
        resp = holder.get("base_resp")
        if not isinstance(resp, dict) or resp.get("status_code") is None:
            continue
        status = number(resp.get("status_code"))
        if status == 0:
            return
        shown = provider_text(str(resp["status_code"]), 20)   # as sent: "1004", never "1,004"
        text = provider_text(resp.get("status_msg"))
        what = f"{shown}: {text}" if text else f"status {shown}"
        lowered = (text or "").lower()
        if status == UNAUTHORIZED_STATUS or any(word in lowered for word in UNAUTHORIZED_WORDS):
            raise ProbeFailure("unauthorized", f"MiniMax rejected the API key ({what}).")
        raise ProbeFailure("provider_error", f"MiniMax reported an error ({what}).")


def needs_fallback(body: Any) -> bool:
    """True for a fine answer without ``model_remains`` (ask the older path); an error
    status or a body that is not an object is an answer as it stands."""
    if not isinstance(body, dict):
        return False
    try:
        check_status(body)
    except ProbeFailure:
        return False
    remains = _payload(body).get("model_remains")
    return remains is None or remains == []


def _entry(remains: list[Any]) -> dict[str, Any] | None:
    entries = [entry for entry in remains if isinstance(entry, dict)]
    return next((e for e in entries if e.get("model_name") == "general"), entries[0] if entries else None)


def plan_window(label: str, entry: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any] | None:
    """One window: used = 100 − remaining %, else (total − usage_count) / total × 100, where
    usage_count is the *remaining* count."""
    remaining_pct_key, total_key, left_key, start_key, end_key = fields
    total, left = number(entry.get(total_key)), number(entry.get(left_key))
    remaining_pct = number(entry.get(remaining_pct_key))
    has_counts = total is not None and total > 0 and left is not None
    if remaining_pct is not None:
        used = 100 - remaining_pct
    elif has_counts:
        used = (total - left) / total * 100
    else:
        return None
    detail = f"{count(total - left)} of {count(total)} used" if has_counts else None
    start, end = epoch_seconds(entry.get(start_key)), epoch_seconds(entry.get(end_key))
    length = end - start if start is not None and end is not None else None
    return window(label, used, entry.get(end_key), detail, window_s=length)


def normalize(body: Any) -> dict[str, Any]:
    """The §16 result from either remains endpoint, current (``data``) or legacy shape."""
    answer = as_dict(body, LABEL)
    check_status(answer)
    data = _payload(answer)
    remains = data.get("model_remains")
    if remains is not None and not isinstance(remains, list):
        raise ProbeFailure("bad_response", "The MiniMax plan response has an unexpected shape.")
    entry = _entry(remains or [])
    windows = [] if entry is None else [plan_window(label, entry, fields) for label, fields in WINDOW_FIELDS]
    windows = [w for w in windows if w is not None]
    points = balance("Points", data.get("points_balance"), "points", unit=True)
    details = [f"Points: {count(points['amount'])}"] if points else []
    return result(title=TITLE, source=SOURCE, windows=windows, details=details, balances=[points],
                  plan=first_text(data, "current_subscribe_title"),
                  unavailable_reason=None if windows or details else NO_USAGE)


def read(ctx: Any, default_base_url: str, token: str) -> dict[str, Any]:
    """Both paths in order (the fallback rule above); shared by minimax and minimax-cn."""
    base = ctx.base_url(default_base_url)
    try:
        first = ctx.get_json(base + TOKEN_PLAN_PATH, token=token)
    except ctx.Failure as exc:
        if exc.status not in FALLBACK_STATUSES:
            raise
        first = None
    if first is not None and not needs_fallback(first):
        return run_pure(ctx, normalize, first, secret=token)
    try:
        body = ctx.get_json(base + CODING_PLAN_PATH, token=token)
    except ctx.Failure as exc:
        if first is None or exc.status not in FALLBACK_STATUSES:
            raise
        body = first
    return run_pure(ctx, normalize, body, secret=token)


def probe(ctx: Any) -> dict[str, Any]:
    token = ctx.credential()
    if not token:
        ctx.fail("no_credentials", NO_CREDENTIAL)
    return read(ctx, DEFAULT_BASE_URL, token)
