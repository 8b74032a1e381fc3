"""Nous Portal (PROVIDERS.md § nous): the login choice (providers.nous, else the OAuth
pool entry with the latest expires_at), token_expired without a request or a refresh,
portal_base_url, and the account body (Subscription window rules, USD balances,
paid_service_access false, the error string), over recorded data."""
from __future__ import annotations

from pathlib import Path

import pytest

from workers.providers import nous
from workers.providers.nous import NousCredential
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(10)

NOW = 1_790_000_000.0                    # 2026-09-21T14:13:20Z
PAST, FUTURE = "2026-09-21T12:00:00Z", "2026-09-21T15:00:00.123456789Z"

ACCOUNT = {
    "subscription": {"plan": "Pro", "tier": 2, "current_period_end": "2026-10-01T00:00:00Z",
                     "credits_remaining": 12, "monthly_credits": 20, "rollover_credits": 3},
    "paid_service_access": {"allowed": True, "purchased_credits_remaining": "5.00", "total_usable_credits": 17},
}


def pool(*entries):
    return {"credential_pool": {"nous": list(entries)}}


def oauth(token, expires_at=FUTURE, **extra):
    return {"access_token": token, "auth_type": "oauth_device", "expires_at": expires_at, **extra}


# -- credential -----------------------------------------------------------------------------
def test_credential_places():
    assert nous.CREDENTIALS == ["auth.json:providers.nous.access_token",
                                "auth.json:credential_pool.nous[].access_token"]


@pytest.mark.parametrize("auth, chosen", [
    ({"providers": {"nous": {"access_token": "tok-p", "expires_at": FUTURE}}, **pool(oauth("tok-pool"))},
     NousCredential("tok-p", None)),
    ({"providers": {"nous": {"access_token": "tok-p", "portal_base_url": "https://staging.nous.example/"}}},
     NousCredential("tok-p", "https://staging.nous.example")),
    ({"providers": {"nous": {"access_token": ""}}, **pool(oauth("tok-pool"))}, NousCredential("tok-pool", None)),
    ({"providers": {"nous": {"refresh_token": "r"}}, **pool(oauth("tok-pool"))}, NousCredential("tok-pool", None)),
    # the latest expires_at wins, whatever the order or the time format
    (pool(oauth("early", "2026-09-22T00:00:00Z"), oauth("late", "2026-09-30T00:00:00Z"),
          oauth("mid", 1_790_500_000_000)), NousCredential("late", None)),
    # only OAuth entries, only with a token
    (pool({"access_token": "key", "auth_type": "api_key", "expires_at": "2027-01-01T00:00:00Z"},
          oauth("", "2027-01-01T00:00:00Z"), oauth("ok")), NousCredential("ok", None)),
    # an undated entry ranks below any dated one, and is not taken as expired
    (pool(oauth("undated", None), oauth("dated")), NousCredential("dated", None)),
    (pool(oauth("undated", None)), NousCredential("undated", None)),
    # ties keep the file's order; the entry's own portal goes with it
    (pool(oauth("first", FUTURE, portal_base_url="https://a.example"), oauth("second", FUTURE)),
     NousCredential("first", "https://a.example")),
    (pool(oauth("t", FUTURE, portal_base_url="ftp://files.example")), NousCredential("t", None)),
    (pool(oauth("t", FUTURE, portal_base_url="  HTTP://127.0.0.1:9/ ")), NousCredential("t", "HTTP://127.0.0.1:9")),
])
def test_select_credential(auth, chosen):
    assert nous.select_credential(auth, NOW) == chosen


@pytest.mark.parametrize("auth", [
    {}, {"providers": {"nous": None}}, {"providers": "x"}, pool(), pool("tok", None),
    pool({"access_token": "key", "auth_type": "api_key"}), pool({"access_token": "t"}),
    {"credential_pool": {"nous": {"access_token": "t", "auth_type": "oauth"}}},
    {"credential_pool": []},
])
def test_no_login(auth):
    with pytest.raises(ProbeFailure) as caught:
        nous.select_credential(auth, NOW)
    assert (caught.value.code, caught.value.message) == ("no_credentials", nous.NO_CREDENTIAL)


@pytest.mark.parametrize("auth", [
    {"providers": {"nous": {"access_token": "tok-p", "expires_at": PAST}}},
    # providers.nous is the login Hermes uses: expired, it is not swapped for a pool entry
    {"providers": {"nous": {"access_token": "tok-p", "expires_at": PAST}}, **pool(oauth("tok-pool"))},
    pool(oauth("a", PAST), oauth("b", "2026-09-20T00:00:00Z")),          # the chosen (latest) one expired
    pool(oauth("a", NOW)),                                                # at now is expired
    pool(oauth("a", int((NOW - 1) * 1000))),                              # epoch ms
])
def test_an_expired_token_is_token_expired_without_a_refresh(auth):
    with pytest.raises(ProbeFailure) as caught:
        nous.select_credential(auth, NOW)
    assert caught.value.code == "token_expired"
    assert caught.value.message.endswith("Open Hermes once to refresh the Nous login.")
    assert "tok-" not in caught.value.message


def test_the_expired_message_names_the_time():
    auth = {"providers": {"nous": {"access_token": "t", "expires_at": "2026-09-21T12:00:00.5+00:00"}}}
    with pytest.raises(ProbeFailure) as caught:
        nous.select_credential(auth, NOW)
    assert caught.value.message == ("The Nous Portal login expired at 2026-09-21T12:00:00Z. "
                                    "Open Hermes once to refresh the Nous login.")


def test_the_module_never_touches_a_refresh_token():
    source = Path(nous.__file__).read_text()
    code_lines = [line for line in source.splitlines() if not line.lstrip().startswith(("#", "*", '"""'))]
    assert not any("refresh_token" in line or "post_json" in line for line in code_lines)


# -- account --------------------------------------------------------------------------------
def test_the_account():
    assert nous.normalize(ACCOUNT) == {
        "windows": [{"label": "Subscription", "used_percent": 40.0, "reset_at": "2026-10-01T00:00:00Z",
                     "window_s": None, "detail": "$12.00 of $20.00 remaining"}],
        "balances": [{"label": "Subscription credits", "amount": 12.0, "currency": "USD"},
                     {"label": "Top-up credits", "amount": 5.0, "currency": "USD"},
                     {"label": "Total usable", "amount": 17.0, "currency": "USD"}],
        "details": ["Credits: $17.00 usable (subscription $12.00, top-up $5.00)"],
        "title": "Account credits", "plan": "Pro", "unavailable_reason": None, "source": "portal_account",
    }


@pytest.mark.parametrize("monthly, left, used", [
    (20, 12, 40.0), ("20", "20", 0.0), (20, 0, 100.0), ("10.5", "5.25", 50.0),
    (0, 0, None), (-5, 0, None), (20, 21, None), (20, -1, None), (None, 5, None), (20, None, None),
])
def test_subscription_window_rules(monthly, left, used):
    body = {"subscription": {"monthly_credits": monthly, "credits_remaining": left}}
    windows = nous.normalize(body)["windows"]
    assert [w["used_percent"] for w in windows] == ([used] if used is not None else [])


@pytest.mark.parametrize("sub, paid, details, amounts", [
    ({}, {"purchased_credits_remaining": 5, "total_usable_credits": 5}, ["Credits: $5.00 usable (top-up $5.00)"],
     [("Top-up credits", 5.0), ("Total usable", 5.0)]),
    ({"credits_remaining": 0}, {"purchased_credits_remaining": 0}, ["Credits: subscription $0.00, top-up $0.00"],
     [("Subscription credits", 0.0), ("Top-up credits", 0.0)]),
    ({}, {"total_usable_credits": "2.345"}, ["Credits: $2.35 usable"], [("Total usable", 2.35)]),
    ({}, {}, [], []),
])
def test_balances_and_the_credits_line(sub, paid, details, amounts):
    got = nous.normalize({"subscription": sub, "paid_service_access": paid})
    assert got["details"] == details
    assert [(b["label"], b["amount"]) for b in got["balances"]] == amounts
    assert all(b["currency"] == "USD" for b in got["balances"])


def test_paid_service_access_false_is_unavailable():
    body = {**ACCOUNT, "paid_service_access": {"allowed": False, "purchased_credits_remaining": 0,
                                               "total_usable_credits": 0}}
    got = nous.normalize(body)
    assert got["unavailable_reason"] == "Nous Portal reports no usable credits."
    assert got["balances"][-1] == {"label": "Total usable", "amount": 0.0, "currency": "USD"}


def test_nothing_at_all_is_unavailable_with_a_reason():
    assert nous.normalize({})["unavailable_reason"] == nous.NO_ACCOUNT
    assert nous.normalize({"subscription": "x", "paid_service_access": None})["unavailable_reason"] == nous.NO_ACCOUNT


@pytest.mark.parametrize("error, message", [("subscription lookup failed", "subscription lookup failed"),
                                            ("  a\nb  ", "a b")])
def test_an_error_string_is_a_provider_error(error, message):
    with pytest.raises(ProbeFailure) as caught:
        nous.normalize({**ACCOUNT, "error": error})
    assert (caught.value.code, caught.value.message) == ("provider_error", message)


@pytest.mark.parametrize("error", [None, "", "  ", {"code": 1}, 0])
def test_other_errors_are_ignored(error):
    assert nous.normalize({**ACCOUNT, "error": error})["plan"] == "Pro"


def test_plan_as_sent_and_a_bad_shape():
    assert nous.normalize({"subscription": {"plan": "pro_monthly", "tier": "gold"}})["plan"] == "pro_monthly"
    assert nous.normalize({"subscription": {"tier": "gold"}})["plan"] is None
    with pytest.raises(ProbeFailure) as caught:
        nous.normalize(["account"])
    assert caught.value.code == "bad_response"
