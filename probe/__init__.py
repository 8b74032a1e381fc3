"""quota-probe: read LLM account quotas through warm, per-home probe subprocesses.

The module-level functions use one default :class:`ProbeService`, built on first use under
a lock and published only once fully constructed, so no thread can see a half-built one.
"""
from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Collection
from typing import Any

from probe.config import ProbeConfig
from probe.errors import UnknownProviderError
from probe.service import HomeArg, ProbeService
from probe.snapshot import Snapshot

__all__ = ["ProbeService", "ProbeConfig", "Snapshot", "UnknownProviderError",
           "fetch", "afetch", "fetch_home", "afetch_home", "invalidate", "stats"]

_default_service: ProbeService | None = None
_default_lock = threading.Lock()


def _service() -> ProbeService:
    global _default_service
    service = _default_service
    if service is None:
        with _default_lock:
            service = _default_service
            if service is None:
                service = ProbeService(ProbeConfig())
                atexit.register(service.close)
                _default_service = service  # published only after construction finished
    return service


def fetch(provider: str, *, home: HomeArg = None, refresh: bool = False,
          timeout: float | None = None, account: str | None = None) -> Snapshot:
    """``account``: that account of the provider only (SPEC §18); unknown id → ValueError."""
    return _service().fetch(provider, home=home, refresh=refresh, timeout=timeout, account=account)


async def afetch(provider: str, *, home: HomeArg = None, refresh: bool = False,
                 timeout: float | None = None, account: str | None = None) -> Snapshot:
    return await _service().afetch(provider, home=home, refresh=refresh, timeout=timeout, account=account)


def fetch_home(*, home: HomeArg = None, refresh: bool = False, timeout: float | None = None,
               providers: Collection[str] | None = None,
               on_snapshot: Callable[[Snapshot], None] | None = None) -> list[Snapshot]:
    """Every provider ``home`` has a credential for, read in one worker request (SPEC §17);
    ``providers`` and ``on_snapshot`` as :meth:`ProbeService.fetch_home`."""
    return _service().fetch_home(home=home, refresh=refresh, timeout=timeout, providers=providers,
                                 on_snapshot=on_snapshot)


async def afetch_home(*, home: HomeArg = None, refresh: bool = False, timeout: float | None = None,
                      providers: Collection[str] | None = None) -> list[Snapshot]:
    """No ``on_snapshot`` here: it would be called on the service's threads, not the event
    loop's -- an async caller that wants answers as they come awaits :func:`afetch` per
    provider."""
    return await _service().afetch_home(home=home, refresh=refresh, timeout=timeout, providers=providers)


def invalidate(*, home: HomeArg = None, provider: str | None = None) -> None:
    _service().invalidate(home=home, provider=provider)


def stats() -> dict[str, Any]:
    return _service().stats()
