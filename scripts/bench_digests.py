"""Credential digests (issue #25, SPEC §6): what Hermes' bookkeeping writes cost a poller.

Two homes of the same shape -- four built-ins (Anthropic with two pool rows, Codex,
OpenRouter, DeepSeek) plus a pool-only id -- each read once, then polled 10 times with
``fetch_home`` (the panel's and refresher's read): one home plain, the other with a Hermes
bookkeeping write to ``auth.json`` before every poll (``tests/hermes_homes.bookkeeping_write``:
request counts, ``last_status_at``, pool rows re-ordered, atomic replace). Counted after the
first read: provider requests (at the emulator), process starts, digest requests
(``provider_lists``), providers rotated, and the poll latency. Then one real change (a new
DeepSeek key): what it costs. Issue #25's figure for 0.3: 80 requests and 10 starts with the
writes, 0 and 0 without.

The emulator runs in a process of its own. Prints the figures as JSON and the rows for
BENCHMARKS.md ("Hermes' bookkeeping writes")::

    python scripts/bench_digests.py
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

from benchlib import REPORT, counting_emulator_process, measured_on, write_section  # noqa: E402
from hermes_homes import bookkeeping_write  # noqa: E402

from probe import ProbeConfig, ProbeService  # noqa: E402
from probe.tools.demo import write_home  # noqa: E402
from probe.tools.emulator import provider_urls_for  # noqa: E402

SECTION = "bench_digests"
POLLS = 10


def pooled_home(root: Path, tag: str) -> Path:
    home = write_home(root, tag, anthropic=f"sk-ant-oat-{tag}", codex=f"codex-{tag}", openrouter=f"sk-or-{tag}",
                      deepseek=f"sk-ds-{tag}")
    auth = json.loads((home / "auth.json").read_text())
    row = {"auth_type": "api_key", "source": "manual", "last_status": "ok", "request_count": 1}
    auth["credential_pool"] = {
        "anthropic": [{**row, "id": "a1", "label": "main", "priority": 0, "access_token": f"sk-ant-oat-{tag}"},
                      {**row, "id": "a2", "label": "spare", "priority": 1, "access_token": f"sk-ant-oat-{tag}-2"}],
        "xai": [{**row, "id": "x1", "label": "team", "priority": 0, "access_token": f"xai-{tag}"}],
    }
    (home / "auth.json").write_text(json.dumps(auth))
    an_hour_ago = time.time() - 3600   # written long ago (benchlib.settled_home): the steady state
    for path in (home / ".env", home / "auth.json"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    return home


def requests(counts, tag: str) -> int:
    return sum(n for (_path, token), n in counts().items() if token and tag in token)


def polls(service: ProbeService, home: Path, counts, tag: str, *, writes: bool) -> dict:
    first = service.fetch_home(home=home)
    errors = [s.provider for s in first if s.error is not None]
    before, stats = requests(counts, tag), service.stats()
    latencies = []
    for _ in range(POLLS):
        if writes:
            bookkeeping_write(home)
        start = time.perf_counter()
        snaps = service.fetch_home(home=home)
        latencies.append((time.perf_counter() - start) * 1000)
        errors += [s.provider for s in snaps if s.error is not None]
    after = service.stats()
    return {"provider_requests": requests(counts, tag) - before, "starts": after["spawns"] - stats["spawns"],
            "digest_requests": after["provider_lists"] - stats["provider_lists"],
            "rotated": after["credential_rotations"] - stats["credential_rotations"],
            "median_ms": statistics.median(latencies), "max_ms": max(latencies), "errors": errors}


def real_change(service: ProbeService, home: Path, counts, tag: str) -> dict:
    env = home / ".env"
    before, stats = requests(counts, tag), service.stats()
    env.write_text(env.read_text().replace(f"sk-ds-{tag}", f"sk-ds-{tag}-new"))
    snaps = service.fetch_home(home=home)
    after = service.stats()
    return {"provider_requests": requests(counts, tag) - before, "starts": after["spawns"] - stats["spawns"],
            "rotated": after["credential_rotations"] - stats["credential_rotations"],
            "probed": sorted(s.provider for s in snaps if s.probe.path != "cache")}


def rows(results: dict) -> list[str]:
    quiet, busy, change = results["quiet"], results["busy"], results["real_change"]
    return [
        "## Hermes' bookkeeping writes (`scripts/bench_digests.py`)",
        "",
        f"Issue #25, SPEC §6: {POLLS} `fetch_home` polls of a 4-provider home (+ a pool-only id) after its first "
        f"read. Measured {results['measured']}.",
        "",
        "| measurement | without writes | a bookkeeping write before each poll | target |",
        "| --- | --- | --- | --- |",
        f"| provider requests | {quiet['provider_requests']} | **{busy['provider_requests']}** | equal (0.3: 80) |",
        f"| process starts | {quiet['starts']} | **{busy['starts']}** | equal (0.3: 10) |",
        f"| digest requests (`provider_lists`) | {quiet['digest_requests']} | {busy['digest_requests']} "
        f"| <= 1 per write |",
        f"| providers rotated | {quiet['rotated']} | {busy['rotated']} | 0 |",
        f"| poll latency, median (max) | {quiet['median_ms']:.2f} ms ({quiet['max_ms']:.2f}) "
        f"| {busy['median_ms']:.2f} ms ({busy['max_ms']:.2f}) | |",
        f"| then a new DeepSeek key: probed / rotated / requests / starts during that poll | "
        f"{', '.join(change['probed'])} / {change['rotated']} / {change['provider_requests']} / {change['starts']} "
        f"| | that provider only |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=REPORT)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results: dict = {}
    with counting_emulator_process() as (base_url, counts), tempfile.TemporaryDirectory() as tmp:
        for kind, writes in (("quiet", False), ("busy", True)):
            tag = f"digest-bench-{kind}"
            with ProbeService(ProbeConfig(provider_urls=provider_urls_for(base_url), pool_size=2)) as service:
                home = pooled_home(Path(tmp), tag)
                results[kind] = polls(service, home, counts, tag, writes=writes)
                if writes:
                    results["real_change"] = real_change(service, home, counts, tag)
    results["measured"] = (measured_on() + f"; 1-minute load average {load_before:.2f} -> "
                           f"{os.getloadavg()[0]:.2f}")
    print(json.dumps(results, indent=2))
    text = "\n".join(rows(results))
    print(text)
    write_section(args.output, SECTION, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
