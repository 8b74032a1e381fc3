"""Child environment allowlist and home identity."""
from __future__ import annotations

import os

import pytest

from probe.env import base_url_env_name, child_env
from probe.homes import HomeNotFound, credential_fingerprint, home_path, resolve_home

pytestmark = pytest.mark.timeout(10)


def test_child_env_is_an_allowlist(tmp_path):
    parent = {
        "PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
        "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost",
        "PROBE_ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
        "ANTHROPIC_API_KEY": "sk-ant-api-parent-secret", "OPENROUTER_API_KEY": "sk-or-parent",
        "AWS_SECRET_ACCESS_KEY": "x", "HERMES_HOME": "/somewhere/else", "PYTHONPATH": "/evil",
        "PROBE_TOKEN": "server-token",
    }
    env = child_env(tmp_path, parent_env=parent)
    for kept in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "HTTPS_PROXY", "no_proxy", "PROBE_ANTHROPIC_BASE_URL"):
        assert env[kept] == parent[kept]
    for dropped in ("ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "AWS_SECRET_ACCESS_KEY", "PROBE_TOKEN"):
        assert dropped not in env
    assert env["HERMES_HOME"] == str(tmp_path)
    assert env["PYTHONPATH"] != "/evil"


def test_config_provider_urls_override_environment(tmp_path):
    env = child_env(tmp_path, {"openai-codex": "http://127.0.0.1:9/backend-api/codex"},
                    parent_env={"PROBE_OPENAI_CODEX_BASE_URL": "http://elsewhere"})
    assert env["PROBE_OPENAI_CODEX_BASE_URL"] == "http://127.0.0.1:9/backend-api/codex"
    assert base_url_env_name("openai-codex") == "PROBE_OPENAI_CODEX_BASE_URL"


def test_home_identity_collapses_spellings(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv("HOME", str(tmp_path))
    spellings = [real, f"{real}/", f"{real}/../real", tmp_path / "link", "~/real", "~/link/"]
    assert {resolve_home(s) for s in spellings} == {real.resolve()}


def test_default_home_is_hermes_home_then_dot_hermes(tmp_path, monkeypatch):
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))
    assert home_path(None) == tmp_path.resolve()
    monkeypatch.delenv("HERMES_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert home_path(None) == (tmp_path / ".hermes").resolve()


def test_missing_home_is_an_error_not_an_empty_pool(tmp_path):
    with pytest.raises(HomeNotFound) as info:
        resolve_home(tmp_path / "nope")
    assert info.value.path == (tmp_path / "nope").resolve()
    (tmp_path / "file").write_text("")
    with pytest.raises(HomeNotFound):
        resolve_home(tmp_path / "file")


@pytest.mark.parametrize("bad", ["", "a\x00b", 42, b"/tmp", "x" * 5000])
def test_bad_home_values_are_caller_errors(bad):
    with pytest.raises(ValueError):
        home_path(bad)


def test_fingerprint_changes_on_rewrite_even_same_size(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\n")
    first = credential_fingerprint(tmp_path)
    env_file.write_text("A=2\n")
    os.utime(env_file, ns=(0, 12345))
    assert credential_fingerprint(tmp_path) != first
    replacement = tmp_path / ".env.new"
    replacement.write_text("A=3\n")
    os.utime(replacement, ns=(0, 12345))
    before_replace = credential_fingerprint(tmp_path)
    replacement.replace(env_file)
    assert credential_fingerprint(tmp_path) != before_replace  # new inode
    assert credential_fingerprint(tmp_path)[1] is None  # no auth.json
