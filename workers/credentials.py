"""Credentials from a home's ``.env`` and ``auth.json`` — read-only, the one parser.

Why errors are remembered instead of raised: a malformed ``.env`` must not break a
provider whose credential lives in ``auth.json`` (and vice versa). A provider that needs a
value from a malformed file gets ``no_credentials`` naming the file (and the line, for
``.env``) — never the line's content, which may be a secret.

Why a malformed ``.env`` is not skipped over: the broken line may be the very credential
the user meant, so probing with a different one (a later key, or ``auth.json``) would
silently report another account. The user is told which line to fix instead.

Nothing here writes: the files are opened read-only and a probe never refreshes a token.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.result import ProbeFailure

MAX_FILE_BYTES = 1024 * 1024
#: shell-style names, plus ``.`` and ``-`` which other .env readers (python-dotenv) accept
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


class DotenvError(ValueError):
    """A malformed ``.env`` line: its number and a reason that never quotes the line."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments (whole line, or after whitespace following an
    unquoted value); blank lines; optional ``export ``; whitespace around key and value
    stripped; optional single or double quotes (double quotes understand ``\\n``, ``\\t``,
    ``\\r``, ``\\"`` and ``\\\\``; single quotes are literal). Later keys win.

    Raises DotenvError(line, reason) for a line that is none of these. Lines are counted
    on ``\\n`` only (``\\r\\n`` works too) so the number matches what an editor shows.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("export ", "export\t")):
            line = line[7:].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep:
            raise DotenvError(number, "expected KEY=VALUE")
        if not _KEY.fullmatch(key):
            raise DotenvError(number, "invalid variable name")
        values[key] = _value(rest.strip(), number)
    return values


def _value(rest: str, number: int) -> str:
    if rest[:1] in ("'", '"'):
        quote = rest[0]
        end = _closing_quote(rest, quote)
        if end < 0:
            raise DotenvError(number, "unterminated quote")
        trailing = rest[end + 1:].strip()
        if trailing and not trailing.startswith("#"):
            raise DotenvError(number, "text after the closing quote")
        inner = rest[1:end]
        if quote == '"':
            inner = re.sub(r'\\(["\\ntr])', lambda m: _ESCAPES.get(m.group(1), m.group(1)), inner)
        return inner
    comment = re.search(r"\s#", rest)
    return (rest[:comment.start()] if comment else rest).strip()


def _closing_quote(text: str, quote: str) -> int:
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and quote == '"':
            index += 2
            continue
        if char == quote:
            return index
        index += 1
    return -1


@dataclass
class HomeCredentials:
    """What one probe may read from a home. Load errors are kept, not raised: the
    accessors raise ``no_credentials`` only for a provider that needs the broken file."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    auth: dict[str, Any] = field(default_factory=dict)
    env_error: str | None = None
    auth_error: str | None = None

    @property
    def env_path(self) -> Path:
        return self.home / ".env"

    @property
    def auth_path(self) -> Path:
        return self.home / "auth.json"

    def env_value(self, *names: str) -> tuple[str, str] | None:
        """(name, value) of the first non-empty variable among ``names``, else None.
        Raises no_credentials when the ``.env`` could not be read."""
        if self.env_error:
            raise ProbeFailure("no_credentials", self.env_error)
        for name in names:
            value = self.env.get(name, "").strip()
            if value:
                return name, value
        return None

    def auth_json(self) -> dict[str, Any]:
        """The parsed ``auth.json`` (empty when missing); raises no_credentials if malformed."""
        if self.auth_error:
            raise ProbeFailure("no_credentials", self.auth_error)
        return self.auth

    def auth_object(self, *keys: str) -> dict[str, Any] | None:
        """``auth.json[k1][k2]…`` as an object, None when any step is absent or null.
        A step that exists with another type makes the file malformed (no_credentials
        naming the file and the keys — our own names, never file content)."""
        value = self._auth_at(keys)
        if value is None or isinstance(value, dict):
            return value
        raise self._shape_error(keys, "an object")

    def auth_list(self, *keys: str) -> list[Any]:
        """``auth.json[k1][k2]…`` as a list, empty when absent or null; another type makes
        the file malformed, as for :meth:`auth_object`."""
        value = self._auth_at(keys)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        raise self._shape_error(keys, "a list")

    def _auth_at(self, keys: tuple[str, ...]) -> Any:
        value: Any = self.auth_json()
        for depth, key in enumerate(keys):
            if value is None:
                return None
            if not isinstance(value, dict):
                raise self._shape_error(keys[:depth], "an object")
            value = value.get(key)
        return value

    def _shape_error(self, keys: tuple[str, ...], kind: str) -> ProbeFailure:
        where = ".".join(keys)
        return ProbeFailure("no_credentials", f"{self.auth_path} is malformed: {where} should be {kind}.")


def _read_text(path: Path) -> str | None:
    """The file's text, None if missing; raises OSError/ValueError for unusable files.
    Reads at most 1 MiB + 1 byte, so a huge or endless file costs nothing."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_FILE_BYTES:
        raise ValueError("is larger than 1 MiB")
    return data.decode("utf-8-sig")


#: Files changed this recently may change again within the same timestamp tick without
#: their stat data showing it (coarse kernel clocks tick every few ms; FAT rounds mtime down
#: to 2 s). A read taken that soon after the last change is not trusted for later reuse.
RACY_WINDOW_NS = 2_000_000_000


def credential_stat(home: str | os.PathLike[str]) -> tuple:
    """(inode, size, mtime_ns, ctime_ns) of ``.env`` and ``auth.json`` (None where missing):
    notices a rewrite without reading a credential. The parent uses it as the home's
    credential fingerprint, the child to know when to re-read -- one definition for both.
    An atomic replace changes the inode; an in-place rewrite the size or the times; a
    ``touch`` back to an old mtime still moves ctime, which no user can set."""
    parts = []
    for name in (".env", "auth.json"):
        try:
            st = os.stat(os.path.join(home, name))  # not pathlib: this runs on every fetch
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
    env_path, auth_path = creds.env_path, creds.auth_path
    try:
        text = _read_text(env_path)
        if text is not None:
            creds.env = parse_dotenv(text)
    except DotenvError as exc:
        creds.env_error = f"{env_path}:{exc.line} is malformed ({exc.reason})."
    except UnicodeDecodeError:
        creds.env_error = f"{env_path} is not UTF-8 text."
    except (OSError, ValueError) as exc:
        creds.env_error = f"{env_path} could not be read ({_why(exc)})."
    try:
        text = _read_text(auth_path)
        if text is not None and text.strip():
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError
            creds.auth = data
    except UnicodeDecodeError:
        creds.auth_error = f"{auth_path} is not UTF-8 text."
    except json.JSONDecodeError as exc:
        creds.auth_error = f"{auth_path} is not valid JSON (line {exc.lineno})."
    except TypeError:
        creds.auth_error = f"{auth_path} must hold a JSON object."
    except (OSError, ValueError, RecursionError) as exc:
        creds.auth_error = f"{auth_path} could not be read ({_why(exc)})."
    return creds


def _why(exc: BaseException) -> str:
    """A short reason for a read failure; exception text is not used since it may quote content."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, ValueError) and str(exc) == "is larger than 1 MiB":
        return "larger than 1 MiB"
    return type(exc).__name__
