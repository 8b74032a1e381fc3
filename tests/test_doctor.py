"""``probe doctor``: where it looked, what it found, permissions -- never a value."""
from __future__ import annotations

import json
import time

import pytest

from probe.demo import write_home
from support import run_cli

pytestmark = pytest.mark.timeout(120)

SECRETS = ("sk-ant-oat01-doc-secret", "codex-doc-secret", "codex-pool-secret-1", "codex-pool-secret-2",
           "sk-or-v1-doc-secret", "sk-doc-secret")


def full_home(tmp_path):
    home = write_home(tmp_path, "doc-full", anthropic=SECRETS[0], codex=SECRETS[1], codex_account="acct-1",
                      openrouter=SECRETS[4], deepseek=SECRETS[5])
    auth = json.loads((home / "auth.json").read_text())
    auth["credential_pool"] = {"openai-codex": [
        {"access_token": SECRETS[2], "last_status": "exhausted", "last_error_reset_at": time.time() + 3600},
        {"access_token": SECRETS[3]}]}
    (home / "auth.json").write_text(json.dumps(auth))
    (home / "auth.json").chmod(0o600)
    return home


def test_every_kind_of_credential_described_never_shown(tmp_path):
    home = full_home(tmp_path)
    text = run_cli("doctor", "--home", str(home))
    report = json.loads(run_cli("doctor", "--home", str(home), "--json").stdout)
    assert text.returncode == 0, text.stdout + text.stderr
    for secret in SECRETS:
        assert secret not in text.stdout + text.stderr and secret not in json.dumps(report)
    providers = report["providers"]
    assert providers["anthropic"]["found"] == {"where": ".env ANTHROPIC_TOKEN", "kind": "OAuth token"}
    assert providers["openai-codex"]["found"]["where"] == "auth.json providers.openai-codex.tokens"
    pool = providers["openai-codex"]["pool"]
    assert pool[0]["exhausted_until"].endswith("Z") and pool[1]["exhausted_until"] is None
    assert providers["openrouter"]["found"] == {"where": ".env OPENROUTER_API_KEY", "kind": "API key"}
    assert providers["deepseek"]["base_url"] == "https://api.deepseek.com"
    assert "All good." in text.stdout and "exhausted until" in text.stdout
    assert report["problems"] == [] and report["files"][".env"]["mode"] == "0o600"


def test_a_plain_api_key_is_named_as_such(tmp_path):
    home = write_home(tmp_path, "doc-apikey", anthropic="sk-ant-api03-doc-plain")
    report = json.loads(run_cli("doctor", "--home", str(home), "--json").stdout)
    assert report["providers"]["anthropic"]["found"]["kind"].startswith("plain API key")
    assert "sk-ant-api03-doc-plain" not in json.dumps(report)


def test_a_credential_file_readable_by_others_is_a_warning_with_the_fix(tmp_path):
    home = write_home(tmp_path, "doc-mode", deepseek="sk-doc-mode")
    (home / ".env").chmod(0o644)
    result = run_cli("doctor", "--home", str(home))
    assert result.returncode == 1 and "chmod 600" in result.stdout and "readable by other users" in result.stdout


def test_a_malformed_file_is_named_with_its_line_never_its_value(tmp_path):
    home = write_home(tmp_path, "doc-bad", deepseek="sk-doc-bad")
    (home / ".env").write_text("DEEPSEEK_API_KEY=sk-doc-bad-value\nTHIS LINE 'is broken\n")
    result = run_cli("doctor", "--home", str(home))
    assert result.returncode == 1 and ".env:2 is malformed" in result.stdout
    assert "sk-doc-bad-value" not in result.stdout + result.stderr


def test_an_empty_or_missing_home_says_what_to_do(tmp_path):
    empty = write_home(tmp_path, "doc-empty")
    result = run_cli("doctor", "--home", str(empty))
    assert result.returncode == 1 and "No provider credential in this home" in result.stdout
    missing = run_cli("doctor", "--home", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_probe_flag_probes_what_was_found(emulator, tmp_path):
    home = write_home(tmp_path, "doc-probe", deepseek="sk-doc-probe", openrouter="sk-or-v1-doc-probe-401-")
    result = run_cli("doctor", "--home", str(home), "--probe", env=emulator.env())
    assert result.returncode == 1
    assert "deepseek" in result.stdout and "probe      available" in result.stdout
    assert "openrouter: the probe answered unauthorized" in result.stdout
    assert "sk-doc-probe" not in result.stdout


def test_an_anthropic_pool_entry_in_auth_json_is_found_and_not_shown(tmp_path):
    home = write_home(tmp_path, "doc-pool")
    (home / "auth.json").write_text(json.dumps({"credential_pool": {"anthropic": [
        {"access_token": ""}, {"access_token": "sk-ant-oat01-doc-pool-secret"}]}}))
    (home / "auth.json").chmod(0o600)
    report = json.loads(run_cli("doctor", "--home", str(home), "--json").stdout)
    assert report["providers"]["anthropic"]["found"] == {"where": "auth.json credential_pool.anthropic[1]",
                                                         "kind": "OAuth token"}
    assert "doc-pool-secret" not in json.dumps(report)
