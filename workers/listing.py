"""Which providers a home has a credential for (SPEC §17) -- names only, never a value.

The worker answers this (``{"op": "providers"}``, ``workers.loop``) because only a child may
read a home's files and import a plugin's module; the parent caches the answer with the
home's credential fingerprint (``probe.home_list``), so it is asked again only when the
home's ``.env`` or ``auth.json`` changed.

The list, in SPEC §17's fixed order:

1. every registered provider -- built-ins in PROVIDERS.md's table order, then plugins by
   name (``workers.providers.specs``) -- for which ``workers.providers.credential_status``
   says yes: one of its ``CREDENTIALS`` places holds a value, the very rule its probe and
   ``probe doctor`` use -- or, in a Hermes profile home, the root's pool or login that the
   profile borrows holds one (SPEC §18). A plugin that declares no ``CREDENTIALS`` is listed too, and named
   in ``undeclared``: only a probe can tell (SPEC §16), and the parent drops it from the
   home's list when that probe answers ``no_credentials``. A plugin that cannot be used
   is listed, so the home shows its ``plugin_error`` instead of silently missing a card;
2. then the pool-only ids, by name: ``auth.json`` ``credential_pool`` keys no registered
   provider claims (``credential_pool.pool_only_ids``: valid names only, at least one
   entry). They are read from Hermes' own records, no request.

A file that cannot be read hides no provider (SPEC §2): a provider none of whose places
holds a value, but one of whose places lies in an unreadable file, is listed too and named
in ``unreadable`` (its probe answers ``credentials_unreadable``). Which of those the home
really had, the worker cannot know -- the parent keeps the last list read from readable
files and lists only those (``probe.home_list``). Likewise ``pool_only_unreadable`` says
that ``auth.json``'s ``credential_pool`` could not be read, so the pool-only ids are
unknown: the parent lists the last ones it saw.

The reply also carries ``digests``: each listed provider's credential digest
(``workers.digest``; hashes only), plus every registered provider whose digest is unknown
(``null``: a file its places read is unreadable). The parent rotates a provider only when
its digest changed (SPEC §6): Hermes' bookkeeping writes change no digest. A provider
absent from ``digests`` has no credential in the home.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.credentials import HomeCredentials


def home_listing(home: "HomeCredentials") -> dict[str, Any]:
    """``{"providers": [...], "pool_only": [...], "undeclared": [...], "unreadable": [...],
    "pool_only_unreadable": bool, "digests": {...}}``: the ordered list, the subsets of it
    the parent treats specially, whether the pool-only ids could be read, and the digests."""
    from workers.places import FOUND, NONE
    from workers.providers import credential_status, load, specs
    from workers.providers.credential_pool import pool_only_ids, pool_readable

    registered = [spec.name for spec in specs()]
    listed: list[str] = []
    undeclared: list[str] = []
    unreadable: list[str] = []
    digests: dict[str, str | None] = {}
    for name in registered:
        provider = load(name)
        digests[name] = _digest(name, None if provider.error is not None else provider.module, home)
        try:
            status = credential_status(provider, home)
        except Exception as exc:  # noqa: BLE001 -- a plugin's odd module must not hide the rest
            print(f"workers: checking the {name} credential places raised {type(exc).__name__}", file=sys.stderr,
                  flush=True)
            status = FOUND   # listed: its probe says what is wrong
        if status == NONE:
            status = _borrows_root(provider, home)
            if status == NONE:
                continue
        listed.append(name)
        if status != FOUND:
            unreadable.append(name)
        elif provider.error is None and not provider.declares_credentials:
            undeclared.append(name)
    pool_only = pool_only_ids(home, registered)
    digests = {name: digest for name, digest in digests.items() if name in listed or digest is None}
    digests.update((name, _digest(name, name, home)) for name in pool_only)
    return {"providers": listed + pool_only, "pool_only": pool_only, "undeclared": undeclared,
            "unreadable": unreadable, "pool_only_unreadable": not pool_readable(home), "digests": digests}


def _borrows_root(provider: Any, home: "HomeCredentials") -> str:
    """A Hermes profile home with no credential of its own for the provider, whose root
    pools one for it (SPEC §18: Hermes uses the root's rows, and the root's login, for a
    provider with none in the profile's pool): the profile has that provider too --
    ``FOUND``, a credential like its own (never ``unreadable``: the parent would narrow it
    away at the home's next list). The root's ``auth.json`` unreadable: the profile cannot
    tell whether it borrows, so a provider with a pool place is listed ``unreadable``, as
    for its own unreadable file, and the parent keeps it only where the last readable list
    had it -- a bad root file hides no card of its profiles."""
    from workers.accounts import _pool_key, enumerate_accounts, root_of
    from workers.credentials import load_home
    from workers.places import FOUND, NONE

    if provider.error is not None or provider.module is None or (root_dir := root_of(home)) is None:
        return NONE
    try:
        root = load_home(root_dir)
        accounts = enumerate_accounts(provider, home, 0.0, lambda _path: root, resolve=False)
    except Exception as exc:  # noqa: BLE001 -- a plugin's odd module must not hide the rest
        print(f"workers: reading the root's {provider.spec.name} accounts raised {type(exc).__name__}",
              file=sys.stderr, flush=True)
        return NONE
    if any(account.token for account in accounts):
        return FOUND
    return UNKNOWN if root.auth_error and _pool_key(provider) is not None else NONE


#: the root's ``auth.json`` could not be read: whether the profile borrows is unknown
UNKNOWN = "unknown"


def _digest(name: str, module: Any, home: "HomeCredentials") -> str | None:
    """``workers.digest.provider_digest``; None ("unknown") for a plugin whose module
    misbehaves while being read."""
    from workers.digest import provider_digest

    try:
        return provider_digest(module, home, name if module is not None and not isinstance(module, str) else None)
    except Exception as exc:  # noqa: BLE001 -- a plugin's odd module must not hide the rest
        print(f"workers: digesting the {name} credentials raised {type(exc).__name__}", file=sys.stderr, flush=True)
        return None

