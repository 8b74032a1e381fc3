"""``python run_checked.py ARGS...``: run the ``probe`` CLI with ARGS in this process, then
say on stderr which provider-plugin modules this process imported (it must be none: SPEC
§16, no CLI process imports a plugin module). A plugin module is any module under the
top-level package of an installed ``quota_probe.providers`` entry point. The exit code is
the CLI's."""
import sys
from importlib.metadata import entry_points

from probe.cli import main

code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
roots = {entry.value.split(":")[0].split(".")[0].strip() for entry in entry_points(group="quota_probe.providers")}
roots.discard("workers")
imported = sorted(name for name in sys.modules if name.split(".")[0] in roots)
print(f"PLUGIN MODULES IN THE CLI PROCESS: {imported}", file=sys.stderr)
sys.exit(code)
