"""No secret in any output: snapshots, stats, logs, child stderr, cache files, CLI output."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from probe import ProbeConfig, ProbeService

pytestmark = pytest.mark.timeout(90)

TOKENS = {
    "ok": "sk-ant-oat01-QWERTYUIOPASDFGHJKL-ok",
    "unauthorized": "sk-ant-oat01-ZXCVBNMPOIUYTREWQ-401-",
    "limited": "sk-ant-oat01-MNBVCXZLKJHGFDSAPO-429-",
    "broken": "sk-ant-oat01-PLMOKNIJBUHVYGCTFX-500-",
    "garbage": "sk-ant-oat01-RDXESZWAQPLOKIJUHY-garbage-",
    "hang": "sk-ant-oat01-TGBYHNUJMIKOLPQAZW-hang-",
    "apikey": "sk-ant-api03-WSXEDCRFVTGBYHNUJM",
    "openrouter": "sk-or-v1-EDCRFVTGBYHNUJMIKOLP",
}


def leaks(text: str) -> list[str]:
    """Every token, or any 20-character piece of one, found in ``text``."""
    found = []
    for token in TOKENS.values():
        if any(token[i:i + 20] in text for i in range(len(token) - 19)):
            found.append(token)
    return found


def test_no_secret_anywhere_in_a_full_run(emulator, make_home, tmp_path, caplog, capfd, monkeypatch):
    monkeypatch.setenv("PROBE_DEBUG", "1")          # child stderr reaches ours: check it too
    caplog.set_level(logging.DEBUG)
    homes = {name: make_home(f"s-{name}", anthropic=token) for name, token in TOKENS.items() if name != "openrouter"}
    homes["openrouter"] = make_home("s-openrouter", openrouter=TOKENS["openrouter"])
    bad_env = make_home("s-bad-env")
    (bad_env / ".env").write_text(f"ANTHROPIC_TOKEN {TOKENS['ok']}\n")
    bad_auth = make_home("s-bad-auth")
    (bad_auth / "auth.json").write_text('{"credential_pool": {"anthropic": [{"access_token": "' + TOKENS["ok"] + '"')
    cache_dir = tmp_path / "cache"
    outputs = []
    with ProbeService(ProbeConfig(cache_dir=cache_dir, provider_urls=emulator.provider_urls())) as service:
        for name, home in homes.items():
            provider = "openrouter" if name == "openrouter" else "anthropic"
            for refresh in (False, True):
                outputs.append(service.fetch(provider, home=home, refresh=refresh, timeout=1.0).to_dict())
        for home in (bad_env, bad_auth):
            outputs.append(service.fetch("anthropic", home=home).to_dict())
        outputs.append(service.stats())
        service.invalidate(home=homes["ok"])
    assert {o["error"]["code"] for o in outputs if isinstance(o, dict) and o.get("error")} >= {
        "unauthorized", "rate_limited", "provider_error", "bad_response", "timeout", "no_credentials"}
    cli = subprocess.run([sys.executable, "-m", "probe.cli", "fetch", "anthropic", "--home", str(homes["unauthorized"])],
                         capture_output=True, text=True, env={**os.environ, **emulator.env()}, timeout=30)
    captured = capfd.readouterr()
    texts = [json.dumps(outputs), captured.out, captured.err, cli.stdout, cli.stderr,
             "\n".join(r.getMessage() for r in caplog.records)]
    texts += [p.read_text() for p in cache_dir.rglob("*") if p.is_file()]
    texts += [p.name for p in cache_dir.rglob("*")]
    for text in texts:
        assert leaks(text) == []


def test_every_request_carries_exactly_its_homes_credential(emulator, make_home):
    """Concurrent probes of six homes: the provider saw each home's token exactly as many
    times as that home's probes reached it, and no other token at all."""
    import threading
    from collections import Counter

    tokens = {f"iso{i}": f"sk-isolation-home-{i}-token" for i in range(6)}
    homes = {name: make_home(name, deepseek=token) for name, token in tokens.items()}
    probes: Counter[str] = Counter()
    lock = threading.Lock()
    before = {token: emulator.count(token=token) for token in tokens.values()}
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls(), pool_size=2)) as service:
        def poll(offset: int) -> None:
            for i in range(30):
                name = f"iso{(offset + i) % 6}"
                snap = service.fetch("deepseek", home=homes[name], refresh=True)
                if snap.probe.path not in ("cache", "coalesced"):
                    with lock:
                        probes[name] += 1

        threads = [threading.Thread(target=poll, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for name, token in tokens.items():
        assert emulator.count(token=token) - before[token] == probes[name], name
