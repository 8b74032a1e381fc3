"""A real ``probe serve`` as a long-lived service: profiles appearing and disappearing while
it runs, SIGHUP reloading its config file without restarting the workers of unchanged
homes (their pids counted), a broken file on SIGHUP keeping the running configuration, and
SIGTERM under load -- exit 0 within 5 s, no process of its own left, no acknowledged
reading missing from the history file."""
from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from hermes_homes import build_hermes_root
from support import free_port, reaped, wait_until

pytestmark = pytest.mark.timeout(180)


class Serve:
    """``probe serve ARGS`` in a subprocess: its URL, and its stderr lines as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if k not in ("PROBE_TOKEN", "HERMES_HOME")}
        self.proc = subprocess.Popen([sys.executable, "-m", "probe.cli", "serve", "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**base, "PROBE_TOKEN": "t0123456789", **env})
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            first = self.proc.stdout.readline()
            assert "quota-probe backend on" in first, first + "".join(self.stderr)
        except BaseException:
            # no caller gets this object to reap it: a process left unwaited here warns
            # (ResourceWarning) at some later test's garbage collection
            self.reap()
            raise

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def reap(self) -> None:
        """Kill the process if it still runs, wait for it, let the stderr reader see the
        end of its pipe, and close the pipes."""
        with reaped(self.proc):
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self._reader.join(30)   # before the pipe closes under it

    def line_with(self, text: str, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if text in line:
                return line

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(self.url + path, params=params, timeout=30)

    def homes(self) -> list[str]:
        return self.get("/api/homes").json()["homes"]

    def pids(self) -> dict[str, set[int]]:
        return {home: {w["pid"] for w in state["workers"]} for home, state in self.get("/api/pool").json()["homes"].items()}


@contextmanager
def serving(args: list[str], env: dict[str, str]) -> Iterator[Serve]:
    serve = Serve(args, env)
    try:
        yield serve
    finally:
        serve.reap()


def test_a_serve_that_fails_to_start_is_reaped(tmp_path, monkeypatch):
    """``Serve`` whose first line is not the banner (here ``probe serve`` refuses a home
    that is not a directory) raises -- and has waited for its process and closed its pipes
    first: nobody else holds the object to do it, and an unwaited process warns at some
    later test's garbage collection, failing that test instead."""
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    with pytest.raises(AssertionError):
        Serve(["--home", f"gone={tmp_path / 'no-such-home'}"], {})
    monkeypatch.undo()
    [proc] = started
    try:
        assert proc.returncode is not None, "the failed probe serve was never waited for"
        assert proc.stdout.closed and proc.stderr.closed
    finally:
        with reaped(proc):
            pass


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def test_profiles_created_and_removed_while_serving_come_and_go_alone(tmp_path, emulator):
    """The Hermes root's profiles found by themselves: 20 created while serving appear
    (one refresh interval: the scan runs at each), one removed disappears with its
    workers, and the warm worker of a home that did not change is the same process
    throughout. (200 profiles and the CPU they cost: scripts/bench_profiles.py.)"""
    hermes = build_hermes_root(tmp_path)
    (hermes.root / "profiles" / "extra").mkdir()
    (hermes.root / "profiles" / "extra" / ".env").write_text("DEEPSEEK_API_KEY=sk-extra-profile\n")
    with serving(["--refresh-s", "1", "--no-history"], {**emulator.env(), "HERMES_HOME": str(hermes.root)}) as serve:
        assert serve.homes() == ["default", "extra", "scratch", "work"]
        for home in ("work", "extra"):
            assert serve.get("/api/quota", home=home).status_code == 200
        assert wait_until(lambda: all(serve.pids().get(h) for h in ("work", "extra")))
        before = serve.pids()
        created = [f"p{i:03d}" for i in range(20)]
        for name in created:
            (hermes.root / "profiles" / name).mkdir()
        assert wait_until(lambda: set(created) <= set(serve.homes()), 30)
        extra_pids = before["extra"]
        import shutil
        shutil.rmtree(hermes.root / "profiles" / "extra")
        assert wait_until(lambda: "extra" not in serve.homes(), 30)
        assert serve.get("/api/quota", home="extra").status_code == 404
        gone, alive = psutil.wait_procs([psutil.Process(p) for p in extra_pids if psutil.pid_exists(p)], timeout=10)
        assert not alive, "the removed profile's workers outlived it"
        assert serve.pids()["work"] == before["work"], "an unchanged home's worker was restarted"
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(30) == 0


def _config(path: Path, homes: dict[str, Path], extra: str = "") -> None:
    path.write_text(extra + "[homes]\n" + "".join(f'{home_id} = "{home}"\n' for home_id, home in homes.items()))


def test_sighup_with_50_homes_one_changed_restarts_no_other_worker(tmp_path, emulator):
    homes = {}
    for index in range(50):
        home = tmp_path / "homes" / f"h{index:02d}"
        home.mkdir(parents=True)
        (home / ".env").write_text(f"DEEPSEEK_API_KEY=sk-sighup-{index:02d}\n")
        homes[f"h{index:02d}"] = home
    config = tmp_path / "quota-probe.toml"
    _config(config, homes, "refresh-s = 0\nno-history = true\n")
    with serving(["--config", str(config)], emulator.env()) as serve:
        for home_id in homes:
            assert serve.get("/api/quota", home=home_id).status_code == 200
        before = serve.pids()
        assert all(before.get(home_id) for home_id in homes), before
        # one home moves to another directory, one option changes
        moved = tmp_path / "homes" / "h07-new"
        moved.mkdir()
        (moved / ".env").write_text("DEEPSEEK_API_KEY=sk-sighup-07-new\n")
        _config(config, {**homes, "h07": moved}, "refresh-s = 0\nno-history = true\ncache-ttl-s = 30\n")
        serve.proc.send_signal(signal.SIGHUP)
        assert "h07" in serve.line_with("homes changed")
        serve.line_with("reloaded")
        after = serve.pids()
        unchanged = [h for h in homes if h != "h07"]
        restarted = [h for h in unchanged if after.get(h) != before[h]]
        assert restarted == [], f"{len(restarted)} of 49 unchanged homes lost their warm worker"
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                       for p in before["h07"]), "the moved home's old worker still runs"
        assert serve.homes() == list(homes)
        # a broken file: one error line, the running configuration kept
        config.write_text("refresh-s = 0\n[homes\nh00 = 1\n")
        serve.proc.send_signal(signal.SIGHUP)
        error = serve.line_with("reload refused")
        assert str(config) in error and "not valid TOML" in error
        assert serve.homes() == list(homes) and serve.pids() == after
        assert sum("reload refused" in line for line in serve.stderr) == 1
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(30) == 0


def _series_last_points(db: Path) -> dict[tuple[str, str, str], tuple[int, float]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("""SELECT h.home_id, s.provider, s.label, p.t, p.value FROM points p
                               JOIN series s ON s.id = p.series JOIN homes h ON h.id = s.home
                               WHERE s.kind = 'window' ORDER BY p.t""").fetchall()
    last: dict[tuple[str, str, str], tuple[int, float]] = {}
    for home_id, provider, label, t, value in rows:
        last[(home_id, provider, label)] = (t, value)
    return last


def test_sigterm_under_load_exits_0_within_5_s_leaving_nothing_and_losing_no_point(tmp_path, emulator):
    """Concurrent HTTP clients probing (refresh=1) while SIGTERM arrives: the backend stops
    accepting, answers what is in flight, writes history, and exits 0 within 5 s; no
    worker, template or other descendant remains; and for every window a client was
    answered, the history file holds that reading (or a newer one, or its unchanged value)."""
    from datetime import datetime

    specs = []
    for index in range(4):
        home = tmp_path / "homes" / f"load{index}"
        home.mkdir(parents=True)
        (home / ".env").write_text(f"ANTHROPIC_TOKEN=sk-ant-oat01-sigterm-{index}\n")
        specs += ["--home", f"load{index}={home}"]
    slow = tmp_path / "homes" / "slow"
    slow.mkdir()
    (slow / ".env").write_text("DEEPSEEK_API_KEY=sk-sigterm-slow1500-\n")
    specs += ["--home", f"slow={slow}"]
    db = tmp_path / "history.sqlite3"
    with serving([*specs, "--history", str(db), "--refresh-s", "0"], emulator.env()) as serve:
        answered: list[dict] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(index: int) -> None:
            with httpx.Client(base_url=serve.url, timeout=30) as http:
                while not stop.is_set():
                    try:
                        response = http.get("/api/quota", params={"home": f"load{index % 4}", "provider": "anthropic",
                                                                  "refresh": "1"})
                    except httpx.HTTPError:
                        return          # the backend stopped accepting: expected from now on
                    if response.status_code == 200 and response.json().get("available"):
                        with lock:
                            answered.append(response.json())

        clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in clients:
            thread.start()
        assert wait_until(lambda: len(answered) >= 40, 60), "no load reached the backend"
        in_flight: list[httpx.Response] = []
        slow_request = threading.Thread(target=lambda: in_flight.append(
            httpx.get(serve.url + "/api/quota", params={"home": "slow", "provider": "deepseek"}, timeout=30)))
        slow_request.start()
        assert wait_until(lambda: serve.get("/api/pool").json()["homes"].get("slow", {}).get("busy", 0) >= 1)
        family = descendants(serve.proc.pid)
        assert family, "no worker or template under load"
        started = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        code = serve.proc.wait(30)
        took_s = time.monotonic() - started
        stop.set()
        for thread in [*clients, slow_request]:
            thread.join(30)
        assert in_flight and in_flight[0].status_code == 200 and in_flight[0].json()["available"], \
            "a request in flight at SIGTERM was not answered"
        assert code == 0, "".join(serve.stderr)
        assert took_s <= 5.0, f"SIGTERM took {took_s:.1f} s"
        print(f"SIGTERM under load: exit {code} after {took_s:.2f} s, {len(answered)} answers, "
              f"{len(family)} descendants")
        gone, alive = psutil.wait_procs(family, timeout=1)
        assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"
    last_points = _series_last_points(db)
    latest: dict[tuple[str, str, str], tuple[float, float]] = {}
    for snap in answered:
        fetched = datetime.fromisoformat(snap["fetched_at"].replace("Z", "+00:00")).timestamp()
        for window in snap["windows"]:
            key = (snap["home"], snap["provider"], window["label"])
            if key not in latest or fetched >= latest[key][0]:
                latest[key] = (fetched, window["used_percent"])
    assert latest
    for key, (fetched, used) in latest.items():
        assert key in last_points, f"no point at all for {key}"
        t, value = last_points[key]
        assert t >= int(fetched) or value == used, f"{key}: the last acknowledged reading is not in the history"


def test_serve_on_a_machine_without_hermes_says_so_in_its_banner(tmp_path):
    """A new user without Hermes runs ``probe serve``: it serves the (missing) root as
    ``default`` -- and now says at once that the directory does not exist and what to pass
    instead, rather than leaving a panel with one home_not_found card to explain itself."""
    missing = tmp_path / "no-hermes-here"
    with serving(["--no-history"], {"HERMES_HOME": str(missing)}) as serve:
        banner = [serve.proc.stdout.readline() for _ in range(2)]
        assert f"serving the Hermes root {missing}" in banner[0]
        assert f"note: {missing} does not exist" in banner[1] and "--demo" in banner[1], banner
        assert serve.homes() == ["default"]
