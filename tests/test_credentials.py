"""The one .env / auth.json reader: every rule, every malformed case, never a secret in a message."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.credentials import DotenvError, load_home, parse_dotenv
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(60)
SECRET = "sk-ant-oat01-SUPERSECRETVALUE"


def test_dotenv_rules():
    text = "\n".join([
        "# a comment",
        "",
        "PLAIN=value",
        "export EXPORTED=yes",
        "  SPACED  =  padded value  ",
        "DOUBLE=\"quoted # not a comment\"",
        "SINGLE='single $HOME'",
        "INLINE=value # trailing comment",
        "HASH=abc#def",
        "ESCAPED=\"line\\nbreak \\\"q\\\"\"",
        "EMPTY=",
        "PLAIN=later wins",
    ])
    assert parse_dotenv(text) == {
        "PLAIN": "later wins", "EXPORTED": "yes", "SPACED": "padded value",
        "DOUBLE": "quoted # not a comment", "SINGLE": "single $HOME", "INLINE": "value",
        "HASH": "abc#def", "ESCAPED": 'line\nbreak "q"', "EMPTY": "",
    }


@pytest.mark.parametrize("line, reason", [
    (f"{SECRET}", "expected KEY=VALUE"),
    (f"1BAD={SECRET}", "invalid variable name"),
    (f"KEY=\"{SECRET}", "unterminated quote"),
    (f"KEY='{SECRET}' trailing", "text after the closing quote"),
])
def test_malformed_dotenv_names_file_and_line_never_the_value(tmp_path, line, reason):
    (tmp_path / ".env").write_text(f"# ok\nGOOD=1\n{line}\n")
    with pytest.raises(DotenvError) as info:
        parse_dotenv((tmp_path / ".env").read_text())
    assert info.value.line == 3 and info.value.reason == reason
    creds = load_home(tmp_path)
    with pytest.raises(ProbeFailure) as failure:
        creds.env_value("ANTHROPIC_TOKEN")
    assert failure.value.code == "no_credentials"
    assert f"{tmp_path / '.env'}:3" in failure.value.message
    assert SECRET not in failure.value.message and "SUPERSECRET" not in failure.value.message


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('"' + SECRET + '"', "must hold a JSON object"),
    ("{\"providers\": " + "[" * 5000 + "]" * 5000 + "}", "auth.json"),
])
def test_malformed_auth_json_is_no_credentials_naming_the_file(tmp_path, content, fragment):
    (tmp_path / "auth.json").write_text(content)
    creds = load_home(tmp_path)
    with pytest.raises(ProbeFailure) as failure:
        creds.auth_json()
    assert failure.value.code == "no_credentials" and fragment in failure.value.message
    assert str(tmp_path / "auth.json") in failure.value.message and SECRET not in failure.value.message


def test_a_malformed_file_does_not_break_the_other(tmp_path):
    (tmp_path / ".env").write_text("garbage line\n")
    (tmp_path / "auth.json").write_text(json.dumps({"providers": {}}))
    creds = load_home(tmp_path)
    assert creds.auth_json() == {"providers": {}}
    (tmp_path / ".env").write_text("OPENROUTER_API_KEY=sk-or-1\n")
    (tmp_path / "auth.json").write_text("{")
    assert load_home(tmp_path).env_value("OPENROUTER_API_KEY") == ("OPENROUTER_API_KEY", "sk-or-1")


def test_missing_files_are_empty_and_oversized_ones_rejected(tmp_path):
    creds = load_home(tmp_path)
    assert creds.env_value("X") is None and creds.auth_json() == {}
    (tmp_path / ".env").write_text("A=" + "x" * (1024 * 1024 + 10))
    with pytest.raises(ProbeFailure) as failure:
        load_home(tmp_path).env_value("A")
    assert "larger than 1 MiB" in failure.value.message


def test_owner_only_files_are_read_and_never_written(tmp_path):
    env, auth = tmp_path / ".env", tmp_path / "auth.json"
    env.write_text("DEEPSEEK_API_KEY=sk-1\n")
    auth.write_text("{}")
    for path in (env, auth):
        path.chmod(0o600)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (env, auth)}
    assert load_home(tmp_path).env_value("DEEPSEEK_API_KEY")[1] == "sk-1"
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (env, auth)} == before


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400))
def test_any_dotenv_text_parses_or_raises_dotenv_error(text):
    try:
        values = parse_dotenv(text)
    except DotenvError as exc:
        assert exc.line >= 1
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.binary(max_size=300), auth=st.binary(max_size=300))
def test_any_file_bytes_load_without_raising(tmp_path_factory, env, auth):
    home = tmp_path_factory.mktemp("fuzz")
    (home / ".env").write_bytes(env)
    (home / "auth.json").write_bytes(auth)
    creds = load_home(home)
    for call in (lambda: creds.env_value("ANTHROPIC_TOKEN"), creds.auth_json):
        try:
            call()
        except ProbeFailure as failure:
            assert failure.code == "no_credentials"
