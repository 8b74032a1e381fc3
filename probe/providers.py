"""``probe providers``: every provider -- built-in or plugin -- with its label, origin,
version and credential places, plus the plugins that were refused and why (SPEC §10, §16).

The rows come from a child (``workers.catalog``): reading ``LABEL`` and ``CREDENTIALS``
means importing the provider's module, which no CLI or service process ever does.
"""
from __future__ import annotations

from typing import Any

from probe.child import ChildFailed, run_json_child
from probe.env import tool_env

__all__ = ["ChildFailed", "list_providers", "providers_text"]


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
