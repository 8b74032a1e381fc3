"""``probe status``: what workers exist, per home.

Two sources: a running backend's ``/api/pool`` (its own view, with busy flags and request
counts), or — with no server — every quota-probe worker process on this host, found with
psutil and grouped by home (SPEC §5): an exec-started worker (``python -m workers``)
carries ``HERMES_HOME`` in its environment; a worker forked from a template process has the
process title ``quota-probe worker [--once ]<home>``. Template processes (``quota-probe
template``) and their spare children (``quota-probe spare``) are listed too.
"""
from __future__ import annotations

from typing import Any

import psutil

WORKER_TITLE = "quota-probe worker "
ONCE_MARK = "--once "
TEMPLATE_TITLE = "quota-probe template"
#: a child the template forked ahead of need, not yet any home's worker
SPARE_TITLE = "quota-probe spare"


def _is_exec_worker(cmdline: list[str]) -> bool:
    return "-m" in cmdline and "workers" in cmdline[cmdline.index("-m") + 1:cmdline.index("-m") + 2]


def process_title(proc: psutil.Process, cmdline: list[str]) -> str | None:
    """A process title set with setproctitle, or None for an ordinary command line.

    A title is one string where the argv area was: psutil hands it back either split on
    spaces or followed by empty strings (the zeroed rest of the area). /proc gives the raw
    bytes on Linux, so a home with several spaces in a row survives; elsewhere the pieces
    are joined again."""
    try:
        with open(f"/proc/{proc.pid}/cmdline", "rb") as handle:
            raw = handle.read().rstrip(b"\0")
        return None if b"\0" in raw else raw.decode(errors="replace")
    except OSError:
        return " ".join(part for part in cmdline if part) or None


def _home_of(proc: psutil.Process, cmdline: list[str]) -> tuple[str, bool, str] | None:
    """(home, one_shot, how started) for a quota-probe worker, else None."""
    if _is_exec_worker(cmdline):
        return proc.environ().get("HERMES_HOME", "?"), "--once" in cmdline, "exec"
    title = process_title(proc, cmdline) if cmdline and cmdline[0].startswith("quota-probe") else None
    if title is None or not title.startswith(WORKER_TITLE):
        return None
    rest = title[len(WORKER_TITLE):]
    once = rest.startswith(ONCE_MARK)
    return (rest[len(ONCE_MARK):] if once else rest), once, "fork"


def is_worker_process(proc: psutil.Process) -> bool:
    """Whether ``proc`` is a quota-probe worker (recognised positively, by the same rule as
    :func:`local_workers`; a template or spare is not a worker)."""
    try:
        return _home_of(proc, proc.cmdline()) is not None
    except psutil.Error:
        return False


def _rss_mb(proc: psutil.Process) -> float | None:
    memory = proc.info["memory_info"]
    return None if memory is None else round(memory.rss / 1048576, 1)


def local_workers() -> dict[str, dict[str, Any]]:
    """{home: {"alive": n, "workers": [...]}} for this host."""
    homes: dict[str, dict[str, Any]] = {}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "memory_info"]):
        try:
            found = _home_of(proc, proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if found is None:
            continue
        home, once, started_by = found
        entry = homes.setdefault(home, {"alive": 0, "workers": []})
        entry["alive"] += 1
        entry["workers"].append({"pid": proc.info["pid"], "parent_pid": proc.info["ppid"], "one_shot": once,
                                 "started_by": started_by, "rss_mb": _rss_mb(proc)})
    return homes


def local_templates() -> list[dict[str, Any]]:
    """Every template process and spare on this host: role, pid, parent and RSS."""
    out = []
    roles = {TEMPLATE_TITLE: "template", SPARE_TITLE: "spare"}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "memory_info"]):
        try:
            cmdline = proc.info["cmdline"] or []
            role = roles.get(process_title(proc, cmdline)) if cmdline and cmdline[0].startswith("quota-probe") else None
            if role:
                out.append({"role": role, "pid": proc.info["pid"], "parent_pid": proc.info["ppid"],
                            "rss_mb": _rss_mb(proc)})
        except psutil.Error:
            continue
    return out


def status_text(homes: dict[str, dict[str, Any]], templates: list[dict[str, Any]] = ()) -> str:
    lines = [f"{t['role']} pid {t['pid']}, parent {t['parent_pid']}, {t['rss_mb']} MB" for t in templates]
    if not homes:
        return "\n".join(lines + ["No quota-probe workers."])
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
