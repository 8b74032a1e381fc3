"""``import probe``'s module functions take what ``ProbeService``'s do (README "Python
API"): ``probe.fetch_home(on_snapshot=, providers=)`` through the default service."""
from __future__ import annotations

import pytest

import probe
from probe.tools.demo import write_home

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def default_service():
    yield
    if probe._default_service is not None:
        probe._default_service.close()
        probe._default_service = None


def test_module_fetch_home_shows_each_answer_as_it_is_due_and_reads_part_of_the_list(
        emulator_env, tmp_path, default_service):
    home = write_home(tmp_path, "module", deepseek="sk-module-ds", openrouter="sk-or-module")
    shown: list[probe.Snapshot] = []
    snaps = probe.fetch_home(home=home, on_snapshot=shown.append)
    assert [s.provider for s in snaps] == ["openrouter", "deepseek"] and all(s.available for s in snaps)
    assert shown == snaps
    assert [s.provider for s in probe.fetch_home(home=home, providers=["deepseek"])] == ["deepseek"]
