"""A well-behaved plugin: a credential from .env or auth.json, a POST that the server
refuses (405) and a GET as the fallback, a result using every field of the contract."""
from qp_test_plugin import record_import

record_import(__name__)

LABEL = "QP Good"
CREDENTIALS = [".env:QP_GOOD_KEY", 'auth.json:credential_pool."qp-good"[].access_token']


def probe(ctx):
    token = ctx.credential()
    if token is None:
        ctx.fail("no_credentials", "No QP_GOOD_KEY in this home's .env.")
    url = ctx.base_url("https://qp-good.invalid/api") + "/qp/usage"
    try:
        body = ctx.post_json(url, {"want": "usage"}, token=token)
    except ctx.Failure as exc:
        if exc.status != 405:
            raise
        body = ctx.get_json(url, token=token, headers={"X-QP": "fallback"})
    return {
        "title": "QP plan usage", "plan": body["plan"], "source": "qp_api",
        "windows": [
            {"label": "Session", "used_percent": body["used"], "reset_at": body["reset_ms"], "window_s": 18000,
             "detail": f"{body['used']} % of the session"},
            {"label": "Weekly", "used_percent": body["weekly"], "reset_at": body["weekly_reset"], "window_s": "604800"},
        ],
        "balances": [{"label": "Points", "amount": body["points"], "currency": "points"}],
        "details": [f"{body['plan']} plan"],
    }
