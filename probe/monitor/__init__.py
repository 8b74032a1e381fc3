"""The monitor layer: what runs with nobody asking.

``refresher`` (the background re-read every ``--refresh-s``), ``readings`` (each home's
latest reading), ``history`` (every reading in SQLite), ``alerts`` (threshold and pace
notifications), ``instances`` (SPEC §14's window-instance rule).

``instances`` lives here, not among the leaves, because only the monitor uses it: history
(chart boundaries, the recent pace basis) and alerts (one notification per instance).
``probe.pace`` stays a leaf -- the snapshot itself uses it.

May import: itself, the service (``probe``, ``probe.service``) and everything below it. The
monitor sits *above* the service and uses it like any caller; nothing in the service, the
pool, ``probe.shared`` or the leaves imports the monitor (``tests/test_layout.py``).
"""
