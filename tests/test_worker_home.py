"""The worker's ``probe_home`` request over real pipes (SPEC §17): several providers of
the home in one request, probed side by side, one ``partial`` line each as they finish."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from probe.tools.demo import write_home
from probe.env import child_env

pytestmark = pytest.mark.timeout(30)


def start(home, emulator=None) -> subprocess.Popen:
    urls = emulator.provider_urls() if emulator is not None else None
    return subprocess.Popen([sys.executable, "-P", "-m", "workers"], env=child_env(home, urls),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def send(proc: subprocess.Popen, request: dict) -> None:
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.flush()


def read(proc: subprocess.Popen) -> dict:
    reply = json.loads(proc.stdout.readline())
    reply.pop("ready_at", None)
    return reply


def stop(proc: subprocess.Popen) -> bytes:
    proc.stdin.close()
    assert proc.wait(10) == 0
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return err


@pytest.mark.parametrize("providers", [None, "anthropic", [], ["anthropic", "anthropic"], ["anthropic", 7],
                                       [f"name-{i}" for i in range(1025)]])
def test_a_malformed_probe_home_is_bad_request_and_the_loop_goes_on(tmp_path, providers):
    proc = start(tmp_path)
    try:
        send(proc, {"id": "h", "op": "probe_home", "providers": providers})
        reply = read(proc)
        assert reply["id"] == "h" and reply["ok"] is False and reply["error"]["code"] == "bad_request"
        send(proc, {"id": "after", "op": "ping"})
        assert read(proc)["ok"] is True
    finally:
        assert stop(proc) == b""


def test_each_provider_is_a_partial_line_then_done(tmp_path):
    proc = start(tmp_path / "gone")
    try:
        send(proc, {"id": 9, "op": "probe_home", "providers": ["anthropic", "deepseek", "zai"]})
        lines = [read(proc) for _ in range(4)]
        partial, done = lines[:3], lines[3]
        assert all(line["id"] == 9 and line["ok"] is True and line["partial"] is True for line in partial)
        assert sorted(line["snapshot"]["provider"] for line in partial) == ["anthropic", "deepseek", "zai"]
        assert {line["snapshot"]["error"]["code"] for line in partial} == {"home_not_found"}
        assert done == {"id": 9, "ok": True, "done": 3}
    finally:
        assert stop(proc) == b""


def test_providers_are_probed_side_by_side_and_answered_as_they_finish(tmp_path, emulator):
    """Anthropic is held at the emulator: DeepSeek's line comes while Anthropic is still
    unanswered (probed one after the other, in the request's order, DeepSeek would not be
    asked until the gate opened)."""
    home = write_home(tmp_path, "side", anthropic="sk-ant-oat-side", deepseek="sk-ds-side")
    gate = emulator.hold("sk-ant-oat-side")
    proc = start(home, emulator)
    try:
        send(proc, {"id": "s", "op": "probe_home", "providers": ["anthropic", "deepseek"], "timeout_s": 20})
        first = read(proc)
        assert first["snapshot"]["provider"] == "deepseek" and first["snapshot"]["available"] is True
        assert emulator.wait_for(token="sk-ant-oat-side")   # asked too, and held till the gate opens
        gate.set()
        second = read(proc)
        assert second["snapshot"]["provider"] == "anthropic" and second["snapshot"]["available"] is True
        assert read(proc) == {"id": "s", "ok": True, "done": 2}
    finally:
        gate.set()
        assert stop(proc) == b""


def test_an_unknown_name_in_a_home_read_is_its_own_typed_answer(tmp_path, emulator):
    home = write_home(tmp_path, "mixed", deepseek="sk-ds-mixed")
    proc = start(home, emulator)
    try:
        send(proc, {"id": "m", "op": "probe_home", "providers": ["deepseek", "no-such-thing"]})
        lines = {line["snapshot"]["provider"]: line["snapshot"] for line in (read(proc), read(proc))}
        assert lines["deepseek"]["available"] is True
        assert lines["no-such-thing"]["error"]["code"] == "unknown_provider"
        assert read(proc)["done"] == 2
    finally:
        assert stop(proc) == b""
