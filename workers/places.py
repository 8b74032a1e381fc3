"""Credential *places* (SPEC §16 ``CREDENTIALS``): parsed and evaluated here, and only here.

A place names where a provider's credential may live in a home::

    .env:ANTHROPIC_TOKEN                                   a variable of the home's .env
    auth.json:credential_pool.anthropic[].access_token     a dotted path into auth.json
    auth.json:providers."openai-codex".tokens.access_token a quoted key (SPEC §16's form)

Grammar of the ``auth.json`` path: steps joined by ``.``; a step is a bare key
(``[A-Za-z0-9_-]+``) or a double-quoted key (any characters; ``\\"`` and ``\\\\`` escape),
optionally followed by ``[]`` ("every entry of this list"). Nothing else (no spaces, no
``[0]``, no empty keys): a malformed place is refused when its provider is discovered, with
a reason that says what is wrong and where, so a plugin author finds the typo at once.

SPEC §16 writes keys with dots *or dashes* quoted. A key with a dot must be (the dot is the
separator); a dash is accepted bare as well (``credential_pool.example-cloud[]``), because it
cannot be misread and refusing a provider over quotes it did not need would only annoy.

Why one module: the same places drive a probe (``ctx.values`` / ``ctx.credential``),
``probe doctor`` (where it looked, what it found) and SPEC §17 (``has_credential``: does a
home have a credential for this provider at all). If two of those read places differently,
a home would be listed for a provider its probe then finds no credential for.

Evaluation rules (the same the built-in adapters always had):

* a missing step (absent key, ``null``) is simply nothing found: ``[]``;
* *before* the first ``[]``, a step that exists with the wrong type (``credential_pool`` is
  a string, ``anthropic[]`` is an object) makes the file malformed: ``credentials_unreadable``
  naming the file and the path -- never its content -- because the user must fix it;
* *after* a ``[]``, entries that do not fit the rest of the path are skipped (one odd pool
  entry must not hide the good ones);
* an ``.env`` or ``auth.json`` that cannot be read raises ``credentials_unreadable`` for a
  place in that file only (so an ``auth.json``-only provider still works beside a broken
  ``.env``);
* a ``.env`` value that is a 1Password reference is resolved (``workers.onepassword``),
  except by :func:`credential_status`, which only asks whether a place holds a value;
* :func:`values` keeps strings only, stripped, non-empty; numbers, objects and ``""`` are
  not credentials.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from workers.credentials import ENV_NAME as _ENV_NAME
from workers.credentials import malformed_auth
from workers.result import UNREADABLE, ProbeFailure

if TYPE_CHECKING:
    from workers.credentials import HomeCredentials

ENV_PREFIX = ".env:"
AUTH_PREFIX = "auth.json:"
#: a place is a short string; a module declares a handful
MAX_PLACE_CHARS = 200
MAX_PLACES = 32
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class PlaceError(ValueError):
    """A malformed place; the message says what is wrong (it quotes the place: places are
    code a module declares, never home content)."""


@dataclass(frozen=True)
class Step:
    key: str
    each: bool = False   # followed by ``[]``

    def text(self) -> str:
        """The step as written in a place: quoted unless it is a bare key."""
        key = self.key
        if not _BARE_KEY.fullmatch(key):
            key = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return key + ("[]" if self.each else "")


@dataclass(frozen=True)
class Place:
    """One parsed place: ``file`` is ``".env"`` or ``"auth.json"``; ``name`` the .env
    variable; ``steps`` the auth.json path; ``text`` the place as the module wrote it
    (what ``probe providers`` and ``probe doctor`` show)."""

    file: str
    name: str = ""
    steps: tuple[Step, ...] = ()
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        if self.text:
            return self.text
        if self.file == ".env":
            return ENV_PREFIX + self.name
        return AUTH_PREFIX + ".".join(step.text() for step in self.steps)

    @property
    def path_text(self) -> str:
        """What follows the file: the variable name or the (quoted) path."""
        return str(self)[len(self.file) + 1:]


@lru_cache(maxsize=1024)
def parse(text: object) -> Place:
    """Parse one place; PlaceError with a reason for anything malformed."""
    if not isinstance(text, str):
        raise PlaceError(f"a place must be a string, not {type(text).__name__}")
    if len(text) > MAX_PLACE_CHARS:
        raise PlaceError(f"a place is at most {MAX_PLACE_CHARS} characters")
    if text.startswith(ENV_PREFIX):
        name = text[len(ENV_PREFIX):]
        if not _ENV_NAME.fullmatch(name):
            raise PlaceError(f"{text!r}: {name!r} is not a .env variable name")
        return Place(".env", name=name, text=text)
    if text.startswith(AUTH_PREFIX):
        return Place("auth.json", steps=_parse_path(text, text[len(AUTH_PREFIX):]), text=text)
    raise PlaceError(f"{text!r} does not start with {ENV_PREFIX!r} or {AUTH_PREFIX!r}")


def _parse_path(place: str, path: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    index = 0
    if not path:
        raise PlaceError(f"{place!r}: the auth.json path is empty")
    while True:
        where = f"{place!r} at character {len(AUTH_PREFIX) + index + 1}"
        if index >= len(path):
            raise PlaceError(f"{where}: a key is missing (the path ends with '.')")
        if path[index] == '"':
            key, index = _quoted_key(path, index, where)
        else:
            match = _BARE_KEY.match(path, index)
            if match is None:
                char = path[index]
                hint = " (a key with dots is double-quoted)" if char == "." else ""
                raise PlaceError(f"{where}: expected a key, found {char!r}{hint}")
            key, index = match.group(), match.end()
        each = path.startswith("[]", index)
        if each:
            index += 2
        elif path.startswith("[", index):
            raise PlaceError(f"{where}: only '[]' (every entry of a list) may follow a key")
        steps.append(Step(key, each))
        if index == len(path):
            return tuple(steps)
        if path[index] != ".":
            raise PlaceError(f"{place!r} at character {len(AUTH_PREFIX) + index + 1}: expected '.', "
                             f"'[]' or the end, found {path[index]!r}")
        index += 1


def _quoted_key(path: str, start: int, where: str) -> tuple[str, int]:
    chars: list[str] = []
    index = start + 1
    while index < len(path):
        char = path[index]
        if char == "\\":
            if index + 1 >= len(path) or path[index + 1] not in '"\\':
                raise PlaceError(f"{where}: only \\\" and \\\\ may be escaped in a quoted key")
            chars.append(path[index + 1])
            index += 2
            continue
        if char == '"':
            if not chars:
                raise PlaceError(f"{where}: a key must not be empty")
            return "".join(chars), index + 1
        chars.append(char)
        index += 1
    raise PlaceError(f"{where}: the quoted key is not closed")


def parse_all(places: object) -> tuple[Place, ...]:
    """A module's ``CREDENTIALS``: a list or tuple of place strings (at most
    ``MAX_PLACES``). PlaceError naming the offending entry."""
    if isinstance(places, (str, bytes)) or not isinstance(places, (list, tuple)):
        raise PlaceError("CREDENTIALS must be a list of places such as \".env:EXAMPLE_API_KEY\"")
    if len(places) > MAX_PLACES:
        raise PlaceError(f"CREDENTIALS lists more than {MAX_PLACES} places")
    parsed = []
    for index, text in enumerate(places):
        try:
            parsed.append(parse(text))
        except PlaceError as exc:
            raise PlaceError(f"CREDENTIALS[{index}]: {exc}") from None
    return tuple(parsed)


# -- evaluation -------------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    """A value found at a place and where exactly: ``where`` is for people (``.env
    ANTHROPIC_TOKEN``, ``auth.json credential_pool.anthropic[1]``: the object holding the
    value, with the list index that a ``[]`` matched)."""

    place: Place
    where: str
    value: Any


def lookup(place: Place | str, home: "HomeCredentials") -> list[Any]:
    """Every value at ``place`` (any JSON type, ``null`` excluded), in file order."""
    return [found.value for found in locate(place, home)]


def values(place: Place | str, home: "HomeCredentials") -> list[str]:
    """Every credential at ``place``: non-empty strings, stripped, in file order."""
    return [found.value for found in credentials_at(place, home)]


def credentials_at(place: Place | str, home: "HomeCredentials", *, resolve: bool = True) -> Iterator[Found]:
    for found in locate(place, home, resolve=resolve):
        if isinstance(found.value, str) and found.value.strip():
            yield Found(found.place, found.where, found.value.strip())


def first_credential(places: Iterable[Place], home: "HomeCredentials") -> Found | None:
    """The first credential over ``places`` in order; lazy, so a later place's file is not
    even looked at (nor its malformation reported) once an earlier place has a value."""
    for place in places:
        for found in credentials_at(place, home):
            return found
    return None


def locate(place: Place | str, home: "HomeCredentials", *, resolve: bool = True) -> list[Found]:
    """Every value at ``place`` with where it was; raises ``credentials_unreadable`` when
    the file the place reads cannot be read (see the module docstring). ``resolve``: a
    1Password reference in ``.env`` is resolved (else returned as it is)."""
    if isinstance(place, str):
        place = parse(place)
    if place.file == ".env":
        value = home.env_get(place.name, resolve=resolve)
        return [] if value is None else [Found(place, f".env {place.name}", value)]
    home.auth_json()   # raises when auth.json could not be read
    found: list[Found] = []
    _walk(place, home.auth, 0, (), strict=True, out=found)
    return found


def _walk(place: Place, value: Any, depth: int, trail: tuple[str, ...], *,
          strict: bool, out: list[Found]) -> None:
    """``trail``: the keys walked so far as shown to people, ``[]`` replaced by the index."""
    if depth == len(place.steps):
        if value is not None:
            # where: the object holding the value (its last key is the place's own field)
            shown = trail[:-1] if len(trail) > 1 and not place.steps[-1].each else trail
            out.append(Found(place, "auth.json " + ".".join(shown), value))
        return
    if not isinstance(value, dict):
        if strict and value is not None:
            raise malformed_auth(trail, "an object")
        return
    step = place.steps[depth]
    child = value.get(step.key)
    if not step.each:
        _walk(place, child, depth + 1, (*trail, step.key), strict=strict, out=out)
        return
    if not isinstance(child, list):
        if strict and child is not None:
            raise malformed_auth((*trail, step.key), "a list")
        return
    for index, entry in enumerate(child):
        _walk(place, entry, depth + 1, (*trail, f"{step.key}[{index}]"), strict=False, out=out)


#: :func:`credential_status` answers
FOUND, NONE = "found", "none"


def credential_status(module: Any, home: "HomeCredentials", accepts: Callable[[str], bool] | None = None) -> str:
    """SPEC §17: does ``home`` have a credential for the provider ``module`` implements?

    :data:`FOUND` when any of the module's ``CREDENTIALS`` places holds a non-empty string
    (one ``accepts`` takes, when given: a built-in's own rule, e.g. Copilot skips classic
    ``ghp_`` tokens); :data:`UNREADABLE` when none does but a place lies in a file that
    cannot be read (it may hold one: the provider stays listed and its probe answers
    ``credentials_unreadable``); else :data:`NONE`. A module that declares no
    ``CREDENTIALS`` cannot be asked this way: FOUND, meaning "probe it to find out" (SPEC
    §16: a ``no_credentials`` answer then drops it). A 1Password reference counts as a
    value without running ``op``: whether it resolves is the probe's to say. Malformed
    ``CREDENTIALS`` raise PlaceError (such a plugin is refused at discovery, so the
    registry never hands one out)."""
    declared = getattr(module, "CREDENTIALS", None)
    if declared is None:
        return FOUND
    unreadable = False
    for place in parse_all(declared):
        try:
            for found in credentials_at(place, home, resolve=False):
                if accepts is None or accepts(found.value):
                    return FOUND
        except ProbeFailure as exc:
            unreadable = unreadable or exc.code == UNREADABLE
    return UNREADABLE if unreadable else NONE


def has_credential(module: Any, home: "HomeCredentials", accepts: Callable[[str], bool] | None = None) -> bool:
    """:func:`credential_status` is :data:`FOUND`."""
    return credential_status(module, home, accepts) == FOUND
