"""quota-probe's own version: the one place it is read at run time.

Declared once, in ``pyproject.toml``; read here from the installed distribution's metadata
(``importlib.metadata``), so ``probe --version``, ``probe providers``' ``built-in`` rows,
``/healthz`` and the panel's footer can never disagree. On the child side (``workers``)
because ``workers.catalog`` needs it too and the child never imports ``probe``; the
parent imports it from here.
"""
from __future__ import annotations

import functools


@functools.cache
def quota_probe_version() -> str | None:
    """The installed version (``"0.4.0"``), or None when run from a source tree that was
    never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("quota-probe")
    except PackageNotFoundError:
        return None
