"""``probe providers``: every provider -- built-in or plugin -- with its label, origin,
version and credential places, plus the plugins that were refused and why (SPEC §10, §16).

The rows come from a child (``workers.catalog``): reading ``LABEL`` and ``CREDENTIALS``
means importing the provider's module, which no CLI or service process ever does.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from probe.child import ChildFailed, run_json_child
from probe.env import tool_env

__all__ = ["ChildFailed", "ProviderLabels", "list_providers", "providers_text"]


def list_providers() -> list[dict[str, Any]]:
    """The rows of ``probe providers --json``; ChildFailed when the child gave no answer."""
    rows = run_json_child("workers.catalog", tool_env(), "list the providers")
    if not isinstance(rows, list):
        raise ChildFailed("Could not list the providers (the child process answered something else).")
    return rows


def providers_text(rows: list[dict[str, Any]]) -> str:
    """A table: name, label, origin and version, then where it looks for a credential (or,
    for a provider that cannot be used, why)."""
    table = [("NAME", "LABEL", "ORIGIN", "CREDENTIALS")]
    for row in rows:
        origin = row["origin"] + (f" {row['version']}" if row.get("version") else "")
        if row.get("error"):
            where = f"not usable: {row['error']}"
        else:
            where = ", ".join(row["credentials"]) or "(none declared: probed to find out)"
        table.append((row["name"], row["label"] or "", origin, where))
    widths = [max(len(line[column]) for line in table) for column in range(3)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths)) + "  " + line[3]
                     for line in table)


class ProviderLabels:
    """Each provider's display name (its module's ``LABEL``) for the panel and the CLI's
    error cards, read once per owner through the child that ``probe providers`` uses
    (``workers.catalog``): reading a ``LABEL`` means importing the provider's module, which
    no parent process does -- a plugin's module runs in child processes only (SPEC §16).
    Asked for lazily (the panel's first ``/api/homes``, the CLI's first error card), so
    whoever never needs a label never starts that child. When the child gives no answer
    callers show provider names; one warning says why."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._labels: dict[str, str] | None = None

    def get(self) -> dict[str, str]:
        with self._lock:       # one child at a time; everyone else waits for its answer
            if self._labels is None:
                self._labels = self._read()
            return self._labels

    @staticmethod
    def _read() -> dict[str, str]:
        try:
            rows = list_providers()
        except ChildFailed as exc:
            logging.getLogger("probe.providers").warning("provider names shown instead of labels: %s", exc)
            return {}
        return {row["name"]: row["label"] for row in rows if isinstance(row, dict) and not row.get("error")
                and isinstance(row.get("name"), str) and isinstance(row.get("label"), str)}
