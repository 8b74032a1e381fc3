"""The pool layer: probe processes and their slots.

``pool`` (one home's warm workers and who holds them), ``registry`` (one pool per home,
idle reaping), ``worker`` (one child process and its JSON-lines protocol), ``spawner`` (the
thread that forks workers from the template or execs them), ``cold`` (the bounded fallback
when every warm worker is busy).

May import: itself and the leaves (``probe.env``, ``probe.snapshot``, ...). Never the
service, ``probe.shared``, the monitor, the tools or the server: the service drives the
pool, not the other way round (``tests/test_layout.py`` checks it). No re-exports: import
the module you need (``from probe.pool.worker import Worker``).
"""
