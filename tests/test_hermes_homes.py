"""A Hermes root as Hermes writes one (``tests/hermes_homes.py``) read through each surface a
user has -- the CLI, HTTP and the panel -- plus the fixture's own promises (the bookkeeping
write changes no token; tokens drive the emulator)."""
from __future__ import annotations

import json
import os

import httpx
import pytest

from hermes_homes import MESSY_PARTS, NEEDS_DOTENV, bookkeeping_write, build_hermes_root
from probe import ProbeConfig, ProbeService
from probe.server import create_app
from support import RunningApp, run_cli

pytestmark = pytest.mark.timeout(90)

#: every messy .env part the 0.3 parser also reads (a classic GitHub token lists Copilot there),
#: and no op:// reference (without `op` on the PATH deepseek answers no_credentials: exit 1)
TIDY = MESSY_PARTS - NEEDS_DOTENV - {"classic_github", "op_reference"}


def _root_env(emulator) -> dict[str, str]:
    return emulator.env()


def test_bookkeeping_write_changes_bookkeeping_only(tmp_path):
    root = build_hermes_root(tmp_path)
    home = root.home()
    before = json.loads((home / "auth.json").read_text())
    inode = (home / "auth.json").stat().st_ino
    bookkeeping_write(home)
    after = json.loads((home / "auth.json").read_text())
    assert (home / "auth.json").stat().st_ino != inode   # an atomic replace, as Hermes writes
    assert oct((home / "auth.json").stat().st_mode & 0o777) == "0o600"

    def secrets(data: dict) -> dict:
        return {provider: sorted((row.get("id"), row.get("access_token"), row.get("secret_fingerprint"))
                                 for row in rows) for provider, rows in data["credential_pool"].items()}

    assert secrets(after) == secrets(before) and after["providers"] == before["providers"]
    codex = [row["id"] for row in after["credential_pool"]["openai-codex"]]
    assert codex == [row["id"] for row in before["credential_pool"]["openai-codex"]][::-1]   # round robin
    assert [row["priority"] for row in after["credential_pool"]["openai-codex"]] == [0, 1]
    assert all(row["request_count"] == old["request_count"] + 1
               for old in before["credential_pool"]["xai"] for row in after["credential_pool"]["xai"]
               if row["id"] == old["id"])


def test_the_cli_reads_a_hermes_root_and_its_profiles(emulator, tmp_path):
    root = build_hermes_root(tmp_path, messy=TIDY)
    env = _root_env(emulator)
    done = run_cli("fetch", "--home", str(root.home()), "--json", env=env)
    snaps = json.loads(done.stdout)
    assert [s["provider"] for s in snaps] == root.expected_providers(), done.stderr
    by_name = {s["provider"]: s for s in snaps}
    for provider in ("anthropic", "openai-codex", "openrouter", "zai", "nous", "xai", "gemini"):
        assert by_name[provider]["available"], by_name[provider]
    assert all(emulator.count(token=token) for token in root.tokens["default"].values())   # they drove the emulator

    bookkeeping_write(root.home())
    text = run_cli("fetch", "--home", str(root.home()), env=env)
    assert text.returncode == 0, text.stdout + text.stderr
    assert [line.split(" — ")[0] for line in text.stdout.splitlines() if " — " in line] == root.expected_providers()

    work = run_cli("fetch", "--home", str(root.home("work")), "--json", env=env)
    work_snaps = {s["provider"]: s for s in json.loads(work.stdout)}
    assert list(work_snaps) == root.expected_providers("work")
    # the borrowed OpenRouter rows: the root's stripped env: row finds no key in the
    # profile's own .env, and its manual key is cooling after a 402 -- an error card, exit 1
    assert sorted(a["status"] for a in work_snaps["openrouter"]["accounts"]) == ["exhausted", "unavailable"]
    assert all(s["available"] for name, s in work_snaps.items() if name != "openrouter")
    assert work.returncode == 1, work.stdout
    scratch = run_cli("fetch", "--home", str(root.home("scratch")), "--json", env=env)   # borrows the root's
    assert [s["provider"] for s in json.loads(scratch.stdout)] == root.expected_providers("scratch")
    empty = tmp_path / "never-logged-in"
    empty.mkdir()
    nothing = run_cli("fetch", "--home", str(empty), env=env)
    assert nothing.returncode == 1 and "No provider credentials in this home" in nothing.stdout


def test_the_cli_reads_the_env_as_hermes_writes_it(emulator, tmp_path):
    """Every messy part at once: a PEM spanning lines, a bare ``export NAME``, ``${VAR}``,
    an ``op://`` reference, a classic GitHub token. No provider hidden, none added, no
    reference sent."""
    root = build_hermes_root(tmp_path)
    done = run_cli("fetch", "--home", str(root.home()), "--json", env=_root_env(emulator))
    snaps = json.loads(done.stdout)
    assert [s["provider"] for s in snaps] == root.expected_providers(), done.stderr
    assert not emulator.count(token="op://Private/DeepSeek API/credential")   # a reference is never sent
    assert all(s["available"] for s in snaps if s["provider"] != "deepseek")


@pytest.fixture
def hermes_backend(emulator, tmp_path):
    root = build_hermes_root(tmp_path, messy=TIDY)
    empty = tmp_path / "never-logged-in"
    empty.mkdir()
    homes = {"hermes": root.home(), "work": root.home("work"), "scratch": root.home("scratch"), "empty": empty}
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        with RunningApp(create_app(service, homes, "hermes-homes-token-0123456789", poll_s=7)) as running:
            yield running, root


def test_http_lists_a_hermes_root_by_profile_id(hermes_backend):
    running, root = hermes_backend
    with httpx.Client(base_url=running.url, timeout=60) as client:
        listing = client.get("/api/quota", params={"home": "hermes"})
        assert listing.status_code == 200
        assert [s["provider"] for s in listing.json()] == root.expected_providers()
        assert {s["home"] for s in listing.json()} == {"hermes"}
        bookkeeping_write(root.home())
        again = client.get("/api/quota", params={"home": "hermes"}).json()
        assert [s["provider"] for s in again] == root.expected_providers()
        work = client.get("/api/quota", params={"home": "work"}).json()
        assert [s["provider"] for s in work] == root.expected_providers("work")
        scratch = client.get("/api/quota", params={"home": "scratch"}).json()
        assert [s["provider"] for s in scratch] == root.expected_providers("scratch")
        assert client.get("/api/quota", params={"home": "empty"}).json() == []
        metrics = client.get("/metrics").text
        assert 'home="hermes",provider="xai"' in metrics


def test_the_panel_shows_a_card_per_provider_of_a_hermes_root(chromium_path, hermes_backend):
    from playwright.sync_api import expect, sync_playwright

    from test_panel_browser import CHROMIUM_ARGS

    running, root = hermes_backend
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 360, "height": 900})
            page.goto(f"{running.url}/?home=hermes")
            expect(page.locator(".card")).to_have_count(len(root.expected_providers()), timeout=30_000)
            bookkeeping_write(root.home())
            page.reload()
            expect(page.locator(".card")).to_have_count(len(root.expected_providers()), timeout=30_000)
            assert str(root.root) not in page.content()
        finally:
            browser.close()


def test_the_panel_writes_pool_times_in_local_time_and_an_empty_home_as_a_card(chromium_path, hermes_backend):
    """A pool-only card (xai: Hermes' own records) names its exhausted key's end in the
    browser's local time, the format of every reset line, not the worker's ``UTC``; an empty
    home's message is a card as wide as the cards of the other homes."""
    from playwright.sync_api import expect, sync_playwright

    from test_panel_browser import CHROMIUM_ARGS

    running, root = hermes_backend
    xai = json.loads((root.home() / "auth.json").read_text())["credential_pool"]["xai"]
    until_ms = -(-xai[0]["last_error_reset_at"] // 60) * 60 * 1000      # the worker rounds up to the minute
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Asia/Kolkata",
                                          locale="en-US")
            page = context.new_page()
            page.goto(f"{running.url}/?home=hermes")
            card = page.locator('.card[data-provider="xai"]')
            expect(card).to_have_count(1, timeout=30_000)
            stamp = page.evaluate(f"fmtStamp(new Date({until_ms}))")
            expect(card.locator(".details")).to_contain_text(f"until {stamp}")
            assert " UTC" not in card.locator(".details").inner_text()
            card_width = page.locator(".card").first.bounding_box()["width"]
            page.select_option("#home", "empty")
            empty = page.locator(".empty-state")
            expect(empty).to_contain_text("No provider credentials in this home", timeout=30_000)
            assert abs(empty.bounding_box()["width"] - card_width) <= 1
        finally:
            browser.close()
