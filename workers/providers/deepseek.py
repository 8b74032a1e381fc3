"""DeepSeek API balance (PROVIDERS.md § deepseek): one detail line per currency.

``Balance: ¥12.30 CNY (granted ¥2.00, topped up ¥10.30)``; a zero part is left out, and
so are the parentheses when both are zero. Only CNY (``¥``) and USD (``$``) get a
symbol, as PROVIDERS.md says; any other currency is written by its code alone
(``Balance: 1.50 EUR (granted 1.50 EUR)``), never twice.

Choices where PROVIDERS.md is silent: a ``balance_infos`` entry without a currency or a
numeric total is skipped; ``balance_infos`` of another type than a list is
``bad_response``; ``is_available: true`` with no usable entry gets ``unavailable_reason``
"DeepSeek reported no balance for this account."
"""
from __future__ import annotations

from typing import Any

from workers.result import ProbeFailure, as_dict, money, number

NAME = "deepseek"
LABEL = "DeepSeek"
#: the pool rows are accounts of their own since 0.4 (SPEC §18)
CREDENTIALS = [".env:DEEPSEEK_API_KEY", "auth.json:credential_pool.deepseek[].access_token"]
DEFAULT_BASE_URL = "https://api.deepseek.com"
PATH = "/user/balance"
TITLE = "Account balance"
SOURCE = "balance_api"
INSUFFICIENT = "DeepSeek API balance is insufficient."
NO_BALANCE = "DeepSeek reported no balance for this account."
#: the only currencies DeepSeek's lines write with a symbol (PROVIDERS.md), even though
#: :data:`workers.result.CURRENCY_SYMBOLS` knows more
SYMBOLS = {"CNY": "¥", "USD": "$"}


def _amount(value: float, code: str) -> str:
    return money(value, code, symbols=SYMBOLS)


def balance_line(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    currency = info.get("currency")
    code = currency.strip().upper() if isinstance(currency, str) and currency.strip() else None
    total = number(info.get("total_balance"))
    if code is None or total is None or len(code) > 12:
        return None
    head = f"Balance: {_amount(total, code)}" + (f" {code}" if code in SYMBOLS else "")
    parts = []
    for key, name in (("granted_balance", "granted"), ("topped_up_balance", "topped up")):
        value = number(info.get(key))
        if value:
            parts.append(f"{name} {_amount(value, code)}")
    return head + (f" ({', '.join(parts)})" if parts else "")


def normalize(body: Any) -> dict[str, Any]:
    """The balance body as a SPEC §16 result (workers.validate finishes it)."""
    data = as_dict(body, LABEL)
    infos = data.get("balance_infos")
    if infos is not None and not isinstance(infos, list):
        raise ProbeFailure("bad_response", "The DeepSeek balance response has an unexpected shape.")
    usable = [info for info in infos or [] if balance_line(info)]
    details = [balance_line(info) for info in usable]
    reason = None
    if not details:
        reason = INSUFFICIENT if data.get("is_available") is False else NO_BALANCE
    balances = [{"label": "Balance", "amount": info.get("total_balance"), "currency": info["currency"].strip().upper()}
                for info in usable]
    return {"title": TITLE, "source": SOURCE, "details": details, "unavailable_reason": reason, "balances": balances}


def probe(ctx: Any) -> dict[str, Any]:
    token = ctx.credential()
    if token is None:
        ctx.fail("no_credentials", "No DEEPSEEK_API_KEY in this home's .env.")
    return normalize(ctx.get_json(ctx.base_url(DEFAULT_BASE_URL) + PATH, token=token))
