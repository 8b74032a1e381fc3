"""``probe doctor``: why a home gives ``no_credentials`` or ``unauthorized``, in sentences.

The credential files are read by a child scoped to the home (``python -P -m
workers.doctor``, the same environment a worker gets): the service never reads a home's
secrets, and the report carries file and key names, kinds and times -- never a value.
This side adds what needs no secret: the files' permissions (a credential file readable by
other users is a warning) and, with ``--probe``, one real probe per provider found.
"""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from probe.child import ChildFailed, run_json_child
from probe.env import child_env
from probe.homes import HomeNotFound, resolve_home


class DoctorError(Exception):
    pass


def file_facts(home: Path) -> dict[str, dict[str, Any]]:
    """Existence and permissions of the two credential files (stat only)."""
    facts = {}
    for name in (".env", "auth.json"):
        path = home / name
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            facts[name] = {"exists": False}
            continue
        except OSError as exc:
            facts[name] = {"exists": True, "error": type(exc).__name__}
            continue
        facts[name] = {"exists": True, "mode": oct(stat.S_IMODE(mode)),
                       "readable_by_others": bool(mode & (stat.S_IRGRP | stat.S_IROTH))}
    return facts


def examine(home_arg: str | None, provider_urls: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole report for one home; DoctorError when the home does not exist."""
    try:
        home = resolve_home(home_arg)
    except (HomeNotFound, ValueError) as exc:
        raise DoctorError(str(exc)) from None
    try:
        report = run_json_child("workers.doctor", child_env(home, provider_urls), "read this home's credential files")
    except ChildFailed as exc:
        raise DoctorError(str(exc)) from None
    if not isinstance(report, dict):
        raise DoctorError("Could not read this home's credential files (the inspection failed).")
    if "error" in report:
        raise DoctorError(report["error"])
    report["home"] = str(home)
    report["files"] = file_facts(home)
    return report


def findings(report: dict[str, Any]) -> list[str]:
    """What is wrong, as sentences saying what to do; [] when all is well."""
    out = []
    for name, facts in report["files"].items():
        if facts.get("readable_by_others"):
            out.append(f"{name} is readable by other users (mode {facts['mode']}): run `chmod 600 "
                       f"{report['home']}/{name}`.")
    skipped = report.get("env_skipped_lines") or []
    if skipped:
        many = len(skipped) > 1
        shown = ", ".join(map(str, skipped[:10])) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        out.append(f".env line{'s' * many} {shown} could not be parsed and {'are' if many else 'is'} skipped, by "
                   "Hermes too (python-dotenv): fix it if it was meant to hold a credential.")
    # one line per problem, naming every provider it affects (an unreadable auth.json is
    # every provider's problem: one sentence, not eleven)
    problems: dict[str, list[str]] = {}
    for provider, facts in report["providers"].items():
        if facts.get("problem"):
            problems.setdefault(facts["problem"], []).append(provider)
    for problem, providers in problems.items():
        out.append(f"{', '.join(providers)}: {problem} Fix the file, then run `probe doctor` again.")
    for provider, facts in report["providers"].items():
        if facts.get("advice"):
            out.append(f"{provider}: {facts['advice'][:1].upper()}{facts['advice'][1:]}")
        if facts.get("unusable"):
            out.append(f"{provider}: {facts['unusable']} (`probe providers` lists every provider and what is wrong "
                       "with one that cannot be used.)")
        probe = facts.get("probe")
        if probe and probe.get("error"):
            out.append(f"{provider}: the probe answered {probe['error']['code']}: {probe['error']['message']}")
    if not any(f.get("found") for f in report["providers"].values()) and not out:
        out.append("No provider credential in this home: add one of the keys listed above to .env or auth.json "
                   "(see the README's table).")
    return out


def probe_found(report: dict[str, Any], provider_urls: dict[str, str] | None = None) -> None:
    """``--probe``: one real probe of every provider with a credential, added to the report."""
    from probe.config import ProbeConfig
    from probe.service import ProbeService

    with ProbeService(ProbeConfig(pool_size=0, provider_urls=provider_urls or {})) as service:
        for provider, facts in report["providers"].items():
            if facts.get("found"):
                snap = service.fetch(provider, home=report["home"], refresh=True)
                facts["probe"] = {"available": snap.available,
                                  "error": snap.error.to_dict() if snap.error else None,
                                  "path": snap.probe.path}


def doctor_text(report: dict[str, Any], problems: list[str]) -> str:
    lines = [f"home {report['home']}"]
    for name, facts in report["files"].items():
        if not facts["exists"]:
            lines.append(f"  {name}: missing")
        else:
            lines.append(f"  {name}: mode {facts.get('mode', '?')}"
                         + (" — readable by other users" if facts.get("readable_by_others") else ""))
    for provider, facts in report["providers"].items():
        found = facts.get("found")
        lines.append(f"{provider}")
        if facts.get("looked_in"):
            lines.append(f"  looked in  {'; '.join(facts['looked_in'])}")
        if facts.get("note"):
            lines.append(f"  note       {facts['note']}")
        if facts.get("unusable"):
            lines.append(f"  unusable   {facts['unusable']}")
        lines.append(f"  found      {found['where']} ({found['kind']})" if found else "  found      nothing")
        for account in facts.get("accounts", []):   # every account the probe reads (SPEC §18)
            source = f", {account['source']}" if account.get("source") else ""
            lines.append(f"  account    {account['label']} [{account['id']}{source}]: {account['state']}")
        for entry in [] if facts.get("accounts") else facts.get("pool", []):
            state = f"exhausted until {entry['exhausted_until']}" if entry["exhausted_until"] else "usable"
            lines.append(f"  pool       {entry['where']}: {state}")
        if facts.get("problem"):
            lines.append(f"  problem    {facts['problem']}")
        lines.append(f"  base URL   {facts['base_url'] or '(the provider default; PROBE_<NAME>_BASE_URL overrides it)'}")
        probe = facts.get("probe")
        if probe:
            lines.append("  probe      " + ("available" if probe["available"] and not probe["error"]
                                           else f"{probe['error']['code']}" if probe["error"] else "unavailable"))
    lines.append("")
    lines += ["Something to fix:", *[f"  - {p}" for p in problems]] if problems else ["All good."]
    return "\n".join(lines)
