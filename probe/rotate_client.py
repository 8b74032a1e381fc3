"""Client side of ``probe rotate --server``: ``POST /api/rotate`` with the bearer token."""
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
        response = httpx.post(url, json={"home": home_id, "provider": provider},
                              headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise RotateError(f"Could not reach {server} ({type(exc).__name__}).") from None
    if response.status_code == 204:
        return
    reasons = {401: "the backend wants a bearer token", 403: "the backend rejected the token",
               404: f"the backend has no home {home_id!r}"}
    raise RotateError(f"Rotation failed: {reasons.get(response.status_code, f'HTTP {response.status_code}')}.")
