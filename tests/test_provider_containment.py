"""One provider's failure inside a worker is that provider's answer (SPEC §16, §17): an
exception out of its code -- its probe, or the account machinery around it -- answers it
``bad_response`` at once, with only the exception's type on stderr, while the home read's
other providers still get theirs; and a worker that cannot start a thread still probes
every account of a provider, on the thread it has. The worker loop runs in this process
over the real emulator; the faults are planted where the worker's code would meet them."""
from __future__ import annotations

import base64
import json
import threading

import pytest

from probe.tools.demo import write_home
from workers.loop import Loop

pytestmark = pytest.mark.timeout(60)
LEAK = "text-of-the-exception-sk-or-contained"


@pytest.fixture
def loop():
    """A worker loop in this process; its HTTP client closed after the test."""
    made = Loop()
    yield made
    made.http().close()


class ProviderBug(BaseException):
    """Not an Exception: what a plugin may raise (``except Exception`` would miss it)."""


def home_read(loop: Loop, providers: list[str]) -> tuple[dict, dict[str, dict]]:
    partials: list[dict] = []
    line = json.dumps({"id": 1, "op": "probe_home", "providers": providers, "timeout_s": 20}).encode()
    reply, keep_going = loop.handle(line, partials.append)
    assert keep_going
    return reply, {p["snapshot"]["provider"]: p["snapshot"] for p in partials}


@pytest.mark.parametrize("where", ["probe", "accounts"])
@pytest.mark.parametrize("order", [["openrouter", "deepseek"], ["deepseek", "openrouter"]])
def test_a_provider_raising_in_a_home_read_is_bad_response_and_the_others_answer(
        tmp_path, emulator_env, monkeypatch, capfd, loop, where, order):
    """``order``: the raising provider on the request's own thread, then on a side thread
    (which caught only OSError: the provider's line never came, and the parent waited for
    it until its deadline)."""
    import workers.accounts
    from workers.providers import load

    def raising(*args, **kwargs):
        raise ProviderBug(LEAK)

    if where == "probe":
        monkeypatch.setattr(load("openrouter").module, "probe", raising)
    else:
        enumerate_accounts = workers.accounts.enumerate_accounts
        monkeypatch.setattr(workers.accounts, "enumerate_accounts", lambda provider, *a, **k: raising()
                            if provider.spec.name == "openrouter" else enumerate_accounts(provider, *a, **k))
    loop.home = str(write_home(tmp_path, "h", deepseek="sk-ds-contained", openrouter="sk-or-contained"))
    reply, snaps = home_read(loop, order)
    assert reply["ok"] and reply["done"] == 2 and set(snaps) == {"openrouter", "deepseek"}
    assert snaps["deepseek"]["available"] and snaps["deepseek"]["error"] is None
    failed = snaps["openrouter"]
    assert failed["error"]["code"] == "bad_response" and LEAK not in json.dumps(failed)
    err = capfd.readouterr().err
    assert "openrouter adapter raised ProviderBug" in err and LEAK not in err


def jwt(account: str) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part({'sub': account, 'https://api.openai.com/auth': {'chatgpt_account_id': account}})}.sig"


def test_no_thread_for_the_accounts_probes_them_all_on_the_requests_own(tmp_path, emulator_env, monkeypatch, loop):
    """"can't start new thread" for a provider's accounts: every account is still probed,
    once, within the request -- not a failed request."""
    tokens = [jwt(f"ws-{n}") for n in range(4)]
    home = tmp_path / "codex"
    home.mkdir()
    (home / ".env").write_text("")
    (home / "auth.json").write_text(json.dumps({"credential_pool": {"openai-codex": [
        {"id": f"row{n}", "label": f"row {n}", "source": "manual", "access_token": token}
        for n, token in enumerate(tokens)]}}))
    start = threading.Thread.start

    def refused(thread: threading.Thread) -> None:
        if thread.name.startswith("probe-accounts"):
            raise RuntimeError("can't start new thread")
        start(thread)

    import workers.accounts

    monkeypatch.setattr(workers.accounts, "_threads", None)   # a worker whose account threads are not up yet
    monkeypatch.setattr(threading.Thread, "start", refused)
    loop.home = str(home)
    reply, _ = loop.handle(json.dumps({"id": 2, "op": "probe", "provider": "openai-codex", "timeout_s": 20}).encode())
    accounts = reply["snapshot"]["accounts"]
    assert [a["status"] for a in accounts] == ["available"] * 4
    assert [emulator_env.count(token=token) for token in tokens] == [1, 1, 1, 1]


def test_a_warm_worker_starts_its_account_threads_once(tmp_path, emulator_env, loop):
    """The account threads are the worker's, kept across requests: a pool made per request
    started its threads anew for every read (~1 ms a thread under the GIL, most of a warm
    5-account read's cost)."""
    tokens = [jwt(f"kept-{n}") for n in range(5)]
    home = tmp_path / "codex-threads"
    home.mkdir()
    (home / "auth.json").write_text(json.dumps({"credential_pool": {"openai-codex": [
        {"id": f"t{n}", "label": f"row {n}", "source": "manual", "access_token": token}
        for n, token in enumerate(tokens)]}}))
    loop.home = str(home)
    request = json.dumps({"id": 3, "op": "probe", "provider": "openai-codex", "timeout_s": 20}).encode()

    def account_threads() -> set[int | None]:
        return {t.ident for t in threading.enumerate() if t.name.startswith("probe-accounts")}

    loop.handle(request)
    before = account_threads()
    for _ in range(3):
        reply, _ = loop.handle(request)
        assert [a["status"] for a in reply["snapshot"]["accounts"]] == ["available"] * 5
    assert before and account_threads() == before
