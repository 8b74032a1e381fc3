"""``ctx``: everything a provider module may use during one probe (SPEC §16).

Built-in providers and plugins get the same object, so the contract a plugin author reads
is the one quota-probe's own providers are written against -- there is no side door. A
provider never touches the home's files, the HTTP client or the clock itself; the worker
owns all three (read-only credentials, one kept-alive client, the caller's deadline).

    ctx.name                      the provider name
    ctx.label                     its display name (the module's LABEL, else the name)
    ctx.deadline_s                seconds left before the caller's deadline
    ctx.env(NAME)                 a value of the home's .env (None when absent or empty)
    ctx.auth()                    the home's parsed auth.json ({} when absent); a copy
    ctx.values(place)             every non-empty string at one place (workers.places)
    ctx.lookup(place)             every value at one place, any JSON type (an object, a list
                                  entry): for a provider that needs fields beside the token
    ctx.credential()              the first non-empty value over the module's CREDENTIALS --
                                  or, when the probe reads one account of several (SPEC §18),
                                  that account's token
    ctx.account                   None, or the account this probe reads (``workers.accounts``):
                                  ``.id``, ``.token`` and ``.fields`` (a copy of the object that
                                  held the token: its pool row, ``providers.<P>``; ``{}`` for .env)
    ctx.base_url(default)         PROBE_<NAME>_BASE_URL or ``default``, no trailing '/'
    ctx.get_json(url, *, token=None, headers=None)
    ctx.post_json(url, body, *, token=None, headers=None)
    ctx.Failure                   the exception every ctx call raises (workers.result.ProbeFailure):
                                  .code, .message, .status (HTTP status or None), .retry_after_s
    ctx.fail(code, message, *, retry_after_s=None)   raise ctx.Failure

While ``ctx.account`` is set, ``ctx.values(place)`` of a place the module declares in
``CREDENTIALS`` answers that account's token only, so a provider (or plugin) that looks its
credential up itself reads the account it was asked for, never the first one of the home.

An ``.env`` or ``auth.json`` that cannot be read raises ``credentials_unreadable`` naming
the file relative to the home (and the line), from the accessor that needed that file only;
a ``.env`` value that is a 1Password reference comes back resolved (``workers.onepassword``)
or raises why it cannot be (``ctx.env``, ``ctx.values``, ``ctx.credential``). A place
string that does not parse raises ``bad_response`` saying why (it is the module's own
mistake, not the account's).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from workers import places as place_rules
from workers.http import base_url as _base_url
from workers.result import ProbeFailure

if TYPE_CHECKING:
    from workers.credentials import HomeCredentials
    from workers.http import ProviderHttp


class ProbeContext:
    """One probe's view of its home, its HTTP client and its deadline."""

    Failure = ProbeFailure

    def __init__(self, name: str, home: "HomeCredentials", http: "ProviderHttp", timeout_s: float, *,
                 label: str | None = None, credentials: Sequence[place_rules.Place] = (),
                 account: Any = None) -> None:
        self.name = name
        self.label = label or name
        self._home = home
        self._http = http
        self._deadline = time.monotonic() + timeout_s
        self._places = tuple(credentials)
        self._auth_copy: dict[str, Any] | None = None
        self.account = account

    def __repr__(self) -> str:   # never a value: only what the provider is
        return f"<ProbeContext {self.name!r}, {self.deadline_s:.2f} s left>"

    @property
    def deadline_s(self) -> float:
        """Seconds left before the caller's deadline (0 once it has passed)."""
        return max(0.0, self._deadline - time.monotonic())

    # -- the home (read-only) ------------------------------------------------------------
    def env(self, name: str) -> str | None:
        found = self._home.env_value(name)
        return None if found is None else found[1]

    def auth(self) -> dict[str, Any]:
        """A deep copy, made once per probe: a provider that edits what it got cannot
        change what the next probe (or another provider in the same worker) reads."""
        if self._auth_copy is None:
            self._auth_copy = copy.deepcopy(self._home.auth_json())
        return self._auth_copy

    def values(self, place: str) -> list[str]:
        parsed = self._place(place)
        if self.account is not None and parsed in self._places:
            return [self.account.token]
        return place_rules.values(parsed, self._home)

    def lookup(self, place: str) -> list[Any]:
        """Values are deep copies, for the same reason as :meth:`auth`."""
        return copy.deepcopy(place_rules.lookup(self._place(place), self._home))

    def credential(self) -> str | None:
        if self.account is not None:
            return self.account.token
        found = place_rules.first_credential(self._places, self._home)
        return None if found is None else found.value

    def _place(self, place: str) -> place_rules.Place:
        try:
            return place_rules.parse(place)
        except place_rules.PlaceError as exc:
            raise ProbeFailure("bad_response", f"The {self.label} provider asked for a malformed place: {exc}.") \
                from None

    # -- HTTP ----------------------------------------------------------------------------
    def base_url(self, default: str) -> str:
        return _base_url(self.name, default)

    def get_json(self, url: str, *, token: str | None = None, headers: dict[str, str] | None = None) -> Any:
        return self._http.request_json("GET", url, token=token, headers=headers, provider_label=self.label,
                                       timeout_s=self.deadline_s)

    def post_json(self, url: str, body: Any, *, token: str | None = None,
                  headers: dict[str, str] | None = None) -> Any:
        return self._http.request_json("POST", url, token=token, headers=headers, body=body,
                                       provider_label=self.label, timeout_s=self.deadline_s)

    # -- failing -------------------------------------------------------------------------
    def fail(self, code: str, message: str, *, retry_after_s: float | None = None) -> NoReturn:
        raise ProbeFailure(code, message, retry_after_s=retry_after_s)
