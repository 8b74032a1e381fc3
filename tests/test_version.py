"""One version, declared in pyproject.toml and read at run time: ``probe --version``, the
built-in rows of ``probe providers``, ``/healthz`` and the panel's ``/api/homes`` (its
footer) all say the same thing, so a release can never show two numbers."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import httpx

from probe import ProbeConfig, ProbeService
from probe.server import create_app
from support import RunningApp, run_cli
from workers.version import quota_probe_version

ROOT = Path(__file__).resolve().parent.parent


def declared() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_the_declared_version_is_0_4_0_and_what_the_package_reports():
    assert declared() == "0.4.0"
    assert quota_probe_version() == declared()


def test_probe_version_prints_it():
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"probe (quota-probe) {declared()}"


def test_providers_built_in_rows_carry_it():
    result = run_cli("providers", "--json")
    assert result.returncode == 0, result.stderr
    built_in = [row for row in json.loads(result.stdout) if row["origin"] == "built-in"]
    assert built_in and {row["version"] for row in built_in} == {declared()}


def test_healthz_and_the_panel_footer_carry_it(make_home):
    with ProbeService(ProbeConfig()) as service, \
            RunningApp(create_app(service, {"main": make_home("v")}, "token-0123456789")) as running:
        assert httpx.get(running.url + "/healthz").json() == {"ok": True, "version": declared()}
        assert httpx.get(running.url + "/api/homes").json()["version"] == declared()
        page = httpx.get(running.url + "/").text
    assert 'id="version"' in page   # the footer app.js fills from /api/homes
