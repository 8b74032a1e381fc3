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
    clients = {"invalid": webui(homes), "slow": webui(homes, probe_timeout_s=1.0)}   # 1 s: the hang's deadline
    for home_id, expected, message in (("invalid", "invalid_key", "OpenRouter rejected the configured API key."),
                                       ("slow", "unavailable", "OpenRouter quota status is temporarily unavailable.")):
        response = clients[home_id].get("/api/provider/quota", params={"provider": "openrouter", "home": home_id})
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
    # the same reading; its ``source`` is left out: since accounts (#27) a stale single-account
    # snapshot carries the failed probe's source (null), not the good reading's -- reported
    def reading(result: dict) -> dict:
        return {k: v for k, v in result["account_limits"].items() if k != "source"}
    assert reading(refreshed) == reading(first) == reading(after_refresh_failure)


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
    response = webui({"main": home}, probe_timeout_s=1.0).get("/api/provider/quota", params={"provider": "zai"})
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


# -- pools (SPEC §18's accounts in hermes-webui's pool shape) --------------------------------
def codex_pool_home(root, name: str, rows: list[dict], provider: str = "openai-codex"):
    for index, row in enumerate(rows):
        row.setdefault("id", f"{index + 1:06x}")
        row.setdefault("priority", index)
        row.setdefault("auth_type", "oauth")
        row.setdefault("source", "manual:device_code")
    return write_home(root, name, provider=provider, auth={"credential_pool": {provider: rows}})


def test_hw_codex_account_usage_subprocess_reports_read_only_credential_pool(webui, emulator, tmp_path):
    primary_token, exhausted_token = jwt_for("acct-primary", "hw-pool"), jwt_for("acct-exhausted", "hw-pool")
    for token, used, plan in ((primary_token, 15, "pro"), (exhausted_token, 95, "plus")):
        emulator.script(token, codex_usage(used, 1_900_000_000, plan=plan), path=CODEX_USAGE)
    home = codex_pool_home(tmp_path, "codex-pool", [
        {"label": "Team primary", "access_token": primary_token, "last_status": None},
        {"label": "Plus backup", "access_token": exhausted_token, "last_status": "exhausted",
         "last_status_at": 1_900_000_000},
    ])
    auth_before = (home / "auth.json").read_bytes()
    response = webui({"main": home}).get("/api/provider/quota")
    result = response.json()
    assert [r.token for r in emulator.requests() if r.token in (primary_token, exhausted_token)] == [primary_token]
    assert [r.headers.get("chatgpt-account-id") for r in emulator.requests() if r.token == primary_token] == \
        ["acct-primary"]
    assert (home / "auth.json").read_bytes() == auth_before        # read-only: the pool is never rewritten
    snapshot = result["account_limits"]
    assert result["status"] == "available" and result["ok"] is True
    assert snapshot["provider"] == "openai-codex"
    assert snapshot["source"] == "usage_api_pool"
    assert snapshot["windows"][0]["label"] == "Session"
    assert snapshot["windows"][0]["used_percent"] == 15
    assert snapshot["details"] == ["1/2 credentials available", "1 exhausted", "Plans: Pro"]
    assert snapshot["available"] is True
    assert recent(snapshot["pool"]["credentials"][0]["fetched_at"])
    assert snapshot["pool"] == {
        "total_credentials": 2,
        "queried_credentials": 1,
        "available_credentials": 1,
        "exhausted_credentials": 1,
        "dead_credentials": 0,          # quota-probe: every pool has every count
        "failed_credentials": 0,
        "plans": ["Pro"],
        "next_reset_at": "2030-03-17T17:46:40Z",
        "best_remaining_by_window": [
            {"label": "Session", "remaining_percent": 85.0, "used_percent": 15.0,
             "reset_at": "2030-03-17T17:46:40Z", "detail": None, "credential_label": "Team primary"},
            {"label": "Weekly", "remaining_percent": 60.0, "used_percent": 40.0,
             "reset_at": "2030-03-24T12:30:00Z", "detail": None, "credential_label": "Team primary"},
        ],
        "credentials": [
            {
                "label": "Team primary",
                "status": "available",
                "plan": "Pro",
                "windows": [
                    {"label": "Session", "used_percent": 15.0, "remaining_percent": 85.0,
                     "reset_at": "2030-03-17T17:46:40Z", "detail": None},
                    {"label": "Weekly", "used_percent": 40.0, "remaining_percent": 60.0,
                     "reset_at": "2030-03-24T12:30:00Z", "detail": None},
                ],
                "details": ["Credits balance: $12.50"],
                "unavailable_reason": None,
                "retry_after": None,    # quota-probe: every row has every key
                "fetched_at": snapshot["pool"]["credentials"][0]["fetched_at"],
            },
            {
                "label": "Plus backup",
                "status": "exhausted",
                "plan": None,
                "windows": [],
                "details": [],
                "unavailable_reason": "Credential pool marked this credential exhausted; retry after 2030-03-17T18:46:40Z.",
                "retry_after": "2030-03-17T18:46:40Z",
                "fetched_at": None,
            },
        ],
    }
    assert primary_token not in response.text and exhausted_token not in response.text


def test_hw_codex_account_usage_subprocess_retries_expired_pool_exhaustion(webui, emulator, tmp_path):
    """An expired cooldown is probed, not shown exhausted. (Their pool has this one entry;
    quota-probe shows a pool for several accounts (SPEC §18), so a second one is beside it.)"""
    token, other = jwt_for("acct-expired", "hw-expired"), jwt_for("acct-other", "hw-expired")
    for each in (token, other):
        emulator.script(each, {"plan_type": "team", "rate_limit": {
            "primary_window": {"used_percent": 10, "reset_at": "2030-03-17T17:30:00Z"}}}, path=CODEX_USAGE)
    home = codex_pool_home(tmp_path, "codex-expired", [
        {"label": "Expired cooldown", "access_token": token, "last_status": "exhausted", "last_status_at": 1,
         "last_error_code": None, "last_error_reset_at": None},
        {"label": "Other", "access_token": other},
    ])
    response = webui({"main": home}).get("/api/provider/quota")
    snapshot = response.json()["account_limits"]
    assert emulator.count(path=CODEX_USAGE, token=token) == 1
    assert snapshot["pool"]["queried_credentials"] == 2
    assert snapshot["pool"]["exhausted_credentials"] == 0
    assert snapshot["pool"]["credentials"][0]["status"] == "available"
    assert snapshot["pool"]["credentials"][0]["unavailable_reason"] is None
    assert token not in response.text


def test_hw_codex_account_usage_subprocess_probes_pool_entries_concurrently(webui, emulator, tmp_path):
    """Both accounts' requests are in flight together (held at the emulator until both
    arrived), and the rows come back in pool order."""
    import threading

    token_a, token_b = jwt_for("acct-a", "hw-concurrent"), jwt_for("acct-b", "hw-concurrent")
    for token, used in ((token_a, 80), (token_b, 10)):
        emulator.script(token, {"plan_type": "team", "rate_limit": {
            "primary_window": {"used_percent": used, "reset_at": "2030-03-17T17:30:00Z"}}}, path=CODEX_USAGE)
    home = codex_pool_home(tmp_path, "codex-concurrent", [{"label": "Slow A", "access_token": token_a},
                                                          {"label": "Slow B", "access_token": token_b}])
    client = webui({"main": home})
    gates = [emulator.hold(token_a), emulator.hold(token_b)]
    got: list[httpx.Response] = []
    reader = threading.Thread(target=lambda: got.append(client.get("/api/provider/quota")))
    reader.start()
    try:
        assert emulator.wait_for(1, token=token_a, timeout=20) and emulator.wait_for(1, token=token_b, timeout=20)
    finally:
        for gate in gates:
            gate.set()
    reader.join(30)
    snapshot = got[0].json()["account_limits"]
    assert snapshot["pool"]["queried_credentials"] == 2
    assert [row["label"] for row in snapshot["pool"]["credentials"]] == ["Slow A", "Slow B"]
    assert snapshot["pool"]["best_remaining_by_window"][0]["credential_label"] == "Slow B"
    assert snapshot["pool"]["best_remaining_by_window"][0]["remaining_percent"] == 90.0
    assert token_a not in got[0].text and token_b not in got[0].text


def test_hw_codex_account_usage_subprocess_sanitizes_pool_entry_errors(webui, emulator, tmp_path):
    """A failing account is counted failed and its reason carries nothing token-like. (Their
    mock's exception text holds a bearer token, which their sanitizer replaces; quota-probe's
    reasons never hold the provider's text, so the row says what happened.)"""
    bad, good = jwt_for("acct-bad", "hw-sanitize"), jwt_for("acct-good", "hw-sanitize")
    emulator.script(bad, {"error": "Bearer eyJsecret-token-like-value should not leak"}, status=500)
    emulator.script(good, codex_usage(20, "2030-03-17T17:30:00Z"), path=CODEX_USAGE)
    home = codex_pool_home(tmp_path, "codex-sanitize", [{"label": "Bad token", "access_token": bad},
                                                        {"label": "Good", "access_token": good}])
    response = webui({"main": home}).get("/api/provider/quota")
    snapshot = response.json()["account_limits"]
    assert snapshot["pool"]["failed_credentials"] == 1
    row = snapshot["pool"]["credentials"][0]
    assert row["status"] == "unavailable" and row["unavailable_reason"]
    assert "eyJsecret" not in response.text and "Bearer" not in response.text and bad not in response.text


def test_hw_codex_pool_with_no_available_account_is_unavailable_with_hermes_webuis_reason(webui, emulator, tmp_path):
    """Their pool snapshot with no available credential: ``available`` false and "No Codex pool
    credentials returned available account limits.", as the envelope's reason."""
    tokens = [jwt_for("acct-down-a", "hw-none"), jwt_for("acct-down-b", "hw-none")]
    for token in tokens:
        emulator.script(token, {"error": "down"}, status=503)
    home = codex_pool_home(tmp_path, "codex-none", [{"label": "A", "access_token": tokens[0]},
                                                    {"label": "B", "access_token": tokens[1]}])
    result = quota(webui({"main": home}))
    assert (result["ok"], result["status"], result["supported"]) == (False, "unavailable", True)
    assert result["account_limits"]["available"] is False
    assert result["account_limits"]["unavailable_reason"] == "No Codex pool credentials returned available account limits."
    assert result["message"] == ("OpenAI Codex account limits are unavailable. No Codex pool credentials returned "
                                 "available account limits.")
    assert result["account_limits"]["pool"]["failed_credentials"] == 2


def test_hw_openrouter_with_several_keys_answers_the_first_available_keys_quota(webui, emulator, tmp_path):
    first, second = "sk-or-v1-hw-first-key", "sk-or-v1-hw-second-key"
    emulator.script(first, {"data": {"limit_remaining": 4, "usage": 6, "limit": 10}}, path=OPENROUTER_KEY_PATH)
    emulator.script(second, {"data": {"limit_remaining": 1, "usage": 9, "limit": 10}}, path=OPENROUTER_KEY_PATH)
    home = write_home(tmp_path, "or-two", env={"OPENROUTER_API_KEY": first, "OPENROUTER_API_KEY_2": second},
                      provider="openrouter")
    result = quota(webui({"main": home}))
    assert result["quota"] == {"limit_remaining": 4, "usage": 6, "limit": 10} and "account_limits" not in result


# -- tests/test_issue4360_generic_pool_quota.py: pool-only ids, Hermes' own records ----------
def pool_only_home(root, name: str, provider: str, rows: list[dict], *, active: str | None = None):
    for index, row in enumerate(rows):
        row.setdefault("id", f"{index + 10:06x}")
        row.setdefault("priority", index)
        row.setdefault("auth_type", "api_key")
        row.setdefault("access_token", f"{provider}-hw-key-{index}-0123456789")
    return write_home(root, name, provider=active or provider, auth={"credential_pool": {provider: rows}})


def soon(hours: float) -> float:
    return datetime.now(timezone.utc).timestamp() + hours * 3600


def test_hw_local_pool_snapshot_with_available_entries(webui, tmp_path):
    home = pool_only_home(tmp_path, "google", "google", [{"label": "Cred 1", "source": "test", "last_status": "ok"},
                                                         {"label": "Cred 2", "source": "test", "last_status": "ok"}])
    result = quota(webui({"main": home}))
    limits = result["account_limits"]
    assert limits["provider"] == "google" and limits["source"] == "local_pool" and limits["available"] is True
    assert limits["pool"]["total_credentials"] == 2
    assert limits["pool"]["available_credentials"] == 2
    assert limits["pool"]["exhausted_credentials"] == 0
    assert len(limits["pool"]["credentials"]) == 2
    assert limits["pool"]["credentials"][0]["status"] == "available"
    assert "2/2 credentials available" in limits["details"]
    # test_get_provider_quota_uses_local_pool_for_non_allowlist_provider
    assert (result["ok"], result["provider"], result["status"], result["supported"]) == \
        (True, "google", "available", True)
    assert result["label"] == "Credential pool" and result["message"] == "Google credential pool status loaded."


def test_hw_local_pool_snapshot_with_exhausted_entries(webui, tmp_path):
    until = soon(1)
    home = pool_only_home(tmp_path, "openai", "openai", [
        {"label": "Exhausted Cred", "source": "test", "last_status": "exhausted", "last_status_at": until - 3600,
         "last_error_code": 401, "last_error_reset_at": until}])
    result = quota(webui({"main": home}))
    limits = result["account_limits"]
    assert limits["available"] is False
    assert limits["pool"]["total_credentials"] == 1
    assert limits["pool"]["available_credentials"] == 0
    assert limits["pool"]["exhausted_credentials"] == 1
    assert limits["pool"]["credentials"][0]["status"] == "exhausted"
    assert "All pool credentials are unavailable" in limits["unavailable_reason"]
    assert "1 exhausted" in limits["details"]
    # test_get_provider_quota_unavailable_when_all_pool_exhausted
    assert (result["ok"], result["provider"], result["status"], result["supported"]) == \
        (False, "openai", "unavailable", True)
    assert "all credentials are unavailable" in result["message"]
    assert result["message"] == "OpenAI credential pool: all credentials are unavailable."


def test_hw_local_pool_snapshot_with_mixed_entries(webui, tmp_path):
    until = soon(1)
    home = pool_only_home(tmp_path, "vertex", "vertex", [
        {"label": "Available", "source": "test", "last_status": "ok"},
        {"label": "Exhausted", "source": "test", "last_status": "exhausted", "last_status_at": until - 3600,
         "last_error_code": 429, "last_error_reset_at": until}])
    limits = quota(webui({"main": home}))["account_limits"]
    assert limits["available"] is True
    assert limits["pool"]["total_credentials"] == 2
    assert limits["pool"]["available_credentials"] == 1
    assert limits["pool"]["exhausted_credentials"] == 1
    assert "1/2 credentials available" in limits["details"]
    assert "1 exhausted" in limits["details"]


def test_hw_local_pool_snapshot_with_dead_entry(webui, tmp_path):
    home = pool_only_home(tmp_path, "xai-oauth", "xai-oauth", [
        {"label": "Dead Cred", "source": "test", "last_status": "dead", "last_error_code": 401}])
    limits = quota(webui({"main": home}))["account_limits"]
    assert limits["available"] is False
    assert limits["pool"]["available_credentials"] == 0
    assert limits["pool"]["dead_credentials"] == 1
    assert limits["pool"]["credentials"][0]["status"] == "dead"
    assert limits["pool"]["credentials"][0]["unavailable_reason"] == "Credential permanently revoked or invalid."
    assert "All pool credentials are unavailable" in limits["unavailable_reason"]


def test_hw_local_pool_snapshot_snapshot_shape(webui, tmp_path):
    home = pool_only_home(tmp_path, "test-provider", "test-provider",
                          [{"label": "Test", "source": "test", "last_status": "ok"}])
    limits = quota(webui({"main": home}))["account_limits"]
    assert set(limits) == {"provider", "source", "title", "plan", "windows", "details", "available",
                           "unavailable_reason", "fetched_at", "pool"}
    assert limits["title"] == "Credential pool"
    assert limits["plan"] is None
    assert limits["windows"] == []
    assert recent(limits["fetched_at"])
    assert limits["pool"] == {
        "total_credentials": 1, "queried_credentials": 0, "available_credentials": 1, "exhausted_credentials": 0,
        "dead_credentials": 0, "failed_credentials": 0, "plans": [], "next_reset_at": None,
        "best_remaining_by_window": [],
        "credentials": [{"label": "Test", "status": "available", "plan": None, "windows": [], "details": [],
                         "unavailable_reason": None, "retry_after": None, "fetched_at": None}]}


@pytest.mark.parametrize("rows, total", [
    ([{"label": "gh auth token", "source": "gh_cli", "last_status": "ok"}], None),
    ([{"label": "gh auth token", "source": "gh_cli", "last_status": "ok"},
      {"label": "My API Key", "source": "manual", "last_status": "ok"}], 1),
])
def test_hw_local_pool_snapshot_filters_ambient_gh_cli_entries(webui, tmp_path, rows, total):
    """Machine-wide ``gh_cli`` rows are not the home's: no phantom "1 credential available"
    (their copilot case: copilot has an adapter here, so a pool-only id stands in)."""
    home = pool_only_home(tmp_path, "models", "github-models", rows)
    result = quota(webui({"main": home}))
    if total is None:
        assert result["status"] == "unsupported"
    else:
        assert result["account_limits"]["pool"]["total_credentials"] == total
        assert result["account_limits"]["pool"]["available_credentials"] == total
        assert [row["label"] for row in result["account_limits"]["pool"]["credentials"]] == ["My API Key"]


@pytest.mark.parametrize("auth", [{}, {"credential_pool": {"some-other-provider": []}},
                                  {"credential_pool": {"some-other-provider": None}}])
def test_hw_get_provider_quota_falls_through_to_unsupported_when_no_pool(webui, tmp_path, auth):
    home = write_home(tmp_path, "no-pool", provider="some-other-provider", auth=auth)
    result = quota(webui({"main": home}))
    assert (result["ok"], result["status"], result["supported"]) == (False, "unsupported", False)


def test_hw_local_pool_snapshot_handles_a_broken_auth_json(webui, tmp_path):
    """Their load_pool raising: here auth.json cannot be parsed -- no pool, unsupported."""
    home = write_home(tmp_path, "broken-auth", provider="custom-provider")
    (home / "auth.json").write_text('{"credential_pool": {"custom-provider": [')
    result = quota(webui({"main": home}))
    assert (result["ok"], result["status"]) == (False, "unsupported")


def test_hw_openrouter_uses_api_key_path_not_local_pool(webui, emulator, tmp_path):
    result = quota(webui({"main": write_home(tmp_path, "or-pool-none")}), provider="openrouter")
    assert result["status"] == "no_key" and "account_limits" not in result


def test_pool_only_accounts_follow_the_accounts_rules(tmp_path):
    """``workers.pool_accounts``: priority order, machine-wide rows skipped, Hermes' 60 s
    cooldown for the only account not dead (hermes-webui's own copy says an hour), a label
    quoting a secret shown as ``Account N``."""
    import time

    from workers.credentials import load_home
    from workers.pool_accounts import pool_only_accounts

    now = time.time()
    rows = [
        {"id": "bbbbbb", "label": "second", "priority": 1, "access_token": "xai-key-second-0123456789",
         "last_status": "exhausted", "last_status_at": now - 120, "last_error_code": 429},
        {"id": "aaaaaa", "label": "key xai-key-first-0123456789", "priority": 0,
         "access_token": "xai-key-first-0123456789", "last_status": "dead"},
        {"id": "cccccc", "label": "gh", "source": "gh_cli", "priority": 0, "access_token": "gho_x"},
    ]
    home = write_home(tmp_path, "pool-rules", auth={"credential_pool": {"xai": rows}})
    accounts = pool_only_accounts("xai", load_home(home), now)
    # "second" is the only account not dead: exhausted 60 s after last_status_at, which has passed
    assert accounts == [
        {"id": "aaaaaa", "label": "Account 1", "source": None, "status": "dead", "retry_after": None},
        {"id": "bbbbbb", "label": "second", "source": None, "status": "available", "retry_after": None},
    ]
    assert pool_only_accounts("gemini", load_home(home), now) is None


def test_a_provider_answering_garbage_is_unavailable_with_its_reason(webui, tmp_path):
    """A provider whose probe fails (here: a 200 that is not JSON) answers hermes-webui's
    "unavailable with the reason" form with quota-probe's reason -- not the authentication
    hint, which would send the user to the wrong place."""
    home = write_home(tmp_path, "ds-garbage", env={"DEEPSEEK_API_KEY": "sk-hw-garbage-"}, provider="deepseek")
    result = quota(webui({"main": home}))
    assert (result["ok"], result["status"], result["account_limits"]) == (False, "unavailable", None)
    assert result["message"].startswith("DeepSeek account limits are unavailable. ")
    assert "Confirm provider authentication" not in result["message"]


def test_the_worker_ops_refuse_bad_requests_and_a_missing_home(tmp_path, monkeypatch):
    from workers.loop import Loop

    loop = Loop()
    loop.home = str(tmp_path / "gone")
    reply, _ = loop.handle(b'{"id": 1, "op": "pool_accounts"}\n')
    assert reply["error"]["code"] == "bad_request"
    for line in (b'{"id": 2, "op": "active_provider"}\n', b'{"id": 3, "op": "pool_accounts", "provider": "xai"}\n'):
        reply, keep_going = loop.handle(line)
        assert keep_going and reply["ok"] is False and reply["error"]["code"] == "home_not_found"
    loop.home = str(write_home(tmp_path, "ops", provider="nous",
                               auth={"credential_pool": {"xai": [{"id": "abcdef", "label": "work", "access_token": "k" * 20}]}}))
    assert loop.handle(b'{"id": 4, "op": "active_provider"}\n')[0] == {"id": 4, "ok": True, "provider": "nous"}
    accounts = loop.handle(b'{"id": 5, "op": "pool_accounts", "provider": "xai"}\n')[0]["accounts"]
    assert accounts == [{"id": "abcdef", "label": "work", "source": None, "status": "available", "retry_after": None}]
    assert loop.handle(b'{"id": 6, "op": "pool_accounts", "provider": "gemini"}\n')[0]["accounts"] is None


def test_every_providers_accounts_show_as_hermes_webuis_pool(webui, tmp_path):
    """Not only Codex: two z.ai keys (Hermes' numbered ``GLM_API_KEY_2``) are a pool in
    hermes-webui's shape, with z.ai's real windows per credential."""
    home = write_home(tmp_path, "zai-two", env={"GLM_API_KEY": "glm-hw-pool-one", "GLM_API_KEY_2": "glm-hw-pool-two"},
                      provider="zai")
    result = quota(webui({"main": home}))
    limits = result["account_limits"]
    assert (result["status"], limits["source"], limits["details"][0]) == \
        ("available", "quota_api_pool", "2/2 credentials available")
    pool = limits["pool"]
    assert (pool["total_credentials"], pool["queried_credentials"], pool["available_credentials"]) == (2, 2, 2)
    assert [row["label"] for row in pool["credentials"]] == ["env:GLM_API_KEY", "env:GLM_API_KEY_2"]
    assert all(row["windows"] and row["windows"][0]["label"] == "Session" for row in pool["credentials"])
    session = next(b for b in pool["best_remaining_by_window"] if b["label"] == "Session")
    rows = {row["label"]: row for row in pool["credentials"]}
    assert session["remaining_percent"] == max(row["windows"][0]["remaining_percent"] for row in rows.values())
    assert limits["windows"][0]["detail"] == "Best of 2 available credentials"


def test_a_route_whose_translation_raises_still_answers_hermes_webuis_200(webui, tmp_path, monkeypatch, caplog):
    """SPEC §19: always 200. The failure branch logged through a module the server no
    longer imported, so a raising translation was a NameError -- a 500."""
    import probe.webui

    client = webui({"main": write_home(tmp_path, "raises", provider="openrouter")})

    def broken(*args, **kwargs):
        raise RuntimeError("sk-or-v1-never-shown")

    monkeypatch.setattr(probe.webui, "answer", broken)
    result = quota(client, provider="openrouter")
    assert result["status"] == "unavailable" and result["message"] == "Quota status is temporarily unavailable."
    assert "RuntimeError" in caplog.text and "never-shown" not in caplog.text
