"""A home's active provider (``config.yaml`` ``model.provider``, SPEC §19) as the parent
knows it: asked of one of the home's workers (``{"op": "active_provider"}``,
``workers.hermes_config``) and kept with the file's stat data, so it is asked again only
when ``config.yaml`` changed -- the parent stats the file, never opens it.

The racy rule of ``probe.home_list`` applies: an answer read within one timestamp tick of
the file's last change is used for that call and asked again next time.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.credentials import stat_is_settled
from workers.hermes_config import CONFIG_NAME, PROVIDER_ID


class ConfigUnread(Exception):
    """No worker of the home answered the question; ``code`` is its failure (``timeout``,
    ``worker_crashed``, ``saturated``, ``bad_response``, ``home_not_found``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def config_stat(home: Path) -> tuple:
    """(inode, size, mtime_ns, ctime_ns) of the home's ``config.yaml`` (None when missing),
    as a one-part tuple in ``credential_stat``'s form."""
    try:
        st = os.stat(home / CONFIG_NAME)
    except OSError:
        return (None,)
    return ((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),)


def parse_reply(reply: dict[str, Any]) -> str | None:
    """A worker's ``active_provider`` reply; ConfigUnread for anything but a valid answer."""
    error = reply.get("error")
    if not reply.get("ok") and isinstance(error, dict) and error.get("code") == "home_not_found":
        raise ConfigUnread("home_not_found", "The home directory does not exist.")
    provider = reply.get("provider")
    if not reply.get("ok") or not (provider is None or isinstance(provider, str) and PROVIDER_ID.fullmatch(provider)):
        raise ConfigUnread("bad_response", "The worker sent a malformed answer.")
    return provider


class ActiveProviders:
    """The cached answer per home (resolved path), keyed by ``config.yaml``'s stat data."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple, bool, str | None]] = {}

    def get(self, home: Path, ask: Callable[[], str | None]) -> str | None:
        """The home's active provider: the cached one while ``config.yaml`` is unchanged and
        settled, else ``ask()``'s answer, stored. Exceptions of ``ask`` propagate."""
        now_ns = time.time_ns()   # before the stat: see the module docstring
        stat = config_stat(home)
        with self._lock:
            entry = self._entries.get(str(home))
        if entry is not None and entry[0] == stat and entry[1]:
            return entry[2]
        provider = ask()
        with self._lock:
            self._entries[str(home)] = (stat, stat[0] is None or stat_is_settled(stat, now_ns), provider)
        return provider
