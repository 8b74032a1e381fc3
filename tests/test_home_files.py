"""A home's files as Hermes writes them, read by real worker processes (issue #25, SPEC §2).

Every test starts ``python -m workers`` over real pipes on a real home: python-dotenv's
``.env`` (an unparsable line skipped and logged by number), ``credentials_unreadable`` for a
file that cannot be read (the provider stays listed), 1Password references resolved by a
real ``op`` executable on the worker's PATH (fake ones: absent, hanging, failing,
succeeding) and never sent, Copilot's classic-token rule -- and no message of the child
ever naming a path of the server.

Mode 000: the suite runs as root, which reads any file; the worker is then started under
``setpriv`` without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so the kernel refuses it the
file as it would refuse any other user.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from probe.env import child_env
from probe.tools.demo import write_home
from support import fresh, wait_until
from workers.providers import NAMES

pytestmark = pytest.mark.timeout(60)

REFERENCE = "op://Private/DeepSeek API/credential"
#: every piece of the reference a message must never show
REFERENCE_PARTS = ("op://", "Private", "DeepSeek API")
NO_DAC = ["--bounding-set=-dac_override,-dac_read_search"]


class Worker:
    """One ``python -m workers`` of ``home``; every byte it writes is kept for the checks."""

    def __init__(self, home: Path, urls: dict[str, str] | None = None, *, path: str | None = None,
                 without_dac: bool = False) -> None:
        parent = dict(os.environ)
        if path is not None:
            parent["PATH"] = path
        prefix = []
        if without_dac:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("setpriv (util-linux) is needed to drop root's file-reading capabilities")
            prefix = [setpriv, *NO_DAC]
        self.home = home
        self.proc = subprocess.Popen([*prefix, sys.executable, "-P", "-m", "workers"], env=child_env(home, urls, parent),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self._next = 0

    def ask(self, request: dict) -> dict:
        self._next += 1
        self.proc.stdin.write(json.dumps({"id": self._next, **request}).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().decode()
        self.out.append(line)
        reply = json.loads(line)
        assert reply["id"] == self._next
        return reply

    def providers(self) -> dict:
        reply = self.ask({"op": "providers"})
        assert reply["ok"] is True, reply
        return reply

    def probe(self, provider: str) -> dict:
        return self.ask({"op": "probe", "provider": provider, "timeout_s": 20})["snapshot"]

    def close(self) -> str:
        """Ends the worker; its stderr. Asserts no message named a path of the server."""
        self.proc.stdin.close()
        assert self.proc.wait(15) == 0
        err = self.proc.stderr.read().decode()
        self.proc.stdout.close()
        self.proc.stderr.close()
        for text in (*self.out, err):
            assert str(self.home) not in text and str(self.home.parent) not in text, text
        return err

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if not stream.closed:
                stream.close()


def home_with(tmp_path: Path, name: str = "home", **tokens: str) -> Path:
    return write_home(tmp_path / "homes", name, **tokens)


# -- .env as python-dotenv reads it ----------------------------------------------------------
def test_hermes_style_env_is_read_and_an_unparsable_line_is_logged_by_number(emulator, tmp_path):
    """export lines, quotes, a PEM spanning lines, ${OTHER} expansion and a line python-dotenv
    cannot parse: the credentials around it count, the worker logs ``.env line N`` once,
    and neither the broken line nor any value reaches a log or a reply."""
    token = fresh("sk-ds-dotenv")
    home = home_with(tmp_path)
    (home / ".env").write_text(
        "# written by Hermes\n"
        'export OPENROUTER_API_KEY="' + fresh("sk-or-v1-quoted") + '"\n'
        'GOOGLE_KEY="-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"\n'
        f"BROKEN LINE {token}-leak\n"
        f"DS_PART={token}\n"
        "export DEEPSEEK_API_KEY=${DS_PART}\n"
        "export GITHUB_TOOLS\n")
    with Worker(home, emulator.provider_urls()) as worker:
        assert worker.providers()["providers"] == ["openrouter", "deepseek"]
        snap = worker.probe("deepseek")
        assert snap["available"] is True and snap["error"] is None
        err = worker.close()
    assert emulator.count(token=token) == 1   # ${DS_PART} expanded from the same file
    assert err.splitlines() == ["workers: .env line 6 could not be parsed (python-dotenv) and was skipped"]
    assert f"{token}-leak" not in "".join(worker.out) + err


def test_expansion_never_takes_the_services_environment(emulator, tmp_path, monkeypatch):
    """${VAR} comes from the home's own file: a service variable of the same name is not
    read (a worker's environment is the allowlist, and even that must not leak in)."""
    monkeypatch.setenv("LANG", "C.UTF-8")
    home = home_with(tmp_path)
    (home / ".env").write_text("DEEPSEEK_API_KEY=sk-ds-lang-${LANG}-x\n")
    with Worker(home, emulator.provider_urls()) as worker:
        assert worker.probe("deepseek")["available"] is True
        worker.close()
    assert emulator.count(token="sk-ds-lang--x") == 1
    assert emulator.count(token="sk-ds-lang-C.UTF-8-x") == 0


# -- credentials_unreadable: the provider stays listed ------------------------------------
#: every built-in has an auth.json place; deepseek's credential is in .env, so it is found
AUTH_PROVIDERS = [name for name in NAMES if name != "deepseek"]


@pytest.mark.parametrize("content, reason", [
    ('{"providers": {"openai-codex": {"tokens": {"access_token": "codex-cut-mid-wr',
     "it is not valid JSON (line 1, column 60)"),
    ('["not", "an", "object"]', "it does not hold a JSON object"),
    ("", "it is empty (delete it if this home has no logins)"),
])
def test_an_unreadable_auth_json_keeps_its_providers_listed(emulator, tmp_path, content, reason):
    token = fresh("sk-ds-beside")
    home = home_with(tmp_path, deepseek=token, codex="codex-token-unused")
    (home / "auth.json").write_text(content)
    with Worker(home, emulator.provider_urls()) as worker:
        listing = worker.providers()
        assert listing["providers"] == list(NAMES)   # the parent narrows it to what the home had (test below)
        assert listing["unreadable"] == AUTH_PROVIDERS and listing["pool_only_unreadable"] is True
        message = f"auth.json could not be read: {reason}."
        for name in ("openai-codex", "nous", "xai"):   # xai: a pool-only id the parent remembers
            snap = worker.probe(name)
            assert snap["error"] == {"code": "credentials_unreadable", "message": message}, name
        assert worker.probe("deepseek")["available"] is True   # the other file still counts
        worker.close()
    assert "codex-cut-mid-wr" not in "".join(worker.out)


def test_a_2_mib_env_is_credentials_unreadable(emulator, tmp_path):
    home = home_with(tmp_path, codex=fresh("codex-beside"))
    (home / ".env").write_text("DEEPSEEK_API_KEY=sk-ds-in-a-big-file\n" + "#" * (2 * 1024 * 1024) + "\n")
    with Worker(home, emulator.provider_urls()) as worker:
        listing = worker.providers()
        env_providers = [name for name in NAMES if name not in ("openai-codex", "nous")]
        assert listing["unreadable"] == env_providers and "openai-codex" in listing["providers"]
        assert worker.probe("deepseek")["error"] == {"code": "credentials_unreadable",
                                                     "message": ".env could not be read: it is larger than 1 MiB."}
        assert worker.probe("openai-codex")["available"] is True
        worker.close()
    assert emulator.count(token="sk-ds-in-a-big-file") == 0


@pytest.mark.parametrize("name", [".env", "auth.json"])
def test_a_mode_000_file_is_credentials_unreadable(emulator, tmp_path, name):
    """Real permissions: the worker runs without root's capability to read any file."""
    home = home_with(tmp_path, deepseek=fresh("sk-ds-mode"), codex=fresh("codex-mode"))
    (home / name).chmod(0)
    home.chmod(0o755)
    for parent in home.parents:   # the worker (still uid 0) must reach the home without DAC override
        if parent == Path("/") or stat.S_IMODE(parent.stat().st_mode) & 0o005 == 0o005:
            break
        parent.chmod(stat.S_IMODE(parent.stat().st_mode) | 0o005)
    with Worker(home, emulator.provider_urls(), without_dac=True) as worker:
        broken, fine = ("deepseek", "openai-codex") if name == ".env" else ("openai-codex", "deepseek")
        listing = worker.providers()
        assert broken in listing["providers"] and broken in listing["unreadable"]
        assert worker.probe(broken)["error"] == {"code": "credentials_unreadable",
                                                 "message": f"{name} could not be read: permission denied."}
        assert worker.probe(fine)["available"] is True
        worker.close()


def test_a_file_restored_reads_again_in_the_same_worker(emulator, tmp_path):
    token = fresh("codex-restored")
    home = home_with(tmp_path, codex=token)
    good = (home / "auth.json").read_text()
    with Worker(home, emulator.provider_urls()) as worker:
        assert worker.probe("openai-codex")["available"] is True
        (home / "auth.json").write_text(good[: len(good) // 2])   # truncated mid-write
        assert worker.probe("openai-codex")["error"]["code"] == "credentials_unreadable"
        (home / "auth.json").write_text(good)
        assert worker.probe("openai-codex")["available"] is True
        assert worker.providers()["unreadable"] == []
        worker.close()


# -- 1Password references -----------------------------------------------------------------
FAKE_OP = {
    "succeeds": '[ "$1" = read ] && [ "$2" = --no-newline ] || exit 64\n'
                'echo "$3" >> "$(dirname "$0")/calls"\n'
                'printf %s "$QP_SECRET"\n',
    "fails": 'echo "[ERROR] could not read secret $3: opfail-marker" >&2\nexit 1\n',
    "hangs": 'echo $$ > "$(dirname "$0")/op.pid"\nsleep 120 &\necho $! > "$(dirname "$0")/sleep.pid"\nwait\n',
}


def op_bin(tmp_path: Path, kind: str, secret: str = "") -> str:
    """A directory holding a fake ``op`` of ``kind``; the PATH to give the worker."""
    bindir = tmp_path / f"bin-{kind}"
    bindir.mkdir()
    script = FAKE_OP[kind].replace("$QP_SECRET", secret)
    (bindir / "op").write_text("#!/bin/sh\n" + script)
    (bindir / "op").chmod(0o755)
    return f"{bindir}:/usr/bin:/bin"


def reference_home(tmp_path: Path) -> Path:
    """A home whose .env holds a 1Password reference, dated back so that the worker's first
    read of it is trusted for later probes (a file changed within 2 s is read again)."""
    home = home_with(tmp_path)
    (home / ".env").write_text(f"DEEPSEEK_API_KEY={REFERENCE}\n")
    past = time.time() - 60
    for name in (".env", "auth.json"):
        if (home / name).exists():
            os.utime(home / name, (past, past))
    return home


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_no_reference(*texts: str) -> None:
    for text in texts:
        for part in REFERENCE_PARTS:
            assert part not in text, text


def test_a_reference_is_resolved_by_op_and_never_sent(emulator, tmp_path):
    secret = fresh("sk-ds-from-1password")
    path = op_bin(tmp_path, "succeeds", secret)
    home = reference_home(tmp_path)
    with Worker(home, emulator.provider_urls(), path=path) as worker:
        assert worker.providers()["providers"] == ["deepseek"]   # listed without running op
        assert not (tmp_path / "bin-succeeds" / "calls").exists()
        for _ in range(2):
            assert worker.probe("deepseek")["available"] is True
        err = worker.close()
    assert (tmp_path / "bin-succeeds" / "calls").read_text() == REFERENCE + "\n"   # once, as one argument
    assert emulator.count(token=secret) == 2
    assert not [r for r in emulator.requests() if r.token and "op://" in r.token]
    assert_no_reference(*worker.out, err)


def test_a_reference_without_op_on_path_is_no_credentials(emulator, tmp_path):
    empty = tmp_path / "no-op-here"
    empty.mkdir()
    home = reference_home(tmp_path)
    before = len(emulator.requests())
    with Worker(home, emulator.provider_urls(), path=str(empty)) as worker:
        assert worker.providers()["providers"] == ["deepseek"]
        assert worker.probe("deepseek")["error"] == {
            "code": "no_credentials",
            "message": "DEEPSEEK_API_KEY in .env holds a 1Password reference, and the 1Password CLI (op) is not "
                       "on the service's PATH to resolve it."}
        err = worker.close()
    assert len(emulator.requests()) == before   # nothing was sent anywhere
    assert_no_reference(*worker.out, err)


def test_a_failing_op_is_a_clear_error_without_its_stderr(emulator, tmp_path):
    home = reference_home(tmp_path)
    before = len(emulator.requests())
    with Worker(home, emulator.provider_urls(), path=op_bin(tmp_path, "fails")) as worker:
        assert worker.probe("deepseek")["error"] == {
            "code": "credentials_unreadable",
            "message": "DEEPSEEK_API_KEY in .env holds a 1Password reference that the 1Password CLI could not read "
                       "(op exited with status 1; is it signed in?)."}
        err = worker.close()
    assert len(emulator.requests()) == before
    assert "opfail-marker" not in "".join(worker.out) + err
    assert_no_reference(*worker.out, err)


def test_a_hanging_op_is_bounded_and_killed_with_what_it_started(emulator, tmp_path):
    home = reference_home(tmp_path)
    bindir = tmp_path / "bin-hangs"
    with Worker(home, emulator.provider_urls(), path=op_bin(tmp_path, "hangs")) as worker:
        started = time.monotonic()
        snap = worker.probe("deepseek")
        took = time.monotonic() - started
        assert snap["error"] == {"code": "credentials_unreadable",
                                 "message": "DEEPSEEK_API_KEY in .env holds a 1Password reference; the 1Password "
                                            "CLI did not answer within 5 s and was stopped."}
        assert took < 15   # the 5 s bound, not the request's 20 s (generous: the machine is shared)
        for name in ("op.pid", "sleep.pid"):   # SIGKILL went to op's whole process group
            pid = int((bindir / name).read_text())
            assert wait_until(lambda: gone(pid), 5), name
        worker.close()
    assert_no_reference(*worker.out)


# -- Copilot: classic tokens are no Copilot credential -------------------------------------
def test_a_home_with_only_classic_github_tokens_does_not_list_copilot(tmp_path):
    home = home_with(tmp_path)
    (home / ".env").write_text("GITHUB_TOKEN=ghp_classicForHermesTools\nGH_TOKEN=ghp_another\n")
    with Worker(home) as worker:
        assert "copilot" not in worker.providers()["providers"]
        snap = worker.probe("copilot")   # asked by name, it says why
        assert snap["error"]["code"] == "no_credentials" and "ghp_" in snap["error"]["message"]
        (home / ".env").write_text("GITHUB_TOKEN=ghp_classicForHermesTools\nCOPILOT_GITHUB_TOKEN=gho_oauthToken\n")
        assert "copilot" in worker.providers()["providers"]
        worker.close()


def test_a_reference_op_cannot_read_is_an_unavailable_account_beside_the_others(emulator, tmp_path):
    """SPEC §18: the pool row is probed; the .env reference is its own account, unavailable
    with op's failure -- never a token sent."""
    pooled = fresh("sk-ant-oat01-pooled")
    home = home_with(tmp_path)
    (home / "auth.json").write_text(json.dumps({"credential_pool": {"anthropic": [
        {"id": "pooled", "label": "work", "source": "manual", "access_token": pooled}]}}))
    (home / ".env").write_text("ANTHROPIC_TOKEN=op://Private/Claude/credential\n")
    past = time.time() - 60
    for name in (".env", "auth.json"):
        os.utime(home / name, (past, past))
    before = len(emulator.requests())
    with Worker(home, emulator.provider_urls(), path=op_bin(tmp_path, "fails")) as worker:
        snap = worker.probe("anthropic")
        worker.close()
    accounts = {entry["id"]: entry for entry in snap["accounts"]}
    assert accounts["env:ANTHROPIC_TOKEN"]["status"] == "unavailable"
    assert accounts["env:ANTHROPIC_TOKEN"]["error"]["code"] == "credentials_unreadable"
    assert accounts["pooled"]["status"] == "available" and len(accounts) == 2
    assert {r.token for r in emulator.requests()[before:]} == {pooled}
    assert "Private" not in "".join(worker.out) and "Claude/credential" not in "".join(worker.out)


# -- the parent: an unreadable file keeps the home's list as it was ------------------------
def test_the_service_keeps_the_homes_list_while_auth_json_is_unreadable(make_service, tmp_path):
    """Codex (auth.json), a pool-only id (xai: its name comes from auth.json itself) and
    deepseek (.env): while auth.json is cut mid-write, the list is the same -- no provider
    hidden, none of the other built-ins with an auth.json place added -- and the two read
    from auth.json answer credentials_unreadable naming the file; restored, they answer."""
    home = home_with(tmp_path, codex=fresh("codex-kept"), deepseek=fresh("sk-ds-kept"))
    auth = json.loads((home / "auth.json").read_text())
    auth["credential_pool"] = {"xai": [{"label": "work", "access_token": fresh("xai-kept"), "last_status": "ok"}]}
    good = json.dumps(auth)
    (home / "auth.json").write_text(good)
    service = make_service(pool_size=1)
    listed = ["openai-codex", "deepseek", "xai"]
    assert service.home_providers(home).names == tuple(listed)

    (home / "auth.json").write_text(good[: len(good) // 3])
    assert service.home_providers(home).names == tuple(listed)
    by_name = {snap.provider: snap for snap in service.fetch_home(home=home)}
    assert list(by_name) == listed
    for name in ("openai-codex", "xai"):
        error = by_name[name].error
        assert error is not None and error.code == "credentials_unreadable", by_name[name]
        assert error.message.startswith("auth.json could not be read: it is not valid JSON") and str(home) not in \
            error.message
    assert by_name["deepseek"].available

    (home / "auth.json").write_text(good)
    by_name = {snap.provider: snap for snap in service.fetch_home(home=home)}
    assert list(by_name) == listed and all(snap.error is None for snap in by_name.values()), by_name


def test_a_list_read_while_a_file_is_unreadable_is_narrowed_to_the_last_readable_one():
    from probe.home_list import parse_listing
    from probe.pool.worker import WorkerProtocolError

    last = parse_listing({"providers": ["openai-codex", "deepseek", "gemini", "xai"], "pool_only": ["gemini", "xai"],
                          "undeclared": []})
    now = parse_listing({"providers": ["anthropic", "openai-codex", "deepseek", "nous"], "pool_only": [],
                         "undeclared": [], "unreadable": ["anthropic", "openai-codex", "nous"],
                         "pool_only_unreadable": True})
    narrowed = now.as_before(last)
    assert narrowed.names == ("openai-codex", "deepseek", "gemini", "xai")
    assert narrowed.pool_only == {"gemini", "xai"} and narrowed.unreadable == {"openai-codex", "gemini", "xai"}
    for bad in ({"unreadable": ["zai"]}, {"unreadable": "deepseek"}, {"pool_only_unreadable": "yes"},
                {"unreadable": [7]}):
        with pytest.raises(WorkerProtocolError):
            parse_listing({"providers": ["deepseek"], "pool_only": [], "undeclared": [], **bad})


def test_a_worker_gets_1passwords_sign_in_and_nothing_else_new(tmp_path):
    parent = {"PATH": "/usr/bin", "OP_SERVICE_ACCOUNT_TOKEN": "ops_x", "OP_CONNECT_HOST": "http://op:8080",
              "OP_CONNECT_TOKEN": "c", "OP_ACCOUNT": "team", "OP_SESSION_team": "s", "OPENAI_API_KEY": "sk-no"}
    env = child_env(tmp_path, parent_env=parent)
    assert {name: env.get(name) for name in parent} == {**parent, "OP_SESSION_team": None, "OPENAI_API_KEY": None}


def test_a_malformed_auth_json_keeps_every_card_with_its_last_reading_stale_then_recovers(emulator, tmp_path):
    """Issue #25's target over HTTP: a home's readings taken; auth.json cut mid-write;
    every provider is still on the home's list, the auth.json ones answer
    credentials_unreadable *with* their last good reading marked stale, and /metrics keeps
    their series with quota_probe_snapshot_stale 1; restored, they answer fresh again."""
    from probe import ProbeConfig, ProbeService
    from probe.monitor.readings import Reader
    from probe.server import create_app
    from support import RunningApp

    home = home_with(tmp_path, codex=fresh("codex-stale"), deepseek=fresh("sk-ds-stale"))
    auth = json.loads((home / "auth.json").read_text())
    auth["credential_pool"] = {"xai": [{"label": "work", "access_token": fresh("xai-stale"), "last_status": "ok"}]}
    good = json.dumps(auth)
    (home / "auth.json").write_text(good)
    listed = ["openai-codex", "deepseek", "xai"]
    homes = {"alice": home}
    with ProbeService(ProbeConfig(pool_size=1, provider_urls=emulator.provider_urls())) as service:
        reader = Reader(service, homes)
        with RunningApp(create_app(service, homes, "stale-test-token-0123456789", reader=reader)) as running, \
                httpx.Client(base_url=running.url, timeout=60) as client:
            def read(refresh: bool) -> dict[str, dict]:
                cards = client.get("/api/quota", params={"home": "alice", **({"refresh": "1"} if refresh else {})},
                                   headers={"Sec-Fetch-Site": "same-origin"})
                assert cards.status_code == 200
                return {card["provider"]: card for card in cards.json()}

            before = read(refresh=False)
            assert list(before) == listed and all(card["available"] for card in before.values())
            (home / "auth.json").write_text(good[: len(good) // 3])
            during = read(refresh=True)
            assert list(during) == listed
            for name in ("openai-codex", "xai"):
                card = during[name]
                assert card["error"]["code"] == "credentials_unreadable" and card["stale"] is True, card
                assert card["available"] is True and card["error"]["message"].startswith("auth.json could not be read")
            assert during["openai-codex"]["windows"] == before["openai-codex"]["windows"]
            assert during["deepseek"]["error"] is None and during["deepseek"]["stale"] is False
            metrics = client.get("/metrics").text
            for name in ("openai-codex", "xai"):
                assert f'quota_probe_snapshot_stale{{home="alice",provider="{name}"}} 1.0' in metrics
            assert 'quota_probe_window_used_ratio{home="alice",provider="openai-codex"' in metrics

            (home / "auth.json").write_text(good)
            after = read(refresh=True)
            assert list(after) == listed
            assert all(card["error"] is None and card["stale"] is False for card in after.values()), after
            assert 'quota_probe_snapshot_stale{home="alice",provider="openai-codex"} 0.0' in client.get("/metrics").text


def test_an_auth_json_cut_short_is_seen_at_the_next_read_not_after_the_cache_ttl(emulator, tmp_path):
    """A plain poll (no refresh) right after auth.json turned unreadable: its providers
    answer their last good reading, stale, with credentials_unreadable -- the fresh cache
    entries used to hide the broken file for up to the TTL (45 s). Nothing rotates, and an
    ``.env`` provider still reads."""
    from probe import ProbeConfig, ProbeService

    home = home_with(tmp_path, codex=fresh("codex-cut"), deepseek=fresh("sk-ds-cut"))
    good = (home / "auth.json").read_text()
    with ProbeService(ProbeConfig(pool_size=1, cache_ttl_s=600, provider_urls=emulator.provider_urls())) as service:
        before = {snap.provider: snap for snap in service.fetch_home(home=home)}
        assert set(before) == {"openai-codex", "deepseek"} and all(s.available for s in before.values())
        (home / "auth.json").write_text(good[: len(good) // 3])
        during = {snap.provider: snap for snap in service.fetch_home(home=home)}
        codex = during["openai-codex"]
        assert codex.error is not None and codex.error.code == "credentials_unreadable" and codex.stale, codex
        assert codex.windows == before["openai-codex"].windows
        assert during["deepseek"].error is None and not during["deepseek"].stale   # its .env key still reads
        assert service.stats()["credential_rotations"] == 0
        (home / "auth.json").write_text(good)
        after = {snap.provider: snap for snap in service.fetch_home(home=home)}
        assert after["openai-codex"].error is None and not after["openai-codex"].stale


def test_the_panels_read_from_readings_sees_a_broken_then_fixed_auth_json_at_once(emulator, tmp_path):
    """``probe serve`` (a background refresher: the panel reads the refresher's readings)
    showed the readings from before auth.json broke until the next refresh (300 s), and the
    broken file's answer until the one after it was fixed. The providers the file hides
    are asked again at once, both ways."""
    from probe import ProbeConfig, ProbeService
    from probe.monitor.readings import Reader

    home = home_with(tmp_path, codex=fresh("codex-readings"), deepseek=fresh("sk-ds-readings"))
    good = (home / "auth.json").read_text()
    with ProbeService(ProbeConfig(pool_size=1, cache_ttl_s=600, provider_urls=emulator.provider_urls())) as service:
        reader = Reader(service, {"alice": home})

        def panel() -> dict:
            return {s.provider: s for s in reader.read_home("alice", refresh=False, from_readings=True)}

        assert all(s.error is None for s in panel().values())
        (home / "auth.json").write_text("")
        broken = panel()["openai-codex"]
        assert broken.error is not None and broken.error.code == "credentials_unreadable" and broken.stale
        (home / "auth.json").write_text(good)
        fixed = panel()["openai-codex"]
        assert fixed.error is None and not fixed.stale
