"""``ProbeConfig``: every knob of a service, validated once, compared by value.

Frozen and compared field by field so ``ProbeService.configure`` can tell an unchanged
configuration (a no-op: no worker restarted, no connection dropped) from a changed one.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.providers import provider_names


@dataclass(frozen=True)
class ProbeConfig:
    #: warm workers kept per home; 0 = no pool, every probe is a one-shot (``cold``)
    pool_size: int = 2
    #: how long a caller waits for a busy slot to free before taking the cold fallback: a
    #: forked one-shot costs ~10 ms, so waiting longer than a few ms for a slot loses (README)
    claim_wait_s: float = 0.005
    probe_timeout_s: float = 20.0
    cache_ttl_s: float = 45.0
    #: a worker idle this long is closed (and its slot restarted on demand)
    idle_s: float = 300.0
    #: warm workers of all homes together; least recently used idle ones go first
    max_total_workers: int = 64
    #: concurrent one-shot fallbacks; callers past it wait (within their deadline), then ``saturated``
    max_cold_spawns: int = 8
    #: a cold process stays this long after answering, for the next caller of its home that
    #: finds the pool busy (a surge worker, still under ``max_cold_spawns``); 0 = one-shots
    cold_linger_s: float = 2.0
    #: recycle a worker after this many probes (bounds slow leaks in a long-lived child)
    max_requests_per_worker: int = 1000
    #: recycle a worker whose resident memory grew past this
    max_worker_rss_mb: float = 200.0
    #: start replacement workers in the background so the next caller finds a warm one
    prewarm: bool = False
    #: identical concurrent fetches share one probe
    coalesce: bool = True
    #: shared on-disk snapshot cache for several processes on one host (SPEC §7)
    cache_dir: str | os.PathLike[str] | None = None
    #: provider -> base URL override (also ``PROBE_<PROVIDER>_BASE_URL`` in the environment)
    provider_urls: Mapping[str, str] = field(default_factory=dict)
    #: cluster mode (SPEC §15): backends naming the same Redis share cache, locks, back-off
    #: and rotations; it takes the place of ``cache_dir`` when both are set
    redis_url: str | None = None
    redis_prefix: str = "quota-probe:"
    #: home id -> home path: a home's cluster identity (the same id on two hosts is one
    #: account, whatever its path there); homes not listed are known by a hash of their path
    home_ids: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("pool_size", "max_total_workers", "max_cold_spawns", "max_requests_per_worker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        if self.max_requests_per_worker < 1:
            raise ValueError("max_requests_per_worker must be at least 1")
        for name in ("claim_wait_s", "cache_ttl_s", "idle_s", "max_worker_rss_mb", "cold_linger_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
        if isinstance(self.probe_timeout_s, bool) or not isinstance(self.probe_timeout_s, (int, float)) \
                or not 0 < self.probe_timeout_s <= 3600:
            raise ValueError("probe_timeout_s must be a number of seconds in (0, 3600]")
        urls = dict(self.provider_urls or {})
        for provider, url in urls.items():
            if provider not in provider_names():
                raise ValueError(f"provider_urls names an unknown provider {provider[:64]!r}")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"provider_urls[{provider!r}] must be an http(s) URL")
        object.__setattr__(self, "provider_urls", urls)
        if self.redis_url is not None and not (isinstance(self.redis_url, str)
                                               and self.redis_url.startswith(("redis://", "rediss://", "unix://"))):
            raise ValueError("redis_url must be a redis://, rediss:// or unix:// URL")
        if not isinstance(self.redis_prefix, str) or not self.redis_prefix or len(self.redis_prefix) > 64:
            raise ValueError("redis_prefix must be a short non-empty string")
        object.__setattr__(self, "home_ids", {str(k): str(Path(v).expanduser().resolve())
                                              for k, v in dict(self.home_ids or {}).items()})
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", str(Path(self.cache_dir).expanduser().resolve()))

    def replace(self, **changes: Any) -> "ProbeConfig":
        return dataclasses.replace(self, **changes)
