# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make demo   -- the settings panel on the built-in provider emulator (no credentials)
#   make test   -- the test suite
# Each creates the project's virtualenv (.venv) and installs the project into it on first
# use, and again only when pyproject.toml changed; the second run starts at once.
# VENV=/some/dir picks another virtualenv (.ci/run gives each CI run a fresh one).
# make test also installs Debian's chromium and redis-server when run as root with apt-get
# (scripts/install-system-packages); elsewhere it says so and the tests that need them skip.

VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test

demo: $(STAMP)
	$(VENV)/bin/probe serve --demo

test: $(STAMP)
	@scripts/install-system-packages
	$(VENV)/bin/pytest

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)
