"""``probe serve``: the backend under uvicorn, optionally on the demo emulator."""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from probe.config import ProbeConfig
from probe.server import LOOPBACK_HOSTS, create_app
from probe.service import ProbeService


DEMO_CACHE_TTL_S = 5.0


class ServeError(Exception):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def parse_homes(specs: tuple[str, ...]) -> dict[str, Path]:
    """``ID=PATH`` pairs; ids are short words, paths must be existing directories."""
    homes: dict[str, Path] = {}
    for spec in specs:
        home_id, sep, path = spec.partition("=")
        if not sep or not home_id or not path:
            raise ServeError(f"--home takes ID=PATH, not {spec!r}.")
        if len(home_id) > 64 or not all(c.isalnum() or c in "-_." for c in home_id):
            raise ServeError(f"Home id {home_id!r} must be letters, digits, '-', '_' or '.' (at most 64).")
        directory = Path(path).expanduser().resolve()
        if not directory.is_dir():
            raise ServeError(f"Home {home_id!r}: {directory} is not a directory.")
        homes[home_id] = directory
    return homes


@contextlib.contextmanager
def demo_backend() -> Iterator[tuple[dict[str, Path], ProbeConfig, Callable[[ProbeService], None]]]:
    """Emulator + demo homes, and a ``prime(service)`` that gives the ``limited`` home one
    good reading before its Anthropic token starts answering 429 — so the panel shows
    what a rate-limited account looks like: the last reading, badged stale."""
    from probe.demo import LIMITED_ANTHROPIC_TOKEN, demo_homes
    from probe.emulator import ANTHROPIC_PATH, Emulator, quota_body

    with Emulator() as emulator, demo_homes() as homes:
        def prime(service: ProbeService) -> None:
            emulator.script(LIMITED_ANTHROPIC_TOKEN, quota_body(ANTHROPIC_PATH, LIMITED_ANTHROPIC_TOKEN))
            service.fetch("anthropic", home=homes["limited"])
            emulator.script(LIMITED_ANTHROPIC_TOKEN, {"type": "error", "error": {"type": "rate_limit_error"}},
                            status=429, headers={"Retry-After": "0"})

        # A short cache TTL, so the demo shows the stale badge (and refreshes) within seconds.
        yield homes, ProbeConfig(provider_urls=emulator.provider_urls(), cache_ttl_s=DEMO_CACHE_TTL_S), prime


def serve(*, host: str, port: int, home_specs: tuple[str, ...], demo: bool, allow_remote: bool,
          poll_s: float, cache_dir: str | None = None, echo=print) -> None:
    if not is_loopback(host) and not allow_remote:
        raise ServeError(f"Refusing to bind {host}: it is not a loopback address. Pass --allow-remote "
                         "if other machines should reach this backend (it will still need the token to rotate).")
    token = os.environ.get("PROBE_TOKEN") or secrets.token_urlsafe(24)
    with contextlib.ExitStack() as stack:
        prime = None
        if demo:
            homes, config, prime = stack.enter_context(demo_backend())
        else:
            homes, config = {}, ProbeConfig()
        if cache_dir is not None:
            config = dataclasses.replace(config, cache_dir=cache_dir)
        homes.update(parse_homes(home_specs))
        if not homes:
            homes = {"default": Path(os.environ.get("HERMES_HOME") or Path.home() / ".hermes").expanduser().resolve()}
        service = stack.enter_context(ProbeService(config))
        if prime is not None:
            prime(service)
        app = create_app(service, homes, token, poll_s=poll_s,
                         allowed_hosts=None if allow_remote else LOOPBACK_HOSTS)
        # Bind before announcing: the printed URL accepts connections at once (they wait
        # in the backlog until uvicorn runs), and a busy port is a clear error up front.
        sock = stack.enter_context(_listening_socket(host, port))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        shown_host = f"[{host}]" if ":" in host else host
        echo(f"quota-probe backend on http://{shown_host}:{port}/  (homes: {', '.join(homes)})")
        if "PROBE_TOKEN" not in os.environ:
            echo(f"rotate token (POST /api/rotate): {token}")
        server.run(sockets=[sock])


@contextlib.contextmanager
def _listening_socket(host: str, port: int) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServeError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}).") from None
        sock.listen(128)
        yield sock
    finally:
        sock.close()
