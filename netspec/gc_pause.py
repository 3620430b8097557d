"""``gc_paused``: run a compiler stage with the cyclic garbage collector off.

A stage allocates many small objects that live until it returns (AST nodes, graph nodes,
modules); collections triggered by those allocations find nothing to free and, on a large
spec, cost more than the stage's own work and make its time grow faster than linearly.
"""

from __future__ import annotations

import functools
import gc
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def gc_paused(fn: F) -> F:
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if not gc.isenabled():          # nested stages: the outermost one restores it
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()
    return run  # type: ignore[return-value]
