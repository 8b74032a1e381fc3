"""``python tests/subreaper.py CMD...``: run CMD as the child of a process that is a child
subreaper (``PR_SET_CHILD_SUBREAPER``) and reaps nobody but CMD -- as a container's PID 1
that does not reap would. Every process CMD leaves behind is re-parented here; once CMD
has exited, print them as JSON ``{"rc": CMD's status, "left": [{"pid", "name", "status"}]}``."""
from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import psutil

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(json.dumps({"error": f"prctl failed (errno {ctypes.get_errno()})"}))
        return 3
    rc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    left = []
    for proc in psutil.Process().children(recursive=True):
        try:
            left.append({"pid": proc.pid, "name": proc.name(), "status": proc.status()})
        except psutil.NoSuchProcess:
            pass
    print(json.dumps({"rc": rc, "left": left}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
