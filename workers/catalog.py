"""``python -P -m workers.catalog``: every provider as ``probe providers`` lists it (SPEC
§10), as one JSON list on stdout.

Why a child: a provider's ``LABEL`` and ``CREDENTIALS`` are only known by importing its
module, and no CLI or service process ever imports a plugin (SPEC §16). This child has no
home: it reads no credential, it only imports the modules the way the template does.

One row per provider, in SPEC §17's order (built-ins in PROVIDERS.md's table order, then
plugins by name), then the plugins refused at discovery, by name::

    {"name", "label", "origin": "built-in" | <distribution>, "version", "credentials": [place],
     "error": null | <why it cannot be used>}
"""
from __future__ import annotations

import json
import sys
from typing import Any

from workers.loop import _take_protocol_stdout
from workers.providers import Provider, load_all, refused_specs
from workers.version import quota_probe_version


def describe_error(provider: Provider) -> str | None:
    """Why a provider cannot be used; an import failure also names the exception type
    (never its text: it may quote a credential)."""
    if provider.error is None:
        return None
    return f"{provider.error} ({provider.error_type})" if provider.error_type else provider.error


def catalogue() -> list[dict[str, Any]]:
    own_version = quota_probe_version()
    rows = []
    for provider in load_all():
        spec = provider.spec
        rows.append({"name": spec.name, "label": provider.label, "origin": spec.origin,
                     "version": own_version if spec.builtin else spec.version,
                     "credentials": list(provider.credentials), "error": describe_error(provider)})
    for spec in refused_specs():
        rows.append({"name": spec.name, "label": spec.name, "origin": spec.origin, "version": spec.version,
                     "credentials": [], "error": spec.refused})
    return rows


def main() -> int:
    out = _take_protocol_stdout()   # a plugin that prints while imported cannot garble the answer
    out.write(json.dumps(catalogue()).encode() + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
