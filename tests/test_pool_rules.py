"""One rule for a home's ``credential_pool`` rows wherever they are read (SPEC §2, §18):
the pool-only snapshot (``workers.providers.credential_pool``), a pool-only id's accounts
(``workers.pool_accounts``, hermes-webui's local pool) and every provider's accounts
(``workers.accounts``) skip the machine-wide rows and use Hermes' one cooldown; an
unreadable ``auth.json`` is ``credentials_unreadable`` everywhere, never "no pool"."""
from __future__ import annotations

import json
import time

import pytest

from workers.credentials import load_home
from workers.pool_accounts import pool_only_accounts
from workers.providers.credential_pool import pool_only_ids, read_records
from workers.result import ProbeFailure

pytestmark = pytest.mark.timeout(60)


def home_with(tmp_path, auth_text: str):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".env").write_text("")
    (home / "auth.json").write_text(auth_text)
    return home


def test_the_pool_only_snapshot_skips_machine_wide_rows_and_their_place_in_the_sole_rule(tmp_path):
    """A ``gh_cli`` row is not the home's: it is no detail line, it keeps nothing usable, and
    the only other row is the sole one -- Hermes' 60 s cooldown, long over -- as in its accounts."""
    now = time.time()
    rows = [{"id": "gh0001", "label": "gh", "source": "gh_cli", "access_token": "gho_machine_wide_0123456789"},
            {"id": "w00001", "label": "work", "access_token": "xai-work-0123456789", "last_status": "exhausted",
             "last_status_at": now - 120, "last_error_code": 429}]
    home = load_home(home_with(tmp_path, json.dumps({"credential_pool": {"xai": rows, "gemini": rows[:1]}})))
    snap = read_records("xai", home, now)
    assert snap["error"] is None and len(snap["details"]) == 1
    assert snap["details"][0].startswith("work: ok since ")
    assert [a["status"] for a in pool_only_accounts("xai", home, now)] == ["available"]
    assert pool_only_ids(home, registered=()) == ["xai"]   # gemini holds a machine-wide row only


def test_an_unreadable_auth_json_is_credentials_unreadable_for_a_pool_only_ids_accounts(tmp_path):
    home = load_home(home_with(tmp_path, '{"credential_pool": {"xai": ['))
    with pytest.raises(ProbeFailure) as caught:
        pool_only_accounts("xai", home, time.time())
    assert caught.value.code == "credentials_unreadable" and "auth.json" in caught.value.message
    assert str(tmp_path) not in caught.value.message
    assert read_records("xai", home, time.time())["error"]["message"] == caught.value.message   # one message


def test_the_service_says_credentials_unreadable_not_no_pool(tmp_path, make_service):
    """Through a real worker: ``ProbeService.pool_accounts`` of a home whose ``auth.json`` is
    cut mid-write raises ``credentials_unreadable`` naming the file, never a server path."""
    from probe.home_config import Unanswered

    path = home_with(tmp_path, json.dumps({"credential_pool": {"xai": [{"id": "abcdef", "label": "work",
                                                                         "access_token": "k" * 20}]}}))
    service = make_service(pool_size=1)
    assert [a.id for a in service.pool_accounts("xai", path)] == ["abcdef"]
    (path / "auth.json").write_text('{"credential_pool": {"xai": [')
    with pytest.raises(Unanswered) as caught:
        service.pool_accounts("xai", path)
    assert caught.value.code == "credentials_unreadable" and "auth.json" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
