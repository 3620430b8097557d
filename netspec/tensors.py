"""Every parameter and buffer of a shaped model, known statically (no torch for table layers).

``static_model(ir)`` mirrors the module tree that ``build_module`` makes: the same modules
under the same names, each holding the same parameters and buffers, ties applied. A tensor
reached by several paths (a ``let`` module, a ``tie``) is one ``StaticTensor`` object, as it is
one ``Parameter`` in the built model, so identity tells shared tensors apart. A layer's tensors
come from its table (``LayerDef.tensors``); a layer without one raises ``Unknown``, and the
caller builds the model on the ``meta`` device instead (``read_module`` turns that model into
the same form).

``static_tensors(ir)`` lists what ``state_dict()`` of the built model would hold, with shapes
and kinds: ``param`` (trainable), ``const`` (a spec constant) or ``buffer`` (a layer's own, such
as BatchNorm's running statistics). Shared modules and tied parameters are listed once, at their
first path, with the other paths in ``aliases``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

from netspec.dims import Shape
from netspec.init import ModuleSite
from netspec.ir import (ModuleIR, forward_class_name, is_sequential, join_path,
                        sequential_children)


class Unknown(Exception):
    """A layer whose tensors netspec does not know without building it."""


@dataclass(eq=False)
class StaticTensor:
    """One tensor of the model: compared by identity, like the tensor it stands for."""

    shape: Shape
    kind: str                       # "param" | "const" | "buffer"
    requires_grad: bool = False

    def numel(self) -> int:
        return math.prod(self.shape)


def _child_at(module: "StaticModule", path: list[str]) -> "StaticModule":
    for name in path:
        module = module.children[name]
    return module


@dataclass(eq=False)
class StaticModule:
    """One module of the built tree: its class name, its own tensors and its children."""

    cls_name: str                   # the built module's class name
    ir: ModuleIR | None             # None for the ParameterList (and such) holding a block's list
    owner: ModuleIR                 # the IR whose tensors these are: ``ir``, or the holder's block
    params: dict[str, StaticTensor] = field(default_factory=dict)     # in registration order
    buffers: dict[str, StaticTensor] = field(default_factory=dict)
    children: dict[str, "StaticModule"] = field(default_factory=dict)

    def named_modules(self) -> Iterator[tuple[str, "StaticModule"]]:
        """As ``nn.Module.named_modules()``: parents first, each module once, at its first path."""
        seen: set[int] = set()
        stack: list[tuple[str, StaticModule]] = [("", self)]
        while stack:
            path, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield path, module
            stack.extend((join_path(path, name), child)
                         for name, child in reversed(module.children.items()))

    def named_parameters(self) -> list[tuple[str, StaticTensor]]:
        """As ``nn.Module.named_parameters()``: each tensor once, at its first path."""
        return _named(self, "params")

    def named_buffers(self) -> list[tuple[str, StaticTensor]]:
        """As ``nn.Module.named_buffers()``: each tensor once, at its first path."""
        return _named(self, "buffers")

    def submodule(self, path: tuple[str, ...]) -> "StaticModule":
        """As ``get_submodule``; raises ``Unknown`` where the built model has no such module."""
        module = self
        for name in path:
            if name not in module.children:
                raise Unknown(".".join(path))
            module = module.children[name]
        return module


def _named(root: StaticModule, kind: str) -> list[tuple[str, StaticTensor]]:
    seen: set[int] = set()
    found = []
    for path, module in root.named_modules():
        for name, tensor in getattr(module, kind).items():
            if id(tensor) not in seen:
                seen.add(id(tensor))
                found.append((join_path(path, name), tensor))
    return found


@dataclass
class StaticModel:
    """The mirrored module tree, and its modules by ``ModuleIR.uid`` (those the model holds)."""

    root: StaticModule
    by_uid: dict[int, StaticModule]

    def sites(self) -> list[ModuleSite]:
        """The modules in ``named_modules()`` order, for matching init rules."""
        return [ModuleSite(path, module.cls_name, module.ir, tuple(module.params.items()))
                for path, module in self.root.named_modules()]


def static_model(root: ModuleIR) -> StaticModel:
    """The module tree ``build_module(root)`` would make; raises ``Unknown`` for unknown layers."""
    mirror = _Mirror()
    return StaticModel(mirror.module(root), mirror.built)


class _Mirror:
    """Follows ``builder._Builder`` step by step: the same modules, names, tensors and ties."""

    def __init__(self) -> None:
        self.built: dict[int, StaticModule] = {}

    def module(self, mod: ModuleIR) -> StaticModule:
        if mod.uid not in self.built:
            self.built[mod.uid] = self.layer(mod) if mod.kind == "layer" else self.block(mod)
        return self.built[mod.uid]

    def layer(self, mod: ModuleIR) -> StaticModule:
        tensors = layer_tensors(mod)
        if tensors is None:
            raise Unknown(mod.cls_name)
        module = StaticModule(mod.cls_name, mod, mod)
        for path, cls_name in mod.layer.parts(mod.resolved_args or {}):  # out_proj, in order
            *parents, child = path.split(".")
            _child_at(module, parents).children[child] = StaticModule(cls_name, None, mod)
        for name, (shape, kind) in tensors.items():
            tensor = StaticTensor(_concrete(shape, mod), kind, requires_grad=kind == "param")
            *parents, name = name.split(".")               # "self_attn.out_proj.weight"
            holder = _child_at(module, parents)
            (holder.params if kind == "param" else holder.buffers)[name] = tensor
        return module

    def block(self, mod: ModuleIR) -> StaticModule:
        if is_sequential(mod):
            module = StaticModule(mod.cls_name, mod, mod)
            for name, child in sequential_children(mod):
                module.children[name] = self.module(child)
        else:
            module = self.dataflow(mod)
        for tie in mod.ties:       # setattr(owner, name, source): the slot keeps its place
            owner = module.submodule(tie.target[:-1])
            source = module.submodule(tie.source[:-1]).params.get(tie.source[-1])
            if source is None or tie.target[-1] not in owner.params:
                raise Unknown(".".join(tie.target))
            owner.params[tie.target[-1]] = source
        return module

    def dataflow(self, mod: ModuleIR) -> StaticModule:
        """A generated class: children by name, then the block's own tensors."""
        module = StaticModule(forward_class_name(mod), mod, mod)
        for name, child in mod.children.items():
            module.children[name] = self.module(child)
        for name, decl in mod.tensors.items():
            if decl.shapes is None:
                raise Unknown(name)
            kind = "param" if decl.trainable else "const"
            tensors = {key: StaticTensor(_concrete(decl.shapes[key], mod), kind,
                                         requires_grad=decl.trainable) for key in decl.items}
            if decl.container == "tensor":
                (module.params if decl.trainable else module.buffers)[name] = tensors[""]
                continue
            holder = StaticModule(_HOLDERS[decl.container, decl.trainable], None, mod)
            if decl.trainable:
                # nn.ParameterDict takes a plain dict's items in sorted key order
                keys = sorted(tensors) if decl.container == "dict" else list(tensors)
                holder.params.update((key, tensors[key]) for key in keys)
            else:
                holder.buffers.update(tensors)
            module.children[name] = holder
        return module


def layer_tensors(mod: ModuleIR) -> dict[str, tuple[Shape, str]] | None:
    """A shaped layer's own tensors from its table: {name: (shape, "param" | "buffer")}.

    None for a layer without a table (a user's class, a torch.nn layer netspec has no rule
    for): only building it tells.
    """
    layer = mod.layer
    if layer is None or layer.tensors is None or layer.cls is not None or \
            mod.resolved_args is None:
        return None
    return layer.tensors(mod.resolved_args)


_HOLDERS = {("list", True): "ParameterList", ("dict", True): "ParameterDict",
            ("list", False): "BufferList", ("dict", False): "BufferDict"}


def _concrete(shape: Any, mod: ModuleIR) -> Shape:
    """A tensor shape of plain ints; anything else is left to torch to judge."""
    shape = tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise Unknown(mod.cls_name)
    return shape


def read_module(model: Any) -> StaticModel:
    """The same form read off a model built with torch (for layers without a table)."""
    converted: dict[int, StaticModule] = {}
    tensors: dict[int, StaticTensor] = {}
    by_uid: dict[int, StaticModule] = {}

    def tensor(t: Any, kind: str) -> StaticTensor:
        if id(t) not in tensors:
            tensors[id(t)] = StaticTensor(tuple(t.shape), kind, requires_grad=t.requires_grad)
        return tensors[id(t)]

    def convert(module: Any, owner: ModuleIR, in_layer: bool) -> StaticModule:
        if id(module) in converted:
            return converted[id(module)]
        ir = module.__dict__.get("_netspec_ir")
        in_layer = in_layer or (ir is not None and ir.kind == "layer")
        node = StaticModule(type(module).__name__, ir, ir if ir is not None else owner)
        converted[id(module)] = node
        if ir is not None:
            by_uid[ir.uid] = node
        for name, p in module.named_parameters(recurse=False, remove_duplicate=False):
            node.params[name] = tensor(p, "param")
        for name, b in module.named_buffers(recurse=False, remove_duplicate=False):
            node.buffers[name] = tensor(b, "buffer" if in_layer else "const")
        for name, child in module._modules.items():   # every name, a let module at each place
            if child is not None:
                node.children[name] = convert(child, node.owner, in_layer)
        return node

    root = convert(model, model.__dict__["_netspec_ir"], False)
    return StaticModel(root, by_uid)


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
        return math.prod(self.shape)


def static_tensors(root: ModuleIR) -> list[TensorInfo]:
    """The model's tensors in ``state_dict`` order; raises ``Unknown`` for unknown layers."""
    found: dict[int, TensorInfo] = {}
    stack: list[tuple[str, StaticModule]] = [("", static_model(root).root)]
    while stack:   # as state_dict: every path, a shared module under each of its names
        path, module = stack.pop()
        for name, tensor in [*module.params.items(), *module.buffers.items()]:
            if id(tensor) in found:
                found[id(tensor)].aliases.append(join_path(path, name))
            else:
                found[id(tensor)] = TensorInfo(join_path(path, name), tensor.shape, tensor.kind,
                                               module.owner)
        stack.extend((join_path(path, name), child)
                     for name, child in reversed(module.children.items()))
    return list(found.values())

