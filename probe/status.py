"""``probe status``: what workers exist, per home.

Two sources: a running backend's ``/api/pool`` (its own view, with busy flags and request
counts), or — with no server — every quota-probe worker process on this host, found with
psutil by its command line and grouped by the ``HERMES_HOME`` in its environment (SPEC §5:
each worker carries it so an operator can tell which home it serves).
"""
from __future__ import annotations

from typing import Any

import psutil


def _is_worker(cmdline: list[str]) -> bool:
    return "-m" in cmdline and "workers" in cmdline[cmdline.index("-m") + 1:cmdline.index("-m") + 2]


def local_workers() -> dict[str, dict[str, Any]]:
    """{home: {"slots": None, "alive": n, "busy": None, "workers": [...]}} for this host."""
    homes: dict[str, dict[str, Any]] = {}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "memory_info"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if not _is_worker(cmdline):
                continue
            home = proc.environ().get("HERMES_HOME", "?")
            rss = proc.info["memory_info"].rss / 1048576 if proc.info["memory_info"] else None
        except psutil.Error:
            continue
        entry = homes.setdefault(home, {"alive": 0, "workers": []})
        entry["alive"] += 1
        entry["workers"].append({"pid": proc.info["pid"], "parent_pid": proc.info["ppid"],
                                 "one_shot": "--once" in cmdline,
                                 "rss_mb": None if rss is None else round(rss, 1)})
    return homes


def status_text(homes: dict[str, dict[str, Any]]) -> str:
    if not homes:
        return "No quota-probe workers."
    lines = []
    for home, state in sorted(homes.items()):
        head = f"{home}: alive {state.get('alive', 0)}"
        if state.get("slots") is not None:
            head += f" / slots {state['slots']}, busy {state.get('busy', 0)}, generation {state.get('generation', 0)}"
        lines.append(head)
        for worker in state.get("workers", []):
            parts = [f"pid {worker['pid']}"]
            if worker.get("busy") is not None:
                parts.append("busy" if worker["busy"] else "idle")
            if worker.get("requests") is not None:
                parts.append(f"{worker['requests']} requests")
            if worker.get("rss_mb") is not None:
                parts.append(f"{worker['rss_mb']} MB")
            if worker.get("parent_pid") is not None:
                parts.append(f"parent {worker['parent_pid']}")
            lines.append("  " + ", ".join(parts))
    return "\n".join(lines)
