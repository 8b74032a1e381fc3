"""The environment a worker starts with: an allowlist, never the parent's whole environment.

Why an allowlist: the parent process (a web backend, a CLI in a developer's shell) often has
provider credentials of its own in its environment. A child that inherited them could probe
with the wrong account. So a child gets only what networking and locale need, the base-URL
overrides, and ``HERMES_HOME``; it reads its credentials from that home's files itself.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

from workers.lifeline import PARENT_PID_ENV

_ALLOWED_NAMES = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "all_proxy", "no_proxy",
    "SYSTEMROOT",  # Windows needs it for sockets
    # the 1Password CLI's own sign-in, for ``op read`` of a home's op:// references (SPEC §2,
    # workers.onepassword): a service account or a Connect server; the desktop app needs HOME
    "OP_SERVICE_ACCOUNT_TOKEN", "OP_CONNECT_HOST", "OP_CONNECT_TOKEN", "OP_ACCOUNT",
})
_ALLOWED_PATTERN = re.compile(r"^(LC_[A-Z]+|PROBE_[A-Z0-9_]+_BASE_URL)$")


def base_url_env_name(provider: str) -> str:
    """``openai-codex`` → ``PROBE_OPENAI_CODEX_BASE_URL`` (SPEC §3)."""
    return f"PROBE_{provider.upper().replace('-', '_')}_BASE_URL"


@functools.cache
def _workers_import_root() -> str:
    """The directory holding the ``workers`` package, so ``python -m workers`` finds it
    whether quota-probe is installed, editable, or run from a source tree. Cached: where
    an imported package lies does not change, and resolving it (a ``realpath``, a stat
    per path component) was half the cost of a new home's worker environment."""
    import workers

    return str(Path(workers.__file__).resolve().parent.parent)


def _allowlisted(source: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in source.items() if k in _ALLOWED_NAMES or _ALLOWED_PATTERN.match(k)}
    env[PARENT_PID_ENV] = str(os.getpid())
    env["PYTHONPATH"] = _workers_import_root()
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if source.get("PROBE_DEBUG"):
        env["PROBE_DEBUG"] = "1"
    return env


def child_env(home: Path, provider_urls: Mapping[str, str] | None = None,
              parent_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Build a worker's environment for ``home`` (already resolved)."""
    env = _allowlisted(os.environ if parent_env is None else parent_env)
    for provider, url in (provider_urls or {}).items():
        env[base_url_env_name(provider)] = url
    env["HERMES_HOME"] = str(home)
    return env


def tool_env(parent_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a home-less child tool (``python -m workers.catalog``): the
    workers' allowlist, so it sees the same installed plugins a worker sees, and no home."""
    return _allowlisted(os.environ if parent_env is None else parent_env)


#: room for a forked worker's process title (``quota-probe worker <home>``): a title can
#: only use the memory that held the template's own argv and environment, and a home path
#: may be as long as PATH_MAX
TITLE_ROOM = 4200


def template_env(parent_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The template process's environment (SPEC §12): the same allowlist as a worker's,
    with no home at all, plus padding that the process titles of its workers overwrite."""
    env = _allowlisted(os.environ if parent_env is None else parent_env)
    env["PROBE_TITLE_ROOM"] = "." * TITLE_ROOM
    return env
