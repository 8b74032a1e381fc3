"""Throw-away demo homes whose emulator tokens drive each scenario (SPEC §8).

The tokens are fake and only mean something to the built-in emulator; the scenario
markers in them (``-429-``) are what make one home show a rate-limit badge. The emulator
draws each window's usage and reset phase from the token, so the tokens are picked for a
demo that shows every state at start: ``main``'s Anthropic account is busy (both windows
in deficit, running out before their resets), its Codex session and ``team``'s Anthropic
session are used up (the 80/90/100 % alerts), the rest are in reserve.

``main`` also holds three of the providers added in 0.3 (a z.ai key, a Kimi Code
``sk-kimi-`` key and a MiniMax key, each chosen so every window starts in reserve) and
``team`` a Copilot token and a Nous login, so the panel shows their windows, MiniMax's
points and Nous' credits beside the rest without turning the demo into a wall of cards.

``pooled`` shows every account in a home (SPEC §18): three Codex logins in its
``credential_pool`` -- ``work`` with room, ``team`` near its weekly limit (88 % used at
start) and ``spare`` exhausted by Hermes (a 429 recorded with a reset an hour ahead: shown
with its retry time, never probed) -- and two numbered OpenRouter keys
(``OPENROUTER_API_KEY``, ``OPENROUTER_API_KEY_2``). ``pooled-work`` is a Hermes profile of
it (``pooled/profiles/work``) with a Codex login of its own and no pool rows: it borrows the
root's three rows, read-only, as Hermes does (a profile lists the providers it has a
credential for; the root's rows join their accounts), so its Codex card has four accounts. The emulator draws each window from the token and the time since
it started, so these tokens give those shapes at start (usage then rises, as it does).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from probe.tools.plugin_routes import PluginRoute


#: keyword of :func:`write_home` -> the ``.env`` name it writes (the first place each
#: provider's CREDENTIALS names)
ENV_NAMES = {"anthropic": "ANTHROPIC_TOKEN", "openrouter": "OPENROUTER_API_KEY", "deepseek": "DEEPSEEK_API_KEY",
             "zai": "GLM_API_KEY", "kimi": "KIMI_API_KEY", "kimi_cn": "KIMI_CN_API_KEY",
             "minimax": "MINIMAX_API_KEY", "minimax_cn": "MINIMAX_CN_API_KEY", "copilot": "COPILOT_GITHUB_TOKEN"}
#: a Nous login that stays valid for any test or demo run
NOUS_VALID_UNTIL = "2099-01-01T00:00:00Z"


def write_home(root: Path, name: str, *, anthropic: str | None = None, codex: str | None = None,
               openrouter: str | None = None, deepseek: str | None = None,
               codex_account: str | None = None, zai: str | None = None, kimi: str | None = None,
               kimi_cn: str | None = None, minimax: str | None = None, minimax_cn: str | None = None,
               copilot: str | None = None, nous: str | None = None,
               nous_expires_at: str = NOUS_VALID_UNTIL) -> Path:
    """Create ``root/name`` with a ``.env`` and ``auth.json`` holding the given tokens
    (``kimi`` is the kimi-coding key, ``nous`` goes to ``auth.json`` ``providers.nous``
    with ``nous_expires_at``)."""
    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    env_lines = ["# demo home written by quota-probe"]
    given = {"anthropic": anthropic, "openrouter": openrouter, "deepseek": deepseek, "zai": zai, "kimi": kimi,
             "kimi_cn": kimi_cn, "minimax": minimax, "minimax_cn": minimax_cn, "copilot": copilot}
    env_lines += [f"{ENV_NAMES[key]}={value}" for key, value in given.items() if value]
    (home / ".env").write_text("\n".join(env_lines) + "\n")
    auth: dict = {}
    if codex:
        tokens = {"access_token": codex}
        if codex_account:
            tokens["account_id"] = codex_account
        auth.setdefault("providers", {})["openai-codex"] = {"tokens": tokens}
    if nous:
        auth.setdefault("providers", {})["nous"] = {"access_token": nous, "expires_at": nous_expires_at,
                                                    "token_type": "Bearer"}
    (home / "auth.json").write_text(json.dumps(auth, indent=2) + "\n")
    for path in (home / ".env", home / "auth.json"):
        path.chmod(0o600)
    return home


LIMITED_ANTHROPIC_TOKEN = "sk-ant-oat01-demo-limited"
#: the pooled home's Codex logins: (row id, label, token) -- room, near the weekly limit,
#: exhausted by Hermes; the emulator answers these tokens with those shapes at start
POOL_CODEX = (("c0de01", "work@example.com", "demo-codex-pool-14"),
              ("c0de02", "team@example.com", "demo-codex-pool-38"),
              ("c0de03", "spare@example.com", "demo-codex-pool-9"))
#: how long Hermes' recorded 429 keeps the spare login cooling, from when the demo starts
POOL_EXHAUSTED_FOR_S = 3600
POOL_OPENROUTER = ("sk-or-v1-demo-pool-3", "sk-or-v1-demo-pool-2")
#: the profile's own Codex login (with room), beside the three it borrows from the root
POOL_PROFILE_CODEX = "demo-codex-pool-34"


def write_pooled_home(root: Path) -> tuple[Path, Path]:
    """``root/pooled`` with a Codex credential_pool and numbered OpenRouter keys, and its
    profile ``root/pooled/profiles/work`` (its own OpenRouter key and Codex login, no pool
    rows: it borrows the root's). Rows as Hermes writes them (``manual:device_code`` logins by
    priority; the spare one with the 429 Hermes recorded and its reset)."""
    now = time.time()
    home = write_home(root, "pooled", openrouter=POOL_OPENROUTER[0])
    with (home / ".env").open("a") as env:
        env.write(f"OPENROUTER_API_KEY_2={POOL_OPENROUTER[1]}\n")
    rows = []
    for priority, (row_id, label, token) in enumerate(POOL_CODEX):
        row = {"id": row_id, "label": label, "auth_type": "oauth", "priority": priority,
               "source": "manual:device_code", "access_token": token, "last_status": "ok",
               "last_status_at": now - 600}
        if row_id == POOL_CODEX[2][0]:
            row.update(last_status="exhausted", last_status_at=now - 60, last_error_code=429,
                       last_error_reason="usage_limit_reached", last_error_reset_at=now + POOL_EXHAUSTED_FOR_S)
        rows.append(row)
    (home / "auth.json").write_text(json.dumps({"credential_pool": {"openai-codex": rows}}, indent=2) + "\n")
    profile = write_home(root / "pooled" / "profiles", "work", openrouter="sk-or-v1-demo-pool-0",
                         codex=POOL_PROFILE_CODEX)
    return home, profile


def make_demo_homes(root: Path, plugin_credentials: Mapping[str, str] | None = None) -> dict[str, Path]:
    """The demo homes (the last two: a pooled home and its profile); ``plugin_credentials`` (``.env`` name -> token) go into ``main``
    too, so each installed plugin the emulator serves shows a card there."""
    homes = {
        "main": write_home(root, "main", anthropic="sk-ant-oat01-demo-main-busy", codex="demo-codex-main",
                           codex_account="acct-demo-main", openrouter="sk-or-v1-demo-main",
                           deepseek="sk-demo-main", zai="glm-demo-02", kimi="sk-kimi-demo01",
                           minimax="minimax-demo"),
        "team": write_home(root, "team", anthropic="sk-ant-oat01-demo-team",
                           openrouter="sk-or-v1-demo-team", copilot="github_pat_demo_team", nous="demo-nous-team"),
        "limited": write_home(root, "limited", anthropic=LIMITED_ANTHROPIC_TOKEN, codex="demo-codex-limited"),
        "empty": write_home(root, "empty"),
    }
    homes["pooled"], homes["pooled-work"] = write_pooled_home(root)
    if plugin_credentials:
        env_file = homes["main"] / ".env"
        taken = {line.split("=", 1)[0] for line in env_file.read_text().splitlines() if "=" in line}
        with env_file.open("a") as env:   # a plugin reading a built-in's variable keeps the built-in's token
            env.writelines(f"{name}={token}\n" for name, token in plugin_credentials.items() if name not in taken)
    return homes


def plugin_demo_credentials(routes: Iterable["PluginRoute"]) -> dict[str, str]:
    """A demo token for each plugin the emulator serves whose CREDENTIALS name a ``.env``
    place. Only served plugins get one: a plugin without an EMULATOR would take the demo's
    fake token to its real provider, and nothing of the demo leaves the machine."""
    return {route.env: f"demo-{route.name}-main" for route in routes if route.env}


@contextlib.contextmanager
def demo_homes(plugin_credentials: Mapping[str, str] | None = None) -> Iterator[dict[str, Path]]:
    root = Path(tempfile.mkdtemp(prefix="quota-probe-demo-"))
    try:
        yield make_demo_homes(root, plugin_credentials)
    finally:
        shutil.rmtree(root, ignore_errors=True)
