"""Provider plugins: found by entry point, from installed metadata only (SPEC §16).

A plugin is any installed distribution that declares, in the entry-point group
``quota_probe.providers``, ``<provider name> = <module>``. :func:`discover` reads those
declarations -- names, module paths, the distribution and its version -- **without importing
anything**, which is why the parent (service, CLI) may call it to know the valid provider
names: no parent process ever imports a plugin module. Importing happens in workers only
(``workers.providers.load``): the template process imports every plugin once before it
forks, an exec-started worker on first use.

Refused, each with a reason (``probe providers`` shows it) and one WARNING log line naming
the distribution:

* a name that is not ``[a-z][a-z0-9-]{1,31}``;
* the name of a built-in provider (the built-in keeps working);
* a name two distributions both claim (neither is used: picking one would depend on
  ``sys.path`` order, and probing the wrong package's code for an account is worse than
  probing none);
* an entry point that names an object (``pkg.mod:attr``) instead of a module.

The scan is done once per process (installing a plugin takes effect for services and
templates started afterwards).
"""
from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass

GROUP = "quota_probe.providers"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{1,31}")
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
log = logging.getLogger("quota_probe.plugins")


@dataclass(frozen=True)
class PluginSpec:
    """One entry point as declared: nothing here came from importing the plugin."""

    name: str
    module: str
    distribution: str
    version: str | None
    #: why it is not used, or None when it is
    refused: str | None = None


def classify(entries: Iterable[tuple[str, str, str, str | None]], builtin: Collection[str]) -> tuple[PluginSpec, ...]:
    """(name, entry point value, distribution, version) rows -> specs sorted by name, each
    accepted or refused with its reason. Pure, so every rule is tested without installing."""
    rows = list(entries)
    claims: dict[str, set[str]] = defaultdict(set)
    for name, _, distribution, _ in rows:
        claims[name].add(distribution)
    specs = []
    for name, value, distribution, version in rows:
        refused = None
        if not NAME_PATTERN.fullmatch(name):
            refused = "its name is not a valid provider name (lower-case letters, digits and '-', 2 to 32 " \
                      "characters, starting with a letter)"
        elif name in builtin:
            refused = "the name belongs to a built-in provider"
        elif len(claims[name]) > 1:
            others = sorted(claims[name] - {distribution})
            refused = f"the name is also claimed by {', '.join(others)}"
        elif not _MODULE_PATH.fullmatch(value.strip()):
            refused = "its entry point must name a module (pkg.mod), not an object"
        specs.append(PluginSpec(name, value.strip(), distribution, version, refused))
    specs.sort(key=lambda spec: (spec.name, spec.distribution))
    return tuple(specs)


_discovered: tuple[PluginSpec, ...] | None = None
_discover_lock = threading.Lock()


def discover() -> tuple[PluginSpec, ...]:
    """Every plugin entry point installed for this interpreter, classified; refused ones are
    logged once per process (WARNING, naming the distribution) -- under a lock, so callers
    racing at start-up cannot log them twice."""
    global _discovered
    if _discovered is not None:
        return _discovered
    with _discover_lock:
        if _discovered is None:
            from workers.providers import BUILTINS

            specs = classify(_installed(), BUILTINS)
            for spec in specs:
                if spec.refused:
                    origin = f"{spec.distribution} {spec.version}" if spec.version else spec.distribution
                    log.warning("quota-probe: refused the provider plugin %r from %s: %s.", spec.name[:64], origin,
                                spec.refused)
            _discovered = specs
    return _discovered


def _installed() -> list[tuple[str, str, str, str | None]]:
    from importlib.metadata import entry_points

    try:
        found = entry_points(group=GROUP)
    except Exception as exc:  # noqa: BLE001 -- a broken metadata file must not stop quota-probe
        log.warning("quota-probe: could not read the installed provider plugins (%s).", type(exc).__name__)
        return []
    rows = []
    for entry in found:
        dist = getattr(entry, "dist", None)
        name = getattr(dist, "name", None) or "an unknown distribution"
        version = getattr(dist, "version", None)
        rows.append((entry.name, entry.value, str(name), str(version) if version else None))
    return rows


def accepted() -> tuple[PluginSpec, ...]:
    return tuple(spec for spec in discover() if spec.refused is None)


def refused() -> tuple[PluginSpec, ...]:
    return tuple(spec for spec in discover() if spec.refused is not None)
