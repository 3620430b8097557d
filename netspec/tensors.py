"""Every parameter and buffer of a shaped model, known statically (no torch for table layers).

``static_tensors(ir)`` lists what ``state_dict()`` of the built model would hold, with shapes
and kinds: ``param`` (trainable), ``const`` (a spec constant) or ``buffer`` (a layer's own, such
as BatchNorm's running statistics). Shared modules and tied parameters are listed once, at their
first path, with the other paths in ``aliases``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netspec.dims import Shape
from netspec.ir import ModuleIR, child_modules


@dataclass
class TensorInfo:
    """One tensor of the model."""

    path: str
    shape: Shape
    kind: str                       # "param" | "const" | "buffer"
    owner: ModuleIR
    aliases: list[str] = field(default_factory=list)

    @property
    def numel(self) -> int:
        total = 1
        for d in self.shape:
            total *= d
        return total


class Unknown(Exception):
    """A layer whose tensors netspec does not know without building it."""


def static_tensors(root: ModuleIR) -> list[TensorInfo]:
    """The model's tensors in ``state_dict`` order; raises ``Unknown`` for unknown layers."""
    found: list[TensorInfo] = []
    seen: dict[int, str] = {}          # module uid -> first path
    by_path: dict[str, TensorInfo] = {}
    _walk(root, "", found, seen, by_path)
    return found


def _walk(mod: ModuleIR, prefix: str, found: list, seen: dict, by_path: dict) -> None:
    if mod.uid in seen:   # a shared module: its tensors are aliases of the first use
        first = seen[mod.uid]
        for info in list(found):
            if info.path.startswith(first + ".") or (first == "" and info.path):
                info.aliases.append(prefix + info.path[len(first):])
        return
    seen[mod.uid] = prefix
    join = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    if mod.kind == "layer":
        tensors = mod.layer.tensors if mod.layer is not None else None
        if tensors is None or mod.resolved_args is None:
            raise Unknown(mod.cls_name)
        for name, (shape, kind) in tensors(mod.resolved_args).items():
            _add(TensorInfo(join(name), tuple(shape), kind, mod), found, by_path)
        return
    for name, decl in mod.tensors.items():
        for key, shape in (decl.shapes or {}).items():
            path = join(name) if key == "" else join(f"{name}.{key}")
            _add(TensorInfo(path, tuple(shape), "param" if decl.trainable else "const", mod),
                 found, by_path)
    for name, child in child_modules(mod):
        _walk(child, join(name), found, seen, by_path)
    for tie in mod.ties:
        target, source = join(".".join(tie.target)), join(".".join(tie.source))
        if target in by_path and source in by_path:
            tied = by_path.pop(target)
            found.remove(tied)
            by_path[source].aliases.append(target)


def _add(info: TensorInfo, found: list, by_path: dict) -> None:
    found.append(info)
    by_path[info.path] = info
