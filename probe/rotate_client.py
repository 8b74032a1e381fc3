"""Client side of ``probe rotate --server``: ``POST /api/rotate`` with the bearer token,
sent straight to the backend -- never through a proxy the environment names."""
from __future__ import annotations

import httpx


class RotateError(Exception):
    pass


def rotate_remote(server: str, home_id: str, provider: str | None, token: str | None,
                  timeout_s: float = 10.0) -> None:
    """Ask a running backend to rotate ``home_id``. Raises RotateError with a sentence a
    person can act on (never echoing the token)."""
    if not token:
        raise RotateError("A bearer token is needed: pass --token or set PROBE_TOKEN.")
    url = server.rstrip("/") + "/api/rotate"
    try:
        # An explicit transport turns off the environment's proxies (HTTP_PROXY, ALL_PROXY...)
        # and nothing else (SSL_CERT_FILE still counts): the bearer token goes to the backend
        # and to no proxy on the way, loopback or not. A backend behind a proxy is reached
        # through a reverse proxy's own URL instead.
        with httpx.Client(transport=httpx.HTTPTransport(), timeout=timeout_s) as client:
            response = client.post(url, json={"home": home_id, "provider": provider},
                                   headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise RotateError(f"Could not reach {server} ({type(exc).__name__}).") from None
    if response.status_code == 204:
        return
    reasons = {401: "the backend wants a bearer token", 403: "the backend rejected the token",
               404: f"the backend has no home {home_id!r}"}
    raise RotateError(f"Rotation failed: {reasons.get(response.status_code, f'HTTP {response.status_code}')}.")
