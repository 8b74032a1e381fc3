"""Home identity and the cheap credential fingerprint.

A home's identity is its resolved absolute path, so ``~/.hermes``, ``/root/.hermes/``,
``/root/x/../.hermes`` and a symlink to it all map to one pool (SPEC §2). The fingerprint is
``stat`` data only — the parent never reads credential values; the child does.
"""
from __future__ import annotations

import os
from pathlib import Path

CREDENTIAL_FILES = (".env", "auth.json")


class HomeNotFound(Exception):
    """The home directory does not exist (or is not a directory)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"Home directory {path} does not exist.")
        self.path = path


def default_home() -> Path:
    env_home = os.environ.get("HERMES_HOME")
    return Path(env_home) if env_home else Path.home() / ".hermes"


def home_path(home: str | os.PathLike[str] | None) -> Path:
    """Resolve a home to its identity without checking it exists. Raises ValueError on bad input."""
    if home is None:
        raw: str | os.PathLike[str] = default_home()
    elif isinstance(home, (str, os.PathLike)):
        raw = home
    else:
        raise ValueError(f"home must be a path or None, not {type(home).__name__}")
    text = os.fspath(raw)
    if isinstance(text, bytes):
        raise ValueError("home must be a text path")
    if not text or "\x00" in text or len(text) > 4096:
        raise ValueError("home must be a non-empty path without NUL characters")
    # os.path.realpath: same answer as Path.resolve(strict=False), at half the cost on
    # the hot path (every fetch resolves its home).
    return Path(os.path.realpath(os.path.expanduser(text)))


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """The home's identity; raises HomeNotFound when it is not an existing directory."""
    path = home_path(home)
    if not path.is_dir():
        raise HomeNotFound(path)
    return path


def credential_fingerprint(home: Path) -> tuple:
    """(inode, size, mtime_ns) of each credential file, or None where it is missing.

    Changes whenever a credential manager rewrites a file (even to the same size, through
    mtime_ns or, for atomic replaces, the inode) while costing two stat calls.
    """
    parts = []
    for name in CREDENTIAL_FILES:
        try:
            st = os.stat(home / name)
        except OSError:
            parts.append(None)
        else:
            parts.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(parts)
