"""Throw-away demo homes whose emulator tokens drive each scenario (SPEC §8).

The tokens are fake and only mean something to the built-in emulator; the scenario
markers in them (``-429-``) are what make one home show a rate-limit badge. The emulator
draws each window's usage and reset phase from the token, so the tokens are picked for a
demo that shows every state at start: ``main``'s Anthropic account is busy (both windows
in deficit, running out before their resets), its Codex session and ``team``'s Anthropic
session are used up (the 80/90/100 % alerts), the rest are in reserve.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from probe.plugin_routes import PluginRoute


def write_home(root: Path, name: str, *, anthropic: str | None = None, codex: str | None = None,
               openrouter: str | None = None, deepseek: str | None = None,
               codex_account: str | None = None) -> Path:
    """Create ``root/name`` with a ``.env`` and ``auth.json`` holding the given tokens."""
    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    env_lines = ["# demo home written by quota-probe"]
    if anthropic:
        env_lines.append(f"ANTHROPIC_TOKEN={anthropic}")
    if openrouter:
        env_lines.append(f"OPENROUTER_API_KEY={openrouter}")
    if deepseek:
        env_lines.append(f"DEEPSEEK_API_KEY={deepseek}")
    (home / ".env").write_text("\n".join(env_lines) + "\n")
    auth: dict = {}
    if codex:
        tokens = {"access_token": codex}
        if codex_account:
            tokens["account_id"] = codex_account
        auth["providers"] = {"openai-codex": {"tokens": tokens}}
    (home / "auth.json").write_text(json.dumps(auth, indent=2) + "\n")
    for path in (home / ".env", home / "auth.json"):
        path.chmod(0o600)
    return home


LIMITED_ANTHROPIC_TOKEN = "sk-ant-oat01-demo-limited"


def make_demo_homes(root: Path, plugin_credentials: Mapping[str, str] | None = None) -> dict[str, Path]:
    """The four demo homes; ``plugin_credentials`` (``.env`` name -> token) go into ``main``
    too, so each installed plugin the emulator serves shows a card there."""
    homes = {
        "main": write_home(root, "main", anthropic="sk-ant-oat01-demo-main-busy", codex="demo-codex-main",
                           codex_account="acct-demo-main", openrouter="sk-or-v1-demo-main",
                           deepseek="sk-demo-main"),
        "team": write_home(root, "team", anthropic="sk-ant-oat01-demo-team",
                           openrouter="sk-or-v1-demo-team"),
        "limited": write_home(root, "limited", anthropic=LIMITED_ANTHROPIC_TOKEN, codex="demo-codex-limited"),
        "empty": write_home(root, "empty"),
    }
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
