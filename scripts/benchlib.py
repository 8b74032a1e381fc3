"""Helpers shared by the benchmark scripts: the emulator process, concurrent callers, the
shared report. (Percentiles come from ``probe.tools.stress``, the one place that computes them.)"""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

#: the shared report at the repository's root, wherever a script is run from
REPORT = str(Path(__file__).resolve().parent.parent / "BENCHMARKS.md")


@contextlib.contextmanager
def emulator_process(tls: bool = False) -> Iterator[str]:
    """The emulator in a process of its own, as a real provider is remote: the direct
    client and the workers then reach it the same way, and it never competes with the
    measuring process for its GIL. Yields its base URL (see :func:`emulator_process_env`
    for HTTPS, whose CA a client must be told to trust)."""
    with emulator_process_env(tls) as (base_url, _):
        yield base_url


@contextlib.contextmanager
def emulator_process_env(tls: bool = False) -> Iterator[tuple[str, dict[str, str]]]:
    """Like :func:`emulator_process`, yielding (base URL, the variables it says to export:
    base URLs and, with ``tls``, the ``SSL_CERT_FILE`` of its throw-away CA)."""
    proc = subprocess.Popen([sys.executable, "-m", "probe.cli", "emulator", "--port", "0"] + (["--tls"] if tls else []),
                            stdout=subprocess.PIPE, text=True)
    try:
        base_url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        env = {}
        while (line := proc.stdout.readline().strip()).startswith("export "):   # then "Serving until Ctrl-C."
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
        yield base_url, env
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


_COUNTING_EMULATOR = """
import json, sys
from probe.tools.emulator import Emulator
with Emulator() as emulator:
    print(emulator.base_url, flush=True)
    for line in sys.stdin:
        if line.strip() == "counts":
            print(json.dumps([[path, token, n] for (path, token), n in emulator.counts().items()]), flush=True)
"""


@contextlib.contextmanager
def counting_emulator_process() -> Iterator[tuple[str, Callable[[], dict[tuple[str, str | None], int]]]]:
    """The emulator in a process of its own (as :func:`emulator_process`: its CPU is not the
    service's), yielding (base URL, a function returning its request counts so far by
    (path, token) -- ``Emulator.counts`` asked over a pipe)."""
    proc = subprocess.Popen([sys.executable, "-c", _COUNTING_EMULATOR], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)

    def counts() -> dict[tuple[str, str | None], int]:
        import json

        proc.stdin.write("counts\n")
        proc.stdin.flush()
        return {(path, token): n for path, token, n in json.loads(proc.stdout.readline())}

    try:
        yield proc.stdout.readline().strip(), counts
    finally:
        proc.stdin.close()     # its loop ends, the emulator stops, the process exits
        if proc.wait(10) is None:
            proc.kill()
        proc.stdout.close()


def settled_home(root, name: str, **tokens: str):
    """A home as production has them: credentials written long ago. The files' mtime is
    set an hour back, so the child trusts its parsed copy from the first probe on (within
    2 s of a write it re-reads the files on every probe -- see
    ``workers.credentials.stat_is_settled``; bench_pool measures that case separately)."""
    import os
    import time

    from probe.tools.demo import write_home

    home = write_home(root, name, **tokens)
    an_hour_ago = time.time() - 3600
    for path in (home / ".env", home / "auth.json"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    return home


def write_section(path: str, name: str, text: str) -> None:
    """Replace this script's section of a shared report (``<!-- name -->`` markers), so
    several benchmark scripts can keep their latest figures in one BENCHMARKS.md."""
    from pathlib import Path

    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    target = Path(path)
    current = target.read_text() if target.exists() else "# Benchmarks\n\n"
    if start in current and end in current:
        before, rest = current.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        current = before + block + ("\n" + after if after else "")
    else:
        current = current.rstrip() + "\n\n" + block
    target.write_text(current)


def run_callers(callers: int, body: Callable[[int], None]) -> float:
    """Run ``body(caller_number)`` in ``callers`` threads released together; return the
    wall time in seconds from the release to the last one finishing."""
    import threading
    import time

    barrier = threading.Barrier(callers + 1)

    def run(number: int) -> None:
        barrier.wait()
        body(number)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def measured_on() -> str:
    """``2026-12-01 21:33 UTC on x86_64, Linux 6.1, Python 3.11.7 (2 cores)``: when and
    where a section's figures were taken, in every script's report the same way."""
    import os
    import platform
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{now} on {platform.machine()}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()} ({os.cpu_count()} cores)")
