"""The Snapshot: the one shape every user sees (SPEC §4) — Python API, CLI ``--json``, HTTP.

The child builds the provider part as a plain dict; the parent adds where it came from
(``home``, ``fetched_at``, ``probe``) and parses it here, so a malformed child reply is caught
at one border instead of leaking half-shaped data to callers.
"""
from __future__ import annotations

import dataclasses
import math
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
    "unknown_provider", "token_expired", "plugin_error", "credentials_unreadable",
)
#: errors that describe the account, not a passing condition: worth caching like a success
DEFINITIVE_ERRORS = frozenset({"no_credentials", "unauthorized", "forbidden", "token_expired"})
#: failures that say nothing about the account: its last good reading stays worth showing,
#: marked stale -- a provider's (``probe.service``) and one account's (``probe.account_state``)
#: (``credentials_unreadable``: a credential file, or the secret it refers to, cannot be read
#: right now -- SPEC §2 keeps the last good reading)
TRANSIENT_ERRORS = frozenset({"rate_limited", "timeout", "provider_error", "bad_response",
                              "worker_crashed", "saturated", "credentials_unreadable"})


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


ACCOUNT_STATUSES = ("available", "unavailable", "exhausted", "dead")
#: a provider shows at most this many accounts (SPEC §18; the worker enforces it too)
MAX_ACCOUNTS = 256
MAX_ACCOUNT_LABEL = 64


@dataclass(frozen=True)
class Account:
    """One account of a provider in a home (SPEC §18). ``label`` is personal data (often
    an e-mail address): it is shown to the home's user (JSON, CLI, panel) and never
    logged nor exported as a metric label -- ``id`` is what those use."""
    id: str
    label: str
    source: str | None
    status: str
    plan: str | None = None
    windows: tuple[Window, ...] = ()
    balances: tuple[Balance, ...] = ()
    details: tuple[str, ...] = ()
    unavailable_reason: str | None = None
    error: ProbeError | None = None
    stale: bool = False
    #: ISO UTC: an ``exhausted`` account is not probed before then (Hermes' cooldown)
    retry_after: str | None = None
    #: when this reading was taken (None: the account was not probed, e.g. dead)
    fetched_at: str | None = None
    #: probed in the read that produced the snapshot (``pool.queried`` / ``failed``);
    #: not serialized
    probed: bool = field(default=False, compare=False)

    @property
    def available(self) -> bool:
        return self.status == "available"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "source": self.source, "status": self.status,
                "plan": self.plan, "windows": [dataclasses.asdict(w) for w in self.windows],
                "balances": [dataclasses.asdict(b) for b in self.balances], "details": list(self.details),
                "unavailable_reason": self.unavailable_reason,
                "error": self.error.to_dict() if self.error else None, "stale": self.stale,
                "retry_after": self.retry_after, "fetched_at": self.fetched_at}


@dataclass(frozen=True)
class BestWindow:
    """The available account with the most room in one window (SPEC §18 ``pool.best``)."""
    window: str
    account_id: str
    account_label: str
    remaining_percent: float | None
    used_percent: float | None
    reset_at: str | None


@dataclass(frozen=True)
class NextAccount:
    id: str
    label: str
    reason: str


@dataclass(frozen=True)
class PoolView:
    """SPEC §18 ``pool``: a provider with several accounts, summarized
    (``probe.pool_view.summarize`` computes it; nothing else may)."""
    total: int
    available: int
    exhausted: int
    dead: int
    failed: int
    queried: int
    plans: tuple[str, ...] = ()
    next_reset_at: str | None = None
    best: tuple[BestWindow, ...] = ()
    next_account: NextAccount | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "available": self.available, "exhausted": self.exhausted, "dead": self.dead,
                "failed": self.failed, "queried": self.queried, "plans": list(self.plans),
                "next_reset_at": self.next_reset_at, "best": [dataclasses.asdict(b) for b in self.best],
                "next_account": dataclasses.asdict(self.next_account) if self.next_account else None}


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
    #: SPEC §18: every account of the provider in the home (one for most homes; empty
    #: for an answer no account produced, e.g. ``home_not_found``)
    accounts: tuple[Account, ...] = ()
    #: SPEC §18: None unless the provider has several accounts
    pool: PoolView | None = None

    def account(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.id == account_id), None)

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
            "accounts": [a.to_dict() for a in self.accounts],
            "pool": self.pool.to_dict() if self.pool else None,
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
                probe=probe_info or ProbeInfo(_str(probe["path"]), float(_opt_float(probe["latency_ms"])),
                                              _opt_int(probe.get("worker_pid"))),
                accounts=_accounts(data.get("accounts"), data.get("fetched_at") if probe_info else None),
                pool=_pool(data.get("pool")),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a snapshot: {type(exc).__name__}") from None

    @classmethod
    def from_child(cls, data: dict[str, Any], *, home: str, probe: ProbeInfo) -> "Snapshot":
        """Wrap the provider part a worker sent with the parent's facts, and stamp each
        window's pace as of ``fetched_at`` (whatever pace the child sent is ignored: the
        parent owns the clock and the rule)."""
        if not isinstance(data.get("provider"), str):
            raise ValueError("not a snapshot: a worker's snapshot names its provider")
        now = datetime.now(timezone.utc)
        snap = cls._parse({**data, "home": home, "stale": False, "fetched_at": pace_rules.iso(now),
                           "pool": None}, probe)
        return snap.with_pace(now)

    def with_pace(self, now: datetime) -> "Snapshot":
        def paced(windows: tuple[Window, ...]) -> tuple[Window, ...]:
            return tuple(dataclasses.replace(w, pace=pace_rules.compute(w.used_percent, w.reset_at, w.window_s, now))
                         for w in windows)

        accounts = tuple(dataclasses.replace(a, windows=paced(a.windows)) if a.probed else a for a in self.accounts)
        return dataclasses.replace(self, windows=paced(self.windows), accounts=accounts)

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
    try:
        number = float(value)
    except OverflowError:
        raise TypeError("a number out of range") from None
    if not math.isfinite(number):   # NaN/Infinity would break every strict JSON encoder later
        raise TypeError("a number out of range")
    return number


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


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


def _accounts(data: Any, probed_at: str | None) -> tuple[Account, ...]:
    """The ``accounts`` list: from a cache file (as serialized) or, with ``probed_at``,
    from a worker -- then each account's ``probed`` flag is the child's and a probed
    account's ``fetched_at`` is the parent's clock (the child's clock is not trusted)."""
    if data is None:
        return ()
    if not isinstance(data, list) or len(data) > MAX_ACCOUNTS:
        raise TypeError("accounts must be a list of at most 256")
    accounts = tuple(_account(a, probed_at) for a in data)
    if len({a.id for a in accounts}) != len(accounts):
        raise TypeError("account ids must be distinct")
    return accounts


def _account(data: dict[str, Any], probed_at: str | None) -> Account:
    status = _str(data["status"])
    if status not in ACCOUNT_STATUSES:
        raise TypeError("unknown account status")
    account_id, label = _str(data["id"]), _str(data["label"])
    if not account_id or len(account_id) > 200 or not label or len(label) > MAX_ACCOUNT_LABEL \
            or not label.isprintable():
        raise TypeError("an account needs a short printable id and label")
    probed = probed_at is not None and data.get("probed") is True
    return Account(
        id=account_id, label=label, source=_opt_str(data.get("source")), status=status,
        plan=_opt_str(data.get("plan")),
        windows=tuple(_window(w) for w in data.get("windows") or ()),
        balances=tuple(_balance(b) for b in data.get("balances") or ()),
        details=tuple(_str(d) for d in data.get("details") or ()),
        unavailable_reason=_opt_str(data.get("unavailable_reason")),
        error=_error(data.get("error")),
        stale=bool(data.get("stale", False)) if probed_at is None else False,
        retry_after=_opt_str(data.get("retry_after")),
        fetched_at=(probed_at if probed else None) if probed_at is not None else _opt_str(data.get("fetched_at")),
        probed=probed)


def _pool(data: Any) -> PoolView | None:
    if data is None:
        return None
    nxt = data.get("next_account")
    return PoolView(
        **{key: _count(data[key]) for key in ("total", "available", "exhausted", "dead", "failed", "queried")},
        plans=tuple(_str(p) for p in data.get("plans") or ()),
        next_reset_at=_opt_str(data.get("next_reset_at")),
        best=tuple(BestWindow(_str(b["window"]), _str(b["account_id"]), _str(b["account_label"]),
                              _opt_float(b.get("remaining_percent")), _opt_float(b.get("used_percent")),
                              _opt_str(b.get("reset_at"))) for b in data.get("best") or ()),
        next_account=None if nxt is None else NextAccount(_str(nxt["id"]), _str(nxt["label"]), _str(nxt["reason"])))


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("expected a count")
    return value


def monotonic_ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000.0, 3)
