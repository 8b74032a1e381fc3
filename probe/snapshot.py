"""The Snapshot: the one shape every user sees (SPEC §4) — Python API, CLI ``--json``, HTTP.

The child builds the provider part as a plain dict; the parent adds where it came from
(``home``, ``fetched_at``, ``probe``) and parses it here, so a malformed child reply is caught
at one border instead of leaking half-shaped data to callers.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from probe import pace as pace_rules
from probe.pace import Pace

PATHS = ("cache", "warm", "slot_start", "cold", "coalesced")
ERROR_CODES = (
    "no_credentials", "unauthorized", "forbidden", "rate_limited", "provider_error",
    "bad_response", "timeout", "worker_crashed", "saturated", "home_not_found",
    "unknown_provider", "token_expired", "plugin_error",
)
#: errors that describe the account, not a passing condition: worth caching like a success
DEFINITIVE_ERRORS = frozenset({"no_credentials", "unauthorized", "forbidden", "token_expired"})


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Window:
    label: str
    used_percent: float | None
    remaining_percent: float | None
    reset_at: str | None
    detail: str | None = None
    #: the window's length, when the provider says or implies it (SPEC §13)
    window_s: float | None = None
    pace: Pace | None = None


@dataclass(frozen=True)
class Balance:
    """Money a provider reports as a balance, as a number (SPEC §13): nothing downstream
    has to parse a detail line."""
    label: str
    amount: float
    currency: str


@dataclass(frozen=True)
class ProbeError:
    code: str
    message: str
    #: seconds the provider asked us to wait (429 Retry-After); kept for back-off, not serialized
    retry_after_s: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class ProbeInfo:
    path: str
    latency_ms: float
    worker_pid: int | None = None


@dataclass(frozen=True)
class Snapshot:
    #: None only for the one answer of a home-wide read whose home does not exist (or
    #: whose provider list could not be read): SPEC §17's ``"provider": null``
    provider: str | None
    home: str
    available: bool
    title: str | None = None
    plan: str | None = None
    source: str | None = None
    windows: tuple[Window, ...] = ()
    details: tuple[str, ...] = ()
    balances: tuple[Balance, ...] = ()
    unavailable_reason: str | None = None
    error: ProbeError | None = None
    stale: bool = False
    fetched_at: str = field(default_factory=utc_now_iso)
    probe: ProbeInfo = field(default_factory=lambda: ProbeInfo("cold", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "home": self.home,
            "available": self.available,
            "title": self.title,
            "plan": self.plan,
            "source": self.source,
            "windows": [dataclasses.asdict(w) for w in self.windows],
            "details": list(self.details),
            "balances": [dataclasses.asdict(b) for b in self.balances],
            "unavailable_reason": self.unavailable_reason,
            "error": self.error.to_dict() if self.error else None,
            "stale": self.stale,
            "fetched_at": self.fetched_at,
            "probe": {"path": self.probe.path, "latency_ms": self.probe.latency_ms,
                      "worker_pid": self.probe.worker_pid},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Snapshot":
        """Inverse of :meth:`to_dict` (also used for cache files). Raises ValueError on a bad shape."""
        return cls._parse(data, None)

    @classmethod
    def _parse(cls, data: dict[str, Any], probe_info: ProbeInfo | None) -> "Snapshot":
        try:
            probe = data.get("probe") or {"path": "cold", "latency_ms": 0.0}
            return cls(
                provider=_opt_str(data["provider"]),
                home=_str(data["home"]),
                available=bool(data["available"]),
                title=_opt_str(data.get("title")),
                plan=_opt_str(data.get("plan")),
                source=_opt_str(data.get("source")),
                windows=tuple(_window(w) for w in data.get("windows") or ()),
                details=tuple(_str(d) for d in data.get("details") or ()),
                balances=tuple(_balance(b) for b in data.get("balances") or ()),
                unavailable_reason=_opt_str(data.get("unavailable_reason")),
                error=_error(data.get("error")),
                stale=bool(data.get("stale", False)),
                fetched_at=_str(data.get("fetched_at") or utc_now_iso()),
                probe=probe_info or ProbeInfo(_str(probe["path"]), float(probe["latency_ms"]), probe.get("worker_pid")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a snapshot: {type(exc).__name__}") from None

    @classmethod
    def from_child(cls, data: dict[str, Any], *, home: str, probe: ProbeInfo) -> "Snapshot":
        """Wrap the provider part a worker sent with the parent's facts, and stamp each
        window's pace as of ``fetched_at`` (whatever pace the child sent is ignored: the
        parent owns the clock and the rule)."""
        if not isinstance(data.get("provider"), str):
            raise ValueError("not a snapshot: a worker's snapshot names its provider")
        now = datetime.now(timezone.utc)
        snap = cls._parse({**data, "home": home, "stale": False, "fetched_at": pace_rules.iso(now)}, probe)
        return snap.with_pace(now)

    def with_pace(self, now: datetime) -> "Snapshot":
        windows = tuple(dataclasses.replace(w, pace=pace_rules.compute(w.used_percent, w.reset_at, w.window_s, now))
                        for w in self.windows)
        return dataclasses.replace(self, windows=windows)

    @classmethod
    def failed(cls, provider: str | None, home: str, code: str, message: str, *, probe: ProbeInfo,
               retry_after_s: float | None = None) -> "Snapshot":
        return cls(provider=provider, home=home, available=False,
                   error=ProbeError(code, message, retry_after_s), probe=probe)

    def with_probe(self, probe: ProbeInfo, **changes: Any) -> "Snapshot":
        return dataclasses.replace(self, probe=probe, **changes)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    return float(value)


def _window(data: dict[str, Any]) -> Window:
    return Window(
        label=_str(data["label"]),
        used_percent=_opt_float(data.get("used_percent")),
        remaining_percent=_opt_float(data.get("remaining_percent")),
        reset_at=_opt_str(data.get("reset_at")),
        detail=_opt_str(data.get("detail")),
        window_s=_opt_float(data.get("window_s")),
        pace=_pace(data.get("pace")),
    )


def _pace(data: Any) -> Pace | None:
    if data is None:
        return None
    status = _str(data["status"])
    if status not in ("deficit", "reserve", "on_track"):
        raise TypeError("unknown pace status")
    return Pace(expected_used_percent=float(_opt_float(data["expected_used_percent"])),
                delta_percent=float(_opt_float(data["delta_percent"])), status=status,
                runs_out_at=_opt_str(data.get("runs_out_at")), lasts_until_reset=bool(data["lasts_until_reset"]),
                basis="recent" if data.get("basis") == "recent" else "average")


def _balance(data: dict[str, Any]) -> Balance:
    amount = _opt_float(data["amount"])
    if amount is None:
        raise TypeError("a balance needs an amount")
    return Balance(label=_str(data["label"]), amount=amount, currency=_str(data["currency"]))


def _error(data: Any) -> ProbeError | None:
    if data is None:
        return None
    code = _str(data["code"])
    if code not in ERROR_CODES:
        raise TypeError("unknown error code")  # callers may rely on the SPEC §4 list
    return ProbeError(code, _str(data["message"]), _opt_float(data.get("retry_after_s")))


def monotonic_ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000.0, 3)
