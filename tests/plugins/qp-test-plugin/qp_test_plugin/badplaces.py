"""A plugin with a malformed CREDENTIALS place (a dashed key that is not quoted)."""
from qp_test_plugin import record_import

record_import(__name__)
CREDENTIALS = [".env:QP_BAD_KEY", "auth.json:providers.qp-badplaces.token"]


def probe(ctx):
    return {}
