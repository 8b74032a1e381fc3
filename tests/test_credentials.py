"""The one .env / auth.json reader: every rule, every malformed case, never a secret in a message.

Pure tests (no HTTP): the adapters' credential lookups are exercised here too, through the
same HomeCredentials accessors they use in a worker."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from dotenv import dotenv_values

from workers.credentials import HomeCredentials, credential_stat, load_home, log_skipped, parse_env
from workers.providers import anthropic, make_context, openai_codex
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(90)   # hypothesis runs ~1,500 examples; the machine may be loaded
SECRET = "sk-ant-oat01-SUPERSECRETVALUE"


def failure_of(call) -> ProbeFailure:
    with pytest.raises(ProbeFailure) as info:
        call()
    return info.value


# -- .env: read as python-dotenv reads it (SPEC §2) --------------------------------------
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
        "HASH=abc#def",
        "EQUALS=a=b=c",
        "ESCAPED=\"line\\nbreak \\\"q\\\" back\\\\slash\"",
        "EMPTY=",
        "EMPTY_QUOTED=\"\"",
        "  # indented comment",
        "dotted.name-x=ok",
        "BARE",                                  # a name without a value: no credential
        "export BARE_EXPORTED",
        "REF=${PLAIN}/${MISSING:-fallback}/${HOME}",   # the same file only: HOME is not in it
        "PLAIN=later wins",
    ])
    values, skipped = parse_env(text)
    assert values == {
        "PLAIN": "later wins", "EXPORTED": "yes", "TABBED": "tab", "SPACED": "padded value",
        "DOUBLE": "quoted # not a comment", "SINGLE": "single $HOME \\n stays", "INLINE": "value",
        "QUOTED_INLINE": "v", "HASH": "abc#def", "EQUALS": "a=b=c",
        "ESCAPED": 'line\nbreak "q" back\\slash', "EMPTY": "", "EMPTY_QUOTED": "",
        "dotted.name-x": "ok", "REF": "value/fallback/",
    }
    assert skipped == ()


def test_a_pem_spanning_lines_crlf_and_a_bom(tmp_path):
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    body = f'# keys\nexport SIGNING_KEY="{pem}"\nDEEPSEEK_API_KEY=sk-after-the-pem\n'
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbf" + body.replace("\n", "\r\n").encode())
    creds = load_home(tmp_path)
    assert creds.env_get("SIGNING_KEY") == pem      # CRLF inside the quotes reads as Hermes reads it: \n
    assert creds.env_value("DEEPSEEK_API_KEY") == ("DEEPSEEK_API_KEY", "sk-after-the-pem")
    assert "# keys" not in creds.env and creds.env_skipped == ()


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="AB_=$ {}:-'\"\\#\n\rxé\t", max_size=80))
def test_values_are_dotenv_values_with_the_process_environment_left_out(text):
    """The reader is ``dotenv_values``: with an empty process environment they agree on
    every text (names without a value left out)."""
    with mock.patch.dict(os.environ, clear=True):
        expected = {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
        assert parse_env(text)[0] == expected


def test_expansion_never_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("QP_SERVICE_SECRET", "from-the-service")
    values, _ = parse_env("A=${QP_SERVICE_SECRET}\nB=${QP_SERVICE_SECRET:-default}\nC=x${A}y\n")
    assert values == {"A": "", "B": "default", "C": "xy"}


def test_an_unparsable_line_is_skipped_and_logged_by_number_never_by_value(tmp_path, capfd):
    (tmp_path / ".env").write_text(f"# ok\nGOOD=1\nMY KEY={SECRET}\nLATER=2\nOPEN=\"{SECRET}\nTAIL=3\n")
    creds = load_home(tmp_path)
    assert creds.env == {"GOOD": "1", "LATER": "2", "TAIL": "3"} and creds.env_skipped == (3, 5)
    assert capfd.readouterr().err == ""   # python-dotenv's own warning (no file name) is taken off its logger
    log_skipped(creds.env_skipped)
    err = capfd.readouterr().err
    assert err.splitlines() == ["workers: .env line 3 could not be parsed (python-dotenv) and was skipped",
                                "workers: .env line 5 could not be parsed (python-dotenv) and was skipped"]
    assert "SUPERSECRET" not in err and str(tmp_path) not in err


def test_many_unparsable_lines_log_ten_then_a_count(tmp_path, capfd):
    (tmp_path / ".env").write_text("".join(f"bad line {n}\n" for n in range(25)) + "OK=1\n")
    creds = load_home(tmp_path)
    assert creds.env == {"OK": "1"} and creds.env_skipped == tuple(range(1, 26))
    log_skipped(creds.env_skipped)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 11 and err[-1] == "workers: .env: 15 more lines could not be parsed and were skipped"


@pytest.mark.parametrize("content, reason", [
    ("{not json", "it is not valid JSON (line 1, column 2)"),
    ("{\n\n  \"a\": ,\n}", "it is not valid JSON (line 3, column 8)"),
    ('{"providers": {"nous": {"access_token": "' + SECRET[:12], "it is not valid JSON (line 1, column 41)"),  # cut mid-write
    ("[1, 2]", "it does not hold a JSON object"),
    ("null", "it does not hold a JSON object"),
    ('"' + SECRET + '"', "it does not hold a JSON object"),
    ("", "it is empty (delete it if this home has no logins)"),
    ("  \n", "it is empty (delete it if this home has no logins)"),
    ("{\"providers\": " + "[" * 5000 + "]" * 5000 + "}", "it is not JSON quota-probe can read"),
    ("{\"n\": " + "9" * 5000 + "}", "it is not JSON quota-probe can read"),
])
def test_an_unreadable_auth_json_is_credentials_unreadable_naming_the_file(tmp_path, content, reason):
    (tmp_path / "auth.json").write_text(content)
    creds = load_home(tmp_path)
    failure = failure_of(creds.auth_json)
    assert failure.code == "credentials_unreadable"
    assert failure.message == f"auth.json could not be read: {reason}."
    assert failure_of(lambda: creds.auth_list("credential_pool", "anthropic")).code == "credentials_unreadable"


@pytest.mark.parametrize("auth, keys", [
    ({"credential_pool": SECRET}, "credential_pool"),
    ({"credential_pool": [SECRET]}, "credential_pool"),
    ({"credential_pool": {"anthropic": {"access_token": SECRET}}}, "credential_pool.anthropic"),
    ({"credential_pool": {"anthropic": SECRET}}, "credential_pool.anthropic"),
])
def test_auth_json_with_wrong_types_is_malformed_naming_the_file_and_keys(tmp_path, auth, keys):
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    failure = failure_of(lambda: anthropic.find_token(make_context("anthropic", load_home(tmp_path))))
    assert failure.code == "credentials_unreadable"
    assert failure.message.startswith(f"auth.json is malformed: {keys} should be")
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
    assert failure.code == "credentials_unreadable" and failure.message.startswith("auth.json is malformed: ")
    assert "SUPERSECRET" not in failure.message


def test_auth_accessors_treat_absent_and_null_as_empty(tmp_path):
    (tmp_path / "auth.json").write_text(json.dumps({"providers": None, "credential_pool": {"anthropic": None}}))
    creds = load_home(tmp_path)
    assert creds.auth_object("providers", "openai-codex", "tokens") is None
    assert creds.auth_list("credential_pool", "anthropic") == []
    assert creds.auth_list("credential_pool", "openai-codex") == []
    assert creds.auth_list("nothing", "here") == []


def test_an_unreadable_file_does_not_break_the_other(tmp_path):
    (tmp_path / ".env").write_bytes(b"A=\xff\n")
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


def test_missing_files_are_empty_an_empty_env_too(tmp_path):
    creds = load_home(str(tmp_path))          # a str is accepted as well as a Path
    assert isinstance(creds, HomeCredentials)
    assert creds.env_value("X") is None and creds.auth_json() == {}
    (tmp_path / ".env").write_text("")
    assert load_home(tmp_path).env == {} and load_home(tmp_path).env_error is None


def test_a_2_mib_file_is_credentials_unreadable(tmp_path):
    """Both files are bounded (1 MiB): a 2 MiB .env holding the credential early on is
    still refused as a whole -- half a file read is not the file."""
    (tmp_path / ".env").write_text("DEEPSEEK_API_KEY=sk-first\n" + "# padding\n" * (2 * 1024 * 1024 // 10))
    failure = failure_of(lambda: load_home(tmp_path).env_value("DEEPSEEK_API_KEY"))
    assert (failure.code, failure.message) == ("credentials_unreadable", ".env could not be read: it is larger than 1 MiB.")
    (tmp_path / "auth.json").write_text("{\"a\": \"" + "x" * (2 * 1024 * 1024) + "\"}")
    assert failure_of(load_home(tmp_path).auth_json).message == "auth.json could not be read: it is larger than 1 MiB."


def test_unreadable_files_are_clear_errors(tmp_path):
    (tmp_path / ".env").write_bytes(b"A=\xff\xfe\n")
    assert failure_of(lambda: load_home(tmp_path).env_value("A")).message == ".env could not be read: it is not UTF-8 text."
    (tmp_path / ".env").unlink()
    (tmp_path / ".env").mkdir()
    (tmp_path / "auth.json").write_bytes(b"\x80{}")
    creds = load_home(tmp_path)
    assert failure_of(lambda: creds.env_value("A")).message == ".env could not be read: it is a directory."
    assert failure_of(creds.auth_json).message == "auth.json could not be read: it is not UTF-8 text."


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode (tests/test_home_files.py "
                                              "reads a mode-000 file in a worker without CAP_DAC_OVERRIDE)")
def test_unreadable_permissions(tmp_path):
    (tmp_path / ".env").write_text("A=1\n")
    (tmp_path / ".env").chmod(0)
    assert failure_of(lambda: load_home(tmp_path).env_value("A")).message == \
        ".env could not be read: permission denied."


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
def test_any_dotenv_text_parses_and_skips_within_the_file(text):
    with contextlib.redirect_stderr(io.StringIO()):
        values, skipped = parse_env(text)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
    assert all(1 <= line <= lines for line in skipped)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=40),
                max_size=8))
def test_a_skipped_line_never_reaches_the_log(tmp_path_factory, lines):
    """Whatever the lines hold, the log names the line, not its content."""
    marker = "Zq9SECRETzQ9"
    home = tmp_path_factory.mktemp("log")
    (home / ".env").write_text("\n".join(line + marker for line in lines))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        log_skipped(load_home(home).env_skipped)
    assert marker not in err.getvalue() and str(home) not in err.getvalue()


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
            assert failure.code in ("no_credentials", "credentials_unreadable") and SECRET not in failure.message
        else:
            assert found is None or isinstance(found, (str, tuple))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.binary(max_size=300), auth=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_file_bytes_load_without_raising(tmp_path_factory, env, auth):
    home = tmp_path_factory.mktemp("fuzz")
    (home / ".env").write_bytes(env)
    (home / "auth.json").write_bytes(auth)
    with contextlib.redirect_stderr(io.StringIO()):
        creds = load_home(home)
    for call in (lambda: creds.env_value("ANTHROPIC_TOKEN"), creds.auth_json,
                 lambda: anthropic.find_token(make_context("anthropic", creds)),
                 lambda: openai_codex.find_credential(make_context("openai-codex", creds))):
        try:
            call()
        except ProbeFailure as failure:
            assert failure.code in ("no_credentials", "credentials_unreadable")
            assert str(home) not in failure.message and str(home.parent) not in failure.message
