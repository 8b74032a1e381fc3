"""The worker's one HTTP client and the provider error mapping (SPEC §8).

One ``httpx.Client`` per worker process, created on first use and reused by every probe,
so a warm worker keeps its keep-alive connection to each provider host: that is most of
what "warm" buys. Status mapping, the 1 MiB body cap and the JSON decoding live here so
the adapters only ever see a parsed body or a ProbeFailure.

Messages name the provider and the HTTP status, never the token, a header value or the
response body (a provider error body may echo the request).
"""
from __future__ import annotations

import email.utils
import json
import os
import re
import ssl
import time
from typing import Any

import httpx

from workers.result import ProbeFailure

MAX_BODY_BYTES = 1024 * 1024
#: an error body up to this size is read (and dropped) so the connection stays reusable
DRAIN_ERROR_BODY_BYTES = 64 * 1024
#: what an HTTP/1.1 header value may carry here: visible ASCII and inner spaces/tabs
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")


def base_url(provider: str, default: str) -> str:
    """``PROBE_<PROVIDER>_BASE_URL`` (set by the parent from config or its environment),
    else the production default; no trailing slash."""
    override = os.environ.get(f"PROBE_{provider.upper().replace('-', '_')}_BASE_URL", "").strip()
    return (override or default).rstrip("/")


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3);
    None when absent or unparseable. A date in the past is 0."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if 0 <= seconds < float("inf") else None


_ssl_context: tuple[tuple[str | None, str | None], ssl.SSLContext] | None = None
#: the environment variables an ``httpx.Client(trust_env=True)`` is built from
CLIENT_ENV_NAMES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
                    "http_proxy", "https_proxy", "all_proxy", "no_proxy")


def client_env_key() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) for name in CLIENT_ENV_NAMES)


def ssl_context() -> ssl.SSLContext:
    """The TLS set-up httpx would build for this environment (``SSL_CERT_FILE``, else
    ``SSL_CERT_DIR``, else certifi's bundle), built once per process and kept.

    Loading a CA bundle costs ~30 ms of CPU. The template process builds it once before it
    forks, so every worker forked from it starts with it already in memory (shared pages);
    a changed variable builds a new one."""
    global _ssl_context
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    if _ssl_context is None or _ssl_context[0] != key:
        _ssl_context = (key, httpx.create_ssl_context(trust_env=True))
    return _ssl_context[1]


class ProviderHttp:
    """The worker's HTTP client: lazily built, shared by all probes, closed by the loop.

    ``transport`` exists for tests that need a response the emulator cannot produce."""

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._client: httpx.Client | None = None
        self._client_env: tuple[str | None, ...] = ()
        self._transport = transport

    def match_environment(self) -> httpx.Client:
        """The client, rebuilt if the proxy or CA variables changed since it was built: a
        worker forked from a spare takes its environment after its client exists. Asked
        once, when the worker is about to serve; nothing changes the environment later."""
        if self._client is not None and self._client_env != client_env_key():
            self.close()
        return self.client()

    def client(self) -> httpx.Client:
        if self._client is None:
            self._client_env = client_env_key()
            # trust_env: an operator's HTTPS_PROXY / SSL_CERT_FILE apply to the workers too
            self._client = httpx.Client(trust_env=True, verify=ssl_context(), follow_redirects=False,
                                        transport=self._transport,
                                        limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=60))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def get_json(self, url: str, *, token: str | None, provider_label: str, timeout_s: float,
                 headers: dict[str, str] | None = None) -> Any:
        """GET ``url``; see :meth:`request_json`."""
        return self.request_json("GET", url, token=token, provider_label=provider_label, timeout_s=timeout_s,
                                 headers=headers)

    def request_json(self, method: str, url: str, *, token: str | None, provider_label: str, timeout_s: float,
                     headers: dict[str, str] | None = None, body: Any = None) -> Any:
        """Send ``method`` to ``url`` with ``Accept: application/json``, the bearer token
        when there is one (``headers`` may carry their own ``Authorization`` instead: it
        wins, whatever its case) and, for a ``body``, that body as JSON; return the decoded
        JSON answer, all within ``timeout_s``.

        Raises ProbeFailure: 401 unauthorized, 403 forbidden, 429 rate_limited (with
        ``retry_after_s``), 5xx and other non-2xx (redirects included: they are not
        followed) provider_error -- each with ``status`` --, a body over 1 MiB or not JSON
        bad_response, no answer in time timeout, an unreachable host provider_error, a
        credential that cannot be put in a header no_credentials.
        """
        request_headers = {"Accept": "application/json"}
        if token is not None:
            request_headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            request_headers["Content-Type"] = "application/json"
        for name, value in (headers or {}).items():
            for existing in [k for k in request_headers if isinstance(name, str) and k.lower() == name.lower()]:
                del request_headers[existing]
            request_headers[name] = value
        if not all(isinstance(name, str) and isinstance(value, str) for name, value in request_headers.items()):
            raise ProbeFailure("bad_response", f"The {provider_label} request has a header that is not a string.")
        if not all(_HEADER_VALUE.fullmatch(value) for value in request_headers.values()):
            raise ProbeFailure("no_credentials", f"The {provider_label} credential contains characters "
                                                 "that cannot be sent in an HTTP header.")
        if timeout_s <= 0:
            raise ProbeFailure("timeout", f"{provider_label} had no time left before the deadline.")
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        deadline = time.monotonic() + timeout_s
        try:
            with self.client().stream(method, url, headers=request_headers, content=content,
                                      timeout=httpx.Timeout(timeout_s)) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    _drain(response, deadline)
                    raise _status_failure(provider_label, status, response)
                raw = _read_capped(response, provider_label, deadline)
        except httpx.TimeoutException:
            raise ProbeFailure("timeout", f"{provider_label} did not answer within {timeout_s:.3g} s.") from None
        except httpx.InvalidURL:
            raise ProbeFailure("provider_error", f"The {provider_label} base URL is not a valid URL.") from None
        except httpx.HTTPError as exc:
            if _caused_by(exc, ssl.SSLCertVerificationError):
                raise ProbeFailure("provider_error", f"Could not reach {provider_label}: its TLS certificate is not "
                                                     "trusted here (check SSL_CERT_FILE / SSL_CERT_DIR).") from None
            raise ProbeFailure("provider_error", f"Could not reach {provider_label} ({type(exc).__name__}).") from None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):   # UnicodeDecodeError is a ValueError
            raise ProbeFailure("bad_response", f"The {provider_label} response is not valid JSON.") from None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _read_capped(response: httpx.Response, provider_label: str, deadline: float) -> bytes:
    """The body, refusing more than MAX_BODY_BYTES: a declared Content-Length over the cap
    fails before reading; an undeclared one stops at the first byte past it. The overall
    deadline also holds against a server that drips the body slowly."""
    too_big = ProbeFailure("bad_response", f"The {provider_label} response is larger than 1 MiB.")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_big
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_big
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("body not complete in time")
    return bytes(body)


def _drain(response: httpx.Response, deadline: float) -> None:
    """Read a small error body so the keep-alive connection can serve the next probe
    (an unread body makes httpx close it); a large or slow one is abandoned instead."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_ERROR_BODY_BYTES:
        return
    size = 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > DRAIN_ERROR_BODY_BYTES or time.monotonic() > deadline:
                return
    except httpx.HTTPError:
        return   # the status already says what went wrong


def _status_failure(provider_label: str, status: int, response: httpx.Response) -> ProbeFailure:
    if status == 401:
        return ProbeFailure("unauthorized", f"{provider_label} rejected the credential (HTTP 401); sign in again.",
                            status=status)
    if status == 403:
        return ProbeFailure("forbidden", f"{provider_label} refused access (HTTP 403).", status=status)
    if status == 429:
        retry = retry_after_s(response.headers.get("retry-after"))
        # "Retry-After 0 s" (a 0, a date already past) tells the reader nothing: the hint
        # only when there is a wait to name
        hint = f" (Retry-After {retry:.0f} s)" if retry is not None and round(retry) >= 1 else ""
        return ProbeFailure("rate_limited", f"{provider_label} is rate-limiting usage requests{hint}.",
                            retry_after_s=retry, status=status)
    if status >= 500:
        return ProbeFailure("provider_error", f"{provider_label} had a server error (HTTP {status}).", status=status)
    return ProbeFailure("provider_error", f"{provider_label} answered HTTP {status}.", status=status)
