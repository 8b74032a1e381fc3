"""Child side of quota-probe: the ``python -m workers`` probe loop.

Nothing in this package imports :mod:`probe`; the parent talks to it only over a pipe
(one JSON line each way), so a child can be started with nothing but the interpreter.
"""
