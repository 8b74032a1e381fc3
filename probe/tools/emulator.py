"""The built-in provider emulator: a real HTTP/1.1 server on 127.0.0.1 serving the usage
endpoints of every built-in provider with their real response shapes (SPEC §8,
PROVIDERS.md): anthropic, openai-codex, openrouter, deepseek, and the 0.3 providers zai,
kimi-coding, kimi-coding-cn, minimax, minimax-cn, copilot and nous.

The credential picks the behaviour, so a home's ``.env`` alone drives a scenario. It is
read from ``Authorization: Bearer <token>`` (Copilot's path also takes GitHub's
``Authorization: token <token>``). Markers that work on every route:

* a token containing ``-401-``, ``-403-``, ``-429-`` (with ``Retry-After: 7``), ``-500-``,
  ``-503-`` gets that status; ``-hang-`` never gets an answer (until :meth:`Emulator.stop`);
  ``-garbage-`` gets a 200 whose body is not JSON; ``-huge-`` a 2 MiB JSON body;
  ``-reset-`` a closed connection; ``-slow<ms>-`` the normal answer (or the scripted one)
  after exactly that delay; ``-keyfail-`` fails only OpenRouter's ``/key``;
* any other token gets a plausible quota derived from the token and the clock
  (:func:`quota_body`), so tests can tell whose credential produced a snapshot.

Markers for the failures some providers report *inside an HTTP 200* (each in that
provider's own form; a route without such a form ignores the marker):

==================  ==========================================================================
``-bodyerror-``     z.ai ``{"success": false, "code": 500, "msg": …}``; Moonshot (kimi-coding
                    balance, kimi-coding-cn) ``code 3, status false, scode "0x3"``; MiniMax
                    ``base_resp.status_code 1000``; Nous a top-level ``"error"`` string
``-bodydenied-``    a refused key: Moonshot ``code 1, status false, scode "unauthorized"``;
                    MiniMax ``base_resp.status_code 1004`` ("cookie is missing, log in
                    again"); z.ai ``{"success": false, "code": 1001, "msg": …}``
``-nocredits-``     Nous: ``paid_service_access.allowed`` false, no subscription, nothing left
``-legacy-``        MiniMax: ``/v1/token_plan/remains`` answers 404 and the older
                    ``/v1/api/openplatform/coding_plan/remains`` the legacy top-level shape
``-free-``          Copilot: the free plan (``monthly_quotas`` / ``limited_user_quotas``, no
                    ``quota_snapshots``)
==================  ==========================================================================

The kind of key matters where it does for the real hosts: Kimi Code (``/kimi/v1/usages``)
answers 401 to a key that does not start ``sk-kimi-``, and the Moonshot balance answers
401 to one that does. Kimi and MiniMax have a global and a China host with the same
paths, so each is served under a prefix of its own (``/kimi``, ``/kimi-cn``, ``/minimax``,
``/minimax-cn``; :func:`provider_urls_for` gives each provider its base URL).

Quota windows behave like a real provider's (Anthropic's five-hour and weekly windows,
Codex's primary and secondary): each (token, window) has a **fixed reset per window
instance** that rolls over -- one window length later -- when it is reached; usage
**rises** through the instance at a rate drawn from the token and the instance (some
accounts burn faster than the window allows, some slower; a new instance starts from 0 at
a new rate, capped at 100 %); and every read reports the reset with **jitter** of up to
±2 s (and microseconds for Anthropic), as real ones do -- "seconds until reset" rounded one
way or the other. Instance boundaries sit at a per-token phase counted from the
emulator's ``epoch`` (by default the moment it started, so ``probe serve --demo`` starts
every window at a token-chosen point of its instance, 5-95 % elapsed, and the first reset
is at least 5 % of a window away). Everything is a pure function of (token, clock,
epoch): the same instant answers the same body, jitter included. Balances (OpenRouter,
DeepSeek, Codex credits, Moonshot, MiniMax points, Nous top-up credits) depend on the
token alone.

The 0.3 providers follow the same model, each with its quirks on the wire: z.ai's
5-hour and weekly limits (integer used ``percentage``, ``unit``/``number`` codes, resets
in epoch milliseconds) and its monthly tool calls (a ``TIME_LIMIT``, 30-day instances);
Kimi Code's weekly and 300-minute windows (counts as decimal strings, resets with nine
fractional digits); MiniMax's 5-hour and weekly windows (epoch-ms start and end, a
``*_usage_count`` that is the count *left*, a points balance as a string); Copilot's
calendar months (reset sent as a bare date, 00:00 UTC on the 1st; no epoch phase); a Nous
subscription's 30-day periods (credits left falling through the period, the end exact).

The clock is ``time.time`` unless a test passes its own (``Emulator(clock=...)``); each
recorded request carries the clock value its body was computed at (``RecordedRequest.now``),
so a test can recompute exactly what was served (:meth:`Emulator.quota_body`).

Why it is written this way: the emulator must not distort latency. Each response goes
out in one ``sendall`` (status line, headers and body in one buffer) on a socket with
``TCP_NODELAY``; a reply written in two pieces waits ~40 ms for a delayed ACK on loopback
(measured here: 44 ms vs 0.56 ms for the same GET). Tests may also :meth:`Emulator.script`
an exact response per token.

TLS (``Emulator(tls=True)``, ``probe emulator --tls``): the same server behind HTTPS, with a
certificate for 127.0.0.1 issued by a throw-away CA (the ``trustme`` package) whose PEM file
lives as long as the emulator. Clients trust it through ``SSL_CERT_FILE`` (in
:meth:`Emulator.env`), which is how workers get it: the variable is on their allowlist. That
is what makes a warm worker's second value measurable -- its kept-alive TLS connection
saves a handshake per probe. The handshake runs on the connection's own thread, never on
the accept loop.

Concurrency: one thread per connection (keep-alive connections stay open), a listen backlog
of ``SOMAXCONN`` so dozens of clients can connect at once without SYN retries, and waits
(``-hang-``, ``-slow-``) on one ``threading.Event`` that :meth:`Emulator.stop` sets, so stop
is prompt and leaves no thread or socket behind. Nothing is logged: requests carry tokens.

Plugin routes (``Emulator(plugins=True)``, as ``probe emulator`` and ``probe serve --demo``
run it): every installed plugin's ``EMULATOR`` under ``/plugins/<name>``, its answers
computed by a child process -- this process never imports a plugin module. See
``probe/tools/plugin_routes.py``.
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import math
import random
import re
import signal
import socket
import socketserver
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

ANTHROPIC_PATH = "/api/oauth/usage"
CODEX_PATHS = ("/backend-api/wham/usage", "/api/codex/usage")
OPENROUTER_CREDITS_PATH = "/api/v1/credits"
OPENROUTER_KEY_PATH = "/api/v1/key"
DEEPSEEK_PATH = "/user/balance"
HUGE_BODY_BYTES = 2 * 1024 * 1024
RETRY_AFTER_S = 7
IDLE_CONNECTION_TIMEOUT_S = 60
REQUEST_LOG_MAX = 10_000


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    token: str | None
    headers: dict[str, str]
    at: float
    #: the emulator's clock (Unix seconds) when the request arrived: its body is computed at it
    now: float = 0.0


@dataclass(frozen=True)
class Scripted:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Scenario:
    status: int = 200
    delay_ms: int = 0
    hang: bool = False
    garbage: bool = False
    huge: bool = False
    reset: bool = False
    keyfail: bool = False


_STATUS_MARKERS = {"-401-": 401, "-403-": 403, "-429-": 429, "-500-": 500, "-503-": 503}
_SLOW = re.compile(r"-slow(\d{1,6})-")


def scenario_for(token: str) -> Scenario:
    """The behaviour a token asks for, from the markers it contains."""
    status = next((code for marker, code in _STATUS_MARKERS.items() if marker in token), 200)
    slow = _SLOW.search(token)
    return Scenario(status=status, delay_ms=int(slow.group(1)) if slow else 0, hang="-hang-" in token,
                    garbage="-garbage-" in token, huge="-huge-" in token, reset="-reset-" in token,
                    keyfail="-keyfail-" in token)


# -- quota bodies: a pure function of (token, clock, epoch) -----------------------------
FIVE_HOUR_S = 18000
WEEK_S = 604800
#: each read reports a window's reset up to this many seconds early or late
RESET_JITTER_S = 2.0
#: at the epoch, a window's instance has this share of its length elapsed, at the least ...
FIRST_SHARE_MIN = 0.05
#: ... and at the most
FIRST_SHARE_MAX = 0.95
#: a window's usage rises at this multiple of "on pace" (100 % at the reset), at the least ...
RATE_MIN = 0.3
#: ... and at the most
RATE_MAX = 1.7


def _seed(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _unit(*parts: object) -> float:
    """A number in [0, 1) drawn from ``parts`` (the same parts, the same number)."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


@dataclass(frozen=True)
class WindowState:
    """One emulated window at one instant."""
    #: which instance (0: the one running at the epoch; they count up at each reset)
    instance: int
    #: the instance's exact reset, Unix seconds (what a read reports, give or take jitter)
    reset_at: float
    #: used share of the window, unrounded
    used_percent: float


def window_state(token: str, window: str, length_s: float, now: float, epoch: float,
                 phase_of: str | None = None) -> WindowState:
    """The (token, ``window``) window at ``now``. Resets sit at ``first + k * length_s``,
    where ``first`` is a token-chosen point 5-95 % of a window after ``epoch``; usage is
    ``rate * elapsed share * 100`` (capped at 100), with a rate per token, window and
    instance. ``phase_of`` names another window whose resets this one shares (Anthropic's
    Opus week resets with the week)."""
    share = FIRST_SHARE_MIN + (FIRST_SHARE_MAX - FIRST_SHARE_MIN) * _unit(token, phase_of or window, "phase")
    first = epoch + (1 - share) * length_s
    instance = math.floor((now - first) / length_s) + 1        # the first instance whose reset is after now
    reset_at = first + instance * length_s
    elapsed = max(0.0, min(1.0, 1 - (reset_at - now) / length_s))
    rate = RATE_MIN + (RATE_MAX - RATE_MIN) * _unit(token, window, instance, "rate")
    return WindowState(instance, reset_at, min(100.0, rate * elapsed * 100))


def _wire_reset(token: str, window: str, state: WindowState, now: float, jitter: bool) -> datetime:
    """The reset as one read reports it: jittered by up to ±RESET_JITTER_S (drawn from the
    token, window and instant), never at or before ``now``."""
    offset = (2 * _unit(token, window, repr(now), "jitter") - 1) * RESET_JITTER_S if jitter else 0.0
    return datetime.fromtimestamp(max(state.reset_at + offset, now + 1.0), tz=timezone.utc)


def _anthropic(token: str, now: float, epoch: float, jitter: bool) -> dict[str, Any]:
    h = _seed(token)

    def part(window: str, length_s: float, phase_of: str | None = None) -> dict[str, Any]:
        state = window_state(token, window, length_s, now, epoch, phase_of)
        reset = _wire_reset(token, phase_of or window, state, now, jitter)
        if not reset.microsecond:   # the real API sends microseconds
            reset = reset.replace(microsecond=1)
        return {"utilization": round(state.used_percent, 1), "resets_at": reset.isoformat()}

    return {
        "five_hour": part("five_hour", FIVE_HOUR_S),
        "seven_day": part("seven_day", WEEK_S),
        "seven_day_opus": part("seven_day_opus", WEEK_S, phase_of="seven_day") if h[5] % 2 else None,
        "extra_usage": {"is_enabled": True, "used_credits": h[6] * 10, "monthly_limit": 5000, "currency": "USD"}
        if h[7] % 2 else {"is_enabled": False, "used_credits": None, "monthly_limit": None, "currency": None},
    }


def _codex(token: str, now: float, epoch: float, jitter: bool) -> dict[str, Any]:
    h = _seed(token)
    primary = window_state(token, "primary", FIVE_HOUR_S, now, epoch)
    secondary = window_state(token, "secondary", WEEK_S, now, epoch)
    return {
        "plan_type": ("plus", "pro", "team", "free")[h[0] % 4],
        "rate_limit": {
            "primary_window": {"used_percent": int(primary.used_percent), "limit_window_seconds": FIVE_HOUR_S,
                               "reset_at": math.ceil(_wire_reset(token, "primary", primary, now, jitter).timestamp())},
            "secondary_window": {"used_percent": int(secondary.used_percent), "limit_window_seconds": WEEK_S,
                                 "reset_at": _wire_reset(token, "secondary", secondary, now, jitter)
                                 .strftime("%Y-%m-%dT%H:%M:%SZ")},
        },
        "credits": {"has_credits": True, "unlimited": False, "balance": round(h[5] / 10, 2)},
        "rate_limit_reset_credits": {"available_count": h[6] % 3},
    }


def _openrouter_credits(token: str, *_: object) -> dict[str, Any]:
    h = _seed(token)
    total = 10 + h[0] % 90
    return {"data": {"total_credits": total, "total_usage": round(total * h[1] / 255, 2)}}


def _openrouter_key(token: str, *_: object) -> dict[str, Any]:
    h = _seed(token)
    limit = 0 if h[2] % 3 == 0 else 10 + h[2] % 40
    monthly = round(h[4] / 25.5, 2)
    return {"data": {"label": "emulated", "limit": limit or None,
                     "limit_remaining": round(limit * h[3] / 255, 2) if limit else None,
                     "limit_reset": "monthly" if h[5] % 2 else None,
                     "usage": round(monthly + h[6] / 10, 2), "usage_daily": round(h[7] / 100, 2),
                     "usage_weekly": round(h[8] / 50, 2), "usage_monthly": monthly}}


def _deepseek(token: str, *_: object) -> dict[str, Any]:
    h = _seed(token)
    granted, topped_up = h[1] / 10, h[2] / 5
    return {"is_available": True, "balance_infos": [{
        "currency": "CNY" if h[0] % 2 else "USD", "total_balance": f"{granted + topped_up:.2f}",
        "granted_balance": f"{granted:.2f}", "topped_up_balance": f"{topped_up:.2f}"}]}


# -- the providers added in 0.3 (PROVIDERS.md, "Providers added in 0.3") -----------------
# Kimi and MiniMax each have two hosts (global and China) whose paths are the same; the
# emulator serves each provider under a prefix of its own, so a request log says which
# provider asked. z.ai, Copilot and Nous have paths of their own and sit at the root.
ZAI_PATH = "/api/monitor/usage/quota/limit"
KIMI_PREFIX, KIMI_CN_PREFIX = "/kimi", "/kimi-cn"
KIMI_CODE_PATH = KIMI_PREFIX + "/v1/usages"
KIMI_BALANCE_PATH = KIMI_PREFIX + "/v1/users/me/balance"
KIMI_CN_BALANCE_PATH = KIMI_CN_PREFIX + "/v1/users/me/balance"
MINIMAX_PREFIX, MINIMAX_CN_PREFIX = "/minimax", "/minimax-cn"
TOKEN_PLAN_SUFFIX, CODING_PLAN_SUFFIX = "/v1/token_plan/remains", "/v1/api/openplatform/coding_plan/remains"
#: (token plan, coding plan) per MiniMax host
MINIMAX_PATHS = (MINIMAX_PREFIX + TOKEN_PLAN_SUFFIX, MINIMAX_PREFIX + CODING_PLAN_SUFFIX)
MINIMAX_CN_PATHS = (MINIMAX_CN_PREFIX + TOKEN_PLAN_SUFFIX, MINIMAX_CN_PREFIX + CODING_PLAN_SUFFIX)
COPILOT_PATH = "/copilot_internal/user"
NOUS_PATH = "/api/oauth/account"
#: z.ai's monthly tool calls and a Nous subscription period
MONTH_S = 30 * 86400
KIMI_RATE_WINDOW_S = 300 * 60
KIMI_CODE_KEY_PREFIX = "sk-kimi-"
ZAI_PLANS = (("Lite", 100), ("Pro", 1000), ("Max", 4000))     # plan, tool calls a month
KIMI_LIMITS = ((1024, 100), (2048, 200), (4096, 400))          # weekly, per rate window
MINIMAX_PLANS = (("Token Plan Starter", 600), ("Token Plan Plus", 1500), ("Token Plan Max", 4500))
COPILOT_PLANS = (("pro", 300), ("pro_plus", 1500), ("business", 300), ("enterprise", 1000))
COPILOT_FREE_QUOTAS = {"chat": 50, "completions": 2000}
NOUS_PLANS = (("Plus", 20), ("Pro", 50), ("Ultra", 200))       # plan, monthly credits (USD)


@dataclass(frozen=True)
class Answer:
    """A route's answer other than a plain 200 with a body: a host that refuses a kind of
    key (Kimi Code and Moonshot refuse each other's), MiniMax's 404 under ``-legacy-``."""
    status: int
    body: Any


def _ms(when: datetime) -> int:
    return math.floor(when.timestamp() * 1000)


def _nano_iso(token: str, window: str, when: datetime) -> str:
    """Kimi's reset format: nine fractional digits and ``Z`` (the last three drawn from the
    token, window and instant, as a real clock's nanoseconds would be)."""
    nanos = when.microsecond * 1000 + math.floor(_unit(token, window, when.timestamp(), "ns") * 1000)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def _key_refused(host: str) -> Answer:
    return Answer(401, {"error": {"message": f"Invalid Authentication: not a {host} key.",
                                  "type": "invalid_authentication_error"}})


def _zai(token: str, now: float, epoch: float, jitter: bool) -> dict[str, Any]:
    """z.ai: HTTP 200 whatever happens (``success``/``code`` say), used shares as integer
    ``percentage``, resets in epoch milliseconds, unit codes (3 hour, 6 week), the monthly
    tool calls as a ``TIME_LIMIT`` with ``unit 5, number 1``. Lite plans have no weekly
    limit; the list order varies by token (the adapter sorts by length)."""
    if "-bodyerror-" in token:
        return {"code": 500, "msg": "The service is busy, please try again later.", "success": False}
    if "-bodydenied-" in token:
        return {"code": 1001, "msg": "The authorization token is invalid or has expired.", "success": False}
    h = _seed(token)
    plan, tool_calls = ZAI_PLANS[h[0] % len(ZAI_PLANS)]

    def tokens_limit(window: str, unit: int, count: int, length_s: float) -> dict[str, Any]:
        state = window_state(token, window, length_s, now, epoch)
        return {"type": "TOKENS_LIMIT", "unit": unit, "number": count, "percentage": math.floor(state.used_percent),
                "nextResetTime": _ms(_wire_reset(token, window, state, now, jitter))}

    limits = [tokens_limit("zai-session", 3, 5, FIVE_HOUR_S)]
    if plan != "Lite":
        weekly = tokens_limit("zai-weekly", 6, 1, WEEK_S)
        limits = [weekly, *limits] if h[1] % 2 else [*limits, weekly]
    tools = window_state(token, "zai-tools", MONTH_S, now, epoch)
    used_calls = math.floor(tools.used_percent / 100 * tool_calls)
    limits.append({"type": "TIME_LIMIT", "unit": 5, "number": 1, "usage": tool_calls, "currentValue": used_calls,
                   "remaining": tool_calls - used_calls, "percentage": math.floor(used_calls / tool_calls * 100),
                   "nextResetTime": _ms(_wire_reset(token, "zai-tools", tools, now, jitter))})
    plan_key = ("planName", "packageName")[h[2] % 2]
    return {"code": 200, "msg": "Operation successful", "success": True, "data": {"limits": limits, plan_key: plan}}


def _kimi_code(token: str, now: float, epoch: float, jitter: bool) -> dict[str, Any] | Answer:
    """Kimi Code (``sk-kimi-`` keys only): counts as decimal strings, resets with nine
    fractional digits, a weekly ``usage`` and a 300-minute rate window (sent as 300 minutes
    or as 5 hours); some tokens leave ``used`` out of the rate window (the adapter then
    reads ``limit - remaining``)."""
    if not token.startswith(KIMI_CODE_KEY_PREFIX):
        return _key_refused("Kimi Code")
    h = _seed(token)
    weekly_limit, rate_limit = KIMI_LIMITS[h[0] % len(KIMI_LIMITS)]

    def part(window: str, length_s: float, limit: int, with_used: bool = True) -> dict[str, Any]:
        state = window_state(token, window, length_s, now, epoch)
        used = math.floor(state.used_percent / 100 * limit)
        body = {"limit": str(limit), "used": str(used), "remaining": str(limit - used),
                "resetTime": _nano_iso(token, window, _wire_reset(token, window, state, now, jitter))}
        if not with_used:
            del body["used"]
        return body

    spec = {"duration": 300, "timeUnit": "TIME_UNIT_MINUTE"} if h[1] % 2 else {"duration": 5, "timeUnit": "TIME_UNIT_HOUR"}
    return {"usage": part("kimi-weekly", WEEK_S, weekly_limit),
            "limits": [{"window": spec, "detail": part("kimi-rate", KIMI_RATE_WINDOW_S, rate_limit, bool(h[2] % 4))}]}


def _moonshot(token: str, *_: object) -> dict[str, Any] | Answer:
    """The Moonshot platform balance (global and China alike; the currency is the
    adapter's knowledge). Failures come as ``code != 0`` / ``status: false`` in a 200.
    One token in five has a negative cash balance (a deficit)."""
    if token.startswith(KIMI_CODE_KEY_PREFIX):
        return _key_refused("Moonshot platform")
    if "-bodydenied-" in token:
        return {"code": 1, "data": None, "scode": "unauthorized", "status": False}
    if "-bodyerror-" in token:
        return {"code": 3, "data": None, "scode": "0x3", "status": False}
    h = _seed(token)
    voucher = float(h[0] % 3 * 25)
    cash = -round(h[4] / 50, 2) if h[3] % 5 == 0 else round(h[1] / 4 + h[2] / 100, 2)
    return {"code": 0, "data": {"available_balance": round(voucher + cash, 2), "voucher_balance": voucher,
                                "cash_balance": cash}, "scode": "0x0", "status": True}


def _minimax_status(token: str) -> dict[str, Any] | None:
    if "-bodydenied-" in token:
        return {"status_code": 1004, "status_msg": "cookie is missing, log in again"}
    if "-bodyerror-" in token:
        return {"status_code": 1000, "status_msg": "unknown error"}
    return None


def _minimax_window(token: str, window: str, length_s: float, now: float, epoch: float, jitter: bool,
                    total: int) -> tuple[WindowState, int, int, int]:
    """(state, start ms, end ms, the count LEFT -- which MiniMax calls ``usage_count``)."""
    state = window_state(token, window, length_s, now, epoch)
    end = _ms(_wire_reset(token, window, state, now, jitter))
    return state, end - int(length_s * 1000), end, total - math.floor(state.used_percent / 100 * total)


def _minimax_token_plan(token: str, now: float, epoch: float, jitter: bool) -> dict[str, Any] | Answer:
    """``/v1/token_plan/remains``: the current shape (in ``data``) with a points balance as a
    string. Most tokens get ``*_remaining_percent`` strings with zero counts (as the real
    Token Plan sends); one in three gets counts only, where ``*_usage_count`` is the count
    REMAINING. Some put another model's entry before ``general``. ``-legacy-``: 404, as a
    deployment without this path answers, so the adapter falls back."""
    if "-legacy-" in token:
        return Answer(404, _error_body(404, f"No route for {TOKEN_PLAN_SUFFIX}."))
    status = _minimax_status(token)
    if status is not None:
        return {"base_resp": status}
    h = _seed(token)
    plan, total = MINIMAX_PLANS[h[0] % len(MINIMAX_PLANS)]
    counted = h[1] % 3 == 0
    entry: dict[str, Any] = {"model_name": "general"}
    for prefix, times, window, length_s in (("current_interval", ("start_time", "end_time"), "minimax-interval",
                                             FIVE_HOUR_S),
                                            ("current_weekly", ("weekly_start_time", "weekly_end_time"),
                                             "minimax-weekly", WEEK_S)):
        state, start, end, left = _minimax_window(token, window, length_s, now, epoch, jitter, total if counted else 0)
        entry[f"{prefix}_total_count"] = total if counted else 0
        entry[f"{prefix}_usage_count"] = left
        if not counted:
            entry[f"{prefix}_remaining_percent"] = str(round(100 - state.used_percent))
        entry[times[0]], entry[times[1]] = start, end
    remains = [entry]
    if h[2] % 3 == 0:
        remains.insert(0, {"model_name": "video", "current_interval_total_count": 3, "current_interval_usage_count": 3,
                           "start_time": entry["start_time"], "end_time": entry["end_time"]})
    return {"base_resp": {"status_code": 0, "status_msg": "success"},
            "data": {"current_subscribe_title": plan, "points_balance": str(h[3] * 100), "model_remains": remains}}


def _minimax_coding_plan(token: str, now: float, epoch: float, jitter: bool) -> dict[str, Any]:
    """``/v1/api/openplatform/coding_plan/remains``: the legacy shape, at the top level,
    one interval window counted (``current_interval_usage_count`` = the count LEFT), under
    a model name other than ``general`` (the adapter takes the first entry)."""
    status = _minimax_status(token)
    if status is not None:
        return {"base_resp": status}
    h = _seed(token)
    plan, total = MINIMAX_PLANS[h[0] % len(MINIMAX_PLANS)]
    _, start, end, left = _minimax_window(token, "minimax-interval", FIVE_HOUR_S, now, epoch, jitter, total)
    return {"base_resp": {"status_code": 0, "status_msg": "success"}, "current_subscribe_title": plan.split()[-1],
            "model_remains": [{"model_name": "MiniMax-M2", "current_interval_total_count": total,
                               "current_interval_usage_count": left, "start_time": start, "end_time": end}]}


def _copilot(token: str, now: float, *_: object) -> dict[str, Any]:
    """GitHub Copilot: calendar months (a quota resets at 00:00 UTC on the 1st, sent as a
    bare date), premium requests used at a rate per token and month, chat unlimited.
    ``-free-``: the free plan's shape (``monthly_quotas`` totals, ``limited_user_quotas``
    left, no ``quota_snapshots``)."""
    h = _seed(token)
    start = datetime.fromtimestamp(now, tz=timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    share = (now - start.timestamp()) / (end - start).total_seconds()

    def used(quota: str, total: int) -> int:
        rate = RATE_MIN + (RATE_MAX - RATE_MIN) * _unit(token, quota, start.isoformat(), "rate")
        return math.floor(min(1.0, rate * share) * total)

    reset_date = end.date().isoformat()
    if "-free-" in token:
        return {"copilot_plan": "free", "access_type_sku": "free_limited_copilot", "chat_enabled": True,
                "quota_reset_date": reset_date, "limited_user_reset_date": reset_date,
                "monthly_quotas": dict(COPILOT_FREE_QUOTAS),
                "limited_user_quotas": {name: total - used(name, total) for name, total in COPILOT_FREE_QUOTAS.items()}}
    plan, entitlement = COPILOT_PLANS[h[0] % len(COPILOT_PLANS)]
    left = entitlement - used("premium_interactions", entitlement)
    unlimited = {"entitlement": 0, "remaining": 0, "percent_remaining": 100.0, "unlimited": True,
                 "overage_count": 0, "overage_permitted": False}
    return {"copilot_plan": plan, "chat_enabled": True, "quota_reset_date": reset_date, "quota_snapshots": {
        "premium_interactions": {"entitlement": entitlement, "remaining": left,
                                 "percent_remaining": round(left / entitlement * 100, 1), "unlimited": False,
                                 "overage_count": 0, "overage_permitted": False, "quota_id": "premium_interactions"},
        "chat": {**unlimited, "quota_id": "chat"}, "completions": {**unlimited, "quota_id": "completions"}}}


def _nous(token: str, now: float, epoch: float, jitter: bool) -> dict[str, Any]:
    """Nous Portal: a monthly subscription period (its end exact, as a billing system
    keeps it), credits left falling through it, top-up credits per token; one token in
    five has no subscription. ``-bodyerror-``: a top-level ``error`` string;
    ``-nocredits-``: ``paid_service_access.allowed`` false with nothing left."""
    if "-bodyerror-" in token:
        return {"error": "This account is suspended; contact support."}
    if "-nocredits-" in token:
        return {"subscription": None, "paid_service_access": {"allowed": False, "purchased_credits_remaining": 0,
                                                              "total_usable_credits": 0}}
    h = _seed(token)
    purchased = round(h[1] / 20, 2)
    subscription, usable = None, purchased
    if h[0] % 5:
        plan, monthly = NOUS_PLANS[h[2] % len(NOUS_PLANS)]
        state = window_state(token, "nous-period", MONTH_S, now, epoch)
        left = round(monthly * (1 - state.used_percent / 100), 2)
        end = datetime.fromtimestamp(state.reset_at, tz=timezone.utc)
        subscription = {"plan": plan, "tier": plan.lower(),
                        "current_period_end": end.strftime("%Y-%m-%dT%H:%M:%S.") + f"{end.microsecond // 1000:03d}Z",
                        "credits_remaining": left, "monthly_credits": monthly, "rollover_credits": 0}
        usable = round(left + purchased, 2)
    return {"subscription": subscription,
            "paid_service_access": {"allowed": True, "purchased_credits_remaining": purchased,
                                    "total_usable_credits": usable}}


_BODIES = {
    ANTHROPIC_PATH: _anthropic,
    CODEX_PATHS[0]: _codex,
    CODEX_PATHS[1]: _codex,
    OPENROUTER_CREDITS_PATH: _openrouter_credits,
    OPENROUTER_KEY_PATH: _openrouter_key,
    DEEPSEEK_PATH: _deepseek,
    ZAI_PATH: _zai,
    KIMI_CODE_PATH: _kimi_code,
    KIMI_BALANCE_PATH: _moonshot,
    KIMI_CN_BALANCE_PATH: _moonshot,
    MINIMAX_PATHS[0]: _minimax_token_plan,
    MINIMAX_PATHS[1]: _minimax_coding_plan,
    MINIMAX_CN_PATHS[0]: _minimax_token_plan,
    MINIMAX_CN_PATHS[1]: _minimax_coding_plan,
    COPILOT_PATH: _copilot,
    NOUS_PATH: _nous,
}
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error",
                500: "api_error", 503: "overloaded_error", 400: "invalid_request_error", 404: "not_found_error",
                405: "invalid_request_error"}


def quota_body(provider_path: str, token: str, now: float | None = None, *, epoch: float | None = None,
               jitter: bool = True) -> dict[str, Any]:
    """The body an emulator whose clock started at ``epoch`` answers on ``provider_path``
    at ``now`` (Unix seconds; default: the current time) for a token without markers.
    ``epoch`` defaults to ``now``: what a fresh emulator answers first -- its windows'
    usage then depends on the token alone. ``jitter=False``: each reset exactly as its
    instance has it (tests compare against that)."""
    return quota_answer(provider_path, token, now, epoch=epoch, jitter=jitter).body


def quota_answer(provider_path: str, token: str, now: float | None = None, *, epoch: float | None = None,
                 jitter: bool = True) -> Answer:
    """:func:`quota_body` with its HTTP status: 200, unless the route answers that token
    otherwise (a refused kind of key, MiniMax's ``-legacy-`` 404)."""
    now = time.time() if now is None else now
    answer = _BODIES[provider_path](token, now, now if epoch is None else epoch, jitter)
    return answer if isinstance(answer, Answer) else Answer(200, answer)


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "error"), "message": message}}


def provider_urls_for(base_url: str) -> dict[str, str]:
    """Each provider's base URL on an emulator listening at ``base_url``."""
    return {"anthropic": base_url, "openai-codex": base_url + "/backend-api/codex",
            "openrouter": base_url + "/api/v1", "deepseek": base_url,
            "zai": base_url, "kimi-coding": base_url + KIMI_PREFIX, "kimi-coding-cn": base_url + KIMI_CN_PREFIX,
            "minimax": base_url + MINIMAX_PREFIX, "minimax-cn": base_url + MINIMAX_CN_PREFIX,
            "copilot": base_url, "nous": base_url}


# -- the server -------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"
    timeout = IDLE_CONNECTION_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — silence: tokens are in requests
        pass

    def _record_request(self) -> tuple[str, str | None, float]:
        """Record this request (path without query, bearer token, lower-cased headers, the
        emulator's clock); returns (path, token, clock)."""
        path = self.path.split("?", 1)[0]
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if path == COPILOT_PATH and auth[:6].lower() == "token ":   # GitHub's own scheme, beside Bearer
            token = auth[6:].strip()
        now = self.server.emulator.clock()
        self.server.emulator._record(RecordedRequest(self.command, path, token or None,
                                                     {k.lower(): v for k, v in self.headers.items()},
                                                     time.monotonic(), now))
        return path, token or None, now

    def _not_allowed(self) -> None:
        """Every usage endpoint is GET-only: record the request (so a test can see an adapter
        used the wrong method), drain its body to keep the connection usable, answer 405."""
        self._record_request()
        length = self.headers.get("Content-Length", "0")
        if "Transfer-Encoding" in self.headers or not length.isdigit() or int(length) > HUGE_BODY_BYTES:
            self.close_connection = True
        elif int(length):
            self.rfile.read(int(length))
        body = b"" if self.command == "HEAD" else json.dumps(
            _error_body(405, f"{self.command} is not allowed here.")).encode()
        self._reply(405, body, {"Allow": "GET", "Content-Type": "application/json"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _not_allowed  # noqa: N815

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (malformed request line, oversized headers, unknown
        method): small JSON like the rest, in one write, and the connection is closed."""
        code = int(code)
        self.close_connection = True
        body = b"" if self.command == "HEAD" or code in (204, 304) or code < 200 else json.dumps(
            _error_body(code, message or self.responses.get(code, ("Error",))[0])).encode()
        self._reply(code, body, {"Content-Type": "application/json"} if body else {})

    def do_GET(self) -> None:  # noqa: N802 — http.server's naming
        emulator = self.server.emulator
        path, token, now = self._record_request()
        with emulator._lock:
            gate = emulator._holds.get(token) if token else None
        if gate is not None:
            gate.wait()
            if self.server.stopping.is_set():
                self.close_connection = True
                return
        if emulator._roll_fault():
            self._serve_fault()
            return
        scripted = emulator._scripted(token, path)
        if scripted is not None:
            delay_ms = scenario_for(token).delay_ms
            if delay_ms and self.server.stopping.wait(delay_ms / 1000):
                self.close_connection = True
                return
            self._reply(scripted.status, scripted.body, scripted.headers)
            return
        plugin = emulator.plugin_routes.match(path) if emulator.plugin_routes else None
        if plugin is not None:      # a plugin's EMULATOR route: probe/tools/plugin_routes.py
            from probe.tools.plugin_routes import request_token, serve_route

            serve_route(self, emulator.plugin_routes, plugin, request_token(self.headers))
            return
        if path not in _BODIES:
            self._json(404, _error_body(404, f"No route for {path}."))
            return
        if not token:
            self._json(401, _error_body(401, "Missing bearer token."))
            return
        if path == ANTHROPIC_PATH and self.headers.get("anthropic-beta") != "oauth-2025-04-20":
            self._json(400, _error_body(400, "OAuth usage requires the anthropic-beta header."))
            return
        self._serve_scenario(path, token, scenario_for(token), now)

    def transport_markers(self, scenario: Scenario) -> bool:
        """Act out the token's transport markers (``-hang-``, ``-reset-``, ``-slow<ms>-``),
        the same on every route, built-in or a plugin's. True when the request is done
        with (hung up on, or the emulator stopped meanwhile): nothing is to be answered."""
        if scenario.hang:
            self.server.stopping.wait()
            self.close_connection = True
            return True
        if scenario.reset:
            self.close_connection = True
            self.request.shutdown(socket.SHUT_RDWR)
            return True
        if scenario.delay_ms and self.server.stopping.wait(scenario.delay_ms / 1000):
            self.close_connection = True
            return True
        return False

    def _serve_scenario(self, path: str, token: str, scenario: Scenario, now: float) -> None:
        if self.transport_markers(scenario):
            return
        if scenario.keyfail and path == OPENROUTER_KEY_PATH:
            self._json(500, _error_body(500, "Key lookup failed."))
        elif scenario.status == 429:
            self._json(429, _error_body(429, "Rate limited."), {"Retry-After": str(RETRY_AFTER_S)})
        elif scenario.status != 200:
            self._json(scenario.status, _error_body(scenario.status, f"Emulated HTTP {scenario.status}."))
        elif scenario.garbage:
            self._reply(200, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})
        elif scenario.huge:
            self._json(200, {"padding": "x" * HUGE_BODY_BYTES})
        else:   # computed at the request's arrival: a -slow- answer is as old as its delay
            answer = self.server.emulator.quota_answer(path, token, now)
            self._json(answer.status, answer.body)

    def _serve_fault(self) -> None:
        """An injected transient fault (``Emulator.set_fault_rate``): a 500, a non-JSON body
        or a dropped connection, in turn."""
        kind = self.server.emulator._next_fault_kind()
        if kind == 0:
            self._json(500, _error_body(500, "Injected fault."))
        elif kind == 1:
            self._reply(200, b"<html>injected garbage</html>", {"Content-Type": "text/html"})
        else:
            self.close_connection = True
            self.request.shutdown(socket.SHUT_RDWR)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._reply(status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Status line, headers and body in ONE write: see the module docstring."""
        reason = self.responses.get(status, ("",))[0]
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}",
                *(f"{name}: {value}" for name, value in headers.items())]
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = False      # joined in server_close(): stop() leaves no thread behind
    block_on_close = True
    #: socketserver's default backlog is 5: 64 clients connecting at once overflow it and
    #: the kernel drops SYNs, which clients retry after 1 s, 3 s, ... (measured: 1-2 s stalls).
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], emulator: "Emulator", tls: ssl.SSLContext | None = None) -> None:
        self.emulator = emulator
        self.tls = tls
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.connections_accepted = 0
        #: CPU seconds of connection threads that have finished (see ``Emulator.cpu_s``)
        self.finished_threads_cpu_s = 0.0
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hang up mid-reply all the time here (timeouts, -reset-, stop()): that is
        not worth a traceback on stderr. Anything else is logged by type, quietly."""
        import sys

        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            logging.getLogger("probe.emulator").warning("request failed: %s", type(exc).__name__)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # the handshake happens on the first read, in the connection's thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            spent = time.thread_time()
            with self._connections_lock:
                self.finished_threads_cpu_s += spent

    def process_request(self, request: Any, client_address: Any) -> None:
        """Register the connection here, on the accept thread, before its handler thread
        starts: ``stop()`` then sees every connection serve_forever ever accepted."""
        self.track(request, True)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.track(request, False)
        super().shutdown_request(request)

    def track(self, sock: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if not open_:
                self._connections.discard(sock)
                return
            self._connections.add(sock)
            self.connections_accepted += 1
            if self.stopping.is_set():      # accepted while stop() runs: end it at once
                _shutdown_quietly(sock)

    def close_connections(self) -> None:
        """Wake handler threads parked on idle keep-alive connections so they can end."""
        with self._connections_lock:    # after stopping.set(): track() covers later arrivals
            connections = list(self._connections)
        for sock in connections:
            _shutdown_quietly(sock)


def _shutdown_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Emulator:
    """``with Emulator() as emu: emu.provider_urls()`` — start on an ephemeral port, stop on exit.

    ``clock`` (default ``time.time``) is the emulator's "now" for quota bodies; ``epoch``
    (default: the clock when :meth:`start` runs) anchors the windows' instance boundaries
    (see the module docstring). Both are for tests that need to know exactly what is served."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: bool = False,
                 clock: Callable[[], float] = time.time, epoch: float | None = None, plugins: bool = False) -> None:
        self._address = (host, port)
        #: ``plugins=True``: also serve every installed plugin's EMULATOR (probe/tools/plugin_routes.py)
        self._plugins = plugins
        self.plugin_routes: "PluginRoutes | None" = None
        self.tls = tls
        self.clock = clock
        self.epoch = epoch
        #: with ``tls``: the PEM file of the throw-away CA that issued the server certificate
        self.ca_file: str | None = None
        self._ca_dir: tempfile.TemporaryDirectory | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._recorded = threading.Condition(self._lock)   # notified on every request
        #: the latest requests in full; counts are kept for all of them. A long-running
        #: emulator (``probe serve --demo``, a stress soak) must not grow without bound.
        self._requests: collections.deque[RecordedRequest] = collections.deque(maxlen=REQUEST_LOG_MAX)
        self._counts: collections.Counter[tuple[str, str | None]] = collections.Counter()
        self._scripts: dict[tuple[str, str | None], Scripted] = {}
        self._holds: dict[str, threading.Event] = {}
        self._fault_rate = 0.0
        self._faults = random.Random(0)
        self._fault_kinds = itertools.cycle(range(3))
        self._cpu_s = self._accept_cpu_s = 0.0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "Emulator":
        if self.epoch is None:
            self.epoch = self.clock()
        if self._plugins:
            from probe.tools.plugin_routes import PluginRoutes

            self.plugin_routes = PluginRoutes().start()
        self._server = _Server(self._address, self, self._server_tls() if self.tls else None)
        self._cpu_s = 0.0
        self._thread = threading.Thread(target=self._serve, args=(self._server,), name="probe-emulator", daemon=True)
        self._thread.start()
        return self

    def _serve(self, server: _Server) -> None:
        try:
            server.serve_forever(poll_interval=0.05)
        finally:
            self._accept_cpu_s = time.thread_time()

    @property
    def cpu_s(self) -> float:
        """CPU seconds this emulator's threads used, once it has stopped. A load run that
        shares its process with the emulator (``probe stress``) subtracts it from the
        process's CPU time, so the service is charged only for what the service did."""
        return self._cpu_s

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()          # releases -hang- and -slow- handlers
        with self._lock:               # ... and requests held by hold()
            for gate in self._holds.values():
                gate.set()
        if self.plugin_routes is not None:
            self.plugin_routes.close()     # releases handlers waiting on a plugin's answer
        server.shutdown()              # ends serve_forever
        server.close_connections()     # ends handlers parked on idle keep-alive sockets
        server.server_close()          # closes the listener, joins handler threads
        self._thread.join()
        self._cpu_s = server.finished_threads_cpu_s + self._accept_cpu_s
        if self._ca_dir is not None:
            self._ca_dir.cleanup()
            self._ca_dir = self.ca_file = None

    def _server_tls(self) -> ssl.SSLContext:
        """A server context with a certificate for 127.0.0.1 and localhost from a fresh CA;
        the CA's PEM goes to a private temporary file (``ca_file``)."""
        try:
            import trustme
        except ImportError:
            raise RuntimeError("the TLS emulator needs the trustme package: pip install 'quota-probe[tls]'") from None
        authority = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert(self._address[0], "127.0.0.1", "localhost").configure_cert(context)
        self._ca_dir = tempfile.TemporaryDirectory(prefix="quota-probe-emulator-ca-")
        self.ca_file = str(Path(self._ca_dir.name) / "ca.pem")
        authority.cert_pem.write_to_path(self.ca_file)
        return context

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def provider_urls(self) -> dict[str, str]:
        """Base URLs per provider, in the form ``PROBE_<PROVIDER>_BASE_URL`` expects (with
        ``plugins=True``, each served plugin's too)."""
        urls = provider_urls_for(self.base_url)
        if self.plugin_routes is not None:
            urls.update(self.plugin_routes.urls(self.base_url))
        return urls

    def env(self) -> dict[str, str]:
        """What a process must export to probe this emulator (with TLS, trusting its CA:
        ``SSL_CERT_FILE`` replaces the system's CA bundle for that process)."""
        env = {f"PROBE_{name.upper().replace('-', '_')}_BASE_URL": url for name, url in self.provider_urls().items()}
        if self.ca_file:
            env["SSL_CERT_FILE"] = self.ca_file
        return env

    @property
    def connections_accepted(self) -> int:
        return self._server.connections_accepted if self._server else 0

    def quota_body(self, provider_path: str, token: str, now: float | None = None, *,
                   jitter: bool = True) -> dict[str, Any]:
        """What this emulator answers a token without markers on ``provider_path`` at
        ``now`` (default: its clock now); a recorded request's ``now`` gives exactly the body
        that request got."""
        return self.quota_answer(provider_path, token, now, jitter=jitter).body

    def quota_answer(self, provider_path: str, token: str, now: float | None = None, *,
                     jitter: bool = True) -> Answer:
        """:meth:`quota_body` with its HTTP status (see :func:`quota_answer`)."""
        if self.epoch is None:
            raise RuntimeError("the emulator has not started: its windows have no epoch yet")
        return quota_answer(provider_path, token, self.clock() if now is None else now, epoch=self.epoch,
                            jitter=jitter)

    # -- scripting and recording ---------------------------------------------------------
    def script(self, token: str, body: Any = None, *, status: int = 200, headers: dict[str, str] | None = None,
               raw: bytes | None = None, path: str | None = None) -> None:
        """Answer requests carrying ``token`` (on ``path``, or any path) with exactly this."""
        payload = raw if raw is not None else json.dumps(body).encode()
        content_type = {} if raw is not None else {"Content-Type": "application/json"}
        with self._lock:
            self._scripts[(token, path)] = Scripted(status, payload, {**content_type, **(headers or {})})

    def hold(self, token: str) -> threading.Event:
        """Requests carrying ``token`` are recorded, then wait until the returned event is
        set (or the emulator stops): for a test that needs calls to be in flight together
        -- it waits for them with :meth:`wait_for` -- instead of betting on a delay that a
        loaded machine can outlast."""
        gate = threading.Event()
        with self._lock:
            self._holds[token] = gate
        return gate

    def set_fault_rate(self, rate: float, seed: int = 0) -> None:
        """Answer this fraction of requests (any token) with a transient fault; for stress runs."""
        with self._lock:
            self._fault_rate = max(0.0, min(1.0, rate))
            self._faults = random.Random(seed)

    def _roll_fault(self) -> bool:
        with self._lock:
            return self._fault_rate > 0 and self._faults.random() < self._fault_rate

    def _next_fault_kind(self) -> int:
        with self._lock:
            return next(self._fault_kinds)

    def _scripted(self, token: str | None, path: str) -> Scripted | None:
        if token is None:
            return None
        with self._lock:
            return self._scripts.get((token, path)) or self._scripts.get((token, None))

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._counts[(request.path, request.token)] += 1
            self._recorded.notify_all()

    def _count_locked(self, path: str | None, token: str | None) -> int:
        return sum(n for (p, t), n in self._counts.items()
                   if (path is None or p == path) and (token is None or t == token))

    def requests(self) -> list[RecordedRequest]:
        """The latest requests (up to REQUEST_LOG_MAX), oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, *, path: str | None = None, token: str | None = None) -> int:
        """How many requests matched, over the emulator's whole life (or since clear())."""
        with self._lock:
            return self._count_locked(path, token)

    def counts(self) -> dict[tuple[str, str | None], int]:
        """Every (path, token) seen and how often (token None: the request carried none),
        over the emulator's whole life (or since clear()): a load run's per-provider tally."""
        with self._lock:
            return dict(self._counts)

    def wait_for(self, n: int = 1, *, path: str | None = None, token: str | None = None,
                 timeout: float = 10.0) -> bool:
        """Block until at least ``n`` matching requests have arrived (counted like
        :meth:`count`); False on timeout. Lets a test know a request reached the server
        (e.g. a ``-hang-`` one is parked) without polling."""
        with self._recorded:
            return self._recorded.wait_for(lambda: self._count_locked(path, token) >= n, timeout)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._counts.clear()


def serve_forever_cli(host: str, port: int, tls: bool = False) -> None:
    """``probe emulator [--tls]``: run until SIGINT/SIGTERM, printing what to export."""
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Emulator(host, port, tls=tls, plugins=True) as emulator:
            print(f"Emulator listening on {emulator.base_url}", flush=True)
            for name, value in emulator.env().items():
                print(f"export {name}={value}", flush=True)
            print("Serving until Ctrl-C.", flush=True)
            while not done.wait(0.5):   # a timed wait keeps the main thread responsive to signals
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
