"""Checks of the harness's own logic, without clusters: `python -m pytest bench/checks -q`.

They are not part of `make test` (its test paths are under tests/), like the
harness itself.
"""
