"""The settings panel in a real headless Chromium against ``probe serve --demo``.

Needs Debian's ``chromium`` (``scripts/install-system-packages`` installs it; without it
these tests are skipped, see ``tests/system_parts.py``); Playwright drives it through
``executable_path`` — no browser download.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from probe.tools.emulator import DEEPSEEK_PATH, quota_body
from support import demo_root, free_port, wait_until
from workers.providers.deepseek import balance_line

pytestmark = pytest.mark.timeout(120)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class DemoUrl(str):
    """The demo server's base URL, knowing where its demo homes live (console output)."""
    root: Path


@contextlib.contextmanager
def running_demo(*extra: str):
    port = free_port()
    env = {**os.environ, "PROBE_TOKEN": "panel-test-token"}
    proc = subprocess.Popen([sys.executable, "-m", "probe.cli", "serve", "--demo", "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "quota-probe backend on" in line, proc.stderr.read()
        url = DemoUrl(f"http://127.0.0.1:{port}")
        url.root = demo_root(proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        proc.stdout.close()
        proc.stderr.close()


@pytest.fixture
def demo_server():
    with running_demo() as url:
        yield url


def test_panel_renders_refreshes_and_reflects_a_rotation(chromium_path, demo_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    listing = httpx.get(f"{demo_server}/api/quota", params={"home": "main"}, timeout=30).json()
    assert listing[0]["home"] == "main"   # ids, never paths, reach the browser
    main_home = demo_server.root / "main"
    assert str(main_home) not in httpx.get(f"{demo_server}/api/pool", timeout=30).text   # ids only
    # a window in deficit (the demo's tokens give the main home's Anthropic week one)
    card_index, window_index, _ = next(
        (c, i, w) for c, snap in enumerate(listing) for i, w in enumerate(snap["windows"])
        if w["pace"] and w["pace"]["status"] == "deficit")
    expected_line = balance_line(quota_body(DEEPSEEK_PATH, "sk-demo-main")["balance_infos"][0])

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 360, "height": 900})
            page.goto(f"{demo_server}/?home=main&poll=1")
            cards = page.locator(".card")
            expect(cards).to_have_count(len(listing))
            assert [snap["provider"] for snap in listing] == ["anthropic", "openai-codex", "openrouter", "deepseek",
                                                              "zai", "kimi-coding", "minimax"]
            # a 0.3 provider's card: its LABEL (read by the server through the catalog child)
            # with the name `probe fetch` takes beside it, its windows, a balance in points
            minimax_snap = next(snap for snap in listing if snap["provider"] == "minimax")
            minimax = page.locator('.card[data-provider="minimax"]')
            expect(minimax.locator(".provider")).to_have_text("MiniMax")
            expect(minimax.locator(".provider-name")).to_be_hidden()        # the label spells the name
            expect(minimax.locator(".window")).to_have_count(len(minimax_snap["windows"]))
            points = minimax_snap["balances"][0]
            assert points["currency"] == "points" and points["label"] == "Points"
            expect(minimax.locator('.balances li[data-currency="points"]')).to_have_text(
                f"Points{int(points['amount']):,} points")     # a count in its unit, never money
            expect(page.locator('.card[data-provider="zai"] .provider')).to_have_text("z.ai")
            deepseek = page.locator('.card[data-provider="deepseek"]')
            expect(deepseek.locator(".details li").first).to_have_text(expected_line)
            anthropic = page.locator('.card[data-provider="anthropic"]')
            expect(anthropic.locator(".window")).to_have_count(len(listing[0]["windows"]))
            first = listing[0]["windows"][0]
            expect(anthropic.locator(".remaining").first).to_have_text(f"{first['remaining_percent']:.1f}% left")
            expect(anthropic.locator(".reset").first).to_contain_text(re.compile(r"resets .* \(in "))

            # the pace: a marker where the bar should be now, and the line under it (SPEC §13)
            provider = listing[card_index]["provider"]
            late = page.locator(f'.card[data-provider="{provider}"] .window').nth(window_index)
            marker = late.locator(".bar .pace-marker")
            expect(marker).to_have_count(1)
            # the marker against the reading the page drew it from, read in one go: the demo's
            # refresher re-reads every 10 s, so the listing above may be a reading older
            left, expected_left, delta, text = page.evaluate("""([provider, index]) => {
                const pace = state.snapshots.find((s) => s.provider === provider).windows[index].pace;
                const row = document.querySelectorAll(`.card[data-provider="${provider}"] .window`)[index];
                return [parseFloat(row.querySelector(".bar .pace-marker").style.left),
                        100 - pace.expected_used_percent, pace.delta_percent, row.querySelector(".pace").textContent];
            }""", [provider, window_index])
            assert abs(left - expected_left) < 0.01
            assert re.fullmatch(rf"{round(abs(delta))}% in (deficit|reserve) · (Runs out in \d+[dhm]|Lasts until reset)",
                                text) or (abs(delta) < 2 and text.startswith("On pace")), text
            line = late.locator(".pace.deficit")
            expect(line).to_have_count(1)
            assert line.evaluate("el => getComputedStyle(el).color") != \
                late.locator(".reset").evaluate("el => getComputedStyle(el).color")   # deficit has its colour

            # refresh button: a fresh probe of that provider
            anthropic.locator(".refresh").click()
            expect(page.locator('.card[data-provider="anthropic"] .meta')).to_contain_text(re.compile(r"via (warm|slot_start)"))

            # a rotation: new DeepSeek key in the home's .env, then POST /api/rotate
            env_file = main_home / ".env"
            env_file.write_text(env_file.read_text().replace("sk-demo-main", "sk-demo-rotated"))
            rotated = httpx.post(f"{demo_server}/api/rotate", json={"home": "main", "provider": "deepseek"},
                                 headers={"Authorization": "Bearer panel-test-token"}, timeout=30)
            assert rotated.status_code == 204
            new_line = balance_line(quota_body(DEEPSEEK_PATH, "sk-demo-rotated")["balance_infos"][0])
            assert new_line != expected_line
            expect(page.locator('.card[data-provider="deepseek"] .details li').first).to_have_text(new_line, timeout=15000)

            # the team home: Copilot's monthly window, Nous' credits as money (USD)
            team = httpx.get(f"{demo_server}/api/quota", params={"home": "team"}, timeout=30).json()
            page.select_option("#home", "team")
            expect(page.locator(".card")).to_have_count(len(team))
            nous_snap = next(snap for snap in team if snap["provider"] == "nous")
            nous = page.locator('.card[data-provider="nous"]')
            expect(nous.locator(".provider")).to_have_text("Nous Portal")
            expect(nous.locator(".provider-name")).to_have_text("nous")
            usable = next(b for b in nous_snap["balances"] if b["label"] == "Total usable")
            expect(nous.locator('.balances li[data-label="Total usable"] strong')).to_have_text(f"${usable['amount']:,.2f}")
            copilot = page.locator('.card[data-provider="copilot"]')
            expect(copilot.locator('.window[data-label="Premium requests"] .reset')).to_contain_text("resets")

            # a home without credentials says what `probe doctor` would
            page.select_option("#home", "empty")
            expect(page.locator(".empty-state")).to_contain_text("probe doctor")
            expect(page.locator(".empty-state")).to_contain_text("ANTHROPIC_TOKEN")

            # the rate-limited demo home: last reading shown, badged stale + rate_limited
            page.select_option("#home", "limited")
            limited = page.locator('.card[data-provider="anthropic"]')
            expect(limited.locator(".badge.stale")).to_be_visible(timeout=20000)
            expect(limited.locator(".badge.error")).to_have_text("rate_limited")
            page.screenshot(path=str(tmp_path / "panel-360.png"), full_page=True)

            page.emulate_media(color_scheme="dark")
            page.set_viewport_size({"width": 1200, "height": 800})
            page.select_option("#home", "main")
            expect(page.locator(".card")).to_have_count(len(listing))
            page.screenshot(path=str(tmp_path / "panel-dark.png"), full_page=True)
            shots = os.environ.get("PROBE_SCREENSHOT_DIR")
            if shots:
                for name in ("panel-360.png", "panel-dark.png"):
                    shutil.copy(tmp_path / name, Path(shots) / name)
        finally:
            browser.close()


def test_panel_charts_history_and_lists_alerts(chromium_path, tmp_path):
    """A home with history gets a chart per window with its points and one dashed line per
    reset boundary -- as the server decides instances, so readings whose reset jittered by
    a second are no boundary; its alerts are listed."""
    from datetime import datetime, timedelta, timezone

    from playwright.sync_api import expect, sync_playwright

    from probe.monitor.alerts import Alerts
    from probe.monitor.history import History
    from probe.pace import iso
    from probe.snapshot import ProbeInfo, Snapshot, Window

    now = datetime.now(timezone.utc).replace(microsecond=0)
    store = History(tmp_path / "history.sqlite3")
    assert store.start()
    alerts = Alerts(store, [], (80, 90, 100))
    store.after_write = alerts.record
    # four instances (three boundaries); two readings of three of them report resets a second apart
    for hours_ago, used, reset in ((30, 5.0, now - timedelta(hours=29)), (29.5, 6.0, now - timedelta(hours=29, seconds=-1)),
                                   (20, 40.0, now - timedelta(hours=19)), (19.5, 41.0, now - timedelta(hours=19, seconds=1)),
                                   (6, 10.0, now - timedelta(hours=5)),
                                   (2.5, 60.0, now + timedelta(hours=2)), (1, 85.0, now + timedelta(hours=2, seconds=1))):
        window = Window("Current session", used, 100 - used, iso(reset), None, 18000.0)
        store.submit("main", tmp_path, Snapshot(provider="anthropic", home="/x", available=True, windows=(window,),
                                                fetched_at=iso(now - timedelta(hours=hours_ago)),
                                                probe=ProbeInfo("warm", 1.0)))
    store.close()

    with running_demo("--history", str(tmp_path / "history.sqlite3")) as url, sync_playwright() as pw:
        # the demo's own reading of main's Anthropic account is a fourth instance (the
        # emulator's reset is hours from ours): wait until it is recorded, so the count is known
        def session_series() -> dict:
            body = httpx.get(f"{url}/api/history", params={"home": "main", "provider": "anthropic"}, timeout=30).json()
            return next(s for s in body["series"] if s["window"] == "Current session")

        httpx.get(f"{url}/api/quota", params={"home": "main", "provider": "anthropic"}, timeout=30)
        assert wait_until(lambda: session_series()["points"][-1]["t"] >= iso(now))
        assert len(session_series()["boundaries"]) == 4
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 360, "height": 900})
            page.goto(f"{url}/?home=main")
            session = page.locator('.card[data-provider="anthropic"] .window[data-label="Current session"]')
            points = session.locator("svg.chart circle.chart-point")
            expect(points.nth(7)).to_be_attached(timeout=20000)   # the 7 written and the demo's
            expect(session.locator("svg.chart .chart-reset")).to_have_count(4)
            expect(session.locator("svg.chart .chart-pace")).to_have_count(1)
            expect(page.locator("#alerts")).to_be_visible()
            expect(page.locator("#alerts li", has_text="anthropic · Current session reached 80%")).to_have_count(1)
            page.screenshot(path=str(tmp_path / "panel-history.png"), full_page=True)
            shots = os.environ.get("PROBE_SCREENSHOT_DIR")
            if shots:
                shutil.copy(tmp_path / "panel-history.png", Path(shots) / "panel-history.png")
        finally:
            browser.close()


def test_demo_lists_each_alert_once_after_five_minutes_of_refreshes(chromium_path):
    """``make demo`` after 5 minutes (issue #19): the emulator reports every reset with up
    to ±2 s of jitter, the refresher re-reads every (home, provider) -- here at 0.2 s
    instead of the demo's 10 s, for as many passes as 5 minutes make -- and still the
    panel's alert list holds each (home, provider, window, kind, threshold) once, and the
    charts draw no reset boundary (no window rolled over: the demo's first resets are at
    least 15 minutes away)."""
    from collections import Counter

    from playwright.sync_api import expect, sync_playwright

    passes, entries = 30, 16          # 5 min / 10 s; 4 demo homes x 4 providers
    with running_demo("--refresh-s", "0.2") as url:
        def fetches() -> int:
            return sum(httpx.get(f"{url}/api/pool", timeout=30).json()["fetches"].values())

        assert wait_until(lambda: fetches() >= passes * entries, 60)
        alerts = httpx.get(f"{url}/api/alerts", timeout=30).json()["alerts"]
        keys = Counter((a["home"], a["provider"], a["window"], a["kind"], a["threshold"]) for a in alerts)
        assert keys and max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
        assert {"threshold", "runs_out"} <= {a["kind"] for a in alerts}      # the demo shows both kinds
        for provider in ("anthropic", "openai-codex"):
            series = httpx.get(f"{url}/api/history", params={"home": "main", "provider": provider},
                               timeout=30).json()["series"]
            assert series and all(s["boundaries"] == [] for s in series)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(f"{url}/?home=main")
                for home in ("main", "team"):
                    page.select_option("#home", home)
                    expected = sum(1 for k in keys if k[0] == home)
                    items = page.locator("#alerts li")
                    expect(items).to_have_count(expected)
                    listed = Counter(tuple(li.get_attribute(f"data-{name}") for name in
                                           ("provider", "window", "kind", "threshold")) for li in items.all())
                    assert max(listed.values()) == 1, listed
                page.select_option("#home", "main")
                expect(page.locator("svg.chart circle.chart-point").first).to_be_attached(timeout=20000)
                expect(page.locator("svg.chart .chart-pace").first).to_be_attached()
                assert page.locator("svg.chart .chart-reset").count() == 0
            finally:
                browser.close()


def test_panel_shows_the_best_windows_then_every_account_and_marks_the_next(chromium_path):
    """SPEC §18 in the panel, on the demo's pooled home: the best windows first, then a row
    per account (status badge, bars, retry time of the one Hermes exhausted), the next
    account marked, each account's own history chart; a provider with one account keeps
    0.3's card (no account rows)."""
    from playwright.sync_api import expect, sync_playwright

    with running_demo() as url:
        listing = httpx.get(f"{url}/api/quota", params={"home": "pooled"}, timeout=30).json()
        codex = next(snap for snap in listing if snap["provider"] == "openai-codex")
        assert [a["id"] for a in codex["accounts"]] == ["c0de01", "c0de02", "c0de03"]
        assert [a["status"] for a in codex["accounts"]] == ["available", "available", "exhausted"]
        next_id = codex["pool"]["next_account"]["id"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 360, "height": 1400})
                console_errors: list[str] = []   # a 404 (the browser's /favicon.ico) shows here
                page.on("console", lambda m: console_errors.append(f"{m.text} {m.location}") if m.type == "error" else None)
                page.goto(f"{url}/?home=pooled&poll=1")
                card = page.locator('.card[data-provider="openai-codex"]')
                expect(card.locator(".windows > .window")).to_have_count(len(codex["windows"]))
                expect(card.locator(".windows .window-detail").first).to_have_text("Best of 2 accounts")
                rows = card.locator(".account")
                expect(rows).to_have_count(3)
                assert rows.evaluate_all("els => els.map((e) => e.dataset.accountId)") == ["c0de01", "c0de02", "c0de03"]
                expect(rows.locator(".account-label")).to_have_text(["work@example.com", "team@example.com",
                                                                     "spare@example.com"])
                expect(rows.locator(".badge.status")).to_have_text(["available", "available", "exhausted"])
                # the best windows come before the account rows
                assert card.locator(".windows").bounding_box()["y"] < rows.first.bounding_box()["y"]
                # the next account: one row marked, with the reason the pool gives
                marked = card.locator(".account.next")
                expect(marked).to_have_count(1)
                expect(marked).to_have_attribute("data-account-id", next_id)
                expect(marked.locator(".badge.next")).to_have_text("→ next")
                expect(marked.locator(".next-reason")).to_contain_text("most room in its tightest window")
                # bars per account: the one near its weekly limit is drawn low; the exhausted one
                # has no bars, and its retry time counts down
                expect(rows.nth(1).locator(".window")).to_have_count(2)
                expect(rows.nth(1).locator(".bar.low, .bar.empty")).not_to_have_count(0)
                expect(rows.nth(2).locator(".window")).to_have_count(0)
                expect(rows.nth(2).locator(".retry")).to_have_text(re.compile(r"retry after .* \(in \d+m"))
                # each account's own chart (history is per account), once its points are written
                expect(rows.nth(0).locator(".chart")).to_have_count(2, timeout=30000)
                expect(card.locator(".windows > .window .chart")).to_have_count(0)   # best windows: no chart
                # the account near its weekly limit fired its own 80 % alert, naming its label
                alert = page.locator('#alerts li[data-account="c0de02"][data-threshold="80"]')
                expect(alert).to_contain_text("openai-codex (team@example.com) · Weekly reached 80%", timeout=30000)
                # two numbered OpenRouter keys: two accounts
                expect(page.locator('.card[data-provider="openrouter"] .account')).to_have_count(2)
                # each key's own figures (its credits), not only the best windows above
                expect(page.locator('.card[data-provider="openrouter"] .account .account-details')).to_have_count(2)
                expect(page.locator('.card[data-provider="openrouter"] .account .account-details').first) \
                    .to_contain_text("Credits balance: $")
                # the profile: its own single OpenRouter key is 0.3's card; its Codex card has the
                # root's three rows (borrowed, read-only) and its own login
                page.select_option("#home", "pooled-work")
                single = page.locator('.card[data-provider="openrouter"]')
                expect(single).to_have_count(1)
                expect(single.locator(".account")).to_have_count(0)
                borrowed = page.locator('.card[data-provider="openai-codex"] .account-label')
                expect(borrowed).to_have_text(["work@example.com", "team@example.com", "spare@example.com",
                                               re.compile(".+")])
                assert console_errors == []
            finally:
                browser.close()
