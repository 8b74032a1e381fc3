"""Run a piece of child-side code (``python -P -m workers.<tool>``) and read the one JSON
value it prints: how ``probe doctor`` reads a home and ``probe providers`` reads the
provider modules without the CLI process ever importing a plugin or touching a credential.

The child gets the same allowlisted environment as a worker (``probe.env``), so it sees
exactly what a worker would: the same plugins, the same base-URL overrides, and -- for a
home-scoped tool -- that home only.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

#: the child needs its imports and nothing else; one that takes longer is broken (a plugin
#: whose import hangs, a home on a dead network mount)
CHILD_TIMEOUT_S = 30.0


class ChildFailed(Exception):
    """The child gave no usable answer; the message says so in a sentence."""


def run_json_child(module: str, env: dict[str, str], what: str, timeout_s: float = CHILD_TIMEOUT_S) -> Any:
    """Run ``python -P -m module`` with ``env`` and return the JSON it printed. ``what``
    names the job for the error message ("read this home's credential files")."""
    try:
        result = subprocess.run([sys.executable, "-P", "-m", module], env=env, capture_output=True, text=True,
                                timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"Could not {what}: the child process did not finish within {timeout_s:g} s.") from None
    except OSError as exc:
        raise ChildFailed(f"Could not {what} (the child process did not start: {type(exc).__name__}).") from None
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise ChildFailed(f"Could not {what} (the child process failed).") from None
