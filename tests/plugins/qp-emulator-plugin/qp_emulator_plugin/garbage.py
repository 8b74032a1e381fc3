"""A response callable returning garbage, the kind picked by the token."""
CREDENTIALS = [".env:QP_EMU_GARBAGE_KEY"]


def probe(ctx):
    return ctx.get_json(ctx.base_url("https://garbage.invalid") + "/usage", token=ctx.credential())


def response(token):
    if "shape" in token:
        return "not a pair"
    if "status" in token:
        return 999, {}
    if "body" in token:
        return 200, {"when": object()}
    return 200, {"fine": True}


EMULATOR = {"path": "/usage", "response": response}
