"""Home identity and the cheap credential fingerprint.

A home's identity is its resolved absolute path, so ``~/.hermes``, ``/root/.hermes/``,
``/root/x/../.hermes`` and a symlink to it all map to one pool (SPEC §2). The fingerprint is
``stat`` data only — the parent never reads credential values; the child does.
"""
from __future__ import annotations

import os
from pathlib import Path

from probe.home_set import active_home
from workers.credentials import credential_stat


class HomeNotFound(Exception):
    """The home directory does not exist (or is not a directory)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"Home directory {path} does not exist.")
        self.path = path


def default_home() -> Path:
    """The home a call without one reads: the profile Hermes itself would use
    (``probe.home_set.active_home``: ``$HERMES_HOME``, else ``<root>/active_profile``'s,
    else the root). A sticky profile whose directory is gone is its would-be path, so the
    answer is ``home_not_found`` naming it rather than another profile's quota."""
    return active_home(strict=False)


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
    """The home's credential fingerprint: the child's own ``credential_stat`` (inode, size,
    mtime, ctime of each file; stat calls only), so parent and child agree on what counts
    as a rewrite."""
    return credential_stat(home)
