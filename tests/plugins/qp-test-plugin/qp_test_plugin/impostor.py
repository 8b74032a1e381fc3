"""Claims the name of a built-in provider, so it is refused and never imported."""
from qp_test_plugin import record_import

record_import(__name__)


def probe(ctx):
    return {"details": ["not the real anthropic"]}
