"""Helpers shared by the benchmark scripts (one place for the emulator process and stats)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@contextlib.contextmanager
def emulator_process() -> Iterator[str]:
    """The emulator in a process of its own, as a real provider is remote: the direct
    client and the workers then reach it the same way, and it never competes with the
    measuring process for its GIL. Yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "probe.cli", "emulator", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        yield line.rsplit(" ", 1)[-1]
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
