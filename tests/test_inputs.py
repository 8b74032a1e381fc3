"""Arbitrary input never escapes as a crash: property tests for the worker protocol decoder
and every adapter's normalizer, and clear errors for hostile names."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workers.loop as loop_module
from probe import ProbeConfig, ProbeService, UnknownProviderError
from workers.providers import anthropic, deepseek, openai_codex, openrouter
from workers.result import ProbeFailure
from workers.validate import to_snapshot

pytestmark = pytest.mark.timeout(120)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=25), inner, max_size=6),
    max_leaves=30,
)
# bodies shaped like the real ones, with arbitrary values inside, reach deeper code paths
shaped = st.fixed_dictionaries({}, optional={
    "five_hour": json_values, "seven_day": json_values, "extra_usage": json_values,
    "plan_type": json_values, "rate_limit": json_values, "credits": json_values,
    "rate_limit_reset_credits": json_values, "data": json_values, "is_available": json_values,
    "balance_infos": json_values,
})


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_protocol_decoder_never_raises_anything_but_bad_request(line):
    try:
        request_id, request = loop_module._decode(line)
    except loop_module.BadRequest:
        return
    assert request["op"] in ("probe", "ping", "shutdown")


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, shaped))
def test_normalizers_yield_a_snapshot_or_a_typed_error(body):
    for module in (anthropic, openai_codex, deepseek):
        try:
            snap = to_snapshot(module.NAME, module.LABEL, module.normalize(body))
        except ProbeFailure as failure:
            assert failure.code == "bad_response"
            continue
        assert isinstance(snap["available"], bool)
        for window in snap["windows"]:
            assert window["used_percent"] is None or 0 <= window["used_percent"] <= 100
    try:
        openrouter.credits_line(body)
    except ProbeFailure as failure:
        assert failure.code == "bad_response"
    windows, details = openrouter.key_parts(body)
    assert isinstance(windows, list) and isinstance(details, list)


@pytest.mark.parametrize("provider", ["", "x" * 100_000, "anthropic\x00", "../anthropic", "anthropic\n",
                                      "$(rm -rf /)", "anthropic; ls", None, 42])
def test_hostile_provider_names_are_clear_errors(provider):
    with ProbeService(ProbeConfig(pool_size=0)) as service:
        with pytest.raises(ValueError) as info:
            service.fetch(provider)
    message = str(info.value)
    assert len(message) < 300 and "\x00" not in message
    if isinstance(provider, str) and provider:
        assert isinstance(info.value, UnknownProviderError)


@pytest.mark.parametrize("home", ["", "a\x00b", "x" * 5000, 42, b"/tmp"])
def test_hostile_home_values_are_clear_errors(home):
    with ProbeService(ProbeConfig(pool_size=0)) as service:
        with pytest.raises(ValueError):
            service.fetch("deepseek", home=home)


def test_home_with_shell_metacharacters_and_newlines_is_just_a_path(tmp_path, emulator):
    from probe.tools.demo import write_home

    home = write_home(tmp_path, "we$ird; `name`\nwith newline", deepseek="sk-weird")
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        assert service.fetch("deepseek", home=home).available
        missing = service.fetch("deepseek", home=tmp_path / "$(touch pwned)")
    assert missing.error.code == "home_not_found"
    assert not (tmp_path / "pwned").exists()
