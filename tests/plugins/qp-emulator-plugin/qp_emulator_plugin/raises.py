"""A response callable that raises, quoting the token in the exception text."""
CREDENTIALS = [".env:QP_EMU_RAISES_KEY"]


def probe(ctx):
    return ctx.get_json(ctx.base_url("https://raises.invalid") + "/usage", token=ctx.credential())


def response(token):
    raise ValueError(f"cannot answer for {token}")


EMULATOR = {"path": "/usage", "response": response}
