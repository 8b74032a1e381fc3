"""quota-probe plugin for Example Cloud (a made-up provider: see provider.py)."""
