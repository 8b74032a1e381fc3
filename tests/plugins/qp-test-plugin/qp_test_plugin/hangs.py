"""A plugin whose probe never returns."""
import threading

from qp_test_plugin import record_import

record_import(__name__)
CREDENTIALS = [".env:QP_HANG_KEY"]


def probe(ctx):
    if ctx.credential() is None:
        ctx.fail("no_credentials", "No QP_HANG_KEY.")
    threading.Event().wait()
