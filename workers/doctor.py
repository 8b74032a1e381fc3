"""``python -P -m workers.doctor``: what this home's credential files hold, described --
never a value -- as one JSON object on stdout (``probe doctor``).

It runs as a child scoped to the home (``HERMES_HOME``), like a worker: a home's
credentials are read only by processes of that home, never by the service. It uses the
adapters' own lookups, so what it reports is exactly what a probe would use.

Per provider: where it looked (files and key names), what it found (which key or entry,
and what kind of credential: an OAuth token or a plain API key, a Codex pool entry and
whether it is exhausted until when), a problem sentence when a file is malformed, and the
base URL in effect.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from workers.credentials import HomeCredentials, load_home
from workers.http import base_url
from workers.providers import anthropic, deepseek, openai_codex, openrouter
from workers.result import ProbeFailure, iso_utc


def _env_lookup(creds: HomeCredentials, names: tuple[str, ...], kind: str) -> dict[str, Any] | None:
    found = creds.env_value(*names)
    return None if found is None else {"where": f".env {found[0]}", "kind": kind(found[1]) if callable(kind) else kind}


def _anthropic(creds: HomeCredentials) -> dict[str, Any]:
    def kind(token: str) -> str:
        return "plain API key (has no account limits to show)" if anthropic.is_api_key(token) else "OAuth token"

    found = _env_lookup(creds, anthropic.ENV_NAMES, kind)
    if found is None:
        for index, entry in enumerate(creds.auth_list("credential_pool", anthropic.NAME)):
            token = entry.get("access_token") if isinstance(entry, dict) else None
            if isinstance(token, str) and token.strip():
                found = {"where": f"auth.json credential_pool.anthropic[{index}]", "kind": kind(token.strip())}
                break
    return {"looked_in": [".env: " + ", ".join(anthropic.ENV_NAMES), "auth.json: credential_pool.anthropic[].access_token"],
            "found": found}


def _codex(creds: HomeCredentials) -> dict[str, Any]:
    now = time.time()
    found = None
    tokens = creds.auth_object("providers", openai_codex.NAME, "tokens")
    if tokens is not None and isinstance(tokens.get("access_token"), str) and tokens["access_token"].strip():
        found = {"where": "auth.json providers.openai-codex.tokens", "kind": "ChatGPT sign-in token"
                 + (" with its account id" if tokens.get("account_id") else "")}
    entries = []
    for index, entry in enumerate(creds.auth_list("credential_pool", openai_codex.NAME)):
        if not isinstance(entry, dict) or not isinstance(entry.get("access_token"), str):
            continue
        until = openai_codex._exhausted_until(entry, now)
        entries.append({"where": f"auth.json credential_pool.openai-codex[{index}]",
                        "exhausted_until": iso_utc(until) if until is not None else None})
    if found is None:
        usable = [e for e in entries if e["exhausted_until"] is None]
        if usable:
            found = {"where": usable[0]["where"], "kind": "Codex pool entry"}
    return {"looked_in": ["auth.json: providers.openai-codex.tokens", "auth.json: credential_pool.openai-codex[]"],
            "found": found, "pool": entries}


def _single_key(name: str) -> Any:
    def inspect(creds: HomeCredentials) -> dict[str, Any]:
        return {"looked_in": [f".env: {name}"], "found": _env_lookup(creds, (name,), "API key")}
    return inspect


INSPECTORS = {
    anthropic.NAME: (_anthropic, anthropic.DEFAULT_BASE_URL),
    openai_codex.NAME: (_codex, openai_codex.DEFAULT_BASE_URL),
    openrouter.NAME: (_single_key("OPENROUTER_API_KEY"), openrouter.DEFAULT_BASE_URL),
    deepseek.NAME: (_single_key("DEEPSEEK_API_KEY"), deepseek.DEFAULT_BASE_URL),
}


def inspect_home(home: str) -> dict[str, Any]:
    creds = load_home(home)
    providers = {}
    for name, (inspect, default_url) in INSPECTORS.items():
        try:
            report = inspect(creds)
            report["problem"] = None
        except ProbeFailure as exc:   # a malformed file: its message names file and line, never a value
            report = {"looked_in": [], "found": None, "problem": exc.message}
        report["base_url"] = base_url(name, default_url)
        providers[name] = report
    return {"home": home, "providers": providers}


def main() -> int:
    home = os.environ.get("HERMES_HOME", "")
    if not home or not os.path.isdir(home):
        print(json.dumps({"error": "The home directory does not exist."}))
        return 1
    print(json.dumps(inspect_home(home)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
