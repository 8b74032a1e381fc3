"""Credentials from a home's ``.env`` and ``auth.json`` -- read-only, read as Hermes reads them.

``.env`` is read with python-dotenv, the library Hermes loads it with (SPEC §2), with
``dotenv_values``' rules: quotes (a double-quoted value may span lines: a PEM key), bare
``NAME`` and ``export NAME`` lines (a name without a value: not a credential), comments,
a BOM, CRLF, later names win. ``${VAR}`` (and ``${VAR:-default}``) expands from the *same
file only*: ``dotenv_values`` would fall back to the process environment, and a worker
must never put its service's environment into a home's values. A line python-dotenv cannot
parse is skipped -- the rest of the file still counts, as it does for Hermes -- and its
number kept (``env_skipped``): a worker logs it once to its stderr by file and line number
(``.env line 7``, :func:`log_skipped`), never its content; ``probe doctor`` lists it. The
numbers are python-dotenv's own warning, captured (:func:`parse_env`), not re-derived by a
parser of ours.

A value that is a 1Password reference (``op://…``) is resolved when a probe needs it
(``workers.onepassword``), never listed or sent as it is.

Why errors are remembered instead of raised: a broken ``.env`` must not break a provider
whose credential lives in ``auth.json`` (and vice versa). A file that cannot be read
(permissions, a directory, not UTF-8, larger than :data:`MAX_FILE_BYTES`; for
``auth.json`` also not JSON, not an object, or empty) makes every place in that file
answer ``credentials_unreadable`` -- the provider stays in the home's list and the parent
keeps its last good reading (stale) -- with a message that names the file relative to the
home (``auth.json``, ``.env``), never a path of the server, never content.

An empty (0-byte or blank) ``auth.json`` counts as unreadable, not as "no logins": Hermes
never leaves one (it replaces the file atomically), but a tool writing it in place does
for a moment, and calling that moment "no credentials" would drop every login of the home
from its list. A *missing* ``auth.json`` is the one way to say "no logins". An empty
``.env`` is simply empty: python-dotenv reads it as such.

Nothing here writes: the files are opened read-only and a probe never refreshes a token.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers import onepassword
from workers.result import UNREADABLE, ProbeFailure

MAX_FILE_BYTES = 1024 * 1024
ENV_FILE, AUTH_FILE = ".env", "auth.json"
#: the ``.env`` names a place may use (``workers.places``): shell-style names, plus ``.``
#: and ``-``, which python-dotenv accepts too
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
#: at most this many skipped lines are logged one by one, then one line counts the rest
MAX_LOGGED_LINES = 10
#: a failed ``op read`` is reused this long (one home read asks once, not once a provider)
OP_FAILURE_REUSE_S = 10.0

#: python-dotenv logs a line it cannot parse through this logger (``dotenv.main``)
_DOTENV_LOGGER = "dotenv.main"
_parse_lock = threading.Lock()


class _SkippedLines(logging.Filter):
    """Takes python-dotenv's "could not parse statement starting at line N" warnings off
    its logger (so they are not printed without the file's name) and keeps the numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "could not parse" not in str(record.msg):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        self.lines.append(args[0] if args and isinstance(args[0], int) else 0)
        return False


def parse_env(text: str) -> tuple[dict[str, str], tuple[int, ...]]:
    """(values, skipped line numbers) of a ``.env`` text -- ``dotenv_values(stream=…)``
    with ``${VAR}`` expanded from the file's own values only (see the module docstring).
    Names without a value are left out. A skipped line's number is python-dotenv's (lines
    counted on ``\\n``, ``\\r\\n`` or ``\\r``; 0 if a later python-dotenv stopped saying)."""
    from dotenv.main import DotEnv

    skipped = _SkippedLines()
    logger = logging.getLogger(_DOTENV_LOGGER)
    # newline=None: universal newlines, as ``open()`` hands python-dotenv a path's text (a
    # CRLF file's multi-line PEM gets ``\n`` line ends, as Hermes sees it)
    with _parse_lock:   # one filter at a time on the library's (process-wide) logger
        logger.addFilter(skipped)
        try:
            pairs = list(DotEnv(None, stream=io.StringIO(text, newline=None), interpolate=False).parse())
        finally:
            logger.removeFilter(skipped)
    return _expand(pairs), tuple(skipped.lines)


def _expand(pairs: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """python-dotenv's ``resolve_variables`` (in file order, each value seeing the ones
    before it), with the file's values as the only source: no process environment."""
    from dotenv.variables import parse_variables

    resolved: dict[str, str | None] = {}
    for name, value in pairs:
        if value is not None and "${" in value:   # (without one, parse_variables gives the value back)
            value = "".join(atom.resolve(resolved) for atom in parse_variables(value))
        resolved[name] = value
    return {name: value for name, value in resolved.items() if value is not None}


@dataclass
class HomeCredentials:
    """What one probe may read from a home. Why a file could not be read is kept, not
    raised: the accessors raise ``credentials_unreadable`` only for a place in that file."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    auth: dict[str, Any] = field(default_factory=dict)
    #: why ``.env`` / ``auth.json`` could not be read (a sentence naming the file, relative)
    env_error: str | None = None
    auth_error: str | None = None
    #: ``.env`` lines python-dotenv could not parse (skipped)
    env_skipped: tuple[int, ...] = ()
    #: ``.env`` name -> (secret, failure, when) of its 1Password reference, and a lock per name
    _secrets: dict[str, tuple[str | None, ProbeFailure | None, float]] = field(
        default_factory=dict, repr=False, compare=False)
    _secret_locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False, compare=False)
    _locks_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def env_get(self, name: str, *, resolve: bool = True) -> str | None:
        """The ``.env`` value of ``name`` (None when absent), a 1Password reference resolved
        unless ``resolve`` is False (listing a home must not run ``op``). Raises
        ``credentials_unreadable`` when ``.env`` could not be read, and what
        ``workers.onepassword.read`` raises."""
        if self.env_error:
            raise ProbeFailure(UNREADABLE, self.env_error)
        value = self.env.get(name)
        if value is None or not resolve or not onepassword.is_reference(value):
            return value
        return self._secret(name, value)

    def _secret(self, name: str, reference: str) -> str:
        """``op read`` once per variable for as long as this read of the files is in use
        (a failure for :data:`OP_FAILURE_REUSE_S` only: 1Password may be unlocked
        meanwhile). Concurrent probes of one home read that need the same variable wait for
        the first instead of running ``op`` again; other variables do not wait."""
        with self._locks_lock:
            lock = self._secret_locks.setdefault(name, threading.Lock())
        with lock:
            value, failure, at = self._secrets.get(name, (None, None, 0.0))
            if value is None and (failure is None or time.monotonic() - at > OP_FAILURE_REUSE_S):
                try:
                    value, failure = onepassword.read(reference, name), None
                except ProbeFailure as exc:
                    failure = exc
                self._secrets[name] = (value, failure, time.monotonic())
        if value is None:
            raise ProbeFailure(failure.code, failure.message)   # a new one: threads may raise it at once
        return value

    def env_value(self, *names: str) -> tuple[str, str] | None:
        """(name, value) of the first non-empty variable among ``names``, else None.
        Raises as :meth:`env_get` does."""
        for name in names:
            value = (self.env_get(name) or "").strip()
            if value:
                return name, value
        return None

    def auth_json(self) -> dict[str, Any]:
        """The parsed ``auth.json`` (empty when missing); raises credentials_unreadable
        when it could not be read."""
        if self.auth_error:
            raise ProbeFailure(UNREADABLE, self.auth_error)
        return self.auth

    def auth_object(self, *keys: str) -> dict[str, Any] | None:
        """``auth.json[k1][k2]…`` as an object, None when any step is absent or null.
        A step that exists with another type makes the file malformed (credentials_unreadable
        naming the file and the keys -- our own names, never file content)."""
        value = self._auth_at(keys)
        if value is None or isinstance(value, dict):
            return value
        raise malformed_auth(keys, "an object")

    def auth_list(self, *keys: str) -> list[Any]:
        """``auth.json[k1][k2]…`` as a list, empty when absent or null; another type makes
        the file malformed, as for :meth:`auth_object`."""
        value = self._auth_at(keys)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        raise malformed_auth(keys, "a list")

    def _auth_at(self, keys: tuple[str, ...]) -> Any:
        value: Any = self.auth_json()
        for depth, key in enumerate(keys):
            if value is None:
                return None
            if not isinstance(value, dict):
                raise malformed_auth(keys[:depth], "an object")
            value = value.get(key)
        return value


def malformed_auth(keys: Iterable[str], kind: str) -> ProbeFailure:
    """``credentials_unreadable`` for a step of ``auth.json`` with the wrong type: the file
    and the keys (our own names), never content. Hermes could not use that part either."""
    return ProbeFailure(UNREADABLE, f"auth.json is malformed: {'.'.join(keys)} should be {kind}.")


class _Unusable(Exception):
    """Why a credential file cannot be used: a reason that never quotes its content."""


def _read_text(path: Path) -> str | None:
    """The file's text (a UTF-8 BOM dropped), None if missing; raises OSError or
    _Unusable. Reads at most 1 MiB + 1 byte, so a huge or endless file costs nothing."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_FILE_BYTES:
        raise _Unusable("it is larger than 1 MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _Unusable("it is not UTF-8 text") from None


#: Files changed this recently may change again within the same timestamp tick without
#: their stat data showing it (coarse kernel clocks tick every few ms; FAT rounds mtime down
#: to 2 s). A read taken that soon after the last change is not trusted for later reuse.
RACY_WINDOW_NS = 2_000_000_000


def credential_stat(home: str | os.PathLike[str]) -> tuple:
    """(inode, size, mtime_ns, ctime_ns) of ``.env`` and ``auth.json`` (None where missing):
    notices a rewrite without reading a credential. The parent uses it as the home's
    credential fingerprint, the child to know when to re-read -- one definition for both.
    An atomic replace changes the inode; an in-place rewrite the size or the times; a
    ``touch`` back to an old mtime still moves ctime, which no user can set.

    A Hermes profile home (``<root>/profiles/<name>``) also has the root's ``auth.json``:
    its accounts borrow the root's pool rows for a provider it has none of (SPEC §18), so a
    root's pool change is a credential change of the profile too (the digests then decide
    which of its providers, if any, it rotates)."""
    parts = []
    paths = [os.path.join(home, ENV_FILE), os.path.join(home, AUTH_FILE)]
    profiles = os.path.dirname(os.path.normpath(home))
    if os.path.basename(profiles) == "profiles":
        paths.append(os.path.join(os.path.dirname(profiles), AUTH_FILE))
    for path in paths:
        try:
            st = os.stat(path)  # not pathlib: this runs on every fetch
        except OSError:
            parts.append(None)
        else:
            parts.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(parts)


def stat_is_settled(stat: tuple, now_ns: int) -> bool:
    """True when equal stat data can prove equal content: a later rewrite stamps mtime and
    ctime with its own (later) tick, so it can only look identical to ``stat`` if *both*
    of a file's times are that recent. Hence each file counts as settled once the older
    of its mtime and ctime lies ``RACY_WINDOW_NS`` before ``now_ns`` (a wall-clock time
    taken *before* the stat) -- git's "racy index" rule."""
    newest = max((min(part[2], part[3]) for part in stat if part is not None), default=0)
    return now_ns - newest >= RACY_WINDOW_NS


def load_home(home: str | os.PathLike[str]) -> HomeCredentials:
    """Read ``<home>/.env`` and ``<home>/auth.json`` (missing files are simply empty).
    Never raises for file content: problems are recorded on the result (see the class)."""
    creds = HomeCredentials(home=Path(home))
    try:
        text = _read_text(creds.home / ENV_FILE)
        if text is not None:
            creds.env, creds.env_skipped = parse_env(text)
    except (OSError, _Unusable) as exc:
        creds.env_error = f".env could not be read: {_why(exc)}."
    try:
        text = _read_text(creds.home / AUTH_FILE)
        if text is not None:
            creds.auth = _auth_object(text)
    except (OSError, _Unusable) as exc:
        creds.auth_error = f"auth.json could not be read: {_why(exc)}."
    return creds


def _auth_object(text: str) -> dict[str, Any]:
    if not text.strip():
        raise _Unusable("it is empty (delete it if this home has no logins)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Unusable(f"it is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError):   # a 5,000-digit number; nesting deeper than Python's stack
        raise _Unusable("it is not JSON quota-probe can read") from None
    if not isinstance(data, dict):
        raise _Unusable("it does not hold a JSON object")
    return data


def log_skipped(lines: tuple[int, ...]) -> None:
    """One stderr line per skipped ``.env`` line (by number, never content), at most
    :data:`MAX_LOGGED_LINES`, then one line with the count of the rest."""
    for line in lines[:MAX_LOGGED_LINES]:
        print(f"workers: .env line {line} could not be parsed (python-dotenv) and was skipped", file=sys.stderr,
              flush=True)
    if len(lines) > MAX_LOGGED_LINES:
        print(f"workers: .env: {len(lines) - MAX_LOGGED_LINES} more lines could not be parsed and were skipped",
              file=sys.stderr, flush=True)


def _why(exc: BaseException) -> str:
    """A short reason for a read failure; an OSError's text is not used (it holds the path)."""
    if isinstance(exc, _Unusable):
        return str(exc)
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    return type(exc).__name__
