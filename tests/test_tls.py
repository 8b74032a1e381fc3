"""Probing over real HTTPS: the emulator behind TLS with a throw-away CA (``trustme``),
trusted by the workers through ``SSL_CERT_FILE`` -- for both ways a worker starts, since a
forked worker takes its TLS set-up from the template."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from probe import ProbeConfig, ProbeService
from probe.tools.emulator import Emulator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tls_emulator() -> Iterator[Emulator]:
    with Emulator(tls=True) as emulator:
        yield emulator


def test_a_warm_worker_keeps_one_tls_connection_across_probes(tls_emulator, make_home, monkeypatch, spawn_method):
    monkeypatch.setenv("SSL_CERT_FILE", tls_emulator.ca_file)
    home = make_home("tls", deepseek=f"sk-tls-{spawn_method}", openrouter=f"sk-or-tls-{spawn_method}")
    accepted = tls_emulator.connections_accepted
    with ProbeService(ProbeConfig(pool_size=1, provider_urls=tls_emulator.provider_urls())) as service:
        snaps = [service.fetch("deepseek", home=home, refresh=True) for _ in range(5)]
        assert all(s.available for s in snaps), snaps[0].error
        assert [s.probe.path for s in snaps] == ["slot_start"] + ["warm"] * 4
        assert len({s.probe.worker_pid for s in snaps}) == 1
        assert service.fetch("openrouter", home=home).available   # two requests, same host
    assert tls_emulator.connections_accepted == accepted + 1, "a warm worker reuses its TLS connection"
    assert tls_emulator.base_url.startswith("https://127.0.0.1:")


def test_an_untrusted_certificate_is_a_clear_provider_error(tls_emulator, make_home, monkeypatch, spawn_method):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    home = make_home("tls-untrusted", deepseek="sk-tls-untrusted")
    with ProbeService(ProbeConfig(provider_urls=tls_emulator.provider_urls())) as service:
        snap = service.fetch("deepseek", home=home)
    assert snap.error.code == "provider_error"
    assert "TLS certificate is not trusted" in snap.error.message
    assert not any(r.token == "sk-tls-untrusted" for r in tls_emulator.requests()), "no request got through"
