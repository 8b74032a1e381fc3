"""SPEC §2, §11: no path of the server reaches a client. Every HTTP test of the suite is
checked centrally (``conftest.no_server_path_in_http_bodies``); these are the parent-side
messages that held one, and the check itself."""
from __future__ import annotations

import json
import shutil

import httpx
import pytest

from probe import ProbeConfig, ProbeService
from probe.server import create_app
from support import RunningApp, server_paths_in

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served(emulator, make_home):
    """A backend serving ``ok``, ``gone`` (deleted after configuring), ``broken`` (a
    truncated auth.json) and ``link`` (a symlink to ``ok``)."""
    ok = make_home("paths-ok", deepseek="sk-paths-ok")
    gone = make_home("paths-gone", deepseek="sk-paths-gone")
    broken = make_home("paths-broken", deepseek="sk-paths-broken")
    (broken / "auth.json").write_text('{"providers": {"nous": {"access_token": "nous-')
    link = ok.parent / "paths-link"
    link.symlink_to(ok)
    shutil.rmtree(gone)
    homes = {"ok": ok, "gone": gone, "broken": broken, "link": link}
    with ProbeService(ProbeConfig(provider_urls=emulator.provider_urls())) as service:
        with RunningApp(create_app(service, homes, "paths-token-0123456789", poll_s=7)) as running:
            with httpx.Client(base_url=running.url, timeout=30) as client:
                yield client


def test_a_missing_home_is_named_by_its_id(served):
    for params in ({"home": "gone"}, {"home": "gone", "provider": "deepseek"}):
        body = served.get("/api/quota", params=params).json()
        snap = body[0] if isinstance(body, list) else body
        assert snap["home"] == "gone" and snap["error"]["code"] == "home_not_found"
        assert snap["error"]["message"] == "The directory of home 'gone' does not exist."


def test_a_file_is_named_relative_to_the_home(served):
    snap = served.get("/api/quota", params={"home": "broken", "provider": "nous"}).json()
    assert not snap["available"] and snap["error"]["message"].startswith("auth.json ")


def test_a_symlinked_home_answers_like_its_target(served):
    via_link = served.get("/api/quota", params={"home": "link", "provider": "deepseek"}).json()
    assert via_link["home"] == "link" and via_link["available"]


def test_the_central_check_sees_a_path_in_either_form(tmp_path):
    home = tmp_path / "alice"
    assert server_paths_in(json.dumps({"message": f"{home}/.env:2 is malformed"}).encode())
    assert server_paths_in(f"Home directory {home} does not exist.".encode())
    assert not server_paths_in(b'{"message": ".env:2 is malformed", "home": "alice"}')


def test_replicas_with_the_home_at_other_paths_answer_alike(tmp_path):
    """Two backends serving home id ``alice`` from different directories: the same reading
    (a worker's message naming the file with its directory, as 0.3 workers wrote it) is the
    same body and the same ETag on both."""
    from probe.server import etag_of, public_dict
    from probe.snapshot import ProbeInfo, Snapshot

    def served_by(directory) -> dict:
        snap = Snapshot.failed("nous", str(directory), "no_credentials",
                               f"{directory}/auth.json is not valid JSON (line 1).",
                               probe=ProbeInfo("warm", 1.0))
        return public_dict(snap, "alice", directory)

    one, two = served_by(tmp_path / "a" / "alice"), served_by(tmp_path / "b" / "profiles" / "alice")
    assert one["error"]["message"] == "auth.json is not valid JSON (line 1)."
    assert {**one, "fetched_at": None} == {**two, "fetched_at": None}
    assert etag_of({**one, "fetched_at": "x"}) == etag_of({**two, "fetched_at": "x"})


def test_only_the_home_directory_itself_is_rewritten():
    from probe.server import public_dict
    from probe.snapshot import ProbeInfo, Snapshot

    snap = Snapshot(provider="deepseek", home="/srv/homes/alice", available=False,
                    unavailable_reason="/srv/homes/alice/.env:3 is malformed; see /srv/homes/alice.",
                    details=("kept: /srv/homes/alice2/notes", "/srv/homes/alice.bak"), probe=ProbeInfo("warm", 1.0))
    shown = public_dict(snap, "alice")
    assert shown["unavailable_reason"] == ".env:3 is malformed; see home alice."
    assert shown["details"] == ["kept: /srv/homes/alice2/notes", "/srv/homes/alice.bak"]   # other names, untouched
