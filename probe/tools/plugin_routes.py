"""The emulator's plugin routes (SPEC §16, "Emulator"): every installed plugin's ``EMULATOR``
served by the built-in emulator, without this process importing a plugin module.

How: ``Emulator(plugins=True)`` (what ``probe emulator`` and ``probe serve --demo`` use)
starts one child, ``python -P -m workers.emulator_routes``, with the workers' environment
allowlist. The child imports the plugins, announces each ``EMULATOR`` route, then answers
``(plugin, token) -> (status, body)`` over a pipe; the emulator does the HTTP (scenario
markers, scripts, recording) as for its built-in routes. Chosen over running the whole
emulator in another process because the demo drives its emulator in-process (it scripts
the rate-limited home's answers), and over importing plugins in ``probe emulator`` only
because the demo would then still need one of these two.

Each plugin is served under its own prefix, ``/plugins/<name>``, and its base URL points
there (``PROBE_<NAME>_BASE_URL`` in :meth:`Emulator.env`): the plugin appends its
``EMULATOR["path"]`` to its base URL as it does in production. So a plugin's path can never
shadow a built-in route (``/user/balance`` stays DeepSeek's) or another plugin's.

What a broken route does: a response callable that raises, returns something other than
``(status, JSON body)``, or takes longer than :data:`ANSWER_TIMEOUT_S`, answers a 500 for
that request, and one WARNING line names the plugin and the exception *type* (never its
text: it may quote the token) -- once per plugin and kind of failure, so a demo refreshing
every 10 s does not repeat it. A child that hangs or dies is replaced on the next request.
A malformed ``EMULATOR`` (no ``/`` path, no callable) is not served: one WARNING at start.
The built-in routes never depend on this child: if it cannot start, they are served as
always and the failure is one WARNING line.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

PREFIX = "/plugins/"
#: importing every plugin module; a child slower than this is broken
START_TIMEOUT_S = 30.0
#: one answer of a response callable (pure functions of a token: microseconds). Answers are
#: asked one at a time (one child, one pipe): a callable that hangs holds the other plugin
#: routes up for this long, then its child is killed and replaced.
ANSWER_TIMEOUT_S = 5.0
MAX_REPLY_BYTES = 8 * 1024 * 1024
log = logging.getLogger("probe.emulator")


@dataclass(frozen=True)
class PluginRoute:
    """One served plugin route: its provider name, its path (relative to the plugin's base
    URL) and the first ``.env`` name of its ``CREDENTIALS`` (for the demo's homes)."""

    name: str
    path: str
    env: str | None = None

    @property
    def prefix(self) -> str:
        return PREFIX + self.name


class PluginRoutes:
    """The parent's side of the ``workers.emulator_routes`` child."""

    def __init__(self, env: dict[str, str] | None = None, *, answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        self._env = env
        self.answer_timeout_s = answer_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._closed = False
        self._logged: set[tuple[str, str]] = set()
        #: provider name -> route, as the child announced them at start
        self.routes: dict[str, PluginRoute] = {}
        self._by_path: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "PluginRoutes":
        """Start the child and learn the routes, if any plugin is installed (metadata only:
        without one, no child is started at all)."""
        from workers.plugins import accepted

        if not accepted():
            return self
        with self._lock:
            hello = self._spawn_locked()
        if hello is None:
            return self
        for entry in hello.get("skipped", []):
            log.warning("quota-probe emulator: not serving the %r plugin's EMULATOR: %s.",
                        str(entry.get("name"))[:64], str(entry.get("reason"))[:200])
        for entry in hello.get("routes", []):
            route = PluginRoute(str(entry["name"]), str(entry["path"]), entry.get("env"))
            self.routes[route.name] = route
            self._by_path[route.prefix + route.path] = route.name
        return self

    def close(self) -> None:
        """End the child. Safe from any thread, also while a request waits on it: that
        request then gets its 500 at once."""
        self._closed = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.kill()         # a waiting request reads EOF now; the child holds no state
        with self._lock:
            self._drop_locked()

    def _spawn_locked(self) -> dict[str, Any] | None:
        from probe.env import tool_env

        self._buffer = b""
        try:
            self._proc = subprocess.Popen([sys.executable, "-P", "-m", "workers.emulator_routes"],
                                          env=tool_env() if self._env is None else self._env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            log.warning("quota-probe emulator: plugin routes are not served (the child did not start: %s).",
                        type(exc).__name__)
            return None
        if self._closed:        # close() ran while this child was starting
            self._drop_locked()
            return None
        hello = self._read_line_locked(START_TIMEOUT_S)
        if not isinstance(hello, dict) or "routes" not in hello:
            log.warning("quota-probe emulator: plugin routes are not served (the child gave no route list).")
            self._drop_locked()
            return None
        return hello

    def _drop_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _end(proc)

    # -- addresses -----------------------------------------------------------------------
    def urls(self, base_url: str) -> dict[str, str]:
        """Each served plugin's base URL on an emulator at ``base_url``."""
        return {name: base_url + route.prefix for name, route in self.routes.items()}

    def match(self, path: str) -> str | None:
        """The plugin whose route ``path`` is, or None."""
        return self._by_path.get(path) if path.startswith(PREFIX) else None

    # -- answers -------------------------------------------------------------------------
    def ask(self, name: str, token: str) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) of plugin ``name``'s route for ``token``; a 500 when the
        plugin's response callable failed (logged once per plugin and kind of failure)."""
        with self._lock:
            reply = self._ask_locked(name, token)
        if "status" in reply and ("body" in reply or "raw" in reply):
            if "raw" in reply:
                return int(reply["status"]), base64.b64decode(reply["raw"]), {"Content-Type": "text/plain"}
            return int(reply["status"]), json.dumps(reply["body"]).encode(), {"Content-Type": "application/json"}
        failure = str(reply.get("error", "an unreadable reply"))[:100]
        if (name, failure) not in self._logged:
            self._logged.add((name, failure))
            log.warning("quota-probe emulator: the %r plugin's EMULATOR response failed (%s); answered 500.",
                        name, failure)
        body = {"type": "error", "error": {"type": "api_error",
                                           "message": f"The emulated {name} route failed; see the emulator's log."}}
        return 500, json.dumps(body).encode(), {"Content-Type": "application/json"}

    def _ask_locked(self, name: str, token: str) -> dict[str, Any]:
        if self._closed:
            return {"error": "the emulator is stopping"}
        if self._proc is None or self._proc.poll() is not None:
            self._drop_locked()
            if self._spawn_locked() is None:
                return {"error": "the plugin child could not be restarted"}
        request = json.dumps({"name": name, "token": token}).encode() + b"\n"
        try:
            self._proc.stdin.write(request)
            self._proc.stdin.flush()
        except (OSError, ValueError):
            self._drop_locked()
            return {"error": "the plugin child died"}
        reply = self._read_line_locked(self.answer_timeout_s)
        if reply is None:
            self._proc.kill()
            self._drop_locked()     # a hung or dead child is replaced on the next request
            return {"error": "no answer in time, or the plugin child died"}
        return reply if isinstance(reply, dict) else {"error": "an unreadable reply"}

    def _read_line_locked(self, timeout_s: float) -> Any:
        """The child's next line as JSON, or None on EOF, timeout or a line that is not JSON."""
        proc = self._proc
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or len(self._buffer) > MAX_REPLY_BYTES:
                return None
            try:
                ready, _, _ = select.select([fd], [], [], left)
                chunk = os.read(fd, 65536) if ready else b""
            except (OSError, ValueError):
                return None
            if ready and not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None


def serve_route(handler: Any, routes: PluginRoutes, name: str, token: str) -> None:
    """Answer one request on plugin ``name``'s route through the emulator's ``handler``.
    The transport markers work here as on the built-in routes (``-hang-``, ``-slow<ms>-``,
    ``-reset-``); what status and body come back is the plugin's own business."""
    from probe.tools.emulator import scenario_for

    if handler.transport_markers(scenario_for(token)):
        return
    status, body, headers = routes.ask(name, token)
    handler._reply(status, body, headers)


def request_token(headers: Any) -> str:
    """The credential a plugin's response callable gets: what follows the scheme of the
    ``Authorization`` header (``Bearer X``, ``token X``), ``""`` when there is none."""
    auth = (headers.get("Authorization") or "").strip()
    scheme, _, rest = auth.partition(" ")
    return rest.strip() if rest else scheme


def _end(proc: subprocess.Popen) -> None:
    """EOF, then a kill if the child does not go within a second; reaped either way."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        try:
            proc.stdout.close()
        except OSError:
            pass
