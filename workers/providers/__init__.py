"""The provider registry -- built-ins and plugins, one list -- and the one entry point the
worker loop calls (:func:`run_probe`).

Every provider is a module with the same contract (SPEC §16, ``workers/context.py``)::

    LABEL = "Display name"                      # optional for plugins (default: the name)
    CREDENTIALS = [".env:FOO_API_KEY", ...]     # optional: where its credential may live
    def probe(ctx) -> dict                      # the result dict (workers/validate.py)

Built-ins are listed in :data:`BUILTINS` (adding one is a module plus one line there, in
PROVIDERS.md's table order); plugins come from entry points (``workers.plugins``). The
order of :func:`provider_names` is SPEC §17's: built-ins in table order, then plugins by
name.

Two halves, on purpose:

* **metadata** (:func:`provider_names`, :func:`specs`) imports no provider module, so the
  parent may use it to validate names without ever importing a plugin;
* **loading** (:func:`load`, :func:`run_probe`) imports the module -- in workers only. A
  plugin that cannot be imported, or whose ``LABEL``/``CREDENTIALS``/``probe`` is unusable,
  is remembered as such and answers ``plugin_error``; its exception text is never kept
  (it may quote a credential), only its type, which goes to stderr.
"""
from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.context import ProbeContext
    from workers.credentials import HomeCredentials
    from workers.http import ProviderHttp
    from workers.places import Place

#: built-in provider name -> module, in PROVIDERS.md's table order
BUILTINS: dict[str, str] = {
    "anthropic": "workers.providers.anthropic",
    "openai-codex": "workers.providers.openai_codex",
    "openrouter": "workers.providers.openrouter",
    "deepseek": "workers.providers.deepseek",
    "zai": "workers.providers.zai",
    "kimi-coding": "workers.providers.kimi",
    "kimi-coding-cn": "workers.providers.kimi_cn",
    "minimax": "workers.providers.minimax",
    "minimax-cn": "workers.providers.minimax_cn",
    "copilot": "workers.providers.copilot",
    "nous": "workers.providers.nous",
}
#: the built-in names (the parent's short list before any plugin is known)
NAMES: tuple[str, ...] = tuple(BUILTINS)
BUILT_IN = "built-in"
MAX_LABEL = 64


@dataclass(frozen=True)
class ProviderSpec:
    """What is known about a provider without importing it."""

    name: str
    module: str
    #: ``built-in`` or the distribution that installed the plugin
    origin: str
    version: str | None = None
    refused: str | None = None

    @property
    def builtin(self) -> bool:
        return self.origin == BUILT_IN


def specs() -> list[ProviderSpec]:
    """Every usable provider in SPEC §17's order (metadata only)."""
    from workers.plugins import accepted

    return [ProviderSpec(name, module, BUILT_IN) for name, module in BUILTINS.items()] + [
        ProviderSpec(p.name, p.module, p.distribution, p.version) for p in accepted()]


def refused_specs() -> list[ProviderSpec]:
    """Plugins that were refused at discovery, by name, each with its reason."""
    from workers.plugins import refused

    return [ProviderSpec(p.name, p.module, p.distribution, p.version, p.refused) for p in refused()]


def provider_names() -> tuple[str, ...]:
    """Every valid provider name, in SPEC §17's order (metadata only; cached per process)."""
    return tuple(spec.name for spec in specs())


def spec_for(name: str) -> ProviderSpec | None:
    if name in BUILTINS:
        return ProviderSpec(name, BUILTINS[name], BUILT_IN)
    return next((spec for spec in specs() if spec.name == name), None)


# -- loading (workers only) -------------------------------------------------------------
@dataclass(frozen=True)
class Provider:
    """A provider module as imported and checked; ``error`` says why it cannot be used."""

    spec: ProviderSpec
    module: ModuleType | None
    label: str
    places: tuple["Place", ...] = ()
    #: False when the module has no CREDENTIALS (SPEC §16: probed to find out)
    declares_credentials: bool = False
    error: str | None = None
    #: the exception type of a failed import, for ``probe providers`` and stderr
    error_type: str | None = None
    credentials: tuple[str, ...] = ()

    @property
    def error_message(self) -> str:
        """The snapshot message of a provider that cannot be used (``plugin_error``)."""
        origin = f"{self.spec.origin} {self.spec.version}" if self.spec.version else self.spec.origin
        return f"The {self.spec.name} provider plugin ({origin}) cannot be used: {self.error}."


_loaded: dict[str, Provider] = {}
_load_lock = threading.Lock()


def load(name: str) -> Provider:
    """The provider ``name``, imported once per process; KeyError when there is none."""
    provider = _loaded.get(name)
    if provider is not None:
        return provider
    spec = spec_for(name)
    if spec is None:
        raise KeyError(name)
    with _load_lock:
        provider = _loaded.get(name)
        if provider is None:
            provider = _loaded[name] = _import(spec)
    return provider


def load_all() -> list[Provider]:
    """Every usable provider, imported (the template's preload; ``probe providers``)."""
    return [load(spec.name) for spec in specs()]


def _import(spec: ProviderSpec) -> Provider:
    from workers.places import PlaceError, parse_all

    try:
        module = importlib.import_module(spec.module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 -- any import failure is the plugin's
        if spec.builtin:
            raise
        kind = type(exc).__name__
        print(f"workers: the provider plugin {spec.name!r} ({spec.origin}) could not be imported: {kind}",
              file=sys.stderr, flush=True)
        return Provider(spec, None, spec.name, error="importing its module failed", error_type=kind)
    error = None
    label = getattr(module, "LABEL", None)
    if label is None and not spec.builtin:
        label = spec.name
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
        error, label = f"LABEL must be a non-empty string of at most {MAX_LABEL} characters", spec.name
    declared = getattr(module, "CREDENTIALS", None)
    places: tuple = ()
    if declared is not None:
        try:
            places = parse_all(declared)
        except PlaceError as exc:
            error = error or str(exc)
    if not callable(getattr(module, "probe", None)):
        error = error or "it defines no probe(ctx) function"
    if error and spec.builtin:
        raise RuntimeError(f"built-in provider {spec.name}: {error}")
    return Provider(spec, module, label, places, declared is not None and not error, error,
                    credentials=tuple(str(place) for place in places))


def make_context(provider: Provider | str, home: "HomeCredentials", http: "ProviderHttp | None" = None,
                 timeout_s: float = 20.0, account: Any = None) -> "ProbeContext":
    """The ``ctx`` a probe of ``provider`` gets (also for tests that drive a provider's
    helpers directly; ``http`` may be None for lookups that make no request)."""
    from workers.context import ProbeContext

    loaded = load(provider) if isinstance(provider, str) else provider
    return ProbeContext(loaded.spec.name, home, http, timeout_s, label=loaded.label, credentials=loaded.places,
                        account=account)


def run_probe(provider: str, home: "HomeCredentials", http: "ProviderHttp", timeout_s: float,
              account: Any = None) -> dict:
    """Probe one provider and always return a snapshot dict, never raise (except
    KeyboardInterrupt, which must keep propagating). A name with no adapter is answered
    from the home's ``credential_pool`` records when that holds it (no request), else
    ``unknown_provider``; the parent only asks for such a name when the home's list (SPEC
    §17) named it. ``account`` (``workers.accounts``): probe that one account of the
    provider (``ctx.account``). What the module returns goes through
    ``workers.validate``; what it raises is contained here: ``ctx.Failure`` keeps its
    (checked) code, anything else is ``bad_response`` with only the exception's type on
    stderr -- its text could quote response data or a credential."""
    from workers.result import ProbeFailure, failure
    from workers.validate import from_failure, to_snapshot

    try:
        loaded = load(provider)
    except KeyError:
        # no adapter: Hermes' own records answer for an id its credential_pool holds (SPEC §17)
        import time

        from workers.providers.credential_pool import read_records

        records = read_records(provider, home, time.time())
        if records is not None:
            return records
        return failure(provider, "unknown_provider", f"Unknown provider {provider[:64]!r}.")
    if loaded.error is not None:
        return failure(provider, "plugin_error", loaded.error_message)
    ctx = make_context(loaded, home, http, timeout_s, account)
    try:
        return to_snapshot(provider, loaded.label, loaded.module.probe(ctx))
    except ProbeFailure as exc:
        return from_failure(provider, loaded.label, exc)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 -- a provider bug or an unforeseen response shape
        return contained(provider, exc)


def contained(provider: str, exc: BaseException) -> dict:
    """The snapshot dict for an exception out of a provider's code (SPEC §16): only its
    type goes to stderr, never its text (it could quote response data or a credential);
    ``bad_response`` saying whether the built-in adapter or the plugin failed."""
    from workers.result import failure

    try:    # the provider as loaded (a plugin registered by its distribution), not re-looked-up
        builtin = load(provider).spec.builtin
    except KeyError:
        builtin = True
    print(f"workers: {provider[:64]} {'adapter' if builtin else 'plugin'} raised {type(exc).__name__}",
          file=sys.stderr, flush=True)
    if builtin:
        return failure(provider, "bad_response", f"The {provider} response could not be understood.")
    return failure(provider, "bad_response", f"The {provider} provider plugin failed while probing "
                                             "(run with PROBE_DEBUG=1 to log the exception type).")


def credential_status(provider: Provider, home: "HomeCredentials") -> str:
    """SPEC §17 for a loaded provider: :func:`workers.places.credential_status` (``found``,
    ``none`` or ``credentials_unreadable``), with a built-in's own ``accepts_credential``
    rule when it has one (Copilot: a classic ``ghp_`` token is no Copilot credential). A
    plugin that cannot be used counts as having one, so a home's list shows its
    ``plugin_error`` -- the user learns the plugin is broken instead of silently missing a
    card."""
    from workers.places import FOUND
    from workers.places import credential_status as module_status

    if provider.module is None or provider.error is not None:
        return FOUND
    accepts = getattr(provider.module, "accepts_credential", None) if provider.spec.builtin else None
    return module_status(provider.module, home, accepts)


def has_credential(provider: Provider, home: "HomeCredentials") -> bool:
    """:func:`credential_status` is ``found``."""
    from workers.places import FOUND

    return credential_status(provider, home) == FOUND
