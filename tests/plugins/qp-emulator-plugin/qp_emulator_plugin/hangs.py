"""A response callable that never returns."""
import threading

CREDENTIALS = [".env:QP_EMU_HANGS_KEY"]


def probe(ctx):
    return ctx.get_json(ctx.base_url("https://hangs.invalid") + "/usage", token=ctx.credential())


def response(token):
    threading.Event().wait()


EMULATOR = {"path": "/usage", "response": response}
