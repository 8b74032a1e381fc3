"""A plugin returning garbage; QP_GARBAGE_MODE in .env picks which."""
from qp_test_plugin import record_import

record_import(__name__)
LABEL = "QP Garbage"
CREDENTIALS = [".env:QP_GARBAGE_MODE"]
RESULTS = {
    "list": lambda: [{"label": "W", "used_percent": 5}],
    "abc": lambda: {"windows": [{"label": "W", "used_percent": "abc"}]},
    "huge": lambda: {"details": ["x" * (10 * 1024 * 1024)]},
    "unknown-key": lambda: {"windows": [], "extra": {"anything": True}},
    "clamped": lambda: {"windows": [{"label": "High", "used_percent": 1e9, "reset_at": "2026-11-23T10:30:00+05:30"},
                                    {"label": "Low", "used_percent": -5, "reset_at": 1795410000}]},
}


def probe(ctx):
    mode = ctx.credential()
    if mode is None:
        ctx.fail("no_credentials", "No QP_GARBAGE_MODE.")
    return RESULTS[mode]()
