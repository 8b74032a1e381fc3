"""SPEC §18's pure rules (probe.pool_view) and the snapshot's ``accounts`` / ``pool`` border:
best per window, the next account and its reason, when one frees up, the summary, and a
worker's account list validated before anything reads it."""
from __future__ import annotations

import pytest

from probe import pool_view
from probe.snapshot import Account, ProbeError, ProbeInfo, Snapshot, Window


def win(label: str, used: float, reset: str | None = "2026-12-01T00:00:00Z") -> Window:
    return Window(label, used, 100.0 - used, reset)


def acct(account_id: str, *windows: Window, status: str = "available", **kw) -> Account:
    kw.setdefault("probed", True)
    return Account(account_id, f"label {account_id}", "manual", status, windows=windows, **kw)


def snap(*accounts: Account) -> Snapshot:
    return Snapshot("openai-codex", "/h", True, accounts=accounts)


def test_best_per_window_is_the_most_remaining_case_insensitively_and_a_tie_keeps_the_earlier():
    a = acct("a", win("Session", 40), win("Weekly", 10))
    b = acct("b", win("session", 20), win("Weekly", 10))
    c = acct("c", win("Session", 0), status="exhausted")   # not available: never the best
    best = {b.window: (b.account_id, n) for b, n in pool_view.best_windows([a, b, c])}
    assert best == {"session": ("b", 2), "Weekly": ("a", 2)}


def test_next_account_has_the_most_room_in_its_tightest_window_and_says_so():
    a = acct("a", win("Session", 10), win("Weekly", 90))    # tightest: Weekly 10 % left
    b = acct("b", win("Session", 50), win("Weekly", 38))    # tightest: Weekly 62 % left... no: Session 50
    c = acct("c", win("Session", 30), win("Weekly", 38))    # tightest: Weekly 62 % left
    nxt = pool_view.next_account([a, b, c])
    assert (nxt.id, nxt.reason) == ("c", "most room in its tightest window: Weekly 62% left")
    tie = pool_view.next_account([acct("x", win("Weekly", 50)), acct("y", win("Weekly", 50))])
    assert tie.id == "x"


def test_next_account_without_windows_is_the_first_available_and_none_when_none_is():
    nxt = pool_view.next_account([acct("a", status="dead"), acct("b"), acct("c")])
    assert (nxt.id, nxt.reason) == ("b", pool_view.NO_WINDOWS_REASON)
    assert pool_view.next_account([acct("a", status="exhausted")]) is None


def test_next_reset_at_is_the_earliest_retry_after_or_full_window_reset_only_when_none_is_available():
    a = acct("a", status="exhausted", retry_after="2026-12-01T10:00:00Z")
    b = acct("b", win("Weekly", 100, "2026-12-01T09:00:00Z"), status="unavailable")
    c = acct("c", win("Weekly", 99, "2026-12-01T08:00:00Z"), status="unavailable")   # not full: not a reset
    assert pool_view.next_reset_at([a, b, c]) == "2026-12-01T09:00:00Z"
    assert pool_view.next_reset_at([a, acct("d")]) is None
    assert pool_view.next_reset_at([acct("e", status="dead")]) is None


def test_summary_counts_and_the_assembled_snapshot():
    limited = ProbeError("rate_limited", "429")
    accounts = (acct("a", win("Weekly", 40), plan="Plus"),
                acct("b", status="exhausted", retry_after="2026-12-01T10:00:00Z", error=limited, probed=False),
                acct("c", status="unavailable", error=ProbeError("unauthorized", "401")),
                acct("d", win("Weekly", 10), plan="Pro"))
    out = pool_view.assemble(snap(*accounts))
    assert out.pool.to_dict() | {"best": None, "next_account": None} == {
        "total": 4, "available": 2, "exhausted": 1, "dead": 0, "failed": 1, "queried": 2, "plans": ["Plus", "Pro"],
        "next_reset_at": None, "best": None, "next_account": None}
    assert out.available and out.error is None and out.plan is None
    assert out.details == ("2/4 accounts available", "1 exhausted", "1 failed")
    assert [(w.label, w.remaining_percent, w.detail) for w in out.windows] == [("Weekly", 90.0, "Best of 2 accounts")]
    assert out.pool.next_account.id == "d"


def test_nothing_available_gives_the_first_probed_error_or_the_first_accounts_and_the_reset():
    cooling = ProbeError("rate_limited", "cooling down")
    a = acct("a", status="exhausted", retry_after="2026-12-01T10:00:00Z", error=cooling, probed=False)
    b = acct("b", status="unavailable", error=ProbeError("unauthorized", "401"))
    out = pool_view.assemble(snap(a, b))
    assert not out.available and out.error.code == "unauthorized" and out.pool.next_reset_at == "2026-12-01T10:00:00Z"
    out = pool_view.assemble(snap(a, acct("c", status="exhausted", retry_after="2026-12-01T09:00:00Z",
                                          error=cooling, probed=False)))
    assert out.error == cooling and out.pool.next_reset_at == "2026-12-01T09:00:00Z" and out.pool.queried == 0


def test_one_account_is_the_snapshot_as_before_with_pool_null():
    one = acct("a", win("Weekly", 40), plan="Plus", details=("Credits balance: $4.20",))
    out = pool_view.assemble(snap(one))
    assert out.pool is None and out.plan == "Plus" and out.windows == one.windows
    assert out.details == ("Credits balance: $4.20",) and len(out.accounts) == 1


def test_accounts_and_pool_round_trip_through_json():
    out = pool_view.assemble(snap(acct("a", win("Weekly", 40)), acct("b", win("Weekly", 20))))
    data = out.to_dict()
    assert data["pool"]["next_account"]["id"] == "b" and [a["id"] for a in data["accounts"]] == ["a", "b"]
    assert set(data["accounts"][0]) == {"id", "label", "source", "status", "plan", "windows", "balances", "details",
                                        "unavailable_reason", "error", "stale", "retry_after", "fetched_at"}
    back = Snapshot.from_dict(data)
    assert back.to_dict() == data
    assert Snapshot.from_dict({k: v for k, v in data.items() if k not in ("accounts", "pool")}).accounts == ()


def child_account(**changes):
    return {"id": "a1b2c3", "label": "work", "source": "manual", "status": "available", "probed": True,
            "windows": [{"label": "Weekly", "used_percent": 10.0, "remaining_percent": 90.0, "reset_at": None}],
            **changes}


@pytest.mark.parametrize("bad", [
    [child_account(status="great")],
    [child_account(label="x" * 65)],
    [child_account(label="line\nbreak")],
    [child_account(), child_account()],            # the same id twice
    [child_account(id=f"id{i}") for i in range(257)],
    "not a list",
    [child_account(error={"code": "nope", "message": "x"})],
])
def test_a_malformed_account_list_from_a_worker_is_refused_at_the_border(bad):
    with pytest.raises(ValueError):
        Snapshot.from_child({"provider": "openai-codex", "available": True, "accounts": bad},
                            home="/h", probe=ProbeInfo("warm", 1.0))


def test_a_workers_probed_account_gets_the_parents_clock_and_pace_an_unprobed_one_no_time():
    data = {"provider": "openai-codex", "available": True,
            "accounts": [child_account(fetched_at="1999-01-01T00:00:00Z", stale=True),
                         child_account(id="d", status="dead", probed=False)]}
    got = Snapshot.from_child(data, home="/h", probe=ProbeInfo("warm", 1.0))
    assert got.accounts[0].fetched_at == got.fetched_at and not got.accounts[0].stale and got.accounts[0].probed
    assert got.accounts[1].fetched_at is None and not got.accounts[1].probed


def test_the_summary_lines_add_up_to_the_total():
    """Work profile, seen: ``0/2 accounts available`` and ``1 exhausted`` -- the other
    account (a borrowed row with no token here) was in no line."""
    no_token = acct("t", status="unavailable", probed=False)
    out = pool_view.assemble(snap(acct("e", status="exhausted", retry_after="2026-12-01T10:00:00Z", probed=False),
                                  no_token))
    assert out.details == ("0/2 accounts available", "1 exhausted", "1 unavailable")
