"""deploy/quota-probe.service: the systemd user unit README's install steps copy. It must
verify clean with systemd's own checker where systemd is installed, and keep the settings
the rest of the service relies on (reload is SIGHUP, stop is SIGTERM to the backend alone,
state and cache writable under a read-only system and home)."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)
UNIT = Path(__file__).resolve().parent.parent / "deploy" / "quota-probe.service"


def service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return dict(parser["Service"])


def test_the_unit_keeps_what_the_service_relies_on():
    service = service_section()
    assert service["ExecStart"].split()[:2] == ["%h/.local/bin/probe", "serve"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed"          # SIGTERM to the backend; it stops its workers itself
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "read-only"   # profiles are read, never written
    assert service["StateDirectory"] == "quota-probe" and service["CacheDirectory"] == "quota-probe"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (no systemd here)")
def test_systemd_analyze_verify_is_clean(tmp_path):
    """``%h/.local/bin/probe`` must exist for the checker: a home whose ``.local/bin``
    holds this environment's ``probe``, as ``pipx install`` would leave it."""
    probe = Path(sys.executable).parent / "probe"
    assert probe.exists(), "the probe console script of this environment"
    (tmp_path / ".local" / "bin").mkdir(parents=True)
    (tmp_path / ".local" / "bin" / "probe").symlink_to(probe)
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=30,
                            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
