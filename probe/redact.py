"""Secrets out of text that is logged or shown: a URL's password becomes ``****``.

A leaf, so both users reach it without reaching up a layer: the monitor's alerts (a
``--notify`` URL in an error) and ``probe.shared.cluster`` (a ``--redis`` URL in an error or
a log line).
"""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask(url: str) -> str:
    """``url`` with any password replaced by ``****`` (for error messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:****@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
