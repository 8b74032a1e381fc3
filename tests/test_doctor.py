"""``probe doctor``: where it looked, what it found, permissions -- never a value."""
from __future__ import annotations

import json
import time

import pytest

from probe.tools.demo import write_home
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


def test_a_skipped_env_line_is_named_with_its_number_never_its_value(tmp_path):
    home = write_home(tmp_path, "doc-bad", deepseek="sk-doc-bad")
    (home / ".env").write_text("DEEPSEEK_API_KEY=sk-doc-bad-value\nTHIS LINE 'sk-doc-hidden-value is broken\n")
    result = run_cli("doctor", "--home", str(home))
    assert result.returncode == 1
    assert "deepseek" in result.stdout and "found      .env DEEPSEEK_API_KEY" in result.stdout   # the rest still counts
    assert ".env line 2 could not be parsed and is skipped" in result.stdout
    assert "sk-doc-bad-value" not in result.stdout + result.stderr
    assert "sk-doc-hidden-value" not in result.stdout + result.stderr


def test_an_unreadable_auth_json_is_a_problem_named_relative_to_the_home(tmp_path):
    home = write_home(tmp_path, "doc-unreadable", codex="codex-doc-token")
    (home / "auth.json").write_text('{"providers": {"openai-codex": {"tokens": {"access_token": "codex-doc-tok')
    result = run_cli("doctor", "--home", str(home))
    assert result.returncode == 1
    problem = [line for line in result.stdout.splitlines() if "auth.json could not be read" in line and " - " in line]
    assert len(problem) == 1   # one sentence for every provider it affects
    assert "openai-codex" in problem[0] and "nous" in problem[0]
    assert "auth.json could not be read: it is not valid JSON (line 1" in problem[0]
    assert "codex-doc-tok" not in result.stdout + result.stderr


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


# -- the providers added in 0.3 ---------------------------------------------------------------
NEW_SECRETS = {"zai": "glm-DOCSECRET-zai-0001", "kimi": "sk-kimi-DOCSECRET-0002", "kimi_cn": "ms-cn-DOCSECRET-0003",
               "minimax": "mm-DOCSECRET-0004", "minimax_cn": "mmcn-DOCSECRET-0005",
               "copilot": "github_pat_DOCSECRET_0006", "nous": "nous-DOCSECRET-0007"}


def test_new_providers_say_where_and_what_kind_never_a_value(tmp_path):
    """Each 0.3 provider appears with the places it looked in (its CREDENTIALS), where it
    found a credential and what kind -- by the probe's own rules -- and its base URL."""
    home = write_home(tmp_path, "doc-new", **NEW_SECRETS)
    with (home / ".env").open("a") as env:   # a classic token before the usable one: skipped, said so
        env.write("GLM_BASE_URL=https://open.bigmodel.cn/api/paas/v4\nCOPILOT_GITHUB_TOKEN=ghp_DOCSECRETclassic\n"
                  "GH_TOKEN=github_pat_DOCSECRET_0006\n")
    text = run_cli("doctor", "--home", str(home))
    report = json.loads(run_cli("doctor", "--home", str(home), "--json").stdout)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "DOCSECRET" not in text.stdout + text.stderr + json.dumps(report)
    providers = report["providers"]
    assert list(providers)[4:] == ["zai", "kimi-coding", "kimi-coding-cn", "minimax", "minimax-cn", "copilot", "nous"]
    assert providers["zai"]["looked_in"] == [".env: GLM_API_KEY, ZAI_API_KEY, Z_AI_API_KEY",
                                             "auth.json: credential_pool.zai[].access_token"]
    assert providers["zai"]["found"] == {"where": ".env GLM_API_KEY", "kind": "API key"}
    assert providers["zai"]["base_url"] == "https://open.bigmodel.cn"            # the China host
    assert providers["kimi-coding"]["found"] == {"where": ".env KIMI_API_KEY", "kind": "Kimi Code key: plan windows"}
    assert providers["kimi-coding"]["base_url"] == "https://api.kimi.com/coding"
    assert providers["kimi-coding-cn"]["found"]["where"] == ".env KIMI_CN_API_KEY"
    assert providers["kimi-coding-cn"]["base_url"] == "https://api.moonshot.cn"
    assert providers["minimax"]["found"]["where"] == ".env MINIMAX_API_KEY"
    assert providers["minimax-cn"]["base_url"] == "https://api.minimaxi.com"
    assert providers["copilot"]["found"] == {"where": ".env GH_TOKEN", "kind": "GitHub token"}
    assert "ghp_" in providers["copilot"]["note"] and ".env COPILOT_GITHUB_TOKEN" in providers["copilot"]["note"]
    assert providers["nous"]["found"] == {"where": "auth.json providers.nous",
                                          "kind": "Nous Portal login, expires 2099-01-01T00:00:00Z"}
    assert providers["nous"]["base_url"] == "https://portal.nousresearch.com"
    assert "All good." in text.stdout and "Kimi Code key: plan windows" in text.stdout


def test_new_providers_advice_an_expired_nous_login_only_classic_github_tokens(tmp_path):
    home = write_home(tmp_path, "doc-advice", kimi="moonshot-DOCSECRET-platform", copilot="ghp_DOCSECRETclassic",
                      nous="nous-DOCSECRET-old", nous_expires_at="2021-05-01T12:00:00Z")
    result = run_cli("doctor", "--home", str(home))
    report = json.loads(run_cli("doctor", "--home", str(home), "--json").stdout)
    assert result.returncode == 1 and "DOCSECRET" not in result.stdout + result.stderr + json.dumps(report)
    assert "nous: The Nous Portal login expired at 2021-05-01T12:00:00Z. Open Hermes once" in result.stdout
    assert "copilot: Only classic GitHub tokens (ghp_…)" in result.stdout
    providers = report["providers"]
    assert providers["copilot"]["found"] is None
    assert providers["kimi-coding"]["found"]["kind"] == "Moonshot platform key: account balance"
    assert providers["kimi-coding"]["base_url"] == "https://api.moonshot.ai"
    # a Nous pool: the OAuth entry with the latest expiry, and its own portal
    (home / "auth.json").write_text(json.dumps({"credential_pool": {"nous": [
        {"access_token": "nous-DOCSECRET-a", "auth_type": "oauth", "expires_at": "2098-01-01T00:00:00Z"},
        {"access_token": "nous-DOCSECRET-b", "auth_type": "api_key", "expires_at": "2099-06-01T00:00:00Z"},
        {"access_token": "nous-DOCSECRET-c", "auth_type": "oauth_device", "expires_at": "2099-01-01T00:00:00Z",
         "portal_base_url": "https://portal.example.org/"}]}}))
    pool = json.loads(run_cli("doctor", "--home", str(home), "--json").stdout)["providers"]["nous"]
    assert pool["found"] == {"where": "auth.json credential_pool.nous[2]",
                             "kind": "Nous Portal login, expires 2099-01-01T00:00:00Z"}
    assert pool["base_url"] == "https://portal.example.org"


def test_probe_flag_probes_the_new_providers(emulator, tmp_path):
    home = write_home(tmp_path, "doc-probe-new", zai="glm-PROBESECRET", kimi="sk-kimi-PROBESECRET",
                      minimax="mm-PROBESECRET-bodydenied-", copilot="github_pat_PROBESECRET", nous="nous-PROBESECRET")
    result = run_cli("doctor", "--home", str(home), "--probe", env=emulator.env())
    report = json.loads(run_cli("doctor", "--home", str(home), "--probe", "--json", env=emulator.env()).stdout)
    assert result.returncode == 1 and "PROBESECRET" not in result.stdout + result.stderr + json.dumps(report)
    assert "minimax: the probe answered unauthorized" in result.stdout
    probes = {name: facts.get("probe") for name, facts in report["providers"].items()}
    assert {name for name, probe in probes.items() if probe} == {"zai", "kimi-coding", "minimax", "copilot", "nous"}
    assert all(probes[name]["available"] for name in ("zai", "kimi-coding", "copilot", "nous"))
    assert probes["minimax"]["error"]["code"] == "unauthorized"


def test_every_account_of_a_pooled_provider_is_listed_with_what_the_probe_does_with_it(tmp_path):
    """SPEC §18: ``found`` names the first place only; a pooled home's numbered key and its
    exhausted pool row were invisible to the doctor though the probe reads (or skips) them."""
    first, second, row = "sk-or-v1-doc-first", "sk-or-v1-doc-second", "sk-or-v1-doc-row"
    home = write_home(tmp_path, "doc-pool", openrouter=first)
    with open(home / ".env", "a") as env:
        env.write(f"OPENROUTER_API_KEY_2={second}\n")
    (home / "auth.json").write_text(json.dumps({"credential_pool": {"openrouter": [
        {"id": "0f0f0f", "label": "team key", "source": "manual", "auth_type": "api_key", "access_token": row,
         "last_status": "exhausted", "last_error_code": 429, "last_error_reset_at": time.time() + 3600}]}}))
    text = run_cli("doctor", "--home", str(home))
    report = json.loads(run_cli("doctor", "--home", str(home), "--json").stdout)
    accounts = report["providers"]["openrouter"]["accounts"]
    assert len(accounts) == 3 and [a["state"] for a in accounts].count("usable") == 2
    team = next(a for a in accounts if a["id"] == "0f0f0f")
    assert team["label"] == "team key" and team["state"].startswith("exhausted until ")
    lines = [line for line in text.stdout.splitlines() if line.startswith("  account    ")]
    assert len(lines) == 3 and any("team key [0f0f0f, manual]: exhausted until" in line for line in lines)
    for secret in (first, second, row):
        assert secret not in text.stdout + text.stderr and secret not in json.dumps(report)
    assert "accounts" not in report["providers"]["deepseek"]      # none: nothing to list
