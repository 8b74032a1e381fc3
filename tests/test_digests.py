"""Credential digests (issue #25, SPEC §6): Hermes' bookkeeping writes to ``auth.json``
rotate nothing; only a provider whose credentials changed is rotated.

The child's digest (``workers.digest``) is checked on real files; the service's behaviour
with a real worker pool and the built-in emulator, counting provider requests at the
emulator and process starts in ``stats()``.
"""
from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from hermes_homes import bookkeeping_write, build_hermes_root
from probe.home_list import parse_listing
from probe.monitor.readings import Reader
from probe.pool.worker import WorkerProtocolError
from support import settled, worker_pids
from workers.credentials import load_home
from workers.digest import provider_digest
from workers.listing import home_listing
from workers.providers import load

pytestmark = pytest.mark.timeout(120)

ORDER = ["anthropic", "openai-codex", "openrouter", "deepseek"]


def digests(home: Path) -> dict[str, str | None]:
    return home_listing(load_home(home))["digests"]


def row(row_id: str, token: str, **fields) -> dict:
    """A pool row as Hermes writes it (PROVIDERS.md "Accounts")."""
    return {"id": row_id, "label": f"key-{row_id}", "auth_type": "api_key", "priority": 0, "source": "manual",
            "access_token": token, "last_status": "ok", "last_status_at": 1_790_000_000, "request_count": 3,
            **fields}


def pooled_home(make_home, name: str, tag: str) -> Path:
    """Four built-ins (the first read probes each once), plus Hermes' pool rows for two of
    them and a pool-only provider, so a bookkeeping write has rows to re-order."""
    home = make_home(name, anthropic=f"sk-ant-oat-{tag}", codex=f"codex-{tag}", openrouter=f"sk-or-{tag}",
                     deepseek=f"sk-ds-{tag}")
    auth = json.loads((home / "auth.json").read_text())
    auth["credential_pool"] = {
        "anthropic": [row("a1", f"sk-ant-oat-{tag}"), row("a2", f"sk-ant-oat-{tag}-second", priority=1)],
        "openai-codex": [row("c1", f"codex-{tag}")],
        "xai": [row("x1", f"xai-{tag}-1"), row("x2", f"xai-{tag}-2", last_status="exhausted",
                                                  last_error_code=429)],
    }
    (home / "auth.json").write_text(json.dumps(auth))
    return home


def rewrite_auth(home: Path, change) -> None:
    path = home / "auth.json"
    auth = json.loads(path.read_text())
    change(auth)
    path.write_text(json.dumps(auth))


def requests_for(emulator, tag: str) -> int:
    return sum(n for (path, token), n in emulator.counts().items() if token and tag in token)


# -- the child's digest ------------------------------------------------------------------------
def test_a_bookkeeping_write_changes_no_digest_in_a_hermes_root(tmp_path):
    """Every provider of a Hermes root as Hermes writes it (rows of every source, stripped
    env rows, Codex logins, pool-only ids), before and after Hermes' own bookkeeping write:
    the same digests -- and each a hash, never a token."""
    root = build_hermes_root(tmp_path, messy=frozenset())
    for profile in ("default", "work"):
        home = root.home(profile)
        before = digests(home)
        assert before and all(isinstance(d, str) and len(d) == 64 for d in before.values())
        bookkeeping_write(home)
        bookkeeping_write(home)
        assert digests(home) == before
        text = json.dumps(before)
        assert not any(token in text for token in root.tokens[profile].values())


def test_every_pool_row_counts_and_their_order_does_not(tmp_path, make_home):
    home = pooled_home(make_home, "rows", "r")
    anthropic = load("anthropic").module
    first = provider_digest(anthropic, load_home(home))

    def digest_after(change) -> str | None:
        rewrite_auth(home, change)
        return provider_digest(anthropic, load_home(home))

    assert digest_after(lambda a: a["credential_pool"]["anthropic"].reverse()) == first         # re-sorted
    assert digest_after(lambda a: a["credential_pool"]["anthropic"][0].update(
        priority=7, request_count=99, last_status="exhausted", last_status_at=1, last_error_code=429)) == first
    replaced = digest_after(lambda a: a["credential_pool"]["anthropic"][0].update(access_token="sk-ant-oat-r-new"))
    assert replaced != first                                                     # the second row's token, not the first
    removed = digest_after(lambda a: a["credential_pool"]["anthropic"].pop(0))
    assert removed not in (first, replaced)
    added = digest_after(lambda a: a["credential_pool"]["anthropic"].append(row("a3", "sk-ant-oat-r-third")))
    assert added not in (first, replaced, removed)


def test_a_numbered_env_key_is_an_account_of_its_own(make_home):
    """Hermes reads ``NAME_2``, ``NAME_3``… as further accounts: adding one changes the
    provider's digest (and no other's)."""
    home = pooled_home(make_home, "numbered", "num")
    before = digests(home)
    with (home / ".env").open("a") as env:
        env.write("OPENROUTER_API_KEY_2=sk-or-num-second\nDEEPSEEK_API_KEY_3=sk-ds-num-third\n")
    after = digests(home)
    assert after["openrouter"] != before["openrouter"]
    assert after["deepseek"] == before["deepseek"]            # _3 without a _2 is no account
    assert {p for p in after if after[p] != before[p]} == {"openrouter"}


def test_a_pool_only_digest_is_its_rows_not_their_statuses_or_tokens(make_home):
    home = pooled_home(make_home, "pool-only", "p")
    first = provider_digest("xai", load_home(home))
    rewrite_auth(home, lambda a: a["credential_pool"]["xai"][1].update(last_status="ok", request_count=50))
    rewrite_auth(home, lambda a: a["credential_pool"]["xai"][0].update(access_token="xai-refreshed"))
    assert provider_digest("xai", load_home(home)) == first   # a known row refreshed: its snapshot never shows tokens
    rewrite_auth(home, lambda a: a["credential_pool"]["xai"].append(row("x3", "xai-p-3")))
    grown = provider_digest("xai", load_home(home))
    rewrite_auth(home, lambda a: a["credential_pool"]["xai"].pop(0))
    assert len({first, grown, provider_digest("xai", load_home(home))}) == 3


def test_an_unreadable_file_makes_only_its_providers_unknown(make_home):
    home = pooled_home(make_home, "unreadable", "u")
    before = digests(home)
    good = (home / "auth.json").read_text()
    (home / "auth.json").write_text(good[:40])       # truncated mid-write
    during = digests(home)
    assert during["anthropic"] is None and during["openai-codex"] is None and "xai" not in during
    (home / "auth.json").write_text(good)
    env = (home / ".env").read_text()
    (home / ".env").unlink()
    (home / ".env").mkdir()                          # a .env that cannot be read at all
    during = digests(home)
    assert during["deepseek"] is None and during["anthropic"] is None
    assert during["openai-codex"] == before["openai-codex"] and during["xai"] == before["xai"]   # auth.json only
    (home / ".env").rmdir()
    (home / ".env").write_text(env)
    assert digests(home) == before


def test_a_plugin_without_credentials_digests_env_values_and_secrets_only(make_home):
    home = pooled_home(make_home, "undeclared", "d")
    plugin = types.SimpleNamespace()      # a plugin module that declares no CREDENTIALS
    first = provider_digest(plugin, load_home(home))
    bookkeeping_write(home)
    assert provider_digest(plugin, load_home(home)) == first
    with (home / ".env").open("a") as env:
        env.write("EXAMPLE_API_KEY=sk-example\n")
    assert provider_digest(plugin, load_home(home)) != first


def test_the_parent_refuses_malformed_digests():
    reply = {"providers": ["deepseek"], "pool_only": [], "undeclared": []}
    assert parse_listing({**reply, "digests": {"deepseek": "a" * 64}}).digests == {"deepseek": "a" * 64}
    assert parse_listing(reply).digests == {"deepseek": None}      # none sent: unknown, nothing rotates
    for bad in ({"deepseek": "sk-ds-plain-token"}, {"deepseek": 5}, ["a" * 64], {"Not A Name": "a" * 64}):
        with pytest.raises(WorkerProtocolError):
            parse_listing({**reply, "digests": bad})


# -- the service --------------------------------------------------------------------------------
def ten_polls(service, home: Path, *, writes: bool) -> list[list]:
    polls = []
    for _ in range(10):
        if writes:
            bookkeeping_write(home)
        polls.append(service.fetch_home(home=home))
    return polls


def test_ten_polls_with_a_bookkeeping_write_before_each_cost_what_ten_polls_without_do(
        make_service, make_home, emulator):
    """Issue #25's target: 10 polls of a 4-provider home (plus a pool-only id) with a
    Hermes bookkeeping write before each cost the provider requests and process starts of
    the same 10 polls without the writes -- 0 and 0 after the first read -- and at most one
    digest request per write. 0.3 made 80 requests and 10 starts."""
    figures = {}
    for writes in (False, True):
        tag = "busy" if writes else "quiet"
        home = pooled_home(make_home, tag, tag)
        service = make_service(pool_size=2)
        first = service.fetch_home(home=home)
        assert [s.provider for s in first] == [*ORDER, "xai"] and all(s.error is None for s in first[:4])
        requests, stats, pids = requests_for(emulator, tag), service.stats(), worker_pids(service, home)
        polls = ten_polls(service, home, writes=writes)
        after = service.stats()
        figures[tag] = (requests_for(emulator, tag) - requests, after["spawns"] - stats["spawns"])
        assert all(s.probe.path == "cache" and s.error is None for poll in polls for s in poll[:4]), polls[-1]
        assert after["credential_rotations"] == 0 and worker_pids(service, home) == pids
        assert after["homes"][str(home.resolve())]["generation"] == stats["homes"][str(home.resolve())]["generation"]
        if writes:
            assert after["provider_lists"] - stats["provider_lists"] <= 10      # one digest request per write
    assert figures["busy"] == figures["quiet"] == (0, 0)


def test_a_new_token_rotates_exactly_that_provider(make_service, make_home, emulator):
    home = settled(pooled_home(make_home, "new-token", "newtok"))
    service = make_service(pool_size=1)
    service.fetch_home(home=home)
    pids = worker_pids(service, home)
    env = home / ".env"
    env.write_text(env.read_text().replace("sk-ds-newtok", "sk-ds-newtok-rotated"))
    by_name = {s.provider: s for s in service.fetch_home(home=home)}
    assert by_name["deepseek"].probe.path != "cache" and emulator.count(token="sk-ds-newtok-rotated") == 1
    assert all(by_name[p].probe.path == "cache" for p in ("anthropic", "openai-codex", "openrouter", "xai"))
    assert service.stats()["credential_rotations"] == 1
    assert not pids & worker_pids(service, home), "a provider rotated: the home's workers were restarted"
    # the rotated provider's answer is cached under its new credentials
    assert service.fetch("deepseek", home=home).probe.path == "cache"
    assert emulator.count(token="sk-ds-newtok") == 1


def test_a_pool_row_added_or_removed_rotates_that_provider(make_service, make_home, emulator):
    home = pooled_home(make_home, "grow-rows", "growrows")
    service = make_service(pool_size=1)
    service.fetch_home(home=home)

    def paths() -> dict[str, str]:
        return {s.provider: s.probe.path for s in service.fetch_home(home=home)}

    rewrite_auth(home, lambda a: a["credential_pool"]["anthropic"].append(row("a3", "sk-ant-oat-growrows-third")))
    assert {p for p, path in paths().items() if path != "cache"} == {"anthropic"}
    rewrite_auth(home, lambda a: a["credential_pool"]["xai"].pop())
    assert {p for p, path in paths().items() if path != "cache"} == {"xai"}
    assert service.stats()["credential_rotations"] == 2
    bookkeeping_write(home)
    assert set(paths().values()) == {"cache"}


def test_a_write_between_the_stat_and_the_digest_is_noticed_by_the_next_read(
        make_service, make_home, emulator, monkeypatch):
    """The stat is taken, the worker digests the files, then -- before the parent has
    taken the digests in -- a new token lands (the write is made at that very point of the
    read, no sleep). That read keeps the old answer; the next one notices the change and
    rotates that provider only."""
    home = pooled_home(make_home, "window", "windowed")
    service = make_service(pool_size=1)
    service.fetch_home(home=home)
    bookkeeping_write(home)
    env = home / ".env"
    original = service._digests_read
    landed = []

    def write_in_the_window(*args):
        if not landed:
            env.write_text(env.read_text().replace("sk-ds-windowed", "sk-ds-windowed-late"))
            landed.append(True)
        return original(*args)

    monkeypatch.setattr(service, "_digests_read", write_in_the_window)
    during = {s.provider: s for s in service.fetch_home(home=home)}
    assert landed and all(s.probe.path == "cache" for s in during.values())
    after = {s.provider: s for s in service.fetch_home(home=home)}
    assert after["deepseek"].probe.path != "cache" and emulator.count(token="sk-ds-windowed-late") == 1
    assert {p for p, s in after.items() if s.probe.path != "cache"} == {"deepseek"}


def test_a_restored_file_with_the_same_tokens_rotates_nothing(make_service, make_home, emulator):
    """An unreadable ``auth.json`` (a half-written file) makes its providers' digests
    unknown, which rotates nothing; the same file back is no change either, so their
    answers are still cached."""
    home = pooled_home(make_home, "restored", "restored7")
    service = make_service(pool_size=1)
    service.fetch_home(home=home)
    first_read = requests_for(emulator, "restored7")
    good = (home / "auth.json").read_text()
    (home / "auth.json").write_text(good[: len(good) // 2])
    service.fetch_home(home=home)
    (home / "auth.json").write_text(good)
    again = {s.provider: s.probe.path for s in service.fetch_home(home=home)}
    assert set(again.values()) == {"cache"} and service.stats()["credential_rotations"] == 0
    assert requests_for(emulator, "restored7") == first_read


def test_single_fetches_keep_their_cache_across_bookkeeping_writes(make_service, make_home, emulator):
    """A home this service only fetched provider by provider is known by its stat until a
    worker lists it: its first change of files rotates every provider (which changed
    cannot be told without digests to compare), and from then on a bookkeeping write is
    no change for single fetches either."""
    home = pooled_home(make_home, "single", "singlef")
    service = make_service(pool_size=1)
    assert service.fetch("deepseek", home=home).probe.path == "slot_start"
    assert service.fetch("deepseek", home=home).probe.path == "cache"
    bookkeeping_write(home)
    assert service.fetch("deepseek", home=home).probe.path != "cache"
    for _ in range(3):
        bookkeeping_write(home)
        assert service.fetch("deepseek", home=home).probe.path == "cache"
        assert service.fetch("anthropic", home=home).probe.path in ("cache", "warm")
    assert emulator.count(token="sk-ds-singlef") == 2 and emulator.count(token="sk-ant-oat-singlef") == 1


def test_processes_sharing_a_disk_cache_keep_it_across_bookkeeping_writes(make_service, make_home, emulator,
                                                                           tmp_path):
    """Two services on one cache directory: what one read, the other takes after a
    bookkeeping write (same credentials); after a new token, neither takes the old answer
    (each drops the provider's shared entry when it notices the change, as before digests,
    so each probes it once at most)."""
    home = pooled_home(make_home, "disk", "diskshare")
    one = make_service(pool_size=1, cache_dir=str(tmp_path / "cache"))
    two = make_service(pool_size=1, cache_dir=str(tmp_path / "cache"))
    one.fetch_home(home=home)
    first_read = requests_for(emulator, "diskshare")
    bookkeeping_write(home)
    assert {s.probe.path for s in two.fetch_home(home=home)} == {"cache"}
    assert requests_for(emulator, "diskshare") == first_read
    env = home / ".env"
    env.write_text(env.read_text().replace("sk-ds-diskshare", "sk-ds-diskshare-new"))
    by_name = {s.provider: s for s in two.fetch_home(home=home)}
    assert by_name["deepseek"].probe.path != "cache" and emulator.count(token="sk-ds-diskshare-new") == 1
    seen_by_one = {s.provider: s for s in one.fetch_home(home=home)}
    assert seen_by_one["deepseek"].details == by_name["deepseek"].details     # the new account's answer
    assert {p for p, s in seen_by_one.items() if s.probe.path != "cache"} <= {"deepseek"}
    assert emulator.count(token="sk-ds-diskshare-new") <= 2 and emulator.count(token="sk-ds-diskshare") == 1


def test_the_backends_latest_readings_survive_bookkeeping_writes(make_service, make_home, emulator):
    """The panel and /metrics serve the latest readings while the home's generation is
    unchanged (``Reader``): a bookkeeping write leaves it alone, so every reading stays
    current without a fetch; a new key bumps it, and the next read re-probes only that
    provider (the others come back from the cache)."""
    home = pooled_home(make_home, "readings", "readings")
    service = make_service(pool_size=1)
    reader = Reader(service, {"alice": home})
    reader.fetch_home("alice", refresh=False)
    generation = service.generation(home)
    for _ in range(3):
        bookkeeping_write(home)
        lists = service.stats()["provider_lists"]
        assert service.generation(home) == generation
        assert all(reader.latest("alice", name) is not None for name in ORDER)
        assert {s.probe.path for s in reader.fetch_home("alice", refresh=False)} == {"cache"}
        # the generation check and the list the home read needs (written < 2 s ago: asked again)
        assert service.stats()["provider_lists"] - lists <= 2
    assert {r.snapshot.provider for r in reader.current_readings()} >= set(ORDER)
    env = home / ".env"
    env.write_text(env.read_text().replace("sk-ds-readings", "sk-ds-readings-new"))
    assert service.generation(home) > generation and reader.latest("alice", "deepseek") is None
    again = {s.provider: s.probe.path for s in reader.fetch_home("alice", refresh=False)}
    assert {p for p, path in again.items() if path != "cache"} == {"deepseek"}


@pytest.mark.parametrize("profile", ["default", "work"])
def test_a_hermes_root_polled_through_its_bookkeeping_writes(make_service, emulator, tmp_path, profile):
    """The realistic home (``tests/hermes_homes``: pool rows of every source, stripped env
    rows, Codex JWT logins, a profile borrowing nothing): 10 polls, each after Hermes'
    bookkeeping write, make no provider request and start no process after the first read."""
    root = build_hermes_root(tmp_path)
    home = root.home(profile)
    service = make_service(pool_size=2)
    first = service.fetch_home(home=home)
    assert [s.provider for s in first] == root.expected_providers(profile)
    requests, spawns = requests_for(emulator, root.tag), service.stats()["spawns"]
    for poll in ten_polls(service, home, writes=True):
        assert [s.provider for s in poll] == root.expected_providers(profile)
        assert {s.probe.path for s in poll} == {"cache"}
    assert requests_for(emulator, root.tag) == requests and service.stats()["spawns"] == spawns
    assert service.stats()["credential_rotations"] == 0
