"""The accounts of a pool-only id (SPEC §17: a ``credential_pool`` key no adapter claims,
e.g. ``xai``, ``gemini``, ``openai``), one per row, by SPEC §18's rules -- from Hermes'
own records, no request. The parent asks with ``{"op": "pool_accounts", "provider": P}``
(``workers.loop``); hermes-webui's local-pool answer (SPEC §19) lists them.

A pool-only id's snapshot (``workers.providers.credential_pool``) keeps its one detail line
per entry; this is the same rows as accounts: ``id`` (the row's, else its place), ``label``
(``workers.accounts.clean_label``), ``source``, ``status`` and ``retry_after``. The rules
are ``workers.accounts``' own -- rows by ``priority`` then file order, machine-wide rows
(``gh_cli``, ``claude_code``) skipped, Hermes' cooldown (``cooldown_until``, with its 60 s
rule for the only account not ``dead``) -- so a pool-only id's accounts agree with every
other provider's. ``status``: ``dead``; ``exhausted`` until ``retry_after``; else
``available`` (an exhausted row with no known end is usable again: Hermes clears it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.accounts import MAX_ACCOUNTS, _rows, clean_label, cooldown_until, label_secrets, machine_wide
from workers.providers.credential_pool import unreadable
from workers.result import UNREADABLE, ProbeFailure, iso_utc

if TYPE_CHECKING:
    from workers.credentials import HomeCredentials

MAX_ID = 64


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text if text and len(text) <= limit and text.isprintable() else None


def pool_only_accounts(provider: str, home: "HomeCredentials", now: float) -> list[dict[str, Any]] | None:
    """The accounts of ``provider``'s ``credential_pool`` rows; None when the home's
    ``auth.json`` has no row for it. Raises ProbeFailure ``credentials_unreadable`` when
    the file (or its ``credential_pool``) cannot be read, as a probe of the id answers
    (SPEC §2): an unreadable file is not an empty pool."""
    why = unreadable(home)
    if why is not None:
        raise ProbeFailure(UNREADABLE, why)
    indexed = [(index, row) for index, row in _rows(home.auth, provider) if not machine_wide(row)][:MAX_ACCOUNTS]
    if not indexed:
        return None
    rows = [row for _, row in indexed]
    secrets = label_secrets(rows, home)
    sole = sum(row.get("last_status") != "dead" for row in rows) == 1
    accounts = []
    for position, (index, row) in enumerate(indexed, start=1):
        status, retry_after = "available", None
        if row.get("last_status") == "dead":
            status = "dead"
        elif row.get("last_status") == "exhausted":
            until = cooldown_until(row, sole and row.get("last_status") != "dead")
            if until is not None and until > now:
                status, retry_after = "exhausted", iso_utc(until)
        raw_label = row.get("label") if _text(row.get("label"), 100_000) else row.get("source")
        accounts.append({"id": _text(row.get("id"), MAX_ID) or f"auth.json:credential_pool.{provider}[{index}]",
                         "label": clean_label(raw_label, position, secrets),
                         "source": _text(row.get("source"), 200), "status": status, "retry_after": retry_after})
    return accounts
