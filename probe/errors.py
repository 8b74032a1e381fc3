"""Exceptions a caller of the Python API may see (everything provider-side is a Snapshot)."""
from __future__ import annotations

from workers.plugins import NAME_PATTERN
from workers.providers import provider_names, refused_specs


class UnknownProviderError(ValueError):
    """The provider name is not one quota-probe knows (a caller mistake, hence ValueError)."""

    code = "unknown_provider"


def check_provider(provider: object) -> str:
    if not isinstance(provider, str):
        raise ValueError(f"provider must be a string, not {type(provider).__name__}")
    if not provider:
        raise ValueError("provider must not be empty")
    names = provider_names()   # built-ins and plugins, from metadata: no plugin is imported here
    if provider not in names:
        shown = provider if len(provider) <= 64 else provider[:61] + "..."
        refused = next((spec for spec in refused_specs() if spec.name == provider), None)
        if refused is not None:
            raise UnknownProviderError(f"The provider plugin {shown!r} from {refused.origin} was refused: "
                                       f"{refused.refused}; see `probe providers`.")
        pool_hint = ""
        if NAME_PATTERN.fullmatch(provider):
            # maybe an id only Hermes' credential_pool holds: those are read home-wide only (SPEC §17)
            pool_hint = (" A provider that only auth.json's credential_pool holds is shown in the home's list: "
                         "`probe fetch --home H` without a provider (GET /api/quota?home=ID).")
        raise UnknownProviderError(
            f"Unknown provider {shown!r}; known providers: {', '.join(names)}.{pool_hint}")
    return provider


def check_timeout(timeout: object, default_s: float) -> float:
    if timeout is None:
        return float(default_s)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise ValueError("timeout must be a number of seconds in (0, 3600]")
    return float(timeout)
