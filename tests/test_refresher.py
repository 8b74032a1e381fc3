"""Background refresh, latest readings and quota gauges (SPEC §13), over real HTTP and a
real ``probe serve`` process where the behaviour is the process's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest

from probe import ProbeConfig, ProbeService
from probe.monitor.readings import Reader
from probe.monitor.refresher import Refresher
from probe.server import create_app
from probe.server.metrics import AMOUNT_DIGITS, RATIO_DIGITS
from support import RunningApp, free_port, settled, still_running, wait_until

pytestmark = pytest.mark.timeout(90)
TOKEN = "refresher-test-token-0123456789"


def test_every_home_and_provider_with_a_credential_is_requested_within_3s(emulator, make_home, tmp_path):
    """``probe serve --refresh-s 1`` with no client at all."""
    tokens = {"anthropic": "sk-ant-oat01-rf-a", "openrouter": "sk-or-v1-rf-a", "deepseek": "sk-rf-a"}
    a = make_home("rf-a", **tokens)
    b = make_home("rf-b", deepseek="sk-rf-b", codex="rf-codex-b")
    emulator.clear()
    env = {**os.environ, **emulator.env(), "PROBE_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "probe.cli", "serve", "--port", str(free_port()), "--refresh-s", "1",
                             "--home", f"a={a}", "--home", f"b={b}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "quota-probe backend on" in proc.stdout.readline()
        started = time.monotonic()
        for token in (*tokens.values(), "sk-rf-b", "rf-codex-b"):
            assert emulator.wait_for(1, token=token, timeout=max(0.0, 3.0 - (time.monotonic() - started))), token
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        proc.stdout.close()
        proc.stderr.close()


def test_sigterm_stops_cleanly_with_a_refresh_probe_hanging(emulator, make_home):
    """No probe and no process left: SIGTERM does not wait for a hung provider."""
    home = make_home("rf-hang", deepseek="sk-rf-hang-hang-")
    env = {**os.environ, **emulator.env(), "PROBE_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "probe.cli", "serve", "--port", str(free_port()), "--refresh-s", "0.5",
                             "--home", f"h={home}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "quota-probe backend on" in proc.stdout.readline()
        assert emulator.wait_for(1, token="sk-rf-hang-hang-", timeout=10)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children   # the template and the worker stuck on the hung provider
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 8   # the probe's own deadline is 20 s
        assert not still_running(children, 2.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_a_rate_limited_provider_is_not_requested_again_during_its_back_off(emulator, make_home):
    token = "sk-or-v1-rf-429"
    emulator.script(token, {"error": "slow down"}, status=429, headers={"Retry-After": "30"})
    home = make_home("rf-429", openrouter=token)
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        refresher = Refresher(Reader(service, {"h": home}), 0.1)
        with refresher:
            assert emulator.wait_for(1, token=token, timeout=10)
            assert wait_until(lambda: refresher.runs >= 10, 10)   # ten intervals went by
        assert emulator.count(token=token, path="/api/v1/credits") == 1


def test_a_home_is_read_in_one_request_per_run_and_providers_without_a_credential_never(emulator, make_home):
    """SPEC §17: the refresher schedules homes. A home with one credential of four, a cache
    TTL far shorter than the interval: every run is one home read of that one provider --
    no fetch, no stats entry, no request for the three it has no credential for -- and
    one worker start in all (a warm worker for every later run)."""
    home = settled(make_home("rf-one", deepseek="sk-rf-one"))
    emulator.clear()
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls(), cache_ttl_s=0.01)) as service:
        refresher = Refresher(Reader(service, {"h": home}), 0.05)
        with refresher:
            assert wait_until(lambda: refresher.runs >= 10)
        stats = service.stats()
    runs = refresher.runs
    assert stats["home_reads"] == runs and emulator.count(token="sk-rf-one") == runs
    assert sum(stats["fetches"].values()) == runs and stats["errors"] == {}
    assert stats["spawns"] == 1 and stats["provider_lists"] == 1
    assert {r.token for r in emulator.requests()} == {"sk-rf-one"}


def test_a_credential_added_later_is_refreshed_from_the_next_run(emulator, make_home):
    home = make_home("rf-grow", deepseek="sk-rf-grow")
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        refresher = Refresher(Reader(service, {"h": home}), 0.05)
        with refresher:
            assert emulator.wait_for(1, token="sk-rf-grow")
            make_home("rf-grow", deepseek="sk-rf-grow", anthropic="sk-ant-oat01-rf-grow")
            assert emulator.wait_for(1, token="sk-ant-oat01-rf-grow")


def test_refresher_threads_end_after_stop_and_service_close(emulator, make_home):
    home = make_home("rf-stop", deepseek="sk-rf-stop")
    before = {t.ident for t in threading.enumerate()}
    service = ProbeService(ProbeConfig(provider_urls=emulator.provider_urls()))
    refresher = Refresher(Reader(service, {"h": home}), 0.05)
    refresher.start()
    assert wait_until(lambda: refresher.runs >= 8)
    refresher.stop()
    service.close()
    refresher.join(10)
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("probe-refresher")]


def test_load_is_spread_over_the_interval(emulator, make_home):
    """First pass: home i of n is due at (i + 1/2) / n intervals -- never all at once. With
    20 homes over 2 s the first is due at 0.05 s and the last at 1.95 s.

    Asserted as "never early": the k-th request to arrive comes no sooner than the k-th due
    time (requests all at once would put the last one a few ms after the start, not 1.95 s).
    Lateness is not bounded: on a loaded machine the first requests wait for their workers
    to start, and a bound on the span between first and last request (it was >= 1.5 s)
    failed 3 runs in 3 there while the schedule was right."""
    homes = {f"h{i}": make_home(f"rf-spread-{i}", deepseek=f"sk-rf-spread-{i}") for i in range(20)}
    tokens = {f"sk-rf-spread-{i}" for i in range(20)}
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        refresher = Refresher(Reader(service, homes), 2.0)
        started = time.monotonic()      # the refresher schedules from a moment after this one
        with refresher:
            for token in tokens:
                assert emulator.wait_for(1, token=token, timeout=10)
    first_pass = sorted(min(r.at for r in emulator.requests() if r.token == token) for token in tokens)
    due = [started + (k + 0.5) / 20 * 2.0 for k in range(20)]
    early = [(k, round(due[k] - at, 3)) for k, at in enumerate(first_pass) if at < due[k]]
    assert early == [], f"requests before their due time (k, seconds early): {early}"


@pytest.fixture
def refreshed_backend(emulator, make_home):
    """An app whose reads come from a refresher's readings (refresh_s > 0, refresher off
    here so the test decides when readings are taken)."""
    homes = {"alice": make_home("rf-alice", anthropic="sk-ant-oat01-rf-alice", deepseek="sk-rf-alice")}
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        reader = Reader(service, homes)
        app = create_app(service, homes, TOKEN, refresh_s=60, reader=reader)
        with RunningApp(app) as running, httpx.Client(base_url=running.url, timeout=30) as client:
            yield client, reader, homes


def test_panel_polls_and_metrics_scrapes_make_no_provider_request(emulator, refreshed_backend):
    client, reader, homes = refreshed_backend
    reader.fetch("alice", "anthropic", refresh=True)
    reader.fetch("alice", "deepseek", refresh=True)
    before = emulator.count(token="sk-ant-oat01-rf-alice") + emulator.count(token="sk-rf-alice")
    for _ in range(5):
        text = client.get("/metrics").text
    for _ in range(3):
        assert client.get("/api/quota", params={"home": "alice", "provider": "anthropic"}).status_code == 200
    assert emulator.count(token="sk-ant-oat01-rf-alice") + emulator.count(token="sk-rf-alice") == before
    assert client.get("/api/homes").json()["refresh_s"] == 60
    snap = reader.latest("alice", "anthropic")
    session = snap.windows[0]
    # /metrics rounds a ratio to RATIO_DIGITS decimals (no 0.20199999999999999 float noise)
    assert f'quota_probe_window_used_ratio{{home="alice",provider="anthropic",window="{session.label}"}} ' \
           f'{round(session.used_percent / 100, RATIO_DIGITS)}' in text
    assert 'quota_probe_window_reset_timestamp_seconds{home="alice",provider="anthropic",window="Current session"}' in text
    assert 'quota_probe_snapshot_available{home="alice",provider="deepseek"} 1.0' in text
    assert 'quota_probe_snapshot_stale{home="alice",provider="deepseek"} 0.0' in text
    assert 'quota_probe_snapshot_age_seconds{home="alice",provider="deepseek"}' in text
    deepseek = reader.latest("alice", "deepseek")
    for entry in deepseek.balances:
        assert f'quota_probe_balance{{currency="{entry.currency}",home="alice",label="{entry.label}",' \
               f'provider="deepseek"}} {round(entry.amount, AMOUNT_DIGITS)}' in text
    if any(w.pace for w in snap.windows):
        assert "quota_probe_window_pace_delta_ratio{" in text
    assert str(homes["alice"]) not in text and "sk-" not in text


def test_a_reading_from_before_a_credential_change_is_never_served(emulator, refreshed_backend):
    """A stale result acting after a credential change: the reading was taken under the
    old token; once the home's files change, a read must fetch anew, not answer from it."""
    client, reader, homes = refreshed_backend
    old = reader.fetch("alice", "deepseek", refresh=True)
    env_file = homes["alice"] / ".env"
    env_file.write_text(env_file.read_text().replace("sk-rf-alice", "sk-rf-alice-new"))
    body = client.get("/api/quota", params={"home": "alice", "provider": "deepseek"}).json()
    assert emulator.count(token="sk-rf-alice-new") == 1
    assert body["details"] != list(old.details)
    assert "sk-rf-alice-new" not in str(body)
    # and metrics no longer export the old account's balance under this home
    assert reader.latest("alice", "deepseek").details == tuple(body["details"])


def test_a_reading_finished_after_a_rotation_is_not_kept_as_current(emulator, make_home):
    home = make_home("rf-race", deepseek="sk-rf-race-slow400-")
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        reader = Reader(service, {"h": home})
        worker = threading.Thread(target=lambda: reader.fetch("h", "deepseek", refresh=True))
        worker.start()
        assert emulator.wait_for(1, token="sk-rf-race-slow400-")
        service.invalidate(home=home)            # rotation while the probe is in flight
        worker.join()
        assert reader.latest("h", "deepseek") is None


@pytest.mark.parametrize("ttl_s, second_path", [("600", "cache"), ("0", "warm")])
def test_probe_serve_cache_ttl_s_sets_how_long_an_answer_is_served_from_the_cache(emulator, make_home, ttl_s,
                                                                                   second_path):
    home = make_home(f"rf-ttl-{ttl_s}", deepseek=f"sk-rf-ttl-{ttl_s}")
    port = free_port()
    env = {**os.environ, **emulator.env(), "PROBE_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "probe.cli", "serve", "--port", str(port), "--refresh-s", "0",
                             "--no-history", "--cache-ttl-s", ttl_s, "--home", f"h={home}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "quota-probe backend on" in proc.stdout.readline()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            paths = [client.get("/api/quota", params={"home": "h"}).json()[0]["probe"]["path"] for _ in range(2)]
        assert paths == ["slot_start", second_path]
        assert emulator.count(token=f"sk-rf-ttl-{ttl_s}") == (1 if second_path == "cache" else 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        proc.stdout.close()
        proc.stderr.close()


class _FailingOnce(Reader):
    """A Reader whose first home read raises ``failure`` (what a home read can raise deep
    inside: a RecursionError, "can't start new thread"), then reads for real; ``again`` is
    set by the next read of the home."""

    def __init__(self, service, homes, failure: BaseException) -> None:
        super().__init__(service, homes)
        self.failure = failure
        self.calls = 0
        self.again = threading.Event()

    def fetch_home(self, home_id, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise self.failure
        self.again.set()
        return super().fetch_home(home_id, **kwargs)


@pytest.mark.parametrize("failure", [RecursionError("maximum recursion depth exceeded"),
                                     RuntimeError("can't start new thread"), ValueError("a bug")],
                         ids=["recursion", "no-thread", "value-error"])
def test_refresher_drops_a_home_for_good_on_a_runtime_error(emulator, make_home, failure, caplog):
    """Issue #26 item 6: a RuntimeError from a home read (RecursionError, "can't start new
    thread" are RuntimeErrors) ended the runner thread silently and the home left the
    schedule. Only the service closing may end a runner: the failure is logged and the home
    is read again at its next turn."""
    home = make_home("rf-runtime", deepseek="sk-rf-runtime")
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        reader = _FailingOnce(service, {"h": home}, failure)
        with Refresher(reader, 0.05, concurrency=1):
            assert reader.again.wait(10), "the home was never read again after the failure"
            assert emulator.wait_for(1, token="sk-rf-runtime")
    assert "refreshing home h failed" in caplog.text
