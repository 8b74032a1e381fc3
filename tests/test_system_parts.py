"""A machine without the optional system programs still gets a green run: a test that needs
a missing or broken redis-server is skipped with the reason (never hangs, never errors), and
the run's last line names each skipped group and how to enable it. Each case runs a real
pytest in a subprocess against a small test file, as a contributor's ``make test`` would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
NEEDS_REDIS = '''
from support import RedisServer

def test_needs_redis(tmp_path):
    with RedisServer(tmp_path) as server:
        assert server.client().ping()
'''


def run_pytest(tmp_path: Path, source: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_it.py").write_text(source)
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    base = {k: v for k, v in os.environ.items() if k not in ("PROBE_TEST_REQUIRE_ALL", "PROBE_TEST_REDIS_SERVER")}
    return subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "-o", "addopts=",
                           str(tmp_path / "test_it.py")], capture_output=True, text=True, timeout=50,
                          cwd=tmp_path, env={**base, "PYTHONPATH": str(TESTS), **env})


def fake_server(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-redis-server"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def test_a_redis_server_setting_that_is_not_executable_skips_with_that_reason(tmp_path):
    not_executable = tmp_path / "redis-server"
    not_executable.write_text("")
    result = run_pytest(tmp_path, NEEDS_REDIS, PROBE_TEST_REDIS_SERVER=str(not_executable))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("skipped: 1 redis test (")
    assert f"PROBE_TEST_REDIS_SERVER={not_executable} is not an executable file" in last
    assert "apt-get install redis-server" in last


def test_a_redis_server_that_exits_at_once_skips_with_what_it_said(tmp_path):
    server = fake_server(tmp_path, 'case "$1" in --version) echo "Redis server v=7.0.15 sha=0";;\n'
                                   '*) echo "FATAL: cannot start here" >&2; exit 3;; esac\n')
    result = run_pytest(tmp_path, NEEDS_REDIS, PROBE_TEST_REDIS_SERVER=str(server))
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert "exited at once (status 3: FATAL: cannot start here)" in last, last


def test_a_program_that_is_no_redis_server_skips(tmp_path):
    server = fake_server(tmp_path, "echo hello\n")
    result = run_pytest(tmp_path, NEEDS_REDIS, PROBE_TEST_REDIS_SERVER=str(server))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "does not answer --version like a redis-server" in result.stdout.strip().splitlines()[-1]


def test_under_ci_a_missing_part_fails_instead_of_skipping(tmp_path):
    result = run_pytest(tmp_path, NEEDS_REDIS, PROBE_TEST_REDIS_SERVER=str(tmp_path / "absent"),
                        PROBE_TEST_REQUIRE_ALL="1")
    assert result.returncode == 1
    assert "PROBE_TEST_REQUIRE_ALL is set and redis:" in result.stdout


def test_a_run_without_skips_says_so_last(tmp_path):
    result = run_pytest(tmp_path, "def test_fine():\n    pass\n")
    assert result.returncode == 0
    assert result.stdout.strip().splitlines()[-1] == "skipped: none"


@pytest.mark.parametrize("reasons, line", [
    (["browser: no chromium — apt-get install chromium"] * 3,
     "skipped: 3 browser tests (no chromium — apt-get install chromium)"),
    (["redis-tls: no TLS — apt-get install redis-server", "only on macOS"],
     "skipped: 1 redis-tls test (no TLS — apt-get install redis-server); 1 test (only on macOS)"),
])
def test_the_skip_line_groups_reasons(reasons, line):
    from conftest import _skip_groups, _skip_line

    class Report:
        def __init__(self, reason: str) -> None:
            self.longrepr = ("file.py", 1, f"Skipped: {reason}")

    assert _skip_line(_skip_groups([Report(r) for r in reasons])) == line
