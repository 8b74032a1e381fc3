"""Credential places (SPEC §16 ``CREDENTIALS``): the syntax, what each place finds in a home,
what a malformed place or file says -- table-driven, no processes, no HTTP."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from workers.credentials import HomeCredentials, load_home
from workers.places import PlaceError, Step, credential_status, has_credential, locate, lookup, parse, parse_all, values
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(30)
SECRET = "sk-places-SUPERSECRET"


# -- syntax ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, file, name, steps", [
    (".env:FOO_API_KEY", ".env", "FOO_API_KEY", ()),
    (".env:dotted.name-x", ".env", "dotted.name-x", ()),
    ("auth.json:token", "auth.json", "", (Step("token"),)),
    ("auth.json:credential_pool.anthropic[].access_token", "auth.json", "",
     (Step("credential_pool"), Step("anthropic", True), Step("access_token"))),
    ('auth.json:providers."openai-codex".tokens.access_token', "auth.json", "",
     (Step("providers"), Step("openai-codex"), Step("tokens"), Step("access_token"))),
    ('auth.json:a."b.c".d', "auth.json", "", (Step("a"), Step("b.c"), Step("d"))),
    # a dash needs no quotes (SPEC §16 quotes it; both forms name the same key)
    ("auth.json:providers.openai-codex.tokens", "auth.json", "", (Step("providers"), Step("openai-codex"), Step("tokens"))),
    ("auth.json:credential_pool.example-cloud[].access_token", "auth.json", "",
     (Step("credential_pool"), Step("example-cloud", True), Step("access_token"))),
    ('auth.json:"with \\"quote\\" and \\\\"', "auth.json", "", (Step('with "quote" and \\'),)),
    ("auth.json:pool[]", "auth.json", "", (Step("pool", True),)),
    ("auth.json:a[].b[].c", "auth.json", "", (Step("a", True), Step("b", True), Step("c"))),
    ('auth.json:"x-y"[].z', "auth.json", "", (Step("x-y", True), Step("z"))),
    ("auth.json:0.1_2", "auth.json", "", (Step("0"), Step("1_2"))),
])
def test_well_formed_places(text, file, name, steps):
    place = parse(text)
    assert (place.file, place.name, place.steps) == (file, name, steps)
    assert str(place) == text and parse(str(place)) == place   # shown as written


@pytest.mark.parametrize("text, reason", [
    ("", "does not start with"),
    ("FOO_API_KEY", "does not start with"),
    ("env:FOO", "does not start with"),
    ("auth.json", "does not start with"),
    (".env:", "not a .env variable name"),
    (".env:1FOO", "not a .env variable name"),
    (".env:FOO BAR", "not a .env variable name"),
    ("auth.json:", "path is empty"),
    ("auth.json:a..b", "expected a key, found '.' (a key with dots is double-quoted)"),
    ("auth.json:a.", "a key is missing"),
    ("auth.json:.a", "expected a key, found '.'"),
    ("auth.json:a.b/c", "expected '.', '[]' or the end, found '/'"),
    ("auth.json:a[0].b", "only '[]'"),
    ("auth.json:a[].[]", "expected a key, found '['"),
    ("auth.json:a[][]", "expected '.', '[]' or the end"),
    ("auth.json:[]", "expected a key, found '['"),
    ('auth.json:"unclosed', "not closed"),
    ('auth.json:""', "must not be empty"),
    ('auth.json:"a\\n"', "may be escaped"),
    ('auth.json:"a"b', "expected '.', '[]' or the end"),
    ("auth.json:a b", "expected '.', '[]' or the end"),
    (" .env:FOO", "does not start with"),
    ("auth.json:a.b ", "expected '.', '[]' or the end"),
    ("auth.json:" + "a." * 120 + "b", "at most 200 characters"),
    (42, "must be a string"),
    (None, "must be a string"),
])
def test_malformed_places_are_refused_with_a_reason(text, reason):
    with pytest.raises(PlaceError) as info:
        parse(text)
    assert reason in str(info.value)


@pytest.mark.parametrize("declared, reason", [
    (".env:FOO", "must be a list"),
    ({"a": 1}, "must be a list"),
    (None, "must be a list"),
    ([".env:FOO", "auth.json:x y"], "CREDENTIALS[1]: 'auth.json:x y'"),
    ([".env:FOO", 7], "CREDENTIALS[1]: a place must be a string"),
    ([".env:A"] * 33, "more than 32 places"),
])
def test_malformed_credentials_lists(declared, reason):
    with pytest.raises(PlaceError) as info:
        parse_all(declared)
    assert reason in str(info.value)


def test_a_credentials_tuple_or_empty_list_is_fine():
    assert parse_all((".env:A", "auth.json:b")) == (parse(".env:A"), parse("auth.json:b"))
    assert parse_all([]) == ()


# -- evaluation ------------------------------------------------------------------------
AUTH = {
    "credential_pool": {
        "anthropic": [{"access_token": ""}, {"access_token": "  tok-1  "}, "not an entry", {"access_token": 42},
                      {"label": "no token"}, {"access_token": "tok-2"}, None],
        "openai-codex": [{"access_token": "cx-1", "account_id": "acct"}],
        "empty": [],
        "nulls": None,
    },
    "providers": {"openai-codex": {"tokens": {"access_token": "cx-main", "account_id": None}},
                  "nous": {"access_token": {"nested": "object"}}},
    "top": "top-value",
    "number": 12,
    "nested": {"lists": [{"keys": ["k-1", "", 3, "k-2"]}, {"keys": "not a list"}, {"other": 1}]},
}


@pytest.mark.parametrize("place, expected", [
    ("auth.json:credential_pool.anthropic[].access_token", ["tok-1", "tok-2"]),   # stripped, non-strings skipped
    ('auth.json:credential_pool."openai-codex"[].access_token', ["cx-1"]),
    ('auth.json:providers."openai-codex".tokens.access_token', ["cx-main"]),
    ('auth.json:providers."openai-codex".tokens.account_id', []),              # null: nothing
    ("auth.json:providers.nous.access_token", []),                               # an object is not a credential
    ("auth.json:top", ["top-value"]),
    ("auth.json:number", []),                                                    # a number is not a credential
    ("auth.json:credential_pool.empty[].access_token", []),
    ("auth.json:credential_pool.nulls[].access_token", []),
    ("auth.json:credential_pool.missing[].access_token", []),                   # missing paths: nothing
    ("auth.json:nothing.here.at.all", []),
    ("auth.json:nested.lists[].keys[]", ["k-1", "k-2"]),                        # after [], misfits are skipped
    (".env:FOO_API_KEY", ["foo-value"]),
    (".env:EMPTY_KEY", []),
    (".env:SPACES", []),
    (".env:MISSING", []),
])
def test_values_at_a_place(tmp_path, place, expected):
    home = _home(tmp_path, env="FOO_API_KEY=foo-value\nEMPTY_KEY=\nSPACES='   '\n", auth=AUTH)
    assert values(place, home) == expected


def test_lookup_returns_values_of_any_type_and_where_they_are(tmp_path):
    home = _home(tmp_path, auth=AUTH)
    assert lookup('auth.json:credential_pool."openai-codex"[]', home) == [{"access_token": "cx-1", "account_id": "acct"}]
    assert lookup("auth.json:number", home) == [12]
    wheres = [f.where for f in locate("auth.json:credential_pool.anthropic[].access_token", home)]
    assert wheres == ["auth.json credential_pool.anthropic[0]", "auth.json credential_pool.anthropic[1]",
                      "auth.json credential_pool.anthropic[3]", "auth.json credential_pool.anthropic[5]"]
    assert [f.where for f in locate('auth.json:providers."openai-codex".tokens.access_token', home)] == \
        ["auth.json providers.openai-codex.tokens"]
    assert [f.where for f in locate("auth.json:top", home)] == ["auth.json top"]
    assert [f.where for f in locate("auth.json:credential_pool.anthropic[]", home)][:2] == \
        ["auth.json credential_pool.anthropic[0]", "auth.json credential_pool.anthropic[1]"]


@pytest.mark.parametrize("auth, place, message", [
    ({"credential_pool": SECRET}, "auth.json:credential_pool.x[].access_token", "credential_pool should be an object"),
    ({"credential_pool": [SECRET]}, "auth.json:credential_pool.x[].access_token", "credential_pool should be an object"),
    ({"credential_pool": {"x": {"access_token": SECRET}}}, "auth.json:credential_pool.x[].access_token",
     "credential_pool.x should be a list"),
    ({"providers": {"openai-codex": {"tokens": SECRET}}}, 'auth.json:providers."openai-codex".tokens.access_token',
     "providers.openai-codex.tokens should be an object"),
])
def test_a_wrong_type_before_the_first_list_is_a_malformed_file(tmp_path, auth, place, message):
    home = _home(tmp_path, auth=auth)
    with pytest.raises(ProbeFailure) as info:
        values(place, home)
    assert info.value.code == "credentials_unreadable"
    assert info.value.message == f"auth.json is malformed: {message}."   # relative to the home, no server path
    assert SECRET not in info.value.message


def test_an_unreadable_file_fails_only_the_places_in_it(tmp_path):
    (tmp_path / ".env").mkdir()   # cannot be read
    (tmp_path / "auth.json").write_text(json.dumps({"token": "from-auth"}))
    home = load_home(tmp_path)
    with pytest.raises(ProbeFailure) as info:
        values(".env:GOOD", home)
    assert info.value.code == "credentials_unreadable"
    assert info.value.message == ".env could not be read: it is a directory."
    assert values("auth.json:token", home) == ["from-auth"]

    (tmp_path / ".env").rmdir()
    (tmp_path / ".env").write_text(f"GOOD=1\nBROKEN '{SECRET}\n")   # python-dotenv skips line 2; the rest counts
    (tmp_path / "auth.json").write_text("{not json")
    home = load_home(tmp_path)
    assert values(".env:GOOD", home) == ["1"]
    with pytest.raises(ProbeFailure) as info:
        values("auth.json:token", home)
    assert info.value.code == "credentials_unreadable"
    assert info.value.message == "auth.json could not be read: it is not valid JSON (line 1, column 2)."


# -- has_credential (SPEC §17) ---------------------------------------------------------
@pytest.mark.parametrize("credentials, env, auth, expected", [
    ([".env:A", "auth.json:pool[].t"], "A=x\n", None, True),
    ([".env:A", "auth.json:pool[].t"], "", {"pool": [{"t": ""}, {"t": "y"}]}, True),
    ([".env:A", "auth.json:pool[].t"], "A=\n", {"pool": [{"t": ""}, {"t": 5}]}, False),   # empty or non-string
    ([".env:A"], None, None, False),                                                      # no files at all
    ([".env:A", "auth.json:pool[].t"], "B=1\n", {"pool": "broken"}, False),               # malformed: probe says why
    (["auth.json:pool[].t"], "BROKEN LINE\n", {"pool": [{"t": "y"}]}, True),               # a skipped .env line
    ([".env:A"], "A=op://Private/Item/field\n", None, True),                              # a reference: op not run
    (None, "", None, True),                                                               # no CREDENTIALS: probe it
    ([], "A=x\n", None, False),                                                           # declares none, finds none
])
def test_has_credential(tmp_path, credentials, env, auth, expected):
    module = SimpleNamespace() if credentials is None else SimpleNamespace(CREDENTIALS=credentials)
    assert has_credential(module, _home(tmp_path, env=env, auth=auth)) is expected


@pytest.mark.parametrize("env, auth, expected", [
    ("A=x\n", "{broken", "found"),                       # a value elsewhere wins over the unreadable file
    ("B=1\n", "{broken", "credentials_unreadable"),      # it may be in the file that cannot be read
    ("B=1\n", {"pool": "broken"}, "credentials_unreadable"),
    ("B=1\n", {"pool": []}, "none"),
])
def test_credential_status_tells_an_unreadable_place_from_none(tmp_path, env, auth, expected):
    (tmp_path / ".env").write_text(env)
    (tmp_path / "auth.json").write_text(auth if isinstance(auth, str) else json.dumps(auth))
    module = SimpleNamespace(CREDENTIALS=[".env:A", "auth.json:pool[].t"])
    assert credential_status(module, load_home(tmp_path)) == expected


def test_credential_status_applies_a_built_ins_own_rule(tmp_path):
    home = _home(tmp_path, env="GITHUB_TOKEN=ghp_classic\n")
    module = SimpleNamespace(CREDENTIALS=[".env:GITHUB_TOKEN"])
    assert credential_status(module, home) == "found"
    assert credential_status(module, home, accepts=lambda value: not value.startswith("ghp_")) == "none"


def test_has_credential_refuses_malformed_credentials():
    with pytest.raises(PlaceError):
        has_credential(SimpleNamespace(CREDENTIALS=["auth.json:a b"]), HomeCredentials(home=Path("/nonexistent")))


def test_has_credential_matches_what_each_built_in_probe_would_find(tmp_path):
    """The places a built-in declares are the ones its probe reads: a home built for each
    declared place alone has a credential, and the provider's own lookup finds it."""
    from workers.providers import load, make_context

    for name in ("anthropic", "openai-codex", "openrouter", "deepseek"):
        provider = load(name)
        for index, place in enumerate(provider.places):
            home_dir = tmp_path / f"{name}-{index}"
            home_dir.mkdir()
            if place.file == ".env":
                (home_dir / ".env").write_text(f"{place.name}=tok-{name}\n")
            else:
                doc: dict = {}
                node = doc
                for step in place.steps[:-1]:
                    node[step.key] = [{}] if step.each else {}
                    node = node[step.key][0] if step.each else node[step.key]
                node[place.steps[-1].key] = f"tok-{name}"
                (home_dir / "auth.json").write_text(json.dumps(doc))
            home = load_home(home_dir)
            assert has_credential(provider.module, home), (name, str(place))
            assert make_context(provider, home).credential() == f"tok-{name}"


def _home(tmp_path: Path, *, env: str | None = None, auth: dict | None = None) -> HomeCredentials:
    if env is not None:
        (tmp_path / ".env").write_text(env)
    if auth is not None:
        (tmp_path / "auth.json").write_text(json.dumps(auth))
    return load_home(tmp_path)
