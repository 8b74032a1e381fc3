"""The worked example plugin (examples/quota-probe-example) installed for real and read the
three ways a user reads a provider: ``probe fetch``, the HTTP backend and the panel in a
real Chromium -- each against the emulator serving the plugin's own EMULATOR route (SPEC
§16). Plus the emulator's plugin routes themselves: served from a child so no emulator,
service or CLI process imports a plugin, each plugin under its own prefix, and a route
whose response raises, returns garbage or hangs answers 500 with one log line.

Two throw-away virtualenvs (tests/plugin_venv.py, the mechanism tests/test_plugins.py uses):
one with the example only, one with the example beside tests/plugins/qp-emulator-plugin
(routes that misbehave). Every run plants a credential containing ``SECRET`` and scans
every output for it."""
from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from plugin_venv import make_plugin_venv
from support import demo_root, free_port

pytestmark = pytest.mark.timeout(90)
REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "quota-probe-example"
EMULATOR_PLUGINS = Path(__file__).parent / "plugins" / "qp-emulator-plugin"
SCRIPTS = Path(__file__).parent / "plugins"
NAME = "example-cloud"
SECRET_TOKEN = "ex-SECRET-7f3a9c"
PLUGIN_PACKAGES = ("quota_probe_example", "qp_emulator_plugin")


@dataclass(frozen=True)
class Venv:
    python: Path
    site: Path


@pytest.fixture(scope="session")
def example_venv(tmp_path_factory) -> Venv:
    return Venv(*make_plugin_venv(tmp_path_factory.mktemp("example-venv"), [EXAMPLE]))


@pytest.fixture(scope="session")
def emulator_plugins_venv(tmp_path_factory) -> Venv:
    return Venv(*make_plugin_venv(tmp_path_factory.mktemp("emulator-plugins-venv"), [EXAMPLE, EMULATOR_PLUGINS]))


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("PROBE_TOKEN", "PROBE_DEBUG") and not k.endswith("_BASE_URL")}


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert "SECRET" not in text, text[:2000]


@dataclass
class RunningEmulator:
    proc: subprocess.Popen
    base_url: str
    env: dict[str, str]


@contextlib.contextmanager
def probe_emulator(venv: Venv):
    """``probe emulator`` in ``venv`` (through run_checked.py, which reports the plugin
    modules the CLI process imported when it exits): its base URL and what it says to export."""
    proc = subprocess.Popen([str(venv.python), str(SCRIPTS / "run_checked.py"), "emulator"], env=base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("Emulator listening on "), first + proc.stderr.read()
        env = {}
        while (line := proc.stdout.readline().strip()).startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
        assert line == "Serving until Ctrl-C."
        yield RunningEmulator(proc, first.split()[-1], env)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(20)
        proc.stdout.close()
        proc.stderr.close()


@pytest.fixture(scope="module")
def example_emulator(example_venv):
    with probe_emulator(example_venv) as running:
        yield running


@pytest.fixture
def home(tmp_path) -> Path:
    """A home whose only credential is the example's, planted in its .env."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".env").write_text(f"EXAMPLE_CLOUD_API_KEY={SECRET_TOKEN}\n")
    (home / ".env").chmod(0o600)
    return home


def run_cli(venv: Venv, *args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess:
    """The ``probe`` CLI in ``venv``; asserts the CLI process imported no plugin module and
    printed no secret."""
    result = subprocess.run([str(venv.python), str(SCRIPTS / "run_checked.py"), *args], capture_output=True,
                            text=True, env={**base_env(), **env}, timeout=timeout_s)
    assert "PLUGIN MODULES IN THE CLI PROCESS: []" in result.stderr, result.stderr
    assert_no_secret(result.stdout, result.stderr)
    return result


def expected_snapshot(emulator: RunningEmulator, token: str) -> dict:
    """What the snapshot must say, worked out from the emulator's own answer for ``token``
    (fetched here with a plain GET) by the rules of SPEC §16: used % rounded to 2 places,
    times as ...Z, window_s as a number, the credit as a USD balance."""
    body = httpx.get(emulator.env["PROBE_EXAMPLE_CLOUD_BASE_URL"] + "/v1/quota",
                     headers={"Authorization": f"Bearer {token}"}, timeout=20).json()
    daily, monthly = body["quotas"]
    assert daily["resets_at"] == 4102444800 and monthly["resets_at"] == "2100-01-01T00:00:00Z"
    windows = [("Today", round(daily["used"] / daily["limit"] * 100, 2), "2100-01-01T00:00:00Z", 86400.0,
                f"{daily['used']:,} of 1,000 requests used"),
               ("This month", round(float(monthly["used"]) / 20000 * 100, 2), "2100-01-01T00:00:00Z", 2592000.0,
                f"{int(monthly['used']):,} of 20,000 requests used")]
    assert windows[0][1] != windows[1][1]   # a token whose two windows differ, so a swap would show
    return {"plan": body["plan"], "title": "Example Cloud quota", "source": "quota_api", "windows": windows,
            "balances": [{"label": "Credit", "amount": 12.5, "currency": "USD"}]}


def shown(snapshot: dict) -> dict:
    return {"plan": snapshot["plan"], "title": snapshot["title"], "source": snapshot["source"],
            "windows": [(w["label"], w["used_percent"], w["reset_at"], w["window_s"], w["detail"])
                        for w in snapshot["windows"]],
            "balances": snapshot["balances"]}


# -- the example package itself ----------------------------------------------------------
def test_the_example_imports_nothing_from_quota_probe():
    """Everything the example needs comes through ctx (issue #20's target): its modules
    import the standard library and their own package, nothing else -- and it declares no
    dependency."""
    package = EXAMPLE / "quota_probe_example"
    modules = sorted(package.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "provider.py"}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = ["quota_probe_example" if node.level else (node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root == "quota_probe_example", \
                    f"{module.name} imports {root}"
        assert "__import__" not in module.read_text() and "importlib" not in module.read_text()
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project.get("dependencies", []) == []
    assert project["entry-points"]["quota_probe.providers"] == {NAME: "quota_probe_example.provider"}


# -- the emulator's plugin routes --------------------------------------------------------
def test_emulator_serves_each_plugin_route_from_a_child_and_contains_broken_ones(emulator_plugins_venv):
    result = subprocess.run([str(emulator_plugins_venv.python), str(SCRIPTS / "drive_emulator.py")],
                            capture_output=True, text=True, env=base_env(), timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_secret(result.stdout, result.stderr)
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["plugin_modules_here"] == []            # the emulator's process imported no plugin
    # every plugin with a valid EMULATOR, each under its own prefix, its base URL pointing there
    assert out["routes"] == {NAME: ["/v1/quota", "EXAMPLE_CLOUD_API_KEY"],
                             "qp-emu-garbage": ["/usage", "QP_EMU_GARBAGE_KEY"],
                             "qp-emu-hangs": ["/usage", "QP_EMU_HANGS_KEY"],
                             "qp-emu-raises": ["/usage", "QP_EMU_RAISES_KEY"],
                             "qp-emu-shadow": ["/user/balance", "QP_EMU_SHADOW_KEY"]}
    base = out["env"]["PROBE_ANTHROPIC_BASE_URL"]
    assert out["env"]["PROBE_EXAMPLE_CLOUD_BASE_URL"] == base + "/plugins/example-cloud"
    assert out["env"]["PROBE_QP_EMU_SHADOW_BASE_URL"] == base + "/plugins/qp-emu-shadow"
    assert "PROBE_QP_EMU_NONE_BASE_URL" not in out["env"] and "PROBE_QP_EMU_BADSPEC_BASE_URL" not in out["env"]

    status, kind, body = out["example"]
    assert status == 200 and kind == "application/json" and json.loads(body)["plan"] == "team"
    assert out["example_401"][0] == 401                 # the plugin's own status passes through
    # a plugin path equal to a built-in route shadows nothing: both answer
    assert out["shadow"][0] == 200 and json.loads(out["shadow"][2]) == {"used": 9, "who": "shadow"}
    assert out["deepseek_ok"] is True
    assert out["shadow_raw"] == [200, "text/plain", "<html>not json</html>"]   # bytes go out as they are
    assert out["unknown_path"][0] == 404
    # raises / garbage / hangs: a 500 for that request, the child goes on (or is replaced)
    for case in ("raises", "raises_again", "garbage_shape", "garbage_status", "garbage_body", "hangs"):
        assert out[case][0] == 500, case
        assert json.loads(out[case][2])["error"]["type"] == "api_error"
    assert out["garbage_fine"][0] == 200
    assert out["child_alive_after_failures"] is True
    assert out["after_hang"][0] == 200 and out["child_replaced"] is True
    assert out["child_gone_after_stop"] is True

    lines = [line for line in result.stderr.splitlines() if line.startswith("quota-probe emulator:")]
    failed = [line for line in lines if "EMULATOR response failed" in line]
    # one line per plugin and kind of failure (the second raise is not logged again), naming
    # the exception's type and never its text (which quotes the token)
    assert failed == [
        "quota-probe emulator: the 'qp-emu-raises' plugin's EMULATOR response failed (ValueError); answered 500.",
        "quota-probe emulator: the 'qp-emu-garbage' plugin's EMULATOR response failed "
        "(an answer that is not (status, body)); answered 500.",
        "quota-probe emulator: the 'qp-emu-garbage' plugin's EMULATOR response failed "
        "(a status that is not an HTTP status code); answered 500.",
        "quota-probe emulator: the 'qp-emu-garbage' plugin's EMULATOR response failed "
        "(a body that is not JSON-encodable); answered 500.",
        "quota-probe emulator: the 'qp-emu-hangs' plugin's EMULATOR response failed "
        "(no answer in time, or the plugin child died); answered 500."]
    assert [line for line in lines if "not serving" in line] == [
        "quota-probe emulator: not serving the 'qp-emu-badspec' plugin's EMULATOR: EMULATOR['path'] must be a "
        "URL path starting with '/' (at most 200 characters, no query)."]
    assert "Traceback" not in result.stderr


def test_probe_emulator_cli_prints_each_plugin_base_url_and_stops_on_ctrl_c(emulator_plugins_venv):
    with probe_emulator(emulator_plugins_venv) as running:
        assert running.env["PROBE_EXAMPLE_CLOUD_BASE_URL"] == running.base_url + "/plugins/example-cloud"
        assert sorted(k for k in running.env if k.startswith("PROBE_QP_EMU_")) == [
            "PROBE_QP_EMU_GARBAGE_BASE_URL", "PROBE_QP_EMU_HANGS_BASE_URL", "PROBE_QP_EMU_RAISES_BASE_URL",
            "PROBE_QP_EMU_SHADOW_BASE_URL"]
        answer = httpx.get(running.env["PROBE_EXAMPLE_CLOUD_BASE_URL"] + "/v1/quota",
                           headers={"Authorization": f"Bearer {SECRET_TOKEN}"}, timeout=20)
        assert answer.status_code == 200 and len(answer.json()["quotas"]) == 2
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(20) == 0
        stderr = running.proc.stderr.read()
    assert "PLUGIN MODULES IN THE CLI PROCESS: []" in stderr     # `probe emulator` imported none
    assert "not serving the 'qp-emu-badspec'" in stderr
    assert_no_secret(stderr)


# -- probe fetch -------------------------------------------------------------------------
def test_probe_fetch_reads_the_example_exactly(example_venv, example_emulator, home):
    expected = expected_snapshot(example_emulator, SECRET_TOKEN)
    result = run_cli(example_venv, "fetch", NAME, "--home", str(home), "--json", env=example_emulator.env)
    assert result.returncode == 0, result.stderr
    snap = json.loads(result.stdout)
    assert snap["provider"] == NAME and snap["available"] is True and snap["error"] is None
    assert shown(snap) == expected
    assert [w["remaining_percent"] for w in snap["windows"]] == [round(100 - w[1], 2) for w in expected["windows"]]

    text = run_cli(example_venv, "fetch", NAME, "--home", str(home), env=example_emulator.env)
    assert text.returncode == 0
    assert text.stdout.startswith("example-cloud — Example Cloud quota (team plan)")
    assert f"{100 - expected['windows'][0][1]:.1f}% left" in text.stdout

    # the home-wide list (loosely: which providers it holds is another part's rule)
    whole = run_cli(example_venv, "fetch", "--home", str(home), "--json", env=example_emulator.env)
    listed = {s["provider"]: s for s in json.loads(whole.stdout)}
    assert shown(listed[NAME]) == expected


def test_probe_fetch_shows_the_examples_failures(example_venv, example_emulator, tmp_path):
    """How failures show for a plugin (the README's "Add a provider"): the emulator's 401 is
    unauthorized, a provider that never answers is a timeout -- no traceback, no token."""
    home = tmp_path / "h"
    home.mkdir()
    (home / ".env").write_text("EXAMPLE_CLOUD_API_KEY=ex-401-SECRET\n")
    refused = json.loads(run_cli(example_venv, "fetch", NAME, "--home", str(home), "--json",
                                 env=example_emulator.env).stdout)
    assert refused["error"]["code"] == "unauthorized" and refused["available"] is False
    (home / ".env").write_text("EXAMPLE_CLOUD_API_KEY=ex-hang-SECRET\n")
    hung = run_cli(example_venv, "fetch", NAME, "--home", str(home), "--json", "--timeout", "1",
                   env=example_emulator.env)
    assert hung.returncode == 1 and json.loads(hung.stdout)["error"]["code"] == "timeout"


# -- the HTTP backend --------------------------------------------------------------------
@contextlib.contextmanager
def probe_serve(venv: Venv, *args: str, env: dict[str, str] | None = None):
    port = free_port()
    proc = subprocess.Popen([str(venv.python), "-m", "probe.cli", "serve", "--port", str(port), "--no-history",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**base_env(), "PROBE_TOKEN": "example-test-token", **(env or {})})
    try:
        line = proc.stdout.readline()
        assert "quota-probe backend on" in line, proc.stderr.read()
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)
        for stream in (proc.stdout, proc.stderr):
            stream.close()


def test_http_backend_serves_the_example(example_venv, example_emulator, home):
    expected = expected_snapshot(example_emulator, SECRET_TOKEN)
    with probe_serve(example_venv, "--home", f"main={home}", "--refresh-s", "0", env=example_emulator.env) as (
            proc, url):
        one = httpx.get(f"{url}/api/quota", params={"home": "main", "provider": NAME}, timeout=30)
        assert one.status_code == 200
        assert one.json()["home"] == "main" and shown(one.json()) == expected
        listing = httpx.get(f"{url}/api/quota", params={"home": "main"}, timeout=30)
        assert listing.status_code == 200
        assert shown({s["provider"]: s for s in listing.json()}[NAME]) == expected
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        assert NAME in metrics
        assert_no_secret(one.text, listing.text, metrics, httpx.get(f"{url}/api/pool", timeout=30).text)
        proc.terminate()
        proc.wait(20)
        assert_no_secret(proc.stdout.read(), proc.stderr.read())


# -- the panel, in a real browser --------------------------------------------------------
def test_panel_shows_the_example_card_in_the_demo(chromium_path, example_venv, home, tmp_path):
    """``probe serve --demo`` with the example installed: the demo's emulator serves the
    plugin's route (from a child: the service imports no plugin), its main home holds a
    demo credential for it, and the panel draws its card like a built-in's. A home with the
    planted credential (``--home``) shows its card without the secret reaching the page."""
    from playwright.sync_api import expect, sync_playwright

    from test_panel_browser import CHROMIUM_ARGS

    with probe_serve(example_venv, "--demo", "--home", f"planted={home}") as (proc, url):
        root = demo_root(proc)
        assert "EXAMPLE_CLOUD_API_KEY=demo-example-cloud-main\n" in (root / "main" / ".env").read_text()
        main = {s["provider"]: s for s in httpx.get(f"{url}/api/quota", params={"home": "main"}, timeout=30).json()}
        assert list(main) == ["anthropic", "openai-codex", "openrouter", "deepseek", "zai", "kimi-coding", "minimax",
                              NAME]
        card = main[NAME]
        assert card["available"] is True and [w["label"] for w in card["windows"]] == ["Today", "This month"]
        planted = httpx.get(f"{url}/api/quota", params={"home": "planted", "provider": NAME}, timeout=30).json()
        assert planted["available"] is True

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(f"{url}/?home=main")
                expect(page.locator(".card")).to_have_count(len(main))
                example = page.locator(f'.card[data-provider="{NAME}"]')
                # the plugin's LABEL, read by the server through the catalog child (which
                # imports the plugin; the server never does); it spells the name, so no name beside it
                expect(example.locator(".provider")).to_have_text("Example Cloud")
                expect(example.locator(".provider-name")).to_be_hidden()
                expect(example.locator(".title")).to_have_text("Example Cloud quota")
                expect(example.locator(".plan")).to_have_text("team plan")
                rows = example.locator(".window")
                expect(rows).to_have_count(2)
                for index, window in enumerate(card["windows"]):
                    row = rows.nth(index)
                    assert row.get_attribute("data-label") == window["label"]
                    expect(row.locator(".remaining")).to_have_text(f"{window['remaining_percent']:.1f}% left")
                    expect(row.locator(".window-detail")).to_have_text(window["detail"])
                    expect(row.locator(".reset")).to_contain_text("resets")
                expect(example.locator(".badge.error")).to_have_count(0)

                page.select_option("#home", "planted")
                planted_card = page.locator(f'.card[data-provider="{NAME}"]')
                expect(planted_card.locator(".window")).to_have_count(2)
                expect(planted_card.locator(".remaining").first).to_have_text(
                    f"{planted['windows'][0]['remaining_percent']:.1f}% left")
                assert_no_secret(page.content())
                page.screenshot(path=str(tmp_path / "panel-example.png"), full_page=True)
            finally:
                browser.close()
        proc.terminate()
        proc.wait(20)
        assert_no_secret(proc.stdout.read(), proc.stderr.read())
