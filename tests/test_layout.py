"""The layering of ``probe/`` (DESIGN.md, "The layout today, and where it goes next"): a
module imports only from its own layer or a layer below. Top to bottom:

=========  ==========================================================  =====
layer      modules                                                     rank
=========  ==========================================================  =====
front      ``probe.cli``, ``probe.doctor``                             6
server     ``probe.server``, ``probe.server.*``                        5
tools      ``probe.tools.*``                                           4
monitor    ``probe.monitor.*``                                         4
caller     ``probe.webui``                                             4
service    ``probe`` (``__init__``), ``probe.service``,                3
           ``probe.home_list``, ``probe.home_read``
pool       ``probe.pool.*``                                            2
shared     ``probe.shared.*``                                          2
leaf       every other module directly in ``probe/``                   1
=========  ==========================================================  =====

Layers of equal rank are siblings and import neither each other: the monitor and the tools
both use the service and know nothing of one another; the pool and ``probe.shared`` are
both driven by the service. Where the real graph put a module:

* ``probe.doctor`` and ``probe.cli`` live among the leaves on disk but import the service
  (``probe doctor`` reads a home through it), so they form a *front* layer above everything.
  ``probe.status``, ``probe.render``, ``probe.providers`` and ``probe.child`` import no
  service and stay leaves.
* ``probe.home_list`` is the service's own helper (``probe fetch --home H``'s list), and it
  uses the pool's ``WorkerProtocolError``: it belongs to the service layer, not the leaves.
  So does ``probe.home_read``, the state of one ``fetch_home`` (it holds the service's
  ``Fetch`` records and the home's list).
* ``probe.webui`` (hermes-webui's answers, SPEC §19) is a caller of the service like the
  monitor, and the server serves it; it lives among the leaves on disk.
* The server sits above the tools: ``probe serve --demo`` starts the emulator and the demo
  homes (``probe.server.run``). No tool imports the server.

Every import counts, wherever it is: at the top, inside a function (the lazy imports that
keep start-up cheap are still dependencies), and inside ``if TYPE_CHECKING:`` -- a type
named in an annotation is still something the module's source depends on, and none of
today's TYPE_CHECKING imports needs an exception. (At run time any ``import probe.x`` also
runs ``probe/__init__.py``, which imports the service; this test is about the source
dependencies, which is what keeps a layer readable and movable on its own.)

The other direction of the child/parent split -- ``workers/`` never imports ``probe`` -- is
``tests/test_worker_loop.py::test_workers_package_never_imports_probe``; not repeated here.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RANK = {"front": 6, "server": 5, "tools": 4, "monitor": 4, "caller": 4, "service": 3, "pool": 2, "shared": 2, "leaf": 1}
#: sub-packages of probe/ -> layer (the package's ``__init__`` and every module in it)
PACKAGES = {"server": "server", "tools": "tools", "monitor": "monitor", "pool": "pool", "shared": "shared"}
#: modules directly in probe/ that are not leaves
TOP_LEVEL = {"probe": "service", "probe.service": "service", "probe.home_list": "service",
             "probe.home_read": "service", "probe.webui": "caller",
             "probe.cli": "front", "probe.doctor": "front"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """The layer of a module, or of a sub-package's ``__init__``; an unknown sub-package
    is an error (a new package must be placed in the table above on purpose)."""
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    parts = module.split(".")
    if parts[1] in PACKAGES:
        return PACKAGES[parts[1]]
    if len(parts) == 2:
        return "leaf"
    raise AssertionError(f"{module}: probe.{parts[1]} is a package this test does not place in a layer")


def _is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) for every ``probe`` module the file imports, anywhere in it.

    ``from probe.x import y`` counts as importing ``probe.x.y`` when that is a module, else
    ``probe.x``; relative imports are resolved against the file's package."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                child = f"{source}.{alias.name}"
                found.append((node.lineno, child if _is_module(child, root) else source))
    return sorted({(line, name) for line, name in found if name == "probe" or name.startswith("probe.")})


def violations(root: Path) -> list[str]:
    """One line per import that runs up or sideways: ``file:line: from (layer) -> to (layer)``."""
    bad = []
    for path in sorted((root / "probe").rglob("*.py")):
        source = module_name(path, root)
        source_layer = layer_of(source)
        for line, target in imports_of(path, root):
            target_layer = layer_of(target)
            if target_layer == source_layer or RANK[target_layer] < RANK[source_layer]:
                continue
            bad.append(f"{path.relative_to(root)}:{line}: {source} ({source_layer}) -> {target} ({target_layer})")
    return bad


def test_every_import_in_probe_runs_down_the_layers():
    bad = violations(ROOT)
    assert not bad, "imports that run up or sideways across layers:\n" + "\n".join(bad)


def test_the_layer_table_names_modules_that_exist():
    """A renamed or removed module must leave the table too, or the table lies."""
    for name in TOP_LEVEL:
        assert _is_module(name, ROOT), f"{name} is in TOP_LEVEL but not in probe/"
    for package in PACKAGES:
        assert (ROOT / "probe" / package / "__init__.py").is_file(), f"probe/{package}/ is in PACKAGES but missing"


def test_the_check_sees_imports_in_functions_and_type_checking_blocks(tmp_path):
    """The checker itself: a leaf reaching up from inside a function, from a
    TYPE_CHECKING block and through a relative import, and a pool module reaching
    sideways into probe.shared, are all reported with file, line and both ends."""
    probe = tmp_path / "probe"
    for package in ("", "pool", "shared", "monitor"):
        (probe / package).mkdir(parents=True, exist_ok=True)
        (probe / package / "__init__.py").write_text("")
    (probe / "service.py").write_text("")
    (probe / "shared" / "disk.py").write_text("")
    (probe / "monitor" / "history.py").write_text("")
    (probe / "snapshot.py").write_text("from probe import pace\n")            # leaf -> leaf: fine
    (probe / "pace.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from probe.service import ProbeService\n"
        "def f():\n"
        "    import probe.monitor.history\n"
        "from .monitor import history\n")
    (probe / "pool" / "worker.py").write_text("from probe.shared.disk import DiskCache\n")
    assert violations(tmp_path) == [
        "probe/pace.py:3: probe.pace (leaf) -> probe.service (service)",
        "probe/pace.py:5: probe.pace (leaf) -> probe.monitor.history (monitor)",
        "probe/pace.py:6: probe.pace (leaf) -> probe.monitor.history (monitor)",
        "probe/pool/worker.py:1: probe.pool.worker (pool) -> probe.shared.disk (shared)",
    ]
