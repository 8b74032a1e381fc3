"""``minimax-cn``: the MiniMax China platform (``api.minimaxi.com``), same paths, fallback
and normalization as ``minimax`` (:mod:`workers.providers.minimax`, one implementation);
only the credential and the default base URL differ (PROVIDERS.md § minimax / minimax-cn).
"""
from __future__ import annotations

from typing import Any

from workers.providers.minimax import normalize, read

__all__ = ["LABEL", "CREDENTIALS", "DEFAULT_BASE_URL", "normalize", "probe"]

LABEL = "MiniMax (China)"
CREDENTIALS = [".env:MINIMAX_CN_API_KEY", 'auth.json:credential_pool."minimax-cn"[].access_token']
DEFAULT_BASE_URL = "https://api.minimaxi.com"
NO_CREDENTIAL = ("No MiniMax China credential in this home (MINIMAX_CN_API_KEY in .env, or a minimax-cn "
                 "entry in auth.json's credential_pool).")


def probe(ctx: Any) -> dict[str, Any]:
    token = ctx.credential()
    if not token:
        ctx.fail("no_credentials", NO_CREDENTIAL)
    return read(ctx, DEFAULT_BASE_URL, token)
