"""A plugin whose EMULATOR path is DeepSeek's built-in route: both must keep working. It
also prints while imported and while answering (the protocol must not notice), and answers
a token containing "raw" with a body that is not JSON (bytes, sent as they are)."""
print("qp-emu-shadow: imported")

CREDENTIALS = [".env:QP_EMU_SHADOW_KEY"]
PATH = "/user/balance"


def probe(ctx):
    body = ctx.get_json(ctx.base_url("https://shadow.invalid") + PATH, token=ctx.credential())
    return {"windows": [{"label": "Shadow", "used_percent": body["used"], "window_s": 3600}]}


def response(token):
    print("qp-emu-shadow: answering")
    if "raw" in token:
        return 200, b"<html>not json</html>"
    return 200, {"used": len(token), "who": "shadow"}


EMULATOR = {"path": PATH, "response": response}
