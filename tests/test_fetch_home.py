"""SPEC §17: ``fetch_home`` reads every credentialed provider of a home in one worker
request (one process start for a cold home), with every per-(home, provider) rule intact."""
from __future__ import annotations

import threading

import pytest

from probe.snapshot import Snapshot

FOUR = dict(anthropic="sk-ant-oat-home-a", codex="codex-home-a", openrouter="sk-or-home-a", deepseek="sk-ds-home-a")


def test_a_cold_home_of_four_is_one_start_one_request(make_service, make_home, emulator):
    home = make_home("four", **FOUR)
    service = make_service(pool_size=2)
    snaps = service.fetch_home(home=home)
    assert [s.provider for s in snaps] == ["anthropic", "openai-codex", "openrouter", "deepseek"]
    assert all(s.error is None for s in snaps), [s.error for s in snaps]
    assert {s.probe.path for s in snaps} == {"slot_start"}
    assert len({s.probe.worker_pid for s in snaps}) == 1
    stats = service.stats()
    assert stats["spawns"] == 1
    again = service.fetch_home(home=home)
    assert {s.probe.path for s in again} == {"cache"}
