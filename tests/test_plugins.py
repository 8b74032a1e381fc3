"""Provider plugins installed for real (SPEC §16): tests/plugins/qp-test-plugin is installed
with pip into a throw-away virtualenv layered over the test environment, and driven
through the `probe` CLI and a ProbeService running in that virtualenv's Python, against
the real emulator.

What it guards: discovery (refusals with reasons, one WARNING each, usage errors for
refused names), that no service or CLI process ever imports a plugin module (each run
reports its own ``sys.modules``, and every plugin module logs the pid that imported it),
that the template imports every plugin once before forking while an exec-started worker
imports on first use, containment (import failure -> plugin_error, raise / garbage ->
bad_response, hang -> timeout with the worker replaced and the template alive), result
normalization, `probe providers` / `probe doctor`, and that no planted secret reaches any
output."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugin_venv import make_plugin_venv
from probe.tools.demo import write_home
from workers.providers import BUILTINS

pytestmark = pytest.mark.timeout(60)
PLUGIN_SOURCE = Path(__file__).parent / "plugins" / "qp-test-plugin"
SCRIPTS = Path(__file__).parent / "plugins"
DIST = "qp-test-plugin"
SECRETS = {"good": "sk-qp-good-SECRET-1", "raises": "sk-qp-raises-SECRET-2", "anthropic": "sk-ant-oat01-qp-SECRET-3"}
GARBAGE_MODES = ("list", "abc", "huge", "unknown-key", "clamped")
PLUGIN_NAMES = ("qp-badplaces", "qp-broken", "qp-garbage", "qp-good", "qp-hangs", "qp-raises")


@dataclass(frozen=True)
class PluginVenv:
    python: Path
    site: Path

    @property
    def import_log(self) -> Path:
        return self.site / "qp_test_plugin" / "imports.log"

    def imports(self) -> list[tuple[int, str]]:
        """(pid, module) per plugin-module import since the log was last cleared."""
        if not self.import_log.exists():
            return []
        return [(int(pid), module) for pid, module in
                (line.split() for line in self.import_log.read_text().splitlines())]

    def clear_imports(self) -> None:
        self.import_log.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def plugin_venv(tmp_path_factory) -> PluginVenv:
    """A virtualenv whose site-packages holds the test plugin (installed by pip, offline:
    its build backend is in-tree) and a .pth that adds the test environment's
    site-packages, so quota-probe and its dependencies import from there unchanged."""
    return PluginVenv(*make_plugin_venv(tmp_path_factory.mktemp("plugin-venv"), [PLUGIN_SOURCE]))


@pytest.fixture
def homes(tmp_path, emulator):
    """The homes every run uses; the good plugin's and anthropic's tokens are scripted/served by the emulator."""
    main = write_home(tmp_path, "main", anthropic=SECRETS["anthropic"])
    with (main / ".env").open("a") as env:
        env.write(f"QP_GOOD_KEY={SECRETS['good']}\nQP_RAISES_KEY={SECRETS['raises']}\nQP_HANG_KEY=hang\n")
    emulator.script(SECRETS["good"], {"plan": "Pro", "used": "25.456", "reset_ms": 1785816000000, "weekly": 1e9,
                                      "weekly_reset": "2026-08-09T21:30:00.716839300+05:30", "points": "14000"})
    whole = write_home(tmp_path, "whole", anthropic=SECRETS["anthropic"])
    with (whole / ".env").open("a") as env:
        env.write(f"QP_GOOD_KEY={SECRETS['good']}\nQP_RAISES_KEY={SECRETS['raises']}\n")
    found = {"main": str(main), "whole": str(whole), "empty": str(write_home(tmp_path, "empty"))}
    for mode in GARBAGE_MODES:
        home = write_home(tmp_path, f"garbage-{mode}")
        (home / ".env").write_text(f"QP_GARBAGE_MODE={mode}\n")
        found[f"garbage-{mode}"] = str(home)
    return found


def run(venv: PluginVenv, *args: str, env: dict[str, str] | None = None, timeout_s: float = 50):
    base = {k: v for k, v in os.environ.items() if k not in ("PROBE_TOKEN", "PROBE_DEBUG")}
    return subprocess.run([str(venv.python), *args], capture_output=True, text=True, env={**base, **(env or {})},
                          timeout=timeout_s)


def cli(venv: PluginVenv, *args: str, emulator=None, env: dict[str, str] | None = None):
    """The `probe` CLI in the plugin virtualenv; asserts that process imported no plugin."""
    extra = dict(env or {})
    if emulator is not None:
        extra.update(emulator.env())
        extra["PROBE_QP_GOOD_BASE_URL"] = emulator.base_url + "/qp-base"
    result = run(venv, str(SCRIPTS / "run_checked.py"), *args, env=extra)
    assert "PLUGIN MODULES IN THE CLI PROCESS: []" in result.stderr, result.stderr
    assert_no_secret(result.stdout, result.stderr)
    return result


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert "SECRET" not in text, text[:2000]


def refusal_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "refused the provider plugin" in line]


# -- discovery and the CLI ---------------------------------------------------------------
def test_probe_providers_lists_every_provider_from_a_child(plugin_venv):
    plugin_venv.clear_imports()
    result = cli(plugin_venv, "providers", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == [*BUILTINS, *PLUGIN_NAMES, "Bad_Name", "anthropic", "qp-object"]
    by_origin = {(row["name"], row["origin"]): row for row in rows}
    good = by_origin[("qp-good", DIST)]
    assert good == {"name": "qp-good", "label": "QP Good", "origin": DIST, "version": "0.1.0",
                    "credentials": [".env:QP_GOOD_KEY", 'auth.json:credential_pool."qp-good"[].access_token'],
                    "error": None}
    assert by_origin[("qp-hangs", DIST)]["label"] == "qp-hangs"            # no LABEL: the name
    assert by_origin[("anthropic", "built-in")]["error"] is None
    assert by_origin[("anthropic", DIST)]["error"] == "the name belongs to a built-in provider"
    assert "not a valid provider name" in by_origin[("Bad_Name", DIST)]["error"]
    assert "must name a module" in by_origin[("qp-object", DIST)]["error"]
    assert by_origin[("qp-broken", DIST)]["error"] == "importing its module failed (ImportError)"
    assert "CREDENTIALS[1]" in by_origin[("qp-badplaces", DIST)]["error"]
    assert "only '[]'" in by_origin[("qp-badplaces", DIST)]["error"]
    # the child imported each usable plugin once; the refused impostor never
    assert sorted(module for _, module in plugin_venv.imports()) == sorted(
        f"qp_test_plugin.{m}" for m in ("badplaces", "broken", "garbage", "good", "hangs", "raises"))

    text = cli(plugin_venv, "providers")
    assert text.returncode == 0
    assert "QP Good" in text.stdout and "qp-test-plugin 0.1.0" in text.stdout
    assert "not usable: the name belongs to a built-in provider" in text.stdout


def test_probe_fetch_of_a_plugin_and_the_refusal_warnings(plugin_venv, homes, emulator):
    plugin_venv.clear_imports()
    result = cli(plugin_venv, "fetch", "qp-good", "--home", homes["main"], "--json", emulator=emulator)
    assert result.returncode == 0, result.stderr
    snap = json.loads(result.stdout)
    assert snap["available"] is True and snap["plan"] == "Pro" and snap["source"] == "qp_api"
    assert [(w["label"], w["used_percent"], w["reset_at"], w["window_s"]) for w in snap["windows"]] == [
        ("Session", 25.46, "2026-08-04T04:00:00Z", 18000.0), ("Weekly", 100.0, "2026-08-09T16:00:00Z", 604800.0)]
    assert snap["balances"] == [{"label": "Points", "amount": 14000.0, "currency": "points"}]
    # one WARNING line per refused plugin, each naming the distribution
    lines = refusal_lines(result.stderr)
    assert len(lines) == 3 and all(DIST in line for line in lines)
    assert sum("'anthropic'" in line for line in lines) == 1 and sum("'Bad_Name'" in line for line in lines) == 1
    # the GET fallback after the POST the emulator refuses (405), with the plugin's own header
    sent = [r for r in emulator.requests() if r.token == SECRETS["good"]]
    assert [r.method for r in sent[-2:]] == ["POST", "GET"] and sent[-1].headers["x-qp"] == "fallback"
    assert sent[-1].path == "/qp-base/qp/usage"

    builtin = cli(plugin_venv, "fetch", "anthropic", "--home", homes["main"], "--json", emulator=emulator)
    assert builtin.returncode == 0 and json.loads(builtin.stdout)["source"] == "oauth_usage_api"
    assert "qp_test_plugin.impostor" not in {module for _, module in plugin_venv.imports()}


@pytest.mark.parametrize("name, fragment", [("Bad_Name", "was refused: its name is not a valid provider name"),
                                            ("qp-object", "was refused: its entry point must name a module"),
                                            ("qp-nobody", "Unknown provider 'qp-nobody'")])
def test_probe_fetch_of_a_refused_or_unknown_name_is_a_usage_error(plugin_venv, homes, name, fragment):
    result = cli(plugin_venv, "fetch", name, "--home", homes["main"], "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "unknown_provider" and fragment in error["message"]


def test_probe_fetch_of_a_whole_home_includes_plugins(plugin_venv, homes, emulator):
    result = cli(plugin_venv, "fetch", "--home", homes["whole"], "--json", emulator=emulator)
    snaps = {s["provider"]: s for s in json.loads(result.stdout)}
    assert list(snaps) == ["anthropic", "qp-badplaces", "qp-broken", "qp-good", "qp-raises"]   # SPEC §17 order
    assert snaps["qp-good"]["available"] is True and snaps["anthropic"]["available"] is True
    assert snaps["qp-broken"]["error"]["code"] == "plugin_error"
    assert snaps["qp-raises"]["error"]["code"] == "bad_response"
    # qp-garbage and qp-hangs answered no_credentials: left out, as built-ins are
    assert result.returncode == 1


def test_probe_doctor_reads_plugin_credential_places(plugin_venv, homes):
    result = cli(plugin_venv, "doctor", "--home", homes["main"], "--json")
    report = json.loads(result.stdout)["providers"]
    assert report["qp-good"]["looked_in"] == [".env: QP_GOOD_KEY", 'auth.json: credential_pool."qp-good"[].access_token']
    assert report["qp-good"]["found"] == {"where": ".env QP_GOOD_KEY", "kind": "API key"}
    assert report["qp-garbage"]["found"] is None
    assert "importing its module failed" in report["qp-broken"]["unusable"]
    assert "only '[]'" in report["qp-badplaces"]["unusable"]
    assert report["anthropic"]["found"]["kind"] == "OAuth token"
    assert result.returncode == 1   # the unusable plugins are something to fix


# -- a ProbeService with plugins installed ------------------------------------------------
@pytest.mark.parametrize("method", ["fork", "exec"])
def test_a_service_probes_plugins_and_contains_their_failures(plugin_venv, homes, emulator, method):
    from probe.pool.spawner import default_method

    if method == "fork" and default_method({}) != "fork":
        pytest.skip("no template process on this platform")
    plugin_venv.clear_imports()
    config = {"homes": homes, "garbage_modes": GARBAGE_MODES,
              "provider_urls": {"qp-good": emulator.base_url + "/qp-base", **emulator.provider_urls()}}
    started = time.monotonic()
    result = run(plugin_venv, str(SCRIPTS / "drive_service.py"), json.dumps(config), env={"PROBE_SPAWN": method})
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_secret(result.stdout, result.stderr)
    out = json.loads(result.stdout)
    assert out["spawn_method"] == method
    assert out["plugin_modules_here"] == []                      # the service never imported one
    assert len(refusal_lines(result.stderr)) == 3

    assert out["good"]["available"] is True and out["good"]["windows"][0]["used_percent"] == 25.46
    # a plugin that hangs: the parent's deadline answers timeout and replaces the worker
    assert out["hang"]["error"]["code"] == "timeout" and out["hang"]["probe"]["latency_ms"] < 5000
    assert out["good_after_hang"]["available"] is True
    assert out["good_after_hang"]["probe"]["worker_pid"] != out["good"]["probe"]["worker_pid"]
    assert out["template_pid_after"] == out["template_pid"]     # the template survived (None with exec)
    assert out["anthropic"]["available"] is True                 # a built-in beside the plugins
    # containment, never an exception text
    broken = out["qp-broken"]["error"]
    assert broken["code"] == "plugin_error" and "importing its module failed" in broken["message"]
    assert DIST in broken["message"] and "ImportError" not in broken["message"]
    assert out["qp-badplaces"]["error"]["code"] == "plugin_error"
    assert out["qp-raises"]["error"]["code"] == "bad_response" and "PROBE_DEBUG" in out["qp-raises"]["error"]["message"]
    assert out["good_no_credentials"]["error"]["code"] == "no_credentials"
    for mode in ("list", "abc", "huge", "unknown-key"):
        assert out[f"garbage:{mode}"]["error"]["code"] == "bad_response", mode
    assert "used_percent is not a number" in out["garbage:abc"]["error"]["message"]
    assert "longer than 500 characters" in out["garbage:huge"]["error"]["message"]
    clamped = out["garbage:clamped"]
    assert [(w["used_percent"], w["reset_at"]) for w in clamped["windows"]] == [
        (100.0, "2026-11-23T05:00:00Z"), (0.0, "2026-11-23T05:00:00Z")]
    assert "was refused" in out["name:Bad_Name"] and "was refused" in out["name:qp-object"]
    assert "Unknown provider" in out["name:qp-nobody"]

    imports = plugin_venv.imports()
    assert out["pid"] not in {pid for pid, _ in imports}
    modules = sorted(module for _, module in imports)
    if method == "fork":
        # the template imported each usable plugin exactly once, before forking any worker
        assert {pid for pid, _ in imports} == {out["template_pid"]}
        assert modules == sorted(f"qp_test_plugin.{m}" for m in ("badplaces", "broken", "garbage", "good", "hangs",
                                                                 "raises"))
    else:
        # exec-started workers import a plugin on first use: the first worker probed two
        first = out["good"]["probe"]["worker_pid"]
        assert sorted(module for pid, module in imports if pid == first) == ["qp_test_plugin.good",
                                                                              "qp_test_plugin.hangs"]
        assert "qp_test_plugin.impostor" not in modules
    assert time.monotonic() - started < 30
