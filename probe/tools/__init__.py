"""The tools layer: for trying and measuring quota-probe, never needed to run it.

``emulator`` (every provider's quota endpoint on 127.0.0.1, with scenarios),
``plugin_routes`` (the emulator's routes for installed plugins, answered by a child --
here because only the emulator uses it), ``demo`` (the demo homes), ``stress`` and
``cluster_stress`` (``probe stress``, ``probe cluster-stress``).

May import: itself, the service and everything below it. Above it sit only the server
(``probe serve --demo`` starts the emulator and the demo homes, ``probe.server.run``) and
the CLI; nothing in the monitor, the service, the pool, ``probe.shared`` or the leaves
imports a tool (``tests/test_layout.py``).
"""
