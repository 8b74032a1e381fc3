"""``python run_checked.py ARGS...``: run the ``probe`` CLI with ARGS in this process, then
say on stderr which test-plugin modules this process imported (it must be none: SPEC §16,
no CLI process imports a plugin module). The exit code is the CLI's."""
import sys

from probe.cli import main

code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
imported = sorted(name for name in sys.modules if name.split(".")[0] == "qp_test_plugin")
print(f"PLUGIN MODULES IN THE CLI PROCESS: {imported}", file=sys.stderr)
sys.exit(code)
