"""The reload itself (probe/server/reload.py), in-process: what a new configuration changes
on a running service and what it leaves alone."""
from __future__ import annotations

import dataclasses
import logging

import pytest

from probe import ProbeConfig, ProbeService
from probe.home_set import HomeSet, ServedHomes
from probe.monitor.readings import Reader
from probe.monitor.refresher import Refresher
from probe.server.reload import HomeWatcher
from probe.server.run import HistoryOptions, ServeOptions
from support import worker_pids

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def running(emulator, make_home):
    homes = {name: make_home(name, deepseek=f"sk-reload-{name}").resolve() for name in ("a", "b")}
    options = ServeOptions(homes=homes, refresh_s=0, history=HistoryOptions(enabled=False))
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        served = ServedHomes(homes)
        reader = Reader(service, served)
        yield options, service, served, reader, homes


def test_options_a_running_service_takes_and_the_ones_that_need_a_restart(running, caplog, emulator):
    options, service, served, reader, homes = running
    for home in homes.values():
        assert service.fetch("deepseek", home=home).available
    pids = {name: worker_pids(service, home) for name, home in homes.items()}
    new = dataclasses.replace(options, cache_ttl_s=7.0, poll_s=5.0, port=9999)
    watcher = HomeWatcher(options, HomeSet(options.homes), served, service, reader, None, reread=lambda: new)
    with caplog.at_level(logging.WARNING, logger="quota_probe.reload"):
        watcher.reload()
    assert service.config.cache_ttl_s == 7.0
    restart = [r.getMessage() for r in caplog.records if "restarts" in r.getMessage()]
    assert len(restart) == 1 and "port" in restart[0] and "poll-s" in restart[0]
    assert {name: worker_pids(service, home) for name, home in homes.items()} == pids
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="quota_probe.reload"):
        watcher.reload()                        # the same file again: nothing at all changes
    assert not any("restarts" in r.getMessage() or "homes changed" in r.getMessage() for r in caplog.records)
    assert {name: worker_pids(service, home) for name, home in homes.items()} == pids
    new = dataclasses.replace(new, cache_ttl_s=None)   # the key taken out of the file: the default again
    watcher.reload()
    assert service.config.cache_ttl_s == ProbeConfig().cache_ttl_s
    assert service.config.provider_urls == emulator.provider_urls()   # what the reload does not set stays


def test_a_home_added_joins_the_refresher_and_a_removed_one_leaves_it(running, make_home):
    options, service, served, reader, homes = running
    refresher = Refresher(reader, 60.0, seed=1)
    refresher.start()
    try:
        c = make_home("c", deepseek="sk-reload-c").resolve()
        assert service.fetch("deepseek", home=homes["a"]).available
        a_pids = worker_pids(service, homes["a"])
        new = dataclasses.replace(options, homes={"b": homes["b"], "c": c})
        watcher = HomeWatcher(options, HomeSet(options.homes), served, service, reader, refresher, reread=lambda: new)
        watcher.reload()
        assert list(served) == ["b", "c"]
        assert "c" in refresher._scheduled
        assert a_pids and worker_pids(service, homes["a"]) == set()    # the removed home's worker closed
    finally:
        refresher.stop()
        refresher.join()


def test_a_reload_that_fails_keeps_everything(running, caplog):
    options, service, served, reader, homes = running

    def broken() -> ServeOptions:
        raise ValueError("/etc/quota-probe.toml: not valid TOML (Expected '=' at line 2)")

    watcher = HomeWatcher(options, HomeSet(options.homes), served, service, reader, None, reread=broken)
    before = (dict(served), service.config)
    with caplog.at_level(logging.ERROR, logger="quota_probe.reload"):
        watcher.reload()
    assert (dict(served), service.config, watcher.options) == (*before, options)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "not valid TOML" in errors[0] and "stays" in errors[0]


def test_a_home_removed_while_its_requests_are_in_flight_answers_them_and_leaves_no_pool(running, make_home,
                                                                                           emulator):
    """A request for a home that a reload (or a profile scan) removes while the request is
    in flight answers 200 with its snapshot -- it used to look the id up again afterwards
    and answer 500 (KeyError) -- one of a single provider and a home read alike; a new
    request for the id gets the unknown-home 404; and the removed homes' pools leave the
    registry (one empty pool per profile ever served used to stay)."""
    import threading

    import httpx

    from probe.server import create_app
    from support import RunningApp

    options, service, served, reader, _ = running
    tokens = {name: f"sk-inflight-{name}" for name in ("a", "b", "c")}    # counted by this test alone
    homes = {name: make_home(f"inflight-{name}", deepseek=token).resolve() for name, token in tokens.items()}
    c = homes["c"]
    served.replace(homes)
    watcher = HomeWatcher(options, HomeSet(options.homes), served, service, reader, None)
    gates = [emulator.hold(tokens["a"]), emulator.hold(tokens["b"])]
    answers: dict[str, httpx.Response] = {}
    try:
        with RunningApp(create_app(service, served, "t" * 32, reader=reader)) as app:
            def get(name: str, **params: str) -> None:
                with httpx.Client(base_url=app.url, timeout=30) as client:
                    answers[name] = client.get("/api/quota", params=params)

            threads = [threading.Thread(target=get, args=("one",), kwargs={"home": "a", "provider": "deepseek"}),
                       threading.Thread(target=get, args=("all",), kwargs={"home": "b"})]
            for thread in threads:
                thread.start()
            assert emulator.wait_for(1, token=tokens["a"]) and emulator.wait_for(1, token=tokens["b"])
            watcher.apply_homes({"c": c})           # both homes go while their probes are held
            for gate in gates:
                gate.set()
            for thread in threads:
                thread.join(30)
            assert answers["one"].status_code == 200, answers["one"].text
            assert answers["one"].json()["home"] == "a" and answers["one"].json()["available"]
            assert answers["all"].status_code == 200, answers["all"].text
            assert [(s["home"], s["provider"], s["available"]) for s in answers["all"].json()] == \
                [("b", "deepseek", True)]
            with httpx.Client(base_url=app.url, timeout=30) as client:
                again = client.get("/api/quota", params={"home": "a", "provider": "deepseek"})
                assert again.status_code == 404 and again.json()["error"]["code"] == "home_not_found"
                assert client.get("/api/quota", params={"home": "c", "provider": "deepseek"}).json()["available"]
        assert set(service.stats()["homes"]) == {str(c)}     # no pool of a removed home stays
        assert reader.latest("a", "deepseek") is None and reader.latest("b", "deepseek") is None
    finally:
        for gate in gates:
            gate.set()
