"""The one .env / auth.json reader: every rule, every malformed case, never a secret in a message.

Pure tests (no HTTP): the adapters' credential lookups are exercised here too, through the
same HomeCredentials accessors they use in a worker."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.credentials import DotenvError, HomeCredentials, credential_stat, load_home, parse_dotenv
from workers.providers import anthropic, make_context, openai_codex
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(30)
SECRET = "sk-ant-oat01-SUPERSECRETVALUE"


def failure_of(call) -> ProbeFailure:
    with pytest.raises(ProbeFailure) as info:
        call()
    return info.value


# -- .env rules ----------------------------------------------------------------------------
def test_dotenv_rules():
    text = "\n".join([
        "# a comment",
        "",
        "   ",
        "PLAIN=value",
        "export EXPORTED=yes",
        "export\tTABBED=tab",
        "  SPACED  =  padded value  ",
        "DOUBLE=\"quoted # not a comment\"",
        "SINGLE='single $HOME \\n stays'",
        "INLINE=value # trailing comment",
        "QUOTED_INLINE=\"v\"   # comment after quotes",
        "QUOTED_HASH='v'#tight comment",
        "HASH=abc#def",
        "EQUALS=a=b=c",
        "ESCAPED=\"line\\nbreak \\\"q\\\" back\\\\slash\"",
        "EMPTY=",
        "EMPTY_QUOTED=\"\"",
        "  # indented comment",
        "dotted.name-x=ok",
        "export=not a prefix here",
        "PLAIN=later wins",
    ])
    assert parse_dotenv(text) == {
        "PLAIN": "later wins", "EXPORTED": "yes", "TABBED": "tab", "SPACED": "padded value",
        "DOUBLE": "quoted # not a comment", "SINGLE": "single $HOME \\n stays", "INLINE": "value",
        "QUOTED_INLINE": "v", "QUOTED_HASH": "v", "HASH": "abc#def", "EQUALS": "a=b=c",
        "ESCAPED": 'line\nbreak "q" back\\slash', "EMPTY": "", "EMPTY_QUOTED": "",
        "dotted.name-x": "ok", "export": "not a prefix here",
    }


def test_dotenv_line_endings_bom_and_line_numbers(tmp_path):
    assert parse_dotenv("A=1\r\nB='2'\r\n") == {"A": "1", "B": "2"}
    (tmp_path / ".env").write_bytes("\ufeffA=1\n".encode())
    assert load_home(tmp_path).env_value("A") == ("A", "1")
    # a form feed or vertical tab is not a line break: the number is the editor's line
    with pytest.raises(DotenvError) as info:
        parse_dotenv("A=1\x0c\nB=2\x0b\nbroken\n")
    assert info.value.line == 3


@pytest.mark.parametrize("line, reason", [
    (f"{SECRET}", "expected KEY=VALUE"),
    ("export", "expected KEY=VALUE"),
    (f"1BAD={SECRET}", "invalid variable name"),
    (f"MY KEY={SECRET}", "invalid variable name"),
    (f"={SECRET}", "invalid variable name"),
    (f"export ={SECRET}", "invalid variable name"),
    (f"KEY=\"{SECRET}", "unterminated quote"),
    (f"KEY='{SECRET}", "unterminated quote"),
    (f"KEY=\"{SECRET}\\\"", "unterminated quote"),
    (f"KEY='{SECRET}' trailing", "text after the closing quote"),
])
def test_malformed_dotenv_names_file_and_line_never_the_value(tmp_path, line, reason):
    (tmp_path / ".env").write_text(f"# ok\nGOOD=1\n{line}\nLATER=2\n")
    with pytest.raises(DotenvError) as info:
        parse_dotenv((tmp_path / ".env").read_text())
    assert info.value.line == 3 and info.value.reason == reason
    assert SECRET not in str(info.value)
    creds = load_home(tmp_path)
    failure = failure_of(lambda: creds.env_value("ANTHROPIC_TOKEN"))
    assert failure.code == "no_credentials"
    assert failure.message == f"{tmp_path / '.env'}:3 is malformed ({reason})."
    assert "SUPERSECRET" not in failure.message
    # even a key that parsed fine is not handed out from a file with a broken line
    assert failure_of(lambda: creds.env_value("GOOD")).code == "no_credentials"


def test_malformed_dotenv_blocks_the_auth_json_fallback_too(tmp_path):
    """The broken line may be the credential the user meant: probing another account
    from auth.json instead would be a silent surprise."""
    (tmp_path / ".env").write_text(f"ANTHROPIC_TOKEN=\"{SECRET}\n")
    (tmp_path / "auth.json").write_text(json.dumps({"credential_pool": {"anthropic": [{"access_token": "sk-ant-oat-x"}]}}))
    failure = failure_of(lambda: anthropic.find_token(make_context("anthropic", load_home(tmp_path))))
    assert failure.code == "no_credentials" and ".env:1 is malformed" in failure.message


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "is not valid JSON (line 1)"),
    ("{\n\n  \"a\": ,\n}", "is not valid JSON (line 3)"),
    ("[1, 2]", "must hold a JSON object"),
    ("null", "must hold a JSON object"),
    ('"' + SECRET + '"', "must hold a JSON object"),
    ("{\"providers\": " + "[" * 5000 + "]" * 5000 + "}", "auth.json"),
    ("{\"n\": " + "9" * 5000 + "}", "could not be read"),
])
def test_malformed_auth_json_is_no_credentials_naming_the_file(tmp_path, content, fragment):
    (tmp_path / "auth.json").write_text(content)
    creds = load_home(tmp_path)
    failure = failure_of(creds.auth_json)
    assert failure.code == "no_credentials" and fragment in failure.message
    assert str(tmp_path / "auth.json") in failure.message and "SUPERSECRET" not in failure.message
    assert failure_of(lambda: creds.auth_list("credential_pool", "anthropic")).code == "no_credentials"


@pytest.mark.parametrize("auth, keys", [
    ({"credential_pool": SECRET}, "credential_pool"),
    ({"credential_pool": [SECRET]}, "credential_pool"),
    ({"credential_pool": {"anthropic": {"access_token": SECRET}}}, "credential_pool.anthropic"),
    ({"credential_pool": {"anthropic": SECRET}}, "credential_pool.anthropic"),
])
def test_auth_json_with_wrong_types_is_malformed_naming_the_file_and_keys(tmp_path, auth, keys):
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    failure = failure_of(lambda: anthropic.find_token(make_context("anthropic", load_home(tmp_path))))
    assert failure.code == "no_credentials"
    assert failure.message.startswith(f"{tmp_path / 'auth.json'} is malformed: {keys} should be")
    assert "SUPERSECRET" not in failure.message


@pytest.mark.parametrize("auth", [
    {"providers": {"openai-codex": {"tokens": SECRET}}},
    {"providers": {"openai-codex": [SECRET]}},
    {"providers": SECRET},
    {"credential_pool": {"openai-codex": {"access_token": SECRET}}},
])
def test_codex_lookup_reports_wrong_types(tmp_path, auth):
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    failure = failure_of(lambda: openai_codex.find_credential(make_context("openai-codex", load_home(tmp_path))))
    assert failure.code == "no_credentials" and "auth.json is malformed" in failure.message
    assert "SUPERSECRET" not in failure.message


def test_auth_accessors_treat_absent_and_null_as_empty(tmp_path):
    (tmp_path / "auth.json").write_text(json.dumps({"providers": None, "credential_pool": {"anthropic": None}}))
    creds = load_home(tmp_path)
    assert creds.auth_object("providers", "openai-codex", "tokens") is None
    assert creds.auth_list("credential_pool", "anthropic") == []
    assert creds.auth_list("credential_pool", "openai-codex") == []
    assert creds.auth_list("nothing", "here") == []


def test_a_malformed_file_does_not_break_the_other(tmp_path):
    (tmp_path / ".env").write_text("garbage line\n")
    (tmp_path / "auth.json").write_text(json.dumps({"providers": {}}))
    creds = load_home(tmp_path)
    assert creds.auth_json() == {"providers": {}}
    (tmp_path / ".env").write_text("OPENROUTER_API_KEY=sk-or-1\n")
    (tmp_path / "auth.json").write_text("{")
    assert load_home(tmp_path).env_value("OPENROUTER_API_KEY") == ("OPENROUTER_API_KEY", "sk-or-1")


def test_env_value_takes_the_first_non_empty_name(tmp_path):
    (tmp_path / ".env").write_text("A=\nB=  \nC=third\nD=fourth\n")
    assert load_home(tmp_path).env_value("A", "B", "C", "D") == ("C", "third")
    assert load_home(tmp_path).env_value("A", "B") is None


def test_missing_empty_and_oversized_files(tmp_path):
    creds = load_home(str(tmp_path))          # a str is accepted as well as a Path
    assert isinstance(creds, HomeCredentials)
    assert creds.env_value("X") is None and creds.auth_json() == {}
    (tmp_path / "auth.json").write_text("  \n")
    assert load_home(tmp_path).auth_json() == {}
    (tmp_path / ".env").write_text("A=" + "x" * (1024 * 1024 + 10))
    failure = failure_of(lambda: load_home(tmp_path).env_value("A"))
    assert failure.message == f"{tmp_path / '.env'} could not be read (larger than 1 MiB)."
    (tmp_path / "auth.json").write_text("{\"a\": \"" + "x" * (1024 * 1024) + "\"}")
    assert "larger than 1 MiB" in failure_of(load_home(tmp_path).auth_json).message


def test_unreadable_files_are_clear_errors(tmp_path):
    (tmp_path / ".env").write_bytes(b"A=\xff\xfe\n")
    assert failure_of(lambda: load_home(tmp_path).env_value("A")).message == f"{tmp_path / '.env'} is not UTF-8 text."
    (tmp_path / ".env").unlink()
    (tmp_path / ".env").mkdir()
    (tmp_path / "auth.json").write_bytes(b"\x80{}")
    creds = load_home(tmp_path)
    assert "it is a directory" in failure_of(lambda: creds.env_value("A")).message
    assert failure_of(creds.auth_json).message == f"{tmp_path / 'auth.json'} is not UTF-8 text."


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_permissions(tmp_path):
    (tmp_path / ".env").write_text("A=1\n")
    (tmp_path / ".env").chmod(0)
    assert "permission denied" in failure_of(lambda: load_home(tmp_path).env_value("A")).message


def test_files_are_read_and_never_written(tmp_path):
    env, auth = tmp_path / ".env", tmp_path / "auth.json"
    env.write_text("DEEPSEEK_API_KEY=sk-1\n")
    auth.write_text(json.dumps({"credential_pool": {"openai-codex": [{"access_token": "t", "last_status": "exhausted",
                                                                       "last_error_reset_at": 1}]}}))
    for path in (env, auth):
        path.chmod(0o400)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (env, auth)}
    stat_before = credential_stat(tmp_path)
    creds = load_home(tmp_path)
    assert creds.env_value("DEEPSEEK_API_KEY")[1] == "sk-1"
    assert openai_codex.find_credential(make_context("openai-codex", creds)) == ("t", None)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (env, auth)} == before
    assert credential_stat(tmp_path) == stat_before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", "auth.json"]


# -- property tests ------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_dotenv_text_parses_or_raises_dotenv_error(text):
    try:
        values = parse_dotenv(text)
    except DotenvError as exc:
        assert 1 <= exc.line <= text.count("\n") + 1
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=40), max_size=8))
def test_a_malformed_line_never_reaches_the_message(lines):
    """Whatever the lines hold, the error names the line, not its content."""
    marker = "Zq9SECRETzQ9"
    text = "\n".join(line + marker for line in lines)
    try:
        parse_dotenv(text)
    except DotenvError as exc:
        assert marker not in str(exc) and marker not in exc.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=25,
)
pool_entry = st.fixed_dictionaries({}, optional={
    "access_token": json_values | st.just(SECRET), "account_id": json_values, "last_status": st.just("exhausted") | json_values,
    "last_error_reset_at": json_values | st.floats(min_value=0, max_value=5e9),
})
auth_shapes = st.fixed_dictionaries({}, optional={
    "providers": st.fixed_dictionaries({}, optional={"openai-codex": st.fixed_dictionaries(
        {}, optional={"tokens": st.fixed_dictionaries({}, optional={"access_token": json_values | st.just(SECRET),
                                                                   "account_id": json_values}) | json_values})}) | json_values,
    "credential_pool": st.fixed_dictionaries({}, optional={
        "anthropic": st.lists(pool_entry | json_values, max_size=3) | json_values,
        "openai-codex": st.lists(pool_entry | json_values, max_size=3) | json_values}) | json_values,
})


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.dictionaries(st.text(max_size=20), json_values, max_size=5), auth_shapes))
def test_any_auth_json_yields_a_credential_or_no_credentials(auth):
    creds = HomeCredentials(home=Path("/nonexistent-home"), auth=auth)
    for lookup, name in ((anthropic.find_token, "anthropic"), (openai_codex.find_credential, "openai-codex")):
        try:
            found = lookup(make_context(name, creds))
        except ProbeFailure as failure:
            assert failure.code == "no_credentials" and SECRET not in failure.message
        else:
            assert found is None or isinstance(found, (str, tuple))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.binary(max_size=300), auth=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_file_bytes_load_without_raising(tmp_path_factory, env, auth):
    home = tmp_path_factory.mktemp("fuzz")
    (home / ".env").write_bytes(env)
    (home / "auth.json").write_bytes(auth)
    creds = load_home(home)
    for call in (lambda: creds.env_value("ANTHROPIC_TOKEN"), creds.auth_json,
                 lambda: anthropic.find_token(make_context("anthropic", creds)),
                 lambda: openai_codex.find_credential(make_context("openai-codex", creds))):
        try:
            call()
        except ProbeFailure as failure:
            assert failure.code == "no_credentials" and str(home) in failure.message
