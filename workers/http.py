"""The worker's one HTTP client and the provider error mapping (SPEC §8).

One ``httpx.Client`` per worker process, created on first use and reused by every probe,
so a warm worker keeps its keep-alive connection to each provider host: that is most of
what "warm" buys. Status mapping, the 1 MiB body cap and the JSON decoding live here so
the adapters only ever see a parsed body or a ProbeFailure.
"""
from __future__ import annotations

import json
import os
from typing import Any

import httpx

from workers.result import ProbeFailure

MAX_BODY_BYTES = 1024 * 1024


def base_url(provider: str, default: str) -> str:
    """``PROBE_<PROVIDER>_BASE_URL`` (set by the parent from config or its environment),
    else the production default; no trailing slash."""
    override = os.environ.get(f"PROBE_{provider.upper().replace('-', '_')}_BASE_URL", "").strip()
    return (override or default).rstrip("/")


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class ProviderHttp:
    def __init__(self) -> None:
        self._client: httpx.Client | None = None

    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(trust_env=True, follow_redirects=False,
                                        limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=60))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def get_json(self, url: str, *, token: str, provider_label: str, timeout_s: float,
                 headers: dict[str, str] | None = None) -> Any:
        """GET ``url`` with the bearer token and return the decoded JSON body.

        Raises ProbeFailure: 401 unauthorized, 403 forbidden, 429 rate_limited (with the
        Retry-After seconds), 5xx and other non-2xx provider_error, a body over 1 MiB or not
        JSON bad_response, a timeout timeout, an unreachable host provider_error. Messages
        name the provider and the status, never the token or the body.
        """
        request_headers = {"Accept": "application/json", "Authorization": f"Bearer {token}", **(headers or {})}
        try:
            with self.client().stream("GET", url, headers=request_headers, timeout=httpx.Timeout(timeout_s)) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    response.close()  # the body is not needed; do not wait for it
                    raise _status_failure(provider_label, status, response)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise ProbeFailure("bad_response", f"The {provider_label} response is larger than 1 MiB.")
        except httpx.TimeoutException:
            raise ProbeFailure("timeout", f"{provider_label} did not answer in time.") from None
        except httpx.HTTPError as exc:
            raise ProbeFailure("provider_error", f"Could not reach {provider_label} ({type(exc).__name__}).") from None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ProbeFailure("bad_response", f"The {provider_label} response is not valid JSON.") from None


def _status_failure(provider_label: str, status: int, response: httpx.Response) -> ProbeFailure:
    if status == 401:
        return ProbeFailure("unauthorized", f"{provider_label} rejected the credential (HTTP 401); sign in again.")
    if status == 403:
        return ProbeFailure("forbidden", f"{provider_label} refused access (HTTP 403).")
    if status == 429:
        retry = _retry_after_s(response)
        hint = f" (Retry-After {int(retry)} s)" if retry is not None else ""
        return ProbeFailure("rate_limited", f"{provider_label} is rate-limiting usage requests{hint}.",
                            retry_after_s=retry)
    if status >= 500:
        return ProbeFailure("provider_error", f"{provider_label} had a server error (HTTP {status}).")
    return ProbeFailure("provider_error", f"{provider_label} answered HTTP {status}.")
