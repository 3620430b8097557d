"""Run a compiler stage, or an import, with the cyclic garbage collector off.

A stage allocates many small objects that live until it returns (AST nodes, graph nodes,
modules); collections triggered by those allocations find nothing to free and, on a large
spec, cost more than the stage's own work and make its time grow faster than linearly.
Importing netspec and its libraries is the same: about 40 ms of a 0.35 s import went to
collections that freed nothing.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)


@contextlib.contextmanager
def paused(promote: bool = False) -> Iterator[None]:
    """The collector is off inside; nested pauses leave it to the outermost one to restore.

    With ``promote``, what was made inside is moved to the oldest generation on the way out
    (``promote_all``): for objects that live on, such as an import's or an AST's, whose first
    collection would otherwise traverse them all at once. Not when the block raises: what it
    made is then garbage, some of it in cycles through the traceback, for the next collection.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
        if promote:
            promote_all()
    finally:
        gc.enable()


def promote_all() -> None:
    """Move every object the collector tracks to its oldest generation, without a pass over them.

    ``gc.freeze`` then ``gc.unfreeze`` moves them up at no cost; nothing is left frozen. Left
    young, objects that live on are all traversed by the next collection, and again on their
    way up the generations. If something else has frozen objects, they stay as they are.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def gc_paused(fn: F) -> F:
    """Run ``fn`` paused, promoting what it made: a stage's output (an IR, a module tree) lives
    on, and left young it would all be traversed by the first collection after the stage, about
    a microsecond a node, and again by the next generation's."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with paused(promote=True):
            return fn(*args, **kwargs)
    return run  # type: ignore[return-value]
