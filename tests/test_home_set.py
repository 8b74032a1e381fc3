"""Which homes exist (probe/home_set.py), on roots laid out as Hermes lays them out: the
root and its profiles found by one directory scan, what Hermes' own rules refuse skipped
with one log line each, the profile Hermes itself would use for a one-shot command, and
``probe homes`` listing what ``probe serve`` would serve."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hermes_homes import build_hermes_root
from probe.home_set import (ActiveProfileMissing, HomeSet, HomeSetError, ServedHomes, active_home, discover,
                            fixed_homes, hermes_root, parse_home_specs)
from support import run_cli

pytestmark = pytest.mark.timeout(60)


def test_the_root_is_default_and_each_profile_directory_a_home_of_its_name(tmp_path):
    hermes = build_hermes_root(tmp_path)
    homes, skipped = discover(hermes.root)
    assert homes == {"default": hermes.root.resolve(), "scratch": hermes.home("scratch").resolve(),
                     "work": hermes.home("work").resolve()}
    assert skipped == []


def test_entries_hermes_refuses_are_skipped_with_one_log_line_each_and_once(tmp_path, caplog):
    """A file, a dangling symlink, a name the rule ``^[a-z0-9][a-z0-9_-]{0,63}$`` refuses, a
    directory named ``default`` -- each skipped with one line naming it, logged once however
    often the backend scans. A profile ``hermes profile delete`` tombstoned is simply gone;
    a symlink to a real profile directory is that profile."""
    hermes = build_hermes_root(tmp_path)
    profiles = hermes.root / "profiles"
    (profiles / "notes").write_text("a file, not a profile")
    (profiles / "dangling").symlink_to(tmp_path / "nowhere")
    for bad in ("Work", "-dash", "a" * 65, "has space", "default"):
        (profiles / bad).mkdir()
    (profiles / "deleting").mkdir()
    (profiles / ".deleted").mkdir()
    (profiles / ".deleted" / "deleting").write_text("deleted\n")
    elsewhere = tmp_path / "elsewhere-profile"
    elsewhere.mkdir()
    (profiles / "linked").symlink_to(elsewhere)
    home_set = HomeSet(root=hermes.root)
    with caplog.at_level(logging.WARNING, logger="quota_probe.homes"):
        first = home_set.scan()
        second = home_set.scan()
    assert first == second
    assert sorted(first) == ["default", "linked", "scratch", "work"]
    assert first["linked"] == elsewhere.resolve()
    lines = [r.getMessage() for r in caplog.records]
    skipped = {"notes", "dangling", "Work", "-dash", "a" * 65, "has space", "default"}
    assert len(lines) == len(skipped), lines
    for name in skipped:
        assert sum(f"profile {name!r} " in line for line in lines) == 1, name
    assert any("symbolic link to nothing" in line for line in lines)
    assert any("not a directory" in line for line in lines)
    assert not any("deleting" in line or ".deleted" in line for line in lines)


def test_an_unreadable_profile_directory_is_skipped_with_one_log_line():
    """Mode 000: a user who cannot read the directory cannot read its credentials either.
    Root reads everything, so as root the scan runs in a child that is ``nobody``."""
    base = Path(tempfile.mkdtemp(prefix="qp-unreadable-"))
    try:
        os.chmod(base, 0o755)
        root = base / "hermes"
        (root / "profiles" / "locked").mkdir(parents=True)
        (root / "profiles" / "open").mkdir()
        for directory in (root, root / "profiles", root / "profiles" / "open"):
            os.chmod(directory, 0o755)
        os.chmod(root / "profiles" / "locked", 0o000)
        # everything imported first: the interpreter's own files may not be readable by nobody
        code = ("import logging, os, sys; from pathlib import Path; from probe.home_set import HomeSet; "
                "logging.basicConfig(stream=sys.stderr, format='%(message)s'); "
                "os.geteuid() == 0 and (os.setgid(65534), os.setuid(65534)); "
                f"print(sorted(HomeSet(root=Path({str(root)!r})).scan()))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=base)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "['default', 'open']"
        assert result.stderr.count("'locked'") == 1 and "cannot read it" in result.stderr
    finally:
        os.chmod(base / "hermes" / "profiles" / "locked", 0o755)
        import shutil
        shutil.rmtree(base)


def test_the_root_follows_hermes_home_as_hermes_finds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    native = tmp_path / "user" / ".hermes"
    (native / "profiles" / "work").mkdir(parents=True)
    assert hermes_root({}) == native
    assert hermes_root({"HERMES_HOME": str(native / "profiles" / "work")}) == native
    assert hermes_root({"HERMES_HOME": "/opt/data"}) == Path("/opt/data")
    assert hermes_root({"HERMES_HOME": "/opt/data/profiles/team"}) == Path("/opt/data")
    assert hermes_root({"HERMES_DATA_DIR_SUFFIX": "-dev"}) == tmp_path / "user" / ".hermes-dev"


def test_a_one_shot_reads_the_profile_hermes_would_use(tmp_path, monkeypatch):
    """``$HERMES_HOME``, else the sticky ``active_profile`` (BOM, blank lines and case as
    Hermes tolerates them), else the root; a sticky profile that is gone is an error naming
    it -- never the root's quota shown as the profile's."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    root = tmp_path / "user" / ".hermes"
    (root / "profiles" / "work").mkdir(parents=True)
    assert active_home({}) == root
    (root / "active_profile").write_text("\ufeffWork\n\n", encoding="utf-8")
    assert active_home({}) == root / "profiles" / "work"
    (root / "active_profile").write_text("Default\n")
    assert active_home({}) == root
    assert active_home({"HERMES_HOME": "/somewhere/else"}) == Path("/somewhere/else")
    (root / "active_profile").write_text("gone\n")
    with pytest.raises(ActiveProfileMissing, match="'gone'") as raised:
        active_home({})
    assert str(root / "profiles" / "gone") in str(raised.value)
    assert active_home({}, strict=False) == root / "profiles" / "gone"


def test_probe_fetch_and_doctor_name_a_missing_active_profile(tmp_path):
    user = tmp_path / "user"
    (user / ".hermes").mkdir(parents=True)
    (user / ".hermes" / "active_profile").write_text("ghost\n")
    env = {"HOME": str(user), "HERMES_HOME": ""}
    for args in (("fetch",), ("fetch", "anthropic"), ("doctor",)):
        result = run_cli(*args, env=env)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "active profile is 'ghost'" in result.stderr and "Traceback" not in result.stderr


def test_probe_fetch_without_home_reads_the_active_profile(tmp_path, emulator):
    hermes = build_hermes_root(tmp_path)
    (hermes.root / "active_profile").write_text("work\n")
    user = tmp_path / "user"
    user.mkdir()
    (user / ".hermes").symlink_to(hermes.root)
    result = run_cli("fetch", "--json", env={**emulator.env(), "HOME": str(user), "HERMES_HOME": ""})
    snaps = json.loads(result.stdout)
    assert [s["provider"] for s in snaps] == hermes.expected_providers("work")
    assert {s["home"] for s in snaps} == {str(hermes.home("work").resolve())}


def test_probe_homes_lists_what_serve_would_serve(tmp_path):
    hermes = build_hermes_root(tmp_path)
    (hermes.root / "profiles" / "Bad").mkdir()
    result = run_cli("homes", "--json", env={"HERMES_HOME": str(hermes.home("work"))})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["id"], r["path"]) for r in rows] == [(name, str(hermes.home(name).resolve()))
                                                   for name in ("default", "scratch", "work")]
    by_id = {r["id"]: r for r in rows}
    assert by_id["work"]["providers"] == hermes.expected_providers("work")
    assert by_id["scratch"]["providers"] == hermes.expected_providers("scratch") and by_id["scratch"]["error"] is None
    assert result.stderr.count("'Bad'") == 1
    text = run_cli("homes", "--home", f"w={hermes.home('work')}")
    assert text.returncode == 0 and text.stdout.split()[0] == "w" and "anthropic" in text.stdout


def test_fixed_homes_refuse_a_home_named_twice_and_a_directory_under_two_ids(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert parse_home_specs([f"one={a}", f"two={b}/"]) == {"one": a.resolve(), "two": b.resolve()}
    with pytest.raises(HomeSetError, match="'one' is named twice"):
        parse_home_specs([f"one={a}", f"one={b}"])
    with pytest.raises(HomeSetError, match="same directory"):
        fixed_homes([("one", a), ("two", tmp_path / "b" / ".." / "a")])
    with pytest.raises(HomeSetError, match="not a directory"):
        parse_home_specs([f"one={tmp_path / 'missing'}"])
    with pytest.raises(HomeSetError, match="ID=PATH"):
        parse_home_specs(["just-a-path"])
    with pytest.raises(HomeSetError, match="home id"):
        parse_home_specs([f"no/slash={a}"])


def test_served_homes_swap_whole_and_report_what_changed(tmp_path):
    served = ServedHomes({"a": tmp_path / "a", "b": tmp_path / "b"})
    view = served.ids_by_path
    changes = served.replace({"b": tmp_path / "b2", "c": tmp_path / "c"})
    assert changes.added == ("c",) and changes.removed == {"a": tmp_path / "a"} and changes.moved == {"b": tmp_path / "b"}
    assert list(served) == ["b", "c"] and dict(view) == {str(tmp_path / "b2"): "b", str(tmp_path / "c"): "c"}
    assert not served.replace({"b": tmp_path / "b2", "c": tmp_path / "c"})


def test_probe_homes_exits_1_when_a_home_cannot_be_read(tmp_path):
    """No Hermes on this machine: ``probe homes`` printed the home_not_found line and
    exited 0, unlike ``probe fetch`` -- a script could not tell."""
    missing = tmp_path / "no-hermes"
    text = run_cli("homes", env={"HERMES_HOME": str(missing)})
    assert text.returncode == 1 and "does not exist" in text.stdout, text.stdout + text.stderr
    rows = run_cli("homes", "--json", env={"HERMES_HOME": str(missing)})
    assert rows.returncode == 1 and json.loads(rows.stdout)[0]["error"]
