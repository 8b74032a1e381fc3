"""``python drive_service.py CONFIG_JSON``: a ProbeService in this process, with the test
plugins installed, driven through every way a plugin can behave; prints one JSON object
(snapshots, pids, which plugin modules this process imported) for test_plugins.py."""
import json
import os
import sys

from probe import ProbeConfig, ProbeService, UnknownProviderError

config = json.loads(sys.argv[1])
homes = config["homes"]
out: dict = {"pid": os.getpid()}
with ProbeService(ProbeConfig(pool_size=1, provider_urls=config["provider_urls"])) as service:
    def fetch(provider: str, home: str, **kwargs) -> dict:
        return service.fetch(provider, home=homes[home], **kwargs).to_dict()

    out["good"] = fetch("qp-good", "main")
    out["template_pid"] = service._spawner.template_pid
    out["hang"] = fetch("qp-hangs", "main", timeout=1.5)
    out["good_after_hang"] = fetch("qp-good", "main", refresh=True)
    out["template_pid_after"] = service._spawner.template_pid
    out["anthropic"] = fetch("anthropic", "main")
    for name in ("qp-broken", "qp-badplaces", "qp-raises"):
        out[name] = fetch(name, "main")
    out["good_no_credentials"] = fetch("qp-good", "empty")
    for mode in config["garbage_modes"]:
        out[f"garbage:{mode}"] = fetch("qp-garbage", f"garbage-{mode}")
    for name in ("Bad_Name", "qp-object", "qp-nobody"):
        try:
            service.fetch(name, home=homes["main"])
            out[f"name:{name}"] = "accepted"
        except UnknownProviderError as exc:
            out[f"name:{name}"] = str(exc)
    out["spawn_method"] = service.stats()["spawn"]["method"]
out["plugin_modules_here"] = sorted(name for name in sys.modules if name.split(".")[0] == "qp_test_plugin")
print(json.dumps(out))
