"""Every account in a home (SPEC §18, issue #27): which accounts a worker finds in a home's
files (``workers.accounts``, read in this process: no request), and -- through real
workers and the emulator -- that each is probed once, side by side, with its own token,
that Hermes' cooldowns and per-account back-off keep requests away from an account, and
that the snapshot's ``accounts`` / ``pool`` say what a user must see."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from workers.accounts import MAX_PARALLEL, clean_label, cooldown_until, enumerate_accounts, fingerprint
from workers.credentials import load_home
from workers.providers import load

pytestmark = pytest.mark.timeout(120)

NOW = 1_800_000_000.0


def jwt(account: str, sub: str, exp: float | None = None, marker: str = "") -> str:
    """An unsigned Codex-style JWT (the emulator answers any token)."""
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    claims = {"sub": sub, "https://api.openai.com/auth": {"chatgpt_account_id": account}}
    if exp is not None:
        claims["exp"] = exp
    return f"{part({'alg': 'none'})}.{part(claims)}.sig{marker}"


def home_with(tmp_path: Path, *, env: dict[str, str] | None = None, auth: dict | None = None,
              name: str = "home") -> Path:
    home = tmp_path / name
    home.mkdir(parents=True, exist_ok=True)
    (home / ".env").write_text("".join(f"{k}={v}\n" for k, v in (env or {}).items()))
    (home / "auth.json").write_text(json.dumps(auth or {}))
    return home


def accounts(provider: str, home: Path, now: float = NOW):
    return enumerate_accounts(load(provider), load_home(home), now, load_home)


def row(row_id: str, token: str | None, **fields) -> dict:
    data = {"id": row_id, "label": f"{row_id}@example.com", "auth_type": "api_key", "source": "manual", **fields}
    if token is not None:
        data["access_token"] = token
    return data


# -- which accounts (in-process) --------------------------------------------------------------
def test_pool_rows_by_priority_then_file_order_then_other_places_and_numbered_keys(tmp_path):
    home = home_with(tmp_path, env={"OPENROUTER_API_KEY": "sk-or-env1", "OPENROUTER_API_KEY_2": "sk-or-env2",
                                    "OPENROUTER_API_KEY_3": "sk-or-env3", "OPENROUTER_API_KEY_5": "sk-or-gap"},
                     auth={"credential_pool": {"openrouter": [
                         row("aaa", "sk-or-a", priority=2), "not an object", 7,
                         row("bbb", "sk-or-b", priority="1"),          # a digit string: 1, as Hermes' int()
                         row("ccc", "sk-or-c", priority="high"),       # garbage: 0
                         row("ddd", "sk-or-d"),                         # absent: 0, after ccc (file order)
                         row("gh", "gho_x", source="gh_cli"),           # machine-wide: not the home's
                     ]}})
    got = accounts("openrouter", home)
    assert [a.id for a in got] == ["ccc", "ddd", "bbb", "aaa", "env:OPENROUTER_API_KEY",
                                   "env:OPENROUTER_API_KEY_2", "env:OPENROUTER_API_KEY_3"]   # _5: after a gap
    assert all(a.verdict is None for a in got)


def test_one_account_per_secret_stripped_rows_take_their_token_and_keep_their_place(tmp_path):
    env_key, other = "sk-or-shared", "sk-or-other"
    home = home_with(tmp_path, env={"OPENROUTER_API_KEY": env_key, "OPENROUTER_API_KEY_2": other},
                     auth={"credential_pool": {"openrouter": [
                         {"id": "e1", "label": "OPENROUTER_API_KEY", "source": "env:OPENROUTER_API_KEY",
                          "secret_fingerprint": fingerprint(env_key)},                  # stripped env row
                         {"id": "f1", "label": "by print", "source": "config:x",
                          "secret_fingerprint": fingerprint(other)},                    # matched by fingerprint
                         row("m1", env_key),                                            # the same key again
                     ]}})
    got = accounts("openrouter", home)
    assert [(a.id, a.token) for a in got] == [("e1", env_key), ("f1", other)]
    assert fingerprint("abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()[:16]


def test_a_row_with_no_token_and_no_matching_env_key_is_shown_not_probed(tmp_path):
    home = home_with(tmp_path, env={"OPENROUTER_API_KEY": "sk-or-live"},
                     auth={"credential_pool": {"openrouter": [
                         {"id": "gone", "label": "old", "source": "env:OPENROUTER_API_KEY_9",
                          "secret_fingerprint": "sha256:0000000000000000"}]}})
    got = accounts("openrouter", home)
    assert [(a.id, a.verdict and a.verdict[1]) for a in got] == [("gone", "no_credentials"),
                                                                 ("env:OPENROUTER_API_KEY", None)]


@pytest.mark.parametrize("raw,expected", [
    ("  work\taccount\n(team) ", "work account (team)"),
    ("bell\x07and\x1bescape", "bell and escape"),
    ("word " * 1000, ("word " * 13).strip()),                 # 5,000 characters: cut to 64
    ("x" * 5000, "Account 3"),                                 # looks like a secret
    ("sk-or-v1-0123456789abcdefABCDEF", "Account 3"),
    ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig", "Account 3"),  # a JWT
    ("me+sk-or-live1", "Account 3"),                           # holds a secret of the home
    (None, "Account 3"), (42, "Account 3"), ("   ", "Account 3"),
])
def test_labels(raw, expected):
    assert clean_label(raw, 3, {"sk-or-live1"}) == expected
    assert len(clean_label(raw, 3, set())) <= 64


HOUR = 3600.0


@pytest.mark.parametrize("fields,sole,until", [
    ({"last_error_reset_at": NOW + 10}, False, NOW + 10),
    ({"last_error_reset_at": (NOW + 10) * 1000}, False, NOW + 10),          # epoch ms
    ({"last_error_reset_at": "2027-01-15T08:00:00Z"}, False,
     datetime(2027, 1, 15, 8, tzinfo=timezone.utc).timestamp()),
    ({"last_error_reset_at": "soon", "last_status_at": NOW, "last_error_code": 429}, False, NOW + HOUR),  # garbage
    ({"last_error_reset_at": -5, "last_status_at": NOW, "last_error_code": 429}, True, NOW + 60),
    ({"last_status_at": NOW, "last_error_code": 401}, True, NOW + 300),
    ({"last_status_at": NOW, "last_error_code": 429}, True, NOW + 60),      # the only account not dead
    ({"last_status_at": NOW, "last_error_code": 402}, True, NOW + HOUR),    # billing: no short bench
    ({"last_status_at": NOW, "last_error_code": 429, "failure_reason": "billing"}, True, NOW + HOUR),
    ({"last_status_at": NOW, "last_error_code": 403, "failure_reason": "billing_unverified"}, False, NOW + 60),
    ({"last_status_at": NOW, "last_error_code": 402, "failure_reason": "billing_unverified"}, False, NOW + HOUR),
    ({"last_status_at": str(NOW * 1000)}, False, NOW + HOUR),
    ({}, False, None),
])
def test_hermes_cooldown(fields, sole, until):
    assert cooldown_until({"last_status": "exhausted", **fields}, sole) == until


def test_statuses_dead_cooling_sole_and_expired(tmp_path):
    valid, expired = jwt("acct-1", "user-1", exp=NOW + 3600), jwt("acct-2", "user-2", exp=NOW - 1)
    home = home_with(tmp_path, auth={
        "providers": {"openai-codex": {"tokens": {"access_token": expired, "account_id": "acct-2"}}},
        "credential_pool": {"openai-codex": [
            row("dead1", jwt("acct-3", "user-3"), last_status="dead", last_status_at=NOW - 10),
            row("cool1", valid, last_status="exhausted", last_status_at=NOW - 30, last_error_code=429),
            row("ok1", jwt("acct-4", "user-4"), last_status="exhausted"),   # no time at all: usable again
        ]}})
    got = {a.id: a for a in accounts("openai-codex", home)}
    assert list(got) == ["dead1", "cool1", "ok1", "auth.json:providers.openai-codex"]
    assert got["dead1"].verdict[0] == "dead"
    # three accounts not dead: no 60 s "sole" bench, the 429's hour holds
    assert got["cool1"].verdict[0] == "exhausted" and got["cool1"].retry_after == NOW - 30 + HOUR
    assert got["ok1"].verdict is None
    assert got["auth.json:providers.openai-codex"].verdict[1] == "token_expired"


def test_codex_one_account_per_jwt_identity(tmp_path):
    login = jwt("ws-1", "alice")
    device_row = jwt("ws-1", "alice", marker="x")          # another token of the same login
    colleague = jwt("ws-1", "bob")                         # same workspace, own quota
    home = home_with(tmp_path, auth={
        "providers": {"openai-codex": {"tokens": {"access_token": login}}},
        "credential_pool": {"openai-codex": [row("dev", device_row, source="device_code"),
                                             row("bob", colleague)]}})
    assert [a.id for a in accounts("openai-codex", home)] == ["dev", "bob"]


def test_a_profile_without_rows_borrows_the_roots_read_only(tmp_path):
    root = home_with(tmp_path, name="root", auth={"credential_pool": {"openrouter": [row("r1", "sk-or-root")]}})
    borrowing = home_with(root / "profiles", name="work", env={"OPENROUTER_API_KEY": "sk-or-own"})
    owning = home_with(root / "profiles", name="own",
                       auth={"credential_pool": {"openrouter": [row("p1", "sk-or-profile")]}})
    assert [a.id for a in accounts("openrouter", borrowing)] == ["r1", "env:OPENROUTER_API_KEY"]
    assert [a.id for a in accounts("openrouter", owning)] == ["p1"]
    before = (root / "auth.json").read_bytes()
    accounts("openrouter", borrowing)
    assert (root / "auth.json").read_bytes() == before


def test_nous_agent_key_copilot_env_rows_and_classic_tokens(tmp_path):
    home = home_with(tmp_path, env={"GH_TOKEN": "gho_real", "GITHUB_TOKEN": "ghp_classic"},
                     auth={"credential_pool": {
                         "nous": [row("n1", "nous-access", agent_key="nous-agent", auth_type="oauth")],
                         "copilot": [{"id": "c1", "label": "GH_TOKEN", "source": "env:GH_TOKEN",
                                      "access_token": "tid=exchanged-copilot-token"},
                                     row("c2", "ghp_classic2")]}})
    assert [(a.id, a.token) for a in accounts("nous", home)] == [("n1", "nous-agent")]
    assert [(a.id, a.token) for a in accounts("copilot", home)] == [("c1", "gho_real")]


# -- through real workers ---------------------------------------------------------------------
def write_auth(home: Path, auth: dict) -> None:
    tmp = home / "auth.json.tmp"
    tmp.write_text(json.dumps(auth))
    os.replace(tmp, home / "auth.json")


def codex_home(tmp_path: Path, rows: list[dict], providers_token: str | None = None, name: str = "h") -> Path:
    auth: dict = {"credential_pool": {"openai-codex": rows}}
    if providers_token:
        auth["providers"] = {"openai-codex": {"tokens": {"access_token": providers_token}}}
    return home_with(tmp_path, auth=auth, name=name)


def by_id(snap) -> dict:
    return {a.id: a for a in snap.accounts}


def test_every_account_probed_once_with_its_own_token_cooling_and_dead_ones_shown_not_asked(
        tmp_path, emulator, make_service):
    now = time.time()
    tokens = {name: jwt(f"ws-{name}", name, marker=f"-{name}") for name in ("dead", "cool", "good", "401", "login")}
    tokens["401"] = jwt("ws-401", "x", marker="-401-")
    home = codex_home(tmp_path, [
        row("dead", tokens["dead"], last_status="dead"),                       # first in file order
        row("cool", tokens["cool"], last_status="exhausted", last_error_reset_at=now + 600),
        row("good", tokens["good"]),
        row("bad", tokens["401"]),
    ], providers_token=tokens["login"])
    service = make_service(pool_size=1)
    snap = service.fetch("openai-codex", home=home)
    got = by_id(snap)
    assert [a.status for a in snap.accounts] == ["dead", "exhausted", "available", "unavailable", "available"]
    assert got["bad"].error.code == "unauthorized" and got["auth.json:providers.openai-codex"].available
    assert got["cool"].retry_after is not None and got["dead"].error.code == "unauthorized"
    assert snap.available and snap.error is None and snap.pool.total == 5
    assert (snap.pool.available, snap.pool.exhausted, snap.pool.dead, snap.pool.failed, snap.pool.queried) == \
        (2, 1, 1, 1, 2)
    assert snap.details[0] == "2/5 accounts available"
    assert all(w.detail == "Best of 2 accounts" for w in snap.windows)
    assert snap.pool.next_account.id in ("good", "auth.json:providers.openai-codex")
    for name in ("dead", "cool"):
        assert emulator.count(token=tokens[name]) == 0
    for name in ("good", "401", "login"):
        assert emulator.count(token=tokens[name]) == 1
    assert "@example.com" not in json.dumps(service.stats())   # labels stay out of stats


def test_one_account_is_the_snapshot_as_before_plus_a_one_element_accounts(make_home, make_service):
    home = make_home("one", openrouter="sk-or-one")
    snap = make_service(pool_size=1).fetch("openrouter", home=home)
    assert snap.available and snap.pool is None and len(snap.accounts) == 1
    account = snap.accounts[0]
    assert (account.id, account.label, account.status) == ("env:OPENROUTER_API_KEY", "env:OPENROUTER_API_KEY",
                                                           "available")
    assert account.details == snap.details and account.fetched_at == snap.fetched_at


def test_a_429_backs_off_that_account_only_and_shows_its_last_good_reading_stale(tmp_path, emulator, make_service):
    limited, fine = jwt("ws-a", "a", marker="-lim"), jwt("ws-b", "b", marker="-fine")
    home = codex_home(tmp_path, [row("lim", limited), row("fine", fine)])
    service = make_service(pool_size=1, cache_ttl_s=0.01)
    first = service.fetch("openai-codex", home=home)
    assert all(a.available for a in first.accounts)
    emulator.script(limited, {"error": "slow down"}, status=429, headers={"Retry-After": "120"})  # token of this test
    second = service.fetch("openai-codex", home=home, refresh=True)
    lim = by_id(second)["lim"]
    assert lim.stale and lim.error.code == "rate_limited" and lim.windows == by_id(first)["lim"].windows
    assert second.available and second.error is None and not by_id(second)["fine"].stale
    asked = emulator.count(token=limited), emulator.count(token=fine)
    third = service.fetch("openai-codex", home=home, refresh=True)   # lim is backing off: skipped
    assert (emulator.count(token=limited), emulator.count(token=fine)) == (asked[0], asked[1] + 1)
    assert by_id(third)["lim"].stale and by_id(third)["lim"].error.code == "rate_limited"


def test_every_account_cooling_makes_no_request_and_says_when_one_frees_up(tmp_path, emulator, make_service):
    now = time.time()
    a, b = jwt("ws-a", "a", marker="-ca"), jwt("ws-b", "b", marker="-cb")
    home = codex_home(tmp_path, [
        row("a", a, last_status="exhausted", last_error_reset_at=now + 900, last_error_code=429),
        row("b", b, last_status="exhausted", last_status_at=now - 10, last_error_code=429)])   # 3600 s
    snap = make_service(pool_size=1).fetch("openai-codex", home=home)
    assert emulator.count(token=a) == emulator.count(token=b) == 0
    assert not snap.available and snap.error.code == "rate_limited" and snap.pool.queried == 0
    assert snap.pool.next_reset_at == by_id(snap)["a"].retry_after
    assert "next try in" not in snap.error.message


def test_a_sole_account_cools_for_60_s_and_no_back_off_message(tmp_path, emulator, make_service):
    token = jwt("ws-s", "s", marker="-sole")
    since = time.time() - 30
    home = codex_home(tmp_path, [row("s", token, last_status="exhausted", last_status_at=since,
                                     last_error_code=429)])
    service = make_service(pool_size=1)
    snap = service.fetch("openai-codex", home=home)
    assert snap.pool is None and snap.accounts[0].status == "exhausted" and emulator.count(token=token) == 0
    assert "next try in" not in snap.error.message
    retry = datetime.fromisoformat(snap.accounts[0].retry_after.replace("Z", "+00:00")).timestamp()
    assert abs(retry - (since + 60)) < 1.5    # last_status_at + 60 s: the only account, not billing
    write_auth(home, {"credential_pool": {"openai-codex": [row("s", token, last_status="exhausted",
                                                                 last_status_at=time.time() - 61,
                                                                 last_error_code=429)]}})
    again = service.fetch("openai-codex", home=home)
    assert again.available and emulator.count(token=token) == 1


def test_fifty_accounts_all_shown_probes_bounded(tmp_path, emulator, make_service):
    tokens = [f"sk-or-fifty-{i}-slow150-" for i in range(50)]
    home = home_with(tmp_path, auth={"credential_pool": {"openrouter": [row(f"r{i}", t) for i, t in
                                                                        enumerate(tokens)]}})
    snap = make_service(pool_size=1).fetch("openrouter", home=home, timeout=60)
    assert len(snap.accounts) == 50 and snap.pool.queried == 50
    arrivals = sorted(r.at for r in emulator.requests() if r.token in tokens and r.path.endswith("/credits"))
    assert len(arrivals) == 50
    # at most MAX_PARALLEL in flight: a 9th credits request can only start after one ended
    assert max(sum(1 for t in arrivals if start <= t < start + 0.15) for start in arrivals) <= MAX_PARALLEL


def test_a_pool_row_added_or_removed_while_running_is_a_credential_change(tmp_path, emulator, make_service):
    a, b = jwt("ws-a", "a", marker="-add-a"), jwt("ws-b", "b", marker="-add-b")
    home = codex_home(tmp_path, [row("a", a)])
    service = make_service(pool_size=1)
    assert [x.id for x in service.fetch("openai-codex", home=home).accounts] == ["a"]
    write_auth(home, {"credential_pool": {"openai-codex": [row("a", a), row("b", b)]}})
    assert [x.id for x in service.fetch("openai-codex", home=home).accounts] == ["a", "b"]
    write_auth(home, {"credential_pool": {"openai-codex": [row("b", b)]}})
    assert [x.id for x in service.fetch("openai-codex", home=home).accounts] == ["b"]


def test_fetch_one_account_reads_that_account_only(tmp_path, emulator, make_service):
    a, b = jwt("ws-a", "a", marker="-one-a"), jwt("ws-b", "b", marker="-one-b")
    home = codex_home(tmp_path, [row("a", a), row("b", b)])
    service = make_service(pool_size=1)
    snap = service.fetch("openai-codex", home=home, account="b")
    assert [x.id for x in snap.accounts] == ["b"] and snap.pool is None and snap.available
    assert (emulator.count(token=a), emulator.count(token=b)) == (0, 1)
    with pytest.raises(ValueError):
        service.fetch("openai-codex", home=home, account="nope")
    with pytest.raises(ValueError):
        service.fetch("openai-codex", home=home, account="")
    import asyncio

    again = asyncio.run(service.afetch("openai-codex", home=home, account="a", refresh=True))
    assert [x.id for x in again.accounts] == ["a"] and emulator.count(token=a) == 1
    with pytest.raises(ValueError):
        asyncio.run(service.afetch("openai-codex", home=home, account="nope"))


def test_found_on_realistic_homes_env_api_key_and_pool_oauth_are_both_accounts(tmp_path, emulator, make_service):
    oauth = "sk-ant-oat01-pooled-login"
    home = home_with(tmp_path, env={"ANTHROPIC_API_KEY": "sk-ant-api03-plain-key"},
                     auth={"credential_pool": {"anthropic": [
                         row("t1", oauth, auth_type="oauth", source="manual:hermes_pkce",
                             expires_at_ms=(time.time() + 3600) * 1000)]}})
    snap = make_service(pool_size=1).fetch("anthropic", home=home)
    got = by_id(snap)
    assert list(got) == ["t1", "env:ANTHROPIC_API_KEY"]
    assert got["t1"].available and got["env:ANTHROPIC_API_KEY"].unavailable_reason
    assert snap.available and snap.pool.next_account.id == "t1"


def test_found_on_realistic_homes_an_expired_codex_login_beside_a_valid_pool_row(tmp_path, emulator, make_service):
    expired = jwt("ws-old", "old", exp=time.time() - 60, marker="-expired")
    valid = jwt("ws-new", "new", exp=time.time() + 3600, marker="-valid")
    home = codex_home(tmp_path, [row("new", valid)], providers_token=expired)
    snap = make_service(pool_size=1).fetch("openai-codex", home=home)
    got = by_id(snap)
    assert got["new"].available and got["auth.json:providers.openai-codex"].error.code == "token_expired"
    assert snap.available and emulator.count(token=expired) == 0


def test_a_label_that_is_a_token_is_never_shown(tmp_path, make_service):
    token = "sk-or-v1-secret-label-0123456789"
    home = home_with(tmp_path, auth={"credential_pool": {"openrouter": [
        {**row("x", token), "label": token}, {**row("y", "sk-or-other"), "label": "ctl\x00\x1b[31m" + "a " * 2500}]}})
    snap = make_service(pool_size=1).fetch("openrouter", home=home)
    text = json.dumps(snap.to_dict())
    assert token not in text and by_id(snap)["x"].label == "Account 1"
    assert len(by_id(snap)["y"].label) <= 64 and by_id(snap)["y"].label.isprintable()


def test_a_home_read_probes_every_account_of_every_provider_in_one_request(tmp_path, emulator, make_service):
    a, b = jwt("ws-a", "a", marker="-home-a"), jwt("ws-b", "b", marker="-home-b")
    home = home_with(tmp_path, env={"OPENROUTER_API_KEY": "sk-or-home1", "OPENROUTER_API_KEY_2": "sk-or-home2"},
                     auth={"credential_pool": {"openai-codex": [row("a", a), row("b", b)]}})
    service = make_service(pool_size=1)
    snaps = {s.provider: s for s in service.fetch_home(home=home)}
    assert [len(snaps[p].accounts) for p in ("openai-codex", "openrouter")] == [2, 2]
    assert service.stats()["home_reads"] == 1 and service.stats()["spawns"] == 1
    assert all(x.available for s in snaps.values() for x in s.accounts)


def test_accounts_queued_behind_the_bound_share_the_requests_deadline_the_worker_is_not_killed(
        tmp_path, emulator, make_service):
    """8 accounts that never answer hold every slot until the request's time is up; the 8
    queued behind them get what is left of it (nothing), not a fresh timeout each: the
    worker answers before the parent's deadline and stays warm."""
    tokens = [jwt(f"ws-q{i}", f"q{i}", marker=f"-hang-q{i}") for i in range(2 * MAX_PARALLEL)]
    home = codex_home(tmp_path, [row(f"q{i}", t) for i, t in enumerate(tokens)])
    service = make_service(pool_size=1)
    snap = service.fetch("openai-codex", home=home, timeout=10)   # the child's share: 8.95 s
    assert len(snap.accounts) == 2 * MAX_PARALLEL
    assert all(a.error is not None and a.error.code == "timeout" for a in snap.accounts)
    assert sum(emulator.count(token=t) for t in tokens) <= MAX_PARALLEL   # the queued ones were never sent
    assert service.stats()["kills"] == 0   # the worker answered in time: it stays warm


def test_a_hermes_root_as_hermes_writes_it(emulator, tmp_path, make_service):
    """tests/hermes_homes.py: the Codex login and its device_code row are one account, the
    second Codex login is exhausted (reset in epoch ms) and not asked, the stripped
    ``env:ANTHROPIC_TOKEN`` row is the .env token's account, ``claude_code`` / ``gh_cli``
    rows are not the home's, OpenRouter's billing-exhausted key is shown, Nous is one account
    probed with its agent_key; the work profile has its own Anthropic row."""
    from hermes_homes import build_hermes_root

    root = build_hermes_root(tmp_path, messy=frozenset())
    service = make_service(pool_size=1)
    snaps = {s.provider: s for s in service.fetch_home(home=root.home())}
    ids = {name: [(a.id, a.status) for a in snaps[name].accounts]
           for name in ("openai-codex", "anthropic", "openrouter", "nous")}
    assert ids == {"openai-codex": [("a1b2c3", "available"), ("d4e5f6", "exhausted")],
                   "anthropic": [("0c1d2e", "available"), ("3f4a5b", "available")],
                   "openrouter": [("9e0f1a", "available"), ("2b3c4d", "exhausted")],
                   "nous": [("8b9c0d", "available")]}
    assert snaps["openai-codex"].pool.next_account.id == "a1b2c3"
    assert emulator.count(token=root.tokens["default"]["nous"]) >= 1
    second = json.loads((root.home() / "auth.json").read_text())["credential_pool"]["openai-codex"][1]
    assert emulator.count(token=second["access_token"]) == 0
    work = {s.provider: s for s in service.fetch_home(home=root.home("work"))}
    assert [a.source for a in work["anthropic"].accounts] == ["env:CLAUDE_CODE_OAUTH_TOKEN"]


def test_a_pool_only_providers_sole_entry_cools_for_60_s_and_no_back_off_message(tmp_path, make_service):
    """Found on a realistic home: an ``xai`` card (Hermes' records, no request) held its
    only key for an hour instead of Hermes' 60 s, then said "next try in 591 s"."""
    now = time.time()
    home = home_with(tmp_path, auth={"credential_pool": {"xai": [
        row("x1", "xai-key-one", last_status="exhausted", last_status_at=now - 30, last_error_code=429)]}})
    service = make_service(pool_size=1)
    first = service.fetch_home(home=home)[0]
    assert first.provider == "xai" and first.error.code == "rate_limited"
    from workers.providers.credential_pool import clock

    assert clock(now + 30, now) in first.error.message and "next try in" not in first.error.message
    again = service.fetch_home(home=home)[0]
    assert "next try in" not in again.error.message and again.error.message == first.error.message


def test_a_rotation_forgets_the_per_account_back_off_and_readings(tmp_path, emulator, make_service):
    limited, fine = jwt("ws-r1", "r1", marker="-rot-lim"), jwt("ws-r2", "r2", marker="-rot-fine")
    emulator.script(limited, {"error": "slow down"}, status=429, headers={"Retry-After": "300"})
    home = codex_home(tmp_path, [row("lim", limited), row("fine", fine)])
    service = make_service(pool_size=1)
    first = service.fetch("openai-codex", home=home)
    assert by_id(first)["lim"].error.code == "rate_limited" and not by_id(first)["lim"].stale   # no good reading
    service.fetch("openai-codex", home=home, refresh=True)
    assert emulator.count(token=limited) == 1            # backing off: skipped
    service.invalidate(home=home)
    service.fetch("openai-codex", home=home, refresh=True)
    assert emulator.count(token=limited) == 2            # a rotation starts it afresh


def test_a_home_read_tells_the_worker_which_accounts_to_skip(tmp_path, emulator, make_service):
    limited, fine = jwt("ws-h1", "h1", marker="-hr-lim"), jwt("ws-h2", "h2", marker="-hr-fine")
    emulator.script(limited, {"error": "slow down"}, status=429, headers={"Retry-After": "300"})
    home = home_with(tmp_path, env={"OPENROUTER_API_KEY": "sk-or-hr-skip"},
                     auth={"credential_pool": {"openai-codex": [row("lim", limited), row("fine", fine)]}})
    service = make_service(pool_size=1)
    service.fetch_home(home=home)
    snaps = {s.provider: s for s in service.fetch_home(home=home, refresh=True)}
    assert (emulator.count(token=limited), emulator.count(token=fine)) == (1, 2)
    lim = by_id(snaps["openai-codex"])["lim"]
    assert lim.error.code == "rate_limited" and "next try in" in lim.error.message   # it did answer 429
    assert snaps["openai-codex"].available and snaps["openrouter"].available
    assert service.stats()["home_reads"] == 2


def test_the_digest_is_the_account_set_bookkeeping_rotates_nothing_a_relogin_does(tmp_path, emulator, make_service):
    from hermes_homes import bookkeeping_write

    a, b, b2 = (jwt(f"ws-d{i}", f"d{i}", marker=f"-dig{i}") for i in range(3))
    home = codex_home(tmp_path, [row("a", a, last_status="ok"), row("b", b, last_status="ok")])
    service = make_service(pool_size=1)
    service.fetch_home(home=home)    # listed: the digests of what it holds are known
    bookkeeping_write(home)          # request_count, last_status_at, priorities re-sorted
    again = service.fetch("openai-codex", home=home)
    assert again.probe.path == "cache" and (emulator.count(token=a), emulator.count(token=b)) == (1, 1)
    data = json.loads((home / "auth.json").read_text())
    for entry in data["credential_pool"]["openai-codex"]:
        if entry["id"] == "b":
            entry["access_token"] = b2   # account b signed in again
    write_auth(home, data)
    relogged = service.fetch("openai-codex", home=home)
    assert relogged.probe.path != "cache" and emulator.count(token=b2) == 1


def test_a_row_added_to_the_roots_pool_reaches_a_profile_that_borrows_it(tmp_path, emulator, make_service):
    one, two = "sk-or-root-one", "sk-or-root-two"
    root = home_with(tmp_path, name="root", auth={"credential_pool": {"openrouter": [row("r1", one)]}})
    profile = home_with(root / "profiles", name="work", env={"DEEPSEEK_API_KEY": "sk-ds-work",
                                                             "OPENROUTER_API_KEY": "sk-or-work-own"})
    service = make_service(pool_size=1)
    snaps = {s.provider: s for s in service.fetch_home(home=profile)}
    assert [a.id for a in snaps["openrouter"].accounts] == ["r1", "env:OPENROUTER_API_KEY"]
    write_auth(root, {"credential_pool": {"openrouter": [row("r1", one), row("r2", two)]}})
    snaps = {s.provider: s for s in service.fetch_home(home=profile)}
    assert [a.id for a in snaps["openrouter"].accounts] == ["r1", "r2", "env:OPENROUTER_API_KEY"]
    assert emulator.count(token=two) >= 1
    assert snaps["deepseek"].probe.path == "cache"   # only the provider whose accounts changed rotated


def test_no_label_and_no_token_in_any_log_line(tmp_path, emulator, make_service, caplog, capfd):
    """Labels are personal data (often e-mail addresses): shown in the snapshot, never
    logged -- by the service or by its workers (whose stderr is this test's)."""
    import logging

    label, bad, good = "alice.private@example.com", jwt("ws-l1", "l1", marker="-401-"), jwt("ws-l2", "l2")
    home = codex_home(tmp_path, [{**row("l1", bad), "label": label}, {**row("l2", good), "label": "x" * 5000},
                                 {"not": "a row"}, 42, {**row("l3", None), "priority": "high"}])
    caplog.set_level(logging.DEBUG)
    with make_service(pool_size=1) as service:
        snap = service.fetch("openai-codex", home=home)
        service.fetch_home(home=home, refresh=True)
    assert by_id(snap)["l1"].label == label and by_id(snap)["l1"].error.code == "unauthorized"
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        assert label not in text and bad not in text and good not in text


@pytest.mark.parametrize("provider, token", [("openrouter", "sk-or-stale"), ("anthropic", "sk-ant-oat-stale")])
def test_a_stale_reading_of_one_account_is_the_last_good_one_source_title_and_all(
        make_home, emulator, make_service, provider, token):
    """A transient failure of a one-account provider answers with its last good reading:
    the snapshot's own fields (source, title, plan, windows, balances) are that reading's,
    not the failed probe's nulls -- in its JSON (the HTTP body) too."""
    home = make_home("stale", **{provider: token})
    service = make_service(pool_size=1, cache_ttl_s=0.01)
    good = service.fetch(provider, home=home)
    assert good.available and good.source and good.title
    emulator.script(token, {"error": "upstream down"}, status=503)
    stale = service.fetch(provider, home=home, refresh=True)
    assert stale.stale and stale.error.code == "provider_error" and stale.available
    want, got = good.to_dict(), stale.to_dict()
    for part in ("source", "title", "plan", "windows", "balances", "details", "fetched_at"):
        assert got[part] == want[part], part
    assert got["accounts"][0]["stale"] and got["accounts"][0]["windows"] == want["accounts"][0]["windows"]


def test_a_pool_whose_first_account_fails_still_names_its_source_and_title(tmp_path, emulator, make_service):
    """The snapshot's own source and title come from an account that answered, not from a
    failed one's nulls."""
    failing, fine = jwt("ws-f", "f", marker="-fail"), jwt("ws-g", "g", marker="-good")
    home = codex_home(tmp_path, [row("first", failing), row("second", fine)])
    service = make_service(pool_size=1)
    emulator.script(failing, {"error": "upstream down"}, status=503)
    snap = service.fetch("openai-codex", home=home)
    assert by_id(snap)["first"].error.code == "provider_error" and by_id(snap)["second"].available
    assert snap.available and snap.source and snap.title


def test_an_account_whose_cooldown_ends_is_probed_while_another_backs_off(tmp_path, emulator, make_service):
    """One account backs off after a 429 while Hermes' records cool the other down: once
    Hermes clears the cooldown (a bookkeeping write: no rotation), the next read asks the
    worker, which probes the now-due account and still skips the one backing off."""
    limited, cooling = jwt("ws-c1", "c1", marker="-cd-lim"), jwt("ws-c2", "c2", marker="-cd-cool")
    emulator.script(limited, {"error": "slow down"}, status=429, headers={"Retry-After": "300"})
    rows = [row("lim", limited), row("cool", cooling, last_status="exhausted", last_error_reset_at=time.time() + 900)]
    home = codex_home(tmp_path, rows)
    service = make_service(pool_size=1, cache_ttl_s=0.01)
    first = {s.provider: s for s in service.fetch_home(home=home)}["openai-codex"]   # listed: digests known
    assert [a.status for a in first.accounts] == ["unavailable", "exhausted"] and emulator.count(token=cooling) == 0
    rows[1].update(last_status="ok", last_error_reset_at=None)
    write_auth(home, {"credential_pool": {"openai-codex": rows}})
    second = service.fetch("openai-codex", home=home, refresh=True)
    assert by_id(second)["cool"].available and emulator.count(token=cooling) == 1
    assert emulator.count(token=limited) == 1          # still backing off: skipped


@pytest.mark.parametrize("pool", [[], "rows", {"openrouter": {"id": "x"}}, {"openrouter": "x"}, {"openrouter": None},
                                  {"openrouter": [None, [], "x", {"id": 5, "access_token": 7, "priority": [1]}]}])
def test_a_malformed_pool_never_fails_the_read_the_env_key_is_still_an_account(tmp_path, pool):
    home = home_with(tmp_path, env={"OPENROUTER_API_KEY": "sk-or-still-here"}, auth={"credential_pool": pool})
    got = accounts("openrouter", home)
    assert [a.id for a in got if a.verdict is None] == ["env:OPENROUTER_API_KEY"]


def test_a_profile_with_no_credential_of_its_own_lists_what_it_borrows_from_the_root(emulator, tmp_path,
                                                                                    make_service):
    """SPEC §18 / PROVIDERS.md "Accounts": Hermes uses the root's rows for a provider with
    none in the profile's pool, so the profile has that provider -- listed, and probed with
    the root's token, read-only."""
    import json as json_

    root = tmp_path / "hermes-borrow"
    profile = root / "profiles" / "fresh"
    profile.mkdir(parents=True)
    token = "sk-or-v1-borrowed-from-root"
    auth = {"credential_pool": {"openrouter": [{"id": "0a0b0c", "label": "team key", "source": "manual",
                                                "auth_type": "api_key", "priority": 0, "access_token": token}]}}
    (root / "auth.json").write_text(json_.dumps(auth))
    before = (root / "auth.json").read_bytes()
    service = make_service(pool_size=1)
    [snap] = service.fetch_home(home=profile)
    assert snap.provider == "openrouter" and snap.available, snap
    assert [a.id for a in snap.accounts] == ["0a0b0c"]
    assert emulator.count(token=token) >= 1 and (root / "auth.json").read_bytes() == before


def test_a_profiles_borrowed_provider_survives_the_roots_auth_json_breaking_and_coming_back(emulator, tmp_path,
                                                                                          make_service):
    """A borrowed provider is a credential like the profile's own: the root's ``auth.json``
    emptied (a write cut short) keeps its card (unknown, not gone), and the file back lists it
    again -- it was once listed ``unreadable`` and narrowed away for the service's lifetime
    (``probe serve``: the work profile lost its Codex, OpenRouter and Nous cards for good)."""
    import json as json_

    root = tmp_path / "hermes-borrow-break"
    profile = root / "profiles" / "work"
    profile.mkdir(parents=True)
    (profile / ".env").write_text("DEEPSEEK_API_KEY=sk-profile-own\n")
    auth = {"credential_pool": {"openrouter": [{"id": "0a0b0c", "label": "team key", "source": "manual",
                                                "auth_type": "api_key", "priority": 0,
                                                "access_token": "sk-or-v1-borrowed-break"}]}}
    good = json_.dumps(auth)
    (root / "auth.json").write_text(good)
    service = make_service(pool_size=1)

    def listed() -> list[str]:
        return [snap.provider for snap in service.fetch_home(home=profile)]

    assert listed() == ["openrouter", "deepseek"]
    assert not service.home_providers(profile).unreadable          # borrowed is not "unreadable"
    (root / "auth.json").write_text("")
    assert "openrouter" in listed()                                 # hidden by no bad root file
    [borrowed] = [snap for snap in service.fetch_home(home=profile, refresh=True) if snap.provider == "openrouter"]
    assert borrowed.error is not None and borrowed.error.code == "credentials_unreadable", borrowed
    assert borrowed.error.message.startswith("The Hermes root's auth.json could not be read") and borrowed.stale
    (root / "auth.json").write_text(good + " ")
    assert listed() == ["openrouter", "deepseek"]

