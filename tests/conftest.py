"""Hypothesis profiles for the fuzz tests.

The default profile keeps the normal suite fast and deterministic (the same examples on every
run, so a green suite stays green). ``NETSPEC_FUZZ=long`` (or ``pytest --hypothesis-profile=long``)
runs every fuzz test with 20 times as many examples, drawn at random, to find new bugs.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("netspec", max_examples=100, derandomize=True, database=None)
settings.register_profile("long", max_examples=2000)
settings.load_profile("long" if os.environ.get("NETSPEC_FUZZ") == "long" else "netspec")
