"""quota-probe test plugins. Every module records the process that imported it in
``imports.log`` next to this file, so a test can tell which processes imported a plugin
(the template, a worker -- and never the service or the CLI)."""
import os
from pathlib import Path


def record_import(module: str) -> None:
    with open(Path(__file__).with_name("imports.log"), "a") as log:
        log.write(f"{os.getpid()} {module}\n")
