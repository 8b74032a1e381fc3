"""``python drive_emulator.py``: run ``Emulator(plugins=True)`` in this process (a virtualenv
with the qp-emulator-plugin and the example installed), ask every plugin route the cases
tests/test_example_plugin.py checks, and print one JSON report. Log lines (the emulator's
WARNINGs) go to stderr as they would in ``probe serve --demo``."""
import json
import sys

import httpx

from probe.tools.emulator import DEEPSEEK_PATH, Emulator, quota_body

report = {}
with Emulator(plugins=True) as emulator:
    routes = emulator.plugin_routes
    routes.answer_timeout_s = 0.5
    report["routes"] = {name: [route.path, route.env] for name, route in routes.routes.items()}
    report["env"] = emulator.env()
    urls = emulator.provider_urls()
    child = routes._proc.pid
    with httpx.Client(timeout=20) as client:
        def ask(name, token, path=None):
            response = client.get(urls[name] + (path or routes.routes[name].path),
                                  headers={"Authorization": f"Bearer {token}"})
            return [response.status_code, response.headers.get("content-type"), response.text]

        report["example"] = ask("example-cloud", "ex-SECRET-token")
        report["example_401"] = ask("example-cloud", "ex-401-SECRET")
        report["shadow"] = ask("qp-emu-shadow", "sh-SECRET")
        report["shadow_raw"] = ask("qp-emu-shadow", "sh-raw-SECRET")
        deepseek = client.get(emulator.base_url + DEEPSEEK_PATH, headers={"Authorization": "Bearer sk-SECRET-ds"})
        report["deepseek_ok"] = deepseek.json() == quota_body(DEEPSEEK_PATH, "sk-SECRET-ds")
        report["raises"] = ask("qp-emu-raises", "r-SECRET-1")
        report["raises_again"] = ask("qp-emu-raises", "r-SECRET-2")
        for kind in ("shape", "status", "body"):
            report[f"garbage_{kind}"] = ask("qp-emu-garbage", f"g-{kind}-SECRET")
        report["garbage_fine"] = ask("qp-emu-garbage", "g-SECRET")
        report["unknown_path"] = ask("qp-emu-shadow", "sh-SECRET", path="/nope")
        report["child_alive_after_failures"] = routes._proc.pid == child and routes._proc.poll() is None
        report["hangs"] = ask("qp-emu-hangs", "h-SECRET")
        report["after_hang"] = ask("example-cloud", "ex-SECRET-token")
        report["child_replaced"] = routes._proc.pid != child
    last_child = routes._proc
report["child_gone_after_stop"] = last_child.poll() is not None
report["plugin_modules_here"] = sorted(name for name in sys.modules
                                       if name.split(".")[0] in ("qp_emulator_plugin", "quota_probe_example"))
print(json.dumps(report))
