"""A user's own layers: ``import python "pkg.layers"`` and the ``netspec.layers`` entry points.

Any ``nn.Module`` subclass defined in an imported module becomes a layer named after its class.
Installed packages can offer layers through the entry-point group ``netspec.layers``
(``name = "package.module:Class"``). Both run Python code, so a program loaded from a
checkpoint may use them only when the caller trusts the file (``netspec.load(..., trust=True)``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from functools import lru_cache
from typing import Any

from netspec.errors import Diagnostic, SpecError
from netspec.layers import layer_from_class
from netspec.program import Program
from netspec.registry import LayerDef

GROUP = "netspec.layers"


def python_layers(program: Program) -> dict[str, LayerDef]:
    """The layers of every ``import python`` in ``program``, by class name."""
    layers: dict[str, LayerDef] = {}
    diagnostics = []
    for imp, folder in program.python:
        if not program.trusted:
            diagnostics.append(Diagnostic(
                "import error", f"this spec imports the Python module '{imp.path}', and specs "
                "from checkpoints run no Python unless trusted", imp.span,
                hint="pass trust=True to netspec.load if you trust the file"))
            continue
        try:
            module = _import(imp.path, folder)
        except Exception as exc:   # the user's module failed to import: report, never crash
            diagnostics.append(Diagnostic("import error", f"cannot import Python module "
                                          f"'{imp.path}': {type(exc).__name__}: {exc}", imp.span))
            continue
        found = _module_classes(module)
        if not found:
            diagnostics.append(Diagnostic("import error", f"Python module '{imp.path}' defines no "
                                          "nn.Module classes", imp.span))
        layers.update({name: layer_from_class(cls, name) for name, cls in found.items()})
    if diagnostics:
        raise SpecError(diagnostics, program.sources)
    return layers


def _import(name: str, folder: str) -> Any:
    """Import ``name``, also looking in the spec's own folder."""
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(folder)


def _module_classes(module: Any) -> dict[str, type]:
    import torch

    names = getattr(module, "__all__", None) or dir(module)
    found = {}
    for name in names:
        obj = getattr(module, name, None)
        if inspect.isclass(obj) and issubclass(obj, torch.nn.Module) and \
                obj.__module__ == module.__name__:
            found[name] = obj
    return found


@lru_cache(maxsize=1)
def entry_points() -> dict[str, Any]:
    """Installed packages' layers, by name (not loaded until used)."""
    from importlib.metadata import entry_points as installed

    return {ep.name: ep for ep in installed(group=GROUP)}


def entry_point_layer(name: str) -> LayerDef | None:
    ep = entry_points().get(name)
    if ep is None:
        return None
    try:
        cls = ep.load()
    except Exception as exc:   # a broken plugin must not crash a check
        raise SpecError([Diagnostic("import error", f"the layer '{name}' from entry point "
                                    f"{ep.value} cannot be loaded: {exc}")]) from None
    return layer_from_class(cls, name)
