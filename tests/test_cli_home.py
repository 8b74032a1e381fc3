"""``probe fetch --home H`` as a user watches it (issue #25): cards as the answers come, in
the list's order (``ProbeService.fetch_home(on_snapshot=)``); an error card says whose error
it is; a missing home is its error alone."""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from support import fresh, reaped, run_cli

pytestmark = pytest.mark.timeout(90)


def headers(text: str) -> list[str]:
    """The provider of each card, in print order (a card's first line is ``name — …``)."""
    return [line.split(" ")[0] for line in text.splitlines() if line and not line.startswith(" ")]


class Lines:
    """A subprocess's stdout, line by line, read with a deadline (a thread feeds a queue)."""

    def __init__(self, pipe) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.thread.start()

    def _pump(self, pipe) -> None:
        for line in pipe:
            self.queue.put(line)
        self.queue.put(None)

    def until(self, predicate, timeout_s: float = 40.0) -> bool:
        """Read until a line satisfies ``predicate``; False at EOF or the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            self.seen.append(line)
            if predicate(line):
                return True

    def rest(self) -> str:
        self.thread.join(40)
        while not self.queue.empty():
            line = self.queue.get()
            if line is not None:
                self.seen.append(line)
        return "".join(self.seen)


def test_cards_come_as_answers_arrive_in_the_lists_order(emulator, make_home):
    """OpenRouter's request is held at the emulator: Anthropic's card (before it in the
    list) is on the pipe while it is held; DeepSeek's (after it) waits for it, however fast
    it was. ``--json`` still prints the whole list once."""
    slow = fresh("sk-or-v1-held")
    home = make_home("streamed", anthropic=fresh("sk-ant-oat01-fast"), openrouter=slow,
                     deepseek=fresh("sk-fast"))
    held = emulator.hold(slow)
    env = {**os.environ, **emulator.env()}
    env.pop("PROBE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "probe.cli", "fetch", "--home", str(home)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with reaped(proc):
        try:
            lines = Lines(proc.stdout)
            assert lines.until(lambda line: line.startswith("  via ")), lines.seen   # Anthropic's card, complete
            assert emulator.wait_for(token=slow)
            assert proc.poll() is None and headers("".join(lines.seen)) == ["anthropic"]
        finally:
            held.set()
        text = lines.rest()
        assert proc.wait(40) == 0, proc.stderr.read()
    assert headers(text) == ["anthropic", "openrouter", "deepseek"]
    assert "\n\n" in text and "\n\n\n" not in text   # one blank line between cards, as before

    as_json = run_cli("fetch", "--home", str(home), "--json", env=emulator.env())
    assert as_json.returncode == 0 and as_json.stdout.lstrip().startswith("[")


def test_on_snapshot_hands_over_the_returned_list_in_order_as_it_comes(emulator, make_home, make_service):
    slow = fresh("sk-or-v1-held")
    home = make_home("on-snapshot", anthropic=fresh("sk-ant-oat01-a"), openrouter=slow, deepseek=fresh("sk-b"))
    service = make_service(pool_size=1)
    got: list = []
    first = threading.Event()
    held = emulator.hold(slow)
    snaps: list = []
    reader = threading.Thread(target=lambda: snaps.extend(service.fetch_home(
        home=home, on_snapshot=lambda snap: (got.append(snap), first.set()))))
    reader.start()
    try:
        assert first.wait(30) and emulator.wait_for(token=slow)
        assert [s.provider for s in got] == ["anthropic"]
    finally:
        held.set()
        reader.join(30)
    assert not reader.is_alive() and got == snaps and [s.provider for s in snaps] == ["anthropic", "openrouter",
                                                                                      "deepseek"]
    again: list = []   # from the cache: every answer at once, still each handed over once
    assert service.fetch_home(home=home, on_snapshot=again.append) == again and len(again) == 3
    missing: list = []
    assert service.fetch_home(home=home.parent / "nope", on_snapshot=missing.append) == missing
    assert [s.error.code for s in missing] == ["home_not_found"]


def test_in_order_waits_for_earlier_answers_and_skips_what_the_read_leaves_out():
    """``InOrder`` alone: a later answer waits for the earlier ones; a plugin without
    CREDENTIALS that answered ``no_credentials`` is skipped as ``settle_home_list`` drops it."""
    from pathlib import Path

    from probe.home_list import HomeProviders
    from probe.home_read import HomePart, InOrder
    from probe.shared import Fetch
    from probe.snapshot import ProbeInfo, Snapshot

    def part(name: str) -> HomePart:
        return HomePart(Fetch(name, Path("/h"), (Path("/h"), name, ()), 0, 0.0, 1.0, False))

    def answer(name: str, code: str | None = None) -> Snapshot:
        if code:
            return Snapshot.failed(name, "/h", code, "none here", probe=ProbeInfo("warm", 1.0))
        return Snapshot(provider=name, home="/h", available=True, probe=ProbeInfo("warm", 1.0))

    listing = HomeProviders(("a", "plug", "c"), undeclared=frozenset({"plug"}))
    parts = [part("a"), part("plug"), part("c")]
    got: list = []
    emitter = InOrder(got.append)
    parts[2].answer = answer("c")
    emitter.ready(parts, listing)
    assert got == []                                   # c waits for a and plug
    parts[0].answer = answer("a")
    emitter.ready(parts, listing)
    assert [s.provider for s in got] == ["a"]
    parts[1].answer = answer("plug", "no_credentials")
    emitter.ready(parts, listing)
    assert [s.provider for s in got] == ["a", "c"]     # plug left out, c follows at once
    assert emitter.finish([got[0], got[1]]) == got and len(got) == 2


def test_an_error_card_names_the_provider_by_its_label(emulator, make_home):
    home = make_home("errcard", deepseek=fresh("sk-err-500-"), anthropic=fresh("sk-ant-oat01-ok"))
    done = run_cli("fetch", "--home", str(home), env=emulator.env())
    assert done.returncode == 1
    card = next(card for card in done.stdout.split("\n\n") if card.startswith("deepseek"))
    assert card.splitlines()[0].startswith("deepseek — DeepSeek   home ") and "error " in card
    single = run_cli("fetch", "deepseek", "--home", str(home), env=emulator.env())
    assert single.stdout.startswith("deepseek — DeepSeek   home ")


def test_a_missing_home_prints_its_error_only(tmp_path):
    missing = tmp_path / "missing"
    done = run_cli("fetch", "--home", str(missing))
    assert done.returncode == 1
    assert done.stdout == f"error home_not_found: Home directory {missing} does not exist.\n"
