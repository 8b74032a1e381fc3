"""The HTTP backend over real HTTP: uvicorn on 127.0.0.1, the emulator behind the service."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import pytest

from probe import ProbeConfig, ProbeService
from probe.server import create_app
from probe.server.run import is_loopback
from support import RunningApp, run_cli, wait_until

pytestmark = pytest.mark.timeout(60)
TOKEN = "test-rotate-token-0123456789"


@pytest.fixture
def backend(emulator, make_home):
    homes = {
        "alice": make_home("srv-alice", anthropic="sk-ant-oat01-srv-alice", deepseek="sk-srv-alice"),
        "bob": make_home("srv-bob", openrouter="sk-or-v1-srv-bob"),
        "slow": make_home("srv-slow", deepseek="sk-srv-slow-slow3000-"),
        "empty": make_home("srv-empty"),
    }
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        with RunningApp(create_app(service, homes, TOKEN, poll_s=7)) as running:
            with httpx.Client(base_url=running.url, timeout=30) as client:
                yield client, service, homes


def test_quota_one_provider_and_the_list(backend):
    client, _, homes = backend
    one = client.get("/api/quota", params={"home": "alice", "provider": "anthropic"})
    assert one.status_code == 200 and one.json()["provider"] == "anthropic" and one.json()["available"]
    assert one.json()["home"] == "alice"   # the configured id: no server path reaches a client (SPEC §11)
    assert str(homes["alice"].resolve()) not in one.text
    listing = client.get("/api/quota", params={"home": "alice"}).json()
    assert [s["provider"] for s in listing] == ["anthropic", "deepseek"]   # only providers with a credential
    assert client.get("/api/quota", params={"home": "empty"}).json() == []


def test_a_cold_home_over_http_is_one_worker_start(backend):
    """SPEC §17: ``GET /api/quota?home=ID`` reads the home in one worker request, so a cold
    home of two providers starts one process, and both answers name that one worker."""
    client, service, _ = backend
    before = service.stats()["spawns"]
    listing = client.get("/api/quota", params={"home": "alice"}).json()
    assert [(s["provider"], s["probe"]["path"]) for s in listing] == [("anthropic", "slot_start"),
                                                                       ("deepseek", "slot_start")]
    assert len({s["probe"]["worker_pid"] for s in listing}) == 1
    assert service.stats()["spawns"] - before == 1 and service.stats()["home_reads"] == 1


def test_etag_and_if_none_match(backend):
    client, _, _ = backend
    first = client.get("/api/quota", params={"home": "alice", "provider": "deepseek"})
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = client.get("/api/quota", params={"home": "alice", "provider": "deepseek"}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = client.get("/api/quota", params={"home": "alice", "provider": "deepseek"}, headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200


def test_rotate_needs_the_token(backend):
    client, service, homes = backend
    client.get("/api/quota", params={"home": "bob", "provider": "openrouter"})
    body = {"home": "bob", "provider": "openrouter"}
    missing = client.post("/api/rotate", json=body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert "bearer" in missing.headers["www-authenticate"].lower()
    wrong = client.post("/api/rotate", json=body, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403 and "wrong" not in wrong.text
    generation = service.stats()["homes"][str(homes["bob"].resolve())]["generation"]
    ok = client.post("/api/rotate", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 204
    assert service.stats()["homes"][str(homes["bob"].resolve())]["generation"] == generation + 1
    assert client.get("/api/quota", params={"home": "bob", "provider": "openrouter"}).json()["probe"]["path"] != "cache"


@pytest.mark.parametrize("body, status", [
    ({"home": "nobody"}, 404), ({"home": "../etc"}, 404), ({"home": "/etc"}, 404),
    ({"home": "bob", "provider": "gemini"}, 400), ({"home": ["bob"]}, 404), ("not an object", 400),
])
def test_rotate_bad_bodies(backend, body, status):
    client, _, _ = backend
    response = client.post("/api/rotate", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == status and "error" in response.json()


@pytest.mark.parametrize("params, status, code", [
    ({"home": "nobody"}, 404, "home_not_found"),
    ({"home": "../etc"}, 404, "home_not_found"),
    ({"home": "/etc"}, 404, "home_not_found"),
    ({"home": "alice/../bob"}, 404, "home_not_found"),
    ({"home": "alice", "provider": "gemini"}, 400, "unknown_provider"),
    ({"home": "alice", "provider": "x" * 10000}, 400, "bad_request"),
    ({"home": "a" * 5000}, 400, "bad_request"),
    ({"home": "alice\x00"}, 404, "home_not_found"),
    ({"home": "alice\n"}, 404, "home_not_found"),
    ({"home": "$(touch /tmp/pwned); alice"}, 404, "home_not_found"),
    ({"home": ""}, 404, "home_not_found"),
    ({}, 404, "home_not_found"),   # several homes configured: the id is required
])
def test_quota_bad_requests(backend, params, status, code):
    client, service, _ = backend
    response = client.get("/api/quota", params=params)
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert "\x00" not in response.text and "\n" not in response.json()["error"]["message"]
    assert all("etc" not in home for home in service.stats()["homes"])


def test_a_slow_probe_does_not_block_the_event_loop(backend, emulator):
    """While a probe takes 3 s, /healthz keeps answering: service calls run in threads."""
    client, _, _ = backend
    done = threading.Event()

    def slow_request():
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            own.get("/api/quota", params={"home": "slow", "provider": "deepseek"})
        done.set()

    thread = threading.Thread(target=slow_request)
    thread.start()
    assert wait_until(lambda: emulator.count(token="sk-srv-slow-slow3000-") == 1)
    answered = 0
    while not done.is_set() and answered < 5:
        assert client.get("/healthz", timeout=2.0).json()["ok"] is True
        answered += 1
    assert answered == 5, "healthz was not answered while the probe was in flight"
    thread.join()


def test_pool_metrics_homes_and_panel(backend):
    client, _, _ = backend
    client.get("/api/quota", params={"home": "alice", "provider": "deepseek"})
    pool = client.get("/api/pool").json()
    assert {"fetches", "errors", "homes"} <= set(pool) and "alice" in pool["homes"] and "srv-alice" not in json.dumps(pool)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in ("quota_probe_fetches_total", "quota_probe_errors", "quota_probe_fetch_seconds_bucket",
                 "quota_probe_workers_alive", "quota_probe_workers_busy"):
        assert name in text, name
    assert 'quota_probe_workers_alive{home="alice"}' in text
    names = ["anthropic", "openai-codex", "openrouter", "deepseek", "zai", "kimi-coding", "kimi-coding-cn", "minimax",
             "minimax-cn", "copilot", "nous"]
    homes = client.get("/api/homes").json()
    labels = homes.pop("labels")
    assert homes.pop("version")   # the panel's footer (tests/test_version.py)
    assert homes == {"homes": ["alice", "bob", "slow", "empty"], "providers": names, "poll_s": 7, "refresh_s": 0.0,
                     "history": False}
    assert list(labels) == names and labels["copilot"] == "GitHub Copilot" and labels["kimi-coding-cn"] == \
        "Kimi Coding (China)"
    page = client.get("/")
    assert page.status_code == 200 and "Account quotas" in page.text
    assert "http" not in page.text.replace("http-equiv", "")   # no CDN, no external URL
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/nope").json()["error"]["code"] == "not_found"


def test_loopback_detection_and_remote_bind_refusal():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    result = subprocess.run([sys.executable, "-m", "probe.cli", "serve", "--host", "0.0.0.0", "--demo"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--allow-remote" in result.stderr




def test_rotate_cli_talks_to_the_real_endpoint(backend):
    client, service, homes = backend
    client.get("/api/quota", params={"home": "alice", "provider": "deepseek"})
    key = str(homes["alice"].resolve())
    before = service.stats()["homes"][key]["generation"]
    url = str(client.base_url)
    assert run_cli("rotate", "--server", url, "--home", "alice", "--token", TOKEN).returncode == 0
    assert service.stats()["homes"][key]["generation"] == before + 1
    wrong = run_cli("rotate", "--server", url, "--home", "alice", "--token", "nope")
    assert wrong.returncode == 1 and "rejected the token" in wrong.stderr
    unknown = run_cli("rotate", "--server", url, "--home", "../alice", "--token", TOKEN)
    assert unknown.returncode == 1 and "no home" in unknown.stderr


def test_status_cli_locally_and_from_a_backend(backend):
    client, service, homes = backend
    snap = client.get("/api/quota", params={"home": "bob", "provider": "openrouter"}).json()
    pid = snap["probe"]["worker_pid"]
    local = run_cli("status", "--json")
    assert local.returncode == 0
    found = json.loads(local.stdout)[str(homes["bob"].resolve())]
    assert pid in [w["pid"] for w in found["workers"]]
    remote = run_cli("status", "--server", str(client.base_url))
    assert remote.returncode == 0 and f"pid {pid}" in remote.stdout and "slots" in remote.stdout


def test_dns_rebinding_host_header_is_refused(backend):
    """A page on evil.example whose name resolves to 127.0.0.1 must not read the API."""
    client, _, _ = backend
    assert client.get("/api/quota", params={"home": "alice"}, headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/healthz", headers={"Host": "localhost:8765"}).status_code == 200


@pytest.mark.parametrize("value", ["", "   "], ids=["empty", "blank"])
def test_probe_token_set_but_empty_yields_a_random_token_never_printed(emulator, make_home, value):
    """Issue #26 item 10: ``PROBE_TOKEN=`` (set, empty) made ``probe serve`` pick a random
    token and print nothing, since the variable was "set": no one could ever rotate. An
    empty (or blank) PROBE_TOKEN is treated as unset: a token is made and printed, and it
    works."""
    import os
    import signal

    from support import free_port

    home = make_home("srv-empty-token", deepseek="sk-srv-empty-token")
    port = free_port()
    env = {**os.environ, **emulator.env(), "PROBE_TOKEN": value}
    proc = subprocess.Popen([sys.executable, "-m", "probe.cli", "serve", "--port", str(port), "--no-history",
                             "--refresh-s", "600", "--home", f"h={home}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or not lines[-1].startswith("background refresh"):   # the last line serve prints
            line = proc.stdout.readline()
            assert line, f"serve exited: {proc.stderr.read()}"
            lines.append(line.strip())
        printed = [line.rsplit(" ", 1)[1] for line in lines if line.startswith("rotate token")]
        assert printed and len(printed[0]) >= 24, lines
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answer = client.post("/api/rotate", json={"home": "h"}, headers={"Authorization": f"Bearer {printed[0]}"})
            assert answer.status_code == 204
            assert client.post("/api/rotate", json={"home": "h"},
                               headers={"Authorization": "Bearer"}).status_code == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},                       # another port of localhost: not this origin
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
], ids=["sec-fetch-cross-site", "sec-fetch-same-site", "foreign-origin", "null-origin"])
def test_any_web_page_can_make_real_provider_requests_with_refresh(backend, emulator, headers):
    """Issue #26 item 10: a page in the operator's browser cannot read the answer (no CORS)
    but could still make the backend call a provider with ``GET /api/quota?...&refresh=1``
    (an ``<img src>`` would do). A cross-site ``refresh`` is refused with 403 and no
    provider request; the same read without ``refresh`` is answered (cache rules apply),
    and the panel's own refresh (same origin), a typed URL and a client that sends neither
    header (curl, a server) still refresh."""
    client, _, _ = backend
    params = {"home": "alice", "provider": "deepseek"}
    assert client.get("/api/quota", params=params).status_code == 200
    before = emulator.count(token="sk-srv-alice")
    refused = client.get("/api/quota", params={**params, "refresh": "1"}, headers=headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "cross_site_refresh"
    assert client.get("/api/quota", params={"home": "alice", "refresh": "1"}, headers=headers).status_code == 403
    assert emulator.count(token="sk-srv-alice") == before
    assert client.get("/api/quota", params=params, headers=headers).status_code == 200   # a plain read: cached
    assert emulator.count(token="sk-srv-alice") == before
    own = f"http://{client.base_url.host}:{client.base_url.port}"
    for allowed in ({"Sec-Fetch-Site": "same-origin", "Origin": own}, {"Sec-Fetch-Site": "none"}, {}):
        assert client.get("/api/quota", params={**params, "refresh": "1"}, headers=allowed).status_code == 200
    assert emulator.count(token="sk-srv-alice") == before + 3


def test_probe_serve_answers_kept_alive_connections_without_nagle():
    """``probe serve`` listens on a socket asyncio recognizes as TCP, so every accepted
    connection gets TCP_NODELAY: without it each response on a kept-alive connection (every
    poll of a panel or of hermes-webui's backend) waited ~40 ms for a delayed ACK."""
    import asyncio
    import socket

    from probe.server.run import _listening_socket

    async def nodelay_of_accepted(sock: socket.socket) -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        async def accepted(reader, writer) -> None:
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    with _listening_socket("127.0.0.1", 0) as sock:
        assert asyncio.run(nodelay_of_accepted(sock)) != 0
