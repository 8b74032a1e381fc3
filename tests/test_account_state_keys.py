"""A provider's per-account state survives the home's first listing (issue #25 digests x
#27 accounts): a single fetch keys the home by its files' stat until a home read lists it
and keys it by its credential digests, with no credential changed in between."""
from __future__ import annotations

from probe.tools.emulator import ANTHROPIC_PATH


def test_a_single_fetchs_good_reading_stays_the_stale_answer_after_the_home_is_listed(emulator, make_home,
                                                                                     make_service):
    token = "sk-ant-oat01-keys-limited"
    home = make_home("keys-limited", anthropic=token)
    service = make_service(pool_size=1)
    emulator.script(token, emulator.quota_body(ANTHROPIC_PATH, token))
    good = service.fetch("anthropic", home=home)
    assert good.available and good.windows
    emulator.script(token, {"type": "error", "error": {"type": "rate_limit_error"}}, status=429,
                    headers={"Retry-After": "0"})
    for _ in range(2):      # the 429, then the back-off it started: both show the last reading
        [snap] = service.fetch_home(home=home, refresh=True)
        assert snap.error is not None and snap.error.code == "rate_limited"
        assert snap.stale and [w.label for w in snap.windows] == [w.label for w in good.windows]
