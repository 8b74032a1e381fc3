"""``probe serve``'s config file: TOML (stdlib ``tomllib``), every ``serve`` option and the
homes, so a long-lived backend's flags live in one file a reload (SIGHUP) reads again.

Where: ``probe serve --config FILE``; else ``$XDG_CONFIG_HOME/quota-probe/config.toml``
(``~/.config/quota-probe/config.toml`` without ``XDG_CONFIG_HOME``) when that file exists.

Shape (the README shows a complete file): a top-level key per ``serve`` option, spelled as
the option without its dashes (``cache-ttl-s = 45``; ``cache_ttl_s`` is accepted too, not
both), and a ``[homes]`` table of ``id = "path"``. Options that repeat on the command line
are lists (``notify = ["json://..."]``); ``alert-at`` is a list of numbers or the CLI's
``"80,90,100"`` string; flags are booleans. A table ``[homes]`` means exactly those homes,
as ``--home`` does; without it ``serve`` serves the Hermes root and its profiles.

Command-line options (and the environment variables that stand for them) win over the file.
What this module checks is the file's own shape -- TOML at all, known keys, value types --
and each error names the file and the key: :class:`ConfigFileError`, which ``probe`` turns
into a usage error (exit 2). Ranges and meanings are checked by the same code that checks
the command line (``probe.cli``), so the two cannot drift apart.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.home_set import HomeSetError, fixed_homes

#: the kinds of value an option takes in the file
STRING, INTEGER, NUMBER, FLAG, STRINGS, THRESHOLDS = "a string", "an integer", "a number", "true or false", \
    "a list of strings", "a list of numbers or a string such as \"80,90,100\""
#: the table of homes
HOMES_TABLE = "homes"
#: a config file bigger than this is not a config file
MAX_BYTES = 1 << 20


class ConfigFileError(ValueError):
    """The config file cannot be used; the message names the file (and the key)."""


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/quota-probe/config.toml``, else ``~/.config/quota-probe/config.toml``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".config") / "quota-probe" / "config.toml"


@dataclass(frozen=True)
class ConfigFile:
    #: the file read; None when there was none to read
    path: Path | None = None
    #: option name as the code spells it (``cache_ttl_s``) -> the value, of the right kind
    options: dict[str, Any] = field(default_factory=dict)
    #: the ``[homes]`` table, checked (ids, directories); None when the file has none
    homes: dict[str, Path] | None = None


def find(given: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The file to read: ``given`` (``--config``), else the default path when it exists."""
    if given is not None:
        return Path(given).expanduser()
    path = default_path(environ)
    return path if path.is_file() else None


def load(path: Path | None, kinds: Mapping[str, str]) -> ConfigFile:
    """Read and check ``path`` against ``kinds`` (option name -> kind); None: no file."""
    if path is None:
        return ConfigFile()
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__}).") from None
    if len(raw) > MAX_BYTES:
        raise ConfigFileError(f"{path}: larger than {MAX_BYTES // 1024} KiB; not a config file.")
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text, so not TOML.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML ({exc}).") from None
    options: dict[str, Any] = {}
    homes = None
    for key, value in table.items():
        if key == HOMES_TABLE:
            homes = _homes(path, value)
            continue
        name = key.replace("-", "_")
        if name not in kinds or key.startswith("_"):
            known = ", ".join(sorted(k.replace("_", "-") for k in kinds))
            raise ConfigFileError(f"{path}: unknown key {key!r} (known: {known}, and the [homes] table).")
        if name in options:
            raise ConfigFileError(f"{path}: key {key!r} is given twice (with '-' and with '_').")
        options[name] = _checked(path, key, value, kinds[name])
    return ConfigFile(path, options, homes)


def _checked(path: Path, key: str, value: Any, kind: str) -> Any:
    def wrong() -> ConfigFileError:
        return ConfigFileError(f"{path}: key {key!r} must be {kind}, not {_toml_type(value)}.")

    if kind == FLAG:
        if not isinstance(value, bool):
            raise wrong()
    elif kind == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
    elif kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        value = float(value)
    elif kind == STRING:
        if not isinstance(value, str):
            raise wrong()
    elif kind == STRINGS:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise wrong()
        value = tuple(value)
    elif kind == THRESHOLDS:
        if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in value):
            value = ",".join(f"{v:g}" for v in value)
        elif not isinstance(value, str):
            raise wrong()
    else:   # pragma: no cover -- a kind this module does not know is a programming error
        raise AssertionError(kind)
    return value


def _homes(path: Path, value: Any) -> dict[str, Path]:
    if not isinstance(value, dict):
        raise ConfigFileError(f"{path}: [{HOMES_TABLE}] must be a table of id = \"path\", not {_toml_type(value)}.")
    for home_id, home in value.items():
        if not isinstance(home, str):
            raise ConfigFileError(f"{path}: key '{HOMES_TABLE}.{home_id}' must be a path string, "
                                  f"not {_toml_type(home)}.")
    try:
        return fixed_homes(value.items(), where=f"{path}: [{HOMES_TABLE}]")
    except HomeSetError as exc:
        raise ConfigFileError(str(exc)) from None


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__
