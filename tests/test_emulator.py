"""The provider emulator as a real HTTP server: shapes, scenarios, latency, clean stop."""
from __future__ import annotations

import statistics
import threading
import time

import httpx
import psutil
import pytest

from probe.emulator import (ANTHROPIC_PATH, CODEX_PATHS, DEEPSEEK_PATH, OPENROUTER_CREDITS_PATH,
                            OPENROUTER_KEY_PATH, Emulator, quota_body, scenario_for)

pytestmark = pytest.mark.timeout(30)
BETA = {"anthropic-beta": "oauth-2025-04-20"}


def get(emulator: Emulator, path: str, token: str | None = "tok", **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(emulator.base_url + path, headers={**auth, **headers}, timeout=10)


def test_each_path_serves_its_provider_shape(emulator):
    body = get(emulator, ANTHROPIC_PATH, **BETA).json()
    assert {"five_hour", "seven_day", "extra_usage"} <= set(body)
    assert 0 <= body["five_hour"]["utilization"] <= 100 and body["five_hour"]["resets_at"].endswith("+00:00")
    for path in CODEX_PATHS:
        body = get(emulator, path).json()
        assert body["rate_limit"]["primary_window"]["limit_window_seconds"] == 18000
    assert set(get(emulator, OPENROUTER_CREDITS_PATH).json()["data"]) == {"total_credits", "total_usage"}
    assert "limit_remaining" in get(emulator, OPENROUTER_KEY_PATH).json()["data"]
    info = get(emulator, DEEPSEEK_PATH).json()["balance_infos"][0]
    assert isinstance(info["total_balance"], str) and info["currency"] in ("CNY", "USD")


def test_quota_is_deterministic_per_token_and_differs_between_tokens(emulator):
    a1 = get(emulator, DEEPSEEK_PATH, "token-a").json()
    a2 = get(emulator, DEEPSEEK_PATH, "token-a").json()
    b = get(emulator, DEEPSEEK_PATH, "token-b").json()
    assert a1 == a2 == quota_body(DEEPSEEK_PATH, "token-a") and a1 != b


@pytest.mark.parametrize("marker, status", [("-401-", 401), ("-403-", 403), ("-429-", 429), ("-500-", 500), ("-503-", 503)])
def test_status_markers(emulator, marker, status):
    response = get(emulator, DEEPSEEK_PATH, f"x{marker}y")
    assert response.status_code == status and "error" in response.json()
    if status == 429:
        assert response.headers["retry-after"] == "7"


def test_garbage_huge_reset_and_keyfail(emulator):
    garbage = get(emulator, DEEPSEEK_PATH, "x-garbage-")
    assert garbage.status_code == 200
    with pytest.raises(ValueError):
        garbage.json()
    assert len(get(emulator, DEEPSEEK_PATH, "x-huge-").content) > 2 * 1024 * 1024
    with pytest.raises(httpx.TransportError):
        get(emulator, DEEPSEEK_PATH, "x-reset-")
    assert get(emulator, OPENROUTER_KEY_PATH, "x-keyfail-").status_code == 500
    assert get(emulator, OPENROUTER_CREDITS_PATH, "x-keyfail-").status_code == 200


def test_slow_adds_the_asked_delay(emulator):
    start = time.perf_counter()
    assert get(emulator, DEEPSEEK_PATH, "x-slow120-").status_code == 200
    assert time.perf_counter() - start >= 0.12
    assert scenario_for("a-slow50-b").delay_ms == 50


def test_auth_and_routing_errors(emulator):
    assert get(emulator, DEEPSEEK_PATH, token=None).status_code == 401
    assert get(emulator, "/nope").status_code == 404
    assert get(emulator, ANTHROPIC_PATH).status_code == 400  # no anthropic-beta header


def test_script_overrides_and_recording(emulator):
    emulator.script("scripted-token", {"hello": 1}, status=202, headers={"X-Test": "yes"})
    emulator.script("scripted-token", {"only": "here"}, path="/user/balance")
    other = get(emulator, "/api/v1/credits", "scripted-token")
    assert other.status_code == 202 and other.json() == {"hello": 1} and other.headers["x-test"] == "yes"
    assert get(emulator, DEEPSEEK_PATH, "scripted-token").json() == {"only": "here"}
    recorded = [r for r in emulator.requests() if r.token == "scripted-token"]
    assert [r.path for r in recorded] == ["/api/v1/credits", "/user/balance"]
    assert recorded[0].headers["authorization"] == "Bearer scripted-token"
    assert emulator.count(token="scripted-token", path="/user/balance") == 1


def test_keep_alive_and_single_write_latency(emulator):
    """50 sequential GETs on one connection: one connection accepted, and no request pays
    the ~40 ms delayed-ACK of a two-piece reply (a sanity bound, not a benchmark)."""
    before = emulator.connections_accepted
    timings = []
    with httpx.Client() as client:
        for _ in range(50):
            start = time.perf_counter()
            client.get(emulator.base_url + DEEPSEEK_PATH, headers={"Authorization": "Bearer keepalive"})
            timings.append(time.perf_counter() - start)
    assert emulator.connections_accepted - before == 1
    assert statistics.median(timings) < 0.010


def test_hang_blocks_neither_other_requests_nor_stop():
    emulator = Emulator().start()
    threads_before = set(threading.enumerate())
    fds_before = psutil.Process().num_fds()
    hung_done = threading.Event()

    def hang():
        try:
            get(emulator, DEEPSEEK_PATH, "x-hang-")
        except httpx.HTTPError:
            pass
        hung_done.set()

    hanger = threading.Thread(target=hang)
    hanger.start()
    deadline = time.monotonic() + 10
    while emulator.count(token="x-hang-") == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert get(emulator, DEEPSEEK_PATH, "parallel").status_code == 200
    emulator.stop()
    assert hung_done.wait(10)
    hanger.join()
    emulator.stop()  # idempotent
    leftover = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert leftover == []
    assert psutil.Process().num_fds() <= fds_before


def test_request_log_is_bounded_but_counts_are_exact(monkeypatch):
    """A long-running emulator (a soak, ``probe serve --demo``) keeps the latest requests
    only, so it cannot grow without bound; counts still cover every request."""
    import probe.emulator as module

    monkeypatch.setattr(module, "REQUEST_LOG_MAX", 5)
    with Emulator() as emulator:
        with httpx.Client() as client:
            for _ in range(12):
                client.get(emulator.base_url + DEEPSEEK_PATH, headers={"Authorization": "Bearer bounded"})
        assert len(emulator.requests()) == 5
        assert emulator.count(token="bounded") == 12 and emulator.count(path=DEEPSEEK_PATH) == 12
