"""DeepSeek API balance (PROVIDERS.md § deepseek): one detail line per currency."""
from __future__ import annotations

from typing import Any

from workers.credentials import HomeCredentials
from workers.http import ProviderHttp, base_url
from workers.result import CURRENCY_SYMBOLS, ProbeFailure, as_dict, money, number, snapshot

NAME = "deepseek"
LABEL = "DeepSeek"
DEFAULT_BASE_URL = "https://api.deepseek.com"
PATH = "/user/balance"
TITLE = "Account balance"
SOURCE = "balance_api"
INSUFFICIENT = "DeepSeek API balance is insufficient."
#: DeepSeek's symbols: CNY ¥, USD $; any other currency is written by its code alone
SYMBOLS = {"CNY": "¥", "USD": "$"}


def _amount(value: float, code: str) -> str:
    return money(value, code) if code in SYMBOLS and code in CURRENCY_SYMBOLS else f"{value:,.2f} {code}"


def balance_line(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    code = info.get("currency").upper() if isinstance(info.get("currency"), str) and info.get("currency") else None
    total = number(info.get("total_balance"))
    if code is None or total is None:
        return None
    head = f"Balance: {_amount(total, code)}" + (f" {code}" if code in SYMBOLS else "")
    parts = []
    for key, name in (("granted_balance", "granted"), ("topped_up_balance", "topped up")):
        value = number(info.get(key))
        if value:
            parts.append(f"{name} {_amount(value, code)}")
    return head + (f" ({', '.join(parts)})" if parts else "")


def normalize(body: Any) -> dict[str, Any]:
    data = as_dict(body, LABEL)
    infos = data.get("balance_infos")
    if infos is not None and not isinstance(infos, list):
        raise ProbeFailure("bad_response", "The DeepSeek balance response has an unexpected shape.")
    details = [line for line in map(balance_line, infos or []) if line]
    reason = INSUFFICIENT if data.get("is_available") is False and not details else None
    return snapshot(NAME, title=TITLE, source=SOURCE, details=details, unavailable_reason=reason)


def probe(home: HomeCredentials, http: ProviderHttp, timeout_s: float) -> dict[str, Any]:
    found = home.env_value("DEEPSEEK_API_KEY")
    if found is None:
        raise ProbeFailure("no_credentials", "No DEEPSEEK_API_KEY in this home's .env.")
    body = http.get_json(base_url(NAME, DEFAULT_BASE_URL) + PATH, token=found[1], provider_label=LABEL,
                         timeout_s=timeout_s)
    return normalize(body)
