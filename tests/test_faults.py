"""The fault matrix (issue #7) against real worker processes, real pipes and the emulator:
a worker that writes what nobody asked for, a 5 MiB provider body, the parent SIGKILLed
with idle warm workers, credential files rewritten in place mid-probe, and cache files
under a killed writer. (Hangs, SIGKILL/SIGSTOP of a worker and the classic provider errors
live in test_service / test_adapters; the backend's share is in test_backend_faults.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil
import pytest

from probe.shared import Fetch
from probe.shared.disk import DiskCache
from probe.homes import credential_fingerprint
from probe.snapshot import Snapshot
from support import reaped, wait_until, worker_pids

pytestmark = pytest.mark.timeout(90)
MiB = 1024 * 1024


def protocol_pipe(pid: int) -> str:
    """The /proc path of the worker's protocol stdout: its one pipe besides stdin (fd 1
    itself points at stderr inside a worker)."""
    pipes = [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")
             if fd != "0" and os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")]
    assert len(pipes) == 1, pipes
    return pipes[0]


def write_as_worker(pid: int, data: bytes) -> None:
    """Put ``data`` on the worker's protocol stdout, as if the worker had written it. The
    extra write end is closed at once: while open, it would hide the worker's EOF."""
    try:
        with open(protocol_pipe(pid), "wb", buffering=0) as pipe:
            pipe.write(data)
    except BrokenPipeError:
        pass  # the parent stopped reading: it has already given up on this worker


def forged_reply(request_id: str) -> bytes:
    snap = {"provider": "deepseek", "available": True, "title": "FORGED", "windows": [], "details": ["FORGED"]}
    return json.dumps({"id": request_id, "ok": True, "snapshot": snap}).encode() + b"\n"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


GARBAGE = {
    "not_json": b"Traceback (most recent call last): something printed on the wrong fd\n",
    "json_array": b"[1, 2, 3]\n",
    "binary": b"\xff\xfe\x00\x01\n",
    "wrong_id": forged_reply("forged-id"),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_unsolicited_output_of_an_idle_worker_never_reaches_a_caller(make_service, make_home, kind):
    """Bytes an idle worker writes on its own are not left in the pipe for the next caller:
    the pool sees them before handing the worker out, retires it and starts a fresh one."""
    home = make_home(f"idle-{kind}", deepseek=f"sk-idle-stray-{kind}")
    service = make_service(pool_size=1)
    pid = service.fetch("deepseek", home=home).probe.worker_pid
    write_as_worker(pid, GARBAGE[kind])
    after = service.fetch("deepseek", home=home, refresh=True)
    assert after.available and after.error is None and "FORGED" not in json.dumps(after.to_dict()), after.to_dict()
    assert after.probe.path == "slot_start" and after.probe.worker_pid != pid
    assert wait_until(lambda: gone(pid))
    assert worker_pids(service, home) == {after.probe.worker_pid}


@pytest.mark.parametrize("kind", sorted(GARBAGE) + ["five_mib_line"])
def test_output_that_is_not_the_reply_is_bad_response_and_the_pool_heals(make_service, make_home, emulator, kind):
    """Mid-request, a line that is not this request's reply (garbage, another id, or a
    5 MiB line past the 4 MiB reply cap) answers the caller ``bad_response`` at once; the
    worker is killed, its slot refilled, and a later caller never sees that line."""
    slow = f"sk-busy-stray-{kind}-slow8000-"
    home = make_home(f"busy-{kind}", deepseek=slow, openrouter=f"sk-or-v1-busy-{kind}")
    service = make_service(pool_size=1)
    result: list[Snapshot] = []
    caller = threading.Thread(target=lambda: result.append(service.fetch("deepseek", home=home)))
    caller.start()
    assert emulator.wait_for(token=slow)
    (pid,) = worker_pids(service, home)
    data = b"x" * (5 * MiB) if kind == "five_mib_line" else GARBAGE[kind]
    writer = threading.Thread(target=write_as_worker, args=(pid, data))
    writer.start()
    caller.join(30)
    writer.join(30)
    snap = result[0]
    assert snap.error.code == "bad_response" and not snap.available, snap
    assert snap.error.message.startswith("The worker sent") or "another request" in snap.error.message
    assert wait_until(lambda: gone(pid))
    healed = service.fetch("openrouter", home=home)
    assert healed.available and healed.probe.worker_pid != pid and "FORGED" not in json.dumps(healed.to_dict())
    state = service.stats()["homes"][str(home)]
    assert state["slots"] == 1 and state["alive"] == 1 and service.stats()["kills"] >= 1


def test_a_five_mebibyte_provider_body_is_refused_with_bounded_memory(make_service, make_home, emulator):
    """A 5 MiB answer is refused with a snapshot that says why, by the same warm worker,
    whose memory does not grow by the body's size. (Whether the adapter stops at the
    declared length or at the 1 MiB streaming cap is not visible from here: both keep
    the growth far under the 3 MB bound.)"""
    token = "sk-five-mib-body"
    emulator.script(token, raw=b'{"padding": "' + b"x" * (5 * MiB) + b'"}')
    home = make_home("five-mib", deepseek=token, openrouter="sk-or-v1-five-mib")
    service = make_service(pool_size=1)
    warm = service.fetch("openrouter", home=home)
    (before,) = [w["rss_mb"] for w in service.stats()["homes"][str(home)]["workers"]]
    snap = service.fetch("deepseek", home=home)
    assert snap.error.code == "bad_response" and "larger than 1 MiB" in snap.error.message
    assert snap.probe.path == "warm" and snap.probe.worker_pid == warm.probe.worker_pid
    (after,) = [w["rss_mb"] for w in service.stats()["homes"][str(home)]["workers"]]
    assert after - before < 3.0, (before, after)   # reading the body would add >= 5 MiB
    assert service.fetch("openrouter", home=home, refresh=True).available


def _rewrite_in_place(path: Path, data: bytes, cuts: tuple[int, ...], between=lambda: None) -> None:
    """Truncate and write ``data`` in pieces ending at ``cuts``, calling ``between()`` while
    the file holds each partial state — a naive editor or a crash mid-write."""
    with open(path, "r+b") as handle:
        handle.truncate(0)
        written = 0
        for cut in (*cuts, len(data)):
            handle.write(data[written:cut])
            handle.flush()
            written = cut
            if cut < len(data):
                between()


def test_env_rewritten_in_place_mid_probe_gives_old_new_or_a_clear_error(make_service, make_home, emulator):
    """``.env`` rewritten non-atomically while probes run: every answer is the old
    credential's, the new one's, or a typed error (``no_credentials`` for an empty or cut
    line, ``unauthorized`` for a cut token, which a real provider refuses) -- never a
    crash, never a splice of old and new; once the write completes, the new credential's
    result is what a plain fetch returns."""
    old, new = "sk-inplace-old-" + "o" * 40, "sk-inplace-new-" + "n" * 40
    balances = {old: "111.00", new: "222.00"}
    for token, balance in balances.items():
        emulator.script(token, {"is_available": True, "balance_infos": [
            {"currency": "USD", "total_balance": balance, "granted_balance": "0", "topped_up_balance": "0"}]})
        for n in range(1, len(token)):  # a cut-off key is not a valid key
            emulator.script(token[:n], {"error": {"message": "Authentication Fails"}}, status=401)
    home = make_home("inplace", deepseek=old)
    env = home / ".env"
    service = make_service(pool_size=2)
    lines = {token: f"DEEPSEEK_API_KEY={token}\n".encode() for token in balances}
    seen: list[Snapshot] = []

    def outcome(snap: Snapshot) -> str:
        if snap.error is not None:
            return snap.error.code
        return next(token for token, balance in balances.items()
                    if any(line.startswith(f"Balance: ${balance} ") for line in snap.details))

    # Every partial state, probed deterministically while the file holds it.
    cuts = (0, 8, 16, 17, 20, 40, len(lines[new]) - 2, len(lines[new]) - 1)
    _rewrite_in_place(env, lines[new], cuts,
                      between=lambda: seen.append(service.fetch("deepseek", home=home, refresh=True)))
    assert outcome(service.fetch("deepseek", home=home)) == new
    assert {outcome(s) for s in seen} <= {"no_credentials", "unauthorized", old, new}
    assert {"no_credentials", "unauthorized"} <= {outcome(s) for s in seen}

    # Then a writer racing four callers, alternating old and new, ending on old.
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            seen.append(service.fetch("deepseek", home=home, refresh=True))

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    try:
        for i in range(40):
            _rewrite_in_place(env, lines[old if i % 2 else new], (len(lines[old]) // 2,))
    finally:
        stop.set()
        for thread in callers:
            thread.join(30)
    assert {outcome(s) for s in seen} <= {"no_credentials", "unauthorized", old, new}
    assert outcome(service.fetch("deepseek", home=home)) == old
    sent = {r.token for r in emulator.requests() if r.token and r.token.startswith("sk-inplace-")}
    assert all(old.startswith(t) or new.startswith(t) for t in sent), "a token spliced from old and new"


def test_auth_json_rewritten_in_place_is_read_whole_or_refused(make_service, make_home, emulator):
    """``auth.json`` cut at every few bytes while probes run: a cut document is malformed
    JSON (or empty), which is ``credentials_unreadable`` naming the file -- never a token
    taken from half a document; the emulator only ever sees the old or the new token."""
    old, new = "codex-inplace-old-" + "o" * 30, "codex-inplace-new-" + "n" * 30
    home = make_home("inplace-auth", codex=old)
    auth = home / "auth.json"
    service = make_service(pool_size=1)
    assert service.fetch("openai-codex", home=home).available
    document = json.dumps({"providers": {"openai-codex": {"tokens": {"access_token": new}}}}, indent=2).encode()
    seen: list[Snapshot] = []
    _rewrite_in_place(auth, document, tuple(range(0, len(document), 7)),
                      between=lambda: seen.append(service.fetch("openai-codex", home=home, refresh=True)))
    for snap in seen:
        assert snap.available or snap.error.code == "credentials_unreadable", snap
        if snap.error is not None and snap.error.message:
            assert "auth.json" in snap.error.message and new not in snap.error.message
    assert service.fetch("openai-codex", home=home).available
    sent = {r.token for r in emulator.requests() if r.token and r.token.startswith("codex-inplace-")}
    assert sent == {old, new}


def test_cache_files_stay_whole_when_their_writer_is_killed(emulator, make_home, tmp_path):
    """A process storing snapshots in the shared cache as fast as it can is SIGKILLed:
    every cache file left behind is a complete entry (temp file + rename), and a new
    process reads them."""
    homes = [make_home(f"killed-writer-{i}", deepseek=f"sk-killed-writer-{i}") for i in range(3)]
    cache_dir = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import itertools, sys
        from probe import ProbeConfig, ProbeService
        service = ProbeService(ProbeConfig(pool_size=1, coalesce=False, cache_dir={str(cache_dir)!r},
                                           provider_urls={emulator.provider_urls()!r}))
        for n in itertools.count():
            for home in {[str(h) for h in homes]!r}:
                service.fetch("deepseek", home=home, refresh=True)
            if n == 20:
                print("writing", flush=True)
    """)
    with reaped(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)) as writer:
        assert writer.stdout.readline().strip() == b"writing"
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    entries = sorted(cache_dir.glob("*/*.json"))
    assert len(entries) == 3
    for entry in entries:
        data = json.loads(entry.read_bytes())
        assert Snapshot.from_dict(data["snapshot"]).available
    disk = DiskCache(cache_dir)
    for home in homes:
        fingerprint = credential_fingerprint(home)   # single fetches of a home never listed: keyed by its stat
        key = (os.path.realpath(home), "deepseek", ("stat", fingerprint))
        assert disk.read(Fetch("deepseek", home, key, 0, 0.0, 0.0, False, fingerprint=fingerprint)) is not None


@pytest.mark.parametrize("how", ["hung_provider", "frozen_worker"])
def test_a_timeout_leaves_the_pool_back_at_pool_size_warm_workers(make_service, make_home, emulator, how):
    """A hung provider is reported by the live child just inside the deadline (the worker
    stays); a worker that cannot answer at all (SIGSTOP) is killed with its tree at the
    deadline. Either way the caller gets ``timeout`` and, with prewarm, the pool is back to
    ``pool_size`` running workers that answer."""
    token = f"sk-timeout-{how}" + ("-hang-" if how == "hung_provider" else "")
    home = make_home(f"timeout-{how}", deepseek=token, openrouter=f"sk-or-v1-timeout-{how}")
    service = make_service(pool_size=2, prewarm=True)
    service.fetch("openrouter", home=home)
    assert wait_until(lambda: service.stats()["homes"][str(home)]["alive"] == 2)
    frozen = None
    if how == "frozen_worker":
        frozen = service.fetch("openrouter", home=home, refresh=True).probe.worker_pid
        os.kill(frozen, signal.SIGSTOP)
        tree = [psutil.Process(frozen)]
        snap = service.fetch("openrouter", home=home, refresh=True, timeout=1.0)
        assert snap.probe.worker_pid == frozen   # most recently used first: the frozen one
    else:
        snap = service.fetch("deepseek", home=home, timeout=1.5)
    assert snap.error is not None and snap.error.code == "timeout"
    if frozen is not None:
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert not alive
    assert wait_until(lambda: service.stats()["homes"][str(home)]["alive"] == 2)
    pids = worker_pids(service, home)
    assert frozen not in pids
    answers = {service.fetch("openrouter", home=home, refresh=True).probe.worker_pid for _ in range(4)}
    assert answers <= pids


def test_a_cold_worker_that_cannot_be_built_gives_its_permit_back(emulator, make_home, monkeypatch):
    """Building a cold worker fails (injected: its constructor raises, as a failed
    environment build or "can't start new thread" would) as many times as there are cold
    permits; afterwards ``max_cold_spawns`` one-shots still run at once. The permit was
    granted before the ``try`` that returns it, so each such failure lost one for good."""
    import probe.service
    from probe import ProbeConfig, ProbeService

    max_cold = 2
    homes = [make_home(f"coldpermit-{i}", deepseek=f"sk-coldpermit-{i}") for i in range(max_cold)]
    real_worker = probe.service.Worker
    failures = []

    def broken_worker(*args, **kwargs):
        failures.append(1)
        raise RuntimeError("can't start new thread")    # the injected fault

    config = ProbeConfig(provider_urls=emulator.provider_urls(), pool_size=0, max_cold_spawns=max_cold)
    with ProbeService(config) as service:
        monkeypatch.setattr(probe.service, "Worker", broken_worker)
        for _ in range(max_cold):                          # as many failures as permits
            with pytest.raises(RuntimeError, match="can't start new thread"):
                service.fetch("deepseek", home=homes[0], timeout=5, refresh=True)
        assert len(failures) == max_cold
        assert service.stats()["cold_running"] == 0, "a cold permit was lost"
        monkeypatch.setattr(probe.service, "Worker", real_worker)
        gates = [emulator.hold(f"sk-coldpermit-{i}") for i in range(max_cold)]
        answers: list = []
        threads = [threading.Thread(target=lambda home=home: answers.append(
            service.fetch("deepseek", home=home, timeout=30))) for home in homes]
        try:
            for thread in threads:
                thread.start()
            # max_cold one-shots in flight together: each holds a permit of its own
            assert all(emulator.wait_for(1, token=f"sk-coldpermit-{i}") for i in range(max_cold))
        finally:
            for gate in gates:
                gate.set()
            for thread in threads:
                thread.join(30)
        assert len(answers) == max_cold and all(s.available and s.probe.path == "cold" for s in answers)
