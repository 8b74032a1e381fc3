"""An EMULATOR that is not served: its path is not a URL path."""
CREDENTIALS = [".env:QP_EMU_BADSPEC_KEY"]


def probe(ctx):
    return {}


EMULATOR = {"path": "usage?x=1", "response": lambda token: (200, {})}
