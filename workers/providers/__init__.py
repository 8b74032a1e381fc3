"""Provider catalogue and the one entry point the worker loop calls.

``NAMES`` is the single list of supported providers. The parent imports it (cheaply: no
adapter module is loaded here) to reject unknown names before it spends a process on them.

Adapter contract — each ``workers/providers/<module>.py`` defines::

    def probe(home: HomeCredentials, http: ProviderHttp, timeout_s: float) -> dict

returning the child-side snapshot dict (keys ``provider, available, title, plan, source,
windows, details, unavailable_reason, error``) built with :mod:`workers.result`. Adapters
raise :class:`workers.result.ProbeFailure` for every provider-side problem; :func:`run_probe`
turns it (and anything unexpected) into a typed error dict, so the loop never dies on a probe.
"""
from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.credentials import HomeCredentials
    from workers.http import ProviderHttp

#: provider name -> adapter module (``-`` is not allowed in module names)
MODULES: dict[str, str] = {
    "anthropic": "workers.providers.anthropic",
    "openai-codex": "workers.providers.openai_codex",
    "openrouter": "workers.providers.openrouter",
    "deepseek": "workers.providers.deepseek",
}
NAMES: tuple[str, ...] = tuple(MODULES)


def run_probe(provider: str, home: "HomeCredentials", http: "ProviderHttp", timeout_s: float) -> dict:
    """Probe one provider and always return a snapshot dict, never raise (except BaseException
    such as KeyboardInterrupt, which must keep propagating)."""
    from workers.result import ProbeFailure, failure

    if provider not in MODULES:
        return failure(provider, "unknown_provider", f"Unknown provider {provider[:64]!r}.")
    adapter = importlib.import_module(MODULES[provider])
    try:
        return adapter.probe(home, http, timeout_s)
    except ProbeFailure as exc:
        return failure(provider, exc.code, exc.message, retry_after_s=exc.retry_after_s)
    except Exception as exc:  # an adapter bug or an unforeseen response shape
        # Only the exception type goes to stderr: its message could quote response data.
        print(f"workers: {provider} adapter raised {type(exc).__name__}", file=sys.stderr, flush=True)
        return failure(provider, "bad_response", f"The {provider} response could not be understood.")
