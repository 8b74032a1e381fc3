"""A plugin without EMULATOR: not served, no base URL override, no demo credential."""
CREDENTIALS = [".env:QP_EMU_NONE_KEY"]


def probe(ctx):
    return {}
