"""``python -m workers [--once]``: an exec-started worker (see ``workers.loop``)."""
from __future__ import annotations

import os
import sys

from workers.lifeline import die_with_parent
from workers.loop import serve


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    return serve(once="--once" in argv)


if __name__ == "__main__":
    exit_code = main()
    # Skip interpreter teardown (freeing every module, httpx, ssl): it took ~14 ms and
    # serves nobody -- replies went out unbuffered, the kernel closes the sockets -- while the
    # parent waits for this exit whenever it retires a worker.
    sys.stderr.flush()
    os._exit(exit_code)
