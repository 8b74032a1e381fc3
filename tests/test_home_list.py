"""A home's provider list (SPEC §17) and the providers only Hermes' credential_pool holds
(PROVIDERS.md, last section): real worker processes, real files, the real emulator.

What is guarded: the list's order and content (names only -- a planted credential never
crosses the pipe, nor reaches stats or logs); pool-only ids read from the records with no
request; the list cached with the credential fingerprint (counted worker requests); and the
home-wide call sites -- ``probe fetch --home H``, ``GET /api/quota?home=ID``, the panel.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from probe import ProbeConfig, ProbeService, UnknownProviderError
from probe.env import child_env
from probe.home_list import HomeListFailed, HomeLists, HomeProviders
from probe.server import create_app
from support import SNAPSHOT_KEYS, RunningApp, run_cli, run_threads

pytestmark = pytest.mark.timeout(60)

#: every planted credential: none may appear anywhere but in the home's own files
SECRETS = {"anthropic": "sk-ant-oat01-hl-SECRET-anthropic", "codex": "hl-SECRET-codex-token",
           "openrouter": "sk-or-v1-hl-SECRET-openrouter", "deepseek": "sk-hl-SECRET-deepseek",
           "xai-work": "xai-hl-SECRET-work", "xai-personal": "xai-hl-SECRET-personal", "xai-old": "xai-hl-SECRET-old",
           "gemini": "gm-hl-SECRET-gemini", "invalid": "hl-SECRET-invalid-id"}
BUILT_INS = ["anthropic", "openai-codex", "openrouter", "deepseek"]
TOKEN = "test-home-list-token-0123456789"


def pool_entry(label: str, status: str | None, secret: str, **fields) -> dict:
    entry = {"label": label, "auth_type": "api_key", "access_token": secret, **fields}
    if status is not None:
        entry["last_status"] = status
    return entry


def providers_md_xai(now: float) -> tuple[list[dict], float]:
    """PROVIDERS.md's example: an exhausted work key, a usable personal one, a revoked old
    one. Returns the entries and the work key's reset (a whole minute, ten minutes on)."""
    reset = (int(now // 60) + 10) * 60.0
    return [pool_entry("work key", "exhausted", SECRETS["xai-work"], last_error_code=429, last_error_reset_at=reset),
            pool_entry("personal", "ok", SECRETS["xai-personal"]),
            pool_entry("old", "dead", SECRETS["xai-old"], last_error_code=401, last_status_at=now - 60)], reset


def shown(reset: float) -> str:
    """How a time is written (credential_pool's rule, restated): ``14:05 UTC`` today."""
    when = datetime.fromtimestamp(reset, tz=timezone.utc)
    if when.date() == datetime.now(timezone.utc).date():
        return f"{when:%H:%M} UTC"
    return f"{when.date().isoformat()} {when:%H:%M} UTC"


def write_pool(home: Path, pool: dict, **auth) -> None:
    (home / "auth.json").write_text(json.dumps({**auth, "credential_pool": pool}))


def settle(home: Path) -> None:
    """Age the credential files past the racy window (``stat_is_settled``): the list read
    next is then kept until the files change -- what a home looks like minutes after a write."""
    old = time.time() - 3600
    for name in (".env", "auth.json"):
        if (home / name).exists():
            os.utime(home / name, (old, old))


@pytest.fixture
def full_home(make_home):
    """Four built-in credentials, and a credential_pool holding two pool-only ids (xai,
    gemini), a pool key of a built-in, and keys that are no provider id at all."""
    home = make_home("full", anthropic=SECRETS["anthropic"], codex=SECRETS["codex"],
                     openrouter=SECRETS["openrouter"], deepseek=SECRETS["deepseek"])
    auth = json.loads((home / "auth.json").read_text())
    entries, _ = providers_md_xai(time.time())
    write_pool(home, {
        "xai": entries,
        "gemini": [pool_entry("studio", "ok", SECRETS["gemini"])],
        "openai-codex": [{"access_token": SECRETS["codex"]}],                 # a built-in: its adapter decides
        "Bad_ID": [pool_entry("x", "ok", SECRETS["invalid"])],                # not a provider id: ignored
        "x": [pool_entry("x", "ok", SECRETS["invalid"])],                     # too short: ignored
        "has space": [pool_entry("x", "ok", SECRETS["invalid"])],             # ignored
        "openai-api": [],                                                     # no entry: no credential
        "mistral": "not a list",                                              # no entry: no credential
    }, **auth)
    settle(home)
    return home


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS.values():
            assert secret not in text


# -- the worker's answer, on the raw pipe ----------------------------------------------------
def test_the_worker_names_providers_in_spec_order_and_never_a_value(full_home):
    """The ``providers`` request over the real pipe of ``python -m workers``: built-ins in
    PROVIDERS.md's table order, then pool-only ids by name; invalid ids, empty pools and a
    built-in's pool key are no extra entries; not one byte of a credential on stdout or
    stderr."""
    proc = subprocess.Popen([sys.executable, "-P", "-m", "workers"], env=child_env(full_home),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(b'{"id": "l1", "op": "providers"}\n', timeout=30)
    assert proc.returncode == 0
    reply = json.loads(out.splitlines()[0])
    reply.pop("ready_at")
    digests = reply.pop("digests")
    assert reply == {"id": "l1", "ok": True, "providers": [*BUILT_INS, "gemini", "xai"],
                     "pool_only": ["gemini", "xai"], "undeclared": [], "unreadable": [],
                     "pool_only_unreadable": False}
    assert set(digests) == set(reply["providers"])     # one digest per listed provider: hashes only
    assert all(isinstance(d, str) and len(d) == 64 and int(d, 16) >= 0 for d in digests.values())
    assert_no_secret(out.decode(), err.decode())


def test_a_worker_of_a_vanished_home_says_so(tmp_path):
    home = tmp_path / "gone"
    home.mkdir()
    proc = subprocess.Popen([sys.executable, "-P", "-m", "workers"], env=child_env(home),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    home.rmdir()
    out, _ = proc.communicate(b'{"id": 2, "op": "providers"}\n', timeout=30)
    reply = json.loads(out.splitlines()[0])
    assert reply["ok"] is False and reply["error"]["code"] == "home_not_found"


# -- the service's list: cached with the fingerprint -----------------------------------------
def test_the_service_list_is_asked_once_and_kept_until_the_files_change(make_service, full_home, spawn_method,
                                                                       capfd):
    """One worker request for the first call; none while the files are unchanged (counted
    in stats and on the worker itself); a credential added to .env shows on the next call."""
    service = make_service(pool_size=1)
    home = full_home
    first = service.home_providers(home)
    assert first.names == (*BUILT_INS, "gemini", "xai") and first.pool_only == {"gemini", "xai"}
    for _ in range(5):
        assert service.home_providers(home) == first
    stats = service.stats()
    assert stats["provider_lists"] == 1
    assert stats["homes"][str(home.resolve())]["workers"][0]["requests"] == 1   # the one list request
    assert stats["fetches"] == {path: 0 for path in stats["fetches"]}           # listing is no fetch

    # a rewrite without a new credential is asked again once, and answers the same
    (home / ".env").write_text((home / ".env").read_text() + "# a comment\n")
    settle(home)
    assert service.home_providers(home) == first
    assert service.stats()["provider_lists"] == 2

    # a new provider's credential: on the next call, in its place in the order
    with (home / "auth.json").open("r+") as handle:
        auth = json.load(handle)
        auth["credential_pool"]["cohere"] = [pool_entry("team", None, "co-hl-SECRET")]
        handle.seek(0)
        handle.truncate()
        json.dump(auth, handle)
    settle(home)
    assert service.home_providers(home).names == (*BUILT_INS, "cohere", "gemini", "xai")
    assert service.home_providers(home).names == (*BUILT_INS, "cohere", "gemini", "xai")
    assert service.stats()["provider_lists"] == 3

    out, err = capfd.readouterr()   # the workers' stderr is this process's
    assert_no_secret(out, err, json.dumps(service.stats()), repr(first))
    assert "co-hl-SECRET" not in out + err + json.dumps(service.stats())


def test_a_credential_added_to_env_shows_on_the_next_call(make_service, make_home):
    service = make_service(pool_size=1)
    home = make_home("grow", deepseek=SECRETS["deepseek"])
    settle(home)
    assert service.home_providers(home).names == ("deepseek",)
    with (home / ".env").open("a") as env:
        env.write(f"OPENROUTER_API_KEY={SECRETS['openrouter']}\n")
    settle(home)
    assert service.home_providers(home).names == ("openrouter", "deepseek")
    assert service.home_providers(home).names == ("openrouter", "deepseek")
    assert service.stats()["provider_lists"] == 2


def test_concurrent_callers_of_a_cold_home_share_one_list_request(make_service, full_home):
    service = make_service(pool_size=2)
    answers = run_threads(8, lambda: service.home_providers(full_home))
    assert {a.names for a in answers} == {(*BUILT_INS, "gemini", "xai")}
    assert service.stats()["provider_lists"] == 1


def test_a_rotation_reads_the_list_again(make_service, full_home):
    service = make_service(pool_size=1)
    service.home_providers(full_home)
    service.invalidate(home=full_home)
    service.home_providers(full_home)
    assert service.stats()["provider_lists"] == 2


def test_a_missing_home_is_one_provider_null_snapshot(make_service, tmp_path):
    service = make_service(pool_size=1)
    with pytest.raises(HomeListFailed) as caught:
        service.home_providers(tmp_path / "nope")
    snap = caught.value.snapshot
    assert snap.provider is None and snap.error.code == "home_not_found" and snap.to_dict()["provider"] is None
    listed = service.fetch_home(home=tmp_path / "nope")
    assert [(s.provider, s.error.code) for s in listed] == [(None, "home_not_found")]


def test_unchanged_files_settled_or_not(tmp_path):
    """The racy rule, with made-up stat data (no clock involved): a list read within 2 s of
    the files' last change is used once and asked again; a settled one is kept."""
    lists = HomeLists()
    asked: list[int] = []

    def ask() -> HomeProviders:
        asked.append(1)
        return HomeProviders(("deepseek",))

    changed_ns = 1_000 * 10**9
    fingerprint = ((1, 10, changed_ns, changed_ns), None)
    for _ in range(2):                                          # read 1 s after the change: not settled
        lists.get(tmp_path, fingerprint, changed_ns + 10**9, 5.0, ask)
    assert len(asked) == 2
    for _ in range(2):                                          # 3 s after: kept
        lists.get(tmp_path, fingerprint, changed_ns + 3 * 10**9, 5.0, ask)
    assert len(asked) == 3
    assert lists.fresh(tmp_path, fingerprint) == HomeProviders(("deepseek",))
    assert lists.fresh(tmp_path, ((2, 10, changed_ns, changed_ns), None)) is None


def test_an_undeclared_plugin_that_has_no_credential_leaves_the_list_until_the_files_change(tmp_path):
    lists = HomeLists()
    fingerprint = (None, None)
    listing = lists.get(tmp_path, fingerprint, 10**19, 5.0,
                        lambda: HomeProviders(("deepseek", "qp-free", "xai"), frozenset({"xai"}), frozenset({"qp-free"})))
    lists.drop(tmp_path, listing, frozenset({"qp-free"}))
    kept = lists.get(tmp_path, fingerprint, 10**19, 5.0, lambda: pytest.fail("asked again"))
    assert kept.names == ("deepseek", "xai") and kept.pool_only == {"xai"}
    assert lists.get(tmp_path, (None, (1, 2, 3, 4)), 10**19, 5.0,
                     lambda: HomeProviders(("deepseek", "qp-free"))).names == ("deepseek", "qp-free")


def test_settling_a_home_read_drops_an_undeclared_plugin_that_found_no_credential(make_service, make_home):
    """SPEC §16: a plugin without CREDENTIALS is probed to find out; its no_credentials
    answer leaves the home's list (and the cached list) until the files change. Any other
    provider's no_credentials stays shown (Codex with every pool entry exhausted says so)."""
    from dataclasses import replace

    from probe.snapshot import ProbeInfo, Snapshot

    service = make_service(pool_size=1)
    home = make_home("settle", deepseek=SECRETS["deepseek"], openrouter=SECRETS["openrouter"])
    settle(home)
    listing = service.home_providers(home)
    assert listing.names == ("openrouter", "deepseek")
    as_if_undeclared = replace(listing, undeclared=frozenset({"deepseek"}))

    def nothing(provider: str) -> Snapshot:
        return Snapshot.failed(provider, str(home), "no_credentials", "none", probe=ProbeInfo("warm", 1.0))

    kept = service.settle_home_list(home, as_if_undeclared, [nothing("openrouter"), nothing("deepseek")])
    assert [s.provider for s in kept] == ["openrouter"]
    assert service.home_providers(home).names == ("openrouter",)
    assert service.stats()["provider_lists"] == 1
    with (home / ".env").open("a") as env:
        env.write("# changed\n")
    settle(home)
    assert service.home_providers(home).names == ("openrouter", "deepseek")


# -- pool-only providers: Hermes' records, no request -----------------------------------------
def listed(service, name: str, **kwargs):
    """One listed provider read the home-wide way (``fetch_home(providers=[name])``)."""
    snaps = service.fetch_home(providers=[name], **kwargs)
    assert [s.provider for s in snaps] == [name]
    return snaps[0]


def test_a_pool_only_provider_reads_hermes_records_without_a_request(make_service, make_home, emulator):
    service = make_service(pool_size=1)
    home = make_home("records")
    now = time.time()
    entries, reset = providers_md_xai(now)
    write_pool(home, {"xai": entries})
    before = emulator.count()
    with pytest.raises(UnknownProviderError):
        service.fetch("xai", home=home)                        # a pool-only id is home-wide only
    snap = listed(service, "xai", home=home)
    assert snap.available and snap.error is None
    assert (snap.provider, snap.source, snap.title) == ("xai", "credential_pool", "Hermes credential pool")
    assert list(snap.details) == [f"work key: exhausted until {shown(reset)} (429)", "personal: ok", "old: revoked"]
    assert snap.probe.path in ("warm", "slot_start")
    again = listed(service, "xai", home=home)
    assert again.probe.path == "cache" and again.details == snap.details   # the same cache as any provider
    assert emulator.count() == before
    assert_no_secret(json.dumps(snap.to_dict()), json.dumps(service.stats()))


def test_every_entry_exhausted_is_rate_limited_until_the_first_recovers(make_service, make_home, emulator):
    service = make_service(pool_size=1)
    home = make_home("exhausted")
    now = time.time()
    first, later = (int(now // 60) + 20) * 60.0, (int(now // 60) + 50) * 60.0
    write_pool(home, {"xai": [
        pool_entry("a", "exhausted", SECRETS["xai-work"], last_error_code=429, last_error_reset_at=later),
        pool_entry("b", "exhausted", SECRETS["xai-personal"], last_error_code=429, last_error_reset_at=first)]})
    before = emulator.count()
    snap = listed(service, "xai", home=home)
    assert not snap.available and snap.error.code == "rate_limited"
    assert shown(first) in snap.error.message and shown(later) not in snap.error.message
    assert snap.source == "credential_pool"
    # no provider was asked, so no back-off of ours (issue #27: it said "next try in 591 s"):
    # the next read asks the records again and says what they say
    again = listed(service, "xai", home=home, refresh=True)
    assert again.error.code == "rate_limited" and shown(first) in again.error.message
    assert "next try in" not in again.error.message
    assert emulator.count() == before


def test_every_entry_revoked_is_unauthorized(make_service, make_home):
    service = make_service(pool_size=1)
    home = make_home("revoked")
    write_pool(home, {"gemini": [pool_entry("one", "dead", SECRETS["gemini"]),
                                 pool_entry("two", "dead", SECRETS["xai-old"])]})
    snap = listed(service, "gemini", home=home)
    assert snap.error.code == "unauthorized" and "revoked" in snap.error.message
    assert_no_secret(json.dumps(snap.to_dict()))


def test_a_home_read_asks_for_no_name_the_home_does_not_list(make_service, full_home, emulator):
    service = make_service(pool_size=1)
    before = emulator.count()
    for name in ("cohere", "Bad_ID", "has space", "openai-api", ""):
        assert service.fetch_home(home=full_home, providers=[name]) == []
    assert service.stats()["home_reads"] == 0 and emulator.count() == before
    assert listed(service, "gemini", home=full_home).available


# -- the home-wide call sites ----------------------------------------------------------------
def test_probe_fetch_of_a_pool_only_id_points_at_the_home_wide_list(full_home):
    result = run_cli("fetch", "xai", "--home", str(full_home), "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "unknown_provider" and "probe fetch --home H" in error["message"]
    plain = run_cli("fetch", "xai", "--home", str(full_home))
    assert plain.returncode == 2 and "probe fetch --home H" in plain.stderr


def test_probe_fetch_home_shows_built_ins_and_pool_only_side_by_side(emulator, full_home):
    result = run_cli("fetch", "--home", str(full_home), "--json", env=emulator.env())
    assert result.returncode == 0, result.stdout + result.stderr
    snaps = json.loads(result.stdout)
    assert [s["provider"] for s in snaps] == [*BUILT_INS, "gemini", "xai"]
    assert all(s["available"] and list(s) == SNAPSHOT_KEYS for s in snaps)
    assert [s["source"] for s in snaps[-2:]] == ["credential_pool", "credential_pool"]
    assert snaps[-1]["details"][1:] == ["personal: ok", "old: revoked"]
    text = run_cli("fetch", "--home", str(full_home), env=emulator.env())
    assert text.returncode == 0
    assert text.stdout.index("deepseek") < text.stdout.index("xai — Hermes credential pool")
    assert "personal: ok" in text.stdout
    assert_no_secret(result.stdout, result.stderr, text.stdout, text.stderr)


def test_probe_fetch_of_a_missing_home_is_one_snapshot(tmp_path):
    result = run_cli("fetch", "--home", str(tmp_path / "nope"), "--json")
    assert result.returncode == 1
    snaps = json.loads(result.stdout)
    assert len(snaps) == 1 and snaps[0]["provider"] is None and snaps[0]["error"]["code"] == "home_not_found"
    plain = run_cli("fetch", "--home", str(tmp_path / "nope"))
    assert plain.returncode == 1 and plain.stdout.count("home_not_found") == 1


@pytest.fixture
def backend(emulator, full_home, make_home, tmp_path):
    homes = {"full": full_home, "empty": make_home("srv-empty"), "gone": tmp_path / "gone"}
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        with RunningApp(create_app(service, homes, TOKEN, poll_s=7)) as running:
            with httpx.Client(base_url=running.url, timeout=30) as client:
                yield client, service


def test_api_quota_of_a_home_lists_its_providers(backend, emulator):
    client, service = backend
    listing = client.get("/api/quota", params={"home": "full"})
    assert listing.status_code == 200
    snaps = listing.json()
    assert [s["provider"] for s in snaps] == [*BUILT_INS, "gemini", "xai"]
    assert all(s["available"] and s["home"] == "full" for s in snaps)
    assert snaps[-1]["source"] == "credential_pool"
    assert_no_secret(listing.text)
    again = client.get("/api/quota", params={"home": "full"}, headers={"If-None-Match": listing.headers["etag"]})
    assert again.status_code == 304
    assert service.stats()["provider_lists"] == 1
    assert client.get("/api/quota", params={"home": "empty"}).json() == []
    gone = client.get("/api/quota", params={"home": "gone"})
    assert gone.status_code == 200
    assert [(s["provider"], s["error"]["code"], s["home"]) for s in gone.json()] == [(None, "home_not_found", "gone")]
    # a pool-only id is not a provider of the one-provider form
    one = client.get("/api/quota", params={"home": "full", "provider": "xai"})
    assert one.status_code == 400 and one.json()["error"]["code"] == "unknown_provider"


def test_with_a_refresher_pool_only_ids_are_read_through_the_service_not_old_readings(emulator, full_home):
    """With ``refresh_s`` a poll answers from the latest readings -- but the refresher never
    reads a pool-only id, so its reading would keep an "exhausted until" long past its
    end: those go through the service (its cache; no provider request either way)."""
    def fetches(service: ProbeService) -> int:
        return sum(service.stats()["fetches"].values())

    config = ProbeConfig(provider_urls=emulator.provider_urls(), cache_ttl_s=0)
    with ProbeService(config) as service, RunningApp(create_app(service, {"full": full_home}, TOKEN,
                                                                refresh_s=300)) as running:
        first = httpx.get(f"{running.url}/api/quota", params={"home": "full"}, timeout=30).json()
        assert [s["provider"] for s in first] == [*BUILT_INS, "gemini", "xai"]
        assert fetches(service) == 6
        requests = emulator.count()
        second = httpx.get(f"{running.url}/api/quota", params={"home": "full"}, timeout=30).json()
        assert [s["provider"] for s in second] == [*BUILT_INS, "gemini", "xai"]
        assert fetches(service) == 8 and emulator.count() == requests


def test_the_panel_offers_no_refresh_on_a_pool_only_card(chromium_path, backend):
    """A pool-only card shows Hermes' records and no refresh button (there is nothing to
    probe: the records are re-read when auth.json changes); a built-in's card keeps its
    button, and it still works."""
    from playwright.sync_api import expect, sync_playwright

    client, _ = backend
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(f"{client.base_url}/?home=full")
            expect(page.locator(".card")).to_have_count(len(BUILT_INS) + 2)
            xai = page.locator('.card[data-provider="xai"]')
            expect(xai.locator(".details li")).to_have_count(3)
            expect(xai.locator(".details li").nth(1)).to_have_text("personal: ok")
            expect(xai.locator(".title")).to_have_text("Hermes credential pool")
            expect(xai.locator(".refresh")).to_have_count(0)
            expect(page.locator('.card[data-provider="gemini"] .refresh')).to_have_count(0)
            deepseek = page.locator('.card[data-provider="deepseek"]')
            deepseek.locator(".refresh").click()
            expect(page.locator("#status")).to_contain_text("refreshed deepseek")
        finally:
            browser.close()
