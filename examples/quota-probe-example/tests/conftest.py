"""The package's own directory on ``sys.path``, so ``pytest`` runs these tests from a fresh
copy of the package before it is installed (and from quota-probe's own test run, which
collects them too: pyproject.toml's testpaths)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
