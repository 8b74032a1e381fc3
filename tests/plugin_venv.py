"""A throw-away virtualenv with provider-plugin distributions pip-installed into it, layered
over the test environment: its site-packages gets a ``.pth`` that adds the environment
quota-probe runs from, so quota-probe and its dependencies import unchanged while the
plugins are installed for real (entry points in their ``.dist-info``, as a user's ``pip
install`` leaves them). Offline: ``--no-index --no-build-isolation``, so a build backend
comes from the test environment (setuptools, a test dependency) or from the source tree.

Used by the plugin tests and by ``scripts/bench_plugin.py`` (which measures a venv with the
example plugin against one without, built the same way)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path


def make_plugin_venv(root: Path, sources: list[Path]) -> tuple[Path, Path]:
    """A virtualenv under ``root`` with each of ``sources`` (project directories) installed;
    returns (its python, its site-packages). Sources are copied first: a build must not
    write into the repository."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"]).resolve()   # where quota-probe and its deps are installed
    (site / "_quota_probe_under_test.pth").write_text(f"import site; site.addsitedir({str(ours)!r})\n")
    for number, source in enumerate(sources):
        copy = root / f"src-{number}-{source.name}"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), str(copy)], check=True, capture_output=True,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return python, site
