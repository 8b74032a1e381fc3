"""The provider contract in-process (SPEC §16): what ``ctx`` does over real HTTP to the
emulator, what a ``probe(ctx)`` result may be (workers.validate), and how a provider that
raises or misbehaves is contained (workers.providers.run_probe). Plugins installed for real,
in their own virtualenv, are tested in test_plugins.py."""
from __future__ import annotations

import itertools
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from workers.context import ProbeContext
from workers.credentials import load_home
from workers.http import ProviderHttp
from workers.places import parse_all
from workers.providers import Provider, ProviderSpec, run_probe
from workers.result import ProbeFailure
from workers.validate import to_snapshot
from support import fresh

pytestmark = pytest.mark.timeout(30)
_unique = itertools.count()
SNAPSHOT_KEYS = ["provider", "available", "title", "plan", "source", "windows", "details", "balances",
                 "unavailable_reason", "error"]



@pytest.fixture
def ctx_for(tmp_path, http):
    def make(env: str = "", auth: dict | None = None, *, credentials=(), timeout_s: float = 5.0,
             name: str = "qp-contract") -> ProbeContext:
        home = tmp_path / f"home-{next(_unique)}"
        home.mkdir()
        (home / ".env").write_text(env)
        if auth is not None:
            (home / "auth.json").write_text(json.dumps(auth))
        return ProbeContext(name, load_home(home), http, timeout_s, label="QP Contract",
                            credentials=parse_all(list(credentials)))
    return make


# -- ctx: the home ----------------------------------------------------------------------
def test_ctx_reads_the_home_through_places(ctx_for):
    auth = {"credential_pool": {"qp": [{"access_token": ""}, {"access_token": "pool-tok", "extra": 1}]}}
    ctx = ctx_for("QP_KEY=\nOTHER= spaced \n", auth,
                  credentials=[".env:QP_KEY", "auth.json:credential_pool.qp[].access_token"])
    assert ctx.name == "qp-contract" and ctx.label == "QP Contract"
    assert ctx.env("QP_KEY") is None and ctx.env("OTHER") == "spaced" and ctx.env("MISSING") is None
    assert ctx.credential() == "pool-tok"
    assert ctx.values("auth.json:credential_pool.qp[].access_token") == ["pool-tok"]
    assert ctx.lookup("auth.json:credential_pool.qp[]")[1] == {"access_token": "pool-tok", "extra": 1}
    assert ctx_for("").credential() is None and ctx_for("").auth() == {}


def test_ctx_auth_and_lookup_are_copies(ctx_for):
    ctx = ctx_for("", {"providers": {"qp": {"token": "t"}}})
    ctx.auth()["providers"]["qp"]["token"] = "changed"
    ctx.lookup("auth.json:providers.qp")[0]["token"] = "changed too"
    assert ctx.values("auth.json:providers.qp.token") == ["t"]


def test_ctx_malformed_files_and_places(ctx_for):
    ctx = ctx_for("BROKEN LINE\nANY=1\n", {"token": "fine", "pool": "not a list"})
    assert ctx.env("ANY") == "1"   # python-dotenv skips the line it cannot parse; the rest counts
    assert ctx.values("auth.json:token") == ["fine"]
    with pytest.raises(ctx.Failure) as info:
        ctx.values("auth.json:pool[].token")
    assert info.value.code == "credentials_unreadable" and info.value.message == \
        "auth.json is malformed: pool should be a list."
    with pytest.raises(ctx.Failure) as info:
        ctx.values("auth.json:a[0]")
    assert info.value.code == "bad_response" and "malformed place" in info.value.message


def test_ctx_deadline_counts_down(ctx_for):
    ctx = ctx_for(timeout_s=5.0)
    first = ctx.deadline_s
    assert 4.0 < first <= 5.0 and ctx.deadline_s <= first
    assert ctx_for(timeout_s=0.001).deadline_s < 0.01


def test_ctx_failure_and_fail(ctx_for):
    ctx = ctx_for()
    assert ctx.Failure is ProbeFailure
    with pytest.raises(ctx.Failure) as info:
        ctx.fail("rate_limited", "Slow down.", retry_after_s=5)
    assert (info.value.code, info.value.message, info.value.retry_after_s, info.value.status) == \
        ("rate_limited", "Slow down.", 5, None)


# -- ctx: HTTP (real requests to the emulator) -----------------------------------------
def test_ctx_base_url_follows_the_environment(ctx_for, monkeypatch):
    monkeypatch.delenv("PROBE_QP_CONTRACT_BASE_URL", raising=False)
    assert ctx_for().base_url("https://example.test/api/") == "https://example.test/api"
    monkeypatch.setenv("PROBE_QP_CONTRACT_BASE_URL", "http://127.0.0.1:1/x/")
    assert ctx_for().base_url("https://example.test") == "http://127.0.0.1:1/x"


def test_ctx_get_json_sends_bearer_and_accept(emulator, ctx_for):
    token = fresh("qp-get")
    emulator.script(token, {"ok": [1, "two"]})
    ctx = ctx_for()
    assert ctx.get_json(emulator.base_url + "/qp/usage", token=token, headers={"X-Extra": "1"}) == {"ok": [1, "two"]}
    request = [r for r in emulator.requests() if r.token == token][-1]
    assert (request.method, request.path) == ("GET", "/qp/usage")
    assert request.headers["accept"] == "application/json" and request.headers["x-extra"] == "1"


def test_ctx_headers_may_carry_their_own_authorization(emulator, ctx_for):
    token = fresh("qp-own-auth")
    emulator.script(token, {"ok": True})
    ctx_for().get_json(emulator.base_url + "/qp", token="ignored", headers={"authorization": f"Bearer {token}"})
    request = [r for r in emulator.requests() if r.token == token][-1]
    assert request.headers["authorization"] == f"Bearer {token}"
    assert not [r for r in emulator.requests() if r.token == "ignored"]
    ctx = ctx_for()
    with pytest.raises(ctx.Failure) as info:   # Copilot's form; the emulator knows bearer tokens only: 404
        ctx.get_json(emulator.base_url + "/qp-copilot-form", headers={"Authorization": f"token {token}"})
    assert info.value.status == 404
    sent = [r for r in emulator.requests() if r.path == "/qp-copilot-form"][-1]
    assert sent.headers["authorization"] == f"token {token}"


def test_ctx_post_json_and_the_status_on_failure(emulator, ctx_for):
    """The emulator answers every POST 405: the failure carries the status, so a provider
    can fall back (as MiniMax's two endpoints need) without importing anything."""
    token = fresh("qp-post")
    ctx = ctx_for()
    with pytest.raises(ctx.Failure) as info:
        ctx.post_json(emulator.base_url + "/qp/post", {"q": 1}, token=token)
    assert (info.value.code, info.value.status) == ("provider_error", 405)
    request = [r for r in emulator.requests() if r.token == token][-1]
    assert request.method == "POST" and request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(b'{"q":1}'))


@pytest.mark.parametrize("marker, code, status", [("-401-", "unauthorized", 401), ("-403-", "forbidden", 403),
                                                  ("-429-", "rate_limited", 429), ("-500-", "provider_error", 500),
                                                  ("-garbage-", "bad_response", None)])
def test_ctx_error_mapping(emulator, ctx_for, marker, code, status):
    ctx = ctx_for()
    with pytest.raises(ctx.Failure) as info:
        ctx.get_json(emulator.base_url + "/api/oauth/usage", token=fresh(f"qp{marker}x"),
                     headers={"anthropic-beta": "oauth-2025-04-20"})
    assert (info.value.code, info.value.status) == (code, status)
    if code == "rate_limited":
        assert info.value.retry_after_s == 7
    assert "QP Contract" in info.value.message


def test_ctx_requests_end_at_the_deadline(emulator, ctx_for):
    ctx = ctx_for(timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(ctx.Failure) as info:
        ctx.get_json(emulator.base_url + "/user/balance", token=fresh("qp-hang-x"))
    assert info.value.code == "timeout"
    with pytest.raises(ctx.Failure) as info:
        ctx.get_json(emulator.base_url + "/user/balance", token=fresh("qp-after"))
    assert info.value.code == "timeout" and "no time left" in info.value.message
    assert time.monotonic() - started < 2.0


# -- validation --------------------------------------------------------------------------
def test_a_full_result_is_normalized():
    snap = to_snapshot("qp", "QP", {
        "title": "Plan usage", "plan": "Pro", "source": "usage_api",
        "windows": [{"label": "Session", "used_percent": "25.456", "reset_at": 1785816000000, "window_s": 18000,
                     "detail": "1 of 4"},
                    {"label": "Weekly", "used_percent": 1e9, "reset_at": "2026-08-09T21:30:00.716839300+05:30",
                     "window_s": "604800"},
                    {"label": "Low", "used_percent": -5, "reset_at": None, "window_s": 0},
                    {"label": "Unknown share"}],
        "balances": [{"label": "Credits", "amount": "12.345"}, {"label": "Points", "amount": 14000.125, "currency": "Points"},
                     {"label": "Yuan", "amount": 1, "currency": "cny"}],
        "details": ["Balance: $12.35"]})
    assert list(snap) == SNAPSHOT_KEYS
    assert snap["available"] is True and snap["error"] is None and snap["provider"] == "qp"
    assert [(w["label"], w["used_percent"], w["remaining_percent"], w["reset_at"], w["window_s"]) for w in snap["windows"]] == [
        ("Session", 25.46, 74.54, "2026-08-04T04:00:00Z", 18000.0),
        ("Weekly", 100.0, 0.0, "2026-08-09T16:00:00Z", 604800.0),
        ("Low", 0.0, 100.0, None, None),
        ("Unknown share", None, None, None, None)]
    assert snap["balances"] == [{"label": "Credits", "amount": 12.35, "currency": "USD"},
                                {"label": "Points", "amount": 14000.125, "currency": "points"},
                                {"label": "Yuan", "amount": 1.0, "currency": "CNY"}]


@pytest.mark.parametrize("result, available", [
    ({}, False),
    ({"balances": [{"label": "Credits", "amount": 3}]}, True),
    ({"details": ["x"], "unavailable_reason": "Not for this plan."}, False),
    ({"windows": [{"label": "W", "used_percent": 1}]}, True),
])
def test_available(result, available):
    assert to_snapshot("qp", "QP", result)["available"] is available


HUGE = "x" * (10 * 1024 * 1024)


@pytest.mark.parametrize("result, reason", [
    (None, "probe() returned null, not a dict"),
    ([{"label": "W"}], "probe() returned a list, not a dict"),
    ("ok", "probe() returned a string, not a dict"),
    ({"window": []}, "the result has a key other than"),
    ({"windows": {"label": "W"}}, "windows is a dict, not a list"),
    ({"windows": [{"label": "W"}] * 51}, "windows has more than 50 entries"),
    ({"windows": ["W"]}, "windows[0] is a string, not a dict"),
    ({"windows": [{"used_percent": 5}]}, "windows[0].label is null, not a string"),
    ({"windows": [{"label": "W", "used_percent": "abc"}]}, "windows[0].used_percent is not a number"),
    ({"windows": [{"label": "W", "used_percent": True}]}, "windows[0].used_percent is not a number"),
    ({"windows": [{"label": "W", "used_percent": float("nan")}]}, "windows[0].used_percent is not a number"),
    ({"windows": [{"label": "W", "reset_at": "soon"}]}, "windows[0].reset_at is not an ISO-8601 time"),
    ({"windows": [{"label": "W", "reset_at": datetime.now(timezone.utc)}]}, "windows[0].reset_at is not an ISO-8601"),
    ({"windows": [{"label": "W", "window_s": "a week"}]}, "windows[0].window_s is not a number"),
    ({"windows": [{"label": "W", "remaining_percent": 3}]}, "windows[0] has a key other than"),
    ({"windows": [{"label": HUGE}]}, "windows[0].label is longer than 100 characters"),
    ({"windows": [{"label": "W", "detail": ["d"]}]}, "windows[0].detail is a list, not a string"),
    ({"details": "one line"}, "details is a string, not a list"),
    ({"details": [HUGE]}, "details[0] is longer than 500 characters"),
    ({"details": [None]}, "details[0] is null, not a string"),
    ({"details": ["x"] * 51}, "details has more than 50 entries"),
    ({"title": 42}, "title is a number, not a string"),
    ({"plan": {"name": "Pro"}}, "plan is a dict, not a string"),
    ({"source": "s" * 201}, "source is longer than 200 characters"),
    ({"unavailable_reason": HUGE}, "unavailable_reason is longer than 500 characters"),
    ({"balances": [{"label": "B"}]}, "balances[0].amount is not a number"),
    ({"balances": [{"label": "B", "amount": "lots"}]}, "balances[0].amount is not a number"),
    ({"balances": [{"label": "B", "amount": 1, "currency": 840}]}, "balances[0].currency is a number"),
    ({"balances": [{"label": "B", "amount": 1, "currency": "c" * 17}]}, "balances[0].currency is longer than 16"),
    ({"balances": [{"label": "B", "amount": 1, "note": "x"}]}, "balances[0] has a key other than"),
    ({"balances": [SimpleNamespace()]}, "balances[0] is another kind of object, not a dict"),
])
def test_an_unusable_result_is_bad_response_naming_the_field(result, reason):
    with pytest.raises(ProbeFailure) as info:
        to_snapshot("qp", "QP", result)
    assert info.value.code == "bad_response"
    assert info.value.message.startswith("The QP result could not be used: ") and reason in info.value.message
    assert len(info.value.message) < 300


def test_a_rejected_value_is_never_quoted():
    secret = "sk-qp-SECRET-in-a-result"
    for result in ({secret: 1}, {"windows": [{"label": "W", "used_percent": secret}]},
                   {"windows": [{"label": "W", "reset_at": secret}]}, {"title": [secret]},
                   {"windows": [{"label": "W", secret: "x"}]}):
        with pytest.raises(ProbeFailure) as info:
            to_snapshot("qp", "QP", result)
        assert secret not in info.value.message


# -- containment (run_probe around a provider module) ------------------------------------
@pytest.fixture
def plugin(monkeypatch):
    """plugin(probe) -> the name of a loaded in-process plugin whose module has that probe."""
    import workers.providers as registry

    def install(probe, *, error: str | None = None) -> str:
        name = f"qp-inproc-{next(_unique)}"
        spec = ProviderSpec(name, "qp_inproc", "qp-inproc-dist", "0.1")
        module = SimpleNamespace(probe=probe, LABEL="QP In-process")
        monkeypatch.setitem(registry._loaded, name, Provider(spec, module, "QP In-process", error=error))
        return name

    return install


def run(name: str, tmp_path) -> dict:
    client = ProviderHttp()
    try:
        snap = run_probe(name, load_home(tmp_path), client, 2.0)
    finally:
        client.close()
    assert list(snap) == SNAPSHOT_KEYS
    return snap


def test_a_raising_plugin_is_bad_response_with_only_the_type_on_stderr(plugin, tmp_path, capfd):
    def probe(ctx):
        raise RuntimeError("sk-qp-leaky-secret in an exception")

    snap = run(plugin(probe), tmp_path)
    assert snap["error"]["code"] == "bad_response" and "PROBE_DEBUG" in snap["error"]["message"]
    err = capfd.readouterr().err
    assert "RuntimeError" in err and "leaky" not in err and "leaky" not in json.dumps(snap)


def test_a_plugin_calling_sys_exit_does_not_end_the_worker(plugin, tmp_path, capfd):
    def probe(ctx):
        raise SystemExit(3)

    assert run(plugin(probe), tmp_path)["error"]["code"] == "bad_response"


@pytest.mark.parametrize("code, message, expected_code, expected_message", [
    ("unauthorized", "QP says no.", "unauthorized", "QP says no."),
    ("token_expired", "Open QP once.", "token_expired", "Open QP once."),
    ("rate_limited", "Slow.", "rate_limited", "Slow."),
    ("home_not_found", "Nope.", "bad_response", "reported an error code quota-probe does not know"),
    ("made_up", "Nope.", "bad_response", "reported an error code quota-probe does not know"),
    ("provider_error", "", "provider_error", "reported provider_error (without a usable message)"),
    ("provider_error", "m" * 9000, "provider_error", "without a usable message"),
    ("provider_error", 42, "provider_error", "without a usable message"),
])
def test_ctx_fail_keeps_a_provider_code(plugin, tmp_path, code, message, expected_code, expected_message):
    def probe(ctx):
        ctx.fail(code, message, retry_after_s=9)

    snap = run(plugin(probe), tmp_path)
    assert snap["error"]["code"] == expected_code and expected_message in snap["error"]["message"]
    assert snap["error"].get("retry_after_s") == (9 if expected_code == "rate_limited" else None)


def test_garbage_results_are_bad_response(plugin, tmp_path):
    for result in (None, 42, {"windows": [{"label": "W", "used_percent": "abc"}]}, {"details": [HUGE]}):
        snap = run(plugin(lambda ctx, result=result: result), tmp_path)
        assert snap["error"]["code"] == "bad_response", result if not isinstance(result, dict) else list(result)


def test_a_plugin_that_cannot_be_used_answers_plugin_error(plugin, tmp_path):
    snap = run(plugin(lambda ctx: {}, error="importing its module failed"), tmp_path)
    assert snap["error"] == {"code": "plugin_error", "message": "The {} provider plugin (qp-inproc-dist 0.1) cannot "
                             "be used: importing its module failed.".format(snap["provider"])}


def test_an_unknown_provider_is_unknown_provider(tmp_path):
    assert run("qp-nobody-installed-this", tmp_path)["error"]["code"] == "unknown_provider"


def test_has_credential_of_a_loaded_provider(tmp_path):
    """SPEC §17's question for a loaded provider: a plugin that cannot be used counts as
    having one (its plugin_error belongs in the home's list); a built-in asks its places."""
    from workers.providers import has_credential, load

    (tmp_path / ".env").write_text("DEEPSEEK_API_KEY=sk-ds-x\n")
    home = load_home(tmp_path)
    assert has_credential(load("deepseek"), home) is True
    assert has_credential(load("openrouter"), home) is False
    broken = Provider(ProviderSpec("qp-b", "qp_b", "dist", "1"), None, "qp-b", error="importing its module failed")
    assert has_credential(broken, home) is True


# -- discovery rules and loading ---------------------------------------------------------
def test_discovery_rules():
    from workers.plugins import classify

    specs = {(s.name, s.distribution): s.refused for s in classify([
        ("qp-fine", "qp_fine.provider", "dist-a", "1.0"),
        ("anthropic", "qp.impostor", "dist-a", "1.0"),
        ("Upper", "qp.m", "dist-a", "1.0"),
        ("x", "qp.m", "dist-a", "1.0"),                      # too short
        ("a" * 33, "qp.m", "dist-a", "1.0"),                 # too long
        ("9lives", "qp.m", "dist-a", "1.0"),
        ("qp-twice", "qp_a.m", "dist-a", "1.0"),
        ("qp-twice", "qp_b.m", "dist-b", "2.0"),
        ("qp-attr", "qp.m:probe", "dist-a", "1.0"),
        ("qp-path", "qp/m.py", "dist-a", "1.0"),
    ], builtin={"anthropic"})}
    assert specs[("qp-fine", "dist-a")] is None
    assert specs[("anthropic", "dist-a")] == "the name belongs to a built-in provider"
    for name in ("Upper", "x", "a" * 33, "9lives"):
        assert "not a valid provider name" in specs[(name, "dist-a")]
    assert specs[("qp-twice", "dist-a")] == "the name is also claimed by dist-b"
    assert specs[("qp-twice", "dist-b")] == "the name is also claimed by dist-a"
    assert "must name a module" in specs[("qp-attr", "dist-a")] and "must name a module" in specs[("qp-path", "dist-a")]


@pytest.mark.parametrize("source, error", [
    ("raise ImportError('sk-qp-load-SECRET')", "importing its module failed"),
    ("raise SystemExit(1)", "importing its module failed"),
    ("LABEL = 42\ndef probe(ctx): return {}", "LABEL must be a non-empty string"),
    ("LABEL = 'x' * 65\ndef probe(ctx): return {}", "LABEL must be a non-empty string"),
    ("CREDENTIALS = '.env:A'\ndef probe(ctx): return {}", "CREDENTIALS must be a list"),
    ("CREDENTIALS = ['.env:A', 'auth.json:a..b']\ndef probe(ctx): return {}", "CREDENTIALS[1]:"),
    ("probe = 'not callable'", "defines no probe(ctx) function"),
    ("def probe(ctx): return {}", None),
])
def test_loading_a_plugin_module(tmp_path, monkeypatch, capfd, source, error):
    from workers.providers import _import

    module = f"qp_load_{next(_unique)}"
    (tmp_path / f"{module}.py").write_text(source + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = _import(ProviderSpec("qp-load", module, "qp-load-dist", "0.1"))
    assert loaded.error == error if error is None else error in loaded.error
    assert loaded.label == "qp-load" and loaded.declares_credentials is False
    err = capfd.readouterr().err
    if error == "importing its module failed":
        assert loaded.error_type in err and "SECRET" not in err and "SECRET" not in loaded.error_message


def test_built_ins_use_only_ctx_and_formatting_helpers():
    """The contract is the real API: a built-in reaches its home and HTTP only through ctx,
    importing at most workers.result's formatting helpers (and the standard library) -- or
    a sibling provider module whose implementation it shares (kimi-coding-cn reads through
    kimi's normalize_balance, minimax-cn through minimax's read; a plugin package may split
    its own modules the same way)."""
    import ast
    import importlib
    import sys as _sys

    from workers.providers import BUILTINS

    for name, module_name in BUILTINS.items():
        tree = ast.parse(Path(importlib.import_module(module_name).__file__).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        foreign = {m for m in imported if m.split(".")[0] not in _sys.stdlib_module_names and m != "__future__"}
        assert foreign <= {"workers.result", *BUILTINS.values()}, (name, foreign)
