"""The one fact quota-probe reads from a home's Hermes ``config.yaml``: the active provider,
``model.provider`` -- what hermes-webui's quota route answers for when no provider is named
(SPEC §19). Read here, in the child, like every file of a home: the service process never
opens one. The parent asks with ``{"op": "active_provider"}`` (``workers.loop``) and keeps
the answer with the file's stat data (``probe.home_config``).

Read as Hermes and hermes-webui read it: ``yaml.safe_load`` (Hermes writes the file with
PyYAML), ``model`` must be a mapping, its ``provider`` stripped and lower-cased; anything
else -- no file, no ``model``, a bare ``model: some/model`` string, an empty provider -- is
"no active provider". Choices where they are silent:

* a file that cannot be read or parsed (not UTF-8, not YAML, over ``MAX_CONFIG_BYTES``) is
  "no active provider" too, with one stderr line naming ``config.yaml`` and the problem --
  never a value, never the server's path;
* a provider that is not a plausible id (over 64 characters, or characters outside
  ``[a-z0-9._:-]``) is "no active provider": it is echoed to a client, so it must be a name.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any

CONFIG_NAME = "config.yaml"
#: Hermes' own config is a few KiB; a file this large is not one, and is not parsed
MAX_CONFIG_BYTES = 1024 * 1024
#: Hermes' provider ids and hermes-webui's custom ones (``custom:name``)
PROVIDER_ID = re.compile(r"[a-z0-9][a-z0-9._:-]{0,63}")


def _say(problem: str) -> None:
    print(f"workers: {CONFIG_NAME} {problem}; no active provider is read from it", file=sys.stderr, flush=True)


def read_config(home: str | os.PathLike[str]) -> Any:
    """The parsed ``config.yaml`` of ``home``, or None (missing, unreadable, not YAML)."""
    path = os.path.join(home, CONFIG_NAME)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _say(f"cannot be read ({exc.strerror or type(exc).__name__})")
        return None
    if len(raw) > MAX_CONFIG_BYTES:
        _say(f"is larger than {MAX_CONFIG_BYTES // 1024} KiB")
        return None
    import yaml

    try:
        return yaml.load(raw.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 -- a safe loader
    except UnicodeDecodeError:
        _say("is not UTF-8 text")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        _say(f"is not valid YAML (line {mark.line + 1})" if mark is not None else "is not valid YAML")
    except RecursionError:
        _say("nests too deeply")
    return None


def active_provider(home: str | os.PathLike[str]) -> str | None:
    """``model.provider`` of the home's ``config.yaml``, normalized; None when there is none."""
    config = read_config(home)
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return None
    provider = model.get("provider")
    if provider is None or isinstance(provider, (dict, list, bool)):
        return None
    text = str(provider).strip().lower()
    return text if PROVIDER_ID.fullmatch(text) else None
