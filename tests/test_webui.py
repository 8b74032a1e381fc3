"""hermes-webui's own expected answers, held against quota-probe's ``GET /api/provider/quota``
(SPEC §19, ``probe.webui``).

Each ``test_hw_*`` test reproduces one case of hermes-webui's
``tests/test_provider_quota_status.py`` or ``tests/test_issue4360_generic_pool_quota.py``
(commit ``HERMES_WEBUI_COMMIT``) that asserts a response shape: the same situation built
from real parts -- a home's files, a real backend over HTTP, the built-in emulator answering
what their mocks answer (scripted per token) -- and the same dicts asserted. Fields that
depend on the clock are compared as hermes-webui's tests compare them (its own value, or a
fixed one where the emulator serves a fixed one). The README lists the cases and the
deliberate differences.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import httpx
import pytest

from probe import ProbeConfig, ProbeService
from probe.server import create_app
from probe.tools.emulator import CODEX_PATHS, OPENROUTER_CREDITS_PATH, OPENROUTER_KEY_PATH
from support import RunningApp

pytestmark = pytest.mark.timeout(60)
TOKEN = "test-rotate-token-0123456789"
HERMES_WEBUI_COMMIT = "df65251d58191f1de4ca1894a0bc5b399ce4a4ec"
CODEX_USAGE = CODEX_PATHS[0]


def jwt_for(account_id: str, tag: str = "") -> str:
    """A Codex access token (unsigned JWT) naming ``account_id``, as their tests build one."""
    def b64url(payload: bytes) -> str:
        return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")

    claims = {"https://api.openai.com/auth": {"chatgpt_account_id": account_id}, "tag": tag}
    return ".".join((b64url(b'{"alg":"none","typ":"JWT"}'), b64url(json.dumps(claims).encode()), b64url(b"signature")))


def write_home(root, name: str, *, env: dict[str, str] | None = None, auth: dict | None = None,
               provider: str | None = None):
    home = root / name
    home.mkdir(parents=True)
    (home / ".env").write_text("".join(f"{k}={v}\n" for k, v in (env or {}).items()))
    (home / "auth.json").write_text(json.dumps(auth or {}))
    if provider is not None:
        (home / "config.yaml").write_text(f"model:\n  default: some/model\n  provider: {provider}\n")
    return home


@pytest.fixture
def webui(emulator, tmp_path):
    """``webui(homes, **config)`` → an httpx client of a real backend serving ``homes``."""
    started = []

    def start(homes: dict, **config):
        config.setdefault("provider_urls", emulator.provider_urls())
        service = ProbeService(ProbeConfig(**config))
        running = RunningApp(create_app(service, homes, TOKEN)).__enter__()
        client = httpx.Client(base_url=running.url, timeout=30)
        started.append((client, running, service))
        return client

    yield start
    for client, running, service in started:
        client.close()
        running.__exit__(None, None, None)
        service.close()


def quota(client: httpx.Client, **params) -> dict:
    response = client.get("/api/provider/quota", params=params)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def recent(text: str) -> bool:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return abs((datetime.now(timezone.utc) - when).total_seconds()) < 120


# -- tests/test_provider_quota_status.py ----------------------------------------------------
def test_hw_openrouter_quota_fetches_key_endpoint_and_sanitizes_response(webui, emulator, tmp_path):
    key = "test-openrouter-key-private-hw1"
    emulator.script(key, {"data": {"limit_remaining": "12.5", "usage": 3, "limit": 20, "key": "must-not-leak"}},
                    path=OPENROUTER_KEY_PATH)
    home = write_home(tmp_path, "or", env={"OPENROUTER_API_KEY": key}, provider="openrouter")
    response = webui({"main": home}).get("/api/provider/quota")
    result = response.json()
    key_requests = [r for r in emulator.requests() if r.path == OPENROUTER_KEY_PATH and r.token == key]
    assert [r.headers.get("authorization") for r in key_requests] == [f"Bearer {key}"]
    assert result == {
        "ok": True,
        "provider": "openrouter",
        "display_name": "OpenRouter",
        "supported": True,
        "status": "available",
        "label": "OpenRouter credits",
        "quota": {"limit_remaining": 12.5, "usage": 3, "limit": 20},
        "message": "OpenRouter quota status loaded.",
    }
    assert key not in response.text and "must-not-leak" not in response.text


def test_hw_openrouter_quota_no_key_returns_safe_no_key_without_network(webui, emulator, tmp_path):
    home = write_home(tmp_path, "or-none", provider="openrouter")
    before = emulator.count(path=OPENROUTER_CREDITS_PATH) + emulator.count(path=OPENROUTER_KEY_PATH)
    result = quota(webui({"main": home}))
    assert emulator.count(path=OPENROUTER_CREDITS_PATH) + emulator.count(path=OPENROUTER_KEY_PATH) == before
    assert result["ok"] is False
    assert result["provider"] == "openrouter"
    assert result["supported"] is True
    assert result["status"] == "no_key"
    assert result["quota"] is None
    assert "OPENROUTER_API_KEY" in result["message"]
    assert result == {"ok": False, "provider": "openrouter", "display_name": "OpenRouter", "supported": True,
                      "status": "no_key", "quota": None,
                      "message": "OpenRouter quota status needs an OPENROUTER_API_KEY configured on the server."}


def test_hw_openrouter_quota_invalid_key_and_timeout_are_sanitized(webui, emulator, tmp_path):
    invalid = "test-openrouter-key-private-hw3"
    emulator.script(invalid, {"error": "secret body"}, status=401)
    hanging = "test-openrouter-key-private-hw3-hang-"
    homes = {"invalid": write_home(tmp_path, "or-401", env={"OPENROUTER_API_KEY": invalid}, provider="openrouter"),
             "slow": write_home(tmp_path, "or-hang", env={"OPENROUTER_API_KEY": hanging}, provider="openrouter")}
    client = webui(homes, probe_timeout_s=1.0)
    for home_id, expected, message in (("invalid", "invalid_key", "OpenRouter rejected the configured API key."),
                                       ("slow", "unavailable", "OpenRouter quota status is temporarily unavailable.")):
        response = client.get("/api/provider/quota", params={"provider": "openrouter", "home": home_id})
        result = response.json()
        assert result["ok"] is False
        assert result["status"] == expected
        assert result["quota"] is None
        assert result["message"] == message
        assert "test-openrouter-key-private" not in response.text
        assert "secret" not in response.text.lower()


def test_hw_unsupported_provider_reports_followup_state(webui, tmp_path):
    result = quota(webui({"main": write_home(tmp_path, "openai", provider="openai")}))
    assert result["ok"] is False
    assert result["provider"] == "openai"
    assert result["supported"] is False
    assert result["status"] == "unsupported"
    assert result["quota"] is None
    assert "follow-up" in result["message"]
    assert result["message"] == ("Quota status is not available for OpenAI. OpenAI/Anthropic rate-limit headers are "
                                 "a follow-up once WebUI captures provider response metadata.")


def codex_usage(used_primary: float, primary_reset, used_secondary: float | None = 40,
                secondary_reset="2030-03-24T12:30:00Z", plan: str = "pro", balance: float | None = 12.5) -> dict:
    """The body their Codex mocks answer (``rate_limit`` windows without lengths: positional)."""
    rate_limit = {"primary_window": {"used_percent": used_primary, "reset_at": primary_reset}}
    if used_secondary is not None:
        rate_limit["secondary_window"] = {"used_percent": used_secondary, "reset_at": secondary_reset}
    body = {"plan_type": plan, "rate_limit": rate_limit}
    if balance is not None:
        body["credits"] = {"has_credits": True, "balance": balance}
    return body


def test_hw_codex_account_usage_is_fetched_under_active_profile_home(webui, emulator, tmp_path):
    """Their mock records which home was probed; here two homes hold two logins, and the
    answer for the one asked is the one its own token got."""
    token = jwt_for("acct-hw5")
    other = jwt_for("acct-hw5-other")
    emulator.script(token, codex_usage(15.0, "2030-03-17T17:30:00Z"), path=CODEX_USAGE)
    emulator.script(other, codex_usage(99.0, "2030-03-17T17:30:00Z"), path=CODEX_USAGE)
    homes = {"other": write_home(tmp_path, "codex-other", provider="openai-codex",
                                 auth={"providers": {"openai-codex": {"tokens": {"access_token": other}}}}),
             "profile": write_home(tmp_path, "codex", provider="openai-codex",
                                   auth={"providers": {"openai-codex": {"tokens": {"access_token": token}}}})}
    result = quota(webui(homes), home="profile")
    assert [r.token for r in emulator.requests() if r.token in (token, other)] == [token]
    assert result["ok"] is True
    assert result["provider"] == "openai-codex"
    assert result["supported"] is True
    assert result["status"] == "available"
    assert result["quota"] is None
    assert recent(result["account_limits"]["fetched_at"])
    assert result["account_limits"] == {
        "provider": "openai-codex",
        "source": "usage_api",
        "title": "Account limits",
        "plan": "Pro",
        "windows": [
            {"label": "Session", "used_percent": 15.0, "remaining_percent": 85.0,
             "reset_at": "2030-03-17T17:30:00Z", "detail": None},
            {"label": "Weekly", "used_percent": 40.0, "remaining_percent": 60.0,
             "reset_at": "2030-03-24T12:30:00Z", "detail": None},
        ],
        "details": ["Credits balance: $12.50"],
        "available": True,
        "unavailable_reason": None,
        "fetched_at": result["account_limits"]["fetched_at"],
    }
    assert result["label"] == "Account limits"
    assert result["message"] == "OpenAI Codex account limits loaded."


@pytest.mark.parametrize("status", [401, 500])
def test_hw_codex_account_usage_unavailable_is_sanitized(webui, emulator, tmp_path, status):
    """Their fetch raises ``RuntimeError("secret access token should not leak")``: here the
    provider refuses (401) or fails (500) with that text in its body."""
    token = jwt_for(f"acct-hw6-{status}")
    emulator.script(token, {"error": {"message": "secret access token should not leak"}}, status=status)
    home = write_home(tmp_path, "codex-bad", provider="openai-codex",
                      auth={"providers": {"openai-codex": {"tokens": {"access_token": token}}}})
    response = webui({"main": home}).get("/api/provider/quota")
    result = response.json()
    assert result["ok"] is False
    assert result["provider"] == "openai-codex"
    assert result["supported"] is True
    assert result["status"] == "unavailable"
    assert result["account_limits"] is None
    if status == 401:
        assert "Confirm provider authentication" in result["message"]
        assert result["message"] == ("OpenAI Codex account limits are unavailable. Confirm provider authentication "
                                     "and try again.")
    assert "secret" not in response.text.lower() and token not in response.text


def test_hw_anthropic_oauth_usage_unavailable_reason_is_reported(webui, tmp_path):
    home = write_home(tmp_path, "claude-api", env={"ANTHROPIC_API_KEY": "sk-ant-api03-hw9-plain-key"},
                      provider="anthropic")
    result = quota(webui({"main": home}))
    assert result["ok"] is False
    assert result["provider"] == "anthropic"
    assert result["supported"] is True
    assert result["status"] == "unavailable"
    assert result["account_limits"]["unavailable_reason"].startswith("Anthropic account limits")
    assert "OAuth-backed Claude accounts" in result["message"]
    assert result["message"] == ("Anthropic account limits are unavailable. Anthropic account limits are only "
                                 "available for OAuth-backed Claude accounts.")


def test_hw_account_usage_profile_fetch_uses_short_lived_cache(webui, emulator, tmp_path):
    """Repeated reads are answered from the cache; ``refresh=1`` probes again and its
    answer is what later reads get (their ``refreshed_status`` / ``after_refresh``)."""
    token = jwt_for("acct-hw-cache")
    emulator.script(token, codex_usage(15.0, "2030-03-17T17:30:00Z"), path=CODEX_USAGE)
    home = write_home(tmp_path, "codex-cache", provider="openai-codex",
                      auth={"providers": {"openai-codex": {"tokens": {"access_token": token}}}})
    client = webui({"main": home})
    first, second = quota(client), quota(client)
    assert emulator.count(token=token) == 1 and first == second
    emulator.script(token, codex_usage(20.0, "2030-03-17T17:30:00Z"), path=CODEX_USAGE)
    refreshed = quota(client, refresh="1")
    after_refresh = quota(client)
    assert emulator.count(token=token) == 2
    assert refreshed["account_limits"]["windows"][0]["used_percent"] == 20.0
    assert after_refresh == refreshed


def test_hw_account_usage_forced_refresh_failure_preserves_warm_snapshot(webui, emulator, tmp_path):
    """A failed manual refresh keeps the last usable reading. hermes-webui answers that
    refresh ``unavailable`` and the next read with the warm snapshot; quota-probe answers
    the refresh itself with the last good reading too (its ``fetched_at`` says how old)."""
    token = jwt_for("acct-hw-refresh-fail")
    emulator.script(token, codex_usage(15.0, "2030-03-17T17:30:00Z"), path=CODEX_USAGE)
    home = write_home(tmp_path, "codex-warm", provider="openai-codex",
                      auth={"providers": {"openai-codex": {"tokens": {"access_token": token}}}})
    client = webui({"main": home})
    first = quota(client)
    emulator.script(token, {"error": "down"}, status=503, path=CODEX_USAGE)
    refreshed = quota(client, refresh="true")
    after_refresh_failure = quota(client)
    assert emulator.count(token=token) == 2
    assert first["status"] == refreshed["status"] == after_refresh_failure["status"] == "available"
    assert refreshed["account_limits"] == first["account_limits"] == after_refresh_failure["account_limits"]


def test_hw_account_usage_profile_fetch_caches_unavailable_snapshots(webui, emulator, tmp_path):
    """A known-unavailable answer (a reason, not a failure) is cached like an available one."""
    token = "sk-ant-oat01-hw-unavailable"
    emulator.script(token, {}, path="/api/oauth/usage")    # no windows: "no usage limits"
    home = write_home(tmp_path, "claude-empty", env={"ANTHROPIC_TOKEN": token}, provider="anthropic")
    client = webui({"main": home})
    first, second = quota(client), quota(client)
    assert first == second and first["status"] == "unavailable"
    assert first["account_limits"]["unavailable_reason"] == "Anthropic reported no usage limits for this account."
    assert emulator.count(token=token) == 1


def test_hw_account_usage_profile_fetch_does_not_cache_transient_none_results(webui, emulator, tmp_path):
    """A transient failure does not mask the next successful read."""
    token = jwt_for("acct-hw-transient")
    emulator.script(token, {"error": "busy"}, status=500, path=CODEX_USAGE)
    home = write_home(tmp_path, "codex-transient", provider="openai-codex",
                      auth={"providers": {"openai-codex": {"tokens": {"access_token": token}}}})
    client = webui({"main": home})
    first = quota(client)
    emulator.script(token, codex_usage(15.0, "2030-03-17T17:30:00Z"), path=CODEX_USAGE)
    second, third = quota(client), quota(client)
    assert first["status"] == "unavailable" and first["account_limits"] is None
    assert second["status"] == third["status"] == "available" and second == third
    assert emulator.count(token=token) == 2


def test_hw_account_usage_profile_cache_invalidates_with_credential_change(webui, emulator, tmp_path):
    """Their credential-pool invalidation clears the cached answer: here a rotation
    (``POST /api/rotate``) does, and so does rewriting the home's auth.json."""
    token = jwt_for("acct-hw-rotate")
    emulator.script(token, codex_usage(15.0, "2030-03-17T17:30:00Z"), path=CODEX_USAGE)
    home = write_home(tmp_path, "codex-rotate", provider="openai-codex",
                      auth={"providers": {"openai-codex": {"tokens": {"access_token": token}}}})
    client = webui({"main": home})
    quota(client)
    assert client.post("/api/rotate", json={"home": "main", "provider": "openai-codex"},
                       headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 204
    quota(client)
    assert emulator.count(token=token) == 2


def test_hw_account_usage_profile_fetches_can_overlap_for_different_homes(webui, emulator, tmp_path):
    """Two homes' probes are in flight together (held at the emulator), not serialized."""
    import threading

    tokens = [jwt_for("acct-hw-overlap-a"), jwt_for("acct-hw-overlap-b")]
    homes = {}
    for index, token in enumerate(tokens):
        emulator.script(token, codex_usage(15.0, "2030-03-17T17:30:00Z"), path=CODEX_USAGE)
        homes[f"h{index}"] = write_home(tmp_path, f"codex-overlap-{index}", provider="openai-codex",
                                        auth={"providers": {"openai-codex": {"tokens": {"access_token": token}}}})
    client = webui(homes)
    gates = [emulator.hold(token) for token in tokens]
    results: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda h=h: results.__setitem__(h, quota(client, home=h))) for h in homes]
    for thread in threads:
        thread.start()
    try:
        assert all(emulator.wait_for(1, token=token, timeout=20) for token in tokens)   # both in flight at once
    finally:
        for gate in gates:
            gate.set()
    for thread in threads:
        thread.join(30)
    assert {h: r["status"] for h, r in results.items()} == {"h0": "available", "h1": "available"}


# -- what hermes-webui's code answers that its tests do not pin, and bad input ---------------
def test_no_active_provider_is_hermes_webuis_answer(webui, tmp_path):
    homes = {"none": write_home(tmp_path, "no-config"),
             "bare": write_home(tmp_path, "bare-model"),
             "broken": write_home(tmp_path, "broken-yaml")}
    (homes["bare"] / "config.yaml").write_text("model: anthropic/claude-sonnet\n")
    (homes["broken"] / "config.yaml").write_text("model: {provider: [unclosed\n")
    client = webui(homes)
    expected = {"ok": False, "provider": None, "display_name": None, "supported": False, "status": "unavailable",
                "quota": None, "message": "No active provider is configured."}
    for home_id in homes:
        assert quota(client, home=home_id) == expected
        assert quota(client, home=home_id, provider="") == expected    # hermes-webui: provider= blank is no provider


def test_the_active_provider_follows_config_yaml(webui, emulator, tmp_path):
    """The worker reads config.yaml (the service only stats it): a rewrite takes effect."""
    home = write_home(tmp_path, "switch", env={"OPENROUTER_API_KEY": "sk-or-v1-hw-switch"}, provider="openrouter")
    client = webui({"main": home})
    assert quota(client)["provider"] == "openrouter"
    (home / "config.yaml").write_text("model:\n  provider: DeepSeek\n")
    assert quota(client)["provider"] == "deepseek"


@pytest.mark.parametrize("params", [{"provider": "no-such-provider"}, {"provider": "../../etc/passwd"},
                                    {"provider": "x" * 300}, {"provider": "<script>"}])
def test_unknown_providers_are_unsupported(webui, tmp_path, params):
    result = quota(webui({"main": write_home(tmp_path, "plain")}), **params)
    assert result["status"] == "unsupported" and result["supported"] is False and result["ok"] is False
    assert len(result["provider"]) <= 64 and result["provider"] == params["provider"].strip().lower()[:64]


def test_a_home_that_is_not_configured_is_hermes_webuis_unavailable_answer(webui, tmp_path):
    home = write_home(tmp_path, "configured", provider="openrouter")
    client = webui({"main": home})
    for home_id in ("nope", str(home), "../configured"):
        response = client.get("/api/provider/quota", params={"home": home_id, "provider": "openrouter"})
        assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
        result = response.json()
        assert (result["ok"], result["status"], result["provider"], result["quota"]) == \
            (False, "unavailable", "openrouter", None)
        assert result["message"].startswith("No home ")
        assert str(tmp_path) not in response.text or home_id == str(home)   # only what the client sent


def test_refresh_values_outside_hermes_webuis_set_are_a_plain_read(webui, emulator, tmp_path):
    token = "sk-or-v1-hw-refresh-words"
    home = write_home(tmp_path, "refresh-words", env={"OPENROUTER_API_KEY": token}, provider="openrouter")
    client = webui({"main": home})
    quota(client)
    credits = emulator.count(path=OPENROUTER_CREDITS_PATH, token=token)
    for word in ("maybe", "0", "", "no"):
        assert quota(client, refresh=word)["status"] == "available"
    assert emulator.count(path=OPENROUTER_CREDITS_PATH, token=token) == credits
    for word in ("1", "true", "YES", "on"):
        quota(client, refresh=word)
    assert emulator.count(path=OPENROUTER_CREDITS_PATH, token=token) == credits + 4
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):   # another site's page
        response = client.get("/api/provider/quota", params={"refresh": "1"}, headers=headers)
        assert response.status_code == 200 and response.json()["status"] == "available"
    assert emulator.count(path=OPENROUTER_CREDITS_PATH, token=token) == credits + 4


def test_a_hanging_provider_answers_unavailable_with_a_sanitized_reason(webui, tmp_path):
    home = write_home(tmp_path, "zai-hang", env={"GLM_API_KEY": "glm-hw-hang-0123456789abcdef-hang-"}, provider="zai")
    started = datetime.now(timezone.utc)
    response = webui({"main": home}, probe_timeout_s=1.0).get("/api/provider/quota")
    result = response.json()
    assert (datetime.now(timezone.utc) - started).total_seconds() < 20
    assert result["status"] == "unavailable" and result["account_limits"] is None
    assert result["message"].startswith("Z.AI / GLM account limits are unavailable. ")
    assert len(result["message"]) <= len("Z.AI / GLM account limits are unavailable. ") + 180
    assert "glm-hw-hang" not in response.text and str(home) not in response.text


def test_providers_hermes_webui_cannot_read_show_their_windows(webui, emulator, tmp_path):
    """Where quota-probe knows more (here z.ai's real windows), it says so in the same shape."""
    home = write_home(tmp_path, "zai", env={"GLM_API_KEY": "glm-hw-windows"}, provider="zai")
    result = quota(webui({"main": home}))
    assert result["status"] == "available" and result["ok"] is True and result["display_name"] == "Z.AI / GLM"
    limits = result["account_limits"]
    assert limits["windows"][0]["label"] == "Session" and limits["source"] == "quota_api"
    assert all(w["remaining_percent"] == max(0.0, min(100.0, 100.0 - w["used_percent"])) for w in limits["windows"])
    assert set(limits) == {"provider", "source", "title", "plan", "windows", "details", "available",
                           "unavailable_reason", "fetched_at"}


def test_provider_quota_in_process(emulator_env, tmp_path):
    """``probe.webui.provider_quota``: the same dict without HTTP, through the default service."""
    from probe.webui import provider_quota

    key = "test-openrouter-key-private-inproc"
    emulator_env.script(key, {"data": {"limit_remaining": 4, "usage": 6.25, "limit": 10}}, path=OPENROUTER_KEY_PATH)
    home = write_home(tmp_path, "inproc", env={"OPENROUTER_API_KEY": key}, provider="openrouter")
    import probe

    try:
        assert provider_quota(home=home)["quota"] == {"limit_remaining": 4, "usage": 6.25, "limit": 10}
        assert provider_quota("nous", home=home)["message"] == \
            "Nous Portal account limits are unavailable. Confirm provider authentication and try again."
        assert provider_quota(home=tmp_path / "missing") == {
            "ok": False, "provider": None, "display_name": None, "supported": False, "status": "unavailable",
            "quota": None, "message": "The home directory does not exist."}
    finally:
        if probe._default_service is not None:
            probe._default_service.close()
            probe._default_service = None


@pytest.mark.parametrize("text, shown", [
    ("Bearer eyJsecret-token-like-value should not leak", "Usage unavailable for this credential."),
    ("refresh_token expired", "Usage unavailable for this credential."),
    ("key sk-or-v1-0123456789abcdef0123456789 refused", "Usage unavailable for this credential."),
    ("  The provider   answered HTTP 503. ", "The provider answered HTTP 503."),
    ("No ANTHROPIC_TOKEN, CLAUDE_CODE_OAUTH_TOKEN or ANTHROPIC_API_KEY in .env.",
     "No ANTHROPIC_TOKEN, CLAUDE_CODE_OAUTH_TOKEN or ANTHROPIC_API_KEY in .env."),
    ("x " * 200, " ".join(["x"] * 200)[:180]),   # hermes-webui cuts at 180, as it is
])
def test_reasons_are_sanitized_as_hermes_webui_sanitizes_them(text, shown):
    from probe.webui import safe_reason

    assert safe_reason(text) == shown and len(safe_reason(text)) <= 180


@pytest.mark.parametrize("text, provider", [
    ("model:\n  provider: OpenRouter \n", "openrouter"),
    ("model: {provider: openai-codex, default: gpt-5}\n", "openai-codex"),
    ("model:\n  provider: custom:my-llm\n", "custom:my-llm"),
    ("model: anthropic/claude\n", None),             # the old bare-string form names no provider
    ("model:\n  provider: ''\n", None),
    ("model:\n  provider: [a, b]\n", None),
    ("model:\n  provider: 'has spaces in it'\n", None),   # echoed to a client: must be an id
    ("model:\n  provider: " + "p" * 65 + "\n", None),
    ("- just\n- a list\n", None),
    ("model: {provider: [unclosed\n", None),
    (b"model:\n  provider: \xff\xfe\n", None),
    ("a: &a [*a, *a]\nmodel: {provider: nous}\n", "nous"),   # aliases are references, not copies
])
def test_the_worker_reads_model_provider_as_hermes_does(tmp_path, text, provider):
    from workers.hermes_config import active_provider

    (tmp_path / "config.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    assert active_provider(tmp_path) == provider


def test_an_oversized_or_missing_config_names_no_provider(tmp_path, capfd):
    from workers.hermes_config import MAX_CONFIG_BYTES, active_provider

    assert active_provider(tmp_path) is None and capfd.readouterr().err == ""   # missing: nothing to say
    (tmp_path / "config.yaml").write_text("model:\n  provider: nous\n#" + "x" * MAX_CONFIG_BYTES)
    assert active_provider(tmp_path) is None
    said = capfd.readouterr().err
    assert "config.yaml is larger than" in said and str(tmp_path) not in said
