"""Which homes exist: the one place ``probe serve``, a reload, ``probe homes``, ``probe
fetch`` and ``probe doctor`` ask.

Hermes lays profiles out as (hermes-agent ``hermes_constants.py``, ``hermes_cli/profiles.py``)::

    <root>/                    the default profile (usually ~/.hermes)
    <root>/profiles/<name>/    a named profile, <name> matching ^[a-z0-9][a-z0-9_-]{0,63}$
    <root>/profiles/.deleted/<name>   a tombstone: ``hermes profile delete`` is removing <name>
    <root>/active_profile      the sticky profile ``hermes`` uses when HERMES_HOME is unset

The root is ``~/.hermes``, or -- when ``$HERMES_HOME`` lies outside it (Docker, a custom
deployment) -- ``$HERMES_HOME`` itself, or two levels up when ``$HERMES_HOME`` is itself
``<root>/profiles/<name>``. A ``$HERMES_HOME`` under ``~/.hermes`` (a profile there) keeps
``~/.hermes`` as the root, as Hermes does.

Two questions, two answers:

* **Which homes does a backend serve?** (:class:`HomeSet`) The homes named with ``--home``
  or a config file's ``[homes]`` -- exactly those; else the root as home ``default`` and
  every valid profile directory as home ``<name>``, found by one ``scandir`` of
  ``<root>/profiles`` per :meth:`HomeSet.scan` (the backend scans once per refresh
  interval and on SIGHUP, never per request). An entry that cannot be a profile -- a
  file, a dangling symlink, a directory this user cannot read, a name Hermes' own rule
  refuses -- is skipped with one log line (once per entry and reason, not once per scan).
* **Which home does a one-shot command read?** (:func:`active_home`) The profile Hermes
  itself would use: ``$HERMES_HOME``, else the profile ``<root>/active_profile`` names,
  else the root. A name there whose directory is missing is :class:`ActiveProfileMissing`,
  naming it -- never a silent fall-back to another account.

Ids and paths are checked here too (:func:`fixed_homes`), for ``--home ID=PATH`` and a
config file alike: an id twice, or one directory under two ids, is an error (two ids for
one pool would make ``/metrics`` and ``/api/pool`` name it arbitrarily).
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("quota_probe.homes")

#: Hermes' own rule for a profile directory's name (hermes_cli/profiles.py ``_PROFILE_ID_RE``)
PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: the id of the root profile, as Hermes names it
DEFAULT_ID = "default"
#: a home id given with --home or in a config file: a short word (it appears in URLs and labels)
HOME_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: where ``hermes profile delete`` leaves its tombstones, beside the profiles
TOMBSTONES = ".deleted"


class HomeSetError(ValueError):
    """A home that cannot be served or read: a bad ``ID=PATH``, a duplicate, a missing
    directory. The message names the home and never a credential."""


class ActiveProfileMissing(HomeSetError):
    """``<root>/active_profile`` names a profile whose directory does not exist."""

    def __init__(self, name: str, root: Path) -> None:
        super().__init__(f"Hermes' active profile is {name!r} ({root / 'active_profile'}), but there is no "
                         f"profile directory {root / 'profiles' / name}. Create it, run `hermes profile use "
                         f"default`, or name a home with --home.")
        self.name = name


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def native_root(environ: Mapping[str, str] | None = None) -> Path:
    """``~/.hermes`` (with Hermes' ``HERMES_DATA_DIR_SUFFIX``)."""
    return Path.home() / (".hermes" + _environ(environ).get("HERMES_DATA_DIR_SUFFIX", ""))


def hermes_root(environ: Mapping[str, str] | None = None) -> Path:
    """The Hermes root (the default profile) as Hermes' ``get_default_hermes_root`` finds
    it; see the module docstring."""
    native = native_root(environ)
    env_home = _environ(environ).get("HERMES_HOME", "").strip()
    if not env_home:
        return native
    env_path = Path(env_home).expanduser()
    try:
        env_path.resolve().relative_to(native.resolve())
        return native      # ~/.hermes itself or a profile under it
    except ValueError:
        return env_path.parent.parent if env_path.parent.name == "profiles" else env_path


def _tombstoned(profiles: Path, name: str) -> bool:
    return (profiles / TOMBSTONES / name).exists()


def active_profile_name(root: Path) -> str:
    """What ``<root>/active_profile`` says (Hermes reads it as UTF-8 with an optional BOM,
    stripped; missing, empty or unreadable is ``default``), lower-cased as Hermes does."""
    try:
        name = (root / "active_profile").read_text(encoding="utf-8-sig").strip()
    except (OSError, UnicodeDecodeError):
        return DEFAULT_ID
    return DEFAULT_ID if not name or name.casefold() == DEFAULT_ID else name.lower()


def active_home(environ: Mapping[str, str] | None = None, *, strict: bool = True) -> Path:
    """The home Hermes itself would use now: ``$HERMES_HOME``, else the profile
    ``<root>/active_profile`` names, else the root. With ``strict``, a named profile whose
    directory is missing (or tombstoned) raises :class:`ActiveProfileMissing`; without, its
    would-be path is returned, so a fetch answers ``home_not_found`` naming it."""
    env_home = _environ(environ).get("HERMES_HOME", "").strip()
    if env_home:
        return Path(env_home).expanduser()
    root = native_root(environ)
    name = active_profile_name(root)
    if name == DEFAULT_ID:
        return root
    profiles = root / "profiles"
    path = profiles / name
    if strict and (not PROFILE_NAME.fullmatch(name) or not path.is_dir() or _tombstoned(profiles, name)):
        raise ActiveProfileMissing(name, root)
    return path


@dataclass(frozen=True)
class Skipped:
    """A ``profiles/`` entry that is not served, and why (for the one log line)."""
    name: str
    reason: str


def discover(root: Path) -> tuple[dict[str, Path], list[Skipped]]:
    """The root as ``default`` and every profile under it (sorted by name), with the entries
    skipped. One ``scandir`` of ``<root>/profiles`` and a ``stat`` per entry: cheap enough to
    repeat every refresh interval with hundreds of profiles."""
    homes: dict[str, Path] = {DEFAULT_ID: Path(os.path.realpath(root))}
    skipped: list[Skipped] = []
    profiles = root / "profiles"
    #: a profile that is not a symlink resolves under the resolved profiles directory: one
    #: realpath for all of them, not one each (a realpath costs an lstat per path component)
    resolved_profiles = Path(os.path.realpath(profiles))
    try:
        with os.scandir(profiles) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return homes, skipped
    except OSError as exc:
        return homes, [Skipped("profiles", f"{profiles} cannot be read ({exc.strerror or type(exc).__name__})")]
    try:
        tombstones = frozenset(os.listdir(profiles / TOMBSTONES))
    except OSError:
        tombstones = frozenset()
    ids_by_path = {path: home_id for home_id, path in homes.items()}
    for entry in entries:
        name = entry.name
        if name == TOMBSTONES or name in tombstones:
            continue                 # Hermes' own bookkeeping; a profile being deleted
        reason = _not_a_profile(entry)
        if reason is None:
            directory = Path(os.path.realpath(entry.path)) if entry.is_symlink() else resolved_profiles / name
            same = ids_by_path.setdefault(directory, name)
            if same == name:
                homes[name] = directory
                continue
            reason = f"it is the same directory as home {same!r} (a symbolic link)"
        skipped.append(Skipped(name, reason))
    return homes, skipped


def _not_a_profile(entry: os.DirEntry) -> str | None:
    """None for a profile to serve, else why it is skipped."""
    name = entry.name
    if name == DEFAULT_ID:
        return "'default' is the root profile's name; a directory by that name is never a profile"
    if not PROFILE_NAME.fullmatch(name):
        return "its name is not a Hermes profile name (^[a-z0-9][a-z0-9_-]{0,63}$)"
    try:
        if not entry.is_dir():
            if entry.is_symlink():
                return "it is a symbolic link to nothing" if not os.path.exists(entry.path) \
                    else "it is a symbolic link to something that is not a directory"
            return "it is not a directory"
    except OSError as exc:
        return f"it cannot be examined ({exc.strerror or type(exc).__name__})"
    if not os.access(entry.path, os.R_OK | os.X_OK):
        return "this user cannot read it"
    return None


def fixed_homes(pairs: Iterable[tuple[str, str | os.PathLike[str]]], where: str = "--home") -> dict[str, Path]:
    """``(id, path)`` pairs checked as a served set: ids are short words, each path an
    existing directory (resolved), no id twice and no directory under two ids. ``where``
    names the source in messages (``--home``, or a config file's ``[homes]``)."""
    homes: dict[str, Path] = {}
    ids_by_path: dict[Path, str] = {}
    for home_id, raw in pairs:
        if not isinstance(home_id, str) or not HOME_ID.fullmatch(home_id):
            raise HomeSetError(f"{where}: home id {str(home_id)[:64]!r} must be 1-64 letters, digits, '-', '_' or '.'.")
        if home_id in homes:
            raise HomeSetError(f"{where}: home {home_id!r} is named twice.")
        if not isinstance(raw, (str, os.PathLike)) or not os.fspath(raw):
            raise HomeSetError(f"{where}: home {home_id!r} needs a directory path.")
        directory = Path(os.path.realpath(os.path.expanduser(os.fspath(raw))))
        if not directory.is_dir():
            raise HomeSetError(f"{where}: home {home_id!r}: {directory} is not a directory.")
        if directory in ids_by_path:
            raise HomeSetError(f"{where}: homes {ids_by_path[directory]!r} and {home_id!r} are the same directory "
                               f"({directory}); name it once.")
        homes[home_id] = directory
        ids_by_path[directory] = home_id
    return homes


def parse_home_specs(specs: Iterable[str]) -> dict[str, Path]:
    """``--home ID=PATH`` options as :func:`fixed_homes` checks them."""
    pairs = []
    for spec in specs:
        home_id, sep, path = spec.partition("=")
        if not sep or not home_id or not path:
            raise HomeSetError(f"--home takes ID=PATH, not {spec!r}.")
        pairs.append((home_id, path))
    return fixed_homes(pairs)


class HomeSet:
    """The homes a backend serves: ``fixed`` ones (id -> resolved directory) exactly, or,
    without them, whatever :func:`discover` finds under ``root`` at each :meth:`scan`."""

    def __init__(self, fixed: Mapping[str, Path] | None = None, *, root: Path | None = None) -> None:
        self.fixed = dict(fixed) if fixed else None
        self.root = None if self.fixed else (root if root is not None else hermes_root())
        self._reported: set[Skipped] = set()

    @property
    def discovering(self) -> bool:
        """True when the set follows the profiles on disk (no fixed homes)."""
        return self.fixed is None

    def continue_from(self, previous: "HomeSet") -> None:
        """Take over what ``previous`` (the set a reload replaces) already logged, so a
        reload does not repeat the skip lines of the same root."""
        if previous.root == self.root:
            self._reported = set(previous._reported)

    def scan(self) -> dict[str, Path]:
        """The homes now: the fixed ones, or one directory scan of the root's profiles.
        Each skipped entry is logged once (a warning) for as long as it stays skipped."""
        if self.fixed is not None:
            return dict(self.fixed)
        homes, skipped = discover(self.root)
        for entry in skipped:
            if entry not in self._reported:
                log.warning("profile %r under %s is not served: %s", entry.name, self.root / "profiles", entry.reason)
        self._reported = set(skipped)
        return homes


class ServedHomes(Mapping[str, Path]):
    """The homes a running backend serves (id -> resolved directory), which a reload or a
    profile scan replaces as a whole while requests read it.

    Readers never lock: :meth:`replace` builds the new maps first and then publishes them in
    one attribute assignment, so a reader sees the old set or the new one, never half of
    each. ``ids_by_path`` is a live view (``/metrics`` and ``/api/pool`` name pools by id
    through it)."""

    def __init__(self, homes: Mapping[str, Path]) -> None:
        self._maps = self._build(homes)
        self.ids_by_path: Mapping[str, str] = _IdsByPath(self)

    @staticmethod
    def _build(homes: Mapping[str, Path]) -> tuple[dict[str, Path], dict[str, str]]:
        by_id = {str(home_id): Path(path) for home_id, path in homes.items()}
        return by_id, {str(path): home_id for home_id, path in by_id.items()}

    def __getitem__(self, home_id: str) -> Path:
        return self._maps[0][home_id]

    def __iter__(self):
        return iter(self._maps[0])

    def __len__(self) -> int:
        return len(self._maps[0])

    def replace(self, homes: Mapping[str, Path]) -> "HomeChanges":
        """Serve ``homes`` from now on; what changed (ids added, ids removed, ids whose
        directory changed -- each with the directory it had)."""
        old = self._maps[0]
        self._maps = self._build(homes)
        new = self._maps[0]
        return HomeChanges(added=tuple(h for h in new if h not in old),
                           removed={h: old[h] for h in old if h not in new},
                           moved={h: old[h] for h in old if h in new and new[h] != old[h]})


class _IdsByPath(Mapping[str, str]):
    def __init__(self, owner: ServedHomes) -> None:
        self._owner = owner

    def __getitem__(self, path: str) -> str:
        return self._owner._maps[1][path]

    def __iter__(self):
        return iter(self._owner._maps[1])

    def __len__(self) -> int:
        return len(self._owner._maps[1])


@dataclass(frozen=True)
class HomeChanges:
    added: tuple[str, ...]
    #: id -> the directory it had
    removed: dict[str, Path]
    #: id -> the directory it had (it now has another)
    moved: dict[str, Path]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.moved)
