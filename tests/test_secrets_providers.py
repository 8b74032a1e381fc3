"""No secret from any of the seven 0.3 provider names anywhere: distinctive credentials
planted in every new provider's places (.env and auth.json, the Nous login and pool), in
normal and error scenarios alike, then every output scanned -- snapshots, stats, child
stderr and logs, CLI stdout/stderr (fetch, doctor), the HTTP backend's answers
(``/api/quota``, ``/api/pool``, ``/metrics``, ``/api/history``, ``/api/alerts``), cache
files and the history database. Also: balances reach ``/metrics`` and history with their
currency (``points`` are not money)."""
from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import httpx
import pytest

from probe import ProbeConfig, ProbeService
from probe.monitor.history import History
from probe.monitor.readings import Reader
from probe.server import create_app
from support import RunningApp, run_cli

pytestmark = pytest.mark.timeout(120)
TOKEN = "secrets-providers-rotate-token"
NEW = ("zai", "kimi-coding", "kimi-coding-cn", "minimax", "minimax-cn", "copilot", "nous")
#: per provider, the scenario of its credential in home 0, 1, 2, 3 ("" = a normal answer):
#: every marker that provider answers in its own way, and the common ones, spread over them
SCENARIOS = {
    "zai": ("", "-401-", "-bodyerror-", "-bodydenied-"),
    "kimi-coding": ("", "-429-", "-bodydenied-", "-garbage-"),
    "kimi-coding-cn": ("", "-bodyerror-", "-500-", "-401-"),
    "minimax": ("", "-legacy-", "-bodydenied-", "-429-"),
    "minimax-cn": ("", "-bodyerror-", "-garbage-", "-hang-"),
    "copilot": ("", "-free-", "-401-", "-500-"),
    "nous": ("", "-nocredits-", "-bodyerror-", "-429-"),
}
ENV_NAMES = {"zai": "ZAI_API_KEY", "kimi-coding": "KIMI_CODING_API_KEY", "kimi-coding-cn": "KIMI_CN_API_KEY",
             "minimax": "MINIMAX_CODING_API_KEY", "minimax-cn": "MINIMAX_CN_API_KEY", "copilot": "GITHUB_TOKEN"}
_serial = itertools.count()
#: every secret planted, by its distinctive core (which must never appear in any output)
PLANTED: dict[str, str] = {}


def secret(provider: str, marker: str, *, kimi_code: bool = False) -> str:
    core = f"QZX{next(_serial):04d}V{provider.replace('-', '').upper()[:6]}"
    prefix = "sk-kimi-" if kimi_code else "github_pat_" if provider == "copilot" else "tk-"
    token = f"{prefix}{core}{marker}w"
    PLANTED[core] = token
    return token


def write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def plant_homes(root: Path) -> dict[str, Path]:
    """Four homes with a credential for every new provider, each in the scenario SCENARIOS
    gives it there: homes 0 and 2 keep them in .env (and the Nous login in
    providers.nous, with a refresh token), homes 1 and 3 in auth.json's credential_pool --
    so each place meets normal and failing answers; Kimi keys of both kinds. Plus a home
    with an expired Nous login and only classic GitHub tokens."""
    homes: dict[str, Path] = {}
    for index in range(4):
        in_pool = index % 2 == 1
        home = root / f"{'pool' if in_pool else 'env'}-{index}"
        home.mkdir(parents=True)
        tokens = {p: secret(p, SCENARIOS[p][index], kimi_code=p == "kimi-coding" and index < 2) for p in NEW}
        if in_pool:
            pool = {p: [{"label": f"{p} key", "access_token": token,
                         **({"auth_type": "oauth_device", "expires_at": "2099-01-01T00:00:00Z"} if p == "nous"
                            else {})}] for p, token in tokens.items()}
            write(home / "auth.json", json.dumps({"credential_pool": pool}))
        else:
            write(home / ".env", "".join(f"{ENV_NAMES[p]}={tokens[p]}\n" for p in NEW if p != "nous"))
            write(home / "auth.json", json.dumps({"providers": {"nous": {
                "access_token": tokens["nous"], "expires_at": "2099-01-01T00:00:00Z",
                "refresh_token": secret("nous", "-refresh")}}}))
        homes[home.name] = home
    odd = root / "odd"
    odd.mkdir()
    write(odd / ".env", f"COPILOT_GITHUB_TOKEN=ghp_{secret('copilot', '')}\nGH_TOKEN=ghp_{secret('copilot', '-401-')}\n")
    write(odd / "auth.json", json.dumps({"providers": {"nous": {
        "access_token": secret("nous", ""), "expires_at": "2020-01-01T00:00:00Z"}}}))
    homes["odd"] = odd
    return homes


def leaks(text: str) -> list[str]:
    """Every planted secret whose core, or any 20-character piece, is in ``text``."""
    found = []
    for core, token in PLANTED.items():
        if core in text or any(token[i:i + 20] in text for i in range(len(token) - 19)):
            found.append(token)
    return found


def test_no_new_provider_secret_in_any_output(emulator, tmp_path, caplog, capfd, monkeypatch):
    monkeypatch.setenv("PROBE_DEBUG", "1")          # child stderr reaches ours: check it too
    caplog.set_level(logging.DEBUG)
    homes = plant_homes(tmp_path / "homes")
    cache_dir, history_path = tmp_path / "cache", tmp_path / "history.sqlite3"
    outputs: list[str] = []
    codes: set[str] = set()
    history = History(history_path)
    assert history.start()
    config = ProbeConfig(cache_dir=cache_dir, provider_urls=emulator.provider_urls(), probe_timeout_s=1.5)
    with ProbeService(config) as service:
        ids = {name: path for name, path in homes.items()}
        reader = Reader(service, ids, history=history)
        with RunningApp(create_app(service, ids, TOKEN, reader=reader, history=history)) as running, \
                httpx.Client(base_url=running.url, timeout=30) as client:
            for home_id in ids:                      # every provider of every home, side by side
                answer = client.get("/api/quota", params={"home": home_id})
                outputs.append(answer.text)
                codes |= {s["error"]["code"] for s in answer.json() if s["error"]}
            for provider in NEW:                     # one at a time too, refreshed
                answer = client.get("/api/quota", params={"home": "pool-1", "provider": provider, "refresh": "1"})
                outputs.append(answer.text)
                outputs.append(client.get("/api/history", params={"home": "env-0", "provider": provider}).text)
            assert history.flush()
            outputs += [client.get(path).text for path in ("/api/pool", "/metrics", "/api/alerts", "/api/homes")]
        outputs.append(json.dumps(service.stats()))
        for provider in NEW:                         # the in-process API: snapshots as dicts
            outputs.append(json.dumps(service.fetch(provider, home=homes["env-2"]).to_dict()))
        service.invalidate(home=homes["env-0"])
    history.close()
    assert codes >= {"unauthorized", "rate_limited", "provider_error", "bad_response", "timeout", "token_expired"}
    env = emulator.env()
    for args in (("fetch", "--home", str(homes["env-0"])), ("fetch", "--home", str(homes["pool-1"]), "--json"),
                 ("doctor", "--home", str(homes["env-2"]), "--probe"), ("doctor", "--home", str(homes["odd"]))):
        result = run_cli(*args, env=env)
        outputs += [result.stdout, result.stderr]
    captured = capfd.readouterr()
    outputs += [captured.out, captured.err, "\n".join(r.getMessage() for r in caplog.records)]
    outputs += [p.read_text(errors="replace") for p in cache_dir.rglob("*") if p.is_file()]
    outputs += [p.name for p in cache_dir.rglob("*")]
    outputs += [p.read_bytes().decode("latin-1") for p in tmp_path.glob("history.sqlite3*")]
    assert len(PLANTED) > 30
    for text in outputs:
        assert leaks(text) == []


def test_balances_reach_metrics_and_history_with_their_currency(emulator, make_home, tmp_path):
    """USD (Nous, Moonshot), CNY (Moonshot China) and the non-money unit ``points``
    (MiniMax): one gauge per balance labelled with its currency, one history series each."""
    home = make_home("balances", kimi="moonshot-balances", kimi_cn="moonshot-cn-balances", minimax="mm-balances",
                     nous="nous-balances")
    history = History(tmp_path / "history.sqlite3")
    assert history.start()
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        reader = Reader(service, {"b": home}, history=history)
        with RunningApp(create_app(service, {"b": home}, TOKEN, reader=reader, history=history)) as running, \
                httpx.Client(base_url=running.url, timeout=30) as client:
            listing = client.get("/api/quota", params={"home": "b"}).json()
            assert [s["provider"] for s in listing] == ["kimi-coding", "kimi-coding-cn", "minimax", "nous"]
            metrics = client.get("/metrics").text
            assert history.flush()
            bodies = {p: client.get("/api/history", params={"home": "b", "provider": p}).json()
                      for p in ("kimi-coding-cn", "minimax", "nous")}
    history.close()
    gauges = [line for line in metrics.splitlines() if line.startswith("quota_probe_balance{")]
    by_provider = {s["provider"]: s for s in listing}
    for provider, snap in by_provider.items():
        for balance in snap["balances"]:
            line = next((g for g in gauges if f'provider="{provider}"' in g and f'label="{balance["label"]}"' in g), None)
            assert line is not None, (provider, balance)
            assert f'currency="{balance["currency"]}"' in line and float(line.rsplit(" ", 1)[1]) == balance["amount"]
    assert {b["currency"] for b in by_provider["kimi-coding"]["balances"]} == {"USD"}
    assert {b["currency"] for b in by_provider["kimi-coding-cn"]["balances"]} == {"CNY"}
    assert by_provider["minimax"]["balances"][0]["currency"] == "points"
    assert [(b["label"], b["currency"], len(b["points"])) for b in bodies["minimax"]["balances"]] == \
        [("Points", "points", 1)]
    assert {b["currency"] for b in bodies["kimi-coding-cn"]["balances"]} == {"CNY"}
    assert {b["label"] for b in bodies["nous"]["balances"]} >= {"Top-up credits", "Total usable"}
    assert bodies["minimax"]["balances"][0]["points"][0]["amount"] == by_provider["minimax"]["balances"][0]["amount"]
    text = run_cli("history", "--home", str(home), "--provider", "minimax", "--history", str(history.path)).stdout
    points = by_provider["minimax"]["balances"][0]["amount"]
    assert "Points (points)" in text and f"now {points:,.0f}  (1 points)" in text     # a count, no cents
