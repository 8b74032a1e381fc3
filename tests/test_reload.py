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
