"""``kimi-coding-cn``: a Moonshot China platform key, always the balance at
``api.moonshot.cn`` in CNY (PROVIDERS.md § kimi-coding).

Only the credential, base URL and currency differ from ``kimi-coding``'s balance path,
so the answer is read by :func:`workers.providers.kimi.normalize_balance` — one
implementation of the Moonshot rules. A ``sk-kimi-`` key found here is still sent to
the balance endpoint: the PROVIDERS.md rule for this provider has no Kimi Code branch.
"""
from __future__ import annotations

from typing import Any

from workers.providers.kimi import BALANCE_PATH, MOONSHOT_CN_BASE_URL, normalize_balance
from workers.result import run_pure

LABEL = "Kimi Coding (China)"
CREDENTIALS = [".env:KIMI_CN_API_KEY", 'auth.json:credential_pool."kimi-coding-cn"[].access_token']
CURRENCY = "CNY"
#: the default base (``probe doctor`` shows it; ``PROBE_KIMI_CODING_CN_BASE_URL`` replaces it)
DEFAULT_BASE_URL = MOONSHOT_CN_BASE_URL
NO_CREDENTIAL = ("No Kimi China credential in this home (KIMI_CN_API_KEY in .env, or a kimi-coding-cn "
                 "entry in auth.json's credential_pool).")


def normalize(body: Any) -> dict[str, Any]:
    """The §16 result from the China balance endpoint (amounts in CNY, ``¥`` lines)."""
    return normalize_balance(body, CURRENCY)


def probe(ctx: Any) -> dict[str, Any]:
    token = ctx.credential()
    if not token:
        ctx.fail("no_credentials", NO_CREDENTIAL)
    body = ctx.get_json(ctx.base_url(DEFAULT_BASE_URL) + BALANCE_PATH, token=token)
    return run_pure(ctx, normalize, body, secret=token)
