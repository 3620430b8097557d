"""Stage 4, ``build_module``: a shaped ``ModuleIR`` tree -> a ``torch.nn.Module`` tree.

A block that is a plain chain of modules becomes an ``nn.Sequential`` (a subclass named after
the block, so ``print(model)`` mirrors the spec); any other block becomes a generated class
whose ``forward`` is compiled Python source. A ``let`` module is one Python object at every
use; ``const``s are persistent buffers, ``param``s are ``nn.Parameter``s.
"""

from __future__ import annotations

import linecache
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from netspec.codegen import forward_source, tensor_source
from netspec.ir import ModuleIR, Ref

_GENERATED = "netspec.generated"
_classes: dict[tuple[str, str], type] = {}


class BufferList(nn.Module):
    """A list of constant tensors, saved with the model and never trained."""

    def __init__(self, tensors: list[torch.Tensor]):
        super().__init__()
        for i, t in enumerate(tensors):
            self.register_buffer(str(i), t)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self._buffers[str(index)]

    def __len__(self) -> int:
        return len(self._buffers)


class BufferDict(nn.Module):
    """A dict of constant tensors, saved with the model and never trained."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        for k, t in tensors.items():
            self.register_buffer(k, t)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._buffers[key]

    def __len__(self) -> int:
        return len(self._buffers)


def is_sequential(mod: ModuleIR) -> bool:
    """A block is a Sequential when its graph is a chain of module calls and nothing else."""
    if mod.kind != "block" or mod.tensors or mod.graph is None:
        return False
    previous = None
    for nid, data in mod.graph.nodes(data=True):
        op = data["op"]
        if op == "placeholder":
            previous = nid
        elif op in ("call_module", "output"):
            if data["args"][0] != Ref(previous):
                return False
            previous = nid
        else:
            return False
    return True


def _sequential_class(name: str) -> type:
    if name == "Sequential":
        return nn.Sequential
    key = (name, "")
    if key not in _classes:
        _classes[key] = type(name, (nn.Sequential,), {"__module__": _GENERATED,
                                                       "__doc__": f"netspec block {name}."})
    return _classes[key]


def _generated_class(name: str, source: str) -> type:
    key = (name, source)
    if key not in _classes:
        filename = f"<netspec {name} #{len(_classes)}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace: dict[str, Any] = {"torch": torch, "F": torch.nn.functional}
        exec(compile(source, filename, "exec"), namespace)
        cls_name = name if name != "Sequential" else "Block"
        _classes[key] = type(cls_name, (nn.Module,), {
            "__module__": _GENERATED, "forward": namespace["forward"],
            "__doc__": f"netspec block {name}; forward:\n\n{source}", "code": source})
    return _classes[key]


class _Builder:
    def __init__(self, device: Any, dtype: Any, generator: torch.Generator | None):
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype
        self.generator = generator
        self.built: dict[int, nn.Module] = {}

    def module(self, mod: ModuleIR) -> nn.Module:
        if mod.uid not in self.built:
            module = self.layer(mod) if mod.kind == "layer" else self.block(mod)
            object.__setattr__(module, "_netspec_ir", mod)  # for summaries and tools
            self.built[mod.uid] = module
        return self.built[mod.uid]

    def layer(self, mod: ModuleIR) -> nn.Module:
        assert mod.layer is not None and mod.resolved_args is not None
        cls = getattr(nn, mod.cls_name)
        kwargs = dict(mod.resolved_args)
        if mod.layer.factory_kwargs:
            if self.device is not None:
                kwargs["device"] = self.device
            if self.dtype is not None:
                kwargs["dtype"] = self.dtype
            return cls(**kwargs)
        module = cls(**kwargs)
        if self.device is not None or self.dtype is not None:
            module = module.to(device=self.device, dtype=self.dtype)
        return module

    def block(self, mod: ModuleIR) -> nn.Module:
        assert mod.graph is not None
        if is_sequential(mod):
            children = OrderedDict()
            for nid, data in mod.graph.nodes(data=True):
                if data["op"] != "call_module":
                    continue
                target = data["target"]
                name = target if target not in mod.shared else (
                    data.get("label") or str(data["position"]))
                children[name] = self.module(mod.children[target])
            module = _sequential_class(mod.cls_name)(children)
        else:
            module = _generated_class(mod.cls_name, forward_source(mod))()
            for name, child in mod.children.items():
                module.add_module(name, self.module(child))
            for name, decl in mod.tensors.items():
                tensors = {key: self.tensor(frag, mod) for key, frag in decl.items.items()}
                if decl.container == "tensor":
                    t = tensors[""]
                    if decl.trainable:
                        module.register_parameter(name, nn.Parameter(t))
                    else:
                        module.register_buffer(name, t)
                elif decl.container == "list":
                    values = [tensors[str(i)] for i in range(len(tensors))]
                    module.add_module(name, nn.ParameterList([nn.Parameter(t) for t in values])
                                      if decl.trainable else BufferList(values))
                else:
                    module.add_module(name, nn.ParameterDict(
                        {k: nn.Parameter(t) for k, t in tensors.items()})
                        if decl.trainable else BufferDict(tensors))
        for tie in mod.ties:
            owner = module.get_submodule(".".join(tie.target[:-1]))
            source = module.get_parameter(".".join(tie.source))
            setattr(owner, tie.target[-1], source)
        return module

    def tensor(self, frag, mod: ModuleIR) -> torch.Tensor:
        namespace: dict[str, Any] = {"torch": torch, "F": torch.nn.functional}
        exec(tensor_source(frag, mod), namespace)
        dtype = self.dtype or torch.get_default_dtype()
        with torch.no_grad():
            value = namespace["make"](self.device, dtype, self.generator)
        if not value.is_floating_point():
            value = value.to(dtype)
        return value.contiguous()


def build_module(root: ModuleIR, *, device: Any = None, dtype: Any = None,
                 generator: torch.Generator | None = None) -> nn.Module:
    """Instantiate the module tree of a shaped ``ModuleIR``."""
    return _Builder(device, dtype, generator).module(root)
