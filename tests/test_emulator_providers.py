"""The emulator's routes for the providers added in 0.3 (PROVIDERS.md, "Providers added in
0.3"), as a real HTTP server: each provider's shape and wire quirks, the realistic window
model (fixed resets per instance that roll over, rising usage, jitter), the markers every
route honours, and the provider-specific failures that arrive inside an HTTP 200."""
from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from probe.tools.emulator import (COPILOT_PATH, FIVE_HOUR_S, KIMI_BALANCE_PATH, KIMI_CN_BALANCE_PATH, KIMI_CODE_PATH,
                            KIMI_RATE_WINDOW_S, MINIMAX_CN_PATHS, MINIMAX_PATHS, MONTH_S, NOUS_PATH, RESET_JITTER_S,
                            WEEK_S, ZAI_PATH, Emulator, provider_urls_for, quota_answer)

pytestmark = pytest.mark.timeout(30)
NEW_PATHS = (ZAI_PATH, KIMI_CODE_PATH, KIMI_BALANCE_PATH, KIMI_CN_BALANCE_PATH, *MINIMAX_PATHS, *MINIMAX_CN_PATHS,
             COPILOT_PATH, NOUS_PATH)
NO_TLS = False


def token_for(path: str, name: str) -> str:
    """A token the route serves normally: Kimi Code takes only ``sk-kimi-`` keys, the
    Moonshot balance only other keys."""
    return f"sk-kimi-{name}" if path == KIMI_CODE_PATH else f"tok-{name}"


def get(emulator: Emulator, path: str, token: str | None, *, scheme: str = "Bearer", timeout: float = 10,
        client: httpx.Client | None = None) -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    if client is not None:
        return client.get(emulator.base_url + path, headers=headers, timeout=timeout)
    return httpx.get(emulator.base_url + path, headers=headers, timeout=timeout, verify=NO_TLS)


def epoch_of(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# -- shapes and quirks on the wire ----------------------------------------------------------
@pytest.mark.parametrize("name", [f"shape-{i}" for i in range(8)])
def test_each_route_serves_its_provider_shape_with_its_quirks(emulator, name):
    now = time.time()
    zai = get(emulator, ZAI_PATH, f"tok-{name}").json()
    assert zai["success"] is True and zai["code"] == 200 and isinstance(zai["data"]["limits"], list)
    plan = zai["data"].get("planName") or zai["data"].get("packageName")
    assert plan in ("Lite", "Pro", "Max")
    kinds = [(limit["type"], limit["unit"], limit["number"]) for limit in zai["data"]["limits"]]
    assert sorted(kinds) == sorted([("TOKENS_LIMIT", 3, 5), ("TIME_LIMIT", 5, 1)]
                                   + ([] if plan == "Lite" else [("TOKENS_LIMIT", 6, 1)]))
    for limit in zai["data"]["limits"]:
        assert isinstance(limit["percentage"], int) and 0 <= limit["percentage"] <= 100
        assert isinstance(limit["nextResetTime"], int) and limit["nextResetTime"] > now * 1000   # epoch ms
        if limit["type"] == "TIME_LIMIT":
            assert limit["usage"] == limit["currentValue"] + limit["remaining"] and limit["usage"] in (100, 1000, 4000)

    kimi = get(emulator, KIMI_CODE_PATH, f"sk-kimi-{name}").json()
    for part in (kimi["usage"], kimi["limits"][0]["detail"]):
        assert all(isinstance(part[key], str) for key in ("limit", "remaining"))      # counts as strings
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", part["resetTime"])   # nanoseconds
        assert epoch_of(part["resetTime"][:26] + "Z") > now
        if "used" in part:
            assert int(part["used"]) + int(part["remaining"]) == int(part["limit"])
    assert kimi["limits"][0]["window"] in ({"duration": 300, "timeUnit": "TIME_UNIT_MINUTE"},
                                           {"duration": 5, "timeUnit": "TIME_UNIT_HOUR"})

    for path in (KIMI_BALANCE_PATH, KIMI_CN_BALANCE_PATH):
        balance = get(emulator, path, f"tok-{name}").json()
        assert balance["code"] == 0 and balance["status"] is True and balance["scode"] == "0x0"
        data = balance["data"]
        assert round(data["voucher_balance"] + data["cash_balance"], 2) == data["available_balance"]

    for path in (MINIMAX_PATHS[0], MINIMAX_CN_PATHS[0]):
        body = get(emulator, path, f"tok-{name}").json()
        assert body["base_resp"]["status_code"] == 0 and isinstance(body["data"]["points_balance"], str)
        general = next(entry for entry in body["data"]["model_remains"] if entry["model_name"] == "general")
        assert general["end_time"] - general["start_time"] == FIVE_HOUR_S * 1000 and general["end_time"] > now * 1000
        assert general["weekly_end_time"] - general["weekly_start_time"] == WEEK_S * 1000
        if general["current_interval_total_count"]:      # counted: usage_count is what is LEFT
            assert "current_interval_remaining_percent" not in general
            assert 0 <= general["current_interval_usage_count"] <= general["current_interval_total_count"]
        else:
            assert re.fullmatch(r"\d{1,3}", general["current_interval_remaining_percent"])

    copilot = get(emulator, COPILOT_PATH, f"tok-{name}", scheme="token").json()
    assert re.fullmatch(r"\d{4}-\d\d-01", copilot["quota_reset_date"])                  # a bare date
    premium = copilot["quota_snapshots"]["premium_interactions"]
    assert premium["unlimited"] is False and 0 <= premium["remaining"] <= premium["entitlement"]
    assert copilot["quota_snapshots"]["chat"]["unlimited"] is True

    nous = get(emulator, NOUS_PATH, f"tok-{name}").json()
    access = nous["paid_service_access"]
    assert access["allowed"] is True
    if nous["subscription"] is not None:
        sub = nous["subscription"]
        assert 0 <= sub["credits_remaining"] <= sub["monthly_credits"] and epoch_of(sub["current_period_end"]) > now
        assert access["total_usable_credits"] == round(sub["credits_remaining"] + access["purchased_credits_remaining"], 2)


def test_provider_urls_put_every_provider_on_its_routes():
    urls = provider_urls_for("http://h:1")
    assert urls["zai"] + "/api/monitor/usage/quota/limit" == "http://h:1" + ZAI_PATH
    assert urls["kimi-coding"] + "/v1/usages" == "http://h:1" + KIMI_CODE_PATH
    assert urls["kimi-coding"] + "/v1/users/me/balance" == "http://h:1" + KIMI_BALANCE_PATH   # one base, both kinds
    assert urls["kimi-coding-cn"] + "/v1/users/me/balance" == "http://h:1" + KIMI_CN_BALANCE_PATH
    for name, paths in (("minimax", MINIMAX_PATHS), ("minimax-cn", MINIMAX_CN_PATHS)):
        assert (urls[name] + "/v1/token_plan/remains", urls[name] + "/v1/api/openplatform/coding_plan/remains") == \
            tuple("http://h:1" + p for p in paths)
    assert urls["copilot"] + "/copilot_internal/user" == "http://h:1" + COPILOT_PATH
    assert urls["nous"] + "/api/oauth/account" == "http://h:1" + NOUS_PATH


def test_kinds_of_key_and_authorization_schemes(emulator):
    """Kimi Code and the Moonshot balance refuse each other's keys, as the real hosts do;
    Copilot's path reads GitHub's ``token`` scheme as well as Bearer, no other path does."""
    assert get(emulator, KIMI_CODE_PATH, "tok-platform-key").status_code == 401
    assert get(emulator, KIMI_BALANCE_PATH, "sk-kimi-code-key").status_code == 401
    assert get(emulator, KIMI_CN_BALANCE_PATH, "sk-kimi-code-key").status_code == 401
    assert get(emulator, KIMI_CODE_PATH, "sk-kimi-code-key").status_code == 200
    by_token = get(emulator, COPILOT_PATH, "github_pat_scheme", scheme="token")
    by_bearer = get(emulator, COPILOT_PATH, "github_pat_scheme")
    assert by_token.status_code == by_bearer.status_code == 200 and by_token.json() == by_bearer.json()
    assert [r.token for r in emulator.requests() if r.path == COPILOT_PATH][-2:] == ["github_pat_scheme"] * 2
    assert get(emulator, NOUS_PATH, "tok-scheme", scheme="token").status_code == 401
    assert get(emulator, ZAI_PATH, None).status_code == 401


@pytest.mark.parametrize("path", NEW_PATHS)
def test_served_body_is_the_model_at_the_requests_instant(emulator, path):
    token = token_for(path, "det")
    served = get(emulator, path, token, scheme="token" if path == COPILOT_PATH else "Bearer")
    request = [r for r in emulator.requests() if r.token == token and r.path == path][-1]
    answer = emulator.quota_answer(path, token, request.now)
    assert (served.status_code, served.json()) == (answer.status, answer.body)
    at = {"now": 2_000_000_000.0, "epoch": 1_999_990_000.0}
    assert quota_answer(path, token, **at) == quota_answer(path, token, **at)
    others = {json.dumps(quota_answer(path, token_for(path, f"o{i}"), **at).body, sort_keys=True) for i in range(8)}
    assert len(others) > 1   # tokens really pick different quotas


# -- markers ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", NEW_PATHS)
def test_common_markers_work_on_every_new_route(emulator, path):
    for marker, status in (("-401-", 401), ("-403-", 403), ("-429-", 429), ("-500-", 500), ("-503-", 503)):
        response = get(emulator, path, token_for(path, f"m{marker}x"))
        assert response.status_code == status and "error" in response.json(), marker
        if status == 429:
            assert response.headers["retry-after"] == "7"
    garbage = get(emulator, path, token_for(path, "m-garbage-x"))
    assert garbage.status_code == 200
    with pytest.raises(ValueError):
        garbage.json()
    slow_token = token_for(path, "m-slow60-x")
    start = time.perf_counter()
    slow = get(emulator, path, slow_token)
    assert time.perf_counter() - start >= 0.06 and slow.status_code == 200
    arrived = [r for r in emulator.requests() if r.token == slow_token][-1].now
    assert slow.json() == emulator.quota_body(path, slow_token, arrived)      # the normal answer, late


def test_hang_parks_every_new_route_until_stop():
    """``-hang-`` on all eleven new routes at once: no answer, each request parked, and a
    stop that ends them all promptly."""
    threads_before = set(threading.enumerate())
    emulator = Emulator().start()
    outcomes: list[object] = []

    def hang(path: str) -> None:
        try:
            outcomes.append(get(emulator, path, token_for(path, "h-hang-x"), timeout=30))
        except httpx.HTTPError as exc:
            outcomes.append(exc)

    hangers = [threading.Thread(target=hang, args=(path,)) for path in NEW_PATHS]
    for thread in hangers:
        thread.start()
    for path in NEW_PATHS:
        assert emulator.wait_for(path=path, timeout=10)
    assert outcomes == []                     # every one is parked, none answered
    emulator.stop()
    for thread in hangers:
        thread.join(10)
    assert len(outcomes) == len(NEW_PATHS) and all(isinstance(o, httpx.TransportError) for o in outcomes)
    assert [t for t in threading.enumerate() if t not in threads_before and t.is_alive()] == []


BODY_MARKERS = [  # (path, token, status, what the body must hold)
    (ZAI_PATH, "z-bodyerror-x", 200, {"success": False, "code": 500}),
    (ZAI_PATH, "z-bodydenied-x", 200, {"success": False, "code": 1001}),
    (KIMI_BALANCE_PATH, "k-bodydenied-x", 200, {"code": 1, "status": False, "scode": "unauthorized"}),
    (KIMI_CN_BALANCE_PATH, "k-bodydenied-x", 200, {"code": 1, "status": False, "scode": "unauthorized"}),
    (KIMI_BALANCE_PATH, "k-bodyerror-x", 200, {"code": 3, "status": False, "scode": "0x3"}),
    (MINIMAX_PATHS[0], "m-bodydenied-x", 200, {"base_resp": {"status_code": 1004,
                                                             "status_msg": "cookie is missing, log in again"}}),
    (MINIMAX_PATHS[1], "m-bodydenied-x", 200, {"base_resp": {"status_code": 1004,
                                                             "status_msg": "cookie is missing, log in again"}}),
    (MINIMAX_CN_PATHS[0], "m-bodyerror-x", 200, {"base_resp": {"status_code": 1000, "status_msg": "unknown error"}}),
    (NOUS_PATH, "n-bodyerror-x", 200, {"error": "This account is suspended; contact support."}),
    (NOUS_PATH, "n-nocredits-x", 200, {"subscription": None, "paid_service_access": {
        "allowed": False, "purchased_credits_remaining": 0, "total_usable_credits": 0}}),
]


@pytest.mark.parametrize("path, token, status, expected", BODY_MARKERS)
def test_failures_inside_an_http_200(emulator, path, token, status, expected):
    response = get(emulator, path, token)
    assert response.status_code == status
    body = response.json()
    assert {key: body[key] for key in expected} == expected


def test_minimax_legacy_marker_404s_the_token_plan_and_serves_the_legacy_shape(emulator):
    for token_plan, coding_plan in (MINIMAX_PATHS, MINIMAX_CN_PATHS):
        assert get(emulator, token_plan, "mm-legacy-x").status_code == 404
        legacy = get(emulator, coding_plan, "mm-legacy-x").json()
        assert "data" not in legacy and legacy["base_resp"]["status_code"] == 0
        entry = legacy["model_remains"][0]
        assert entry["model_name"] != "general" and "current_interval_remaining_percent" not in entry
        assert 0 <= entry["current_interval_usage_count"] <= entry["current_interval_total_count"]


def test_copilot_free_marker_serves_the_free_plan(emulator):
    body = get(emulator, COPILOT_PATH, "gh-free-x", scheme="token").json()
    assert body["copilot_plan"] == "free" and "quota_snapshots" not in body
    assert set(body["monthly_quotas"]) == set(body["limited_user_quotas"]) == {"chat", "completions"}
    assert all(0 <= body["limited_user_quotas"][k] <= body["monthly_quotas"][k] for k in body["monthly_quotas"])


def test_provider_markers_are_ignored_where_a_provider_has_no_such_form(emulator):
    assert get(emulator, COPILOT_PATH, "gh-bodyerror-x").json()["quota_snapshots"]
    assert get(emulator, KIMI_CODE_PATH, "sk-kimi-bodyerror-x").json()["usage"]
    assert get(emulator, ZAI_PATH, "z-legacy-free-nocredits-x").json()["success"] is True


# -- windows that behave like a real provider's ---------------------------------------------
class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def zai_limit(kind: str, unit: int):
    def read(body: dict[str, Any]) -> tuple[float, float]:
        limit = next(x for x in body["data"]["limits"] if x["type"] == kind and x["unit"] == unit)
        used = limit["currentValue"] / limit["usage"] * 100 if kind == "TIME_LIMIT" else limit["percentage"]
        return used, limit["nextResetTime"] / 1000
    return read


def kimi_part(which: str):
    def read(body: dict[str, Any]) -> tuple[float, float]:
        part = body["usage"] if which == "usage" else body["limits"][0]["detail"]
        used = int(part["limit"]) - int(part["remaining"])
        return used / int(part["limit"]) * 100, epoch_of(part["resetTime"][:26] + "Z") + int(part["resetTime"][26:29]) / 1e9
    return read


def minimax_window(prefix: str, end_key: str):
    def read(body: dict[str, Any]) -> tuple[float, float]:
        entry = next(e for e in body["data"]["model_remains"] if e["model_name"] == "general")
        if entry.get(f"{prefix}_remaining_percent") is not None:
            used = 100 - float(entry[f"{prefix}_remaining_percent"])
        else:
            total = entry[f"{prefix}_total_count"]
            used = (total - entry[f"{prefix}_usage_count"]) / total * 100
        return used, entry[end_key] / 1000
    return read


def zai_token(plan: str) -> str:
    """A token whose z.ai plan is ``plan`` (Lite plans have no weekly limit)."""
    from probe.tools.emulator import ZAI_PLANS, _seed

    return next(t for t in (f"zai-model-{i}" for i in range(100)) if ZAI_PLANS[_seed(t)[0] % 3][0] == plan)


WINDOWS = [  # (path, token, read (used %, reset in Unix seconds), window length)
    (ZAI_PATH, zai_token("Pro"), zai_limit("TOKENS_LIMIT", 3), FIVE_HOUR_S),
    (ZAI_PATH, zai_token("Pro"), zai_limit("TOKENS_LIMIT", 6), WEEK_S),
    (ZAI_PATH, zai_token("Max"), zai_limit("TIME_LIMIT", 5), MONTH_S),
    (KIMI_CODE_PATH, "sk-kimi-model", kimi_part("usage"), WEEK_S),
    (KIMI_CODE_PATH, "sk-kimi-model", kimi_part("rate"), KIMI_RATE_WINDOW_S),
    (MINIMAX_PATHS[0], "minimax-model", minimax_window("current_interval", "end_time"), FIVE_HOUR_S),
    (MINIMAX_CN_PATHS[0], "minimax-model", minimax_window("current_weekly", "weekly_end_time"), WEEK_S),
]


@pytest.mark.parametrize("path, token, read, length_s", WINDOWS)
def test_a_window_keeps_its_reset_jittered_while_usage_rises_then_rolls_over(path, token, read, length_s):
    """As for the first four providers (test_emulator): one instance reports one reset, up
    to ±2 s off both ways, usage never falls; past the reset the next instance's reset is
    one window later and its usage starts again from (near) zero."""
    epoch = 1_900_000_000.0
    clock = Clock(epoch)
    with Emulator(clock=clock, epoch=epoch) as emu:
        used0, reset = read(emu.quota_body(path, token, jitter=False))
        assert epoch + 0.05 * length_s <= reset <= epoch + 0.95 * length_s + 1
        reads = []
        with httpx.Client(verify=NO_TLS) as client:
            for i in range(60):
                clock.now = epoch + i * (reset - epoch) / 600 + i * 0.0137
                reads.append(read(get(emu, path, token, client=client).json()))
            offsets = [r - reset for _, r in reads]
            assert all(abs(o) <= RESET_JITTER_S + 0.01 for o in offsets)
            assert min(offsets) < -0.5 and max(offsets) > 0.5                 # jitter goes both ways
            used = [u for u, _ in reads]
            assert used == sorted(used) and used[-1] >= used0
            clock.now = reset + 1
            next_used, next_reset = read(get(emu, path, token, client=client).json())
    assert abs(next_reset - (reset + length_s)) <= RESET_JITTER_S + 0.01
    assert next_used < 1 <= used[-1]


def test_a_nous_period_ends_exactly_and_rolls_over():
    """A subscription period's end is exact (a billing system keeps it), credits left fall
    through it, and the next period ends 30 days later with the credits back."""
    epoch = 1_900_000_000.0
    clock = Clock(epoch)
    token = next(t for t in (f"nous-model-{i}" for i in range(50))
                 if quota_answer(NOUS_PATH, t, epoch, epoch=epoch).body["subscription"])
    with Emulator(clock=clock, epoch=epoch) as emu:
        first = get(emu, NOUS_PATH, token).json()["subscription"]
        end = epoch_of(first["current_period_end"])
        left = []
        for i in range(20):
            clock.now = epoch + i * (end - epoch) / 25
            sub = get(emu, NOUS_PATH, token).json()["subscription"]
            assert sub["current_period_end"] == first["current_period_end"]
            left.append(sub["credits_remaining"])
        assert left == sorted(left, reverse=True) and left[-1] < left[0]
        clock.now = end + 1
        after = get(emu, NOUS_PATH, token).json()["subscription"]
    assert abs(epoch_of(after["current_period_end"]) - (end + MONTH_S)) < 0.002
    assert after["credits_remaining"] > left[-1] and after["credits_remaining"] >= after["monthly_credits"] * 0.99


def test_copilot_months_are_calendar_months():
    """Premium requests used rise through a calendar month; the reset is the 1st of the next
    month as a bare date; on the 1st the quota starts again."""
    start = datetime(2031, 3, 1, tzinfo=timezone.utc).timestamp()
    clock = Clock(start + 3600)
    with Emulator(clock=clock, epoch=start - 86400) as emu:
        lefts = []
        for day in (0, 5, 10, 20, 30):
            clock.now = start + day * 86400 + 3600
            body = get(emu, COPILOT_PATH, "gh-month", scheme="token").json()
            assert body["quota_reset_date"] == "2031-04-01"
            lefts.append(body["quota_snapshots"]["premium_interactions"]["remaining"])
        clock.now = datetime(2031, 4, 1, 0, 0, 30, tzinfo=timezone.utc).timestamp()
        april = get(emu, COPILOT_PATH, "gh-month", scheme="token").json()
    assert lefts == sorted(lefts, reverse=True) and lefts[-1] < lefts[0]
    premium = april["quota_snapshots"]["premium_interactions"]
    assert april["quota_reset_date"] == "2031-05-01" and premium["remaining"] == premium["entitlement"]
