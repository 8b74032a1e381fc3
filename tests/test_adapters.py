"""Every normalization rule and error mapping of PROVIDERS.md, over real HTTP: the adapter
runs in this process (child-side code) against the emulator, which serves the literal
examples of PROVIDERS.md through ``script()``."""
from __future__ import annotations

import base64
import json
import time

import pytest

from workers.credentials import load_home
from workers.http import ProviderHttp
from workers.providers import run_probe
from workers.providers.openai_codex import usage_url

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def http():
    client = ProviderHttp()
    yield client
    client.close()


@pytest.fixture
def probe_home(emulator_env, http, tmp_path):
    """probe_home(provider, env={...}, auth={...}) -> the child-side snapshot dict."""

    def run(provider: str, env: dict[str, str] | None = None, auth: dict | None = None, timeout_s: float = 5.0):
        home = tmp_path / f"home-{time.monotonic_ns()}"
        home.mkdir()
        if env is not None:
            (home / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        if auth is not None:
            (home / "auth.json").write_text(json.dumps(auth))
        return run_probe(provider, load_home(home), http, timeout_s)

    return run


def no_secret_in(result: dict, *secrets: str) -> None:
    text = json.dumps(result)
    for secret in secrets:
        assert secret not in text


# -- anthropic ---------------------------------------------------------------------------
ANTHROPIC_EXAMPLE = {
    "five_hour": {"utilization": 42.0, "resets_at": "2026-11-23T05:00:00.288792+00:00"},
    "seven_day": {"utilization": 61, "resets_at": "2026-11-27T00:00:00Z"},
    "seven_day_opus": None,
    "extra_usage": {"is_enabled": True, "used_credits": 350, "monthly_limit": 5000, "currency": "USD"},
}


def test_anthropic_example_from_providers_md(emulator, probe_home):
    token = "sk-ant-oat01-example"
    emulator.script(token, ANTHROPIC_EXAMPLE)
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert snap["available"] and snap["error"] is None
    assert snap["title"] == "Account limits" and snap["source"] == "oauth_usage_api" and snap["plan"] is None
    assert [(w["label"], w["used_percent"], w["remaining_percent"], w["reset_at"]) for w in snap["windows"]] == [
        ("Current session", 42.0, 58.0, "2026-11-23T05:00:00Z"),
        ("Current week", 61.0, 39.0, "2026-11-27T00:00:00Z"),
    ]
    assert snap["details"] == ["Extra usage: $3.50 of $50.00"]
    request = [r for r in emulator.requests() if r.token == token][-1]
    assert request.path == "/api/oauth/usage"
    assert request.headers["anthropic-beta"] == "oauth-2025-04-20"
    assert request.headers["accept"] == "application/json"
    no_secret_in(snap, token)


def test_anthropic_utilization_is_a_percentage_never_rescaled(emulator, probe_home):
    token = "sk-ant-oat01-small"
    emulator.script(token, {"five_hour": {"utilization": 0.5, "resets_at": None},
                            "seven_day": {"utilization": 1, "resets_at": None}})
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert [w["used_percent"] for w in snap["windows"]] == [0.5, 1.0]
    assert snap["windows"][0]["remaining_percent"] == 99.5


def test_anthropic_window_order_labels_and_skips(emulator, probe_home):
    token = "sk-ant-oat01-order"
    emulator.script(token, {
        "seven_day_oauth_apps": {"utilization": 5, "resets_at": None},
        "seven_day_sonnet": {"utilization": 4, "resets_at": None},
        "seven_day_opus": {"utilization": 3, "resets_at": None},
        "seven_day": None,
        "five_hour": {"utilization": 1, "resets_at": 1795410000},
        "something_new": {"utilization": 9},
    })
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": token})
    assert [w["label"] for w in snap["windows"]] == ["Current session", "Opus week", "Sonnet week", "OAuth apps week"]
    assert snap["windows"][0]["reset_at"] == "2026-11-23T05:00:00Z"


@pytest.mark.parametrize("extra, line", [
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": 10000, "currency": "USD"}, "Extra usage: $5.00 of $100.00"),
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": 0, "currency": "USD"}, "Extra usage: $5.00 of unlimited"),
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": None, "currency": "USD"}, "Extra usage: $5.00 of unlimited"),
    ({"is_enabled": True, "used_credits": 500, "monthly_limit": 10000, "currency": "EUR"}, "Extra usage: €5.00 of €100.00 EUR"),
    ({"is_enabled": True, "used_credits": 350, "monthly_limit": 5000, "currency": "CHF"}, "Extra usage: 3.50 CHF of 50.00 CHF"),
    ({"is_enabled": False, "used_credits": 500, "monthly_limit": 10000, "currency": "USD"}, None),
    ({"is_enabled": True, "used_credits": None, "monthly_limit": 10000, "currency": "USD"}, None),
])
def test_anthropic_extra_usage_line(emulator, probe_home, extra, line):
    token = f"sk-ant-oat01-extra-{abs(hash(json.dumps(extra)))}"
    emulator.script(token, {"five_hour": {"utilization": 10, "resets_at": None}, "extra_usage": extra})
    assert probe_home("anthropic", {"ANTHROPIC_TOKEN": token})["details"] == ([line] if line else [])


def test_anthropic_api_key_short_circuits_without_a_request(emulator, probe_home):
    key = "sk-ant-api03-plainkey"
    snap = probe_home("anthropic", {"ANTHROPIC_API_KEY": key})
    assert snap["available"] is False and snap["error"] is None
    assert snap["unavailable_reason"] == "Anthropic account limits are only available for OAuth-backed Claude accounts."
    assert emulator.count(token=key) == 0


def test_anthropic_credential_order_and_auth_json_pool(emulator, probe_home):
    snap_env = probe_home("anthropic", {"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-second",
                                        "ANTHROPIC_API_KEY": "sk-ant-oat01-third"})
    assert snap_env["available"]
    assert emulator.requests()[-1].token == "sk-ant-oat01-second"
    pool = {"credential_pool": {"anthropic": [{"label": "no token"}, {"access_token": "eyJpool-token"}]}}
    assert probe_home("anthropic", {}, pool)["available"]
    assert emulator.requests()[-1].token == "eyJpool-token"


def test_anthropic_403_names_the_missing_scope(probe_home):
    snap = probe_home("anthropic", {"ANTHROPIC_TOKEN": "sk-ant-oat01-scope-403-"})
    assert snap["error"]["code"] == "forbidden" and "user:profile" in snap["error"]["message"]


# -- error mapping (shared by every adapter) ---------------------------------------------
@pytest.mark.parametrize("marker, code", [
    ("-401-", "unauthorized"), ("-403-", "forbidden"), ("-429-", "rate_limited"), ("-500-", "provider_error"),
    ("-503-", "provider_error"), ("-garbage-", "bad_response"), ("-huge-", "bad_response"),
    ("-reset-", "provider_error"),
])
def test_error_mapping(probe_home, marker, code):
    token = f"sk-or-v1-map{marker}x"
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token})
    assert snap["available"] is False and snap["error"]["code"] == code
    assert snap["error"]["message"] and token not in snap["error"]["message"]


def test_rate_limit_carries_retry_after(probe_home):
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-429-x"})
    assert snap["error"]["code"] == "rate_limited" and snap["error"]["retry_after_s"] == 7
    assert "7 s" in snap["error"]["message"]


def test_hung_provider_is_a_timeout(probe_home):
    start = time.monotonic()
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-hang-x"}, timeout_s=0.5)
    assert snap["error"]["code"] == "timeout" and time.monotonic() - start < 3


def test_unreachable_provider_is_provider_error(probe_home, monkeypatch):
    monkeypatch.setenv("PROBE_DEEPSEEK_BASE_URL", "http://127.0.0.1:9")
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-nowhere"})
    assert snap["error"]["code"] == "provider_error"


def test_wrong_shape_is_bad_response(emulator, probe_home):
    emulator.script("sk-ant-oat01-list", [1, 2, 3])
    assert probe_home("anthropic", {"ANTHROPIC_TOKEN": "sk-ant-oat01-list"})["error"]["code"] == "bad_response"
    emulator.script("sk-ds-shape", {"balance_infos": "nope"})
    assert probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-shape"})["error"]["code"] == "bad_response"


def test_keep_alive_connection_is_reused_across_probes(emulator, probe_home):
    before = emulator.connections_accepted
    for _ in range(5):
        assert probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-keepalive"})["available"]
    assert emulator.connections_accepted - before == 1


def test_no_credentials(probe_home):
    for provider in ("anthropic", "openai-codex", "openrouter", "deepseek"):
        snap = probe_home(provider, {})
        assert snap["error"]["code"] == "no_credentials", provider


# -- openai-codex ------------------------------------------------------------------------
CODEX_EXAMPLE = {"plan_type": "plus", "rate_limit": {
    "primary_window": {"used_percent": 37, "limit_window_seconds": 18000, "reset_at": 1795410000},
    "secondary_window": {"used_percent": 12, "limit_window_seconds": 604800, "reset_at": "2026-11-29T00:00:00Z"}},
    "credits": {"has_credits": True, "balance": 4.2}, "rate_limit_reset_credits": {"available_count": 1}}


def jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_codex_example_from_providers_md(emulator, probe_home):
    token = "codex-example-token"
    emulator.script(token, CODEX_EXAMPLE)
    snap = probe_home("openai-codex", auth={"providers": {"openai-codex": {"tokens": {
        "access_token": token, "account_id": "acct-1"}}}})
    assert snap["plan"] == "Plus" and snap["source"] == "usage_api"
    assert [(w["label"], w["used_percent"], w["reset_at"]) for w in snap["windows"]] == [
        ("Session", 37.0, "2026-11-23T05:00:00Z"), ("Weekly", 12.0, "2026-11-29T00:00:00Z")]
    assert snap["details"] == ["Credits balance: $4.20", "Rate-limit resets banked: 1"]
    request = emulator.requests()[-1]
    assert request.path == "/backend-api/wham/usage"
    assert request.headers["chatgpt-account-id"] == "acct-1" and request.headers["user-agent"] == "codex-cli"


def test_codex_labels_by_window_length_else_by_position(emulator, probe_home):
    token = "codex-labels"
    emulator.script(token, {"plan_type": "team_plus-max", "rate_limit": {
        "primary_window": {"used_percent": 50, "limit_window_seconds": 604800, "reset_at": None},
        "secondary_window": {"used_percent": 10, "limit_window_seconds": 12345, "reset_at": None}},
        "credits": {"has_credits": True, "unlimited": True}})
    snap = probe_home("openai-codex", auth={"providers": {"openai-codex": {"tokens": {"access_token": token}}}})
    assert [w["label"] for w in snap["windows"]] == ["Weekly", "Weekly"]
    assert snap["plan"] == "Team Plus Max"
    assert snap["details"] == ["Credits balance: unlimited"]


def test_codex_account_id_from_jwt_claim_or_no_header(emulator, probe_home):
    token = jwt({"https://api.openai.com/auth": {"chatgpt_account_id": "acct-from-jwt"}})
    probe_home("openai-codex", auth={"providers": {"openai-codex": {"tokens": {"access_token": token}}}})
    assert emulator.requests()[-1].headers["chatgpt-account-id"] == "acct-from-jwt"
    probe_home("openai-codex", auth={"providers": {"openai-codex": {"tokens": {"access_token": "opaque.garbage!"}}}})
    assert "chatgpt-account-id" not in emulator.requests()[-1].headers


def test_codex_pool_skips_exhausted_entries_and_sends_the_selected_account(emulator, probe_home):
    future, past = time.time() + 3600, time.time() - 60
    auth = {"credential_pool": {"openai-codex": [
        {"account_id": "acct-no-token"},
        {"access_token": "shared-token", "account_id": "acct-exhausted", "last_status": "exhausted",
         "last_error_reset_at": future},
        {"access_token": "shared-token", "account_id": "acct-selected"},
    ]}}
    assert probe_home("openai-codex", auth=auth)["available"]
    request = emulator.requests()[-1]
    assert request.token == "shared-token" and request.headers["chatgpt-account-id"] == "acct-selected"
    auth["credential_pool"]["openai-codex"][1]["last_error_reset_at"] = "2020-01-01T00:00:00Z"
    auth["credential_pool"]["openai-codex"][1]["account_id"] = "acct-reset-passed"
    probe_home("openai-codex", auth=auth)
    assert emulator.requests()[-1].headers["chatgpt-account-id"] == "acct-reset-passed"
    auth["credential_pool"]["openai-codex"][1]["last_error_reset_at"] = past
    probe_home("openai-codex", auth=auth)
    assert emulator.requests()[-1].headers["chatgpt-account-id"] == "acct-reset-passed"


@pytest.mark.parametrize("base, url", [
    ("https://chatgpt.com/backend-api/codex", "https://chatgpt.com/backend-api/wham/usage"),
    ("https://chatgpt.com/backend-api/codex/", "https://chatgpt.com/backend-api/wham/usage"),
    ("http://127.0.0.1:9000/backend-api/codex", "http://127.0.0.1:9000/backend-api/wham/usage"),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000/api/codex/usage"),
    ("http://proxy.local/codex", "http://proxy.local/api/codex/usage"),
])
def test_codex_usage_url_rule(base, url):
    assert usage_url(base) == url


def test_codex_alternate_path_served(emulator, probe_home, monkeypatch):
    monkeypatch.setenv("PROBE_OPENAI_CODEX_BASE_URL", emulator.base_url)
    snap = probe_home("openai-codex", auth={"providers": {"openai-codex": {"tokens": {"access_token": "codex-alt"}}}})
    assert snap["available"] and emulator.requests()[-1].path == "/api/codex/usage"


# -- openrouter --------------------------------------------------------------------------
def test_openrouter_examples_from_providers_md(emulator, probe_home):
    token = "sk-or-v1-example"
    emulator.script(token, {"data": {"total_credits": 20, "total_usage": 7.5}}, path="/api/v1/credits")
    emulator.script(token, {"data": {"limit": 10, "limit_remaining": 4, "limit_reset": "monthly", "usage": 6.25,
                                     "usage_daily": 0.5, "usage_weekly": 2, "usage_monthly": 6}}, path="/api/v1/key")
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token})
    assert snap["source"] == "credits_api"
    assert snap["windows"] == [{"label": "API key quota", "used_percent": 60.0, "remaining_percent": 40.0,
                                "reset_at": None, "detail": "$4.00 of $10.00 remaining • resets monthly"}]
    assert snap["details"] == ["Credits balance: $12.50",
                               "API key usage: $6.25 total • $0.50 today • $2.00 this week • $6.00 this month"]


def test_openrouter_key_rules(emulator, probe_home):
    token = "sk-or-v1-keyrules"
    emulator.script(token, {"data": {"total_credits": 5, "total_usage": 9}}, path="/api/v1/credits")
    emulator.script(token, {"data": {"limit": 10, "limit_remaining": 12, "limit_reset": None, "usage": 0,
                                     "usage_daily": 0, "usage_weekly": 0, "usage_monthly": 1}}, path="/api/v1/key")
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token})
    assert snap["windows"] == []          # remaining above the limit: no window
    assert snap["details"] == ["Credits balance: $0.00", "API key usage: $1.00 this month"]
    emulator.script(token, {"data": {"limit": 10, "limit_remaining": 10, "limit_reset": None}}, path="/api/v1/key")
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": token})
    assert snap["windows"][0]["detail"] == "$10.00 of $10.00 remaining"
    assert snap["details"] == ["Credits balance: $0.00"]


def test_openrouter_key_failure_only_drops_its_lines(probe_home):
    snap = probe_home("openrouter", {"OPENROUTER_API_KEY": "sk-or-v1-keyfail-x"})
    assert snap["available"] and snap["windows"] == [] and len(snap["details"]) == 1
    assert snap["details"][0].startswith("Credits balance: $")


# -- deepseek ----------------------------------------------------------------------------
@pytest.mark.parametrize("infos, lines", [
    ([{"currency": "CNY", "total_balance": "12.30", "granted_balance": "2.00", "topped_up_balance": "10.30"}],
     ["Balance: ¥12.30 CNY (granted ¥2.00, topped up ¥10.30)"]),
    ([{"currency": "USD", "total_balance": "12.34", "granted_balance": "0.00", "topped_up_balance": "0"}],
     ["Balance: $12.34 USD"]),
    ([{"currency": "CNY", "total_balance": "5.00", "granted_balance": "0.00", "topped_up_balance": "5.00"},
      {"currency": "EUR", "total_balance": "1.50", "granted_balance": "1.50", "topped_up_balance": "0.00"}],
     ["Balance: ¥5.00 CNY (topped up ¥5.00)", "Balance: 1.50 EUR (granted 1.50 EUR)"]),
])
def test_deepseek_balance_lines(emulator, probe_home, infos, lines):
    token = f"sk-ds-{abs(hash(json.dumps(infos)))}"
    emulator.script(token, {"is_available": True, "balance_infos": infos})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": token})
    assert snap["details"] == lines and snap["title"] == "Account balance" and snap["source"] == "balance_api"
    assert snap["available"]


def test_deepseek_insufficient_balance(emulator, probe_home):
    emulator.script("sk-ds-empty", {"is_available": False, "balance_infos": []})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-empty"})
    assert snap["available"] is False and snap["unavailable_reason"] == "DeepSeek API balance is insufficient."


def test_invalid_utf8_and_redirects_are_clear_errors(emulator, probe_home):
    emulator.script("sk-ds-utf8", raw=b'{"is_available": true, "balance_infos": ["\xff\xfe"]}')
    assert probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-utf8"})["error"]["code"] == "bad_response"
    emulator.script("sk-ds-redirect", {}, status=302, headers={"Location": "/user/balance"})
    snap = probe_home("deepseek", {"DEEPSEEK_API_KEY": "sk-ds-redirect"})
    assert snap["error"]["code"] == "provider_error" and "302" in snap["error"]["message"]
    assert emulator.count(token="sk-ds-redirect") == 1, "redirects are not followed (no redirect loop)"
