"""SPEC §17: ``fetch_home`` reads every credentialed provider of a home in one worker
request (one process start for a cold home), each provider probed side by side inside the
worker, with every per-(home, provider) rule of a single fetch intact."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import threading
from collections.abc import Iterator

from support import settled, wait_until, worker_pids

ORDER = ["anthropic", "openai-codex", "openrouter", "deepseek"]


def four(tag: str, **changes: str) -> dict[str, str]:
    tokens = dict(anthropic=f"sk-ant-oat-{tag}", codex=f"codex-{tag}", openrouter=f"sk-or-{tag}",
                  deepseek=f"sk-ds-{tag}")
    tokens.update(changes)
    return tokens


def test_a_cold_home_of_four_is_one_start_and_one_request_per_provider(make_service, make_home, emulator):
    home = settled(make_home("four", **four("a")))
    service = make_service(pool_size=2)
    snaps = service.fetch_home(home=home)
    assert [s.provider for s in snaps] == ORDER
    assert all(s.available and s.error is None for s in snaps), [s.error for s in snaps]
    assert {s.probe.path for s in snaps} == {"slot_start"}
    assert len({s.probe.worker_pid for s in snaps}) == 1
    stats = service.stats()
    assert stats["spawns"] == 1 and stats["home_reads"] == 1 and stats["provider_lists"] == 1
    assert [emulator.count(token=t) for t in four("a").values()] == [1, 1, 2, 1]  # OpenRouter: /key + /credits
    again = service.fetch_home(home=home)
    assert {s.probe.path for s in again} == {"cache"}
    assert service.stats()["home_reads"] == 1 and service.stats()["provider_lists"] == 1


def test_a_home_without_credentials_is_empty_and_a_missing_home_is_one_snapshot(make_service, make_home, tmp_path):
    service = make_service(pool_size=1)
    assert service.fetch_home(home=make_home("empty")) == []
    missing = service.fetch_home(home=tmp_path / "nowhere")
    assert len(missing) == 1
    assert missing[0].provider is None and missing[0].error.code == "home_not_found"
    assert service.stats()["spawns"] == 1   # the empty home's list; nothing for the missing one


def test_a_cached_provider_is_not_probed_again_and_the_rest_are(make_service, make_home, emulator):
    home = make_home("cached", **four("c"))
    service = make_service(pool_size=1)
    assert service.fetch("anthropic", home=home).available
    snaps = service.fetch_home(home=home)
    assert [(s.provider, s.probe.path) for s in snaps] == [
        ("anthropic", "cache"), ("openai-codex", "warm"), ("openrouter", "warm"), ("deepseek", "warm")]
    assert emulator.count(token="sk-ant-oat-c") == 1


def test_a_provider_in_back_off_is_answered_from_it_even_with_refresh(make_service, make_home, emulator):
    home = make_home("limited", **four("l", deepseek="sk-ds-l-429-"))
    service = make_service(pool_size=1)
    first = {s.provider: s for s in service.fetch_home(home=home)}
    assert first["deepseek"].error.code == "rate_limited"
    second = {s.provider: s for s in service.fetch_home(home=home, refresh=True)}
    assert second["deepseek"].error.code == "rate_limited" and second["deepseek"].probe.path == "cache"
    assert second["anthropic"].available and second["anthropic"].probe.path == "warm"
    assert emulator.count(token="sk-ds-l-429-") == 1


def test_a_hung_provider_is_timeout_at_the_deadline_while_the_others_answer(make_service, make_home, emulator):
    home = make_home("hung", **four("h", openrouter="sk-or-h-hang-"))
    service = make_service(pool_size=1)
    snaps = {s.provider: s for s in service.fetch_home(home=home, timeout=2)}
    assert snaps["openrouter"].error.code == "timeout"
    assert all(snaps[name].available for name in ("anthropic", "openai-codex", "deepseek"))
    assert max(snaps[n].probe.latency_ms for n in ("anthropic", "openai-codex", "deepseek")) \
        < snaps["openrouter"].probe.latency_ms
    # the worker answered the hung provider itself (its timeout is under the caller's): still warm
    assert service.fetch_home(home=home, timeout=2)[0].probe.path == "cache"
    assert service.fetch("deepseek", home=home, refresh=True).probe.path == "warm"


def test_a_fast_providers_answer_reaches_its_followers_before_a_slow_one_ends(make_service, make_home, emulator):
    """Answers are handed on line by line: a caller asking for DeepSeek while the home
    read's probe of it is out gets its answer while Anthropic is still held at the
    emulator (were the answers kept until the whole read ended, it would wait)."""
    home = make_home("lines", **four("f"))
    service = make_service(pool_size=1)
    with reading_while_held(emulator, service, home, "sk-ant-oat-f") as result:
        held = emulator.hold("sk-ds-f")   # its request may be out already: then it was answered
        follower: list = []
        joined = threading.Thread(target=lambda: follower.append(service.fetch("deepseek", home=home)))
        joined.start()
        held.set()
        joined.join(10)
        assert not joined.is_alive() and not result   # the follower is answered; anthropic still held
        # joined to the home read's probe, or (had it come a moment later) its stored answer
        assert follower[0].available and follower[0].probe.path in ("coalesced", "cache")
    assert [s.provider for s in result] == ORDER and all(s.available for s in result)
    assert emulator.count(token="sk-ds-f") == 1


@contextlib.contextmanager
def reading_while_held(emulator, service, home, token: str) -> Iterator[list]:
    """``service.fetch_home(home)`` in a thread while requests carrying ``token`` are held
    at the emulator; the body runs once the held request has arrived. Yields the list the
    read's snapshots land in: filled once the block ends (the request let go, the read
    joined)."""
    held = emulator.hold(token)
    snaps: list = []
    reader = threading.Thread(target=lambda: snaps.extend(service.fetch_home(home=home)))
    reader.start()
    try:
        assert emulator.wait_for(token=token)
        yield snaps
    finally:
        held.set()
        reader.join(10)
    assert not reader.is_alive()


def home_read_beside_a_single_fetch(emulator, single, reader, home, tag: str) -> dict:
    """``single`` fetches DeepSeek and is held at the emulator; meanwhile ``reader`` reads
    the whole home (its batch is out once Anthropic's request arrives); then DeepSeek is
    let go. The home read's snapshots by provider."""
    held = emulator.hold(f"sk-ds-{tag}")
    first = threading.Thread(target=lambda: single.fetch("deepseek", home=home))
    first.start()
    assert emulator.wait_for(token=f"sk-ds-{tag}")
    snaps: list = []
    home_read = threading.Thread(target=lambda: snaps.extend(reader.fetch_home(home=home)))
    home_read.start()
    assert emulator.wait_for(token=f"sk-ant-oat-{tag}")
    held.set()
    first.join(10)
    home_read.join(10)
    return {s.provider: s for s in snaps}


def test_a_home_read_joins_a_single_fetch_in_flight_instead_of_probing_twice(make_service, make_home, emulator):
    home = make_home("join", **four("j"))
    service = make_service(pool_size=2)
    by_name = home_read_beside_a_single_fetch(emulator, service, service, home, "j")
    assert by_name["deepseek"].probe.path == "coalesced" and by_name["deepseek"].available
    assert emulator.count(token="sk-ds-j") == 1


def test_a_result_that_lands_after_a_rotation_is_not_kept(make_service, make_home, emulator):
    """The rotation guard holds for each provider of a home read: a credential change
    while the read is in flight means its results are not cached for the new files."""
    home = make_home("rot", **four("r"))
    service = make_service(pool_size=1)
    with reading_while_held(emulator, service, home, "sk-ds-r"):
        service.invalidate(home=home)
    after = {s.provider: s for s in service.fetch_home(home=home)}
    assert all(s.probe.path in ("slot_start", "warm") for s in after.values()), after
    assert emulator.count(token="sk-ds-r") == 2


def test_a_credential_added_later_is_read_on_the_next_home_read(make_service, make_home, emulator):
    home = make_home("grow", anthropic="sk-ant-oat-g")
    service = make_service(pool_size=1)
    assert [s.provider for s in service.fetch_home(home=home)] == ["anthropic"]
    make_home("grow", anthropic="sk-ant-oat-g", deepseek="sk-ds-g")
    assert [s.provider for s in service.fetch_home(home=home)] == ["anthropic", "deepseek"]


def test_a_worker_killed_mid_read_is_worker_crashed_for_the_unanswered_and_the_pool_heals(
        make_service, make_home, emulator):
    home = make_home("crash", **four("k"))
    service = make_service(pool_size=1)
    with reading_while_held(emulator, service, home, "sk-ds-k") as snaps:
        assert wait_until(lambda: emulator.count(token="sk-ant-oat-k") and emulator.count(token="codex-k")
                          and emulator.count(token="sk-or-k") >= 2)
        os.kill(next(iter(worker_pids(service, home))), signal.SIGKILL)
    by_name = {s.provider: s for s in snaps}
    assert by_name["deepseek"].error.code == "worker_crashed"
    assert "sk-ds-k" not in json.dumps([s.to_dict() for s in snaps])
    healed = {s.provider: s for s in service.fetch_home(home=home)}
    assert healed["deepseek"].available and healed["deepseek"].probe.path == "slot_start"


def test_one_shot_workers_read_a_home_too(make_service, make_home, emulator):
    """``pool_size=0`` keeps every probe a one-shot: the list and the batch are two
    processes then (each answers one request), and the answers are the same."""
    home = make_home("once", **four("o"))
    service = make_service(pool_size=0)
    snaps = service.fetch_home(home=home)
    assert [s.provider for s in snaps] == ORDER and all(s.available for s in snaps)
    assert {s.probe.path for s in snaps} == {"cold"}
    assert service.stats()["spawns"] == 2


def test_afetch_home_from_an_event_loop(make_service, make_home, emulator):
    home = make_home("async", **four("as"))
    service = make_service(pool_size=1)

    async def main():
        return await asyncio.gather(service.afetch_home(home=home), service.afetch_home(home=home))

    first, second = asyncio.run(main())
    assert [s.provider for s in first] == [s.provider for s in second] == ORDER
    assert sum(emulator.count(token=t) for t in four("as").values()) == 5   # coalesced or cached: once each


def test_two_services_sharing_a_cache_dir_probe_each_account_once(make_service, make_home, emulator, tmp_path):
    home = make_home("shared", **four("s"))
    one = make_service(pool_size=1, cache_dir=str(tmp_path / "cache"))
    two = make_service(pool_size=1, cache_dir=str(tmp_path / "cache"))
    assert all(s.available for s in one.fetch_home(home=home))
    snaps = two.fetch_home(home=home)
    assert {s.probe.path for s in snaps} == {"cache"}
    assert two.stats()["spawns"] == 1   # its list only
    assert sum(emulator.count(token=t) for t in four("s").values()) == 5


def test_a_provider_another_process_is_probing_waits_for_its_result(make_service, make_home, emulator, tmp_path):
    """The shared probe lock holds inside a home read: a provider the other service is
    probing is not probed again -- the read waits for the lock and takes the stored
    answer -- while the rest go to the batch at once."""
    home = make_home("locked", **four("lk"))
    one = make_service(pool_size=1, cache_dir=str(tmp_path / "cache"))
    two = make_service(pool_size=1, cache_dir=str(tmp_path / "cache"))
    by_name = home_read_beside_a_single_fetch(emulator, one, two, home, "lk")
    assert by_name["deepseek"].available and by_name["deepseek"].probe.path == "cache"
    assert emulator.count(token="sk-ds-lk") == 1


def test_files_changed_during_a_read_give_the_next_read_the_new_list(make_service, make_home, emulator):
    home = make_home("midway", deepseek="sk-ds-midway")
    service = make_service(pool_size=1)
    with reading_while_held(emulator, service, home, "sk-ds-midway") as first:
        make_home("midway", deepseek="sk-ds-midway", anthropic="sk-ant-oat-midway")
    assert [s.provider for s in first] == ["deepseek"]   # the list it was asked with
    assert [s.provider for s in service.fetch_home(home=home)] == ["anthropic", "deepseek"]


def test_cancelling_afetch_home_leaves_the_worker_usable(make_service, make_home, emulator):
    """Cancellation is not swallowed and leaks nothing: the awaiting task gets
    CancelledError, the read in its thread finishes and releases the home's worker, and
    the next read uses that worker warm."""
    home = make_home("cancel", deepseek="sk-ds-cancel")
    service = make_service(pool_size=1)
    held = emulator.hold("sk-ds-cancel")

    async def main():
        task = asyncio.ensure_future(service.afetch_home(home=home))
        arrived = functools.partial(emulator.wait_for, token="sk-ds-cancel")
        assert await asyncio.get_running_loop().run_in_executor(None, arrived)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(main())
    held.set()
    assert wait_until(lambda: service.stats()["homes"][str(home.resolve())]["busy"] == 0)
    again = service.fetch_home(home=home, refresh=True)
    assert again[0].available and again[0].probe.path == "warm"
