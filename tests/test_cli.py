"""The ``probe`` command as a user runs it: a real process, real exit codes."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from probe.tools.emulator import ANTHROPIC_PATH
from support import SNAPSHOT_KEYS, run_cli

pytestmark = pytest.mark.timeout(60)


def test_fetch_json_prints_the_spec_snapshot(emulator, make_home):
    token = "sk-ant-oat01-cli-json"
    home = make_home("cli", anthropic=token)
    result = run_cli("fetch", "anthropic", "--home", str(home), "--json", env=emulator.env())
    assert result.returncode == 0, result.stderr
    snap = json.loads(result.stdout)
    assert list(snap) == SNAPSHOT_KEYS
    assert snap["available"] and snap["home"] == str(home.resolve())
    request = [r for r in emulator.requests() if r.token == token][-1]
    expected = emulator.quota_body(ANTHROPIC_PATH, token, request.now)["five_hour"]["utilization"]
    assert snap["windows"][0]["used_percent"] == expected
    assert token not in result.stdout + result.stderr


def test_fetch_table_for_people(emulator, make_home):
    home = make_home("cli-table", openrouter="sk-or-v1-cli-table", anthropic="sk-ant-oat01-cli-table")
    result = run_cli("fetch", "anthropic", "--home", str(home), env=emulator.env())
    assert result.returncode == 0
    assert "Current session" in result.stdout and "% left" in result.stdout and "(in " in result.stdout
    assert "sk-ant-oat01-cli-table" not in result.stdout + result.stderr


def test_unknown_provider_is_a_usage_error(tmp_path):
    result = run_cli("fetch", "gemini", "--home", str(tmp_path), "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "unknown_provider"
    plain = run_cli("fetch", "gemini", "--home", str(tmp_path))
    assert plain.returncode == 2 and "Unknown provider" in plain.stderr


def test_bad_option_is_a_usage_error(tmp_path):
    assert run_cli("fetch", "anthropic", "--timeout", "-1").returncode == 2
    assert run_cli("fetch", "anthropic", "--bogus").returncode == 2


def test_missing_home_prints_a_snapshot_and_exits_1(tmp_path):
    result = run_cli("fetch", "deepseek", "--home", str(tmp_path / "missing"), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "home_not_found"


def test_provider_error_exits_1(emulator, make_home):
    home = make_home("cli-401", deepseek="sk-cli-401-x")
    result = run_cli("fetch", "deepseek", "--home", str(home), "--json", env=emulator.env())
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "unauthorized"
    assert "sk-cli-401-x" not in result.stdout + result.stderr


def test_demo_runs_every_provider_on_the_embedded_emulator():
    """Each built-in provider the demo homes hold a credential for, once, in table order
    (kimi-coding-cn and minimax-cn have none there: the demo stays readable)."""
    result = run_cli("demo", "--json")
    assert result.returncode == 0, result.stderr
    snaps = json.loads(result.stdout)
    assert [s["provider"] for s in snaps] == ["anthropic", "openai-codex", "openrouter", "deepseek", "zai",
                                               "kimi-coding", "minimax", "copilot", "nous"]
    assert all(s["available"] for s in snaps)
    assert [Path(s["home"]).name for s in snaps] == ["main"] * 7 + ["team"] * 2
    assert result.stderr == ""


def test_fetch_prints_the_pace_line_under_each_window(emulator, make_home):
    """SPEC §13: ``probe fetch`` shows the pace; ``--json`` carries it."""
    from datetime import datetime, timedelta, timezone

    token = "sk-ant-oat01-cli-pace"
    now = datetime.now(timezone.utc)
    emulator.script(token, {"five_hour": {"utilization": 42.0, "resets_at": (now + timedelta(hours=4)).isoformat()},
                            "seven_day": {"utilization": 10.0, "resets_at": (now + timedelta(days=3.5)).isoformat()}})
    home = make_home("cli-pace", anthropic=token)
    text = run_cli("fetch", "anthropic", "--home", str(home), env=emulator.env()).stdout
    lines = text.splitlines()
    session = next(i for i, line in enumerate(lines) if "Current session" in line)
    assert "22% in deficit · Runs out in 1h" in lines[session + 1]
    week = next(i for i, line in enumerate(lines) if "Current week" in line)
    assert "40% in reserve · Lasts until reset" in lines[week + 1]
    snap = json.loads(run_cli("fetch", "anthropic", "--home", str(home), "--json", env=emulator.env()).stdout)
    assert snap["windows"][0]["pace"]["status"] == "deficit" and snap["windows"][0]["window_s"] == 18000


def test_fetch_without_a_provider_probes_every_provider_with_a_credential(emulator, make_home, tmp_path):
    home = make_home("cli-all", anthropic="sk-ant-oat01-cli-all", deepseek="sk-cli-all")
    result = run_cli("fetch", "--home", str(home), "--json", env=emulator.env())
    assert result.returncode == 0, result.stderr
    snaps = json.loads(result.stdout)
    assert [s["provider"] for s in snaps] == ["anthropic", "deepseek"]    # no codex/openrouter credential
    text = run_cli("fetch", "--home", str(home), env=emulator.env())
    assert text.returncode == 0 and "anthropic" in text.stdout and "deepseek" in text.stdout
    one_bad = make_home("cli-all-bad", anthropic="sk-ant-oat01-cli-all", deepseek="sk-cli-all-401-")
    assert run_cli("fetch", "--home", str(one_bad), env=emulator.env()).returncode == 1
    empty = make_home("cli-all-empty")
    nothing = run_cli("fetch", "--home", str(empty), env=emulator.env())
    assert nothing.returncode == 1 and "probe doctor" in nothing.stdout
    assert json.loads(run_cli("fetch", "--home", str(empty), "--json").stdout) == []
    missing = run_cli("fetch", "--home", str(tmp_path / "nope"), "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout)[0]["error"]["code"] == "home_not_found"


def _codex_body(primary: int, secondary: int, now: datetime) -> dict:
    return {"plan_type": "plus", "rate_limit": {
        "primary_window": {"used_percent": primary, "limit_window_seconds": 18000,
                           "reset_at": int((now + timedelta(hours=2)).timestamp())},
        "secondary_window": {"used_percent": secondary, "limit_window_seconds": 604800,
                             "reset_at": int((now + timedelta(days=3)).timestamp())}}}


def test_fetch_prints_every_account_of_a_pool_and_marks_the_next_one(emulator, tmp_path):
    """SPEC §18: under the provider, each account (label, status, windows, retry-after),
    the next one marked with its reason; --json carries ``accounts`` and ``pool``."""
    from test_accounts import codex_home, jwt, row

    now = datetime.now(timezone.utc)
    busy, roomy, cooling = jwt("ws-busy", "busy", marker="-busy"), jwt("ws-roomy", "roomy", marker="-r"), \
        jwt("ws-cool", "cool", marker="-c")
    emulator.script(busy, _codex_body(10, 95, now))
    emulator.script(roomy, _codex_body(40, 30, now))
    home = codex_home(tmp_path, [
        row("busy", busy), row("roomy", roomy),
        row("cool", cooling, last_status="exhausted", last_error_reset_at=(now + timedelta(hours=1)).timestamp()),
    ])
    text = run_cli("fetch", "openai-codex", "--home", str(home), env=emulator.env()).stdout
    lines = text.splitlines()
    assert "  2/3 accounts available" in lines and "  accounts:" in lines
    marked = [line for line in lines if line.lstrip().startswith("→")]
    assert len(marked) == 1 and "roomy@example.com  available" in marked[0]
    assert any("next: most room in its tightest window: Session 60% left" in line for line in lines)
    cool = next(line for line in lines if "cool@example.com" in line)
    assert "exhausted" in cool and "retry after" in cool and "(in " in cool
    busy_at = lines.index(next(line for line in lines if "busy@example.com" in line))
    assert lines[busy_at + 3].strip().startswith("Weekly") and "5.0% left" in lines[busy_at + 3]
    snap = json.loads(run_cli("fetch", "openai-codex", "--home", str(home), "--json", env=emulator.env()).stdout)
    assert [a["id"] for a in snap["accounts"]] == ["busy", "roomy", "cool"]
    assert snap["pool"]["next_account"]["id"] == "roomy" and snap["pool"]["total"] == 3


def test_fetch_of_a_provider_with_one_account_prints_no_account_rows(emulator, make_home):
    home = make_home("solo", openrouter="sk-or-solo")
    text = run_cli("fetch", "openrouter", "--home", str(home), env=emulator.env()).stdout
    assert "accounts:" not in text and "→" not in text


def test_fetch_prints_each_accounts_balance_when_the_pool_has_no_windows(emulator, make_home):
    """Two OpenRouter keys without a limit: no best window to show, so each account's own
    credits line is the only place the figures are -- it was left out (a card of two
    accounts with no money figure at all)."""
    home = make_home("two-keys", openrouter="sk-or-v1-cli-first")
    with open(home / ".env", "a") as env:
        env.write("OPENROUTER_API_KEY_2=sk-or-v1-cli-second\n")
    text = run_cli("fetch", "openrouter", "--home", str(home), env=emulator.env()).stdout
    lines = text.splitlines()
    assert "  accounts:" in lines
    assert len([line for line in lines if line.startswith("      Credits balance: $")]) == 2, text
