"""Resource limits: a spec is refused, with a located error, before anything large happens.

The limits in force are a ``Limits`` record held in a context variable; ``using`` replaces
them for a ``with`` block, and every API function takes ``limits=`` to do the same for a call.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, replace
from typing import Iterator


@dataclass(frozen=True)
class Limits:
    """What one spec may ask for."""

    # Together these bound compile time: at most 1 MiB of text a file and 50,000 statements
    # (about a second to parse), elaborating to at most 50,000 nodes (a few seconds to build).
    # A 70B-parameter transformer is about 2,000 nodes; a generated spec beyond these limits
    # asks for them to be raised.
    max_file_bytes: int = 1024 * 1024          # each spec file
    max_nodes: int = 50_000                    # statements; graph nodes and modules
    max_depth: int = 64                        # block nesting, and brackets nest 4x this
    max_dim: int = 2 ** 40                     # any single dimension
    max_elements: int = 20_000_000_000         # parameters + buffers materialised on a device

    def but(self, **changes: int) -> "Limits":
        return replace(self, **changes)


_current: contextvars.ContextVar[Limits] = contextvars.ContextVar("netspec_limits",
                                                                  default=Limits())


def current() -> Limits:
    return _current.get()


@contextlib.contextmanager
def using(limits: Limits | None) -> Iterator[Limits]:
    """Apply ``limits`` (None: keep the current ones) inside a ``with`` block."""
    if limits is None:
        yield current()
        return
    token = _current.set(limits)
    try:
        yield limits
    finally:
        _current.reset(token)
