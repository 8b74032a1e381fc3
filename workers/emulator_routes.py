"""``python -P -m workers.emulator_routes``: the plugin half of the provider emulator (SPEC
§16, "Emulator").

A plugin may define ``EMULATOR = {"path": "/v1/quota", "response": callable(token) ->
(status, body)}`` so that ``probe emulator`` and ``probe serve --demo`` answer for it too.
Why a child process: ``probe serve --demo`` runs the emulator inside the service process,
and no service (or CLI) process ever imports a plugin module. So the plugin modules are
imported here -- the way the template imports them, through ``workers.providers`` -- and
the emulator (``probe.tools.plugin_routes``) asks this process for each answer over a pipe. The
emulator's HTTP side, scenario markers and recording stay where they are; this process only
turns (plugin, token) into (status, body).

Protocol, one JSON object per line::

    child -> parent  {"routes": [{"name", "path", "env"}], "skipped": [{"name", "reason"}]}
                     once, after importing every plugin; "env" is the first ".env:" place
                     of the plugin's CREDENTIALS (or null) -- a name, never a value
    parent -> child  {"name": N, "token": T}
    child -> parent  {"status": S, "body": <JSON>}          the plugin's answer, as JSON
                   | {"status": S, "raw": "<base64>"}        a bytes body, sent as it is
                   | {"error": "<what went wrong>"}          the exception's TYPE, never its text

EOF on stdin ends the process. A response callable that raises, or returns something that
is not ``(status, body)`` with a JSON-encodable body, answers ``{"error": ...}`` and this
process goes on. Plugins without ``EMULATOR`` are simply not served; a plugin whose import
failed was already reported on stderr by ``workers.providers`` and is not served either.

This module imports nothing from ``probe`` (the child side never does).
"""
from __future__ import annotations

import base64
import json
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from workers.loop import _take_protocol_stdout
from workers.providers import Provider, load_all

#: a route's path: what the plugin appends to its base URL
PATH_PATTERN = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,199}")
#: a body larger than this is not a plausible quota answer
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_REQUEST_BYTES = 64 * 1024


def routes(providers: list[Provider]) -> tuple[dict[str, tuple[str, Callable[[str], Any]]], list[dict], list[dict]]:
    """(name -> (path, response), the routes as announced, the plugins skipped with why)."""
    table: dict[str, tuple[str, Callable[[str], Any]]] = {}
    announced, skipped = [], []
    for provider in providers:
        if provider.spec.builtin or provider.module is None or provider.error is not None:
            continue
        spec = getattr(provider.module, "EMULATOR", None)
        if spec is None:
            continue
        reason = _check(spec)
        if reason is not None:
            skipped.append({"name": provider.spec.name, "reason": reason})
            continue
        table[provider.spec.name] = (spec["path"], spec["response"])
        env = next((place.name for place in provider.places if place.file == ".env"), None)
        announced.append({"name": provider.spec.name, "path": spec["path"], "env": env})
    return table, announced, skipped


def _check(spec: object) -> str | None:
    if not isinstance(spec, dict):
        return "EMULATOR must be a dict with 'path' and 'response'"
    path = spec.get("path")
    if not isinstance(path, str) or not PATH_PATTERN.fullmatch(path):
        return "EMULATOR['path'] must be a URL path starting with '/' (at most 200 characters, no query)"
    if not callable(spec.get("response")):
        return "EMULATOR['response'] must be callable(token) -> (status, body)"
    return None


def answer(response: Callable[[str], Any], token: str) -> dict[str, Any]:
    """One answer of a plugin's response callable, as a reply message."""
    try:
        result = response(token)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 -- the plugin's bug; its text may quote the token
        return {"error": type(exc).__name__}
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return {"error": "an answer that is not (status, body)"}
    status, body = result
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return {"error": "a status that is not an HTTP status code"}
    if isinstance(body, (bytes, bytearray)):
        if len(body) > MAX_BODY_BYTES:
            return {"error": "a body over 4 MiB"}
        return {"status": status, "raw": base64.b64encode(bytes(body)).decode()}
    try:
        encoded = json.dumps(body, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return {"error": "a body that is not JSON-encodable"}
    if len(encoded) > MAX_BODY_BYTES:
        return {"error": "a body over 4 MiB"}
    return {"status": status, "body": body}


def serve(table: dict[str, tuple[str, Callable[[str], Any]]], stdin, out) -> None:
    while True:
        line = stdin.readline(MAX_REQUEST_BYTES)
        if not line:
            return
        try:
            request = json.loads(line)
            path_and_response = table[request["name"]]
            token = request["token"]
            if not isinstance(token, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            reply = {"error": "a request this process does not understand"}
        else:
            reply = answer(path_and_response[1], token)
        out.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")


def main() -> int:
    # Ctrl-C in a terminal reaches the whole foreground process group; this process ends
    # when the emulator closes the pipe, after the emulator has stopped answering.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = _take_protocol_stdout()   # a plugin that prints cannot garble the protocol
    table, announced, skipped = routes(load_all())
    out.write(json.dumps({"routes": announced, "skipped": skipped}).encode() + b"\n")
    serve(table, sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
