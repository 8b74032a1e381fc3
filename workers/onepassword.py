"""1Password references in a home's ``.env`` (SPEC §2): ``NAME=op://vault/item/field``.

Hermes lets a ``.env`` value be a 1Password secret reference. Sent as it is, it would be a
wrong token *and* a leak (vault and item names are private), so a worker resolves it with
the 1Password CLI before any provider sees it -- or says why it cannot:

* ``op`` not on the worker's ``PATH`` (the service's ``PATH``, passed through
  ``probe.env``'s allowlist): ``no_credentials``, saying the variable holds a 1Password
  reference -- the home simply has no credential this service can use;
* ``op`` fails (not signed in, no such item) or does not answer within
  :data:`TIMEOUT_S`: ``credentials_unreadable`` -- the credential exists but cannot be read
  right now, so the parent keeps showing the last good reading (stale), as it does for a
  credential file it cannot read. A hanging ``op`` is killed with its whole process group.

No message ever holds the reference, and nothing ``op`` writes to stderr is read (it may
quote the reference or an account name): ``op``'s stderr goes to ``/dev/null``. ``op`` runs
without a shell, with the worker's own (allowlisted) environment, stdin closed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess

from workers.result import UNREADABLE, ProbeFailure

PREFIX = "op://"
#: SPEC §2: an ``op read`` gets this long, then it is killed
TIMEOUT_S = 5.0
#: a secret is a few hundred bytes; more is not a credential
MAX_SECRET_BYTES = 64 * 1024


def is_reference(value: str) -> bool:
    return value.strip().startswith(PREFIX)


def read(reference: str, name: str) -> str:
    """The secret ``reference`` points at (``op read``); ``name`` is the ``.env`` variable
    that holds it, the only thing a message names. Raises ProbeFailure as the module
    docstring says."""
    where = f"{name} in .env"
    op = shutil.which("op")
    if op is None:
        raise ProbeFailure("no_credentials", f"{where} holds a 1Password reference, and the 1Password CLI (op) "
                                             "is not on the service's PATH to resolve it.")
    try:
        proc = subprocess.Popen([op, "read", "--no-newline", reference.strip()], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise ProbeFailure(UNREADABLE, f"{where} holds a 1Password reference; the 1Password CLI could not be "
                                       f"started ({type(exc).__name__}).") from None
    with proc:
        try:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise ProbeFailure(UNREADABLE, f"{where} holds a 1Password reference; the 1Password CLI did not "
                                           f"answer within {TIMEOUT_S:g} s and was stopped.") from None
    if proc.returncode != 0:
        raise ProbeFailure(UNREADABLE, f"{where} holds a 1Password reference that the 1Password CLI could not "
                                       f"read (op exited with status {proc.returncode}; is it signed in?).")
    try:
        secret = out.decode("utf-8").strip() if len(out) <= MAX_SECRET_BYTES else ""
    except UnicodeDecodeError:
        secret = ""
    if not secret:
        raise ProbeFailure(UNREADABLE, f"{where} holds a 1Password reference; the 1Password CLI answered "
                                       "with no usable value.")
    return secret


def _kill(proc: subprocess.Popen) -> None:
    """``op`` and anything it started (its own session): nothing outlives the bound."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()
