"""The seven provider names added in 0.3, end to end: a real ProbeService (workers forked
from its template, the real pipe protocol, the parent's snapshot) against the real
emulator on 127.0.0.1 -- and ``probe fetch`` as a user runs it.

* every example body of PROVIDERS.md ("Providers added in 0.3"), served exactly
  (``Emulator.script``), gives exactly the windows, percentages, resets, ``window_s``,
  plan, balances (with their currency) and details written there;
* each provider's quirks, table-driven;
* the emulator's own deterministic bodies (no script) read correctly through the service;
* the error answers: 401 ``unauthorized``, 429 ``rate_limited`` with back-off (no second
  request), 5xx ``provider_error``, garbage ``bad_response``, the failures some providers
  report inside an HTTP 200, ``token_expired`` for an expired Nous login and
  ``no_credentials`` -- both without a request.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from probe.tools.demo import write_home
from probe.tools.emulator import (COPILOT_PATH, KIMI_BALANCE_PATH, KIMI_CN_BALANCE_PATH, KIMI_CODE_PATH, MINIMAX_CN_PATHS,
                            MINIMAX_PATHS, NOUS_PATH, ZAI_PATH)
from support import fresh, run_cli
from workers.providers import load
from workers.validate import to_snapshot

pytestmark = pytest.mark.timeout(60)
_unique = itertools.count()
#: provider -> the keyword of ``write_home`` that gives it a credential
HOME_KEY = {"zai": "zai", "kimi-coding": "kimi", "kimi-coding-cn": "kimi_cn", "minimax": "minimax",
            "minimax-cn": "minimax_cn", "copilot": "copilot", "nous": "nous"}
NEW = tuple(HOME_KEY)
#: provider -> the emulator path its first request goes to (kimi-coding: for a sk-kimi- key)
FIRST_PATH = {"zai": ZAI_PATH, "kimi-coding": KIMI_CODE_PATH, "kimi-coding-cn": KIMI_CN_BALANCE_PATH,
              "minimax": MINIMAX_PATHS[0], "minimax-cn": MINIMAX_CN_PATHS[0], "copilot": COPILOT_PATH,
              "nous": NOUS_PATH}



def W(label: str, used: float, reset: str | None, window_s: float | None, detail: str | None = None) -> dict:
    return {"label": label, "used_percent": used, "remaining_percent": round(100 - used, 2), "reset_at": reset,
            "detail": detail, "window_s": window_s}


def B(label: str, amount: float, currency: str) -> dict:
    return {"label": label, "amount": amount, "currency": currency}


def view(snap) -> dict[str, Any]:
    """What a test compares: the snapshot without where and when it was read, windows
    without their pace (the examples' resets are fixed instants; pace depends on now)."""
    data = snap.to_dict()
    for key in ("home", "fetched_at", "probe", "stale", "provider"):
        data.pop(key)
    # one account (SPEC §18): the snapshot is that account's reading; test_accounts covers the list
    assert len(data.pop("accounts")) <= 1 and data.pop("pool") is None
    data["windows"] = [{k: v for k, v in w.items() if k != "pace"} for w in data["windows"]]
    return data


def ok(*, title: str, source: str, windows=(), details=(), balances=(), plan=None, reason=None) -> dict[str, Any]:
    return {"available": reason is None, "title": title, "plan": plan, "source": source, "windows": list(windows),
            "details": list(details), "balances": list(balances), "unavailable_reason": reason, "error": None}


@dataclass
class Case:
    """One row: ``provider`` with a token made from ``prefix`` (a marker in it selects an
    emulator scenario); ``scripts`` are (path or None, body, status) the emulator serves for
    that token; ``expected`` the snapshot (``view``), or ``error`` (code, a piece of the
    message) for a failure. ``env``: more .env lines; ``paths``: the request paths the
    emulator must have seen, in order."""

    id: str
    provider: str
    prefix: str = "key"
    scripts: list[tuple[str | None, Any, int]] = field(default_factory=list)
    expected: dict[str, Any] | None = None
    error: tuple[str, str] | None = None
    env: str = ""
    paths: list[str] | None = None


def run_case(emulator, service, tmp_path: Path, case: Case) -> tuple[str, list[str]]:
    """Fetch one case through the service; returns (token, what went wrong)."""
    token = fresh(case.prefix)
    for path, body, status in case.scripts:
        emulator.script(token, body, status=status, path=path)
    home = write_home(tmp_path / "homes", fresh(case.provider), **{HOME_KEY[case.provider]: token})
    if case.env:
        with (home / ".env").open("a") as env:
            env.write(case.env)
    snap = service.fetch(case.provider, home=home, refresh=True)
    problems = []
    if case.error is not None:
        code, message = case.error
        if snap.error is None or snap.error.code != code or message not in snap.error.message:
            problems.append(f"{case.id}: expected {case.error}, got {snap.error}")
        elif snap.available or snap.windows or snap.balances:
            problems.append(f"{case.id}: an error snapshot with data")
    elif view(snap) != case.expected:
        problems.append(f"{case.id}:\n  got      {view(snap)}\n  expected {case.expected}")
    if case.paths is not None:
        seen = [r.path for r in emulator.requests() if r.token == token]
        if seen != case.paths:
            problems.append(f"{case.id}: requests {seen}, expected {case.paths}")
    return token, problems


# -- the PROVIDERS.md examples, served exactly ----------------------------------------------
ZAI_EXAMPLE = {"code": 200, "msg": "success", "success": True, "data": {"planName": "Pro", "limits": [
    {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 25, "nextResetTime": 1785816000000},
    {"type": "TOKENS_LIMIT", "unit": 6, "number": 1, "percentage": 9, "nextResetTime": 1786291200000},
    {"type": "TIME_LIMIT", "unit": 5, "number": 1, "usage": 1000, "currentValue": 224, "remaining": 776,
     "percentage": 22}]}}
KIMI_CODE_EXAMPLE = {"usage": {"limit": "2048", "used": "214", "remaining": "1834",
                               "resetTime": "2026-01-09T15:23:13.716839300Z"},
                     "limits": [{"window": {"duration": 300, "timeUnit": "TIME_UNIT_MINUTE"},
                                 "detail": {"limit": "200", "used": "139", "remaining": "61",
                                            "resetTime": "2026-01-06T13:33:02.717479433Z"}}]}
MOONSHOT_EXAMPLE = {"code": 0, "data": {"available_balance": 49.58, "voucher_balance": 50.00, "cash_balance": 12.34},
                    "scode": "0x0", "status": True}
MINIMAX_EXAMPLE = {"base_resp": {"status_code": 0, "status_msg": "success"}, "data": {
    "current_subscribe_title": "Token Plan Plus", "points_balance": "14000", "model_remains": [{
        "model_name": "general", "current_interval_total_count": 0, "current_interval_usage_count": 0,
        "current_interval_remaining_percent": "96", "start_time": 1780279200000, "end_time": 1780297200000,
        "current_weekly_total_count": 0, "current_weekly_usage_count": 0, "current_weekly_remaining_percent": "99",
        "weekly_start_time": 1780243200000, "weekly_end_time": 1780848000000}]}}
MINIMAX_LEGACY_EXAMPLE = {"base_resp": {"status_code": 0}, "current_subscribe_title": "Max", "model_remains": [{
    "current_interval_total_count": 1000, "current_interval_usage_count": 250, "start_time": 1780279200000,
    "end_time": 1780297200000}]}
COPILOT_EXAMPLE = {"copilot_plan": "pro", "quota_reset_date": "2026-09-01", "quota_snapshots": {
    "premium_interactions": {"entitlement": 300, "remaining": 240, "percent_remaining": 80, "unlimited": False},
    "chat": {"entitlement": 0, "remaining": 0, "percent_remaining": 100, "unlimited": True}},
    "monthly_quotas": {"chat": 500, "completions": 4000}, "limited_user_quotas": {"chat": 410, "completions": 3990}}
COPILOT_FREE = {"copilot_plan": "free", "quota_reset_date": "2026-09-01", "monthly_quotas": {"chat": 500,
                "completions": 4000}, "limited_user_quotas": {"chat": 410, "completions": 3990}}
#: PROVIDERS.md names the Nous fields without a whole body: these are its fields, filled in
NOUS_EXAMPLE = {"subscription": {"plan": "Plus", "tier": "plus", "current_period_end": "2026-09-01T00:00:00Z",
                                 "credits_remaining": 12, "monthly_credits": 20, "rollover_credits": 0},
                "paid_service_access": {"allowed": True, "purchased_credits_remaining": 5, "total_usable_credits": 17}}

ZAI = {"title": "GLM Coding Plan", "source": "quota_api"}
KIMI_CODE = {"title": "Kimi Code", "source": "usage_api"}
MOONSHOT = {"title": "Moonshot balance", "source": "balance_api"}
MINIMAX = {"title": "Coding Plan", "source": "usage_api"}
COPILOT = {"title": "Monthly quotas", "source": "copilot_internal"}
NOUS = {"title": "Account credits", "source": "portal_account"}
MINIMAX_SESSION_AND_WEEK = [W("Session", 4.0, "2026-06-01T07:00:00Z", 18000), W("Weekly", 1.0, "2026-06-07T16:00:00Z",
                                                                                604800)]
MOONSHOT_USD = ok(**MOONSHOT, details=["Balance: $49.58 (voucher $50.00, cash $12.34)"],
                  balances=[B("Available", 49.58, "USD"), B("Voucher", 50.0, "USD"), B("Cash", 12.34, "USD")])

EXAMPLES = [
    Case("zai example", "zai", scripts=[(None, ZAI_EXAMPLE, 200)], paths=[ZAI_PATH], expected=ok(
        **ZAI, plan="Pro", windows=[W("Session", 25.0, "2026-08-04T04:00:00Z", 18000),
                                    W("Weekly", 9.0, "2026-08-09T16:00:00Z", 604800),
                                    W("Tool calls (month)", 22.4, None, 30 * 86400, "224 of 1,000 tool calls used")])),
    Case("kimi-coding example (Kimi Code key)", "kimi-coding", "sk-kimi-key", [(None, KIMI_CODE_EXAMPLE, 200)],
         paths=[KIMI_CODE_PATH], expected=ok(**KIMI_CODE, windows=[
             W("Rate window", 69.5, "2026-01-06T13:33:02Z", 18000, "139 of 200 requests used"),
             W("Weekly", 10.45, "2026-01-09T15:23:13Z", 604800, "214 of 2,048 requests used")])),
    Case("kimi-coding example (Moonshot key)", "kimi-coding", "sk-moonshot", [(None, MOONSHOT_EXAMPLE, 200)],
         paths=[KIMI_BALANCE_PATH], expected=MOONSHOT_USD),
    Case("kimi-coding-cn example", "kimi-coding-cn", scripts=[(None, MOONSHOT_EXAMPLE, 200)],
         paths=[KIMI_CN_BALANCE_PATH], expected=ok(
             **MOONSHOT, details=["Balance: ¥49.58 (voucher ¥50.00, cash ¥12.34)"],
             balances=[B("Available", 49.58, "CNY"), B("Voucher", 50.0, "CNY"), B("Cash", 12.34, "CNY")])),
    Case("minimax example", "minimax", scripts=[(None, MINIMAX_EXAMPLE, 200)], paths=[MINIMAX_PATHS[0]],
         expected=ok(**MINIMAX, plan="Token Plan Plus", windows=MINIMAX_SESSION_AND_WEEK, details=["Points: 14,000"],
                     balances=[B("Points", 14000.0, "points")])),
    Case("minimax legacy example (token plan 404)", "minimax",
         scripts=[(MINIMAX_PATHS[0], {"base_resp": {"status_code": 404}}, 404),
                  (MINIMAX_PATHS[1], MINIMAX_LEGACY_EXAMPLE, 200)],
         paths=list(MINIMAX_PATHS), expected=ok(**MINIMAX, plan="Max", windows=[
             W("Session", 75.0, "2026-06-01T07:00:00Z", 18000, "750 of 1,000 used")])),
    Case("minimax-cn example", "minimax-cn", scripts=[(None, MINIMAX_EXAMPLE, 200)], paths=[MINIMAX_CN_PATHS[0]],
         expected=ok(**MINIMAX, plan="Token Plan Plus", windows=MINIMAX_SESSION_AND_WEEK, details=["Points: 14,000"],
                     balances=[B("Points", 14000.0, "points")])),
    Case("copilot example", "copilot", "github_pat", [(None, COPILOT_EXAMPLE, 200)], paths=[COPILOT_PATH],
         expected=ok(**COPILOT, plan="pro", windows=[
             W("Premium requests", 20.0, "2026-09-01T00:00:00Z", None, "240 of 300 remaining")])),
    Case("copilot free plan example", "copilot", "github_pat", [(None, COPILOT_FREE, 200)], expected=ok(
        **COPILOT, plan="free", windows=[W("Completions", 0.25, "2026-09-01T00:00:00Z", None, "3,990 of 4,000 remaining"),
                                         W("Chat", 18.0, "2026-09-01T00:00:00Z", None, "410 of 500 remaining")])),
    Case("nous example", "nous", scripts=[(None, NOUS_EXAMPLE, 200)], paths=[NOUS_PATH], expected=ok(
        **NOUS, plan="Plus", windows=[W("Subscription", 40.0, "2026-09-01T00:00:00Z", None, "$12.00 of $20.00 remaining")],
        details=["Credits: $17.00 usable (subscription $12.00, top-up $5.00)"],
        balances=[B("Subscription credits", 12.0, "USD"), B("Top-up credits", 5.0, "USD"),
                  B("Total usable", 17.0, "USD")])),
]

# -- quirks ---------------------------------------------------------------------------------
QUIRKS = [
    Case("zai: decimal strings everywhere, plan from plan_type, one limit is the Session", "zai", scripts=[(None, {
        "code": "200", "msg": "ok", "success": True, "data": {"plan_type": "Lite", "limits": [
            {"type": "TOKENS_LIMIT", "unit": "3", "number": "5", "percentage": "40",
             "nextResetTime": "1785816000000"}]}}, 200)],
        expected=ok(**ZAI, plan="Lite", windows=[W("Session", 40.0, "2026-08-04T04:00:00Z", 18000)])),
    Case("zai: limits sorted by length, the middle one labelled by it", "zai", scripts=[(None, {
        "code": 200, "success": True, "data": {"planName": "Max", "limits": [
            {"type": "TOKENS_LIMIT", "unit": 6, "number": 1, "percentage": 9, "nextResetTime": 1786291200000},
            {"type": "CREDIT_LIMIT", "unit": 1, "number": 1, "percentage": 50, "nextResetTime": 1785888000000},
            {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 25, "nextResetTime": 1785816000000},
            {"type": "SOMETHING_NEW", "unit": 3, "number": 1, "percentage": 99}]}}, 200)],
        expected=ok(**ZAI, plan="Max", windows=[W("Session", 25.0, "2026-08-04T04:00:00Z", 18000),
                                                W("1-day", 50.0, "2026-08-05T00:00:00Z", 86400),
                                                W("Weekly", 9.0, "2026-08-09T16:00:00Z", 604800)])),
    Case("zai: a TIME_LIMIT without counts keeps its percentage and reset", "zai", scripts=[(None, {
        "code": 200, "success": True, "data": {"limits": [
            {"type": "TIME_LIMIT", "unit": 5, "number": 1, "percentage": 22, "nextResetTime": 1788220800000}]}}, 200)],
        expected=ok(**ZAI, windows=[W("Tool calls (month)", 22.0, "2026-09-01T00:00:00Z", 30 * 86400)])),
    Case("zai: success false inside an HTTP 200", "zai", "key-bodyerror-",
         error=("provider_error", "The service is busy, please try again later.")),
    Case("zai: a refusal inside an HTTP 200 is still provider_error, with its msg", "zai", "key-bodydenied-",
         error=("provider_error", "The authorization token is invalid or has expired.")),
    Case("zai: GLM_BASE_URL on the China host loses to PROBE_ZAI_BASE_URL", "zai",
         scripts=[(None, ZAI_EXAMPLE, 200)], env="GLM_BASE_URL=https://open.bigmodel.cn/api/paas/v4\n",
         paths=[ZAI_PATH], expected=EXAMPLES[0].expected),
    Case("kimi: no used count, resetAt alias, no window spec (300 minutes)", "kimi-coding", "sk-kimi-key", [(None, {
        "usage": {"limit": "100", "remaining": "25", "resetAt": "2026-01-09T15:23:13.123456789Z"},
        "limits": [{"detail": {"limit": "50", "used": "5", "reset_time": "2026-01-06T13:33:02Z"}}]}, 200)],
        expected=ok(**KIMI_CODE, windows=[W("Rate window", 10.0, "2026-01-06T13:33:02Z", 18000, "5 of 50 requests used"),
                                          W("Weekly", 75.0, "2026-01-09T15:23:13Z", 604800, "75 of 100 requests used")])),
    Case("kimi: a window in hours", "kimi-coding", "sk-kimi-key", [(None, {
        "limits": [{"window": {"duration": 5, "timeUnit": "TIME_UNIT_HOUR"},
                    "detail": {"limit": "200", "used": "0", "remaining": "200",
                               "resetTime": "2026-01-06T13:33:02.717479433Z"}}]}, 200)],
        expected=ok(**KIMI_CODE, windows=[W("Rate window", 0.0, "2026-01-06T13:33:02Z", 18000, "0 of 200 requests used")])),
    Case("moonshot: a negative cash balance is a deficit, zero balances listed", "kimi-coding", "sk-ms", [(None, {
        "code": 0, "data": {"available_balance": 47.0, "voucher_balance": 0, "cash_balance": -3.0},
        "scode": "0x0", "status": True}, 200)],
        expected=ok(**MOONSHOT, details=["Balance: $47.00 (voucher $0.00, cash -$3.00)"],
                    balances=[B("Available", 47.0, "USD"), B("Voucher", 0.0, "USD"), B("Cash", -3.0, "USD")])),
    Case("moonshot: code != 0 with scode unauthorized", "kimi-coding", "sk-ms-bodydenied-",
         error=("unauthorized", "Moonshot rejected the API key")),
    Case("moonshot: code != 0 names its scode", "kimi-coding-cn", "sk-ms-bodyerror-",
         error=("provider_error", "Moonshot reported an error (0x3).")),
    Case("minimax: usage_count is the count LEFT (counts only, current shape)", "minimax", scripts=[(None, {
        "base_resp": {"status_code": 0}, "data": {"current_subscribe_title": "Token Plan Max", "model_remains": [
            {"model_name": "video", "current_interval_total_count": 5, "current_interval_usage_count": 5,
             "start_time": 1780279200000, "end_time": 1780297200000},
            {"model_name": "general", "current_interval_total_count": "1500", "current_interval_usage_count": "1200",
             "start_time": 1780279200000, "end_time": 1780297200000, "current_weekly_total_count": 15000,
             "current_weekly_usage_count": 3000, "weekly_start_time": 1780243200000,
             "weekly_end_time": 1780848000000}]}}, 200)],
        expected=ok(**MINIMAX, plan="Token Plan Max", windows=[
            W("Session", 20.0, "2026-06-01T07:00:00Z", 18000, "300 of 1,500 used"),
            W("Weekly", 80.0, "2026-06-07T16:00:00Z", 604800, "12,000 of 15,000 used")])),
    Case("minimax: a fine body without model_remains falls back to the coding plan", "minimax",
         scripts=[(MINIMAX_PATHS[0], {"base_resp": {"status_code": 0}, "data": {"current_subscribe_title": "Plus"}}, 200),
                  (MINIMAX_PATHS[1], MINIMAX_LEGACY_EXAMPLE, 200)], paths=list(MINIMAX_PATHS),
         expected=ok(**MINIMAX, plan="Max", windows=[W("Session", 75.0, "2026-06-01T07:00:00Z", 18000,
                                                       "750 of 1,000 used")])),
    Case("minimax: status 1004 is unauthorized, and no fallback", "minimax", "mm-bodydenied-",
         paths=[MINIMAX_PATHS[0]], error=("unauthorized", "MiniMax rejected the API key (1004")),
    Case("minimax-cn: another non-zero status is provider_error", "minimax-cn", "mm-bodyerror-",
         paths=[MINIMAX_CN_PATHS[0]], error=("provider_error", "MiniMax reported an error (1000: unknown error).")),
    Case("minimax: 401 on the token plan is an answer, not a reason to fall back", "minimax", "mm-401-",
         paths=[MINIMAX_PATHS[0]], error=("unauthorized", "")),
    Case("copilot: every snapshot unlimited", "copilot", "github_pat", [(None, {
        "copilot_plan": "business", "quota_reset_date": "2026-09-01", "quota_snapshots": {
            "premium_interactions": {"entitlement": 0, "remaining": 0, "percent_remaining": 100, "unlimited": True},
            "chat": {"unlimited": True}}}, 200)],
        expected=ok(**COPILOT, plan="business", reason="GitHub Copilot reports unlimited usage on this plan.")),
    Case("copilot: counts without percent_remaining, an ISO reset", "copilot", "github_pat", [(None, {
        "copilot_plan": "pro_plus", "quota_reset_date": "2026-09-01T00:00:00.000Z", "quota_snapshots": {
            "premium_interactions": {"entitlement": 1500, "remaining": 1125, "unlimited": False}}}, 200)],
        expected=ok(**COPILOT, plan="pro_plus", windows=[W("Premium requests", 25.0, "2026-09-01T00:00:00Z", None,
                                                           "1,125 of 1,500 remaining")])),
    Case("nous: top-level error string", "nous", "nous-bodyerror-",
         error=("provider_error", "This account is suspended; contact support.")),
    Case("nous: no usable credits", "nous", "nous-nocredits-", expected=ok(
        **NOUS, details=["Credits: $0.00 usable (top-up $0.00)"], reason="Nous Portal reports no usable credits.",
        balances=[B("Top-up credits", 0.0, "USD"), B("Total usable", 0.0, "USD")])),
    Case("nous: credits out of range give no window, balances stay", "nous", scripts=[(None, {
        "subscription": {"plan": "Pro", "credits_remaining": 60, "monthly_credits": 50,
                         "current_period_end": "2026-09-01T00:00:00Z"},
        "paid_service_access": {"allowed": True, "total_usable_credits": "60.5"}}, 200)],
        expected=ok(**NOUS, plan="Pro", details=["Credits: $60.50 usable (subscription $60.00)"],
                    balances=[B("Subscription credits", 60.0, "USD"), B("Total usable", 60.5, "USD")])),
]


def run_table(emulator, service, tmp_path, cases: list[Case]) -> None:
    problems = [problem for case in cases for problem in run_case(emulator, service, tmp_path, case)[1]]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("table", ["examples", "quirks"])
def test_the_providers_md_examples_and_quirks(emulator, make_service, tmp_path, table):
    """Each row through the service's warm pool: a fresh home, the body served exactly,
    the snapshot compared whole."""
    run_table(emulator, make_service(pool_size=1), tmp_path, EXAMPLES if table == "examples" else QUIRKS)


# -- the emulator's own bodies, read through the service --------------------------------------
def expected_from_body(provider: str, body: Any) -> dict[str, Any]:
    """What the provider's module makes of a served body (the pipeline must deliver exactly
    that), as the worker's snapshot dict."""
    loaded = load(provider)
    normalize = getattr(loaded.module, "normalize", None)
    if provider == "kimi-coding":
        from workers.providers import kimi

        normalize = kimi.normalize_usage if "usage" in body or "limits" in body else kimi.normalize_balance
    snap = to_snapshot(provider, loaded.label, normalize(body))
    return {k: v for k, v in snap.items() if k != "provider"}


def served(emulator, token: str, path: str) -> Any:
    request = [r for r in emulator.requests() if r.token == token and r.path == path][-1]
    return emulator.quota_body(path, token, request.now)


MODEL_CASES = [  # (provider, token prefix, the path whose body becomes the snapshot)
    ("zai", "glm", ZAI_PATH), ("kimi-coding", "sk-kimi-model", KIMI_CODE_PATH),
    ("kimi-coding", "moonshot", KIMI_BALANCE_PATH), ("kimi-coding-cn", "moonshot-cn", KIMI_CN_BALANCE_PATH),
    ("minimax", "mm", MINIMAX_PATHS[0]), ("minimax", "mm-legacy-", MINIMAX_PATHS[1]),
    ("minimax-cn", "mmcn", MINIMAX_CN_PATHS[0]), ("copilot", "github_pat", COPILOT_PATH),
    ("copilot", "github_pat-free-", COPILOT_PATH), ("nous", "nous", NOUS_PATH),
]


def test_the_emulators_own_bodies_read_through_the_service(emulator, make_service, tmp_path):
    """No script: each provider reads the emulator's deterministic, realistic body for its
    token, and the snapshot is exactly what the provider module makes of that body --
    with the wire quirks read right (spot checks against the raw body)."""
    service = make_service(pool_size=1)
    problems = []
    for provider, prefix, path in MODEL_CASES:
        for n in range(3):
            token = fresh(f"{prefix}{n}")
            home = write_home(tmp_path / "homes", fresh(provider), **{HOME_KEY[provider]: token})
            snap = service.fetch(provider, home=home, refresh=True)
            body = served(emulator, token, path)
            got = {k: v for k, v in view(snap).items()}
            want = expected_from_body(provider, body)
            want["windows"] = [{k: w[k] for k in ("label", "used_percent", "remaining_percent", "reset_at", "detail",
                                                  "window_s")} for w in want["windows"]]
            if got != want:
                problems.append(f"{provider} {token}: {got} != {want}")
            if not snap.available:
                problems.append(f"{provider} {token}: unavailable {snap.unavailable_reason} {snap.error}")
            spot_check(provider, path, body, snap, problems)
    assert not problems, "\n".join(problems)


def spot_check(provider: str, path: str, body: Any, snap, problems: list[str]) -> None:
    """A few facts read straight off the raw body: the quirks must be read, not guessed."""
    windows = {w.label: w for w in snap.windows}
    if provider == "zai":
        session = next(x for x in body["data"]["limits"] if x["unit"] == 3)
        if windows["Session"].used_percent != session["percentage"] or windows["Session"].window_s != 18000 or \
                windows["Session"].reset_at != time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime(session["nextResetTime"] // 1000)):
            problems.append(f"zai Session misread: {windows['Session']} from {session}")
        tools = next(x for x in body["data"]["limits"] if x["type"] == "TIME_LIMIT")
        if windows["Tool calls (month)"].used_percent != round(tools["currentValue"] / tools["usage"] * 100, 2):
            problems.append("zai tool calls misread")
    elif path == KIMI_CODE_PATH:
        weekly = body["usage"]
        used = int(weekly["limit"]) - int(weekly["remaining"])
        if windows["Weekly"].used_percent != round(used / int(weekly["limit"]) * 100, 2) or \
                windows["Weekly"].reset_at != weekly["resetTime"][:19] + "Z":
            problems.append(f"kimi Weekly misread: {windows['Weekly']} from {weekly}")
    elif provider.startswith("minimax") and path in (MINIMAX_PATHS[0], MINIMAX_CN_PATHS[0]):
        general = next(e for e in body["data"]["model_remains"] if e["model_name"] == "general")
        if general["current_interval_total_count"]:
            total, left = general["current_interval_total_count"], general["current_interval_usage_count"]
            expected = round((total - left) / total * 100, 2)       # usage_count is what is LEFT
        else:
            expected = 100 - float(general["current_interval_remaining_percent"])
        if windows["Session"].used_percent != expected or windows["Session"].window_s != 18000:
            problems.append(f"minimax Session misread: {windows['Session']} from {general}")
        if [(b.label, b.amount, b.currency) for b in snap.balances] != [
                ("Points", float(body["data"]["points_balance"]), "points")]:
            problems.append(f"minimax points misread: {snap.balances}")
    elif provider == "copilot":
        if any(w.reset_at != body["quota_reset_date"] + "T00:00:00Z" or w.window_s is not None for w in snap.windows):
            problems.append(f"copilot reset misread: {snap.windows}")
    elif provider == "nous" and body["subscription"]:
        sub = body["subscription"]
        if windows["Subscription"].reset_at != sub["current_period_end"][:19] + "Z":
            problems.append("nous period end misread")
        if {b.label: b.currency for b in snap.balances} != {"Subscription credits": "USD", "Top-up credits": "USD",
                                                            "Total usable": "USD"}:
            problems.append(f"nous balances misread: {snap.balances}")


# -- the error answers ----------------------------------------------------------------------
def token_prefix(provider: str) -> str:
    return "sk-kimi-err" if provider == "kimi-coding" else "err"


@pytest.mark.parametrize("provider", NEW)
def test_error_answers_through_the_service(emulator, make_service, tmp_path, provider):
    """401, 500 and garbage map to their codes; a 429 is rate_limited and backs off: the
    next fetch (even refresh=True) makes no request; a home without the credential is
    no_credentials without a request."""
    service = make_service(pool_size=1)
    prefix = token_prefix(provider)
    for marker, code in (("-401-", "unauthorized"), ("-500-", "provider_error"), ("-garbage-", "bad_response")):
        token = fresh(f"{prefix}{marker}")
        snap = service.fetch(provider, home=write_home(tmp_path / "h", fresh(provider), **{HOME_KEY[provider]: token}),
                             refresh=True)
        assert snap.error is not None and snap.error.code == code, (marker, snap.error)
        assert [r.path for r in emulator.requests() if r.token == token] == [FIRST_PATH[provider]]   # no fallback
    limited = fresh(f"{prefix}-429-")
    home = write_home(tmp_path / "h", fresh(provider), **{HOME_KEY[provider]: limited})
    first = service.fetch(provider, home=home, refresh=True)
    assert first.error.code == "rate_limited" and "7 s" in first.error.message
    asked = emulator.count(token=limited)
    again = service.fetch(provider, home=home, refresh=True)
    assert again.error.code == "rate_limited" and emulator.count(token=limited) == asked   # backed off
    before = emulator.count()
    empty = service.fetch(provider, home=write_home(tmp_path / "h", fresh("empty")), refresh=True)
    assert empty.error.code == "no_credentials" and empty.error.message.startswith("No ")
    assert emulator.count() == before


def test_a_hung_provider_times_out_and_the_worker_serves_the_next_caller(emulator, make_service, make_home):
    service = make_service(pool_size=1)
    home = make_home(fresh("hang"), zai=fresh("glm-hang-"), minimax=fresh("mm"))
    hung = service.fetch("zai", home=home, refresh=True, timeout=1.0)
    assert hung.error.code == "timeout"
    after = service.fetch("minimax", home=home, refresh=True)
    assert after.available and after.probe.path in ("warm", "slot_start")


def test_an_expired_nous_login_is_token_expired_without_a_request(emulator, make_service, tmp_path):
    service = make_service(pool_size=1)
    token = fresh("nous-expired")
    home = write_home(tmp_path, "nous-expired", nous=token, nous_expires_at="2024-02-03T04:05:06Z")
    snap = service.fetch("nous", home=home, refresh=True)
    assert snap.error.code == "token_expired" and not snap.available
    assert snap.error.message == ("The Nous Portal login expired at 2024-02-03T04:05:06Z. "
                                  "Open Hermes once to refresh the Nous login.")
    assert emulator.count(token=token) == 0 and token not in json.dumps(snap.to_dict())
    # the pool entry with the latest expiry is the one that counts, expired or not
    pool_home = write_home(tmp_path, "nous-pool")
    fresh_token, old_token = fresh("nous-pool-ok"), fresh("nous-pool-old")
    (pool_home / "auth.json").write_text(json.dumps({"credential_pool": {"nous": [
        {"access_token": old_token, "auth_type": "oauth", "expires_at": "2024-01-01T00:00:00Z"},
        {"access_token": fresh_token, "auth_type": "oauth", "expires_at": "2099-01-01T00:00:00Z"}]}}))
    assert service.fetch("nous", home=pool_home, refresh=True).available
    assert emulator.count(token=fresh_token) == 1 and emulator.count(token=old_token) == 0


def test_nous_reads_the_logins_own_portal_when_no_override(emulator, make_service, tmp_path, monkeypatch):
    monkeypatch.delenv("PROBE_NOUS_BASE_URL", raising=False)
    urls = {name: url for name, url in emulator.provider_urls().items() if name != "nous"}
    service = make_service(pool_size=1, provider_urls=urls)
    token = fresh("nous-portal")
    home = write_home(tmp_path, "nous-portal")
    (home / "auth.json").write_text(json.dumps({"providers": {"nous": {
        "access_token": token, "expires_at": "2099-01-01T00:00:00Z", "portal_base_url": emulator.base_url + "/"}}}))
    assert service.fetch("nous", home=home, refresh=True).available
    assert [r.path for r in emulator.requests() if r.token == token] == [NOUS_PATH]


def test_kimi_routes_by_kind_of_key_and_copilot_sends_githubs_scheme(emulator, make_service, make_home):
    service = make_service(pool_size=1)
    code_key, platform_key = fresh("sk-kimi-route"), fresh("sk-route")
    for key in (code_key, platform_key):
        assert service.fetch("kimi-coding", home=make_home(fresh("kimi"), kimi=key), refresh=True).available
    assert [r.path for r in emulator.requests() if r.token == code_key] == [KIMI_CODE_PATH]
    assert [r.path for r in emulator.requests() if r.token == platform_key] == [KIMI_BALANCE_PATH]
    # Copilot: the first token that is not a classic ghp_ one, sent as "token <x>" with the API version
    classic, usable = fresh("ghp_classic"), fresh("github_pat_route")
    home = make_home(fresh("copilot"))
    (home / ".env").write_text(f"COPILOT_GITHUB_TOKEN={classic}\nGH_TOKEN={usable}\n")
    assert service.fetch("copilot", home=home, refresh=True).available
    request = [r for r in emulator.requests() if r.token == usable][-1]
    assert request.headers["authorization"] == f"token {usable}"
    assert request.headers["x-github-api-version"] == "2025-04-01" and request.headers["accept"] == "application/json"
    assert emulator.count(token=classic) == 0
    only_classic = make_home(fresh("copilot-classic"), copilot=fresh("ghp_only"))
    before = emulator.count()
    snap = service.fetch("copilot", home=only_classic, refresh=True)
    assert snap.error.code == "no_credentials" and "ghp_" in snap.error.message and emulator.count() == before


# -- probe fetch, as a user runs it ---------------------------------------------------------
ALL_ELEVEN = ["anthropic", "openai-codex", "openrouter", "deepseek", "zai", "kimi-coding", "kimi-coding-cn",
              "minimax", "minimax-cn", "copilot", "nous"]


def test_probe_fetch_shows_all_eleven_built_ins_and_a_pool_only_provider_side_by_side(emulator, tmp_path):
    """Issue #20's target: a home with all eleven built-in credentials plus a provider only
    Hermes' credential_pool records (xai) shows every one of them, in SPEC §17's order."""
    home = write_home(tmp_path, "eleven", anthropic="sk-ant-oat01-eleven", codex="codex-eleven",
                      openrouter="sk-or-v1-eleven", deepseek="sk-eleven", zai="glm-eleven", kimi="sk-kimi-eleven",
                      kimi_cn="ms-cn-eleven", minimax="mm-eleven", minimax_cn="mmcn-eleven",
                      copilot="github_pat_eleven", nous="nous-eleven")
    auth = json.loads((home / "auth.json").read_text())
    auth.setdefault("credential_pool", {})["xai"] = [
        {"label": "team key", "auth_type": "api_key", "access_token": "xai-eleven", "last_status": "ok"}]
    (home / "auth.json").write_text(json.dumps(auth))
    result = run_cli("fetch", "--home", str(home), "--json", env=emulator.env())
    assert result.returncode == 0, result.stdout + result.stderr
    snaps = json.loads(result.stdout)
    assert [s["provider"] for s in snaps] == ALL_ELEVEN + ["xai"]
    pool_only = snaps[-1]
    assert (pool_only["source"], pool_only["details"], pool_only["available"]) == (
        "credential_pool", ["team key: ok"], True)
    assert emulator.count(token="xai-eleven") == 0      # Hermes' records: no request made
    snaps = snaps[:-1]
    assert all(s["available"] and s["error"] is None for s in snaps), [s["error"] for s in snaps]
    by_name = {s["provider"]: s for s in snaps}
    assert by_name["kimi-coding-cn"]["balances"][0]["currency"] == "CNY"
    assert by_name["minimax"]["balances"][0]["currency"] == "points"
    text = run_cli("fetch", "--home", str(home), env=emulator.env())
    assert text.returncode == 0
    heads = [line.split(" — ")[0] for line in text.stdout.splitlines() if " — " in line and not line.startswith(" ")]
    assert heads == ALL_ELEVEN + ["xai"]
    assert "Points: " in text.stdout and "Balance: ¥" in text.stdout and "Tool calls (month)" in text.stdout
    assert "eleven" not in text.stdout.replace(str(home), "")


def test_probe_fetch_of_one_new_provider_and_its_errors(emulator, tmp_path):
    token, nous_token, minimax_token = fresh("sk-kimi-cli"), fresh("nous-cli"), fresh("mm-cli-bodydenied-")
    emulator.script(token, KIMI_CODE_EXAMPLE)
    home = write_home(tmp_path, "cli-kimi", kimi=token, nous=nous_token, nous_expires_at="2020-01-01T00:00:00Z",
                      minimax=minimax_token)
    result = run_cli("fetch", "kimi-coding", "--home", str(home), env=emulator.env())
    assert result.returncode == 0, result.stderr
    assert "Rate window" in result.stdout and "139 of 200 requests used" in result.stdout
    expired = run_cli("fetch", "nous", "--home", str(home), "--json", env=emulator.env())
    assert expired.returncode == 1 and json.loads(expired.stdout)["error"]["code"] == "token_expired"
    denied = run_cli("fetch", "minimax", "--home", str(home), "--json", env=emulator.env())
    assert denied.returncode == 1 and json.loads(denied.stdout)["error"]["code"] == "unauthorized"
    assert emulator.count(token=nous_token) == 0
    outputs = "".join(r.stdout + r.stderr for r in (result, expired, denied))
    assert not any(secret[:20] in outputs for secret in (token, nous_token, minimax_token))
