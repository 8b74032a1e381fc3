"""``probe rotate``: in-process (shared cache) and ``--server`` (POST /api/rotate).

The server side lands with the HTTP backend; until then the client is tested against a
minimal stub that records what it was sent."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from probe import ProbeConfig, ProbeService
from support import run_cli

pytestmark = pytest.mark.timeout(60)




@pytest.fixture
def stub_backend():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            auth = self.headers.get("Authorization")
            received.append({"path": self.path, "body": body, "auth": auth})
            status = 401 if not auth else 403 if auth != "Bearer right-token" else 404 if body["home"] != "main" else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_rotate_server_sends_home_provider_and_token(stub_backend):
    url, received = stub_backend
    result = run_cli("rotate", "--server", url, "--home", "main", "--provider", "anthropic", "--token", "right-token")
    assert result.returncode == 0, result.stderr
    assert received[-1] == {"path": "/api/rotate", "body": {"home": "main", "provider": "anthropic"},
                            "auth": "Bearer right-token"}
    via_env = run_cli("rotate", "--server", url, "--home", "main", env={"PROBE_TOKEN": "right-token"})
    assert via_env.returncode == 0 and received[-1]["body"] == {"home": "main", "provider": None}


@pytest.mark.parametrize("args, message", [
    (["--token", "wrong-token"], "rejected the token"),
    (["--token", "right-token", "--home", "nope"], "no home 'nope'"),
    ([], "bearer token is needed"),
])
def test_rotate_server_failures_are_clear_and_never_echo_the_token(stub_backend, args, message):
    url, _ = stub_backend
    home = ["--home", "main"] if "--home" not in args else []
    result = run_cli("rotate", "--server", url, *home, *args)
    assert result.returncode == 1 and message in result.stderr
    assert "wrong-token" not in result.stderr + result.stdout


def test_rotate_server_unreachable(tmp_path):
    result = run_cli("rotate", "--server", "http://127.0.0.1:9", "--home", "main", "--token", "t")
    assert result.returncode == 1 and "Could not reach" in result.stderr


def test_rotate_in_process_drops_shared_cache_entries(emulator, make_home, tmp_path):
    home = make_home("rot-cli", deepseek="sk-rot-cli")
    cache_dir = tmp_path / "cache"
    with ProbeService(ProbeConfig(cache_dir=cache_dir, provider_urls=emulator.provider_urls())) as service:
        service.fetch("deepseek", home=home)
    assert list(cache_dir.rglob("*.json"))
    result = run_cli("rotate", "--home", str(home), "--cache-dir", str(cache_dir))
    assert result.returncode == 0 and "Rotated" in result.stdout
    assert not list(cache_dir.rglob("*.json"))
    missing = run_cli("rotate", "--home", str(tmp_path / "missing"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr


@pytest.fixture
def proxy_listener():
    """What an ``HTTP_PROXY`` would be: a listener on 127.0.0.1 that records every byte it
    is sent (and answers nothing useful)."""
    import socket

    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    received.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    received.append(b"<connection>")

    thread = threading.Thread(target=serve)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    stop.set()
    thread.join()
    listener.close()


def test_rotate_server_sends_its_bearer_token_through_http_proxy(stub_backend, proxy_listener):
    """Issue #26 item 10: ``probe rotate --server`` honoured HTTP_PROXY, so the bearer token
    went to whatever proxy the environment named -- even for a loopback backend. The
    rotate client uses no proxy: the token travels to the backend and nowhere else."""
    url, received = stub_backend
    proxy, through_proxy = proxy_listener
    env = {name: proxy for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                    "all_proxy")}
    env.update(NO_PROXY="", no_proxy="")
    result = run_cli("rotate", "--server", url, "--home", "main", "--token", "right-token", env=env)
    assert through_proxy == []
    assert result.returncode == 0, result.stderr
    assert received[-1]["auth"] == "Bearer right-token"


def test_rotate_redis_takes_the_url_with_its_password_only_on_argv(tmp_path, stub_backend):
    """Issue #26 item 10: ``probe rotate --redis`` took the URL -- password included -- only
    on the command line, where every local user's ``ps`` shows it. It reads
    ``$PROBE_REDIS_URL`` as ``probe serve`` does; an explicit ``--server`` still wins."""
    from support import RedisServer

    with RedisServer(tmp_path, password="rotate-secret-pass") as server:
        result = run_cli("rotate", "--home", "alice", env={"PROBE_REDIS_URL": server.url})
        assert result.returncode == 0, result.stderr
        assert "across the cluster (generation 1)" in result.stdout
        assert "rotate-secret-pass" not in result.stdout + result.stderr
        url, received = stub_backend
        via_server = run_cli("rotate", "--server", url, "--home", "main", "--token", "right-token",
                             env={"PROBE_REDIS_URL": server.url})
        assert via_server.returncode == 0 and received[-1]["body"]["home"] == "main", via_server.stderr
        again = run_cli("rotate", "--home", "alice", env={"PROBE_REDIS_URL": server.url})
        assert "(generation 2)" in again.stdout, "the --server run rotated nothing in Redis"
