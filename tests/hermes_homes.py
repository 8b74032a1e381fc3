"""A Hermes root as Hermes itself writes one (issue #25), for tests that must read real
homes rather than convenient ones.

:func:`build_hermes_root` writes::

    <root>/                      the default profile (``~/.hermes``)
        config.yaml              model.provider, credential_pool_strategies
        .env                     BOM, CRLF, ``export`` lines, comments, quotes, a multi-line
                                 PEM, ``${VAR}``, a bare ``export NAME``, an ``op://`` value,
                                 a classic ``ghp_`` GITHUB_TOKEN (each messy part toggleable)
        auth.json                ``providers`` logins (openai-codex JWTs, nous) and
                                 ``credential_pool`` rows of every source Hermes writes
        profiles/work/           a named profile: its own config.yaml, .env, auth.json
        profiles/scratch/        a profile Hermes created but never logged in from

Shapes follow hermes-agent (``hermes_cli/auth.py``, ``agent/credential_pool.py``; see
PROVIDERS.md "Accounts"): pool rows carry ``id``, ``label``, ``auth_type``, ``priority``,
``source``, ``last_status``/``last_status_at``/``last_error_code``/``last_error_reset_at``
(resets in epoch seconds, epoch milliseconds and ISO), ``request_count``; rows Hermes does
not own (``env:*``, ``gh_cli``, ``claude_code``) are stripped of their token and carry a
``secret_fingerprint`` instead.

Every token is an emulator token (``probe/tools/emulator.py``): it carries a per-root tag
so a test can tell whose credential answered, and ``slow={"openrouter": 3000}`` puts the
emulator's ``-slow<ms>-`` marker into that provider's token.

:func:`bookkeeping_write` rewrites ``auth.json`` the way Hermes does on ordinary use
(``request_count``, ``last_status_at``, priorities re-ordered under ``round_robin``,
``updated_at``; atomic replace, mode 0600) -- same tokens, so no credential changed.

Why the messy ``.env`` parts are switches: python-dotenv (SPEC §2) accepts them all, the
0.3 hand parser refused a multi-line value and a bare ``export NAME`` (and then hid every
``.env`` provider): :data:`NEEDS_DOTENV` names those parts, so a test can ask for a home
either reader takes. An ``op://`` value makes its provider answer ``no_credentials``
without ``op`` on the PATH, and a classic GitHub token lists no Copilot; leave them out for
a home where every provider answers.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

#: the messy ``.env`` parts :func:`build_hermes_root` can leave out
MESSY_PARTS = frozenset({"pem", "bare_export", "expansion", "op_reference", "classic_github"})
#: the parts the 0.3 hand parser refused (the whole file with them)
NEEDS_DOTENV = frozenset({"pem", "bare_export"})

_roots = itertools.count()


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def codex_jwt(account_id: str, sub: str, marker: str, *, exp: int = 4_070_908_800) -> str:
    """An (unsigned) OpenAI access token as Codex logins hold it: the ``https://api.openai.com/auth``
    claim with ``chatgpt_account_id``, ``sub``, ``exp`` (2099 by default). The emulator marker
    (and the root's tag) sit in the signature part, where they change no claim."""
    header = _b64({"alg": "RS256", "typ": "JWT"})
    payload = _b64({"sub": sub, "exp": exp, "iat": 1_765_000_000, "iss": "https://auth.openai.com",
                    "https://api.openai.com/auth": {"chatgpt_account_id": account_id, "chatgpt_plan_type": "plus",
                                                    "user_id": f"user-{sub}"}})
    return f"{header}.{payload}.sig-{marker}"


def fingerprint(token: str) -> str:
    """Hermes' ``secret_fingerprint`` of a stripped row: sha256, first 16 hex digits."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class HermesRoot:
    """What :func:`build_hermes_root` wrote, and what a reader should make of it."""

    root: Path
    tag: str
    #: profile name -> home directory ("default" is the root itself)
    homes: dict[str, Path] = field(default_factory=dict)
    #: profile name -> provider -> the token its probe sends (the one the emulator sees)
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    #: the messy .env parts written into the root's .env
    messy: frozenset[str] = frozenset()

    def home(self, profile: str = "default") -> Path:
        return self.homes[profile]

    def expected_providers(self, profile: str = "default") -> list[str]:
        """The home's provider list as SPEC §17 orders it (built-ins in PROVIDERS.md order,
        then pool-only ids by name), once the home is read as Hermes reads it (python-dotenv,
        a classic-only GitHub token lists no Copilot)."""
        if profile == "default":
            built_in = ["anthropic", "openai-codex", "openrouter"]
            if "op_reference" in self.messy:
                built_in.append("deepseek")   # listed; its reference is never sent (SPEC §2)
            built_in += ["zai", "nous"]
            return built_in + ["gemini", "xai"]
        # A profile also has what it borrows (SPEC §18): for a provider with no rows in its
        # own pool, Hermes uses the root's rows and login -- the root's Codex, OpenRouter,
        # Anthropic (PKCE) and Nous; not z.ai, whose stripped env: row needs the profile's
        # own .env, nor the pool-only ids.
        if profile == "work":
            return ["anthropic", "openai-codex", "openrouter", "kimi-coding", "nous"]
        return ["anthropic", "openai-codex", "openrouter", "nous"]

    def served_providers(self, profile: str = "default") -> list[str]:
        """Providers whose probe reaches the emulator with a token of :attr:`tokens`."""
        return list(self.tokens.get(profile, {}))


def _token(prefix: str, tag: str, provider: str, slow: dict[str, int]) -> str:
    marker = f"-slow{slow[provider]}-" if provider in slow else ""
    return f"{prefix}-{tag}{marker}"


def _env_text(tokens: dict[str, str], tag: str, messy: frozenset[str]) -> str:
    """The root's ``.env`` in the shape ``hermes setup`` and hand edits leave it."""
    lines = ["# Hermes Agent environment configuration",
             "# Generated by `hermes setup`; edit freely.",
             "",
             "# -- LLM providers --",
             f'export OPENROUTER_API_KEY="{tokens["openrouter"]}"',
             f"ANTHROPIC_TOKEN='{tokens['anthropic']}'",
             f"GLM_API_KEY={tokens['zai']}   # z.ai coding plan",
             f"GEMINI_API_KEY=gemini-{tag}",
             "OPENAI_BASE_URL=",
             ""]
    if "op_reference" in messy:
        lines += ["# kept in 1Password", "DEEPSEEK_API_KEY=op://Private/DeepSeek API/credential", ""]
    if "classic_github" in messy:
        lines += ["# for Hermes' GitHub tools (a classic token: Copilot does not take it)",
                  f"GITHUB_TOKEN=ghp_{tag.replace('-', '')}classic0000000000", ""]
    if "pem" in messy:
        lines += ['GOOGLE_SERVICE_ACCOUNT_KEY="-----BEGIN PRIVATE KEY-----',
                  "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7fake",
                  "c2VjcmV0LW5vdC1yZWFsbHktYS1rZXktanVzdC1hLXRlc3QtZml4dHVyZQ==",
                  '-----END PRIVATE KEY-----"', ""]
    if "bare_export" in messy:
        lines += ["# exported from the shell that runs Hermes", "export TERMINAL_ENV", ""]
    lines += ["TERMINAL_CWD=/srv/hermes-work", "BROWSER_HEADLESS=true  # trailing comment"]
    if "expansion" in messy:
        lines += ['HERMES_WORKDIR="${TERMINAL_CWD}/hermes"']
    return "\ufeff" + "\r\n".join(lines) + "\r\n"


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    """Atomically, as Hermes' ``atomic_json_write`` does (temp file, fsync, replace)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    _write(path, json.dumps(data, indent=2) + "\n")


def _root_auth(tokens: dict[str, str], tag: str, now: float) -> tuple[dict, dict[str, str]]:
    """The root's ``auth.json`` and the extra tokens it holds (second accounts, pool-only keys)."""
    codex_second = codex_jwt("acct-team-7f3a", "auth0|bob", f"{tag}-second")
    pkce = f"sk-ant-oat01-pkce-{tag}"
    manual_or = f"sk-or-v1-manual-{tag}"
    auth = {
        "version": 1,
        "active_provider": "openai-codex",
        "providers": {
            "openai-codex": {
                "tokens": {"access_token": tokens["openai-codex"], "refresh_token": f"rt-codex-{tag}",
                           "id_token": codex_jwt("acct-team-7f3a", "auth0|alice", f"{tag}-id"),
                           "account_id": "acct-team-7f3a"},
                "last_refresh": _iso(now - 3600), "auth_mode": "chatgpt"},
            "nous": {
                "portal_base_url": "https://portal.nousresearch.com",
                "inference_base_url": "https://inference-api.nousresearch.com/v1",
                "client_id": "hermes-cli", "scope": "inference:mint_agent_key", "token_type": "Bearer",
                "access_token": f"nous-at-{tag}", "refresh_token": f"nous-rt-{tag}",
                "obtained_at": _iso(now - 600), "expires_in": 900, "expires_at": "2099-01-01T00:00:00Z",
                "agent_key": tokens["nous"], "agent_key_id": "ak_31", "agent_key_expires_at": _iso(now + 86400),
                "tls": {"insecure": False, "ca_bundle": None}},
        },
        "credential_pool": {
            "openai-codex": [
                {"id": "a1b2c3", "label": "alice@example.com", "auth_type": "oauth", "priority": 0,
                 "source": "device_code", "access_token": tokens["openai-codex"],
                 "refresh_token": f"rt-codex-{tag}", "last_status": "ok", "last_status_at": int(now - 120),
                 "last_error_code": None, "last_error_reason": None, "last_error_reset_at": None,
                 "base_url": "https://chatgpt.com/backend-api/codex", "request_count": 41},
                {"id": "d4e5f6", "label": "bob@example.com", "auth_type": "oauth", "priority": 1,
                 "source": "manual:device_code", "access_token": codex_second,
                 "refresh_token": f"rt-codex2-{tag}", "last_status": "exhausted", "last_status_at": int(now - 900),
                 "last_error_code": 429, "last_error_reason": "usage_limit_reached",
                 "last_error_reset_at": int((now + 2 * 3600) * 1000),      # epoch milliseconds
                 "base_url": "https://chatgpt.com/backend-api/codex", "request_count": 7},
            ],
            "anthropic": [
                {"id": "0c1d2e", "label": "claude-max", "auth_type": "oauth", "priority": 0,
                 "source": "manual:hermes_pkce", "access_token": pkce, "refresh_token": f"sk-ant-ort01-{tag}",
                 "expires_at_ms": int((now + 3 * 3600) * 1000), "last_status": "ok",
                 "last_status_at": int(now - 60), "request_count": 112},
                {"id": "3f4a5b", "label": "ANTHROPIC_TOKEN", "auth_type": "oauth", "priority": 1,
                 "source": "env:ANTHROPIC_TOKEN", "secret_fingerprint": fingerprint(tokens["anthropic"]),
                 "last_status": None, "last_status_at": None, "request_count": 0},
                {"id": "6c7d8e", "label": "claude_code", "auth_type": "oauth", "priority": 2,
                 "source": "claude_code", "secret_fingerprint": "sha256:9f86d081884c7d65",
                 "last_status": "exhausted", "last_status_at": int(now - 300), "last_error_code": 429,
                 "last_error_reset_at": _iso(now + 4 * 3600), "request_count": 3},   # ISO reset
            ],
            "openrouter": [
                {"id": "9e0f1a", "label": "OPENROUTER_API_KEY", "auth_type": "api_key", "priority": 0,
                 "source": "env:OPENROUTER_API_KEY", "secret_fingerprint": fingerprint(tokens["openrouter"]),
                 "last_status": "ok", "last_status_at": int(now - 30), "request_count": 530},
                {"id": "2b3c4d", "label": "api-key-2", "auth_type": "api_key", "priority": 1, "source": "manual",
                 "access_token": manual_or, "last_status": "exhausted", "last_status_at": int(now - 1800),
                 "last_error_code": 402, "failure_reason": "billing",
                 "last_error_reset_at": _iso(now + 6 * 3600), "request_count": 12},
            ],
            "copilot": [
                {"id": "5e6f7a", "label": "gh auth token", "auth_type": "oauth", "priority": 0, "source": "gh_cli",
                 "secret_fingerprint": "sha256:2c26b46b68ffc68f", "last_status": None, "request_count": 0},
            ],
            "nous": [
                {"id": "8b9c0d", "label": "nous portal", "auth_type": "oauth", "priority": 0,
                 "source": "device_code", "access_token": f"nous-at-{tag}", "refresh_token": f"nous-rt-{tag}",
                 "agent_key": tokens["nous"], "expires_at": "2099-01-01T00:00:00Z",
                 "portal_base_url": "https://portal.nousresearch.com", "last_status": "ok",
                 "last_status_at": int(now - 45), "request_count": 9},
            ],
            "xai": [   # no adapter: shown from Hermes' own records (pool-only), never requested
                {"id": "1e2f3a", "label": "api-key-1", "auth_type": "api_key", "priority": 0, "source": "manual",
                 "access_token": f"xai-{tag}-one", "last_status": "exhausted", "last_status_at": int(now - 200),
                 "last_error_code": 429, "last_error_reset_at": int(now + 5400),   # epoch seconds
                 "request_count": 77},
                {"id": "4b5c6d", "label": "api-key-2", "auth_type": "api_key", "priority": 1, "source": "manual",
                 "access_token": f"xai-{tag}-two", "last_status": "ok", "last_status_at": int(now - 20),
                 "request_count": 4},
            ],
            "gemini": [
                {"id": "7e8f9a", "label": "GEMINI_API_KEY", "auth_type": "api_key", "priority": 0,
                 "source": "env:GEMINI_API_KEY", "secret_fingerprint": fingerprint(f"gemini-{tag}"),
                 "last_status": "ok", "last_status_at": int(now - 3000), "request_count": 2},
            ],
        },
        "updated_at": _iso(now),
    }
    return auth, {"openai-codex#2": codex_second, "anthropic#pkce": pkce, "openrouter#manual": manual_or}


def build_hermes_root(base: Path, *, messy: frozenset[str] | set[str] | None = None,
                      slow: dict[str, int] | None = None, tag: str | None = None) -> HermesRoot:
    """Write a Hermes root under ``base`` (see the module docstring) and return what it holds.

    ``messy``: the messy ``.env`` parts to write (default: all of :data:`MESSY_PARTS`; pass
    ``MESSY_PARTS - NEEDS_DOTENV`` for a file the 0.3 parser reads too). ``slow``: provider ->
    milliseconds the emulator waits before answering it. ``tag``: put into every token
    (default: unique per call, as the emulator is shared by the session)."""
    messy = MESSY_PARTS if messy is None else frozenset(messy)
    unknown = messy - MESSY_PARTS
    if unknown:
        raise ValueError(f"unknown messy parts: {sorted(unknown)}")
    slow = dict(slow or {})
    tag = tag or f"h{next(_roots)}x{time.monotonic_ns() % 10**9}"
    root = base / f"hermes-{tag}"
    now = time.time()
    tokens = {
        "anthropic": _token("sk-ant-oat01-hermes", tag, "anthropic", slow),
        "openai-codex": codex_jwt("acct-team-7f3a", "auth0|alice", tag + ("-slow%d-" % slow["openai-codex"]
                                                                          if "openai-codex" in slow else "")),
        "openrouter": _token("sk-or-v1-hermes", tag, "openrouter", slow),
        "zai": _token("glm-hermes", tag, "zai", slow),
        "nous": _token("sk-nous-agent", tag, "nous", slow),   # Nous is probed with its agent_key
    }
    root.mkdir(parents=True)
    os.chmod(root, 0o700)
    _write(root / "config.yaml", "model:\n  provider: openai-codex\n  default: gpt-5.3-codex\n"
                                  "credential_pool_strategies:\n  openai-codex: round_robin\n"
                                  "  anthropic: fill_first\n", 0o644)
    _write(root / ".env", _env_text(tokens, tag, messy))
    auth, _extra = _root_auth(tokens, tag, now)
    _write_json(root / "auth.json", auth)

    work = root / "profiles" / "work"
    work.mkdir(parents=True)
    work_tokens = {"anthropic": _token("sk-ant-oat01-work", tag, "anthropic", slow),
                   "kimi-coding": _token("sk-kimi-work", tag, "kimi-coding", slow)}
    _write(work / "config.yaml", "model:\n  provider: anthropic\n  default: claude-sonnet-4-6\n", 0o644)
    _write(work / ".env", f"CLAUDE_CODE_OAUTH_TOKEN={work_tokens['anthropic']}\nKIMI_API_KEY={work_tokens['kimi-coding']}\n")
    _write_json(work / "auth.json", {"version": 1, "providers": {}, "credential_pool": {
        "anthropic": [{"id": "aa11bb", "label": "CLAUDE_CODE_OAUTH_TOKEN", "auth_type": "oauth", "priority": 0,
                       "source": "env:CLAUDE_CODE_OAUTH_TOKEN", "secret_fingerprint": fingerprint(work_tokens["anthropic"]),
                       "last_status": "ok", "last_status_at": int(now - 10), "request_count": 1}]},
        "updated_at": _iso(now)})

    scratch = root / "profiles" / "scratch"
    scratch.mkdir(parents=True)
    _write(scratch / "config.yaml", "model:\n  provider: auto\n", 0o644)

    return HermesRoot(root=root, tag=tag, homes={"default": root, "work": work, "scratch": scratch},
                      tokens={"default": tokens, "work": work_tokens, "scratch": {}}, messy=messy)


def bookkeeping_write(home: Path, *, now: float | None = None) -> None:
    """Rewrite ``home/auth.json`` as Hermes does after using its pool: every row's
    ``request_count`` up by one and ``last_status_at`` now, each pool's rows rotated one
    place with ``priority`` renumbered (``round_robin``), ``updated_at`` now -- same tokens,
    same accounts. Atomic replace (a new inode), as Hermes writes."""
    path = home / "auth.json"
    data = json.loads(path.read_text())
    now = time.time() if now is None else now
    for rows in data.get("credential_pool", {}).values():
        if not isinstance(rows, list) or not rows:
            continue
        rows.append(rows.pop(0))
        for priority, row in enumerate(rows):
            row["priority"] = priority
            row["request_count"] = int(row.get("request_count") or 0) + 1
            if row.get("last_status") == "ok" or row.get("last_status") is None:
                row["last_status"] = "ok"
                row["last_status_at"] = int(now)
    data["updated_at"] = _iso(now)
    _write_json(path, data)
