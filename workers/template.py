"""``python -P -m workers.template FD``: the template process workers are forked from.

Why: an exec-started worker pays a whole Python start-up plus ``import httpx`` and a CA
bundle load (~130 ms of CPU) before its first probe. The template pays that once, then
answers each "start a worker" request with ``fork()`` (~1-2 ms); the child becomes one
home's worker and runs the same loop (``workers.loop.serve``) an exec-started one runs.

What the template is careful about:

* **Provider plugins are imported here, once** (SPEC §16), so every forked worker starts
  with them loaded; one whose import fails is remembered as such (its probes answer
  ``plugin_error``) and the template goes on.
* **It never reads a home and holds no credential.** It starts with the parent's allowlisted
  environment (no ``HERMES_HOME``) and touches no home's files. A worker learns its home
  (and everything else of its environment) from its own spawn request, after the fork.
* **Control channel**: a ``SOCK_SEQPACKET`` Unix socket (fd ``FD``), one message per
  request, so the worker's pipe ends travel as ``SCM_RIGHTS`` file descriptors with the
  request and the worker's pidfd travels back with the reply. The parent signals and waits
  on that pidfd, so a recycled pid can never be mistaken for the worker. Protocol::

      template -> parent  {"ready": true, "pid": P}                  once, when preloaded
      parent -> template  {"env": {...}, "once": bool} + fds [stdin, stdout(, stderr)]
      template -> parent  {"pid": W} + fds [pidfd]  |  {"error": "..."}

  EOF on the socket (the service closed it or died) ends the template.
* **Lifetime**: ``PR_SET_PDEATHSIG`` ties the template to the service's spawner thread,
  and each worker to the template (its parent), so a SIGKILLed service takes the template
  and, through it, every worker along. Killing the template therefore kills its workers:
  the service notices them gone (EOF, pidfd) and forks replacements from a new template.
* **Reaping**: SIGCHLD writes a byte to a pipe (``signal.set_wakeup_fd``) that the main
  loop polls beside the control socket, and the loop reaps whenever it wakes, so no zombie
  outlives a worker's exit for longer than the template takes to wake. Not in a Python
  signal handler: CPython runs one between bytecodes, so a SIGCHLD that lands after the
  last such check and before ``recvmsg`` blocks would be handled only when the next spawn
  request arrives -- on a quiet service, never (``_watch_children`` explains). SIGCHLD is
  blocked from ``fork()`` until the child's pidfd is open: otherwise a child that exited
  at once could be reaped, and its pid reused, before ``pidfd_open`` named it. Before it
  exits, the template kills and reaps every child it still has, the spare included
  (``_end_children``): nothing of it is left for init to reap.
* **A spare**: the template keeps one child forked ahead of need, already through
  everything that does not depend on a home (the fork itself, PDEATHSIG, its own HTTP
  client). A spawn request hands the spare its pipes and environment over a socket of its
  own and answers at once; the next spare is forked after the answer, off the caller's
  path. If the spare died, the request is served by a fork on the spot. The spare is a
  home-less process like the template: it learns its home only with its request.
* **Copy-on-write**: the collector is disabled here and everything preloaded is frozen
  (``gc.freeze()``), so neither the template nor a worker's collector rewrites those
  objects' pages; workers share them with the template.

This module imports nothing from ``probe`` (the child side never does).
"""
from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
from pathlib import Path
from typing import NoReturn

from workers.lifeline import PARENT_PID_ENV, die_with_parent

#: a spawn request is an environment of a few KiB; anything larger is refused
MAX_MESSAGE_BYTES = 256 * 1024
TITLE = "quota-probe template"
SPARE_TITLE = "quota-probe spare"
_CHLD = {signal.SIGCHLD}
#: (read end, write end) of the pipe every SIGCHLD writes a byte to; see ``_watch_children``
_wakeup: tuple[int, int] | None = None
#: pids of the children forked and not yet reaped (the spare and the workers); see ``_end_children``
_children: set[int] = set()


def worker_title(home: str, once: bool) -> str:
    """The process title of a forked worker: its command line ends with its home (SPEC §5)."""
    return f"quota-probe worker {'--once ' if once else ''}{home}"


def _reap_children() -> None:
    """Reap every child that has exited; never blocks."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _children.discard(pid)


def _end_children() -> None:
    """Before the template exits: SIGKILL every child still running and reap them all.

    Why not leave them to ``PR_SET_PDEATHSIG``: a child that outlives us, even by the
    moment PDEATHSIG takes, is re-parented to init (or the nearest subreaper) and lingers
    as a zombie until *that* reaps it -- ``[quota-probe spa] <defunct>`` after every CLI
    run, for good under an init that does not reap (a container's PID 1). The spare has
    no state; a worker still running has lost its service (the template ends on EOF, when
    the service closed or died), so it dies now rather than a moment later. The pids are
    our unreaped children: none can have been recycled."""
    for pid in list(_children):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in list(_children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        _children.discard(pid)


def _on_sigchld(signum: int, frame: object) -> None:
    """Nothing to do here: the main loop reaps once the wakeup pipe says a child exited."""


def _watch_children() -> int:
    """Make every SIGCHLD write a byte to a pipe; return its read end, which
    :func:`_next_message` polls beside the control socket.

    Why not reap in the Python-level SIGCHLD handler: CPython runs that handler on the main
    thread between bytecodes. A SIGCHLD that arrives after the loop's last such check but
    before ``recvmsg`` blocks (a worker exiting just as the template finishes a spawn
    request, e.g. one a rotation closed) is not handled until ``recvmsg`` returns, i.e. until
    the service asks for another worker. The exited worker stays a zombie meanwhile: for
    good, on a service that starts no other worker (what ``probe stress``'s ``no_zombies``
    invariant catches at the end of a run). The C-level handler writes the wakeup byte at
    once, and a byte in a pipe cannot be missed by ``poll``."""
    global _wakeup
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _wakeup = (read_end, write_end)
    signal.signal(signal.SIGCHLD, _on_sigchld)   # a Python handler: with SIG_DFL nothing is written
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    return read_end


def _next_message(control: socket.socket, wakeup_fd: int) -> tuple[bytes, list[int]]:
    """The next control message (and its fds), reaping every child that exits meanwhile."""
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wakeup_fd, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if wakeup_fd in ready:
            try:
                while os.read(wakeup_fd, 4096):
                    pass
            except BlockingIOError:
                pass
        _reap_children()   # after the drain: a child exiting from now on writes a new byte
        if control.fileno() in ready:   # a message, EOF or an error: recv_fds tells which
            message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE_BYTES, 3)
            return message, fds


def _warm_up() -> None:
    """Do once, here, what every worker's first probe would otherwise do for itself: import
    the probe code and httpx, build the TLS context, and run one real request through the
    whole client stack (httpx, httpcore, h11, sockets, JSON) plus a credential parse, so the
    lazy imports, compiled patterns and caches behind them exist before the fork. The
    request goes to a throwaway responder on 127.0.0.1 that this function starts and stops;
    the credential files are throwaway files in a temporary directory -- no home is read."""
    import tempfile
    import threading

    from workers.loop import preload

    preload(plugins=True)
    from workers.credentials import load_home
    from workers.http import ProviderHttp, ssl_context
    from workers.result import money
    from workers.validate import to_snapshot

    ssl_context()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        responder = threading.Thread(target=_answer_once, args=(listener,), name="template-warm-up")
        responder.start()
        http = ProviderHttp()
        try:
            http.get_json(f"http://127.0.0.1:{listener.getsockname()[1]}/warm-up", token="warm-up",
                          provider_label="warm-up", timeout_s=5.0, headers={"anthropic-beta": "warm-up"})
        except Exception:  # noqa: BLE001 -- a failed warm-up costs speed, never correctness
            pass
        finally:
            http.close()
            responder.join(5.0)
    with tempfile.TemporaryDirectory(prefix="quota-probe-template-") as scratch:
        Path(scratch, ".env").write_text("export WARM_UP='1'  # comment\n")
        Path(scratch, "auth.json").write_text('{"providers": {}, "credential_pool": {}}')
        load_home(scratch).env_value("WARM_UP")
    to_snapshot("warm-up", "warm-up", {"title": "warm-up", "source": "warm-up", "details": [money(1.5, "USD")],
                                       "windows": [{"label": "warm-up", "used_percent": 42.0,
                                                    "reset_at": "2026-01-01T00:00:00.000001+00:00"}],
                                       "balances": [{"label": "warm-up", "amount": "1.50"}]})


def _answer_once(listener: socket.socket) -> None:
    listener.settimeout(5.0)
    try:
        connection, _ = listener.accept()
    except OSError:
        return
    with connection:
        connection.settimeout(5.0)
        try:
            connection.recv(65536)
            body = b'{"warm_up": [1, 2.5, "x", null, true]}'
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            pass


def _take_environment(env: dict[str, str]) -> None:
    """Make ``os.environ`` exactly ``env``. Only the differences are applied: the template's
    environment is the same allowlist, so that is a handful of variables instead of a
    putenv per variable."""
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _send(control: socket.socket, message: dict, fds: list[int] = ()) -> None:
    socket.send_fds(control, [json.dumps(message, separators=(",", ":")).encode()], list(fds))


def _enter_child(template_pid: int) -> None:
    """First steps of every forked child: the template's signal set-up undone, a session
    of its own (a terminal's Ctrl-C reaches the service, not the workers) and its life tied
    to the template's."""
    signal.set_wakeup_fd(-1)   # else a signal to the child would write into the template's pipe
    if _wakeup is not None:
        for fd in _wakeup:
            os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _CHLD)
    _children.clear()   # the template's children, not ours
    os.setsid()
    die_with_parent(template_pid)   # the environment learns the pid with the request's
    gc.enable()


def _become_worker(request: dict, fds: list[int], template_pid: int, loop: object = None) -> int:
    """Take the pipes as stdin/stdout(/stderr) and the requested environment and title,
    then serve; the exit code."""
    stderr_fd = fds[2] if len(fds) > 2 else os.open(os.devnull, os.O_WRONLY)
    for target, fd in ((0, fds[0]), (1, fds[1]), (2, stderr_fd)):
        os.dup2(fd, target)
    os.closerange(3, 65536)  # nothing of the template's (or of other spawns) stays open
    env = dict(request["env"])
    env[PARENT_PID_ENV] = str(template_pid)
    _take_environment(env)
    import setproctitle

    from workers.loop import serve

    once = bool(request.get("once"))
    setproctitle.setproctitle(worker_title(env.get("HERMES_HOME", "?"), once))
    return serve(once=once, loop=loop)


def _child(body) -> NoReturn:
    """Run ``body`` in a forked child; whatever happens, never return into the template."""
    code = 1
    try:
        code = body()
    except BaseException:  # noqa: BLE001 -- whatever it was, this process must not return
        code = 1
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def _forked(body) -> tuple[int, int]:
    """(pid, pidfd) of a child running ``body``. SIGCHLD stays blocked until the pidfd is
    open, so the child cannot be reaped (and its pid reused) before the pidfd names it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _CHLD)
    try:
        pid = os.fork()
        if pid == 0:
            _child(body)
        _children.add(pid)
        return pid, os.pidfd_open(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _CHLD)


class _Spare:
    """A child forked ahead of need: prepared, waiting on its own socket for a request."""

    def __init__(self, control: socket.socket, template_pid: int) -> None:
        self.channel, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

        def body() -> int:
            control.close()
            self.channel.close()
            _enter_child(template_pid)
            import setproctitle

            from workers.loop import prepare

            setproctitle.setproctitle(SPARE_TITLE)
            loop = prepare()
            message, fds, _, _ = socket.recv_fds(child_end, MAX_MESSAGE_BYTES, 3)
            if not message:
                return 0   # the template closed our socket: not needed after all
            child_end.close()
            return _become_worker(json.loads(message), fds, template_pid, loop)

        try:
            self.pid, self.pidfd = _forked(body)
        finally:
            child_end.close()

    def hand_over(self, message: bytes, fds: list[int]) -> bool:
        """Give the spare its request; False if it is gone."""
        try:
            socket.send_fds(self.channel, [message], fds)
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.channel.close()
        os.close(self.pidfd)


def _spawn(control: socket.socket, message: bytes, request: dict, fds: list[int], spare: _Spare | None,
           template_pid: int) -> None:
    """Answer one spawn request with a worker: the spare if there is a live one, else a
    child forked now."""
    if spare is not None and spare.hand_over(message, fds):
        _send(control, {"pid": spare.pid}, [spare.pidfd])
        return
    try:
        pid, pidfd = _forked(lambda: _worker_now(control, request, fds, template_pid))
    except OSError as exc:
        _send(control, {"error": f"fork failed ({type(exc).__name__})"})
        return
    try:
        _send(control, {"pid": pid}, [pidfd])
    finally:
        os.close(pidfd)


def _worker_now(control: socket.socket, request: dict, fds: list[int], template_pid: int) -> int:
    control.close()
    _enter_child(template_pid)
    return _become_worker(request, fds, template_pid)


def serve_template(control: socket.socket, wakeup_fd: int) -> int:
    """Answer spawn requests until EOF; ``wakeup_fd`` is :func:`_watch_children`'s pipe."""
    template_pid = os.getpid()
    spare: _Spare | None = None
    try:
        while True:
            if spare is None:
                try:
                    spare = _Spare(control, template_pid)
                except OSError:
                    spare = None   # no spare for now: requests fork on the spot
            try:
                message, fds = _next_message(control, wakeup_fd)
            except ConnectionResetError:
                return 0
            if not message:
                return 0  # EOF: the service closed the channel or died
            try:
                request = json.loads(message)
                if _valid(request, fds):
                    used = spare
                    _spawn(control, message, request, fds, spare, template_pid)
                    if used is not None:
                        used.close()
                        spare = None
                else:
                    _send(control, {"error": "malformed spawn request"})
            except ValueError:
                _send(control, {"error": "malformed spawn request"})
            finally:
                for fd in fds:
                    os.close(fd)
    finally:
        if spare is not None:
            spare.close()
        _end_children()


def _valid(request: object, fds: list[int]) -> bool:
    return (isinstance(request, dict) and isinstance(request.get("env"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in request["env"].items())
            and len(fds) in (2, 3))


def main(argv: list[str]) -> int:
    gc.disable()  # no collection may rewrite what the workers will share; see the docstring
    control = socket.socket(fileno=int(argv[0]))
    die_with_parent()
    try:
        import setproctitle

        _warm_up()
        setproctitle.setproctitle(TITLE)
    except Exception as exc:  # noqa: BLE001 -- reported to the service, which falls back to exec
        _send(control, {"error": f"the template could not prepare: {type(exc).__name__}: {exc}"[:500]})
        return 1
    wakeup_fd = _watch_children()
    gc.freeze()
    if not os.environ.get("PROBE_DEBUG"):
        # stderr was a pipe for start-up diagnostics only; nobody reads it from now on
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    _send(control, {"ready": True, "pid": os.getpid()})
    return serve_template(control, wakeup_fd)


if __name__ == "__main__":
    exit_code = main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(exit_code)
