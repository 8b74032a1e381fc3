"""A plugin whose probe raises, quoting its credential in the exception text."""
from qp_test_plugin import record_import

record_import(__name__)
CREDENTIALS = [".env:QP_RAISES_KEY"]


def probe(ctx):
    token = ctx.credential()
    if token is None:
        ctx.fail("no_credentials", "No QP_RAISES_KEY.")
    raise ValueError(f"cannot parse the answer for {token}")
