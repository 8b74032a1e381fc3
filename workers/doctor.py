"""``python -P -m workers.doctor``: what this home's credential files hold, described --
never a value -- as one JSON object on stdout (``probe doctor``).

It runs as a child scoped to the home (``HERMES_HOME``), like a worker: a home's
credentials are read only by processes of that home, never by the service, and plugin
modules are imported only by children (SPEC §16).

Per provider, built-in or plugin: where it looked (its ``CREDENTIALS`` places, evaluated
by ``workers.places`` exactly as a probe evaluates them), what it found (which key or
entry, and what kind of credential), a problem sentence when a file is malformed or the
plugin cannot be used, and the base URL in effect. Some built-ins say a little more, by
the same rules their probe applies:

* Anthropic: whether the token is an OAuth token or a plain API key (no account limits);
* OpenAI Codex: every pool entry and whether it is exhausted until when (a probe skips
  those);
* z.ai: the China host when ``GLM_BASE_URL`` points at ``open.bigmodel.cn``;
* Kimi: which kind of key was found (a ``sk-kimi-`` Kimi Code key reads plan windows, any
  other key the Moonshot balance) and the base URL of that kind;
* Copilot: classic ``ghp_`` tokens are skipped, and said so (the endpoint refuses them);
  a home with only those gets advice instead of a silent "nothing";
* Nous: which login (``providers.nous`` or a ``credential_pool.nous`` entry), when it
  expires, its own portal as the base URL, and advice when it has expired (a probe then
  answers ``token_expired`` without a request; quota-probe never refreshes it).

``advice`` is a sentence saying what to do; ``probe doctor`` lists it under "Something to
fix".
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from workers.credentials import HomeCredentials, load_home
from workers.http import base_url
from workers.loop import _take_protocol_stdout
from workers.places import Found, Place, credentials_at, first_credential, locate
from workers.providers import Provider, anthropic, copilot, kimi, load_all, nous, openai_codex, zai
from workers.result import ProbeFailure, iso_utc


def looked_in(places: tuple[Place, ...]) -> list[str]:
    """``.env: A, B, C`` for a run of .env places, ``auth.json: path`` for each other."""
    lines: list[str] = []
    env_run: list[str] = []
    for place in places:
        if place.file == ".env":
            env_run.append(place.name)
            continue
        if env_run:
            lines.append(".env: " + ", ".join(env_run))
            env_run = []
        lines.append("auth.json: " + place.path_text)
    if env_run:
        lines.append(".env: " + ", ".join(env_run))
    return lines


def _kind(provider: Provider, found: Found) -> str:
    if provider.spec.name == anthropic.NAME:
        return "plain API key (has no account limits to show)" if anthropic.is_api_key(found.value) else "OAuth token"
    return "API key" if found.place.file == ".env" else "token"


def _codex(provider: Provider, creds: HomeCredentials) -> dict[str, Any]:
    """The tokens, else the first pool entry that is not exhausted -- the probe's own rule."""
    now = time.time()
    found = None
    tokens = [f for f in credentials_at(openai_codex.TOKENS + ".access_token", creds)]
    if tokens:
        with_account = any(isinstance(v, str) and v.strip()
                           for v in (f.value for f in locate(openai_codex.TOKENS + ".account_id", creds)))
        found = {"where": tokens[0].where, "kind": "ChatGPT sign-in token" + (" with its account id" if with_account
                                                                               else "")}
    entries = []
    for entry in locate(openai_codex.POOL, creds):
        if not isinstance(entry.value, dict) or not isinstance(entry.value.get("access_token"), str):
            continue
        until = openai_codex._exhausted_until(entry.value, now)
        entries.append({"where": entry.where, "exhausted_until": iso_utc(until) if until is not None else None})
    if found is None:
        usable = [e for e in entries if e["exhausted_until"] is None]
        if usable:
            found = {"where": usable[0]["where"], "kind": "Codex pool entry"}
    return {"looked_in": looked_in(provider.places), "found": found, "pool": entries}


def _generic(provider: Provider, creds: HomeCredentials) -> dict[str, Any]:
    report: dict[str, Any] = {"looked_in": looked_in(provider.places), "found": None}
    if not provider.declares_credentials:
        report["note"] = "declares no CREDENTIALS: only a probe can tell whether this home has one"
        return report
    hit = first_credential(provider.places, creds)
    if hit is not None:
        report["found"] = {"where": hit.where, "kind": _kind(provider, hit)}
    return report


def _zai(provider: Provider, creds: HomeCredentials) -> dict[str, Any]:
    report = _generic(provider, creds)
    glm = creds.env_value("GLM_BASE_URL")
    default = zai.default_base_url(glm[1] if glm else None)
    if default != zai.DEFAULT_BASE_URL:
        report["note"] = f"GLM_BASE_URL in .env is on {zai.CHINA_HOST}: the China host is used"
    report["base_url"] = base_url(provider.spec.name, default)
    return report


def _kimi(provider: Provider, creds: HomeCredentials) -> dict[str, Any]:
    report = _generic(provider, creds)
    hit = first_credential(provider.places, creds)
    name = provider.spec.name
    if hit is None:
        report["base_url"] = base_url(name, "") or (f"{kimi.KIMI_CODE_BASE_URL} ({kimi.KIMI_CODE_PREFIX} keys), "
                                                    f"{kimi.MOONSHOT_BASE_URL} (other keys)")
        return report
    code_key = hit.value.startswith(kimi.KIMI_CODE_PREFIX)
    report["found"]["kind"] = ("Kimi Code key: plan windows" if code_key
                               else "Moonshot platform key: account balance")
    report["base_url"] = base_url(name, kimi.route(hit.value).base_url)
    return report


def _copilot(provider: Provider, creds: HomeCredentials) -> dict[str, Any]:
    """The probe's rule: the first token over the places that is not a classic ``ghp_``."""
    report: dict[str, Any] = {"looked_in": looked_in(provider.places), "found": None}
    classic: list[str] = []
    for place in provider.places:
        for hit in credentials_at(place, creds):
            if hit.value.startswith(copilot.CLASSIC_PREFIX):
                classic.append(hit.where)
            else:
                report["found"] = {"where": hit.where, "kind": "GitHub token"}
                break
        if report["found"] is not None:
            break
    if classic:
        report["note"] = ("skipped (classic ghp_ tokens, which the Copilot usage endpoint does not accept): "
                          + ", ".join(classic))
        if report["found"] is None:
            report["advice"] = copilot.ONLY_CLASSIC
    return report


def _nous(provider: Provider, creds: HomeCredentials) -> dict[str, Any]:
    """The probe's choice of login, its expiry, and its own portal."""
    report: dict[str, Any] = {"looked_in": looked_in(provider.places), "found": None}
    chosen = nous.choose(creds.auth_json())
    portal = None
    if chosen is not None:
        where, entry = chosen
        expires = nous.expires_at(entry)
        shown = iso_utc(expires) if expires is not None else None
        if expires is not None and expires <= time.time():
            report["found"] = {"where": f"auth.json {where}", "kind": f"Nous Portal login, expired at {shown}"}
            report["advice"] = (f"the Nous Portal login expired at {shown}. {nous.REFRESH_HINT} quota-probe never "
                                "refreshes it (Nous rotates refresh tokens).")
        else:
            report["found"] = {"where": f"auth.json {where}",
                               "kind": f"Nous Portal login, expires {shown}" if shown else "Nous Portal login"}
        portal = nous.portal(entry)
    report["base_url"] = base_url(provider.spec.name, portal or nous.DEFAULT_BASE_URL)
    return report


#: built-ins whose report says more than where the first credential is
_SPECIAL = {openai_codex.NAME: _codex, "zai": _zai, "kimi-coding": _kimi, "copilot": _copilot, "nous": _nous}


def inspect_provider(provider: Provider, creds: HomeCredentials) -> dict[str, Any]:
    if provider.error is not None:
        report: dict[str, Any] = {"looked_in": [], "found": None, "problem": None, "unusable": provider.error_message}
    else:
        special = _SPECIAL.get(provider.spec.name) if provider.spec.builtin else None
        try:
            report = (special or _generic)(provider, creds)
            report["problem"] = None
            accounts = _accounts(provider, creds)
            if len(accounts) > 1:
                report["accounts"] = accounts
        except ProbeFailure as exc:   # a malformed file: its message names file and line, never a value
            report = {"looked_in": looked_in(provider.places), "found": None, "problem": exc.message}
    if "base_url" not in report:
        default = getattr(provider.module, "DEFAULT_BASE_URL", None)
        report["base_url"] = base_url(provider.spec.name, default) if isinstance(default, str) else \
            (base_url(provider.spec.name, "") or None)
    return report


def _accounts(provider: Provider, creds: HomeCredentials) -> list[dict[str, Any]]:
    """Every account the probe would read (SPEC §18: pool rows, numbered ``.env`` keys,
    logins, a profile's borrowed root rows), with what the probe will do with it -- the
    probe's own enumeration, never a value: ``found`` names only the first place, so a
    pooled home's second key or exhausted row was invisible here."""
    from workers.accounts import enumerate_accounts

    if provider.module is None or not provider.declares_credentials:
        return []
    try:
        accounts = enumerate_accounts(provider, creds, time.time(), load_home, resolve=False)
    except Exception as exc:  # noqa: BLE001 -- a plugin's odd module must not hide the rest of the report
        print(f"workers: reading the {provider.spec.name} accounts raised {type(exc).__name__}", file=sys.stderr,
              flush=True)
        return []
    entries = []
    for account in accounts:
        if account.verdict is None:
            state = "usable"
        elif account.verdict[0] == "exhausted" and account.retry_after is not None:
            state = f"exhausted until {iso_utc(account.retry_after)}"
        else:
            state = f"{account.verdict[0]}: {account.verdict[2]}"
        entries.append({"id": account.id, "label": account.label, "source": account.source, "state": state})
    return entries


def inspect_home(home: str) -> dict[str, Any]:
    """Every provider's report, and the ``.env`` lines python-dotenv skipped (by number):
    a credential on such a line is invisible to Hermes and to quota-probe alike."""
    creds = load_home(home)
    return {"home": home, "providers": {p.spec.name: inspect_provider(p, creds) for p in load_all()},
            "env_skipped_lines": list(creds.env_skipped)}


def main() -> int:
    out = _take_protocol_stdout()   # a plugin that prints while imported cannot garble the answer
    home = os.environ.get("HERMES_HOME", "")
    if not home or not os.path.isdir(home):
        out.write(json.dumps({"error": "The home directory does not exist."}).encode() + b"\n")
        return 1
    out.write(json.dumps(inspect_home(home)).encode() + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
