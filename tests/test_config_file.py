"""``probe serve``'s config file (probe/config_file.py, probe/cli.py ``serve_options``):
every serve option and the homes in TOML, the command line over it, and every mistake a
usage error (exit 2) naming the file and the key -- before anything is bound or started."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from probe import config_file
from probe.cli import _config_keys, serve, serve_options
from support import run_cli

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


def options_for(args: list[str], path: Path | None = None):
    ctx = serve.make_context("serve", list(args))
    with ctx:
        return serve_options(ctx, None if path is None else str(path))


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Config file"):]
    return re.search(r"```toml\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_shows_a_complete_file_that_parses(tmp_path, monkeypatch):
    """The README's example names every serve option and a [homes] table, and is a file
    ``probe serve`` accepts as it stands (its homes created under a throw-away $HOME)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    example = readme_example()
    for path in re.findall(r'^\w[\w-]* = "(~/[^"]+)"', example, re.MULTILINE):
        Path(path.replace("~", str(tmp_path), 1)).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(example)
    kinds = {key: kind for key, (_, kind) in _config_keys(serve).items()}
    loaded = config_file.load(path, kinds)
    assert set(loaded.options) == set(kinds), set(kinds) ^ set(loaded.options)
    assert loaded.homes and all(p.is_dir() for p in loaded.homes.values())
    options = options_for(["--config", str(path)], path)
    assert options.homes == loaded.homes


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "quota-probe.toml"
    path.write_text(text)
    return path


def test_values_from_the_file_and_the_command_line_winning(tmp_path, monkeypatch):
    home = tmp_path / "work"
    home.mkdir()
    path = write(tmp_path, f'port = 9100\ncache_ttl_s = 12\nrefresh-s = 60\nnotify = ["json://localhost:1/x"]\n'
                           f'alert-at = [70, 95]\nno-history = false\n[homes]\nwork = "{home}"\n')
    options = options_for([], path)
    assert (options.port, options.cache_ttl_s, options.refresh_s) == (9100, 12.0, 60.0)
    assert options.history.notify == ("json://localhost:1/x",) and options.history.thresholds == (70, 95)
    assert options.homes == {"work": home.resolve()}
    other = tmp_path / "other"
    other.mkdir()
    options = options_for(["--port", "9200", "--home", f"o={other}", "--alert-at", "50"], path)
    assert options.port == 9200 and options.homes == {"o": other.resolve()} and options.history.thresholds == (50,)
    assert options.cache_ttl_s == 12.0
    monkeypatch.setenv("PROBE_CACHE_DIR", str(tmp_path / "from-env"))
    path.write_text(path.read_text().replace("port = 9100\n", f'port = 9100\ncache-dir = "{tmp_path / "file"}"\n'))
    assert options_for([], path).cache_dir == str(tmp_path / "from-env")   # the environment stands for a flag


def test_the_xdg_default_file_is_read_when_present(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert options_for([]).port == 8765
    (tmp_path / "xdg" / "quota-probe").mkdir(parents=True)
    (tmp_path / "xdg" / "quota-probe" / "config.toml").write_text("port = 9300\n")
    assert options_for([]).port == 9300
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_file.default_path() == tmp_path / ".config" / "quota-probe" / "config.toml"


@pytest.mark.parametrize("text, names", [
    ("prot = 8000\n", ["'prot'", "unknown key"]),
    ('port = "8000"\n', ["'port'", "an integer", "a string"]),
    ("port = 70000\n", ["'port'", "70000"]),
    ("refresh-s = -1\n", ["'refresh-s'"]),
    ('notify = "json://x"\n', ["'notify'", "a list of strings"]),
    ("demo = 1\n", ["'demo'", "true or false"]),
    ('alert-at = "eighty"\n', ["'alert-at'"]),
    ("port = 8000\nport = 8001\n", ["not valid TOML"]),
    ("port = 8000\n[homes\n", ["not valid TOML"]),
    ("cache-ttl-s = 5\ncache_ttl_s = 6\n", ["'cache_ttl_s'", "twice"]),
    ('[homes]\na = "/nonexistent/qp"\n', ["'a'", "not a directory"]),
    ('[homes]\na = 3\n', ["homes.a", "path string"]),
    ('homes = ["/tmp"]\n', ["[homes]", "table"]),
])
def test_a_bad_file_is_a_usage_error_naming_the_file_and_key(tmp_path, text, names):
    path = write(tmp_path, text)
    result = run_cli("serve", "--config", str(path), "--no-history")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert str(path) in result.stderr and "Traceback" not in result.stderr
    for name in names:
        assert name in result.stderr, (name, result.stderr)


def test_a_home_named_twice_is_refused(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    twice = write(tmp_path, f'[homes]\na = "{home}"\na = "{home}"\n')
    with pytest.raises(config_file.ConfigFileError, match="not valid TOML"):
        options_for([], twice)
    same_dir = write(tmp_path, f'[homes]\na = "{home}"\nb = "{home}/"\n')
    with pytest.raises(config_file.ConfigFileError, match="same directory"):
        options_for([], same_dir)


def test_a_missing_config_file_given_by_name_is_an_error(tmp_path):
    result = run_cli("serve", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and "absent.toml" in result.stderr and "cannot be read" in result.stderr


def test_every_serve_option_has_a_file_key():
    """A new ``serve`` option is a config key by construction (its long name); this
    guards the mapping's exceptions: ``--config`` and ``--home`` ([homes]) only."""
    keys = _config_keys(serve)
    options = {p.name for p in serve.params if isinstance(p, click.Option)}
    assert options - {name for name, _ in keys.values()} == {"config_path", "home_specs"}
    assert {"history", "redis", "no_history", "alert_at", "cache_ttl_s"} <= set(keys)
