"""Shared fixtures: a real provider emulator on 127.0.0.1, throw-away homes, and a guard
that fails any test leaving a child process behind."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from probe.tools.demo import write_home
from support import live_children


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium for the real-browser tests; skips them where it is missing (put
    this fixture first, so nothing else is started for a skipped test)."""
    from system_parts import chromium

    return chromium()


@pytest.fixture(scope="session")
def emulator() -> Iterator["Emulator"]:  # noqa: F821
    from probe.tools.emulator import Emulator

    with Emulator() as emu:
        yield emu


@pytest.fixture
def emulator_env(emulator, monkeypatch: pytest.MonkeyPatch):
    """Point every provider's base URL at the emulator through the environment."""
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    return emulator


@pytest.fixture
def http() -> Iterator["ProviderHttp"]:  # noqa: F821
    """A worker's HTTP client (child side), for adapter tests run in the test process."""
    from workers.http import ProviderHttp

    client = ProviderHttp()
    yield client
    client.close()


@pytest.fixture
def make_home(tmp_path: Path) -> Callable[..., Path]:
    """``make_home("a", anthropic="sk-ant-oat-…")`` → a home directory with those tokens."""

    def make(name: str = "home", **tokens: str) -> Path:
        return write_home(tmp_path / "homes", name, **tokens)

    return make


@pytest.fixture
def make_service(emulator) -> Iterator[Callable[..., "ProbeService"]]:  # noqa: F821
    """``make_service(pool_size=1, ...)`` → a ProbeService talking to the emulator, closed
    after the test."""
    from probe import ProbeConfig, ProbeService

    services = []

    def make(**overrides):
        overrides.setdefault("provider_urls", emulator.provider_urls())
        service = ProbeService(ProbeConfig(**overrides))
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


def _spawn_methods() -> list[str]:
    from probe.pool.spawner import default_method

    return ["fork", "exec"] if default_method({}) == "fork" else ["exec"]


@pytest.fixture(params=_spawn_methods())
def spawn_method(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once per way a worker can start (SPEC §12): forked from the template
    process, and exec-started. ``PROBE_SPAWN`` is read when a spawner is created, and CLI
    subprocesses of the test inherit it."""
    monkeypatch.setenv("PROBE_SPAWN", request.param)
    return request.param


@pytest.fixture(autouse=True)
def no_server_path_in_http_bodies(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SPEC §2, §11: no path of the server reaches a client. Every HTTP response a test
    reads from 127.0.0.1 through httpx -- the app under :class:`support.RunningApp`, a
    ``probe serve`` subprocess, the emulator -- is checked here, once for the whole suite:
    its body must not hold the temp directory the tests' homes live in (pytest's
    ``tmp_path``, ``probe serve --demo``'s homes) or this checkout. A hit fails the call
    at once and the test at teardown (in case the test swallowed the error)."""
    from support import server_paths_in

    import httpx

    found: list[str] = []

    def check(response: httpx.Response) -> None:
        if response.request.url.host not in ("127.0.0.1", "localhost") or not response.is_closed:
            return
        leaked = server_paths_in(response.content, [v for _, v in response.request.url.params.multi_items() if v])
        if leaked:
            found.append(f"{response.request.method} {response.request.url.path}: {leaked}")
            raise AssertionError(f"a server path reached a client: {found[-1]}")

    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self, request, **kwargs):
        response = sync_send(self, request, **kwargs)
        check(response)
        return response

    async def asend(self, request, **kwargs):
        response = await async_send(self, request, **kwargs)
        check(response)
        return response

    monkeypatch.setattr(httpx.Client, "send", send)
    monkeypatch.setattr(httpx.AsyncClient, "send", asend)
    yield
    assert not found, f"server paths reached a client: {found}"


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    before = {p.pid for p in live_children()}
    yield
    deadline = time.monotonic() + 5.0
    leaked = [p for p in live_children() if p.pid not in before]
    while leaked and time.monotonic() < deadline:
        psutil.wait_procs(leaked, timeout=0.1)
        leaked = [p for p in live_children() if p.pid not in before]
    assert not leaked, f"test leaked processes: {[p.pid for p in leaked]}"


# -- the one "skipped:" line that ends every run ---------------------------------------------
def _skip_groups(reports) -> dict[str, list]:
    """Skipped tests by group (from ``system_parts.skip_part``'s reasons; any other skip is
    its own group, named by its reason): group -> [count, why, how to enable]."""
    from system_parts import REASON

    groups: dict[str, list] = {}
    for report in reports:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        match = REASON.match(reason)
        group, why, enable = match.group("group", "why", "enable") if match else (reason, None, None)
        entry = groups.setdefault(group, [0, why, enable])
        entry[0] += 1
    return groups


def _skip_line(groups: dict[str, list]) -> str:
    if not groups:
        return "skipped: none"
    parts = []
    for group, (count, why, enable) in groups.items():
        noun = "test" if count == 1 else "tests"
        parts.append(f"{count} {group} {noun} ({why} — {enable})" if why else f"{count} {noun} ({group})")
    return "skipped: " + "; ".join(parts)


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary, so it is the run's last line."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not hasattr(reporter, "stats") or config.option.collectonly:
        return
    reporter.write_line(_skip_line(_skip_groups(reporter.stats.get("skipped", []))))
