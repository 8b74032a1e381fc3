"""A plugin with a malformed CREDENTIALS place (a list index: only [] is allowed)."""
from qp_test_plugin import record_import

record_import(__name__)
CREDENTIALS = [".env:QP_BAD_KEY", "auth.json:credential_pool.qp-badplaces[0].token"]


def probe(ctx):
    return {}
