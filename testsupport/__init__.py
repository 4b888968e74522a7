"""Test support that is not installed: small cities, registry loaders and a real webhook receiver.

Used by ``tests/`` and by the scripts in ``benchmarks/``, which both run from a checkout (pytest puts the
checkout on ``sys.path`` via ``pythonpath`` in pyproject.toml; the scripts insert it themselves).
``pyproject.toml``'s ``packages.find`` leaves this package out, so ``pip install .`` does not ship it.
"""
