"""The fault matrix through the HTTP backend: real uvicorn on 127.0.0.1, real workers, the
emulator producing each failure. Every fault is a 200 carrying a typed snapshot error, the
event loop keeps answering while probes hang, no token appears in a response, and every
pool is healthy afterwards."""
from __future__ import annotations

import os
import signal
import threading

import httpx
import psutil
import pytest

from probe import ProbeConfig, ProbeService
from probe.server import create_app
from support import RunningApp, run_threads, wait_until, worker_pids

pytestmark = pytest.mark.timeout(90)
PROBE_TIMEOUT_S = 3.0
FAULTS = {
    # home id: (deepseek token, the code the panel must show)
    "hang": ("sk-bf-hang-", "timeout"),
    "unauth": ("sk-bf-401-", "unauthorized"),
    "forbidden": ("sk-bf-403-", "forbidden"),
    "limited": ("sk-bf-429-", "rate_limited"),
    "broken": ("sk-bf-500-", "provider_error"),
    "garbage": ("sk-bf-garbage-", "bad_response"),
    "huge": ("sk-bf-huge-", "bad_response"),
    "reset": ("sk-bf-reset-", "provider_error"),
}


@pytest.fixture
def backend(emulator, make_home):
    homes = {home_id: make_home(f"bf-{home_id}", deepseek=token) for home_id, (token, _) in FAULTS.items()}
    homes["good"] = make_home("bf-good", deepseek="sk-bf-good", openrouter="sk-or-v1-bf-good")
    homes["crash"] = make_home("bf-crash", deepseek="sk-bf-crash-slow8000-")
    homes["mixed"] = make_home("bf-mixed", anthropic="sk-ant-oat01-bf-mixed-hang-", deepseek="sk-bf-mixed")
    config = ProbeConfig(provider_urls=emulator.provider_urls(), probe_timeout_s=PROBE_TIMEOUT_S)
    with ProbeService(config) as service:
        with RunningApp(create_app(service, homes, "bf-token", poll_s=7)) as running:
            with httpx.Client(base_url=running.url, timeout=30) as client:
                yield client, service, homes


def test_every_fault_is_a_typed_snapshot_and_the_backend_stays_healthy(backend):
    client, service, homes = backend
    answers: dict[str, httpx.Response] = {}

    def ask(home_id: str) -> None:
        answers[home_id] = client.get("/api/quota", params={"home": home_id, "provider": "deepseek"})

    probes = [threading.Thread(target=ask, args=(home_id,)) for home_id in FAULTS]
    for thread in probes:
        thread.start()
    # While the hung probe holds its worker, the event loop still answers.
    assert wait_until(lambda: service.stats()["homes"].get(str(homes["hang"]), {}).get("busy") == 1)
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/quota", params={"home": "good", "provider": "openrouter"}).json()["available"]
    for thread in probes:
        thread.join(30)
    for home_id, (token, code) in FAULTS.items():
        response = answers[home_id]
        assert response.status_code == 200, (home_id, response.text)
        snap = response.json()
        assert snap["available"] is False and snap["error"]["code"] == code, (home_id, snap)
        assert token not in response.text and "sk-bf" not in response.text
    pool = client.get("/api/pool").json()
    for home_id in FAULTS:
        state = pool["homes"][home_id]
        assert state["alive"] <= state["slots"] and state["busy"] == 0, (home_id, state)
        assert all(psutil.pid_exists(w["pid"]) for w in state["workers"])
    assert pool["errors"].get("timeout", 0) >= 1
    good = client.get("/api/quota", params={"home": "good", "provider": "deepseek"}).json()
    assert good["available"] and good["error"] is None


def test_a_worker_killed_mid_request_is_worker_crashed_and_the_pool_heals(backend, emulator):
    client, service, homes = backend
    answer: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: answer.append(
        client.get("/api/quota", params={"home": "crash", "provider": "deepseek"})))
    caller.start()
    assert emulator.wait_for(token="sk-bf-crash-slow8000-")
    (pid,) = worker_pids(service, homes["crash"])
    os.kill(pid, signal.SIGKILL)
    caller.join(30)
    assert answer[0].status_code == 200 and answer[0].json()["error"]["code"] == "worker_crashed"
    assert "sk-bf-crash" not in answer[0].text
    state = client.get("/api/pool").json()["homes"]["crash"]
    assert state["busy"] == 0 and pid not in {w["pid"] for w in state["workers"]}


def test_one_hung_provider_does_not_hold_up_the_rest_of_a_homes_list(backend, emulator):
    """The list endpoint probes a home's providers side by side: DeepSeek is asked while
    Anthropic still hangs (no timeout recorded yet), and the list carries both answers."""
    client, service, _ = backend
    listing: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: listing.append(client.get("/api/quota", params={"home": "mixed"})))
    caller.start()
    assert emulator.wait_for(token="sk-bf-mixed")
    assert service.stats()["errors"].get("timeout", 0) == 0, "DeepSeek waited for the hung Anthropic probe"
    caller.join(30)
    codes = {s["provider"]: (s["error"] or {}).get("code") for s in listing[0].json()}
    assert codes == {"anthropic": "timeout", "deepseek": None}


def test_many_pollers_on_faulty_homes_leave_no_busy_worker_behind(backend):
    """Sixteen concurrent pollers across every faulty home: each gets a 200, and afterwards
    no worker is left marked busy or dead in any pool."""
    client, _, homes = backend
    ids = [home_id for home_id in FAULTS if home_id != "hang"] * 2

    def poll() -> list[int]:
        return [client.get("/api/quota", params={"home": h, "provider": "deepseek", "refresh": "1"}).status_code
                for h in ids]

    results = run_threads(16, poll)
    assert all(code == 200 for codes in results for code in codes)
    pool = client.get("/api/pool").json()
    for home_id in FAULTS:
        state = pool["homes"].get(home_id)
        if state:
            assert state["busy"] == 0 and all(psutil.pid_exists(w["pid"]) for w in state["workers"])
