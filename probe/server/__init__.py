"""The settings-panel polling backend: a Starlette app over a :class:`ProbeService`.

``create_app(service, homes, token)`` returns an ASGI app a user can run with uvicorn
(``probe serve``) or mount inside an existing one. Rules it keeps:

* homes are addressed by the operator's configured id only; nothing a client sends is
  ever used as a path;
* every service call runs in a worker thread, at most ``max_threads`` at once, so the
  event loop stays responsive (``/healthz`` answers while a probe hangs);
* mutating endpoints need the bearer token, compared in constant time;
* a ``refresh`` (a real provider request) is refused when another site's page asks
  (:func:`cross_site`): a page cannot read our answers, and must not spend quota either;
* errors are JSON ``{"error": {"code", "message"}}`` with fitting status codes.

The ETag of a snapshot covers its quota data, not its ``probe`` field (how this particular
answer was delivered: path, latency): a poll that finds the same data gets a 304 even
though the second answer came from the cache in a different number of microseconds.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from probe.errors import UnknownProviderError, check_provider
from probe.home_set import ServedHomes
from probe.pace import parse_instant
from probe.monitor.alerts import list_alerts
from probe.monitor.history import History, HistoryError
from probe.monitor.readings import Reader
from probe.providers import ProviderLabels
from probe.server.metrics import Metrics
from probe.service import ProbeService
from probe.snapshot import Snapshot
from probe import webui
from workers.providers import provider_names
from workers.version import quota_probe_version

log = logging.getLogger("probe.server")

STATIC_DIR = Path(__file__).with_name("static")
MAX_QUERY_VALUE = 256
MAX_BODY_BYTES = 4096
DEFAULT_MAX_THREADS = 16
#: ``/api/history`` without ``since``: the last 7 days
HISTORY_DEFAULT_SPAN_S = 7 * 86400


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def etag_of(payload: Any) -> str:
    """Strong ETag over the quota data (``probe`` fields left out, see module docstring)."""
    def strip(snap: dict) -> dict:
        return {k: v for k, v in snap.items() if k != "probe"}
    data = [strip(s) for s in payload] if isinstance(payload, list) else strip(payload)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]
    return f'"{digest}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    return if_none_match.strip() == "*" or etag in [t.strip() for t in if_none_match.split(",")]


#: Host headers a loopback-bound backend answers; anything else is a DNS-rebinding attempt
#: (a web page whose own domain resolves to 127.0.0.1 would otherwise read the API).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def cross_site(request: Request) -> bool:
    """Did a page of another origin make this request? ``Sec-Fetch-Site`` (sent by every
    current browser, also on an ``<img src>`` GET that carries no ``Origin``) other than
    ``same-origin`` or ``none`` (a typed URL, a bookmark) -- ``same-site`` included: a page
    on another port of localhost is another origin; else an ``Origin`` that is not this
    server's own (its host and port, as the Host header names them; ``null`` is foreign).
    A client that sends neither (curl, a server, hermes-webui's backend) is not a page."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.strip().lower() not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin.strip()).netloc.lower() != request.headers.get("host", "").strip().lower()


def public_dict(snap: Snapshot, home_id: str, home_dir: Path | None = None) -> dict[str, Any]:
    """A snapshot as a client sees it: ``home`` is the configured id, never the server's
    path (SPEC §2, §11), so replicas answer alike and no path reaches a browser.

    The texts are cleaned the same way: a missing home's message names its id, and any
    text that still holds the home's directory (``snap.home``, or the configured
    ``home_dir`` before symlinks resolve) names files relative to the home (``.env:2``)
    and the home itself by its id. Workers already write ``.env`` / ``auth.json`` without a
    directory; this is the parent's guarantee whatever a message says."""
    data = {**snap.to_dict(), "home": home_id}
    if snap.error is not None and snap.error.code == "home_not_found":
        data["error"] = {**data["error"], "message": f"The directory of home {home_id!r} does not exist."}
    dirs = sorted({d for d in (snap.home, str(home_dir) if home_dir else None) if d and d != "/"},
                  key=len, reverse=True)
    return _without_dirs(data, dirs, home_id) if dirs else data


def _without_dirs(value: Any, dirs: list[str], home_id: str) -> Any:
    """``value`` (JSON data) with every ``DIR/`` removed from its strings and every other
    ``DIR`` replaced by ``home ID``."""
    if isinstance(value, str):
        for directory in dirs:
            if directory in value:   # the directory itself, not a longer name it begins (alice2)
                value = re.sub(re.escape(directory.rstrip("/")) + r"(?:(/)|(?![\w-]|\.\w))",
                               lambda m: "" if m.group(1) else f"home {home_id}", value)
        return value
    if isinstance(value, dict):
        return {key: value[key] if key in ("home", "fetched_at") else _without_dirs(value[key], dirs, home_id)
                for key in value}
    if isinstance(value, list):
        return [_without_dirs(item, dirs, home_id) for item in value]
    return value


def create_app(service: ProbeService, homes: Mapping[str, Path], token: str, *,
               poll_s: float = 30.0, refresh_s: float = 0.0, reader: Reader | None = None,
               history: History | None = None,
               max_threads: int = DEFAULT_MAX_THREADS,
               allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS) -> Starlette:
    """An ASGI app serving ``homes`` (id → directory) from ``service``; ``token`` guards
    ``POST /api/rotate``. ``allowed_hosts`` limits the Host header (None: any).

    ``refresh_s > 0`` says a background refresher (``probe.monitor.refresher``, run beside the app
    with the same ``reader``) keeps every reading fresh: a plain read then answers from the
    latest reading and calls a provider only when there is none yet; ``refresh=1`` still
    probes. Either way every result is recorded in ``reader.readings``, which ``/metrics``
    exports. ``history`` serves ``/api/history`` and ``/api/alerts`` (absent: 404 saying
    history is off).

    ``homes`` may be a :class:`probe.home_set.ServedHomes` that ``probe serve`` replaces
    while the app runs (profiles found, a reload): the app reads it on every request."""
    if not token:
        raise ValueError("a bearer token is required")
    if not isinstance(homes, ServedHomes):
        homes = ServedHomes({str(home_id): Path(path).resolve() for home_id, path in homes.items()})
    reader = reader or Reader(service, homes)
    #: the one map from a home's resolved path to its id: /api/pool and /metrics name homes by id
    ids_by_path = homes.ids_by_path
    metrics = Metrics(service, ids_by_path, reader)
    labels = ProviderLabels()
    state: dict[str, anyio.CapacityLimiter] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Created inside the running loop: a limiter belongs to the loop that made it.
        state["limiter"] = anyio.CapacityLimiter(max_threads)
        yield

    async def in_thread(fn, *args: Any) -> Any:
        limiter = state.get("limiter")
        if limiter is None:  # mounted in an app whose lifespan did not run ours
            limiter = state["limiter"] = anyio.CapacityLimiter(max_threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    def home_or_error(home_id: Any) -> tuple[Path | None, JSONResponse | None]:
        home = homes.get(home_id) if isinstance(home_id, str) else None   # one look-up: a reload may drop it
        if home is None:
            shown = str(home_id)[:64] if home_id is not None else ""
            return None, error(404, "home_not_found", f"No configured home {shown!r}.")
        return home, None

    # Each request looks its home id up once, on arrival (home_or_error), and passes that
    # directory down: a reload or a profile scan may drop the id while the request is in
    # flight, and the request still answers -- by id, with its snapshot or the directory's
    # home_not_found -- never a KeyError's 500. A later request for the id gets a 404.
    def read_one(provider: str, home_id: str, home: Path, refresh: bool) -> Snapshot:
        started = time.monotonic()
        snap = None if refresh or refresh_s <= 0 else reader.latest(home_id, provider, home=home)
        if snap is None:
            snap = reader.fetch(home_id, provider, refresh=refresh, home=home)
        metrics.observe(time.monotonic() - started)
        return snap

    def fetch_one(provider: str, home_id: str, home: Path, refresh: bool) -> dict[str, Any]:
        return public_dict(read_one(provider, home_id, home, refresh), home_id, home)

    def fetch_all(home_id: str, home: Path, refresh: bool) -> list[dict[str, Any]]:
        """Every provider the home has a credential for (SPEC §17), in the list's order:
        one home read through the service -- one worker request for whatever needs a
        probe, a hung provider costing its own deadline, not the sum -- or, with the
        background refresher on, the latest readings and a home read of only the providers
        that have none (``Reader.read_home``). A missing home is one snapshot with
        ``"provider": null``; a home with no credential ``[]``."""
        started = time.monotonic()
        snaps = reader.read_home(home_id, refresh=refresh, from_readings=refresh_s > 0, home=home)
        metrics.observe(time.monotonic() - started)
        return [public_dict(s, home_id, home) for s in snaps]

    async def quota(request: Request) -> Response:
        params = request.query_params
        if any(len(v) > MAX_QUERY_VALUE for v in params.values()):
            return error(400, "bad_request", "A query value is too long.")
        home_id = params.get("home")
        if home_id is None and len(homes) == 1:
            home_id = next(iter(homes))
        home, failure = home_or_error(home_id)
        if failure:
            return failure
        refresh = params.get("refresh", "0") in ("1", "true", "yes")
        if refresh and cross_site(request):
            # a page cannot read the answer (no CORS), but it could make us call a provider
            return error(403, "cross_site_refresh", "refresh is refused for a request from another site; "
                         "read without refresh, or refresh from the panel.")
        provider = params.get("provider")
        if provider:
            try:
                check_provider(provider)
            except UnknownProviderError as exc:
                return error(400, exc.code, str(exc))
            payload: Any = await in_thread(fetch_one, provider, home_id, home, refresh)
        else:
            payload = await in_thread(fetch_all, home_id, home, refresh)
        etag = etag_of(payload)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return JSONResponse(payload, headers=headers)

    def webui_answer(provider: str | None, home_id: str, home: Path, refresh: bool) -> dict[str, Any]:
        hidden = ((str(home), home_id),)   # served homes are resolved paths already (probe.home_set)
        reads = webui.service_reads(service, home, hidden,
                                    fetch=lambda name, fresh: read_one(name, home_id, home, fresh))
        return webui.answer(provider, reads, refresh=refresh)

    async def provider_quota(request: Request) -> Response:
        """hermes-webui's ``GET /api/provider/quota`` (SPEC §19, ``probe.webui``): always
        200 with ``Cache-Control: no-store``, as hermes-webui answers it. ``provider``
        blank or absent: the home's active provider; ``home`` absent: the first configured
        home; ``refresh`` is true for ``1``/``true``/``yes``/``on`` only, as hermes-webui
        reads it (anything else is a plain read), and never from another site's page."""
        params = request.query_params
        headers = {"Cache-Control": "no-store"}
        provider = webui.normalized(params.get("provider"))
        home_id = params.get("home") or next(iter(homes), None)
        home = homes.get(home_id) if isinstance(home_id, str) else None
        if home is None:
            shown = str(home_id or "")[:64]
            return JSONResponse(webui.unavailable(provider, f"No home {shown!r} is configured on this server."),
                                headers=headers)
        # a refresh from another site's page is a plain read: this route always answers 200,
        # and such a page must not make us call a provider (see cross_site)
        refresh = params.get("refresh", "").strip().lower() in ("1", "true", "yes", "on") and not cross_site(request)
        try:
            body = await in_thread(webui_answer, provider, home_id, home, refresh)
        except Exception as exc:  # noqa: BLE001 -- the route always answers 200 (SPEC §19); the type is logged, never a text
            log.warning("GET /api/provider/quota failed: %s", type(exc).__name__)
            body = webui.unavailable(provider, "Quota status is temporarily unavailable.")
        return JSONResponse(body, headers=headers)

    async def rotate(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth:
            return error(401, "unauthorized", "This endpoint needs a bearer token.",
                         {"WWW-Authenticate": 'Bearer realm="quota-probe"'})
        scheme, _, presented = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
            return error(403, "forbidden", "The bearer token is not valid.")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return error(413, "bad_request", "The request body is too large.")
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return error(400, "bad_request", "The request body is not JSON.")
        if not isinstance(data, dict):
            return error(400, "bad_request", "The request body must be a JSON object.")
        home, failure = home_or_error(data.get("home"))
        if failure:
            return failure
        provider = data.get("provider")
        if provider is not None:
            try:
                check_provider(provider)
            except ValueError as exc:
                return error(400, getattr(exc, "code", "bad_request"), str(exc))
        await in_thread(lambda: service.invalidate(home=home, provider=provider))
        return Response(status_code=204)

    async def pool(request: Request) -> Response:
        """``stats()`` with every home named by its configured id -- no filesystem path
        reaches a client (SPEC §11, §15); pools of homes that are not configured here
        (none in ``probe serve``) are left out."""
        stats = await in_thread(service.stats)
        ids = dict(ids_by_path)   # one view of the served set (a reload may replace it meanwhile)
        stats["homes"] = {ids[path]: state for path, state in stats["homes"].items() if path in ids}
        return JSONResponse(stats)

    async def list_homes(request: Request) -> Response:
        return JSONResponse({"homes": list(homes), "providers": list(provider_names()),
                             "labels": await in_thread(labels.get), "poll_s": poll_s,
                             "refresh_s": refresh_s, "history": history is not None,
                             "version": quota_probe_version()})

    def history_off() -> JSONResponse:
        return error(404, "history_off", "This backend keeps no history (started with --no-history).")

    async def history_endpoint(request: Request) -> Response:
        if history is None:
            return history_off()
        params = request.query_params
        if any(len(v) > MAX_QUERY_VALUE for v in params.values()):
            return error(400, "bad_request", "A query value is too long.")
        home_id = params.get("home")
        _, failure = home_or_error(home_id)
        if failure:
            return failure
        provider = params.get("provider") or ""
        try:
            check_provider(provider)
        except (UnknownProviderError, ValueError) as exc:
            return error(400, getattr(exc, "code", "bad_request"), str(exc))
        since_text = params.get("since")
        if since_text:
            since_at = parse_instant(since_text)
            if since_at is None:
                return error(400, "bad_request", "since must be an ISO-8601 instant.")
            since = since_at.timestamp()
        else:
            since = time.time() - HISTORY_DEFAULT_SPAN_S
        account = params.get("account")   # an account id (SPEC §18); absent: every account
        if account is not None and not account:
            return error(400, "bad_request", "account must be an account id.")
        try:
            body = await in_thread(history.query, home_id, provider, since, account)
        except HistoryError:
            return error(503, "history_unavailable", "The history file cannot be read right now.")
        return JSONResponse(body)

    async def alerts_endpoint(request: Request) -> Response:
        if history is None:
            return history_off()
        try:
            alerts = await in_thread(list_alerts, history)
        except Exception:  # noqa: BLE001 -- sqlite3.Error of a broken file: say so, never a traceback
            return error(503, "history_unavailable", "The history file cannot be read right now.")
        return JSONResponse({"alerts": [a for a in alerts if a["home"] in homes]})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "version": quota_probe_version()})

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = await in_thread(metrics.render)
        return Response(body, media_type=content_type)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "not_found", "No such endpoint.")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method_not_allowed", "Method not allowed.")

    routes = [
        Route("/", index),
        Route("/api/quota", quota),
        Route("/api/provider/quota", provider_quota),
        Route("/api/rotate", rotate, methods=["POST"]),
        Route("/api/pool", pool),
        Route("/api/homes", list_homes),
        Route("/api/history", history_endpoint),
        Route("/api/alerts", alerts_endpoint),
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))] if allowed_hosts else []
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                     exception_handlers={404: not_found, 405: not_allowed})

