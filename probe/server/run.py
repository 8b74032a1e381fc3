"""``probe serve``: the backend under uvicorn, optionally on the demo emulator."""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import secrets
from dataclasses import dataclass
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import uvicorn

from probe.monitor.alerts import DEFAULT_THRESHOLDS, Alerts, NotifyUrlError, check_notify_urls
from probe.config import ProbeConfig
from probe.monitor.history import DEFAULT_DAYS, History, default_path
from probe.monitor.readings import Reader
from probe.monitor.refresher import Refresher
from probe.home_set import HomeSet, ServedHomes
from probe.server import LOOPBACK_HOSTS, create_app
from probe.server.reload import HomeWatcher, scan_interval_s
from probe.service import ProbeService


DEMO_CACHE_TTL_S = 5.0
#: background refresh interval (SPEC §13): production default, and the demo's (so its
#: panel visibly changes within seconds)
DEFAULT_REFRESH_S = 300.0
DEMO_REFRESH_S = 10.0
#: on SIGTERM, requests in flight get this long to be answered before they are cancelled, so
#: the whole stop (then workers, template, history) stays within 5 s
GRACEFUL_S = 4.0


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


@contextlib.contextmanager
def demo_backend() -> Iterator[tuple[dict[str, Path], ProbeConfig, Callable[[ProbeService], None]]]:
    """Emulator + demo homes, and a ``prime(service)`` that gives the ``limited`` home one
    good reading before its Anthropic token starts answering 429 — so the panel shows
    what a rate-limited account looks like: the last reading, badged stale.

    The emulator also serves every installed plugin's EMULATOR route -- answered by a child
    process, since this is a service process and never imports a plugin module
    (``probe/tools/plugin_routes.py``) -- and the ``main`` home holds a demo credential for each."""
    from probe.tools.demo import LIMITED_ANTHROPIC_TOKEN, demo_homes, plugin_demo_credentials
    from probe.tools.emulator import ANTHROPIC_PATH, Emulator

    with Emulator(plugins=True) as emulator, \
            demo_homes(plugin_demo_credentials(emulator.plugin_routes.routes.values())) as homes:
        def prime(service: ProbeService) -> None:
            emulator.script(LIMITED_ANTHROPIC_TOKEN, emulator.quota_body(ANTHROPIC_PATH, LIMITED_ANTHROPIC_TOKEN))
            service.fetch("anthropic", home=homes["limited"])
            emulator.script(LIMITED_ANTHROPIC_TOKEN, {"type": "error", "error": {"type": "rate_limit_error"}},
                            status=429, headers={"Retry-After": "0"})

        # A short cache TTL, so the demo shows the stale badge (and refreshes) within seconds.
        yield homes, ProbeConfig(provider_urls=emulator.provider_urls(), cache_ttl_s=DEMO_CACHE_TTL_S), prime


@dataclass(frozen=True)
class HistoryOptions:
    """``--history PATH`` / ``--no-history`` / ``--history-days`` / ``--notify`` / ``--alert-at``.
    ``path`` None: the default path (a throw-away file with ``--demo``, so demo homes never
    mix into the user's own history); ``enabled`` False: no history and no alerts."""
    enabled: bool = True
    path: str | None = None
    days: float = DEFAULT_DAYS
    notify: tuple[str, ...] = ()
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS


def homes_root(homes: dict[str, Path]) -> Path:
    """The demo homes' common directory (a temporary one, removed with the demo)."""
    return Path(os.path.commonpath([str(p) for p in homes.values()]))


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``probe serve`` runs with (the command line over the config file).
    ``homes`` None: the Hermes root and its profiles (``probe.home_set``), else exactly
    those. Compared by value: a reload applies what changed."""
    host: str = "127.0.0.1"
    port: int = 8765
    homes: Mapping[str, Path] | None = None
    demo: bool = False
    allow_remote: bool = False
    poll_s: float = 30.0
    cache_dir: str | None = None
    cache_ttl_s: float | None = None
    refresh_s: float | None = None
    history: HistoryOptions = HistoryOptions()
    redis_url: str | None = None
    redis_prefix: str = "quota-probe:"

    def effective_refresh_s(self) -> float:
        if self.refresh_s is not None:
            return self.refresh_s
        return DEMO_REFRESH_S if self.demo else DEFAULT_REFRESH_S


def serve(options: ServeOptions, *, reread: Callable[[], ServeOptions] | None = None, echo=print) -> None:
    """Run the backend until SIGINT/SIGTERM; SIGHUP calls ``reread`` and applies what
    changed (``probe.server.reload``). Shutdown order: uvicorn stops accepting and gives
    requests in flight up to :data:`GRACEFUL_S` to be answered, the home watcher and the
    refresher are told to stop, the service closes (which ends any probe still running,
    hung provider or not, and the template process), the refresher's threads are joined,
    alert delivery stops, and the history writer finishes its queue -- nothing is left
    running and nothing waits for a provider."""
    history_options = options.history
    if history_options.notify and not history_options.enabled:
        raise ServeError("--notify needs the history database (alert state lives there); drop --no-history.")
    try:
        notify = check_notify_urls(history_options.notify)
    except NotifyUrlError as exc:
        raise ServeError(str(exc)) from None
    host, port = options.host, options.port
    if not is_loopback(host) and not options.allow_remote:
        raise ServeError(f"Refusing to bind {host}: it is not a loopback address. Pass --allow-remote "
                         "if other machines should reach this backend (it will still need the token to rotate).")
    token, token_given = rotate_token(os.environ)
    demo = options.demo
    with contextlib.ExitStack() as stack:
        reload_signal = stack.enter_context(_sighup_reloads())
        prime = demo_dir = None
        base_homes: dict[str, Path] = {}
        if demo:
            base_homes, config, prime = stack.enter_context(demo_backend())
            demo_dir = homes_root(base_homes)   # before --home adds homes that live elsewhere
        else:
            config = ProbeConfig()
        base_config = config
        config = live_config(config, options)
        home_set = home_set_of(options, base_homes)
        homes = ServedHomes(home_set.scan())
        if options.redis_url:
            # cluster mode: a home's cluster identity is its configured id (SPEC §15); homes
            # found or added later are known by their path's hash (ProbeConfig.home_ids)
            config = dataclasses.replace(config, redis_url=options.redis_url, redis_prefix=options.redis_prefix,
                                         home_ids={home_id: str(path) for home_id, path in homes.items()})
        refresh_s = options.effective_refresh_s()
        history = alerts = None
        if history_options.enabled:
            path = history_options.path or (demo_dir / "history.sqlite3" if demo else default_path())
            history = History(path, days=history_options.days)
            if history.start():
                stack.callback(history.close)                              # last: the queued writes
                alerts = Alerts(history, notify, history_options.thresholds)
                history.after_write, history.committed = alerts.record, alerts.committed
                alerts.start()
                stack.callback(alerts.close)
                history.load_recent(list(homes))
            else:
                history = None
        try:
            service = stack.enter_context(ProbeService(config))
        except ValueError as exc:   # e.g. Redis refused the password: a clear error at start-up
            raise ServeError(str(exc)) from None
        if prime is not None:
            prime(service)
        reader = Reader(service, homes, history=history)
        app = create_app(service, homes, token, poll_s=options.poll_s, refresh_s=refresh_s, reader=reader,
                         history=history, allowed_hosts=None if options.allow_remote else LOOPBACK_HOSTS)
        # Bind before announcing: the printed URL accepts connections at once (they wait
        # in the backlog until uvicorn runs), and a busy port is a clear error up front.
        sock = stack.enter_context(_listening_socket(host, port))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                               timeout_graceful_shutdown=GRACEFUL_S))
        shown_host = f"[{host}]" if ":" in host else host
        echo(f"quota-probe backend on http://{shown_host}:{port}/  (homes: {', '.join(homes)})")
        if home_set.discovering:
            echo(f"serving the Hermes root {home_set.root} and its profiles; new ones appear within "
                 f"{scan_interval_s(refresh_s) * 2:g} s")
            if not Path(home_set.root).is_dir():   # a machine without Hermes (yet): say so up front
                echo(f"note: {home_set.root} does not exist (no Hermes here yet?): the panel shows "
                     "home_not_found until it does; pass --home ID=PATH for another directory, or "
                     "--demo to try the panel on the built-in emulator")
        if demo:
            echo(f"demo homes in {demo_dir}")   # the console only: HTTP clients see ids
        if not token_given:
            echo(f"rotate token (POST /api/rotate): {token}")
        if history is not None:
            echo(f"history: {history.path}" + (f"; alerts at {','.join(map(str, history_options.thresholds))} % "
                                                f"to {len(notify)} target(s)" if notify else ""))
        refresher = None
        if refresh_s > 0:
            refresher = Refresher(reader, refresh_s)
            refresher.start()
            stack.callback(_stop_refresher, refresher, service)
            echo(f"background refresh every {refresh_s:g} s")
        watcher = HomeWatcher(options, home_set, homes, service, reader, refresher,
                              base_homes=base_homes, base_config=base_config, reread=reread)
        watcher.start()
        stack.callback(watcher.stop)
        reload_signal.attach(watcher)
        with _sigterm_exits_cleanly():
            server.run(sockets=[sock])


def rotate_token(environ: "os._Environ[str] | dict[str, str]") -> tuple[str, bool]:
    """(the bearer token for ``POST /api/rotate``, whether the operator gave it). An empty
    or blank ``PROBE_TOKEN`` -- a systemd ``Environment=PROBE_TOKEN=``, an unset shell
    variable exported -- counts as unset: a random token is made and printed, never one
    nobody knows. Surrounding blanks are dropped (the endpoint compares the stripped token)."""
    given = (environ.get("PROBE_TOKEN") or "").strip()
    return (given, True) if given else (secrets.token_urlsafe(24), False)


def live_config(config: ProbeConfig, options: ServeOptions) -> ProbeConfig:
    """``config`` with the service settings a serve option (and so a reload) sets."""
    if options.cache_dir is not None:
        config = dataclasses.replace(config, cache_dir=options.cache_dir)
    if options.cache_ttl_s is not None:
        config = dataclasses.replace(config, cache_ttl_s=options.cache_ttl_s)
    return config


def home_set_of(options: ServeOptions, base_homes: Mapping[str, Path]) -> HomeSet:
    """The homes to serve: the demo's (if any) with ``options.homes``; with neither, the
    Hermes root and its profiles."""
    fixed = {**base_homes, **(options.homes or {})}
    return HomeSet(fixed or None)


class _ReloadSignal:
    """SIGHUP, from the moment ``probe serve`` starts: until the home watcher exists a
    reload asked for is remembered (a ``systemctl reload`` right after start must neither
    kill the process -- SIGHUP's default -- nor be lost), then handed to the watcher."""

    def __init__(self) -> None:
        self._watcher: HomeWatcher | None = None
        self._pending = False

    def __call__(self, signum: int, frame: object) -> None:
        # a signal handler: it only sets a flag; the reload runs on the watcher's thread
        if self._watcher is not None:
            self._watcher.request_reload()
        else:
            self._pending = True

    def attach(self, watcher: "HomeWatcher") -> None:
        self._watcher = watcher
        if self._pending:
            watcher.request_reload()


@contextlib.contextmanager
def _sighup_reloads() -> Iterator[_ReloadSignal]:
    handler = _ReloadSignal()
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        yield handler
        return
    previous = signal.signal(signal.SIGHUP, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGHUP, previous)


def _stop_refresher(refresher: Refresher, service: ProbeService) -> None:
    """Stop taking work, close the service (a refresh probe stuck on a hung provider ends
    with its worker), then wait for the refresher's threads. The service's own exit
    callback closes it again later: ``close()`` is idempotent."""
    refresher.stop()
    service.close()
    refresher.join()


@contextlib.contextmanager
def _sigterm_exits_cleanly() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGTERM, then re-raises the signal under the handler
    that was in place before it ran: with the default one the process would die right there,
    skipping our own clean-up (refresher, service). Ours turns it into ``SystemExit(0)``, so
    the clean-up runs and a SIGTERM ends ``probe serve`` with status 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_cleanly(signum: int, frame: object) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, exit_cleanly)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _listening_socket(host: str, port: int) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on an accepted socket whose
    # proto says TCP (base_events._set_nodelay), and without it every response on a
    # kept-alive connection waited ~40 ms for the client's delayed ACK (Nagle; measured:
    # 45 ms vs 0.9 ms per GET /healthz)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
