"""Tie a worker's life to its parent's.

Two mechanisms, because each misses a case the other catches:

* ``PR_SET_PDEATHSIG`` (Linux): the kernel sends SIGKILL when the parent dies, even if the
  parent was SIGKILLed and never got to close our stdin. Caveat the parent must respect:
  the "parent" here is the *thread* that forked us, so the parent spawns from one
  long-lived thread (``probe.pool.spawner``), never from a short-lived caller thread.
* EOF on stdin (everywhere): the loop ends when the parent closes the pipe or exits.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT_PID_ENV = "PROBE_PARENT_PID"


_libc = None


def _prctl():
    """libc's prctl, looked up once per process (a template looks it up for every worker it
    forks). ``CDLL(None)``: the symbols already loaded into this process, libc's among them
    (``ctypes.util.find_library`` would fork /sbin/ldconfig)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.prctl


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Arm PR_SET_PDEATHSIG; return whether it is armed.

    Race defended: the parent can die between our fork and the prctl call, in which case
    the signal would never come (we were already re-parented). The parent tells us its pid
    (``parent_pid``, else ``PROBE_PARENT_PID`` in the environment), so after arming we
    compare it with getppid() and leave at once on a mismatch.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _prctl()(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    expected = str(parent_pid) if parent_pid is not None else os.environ.get(PARENT_PID_ENV, "")
    if expected.isdigit() and os.getppid() != int(expected):
        os._exit(0)
    return True
