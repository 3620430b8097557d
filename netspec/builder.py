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
from netspec.errors import Diagnostic, SpecError
from netspec.gc_pause import gc_paused
from netspec.ir import ModuleIR, forward_class_name, is_sequential, sequential_children

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
        try:
            code = compile(source, filename, "exec")
        except (SyntaxError, RecursionError, MemoryError) as exc:   # a netspec bug, reported
            raise SpecError([Diagnostic("internal error", f"the generated forward of {name} "
                                        f"does not compile: {exc}")]) from None
        exec(code, namespace)
        _classes[key] = type(name, (nn.Module,), {
            "__module__": _GENERATED, "forward": namespace["forward"],
            "__doc__": f"netspec block {name}; forward:\n\n{source}", "code": source})
    return _classes[key]


def _skipping_reset(cls: type) -> type:
    """``cls`` with its reset methods disabled, for torch.nn layers (cached).

    A layer's constructor initialises its weights, which on the meta device is wasted work
    (about 100 µs of a Linear's 130 µs): ``materialize`` initialises every tensor again.
    """
    if cls not in _no_reset:
        noop = {name: _no_reset_method for name in ("reset_parameters", "_reset_parameters")
                if callable(getattr(cls, name, None))}
        own = cls.__module__.startswith("torch.nn.") and noop
        _no_reset[cls] = type(cls.__name__, (cls,), noop) if own else cls
    return _no_reset[cls]


def _no_reset_method(self) -> None:
    pass


_no_reset: dict[type, type] = {}


def _construct_on_meta(cls: type, kwargs: dict[str, Any], factory_kwargs: bool) -> nn.Module:
    """``cls(**kwargs)`` on the meta device, its constructor's initialisation skipped."""
    fast = _skipping_reset(cls)
    if factory_kwargs:      # cheaper than the device context, which intercepts every call
        module = fast(**kwargs, device="meta")
    else:
        with torch.device("meta"):
            module = fast(**kwargs)
    module.__class__ = cls     # the layer's own class again, as torch.nn.utils.parametrize does
    return module


class _Builder:
    """Builds the module tree on the ``meta`` device: structure only, no weight memory."""

    def __init__(self, dtype: Any):
        self.dtype = dtype
        self.built: dict[int, nn.Module] = {}

    def module(self, mod: ModuleIR) -> nn.Module:
        if mod.uid not in self.built:
            module = self.layer(mod) if mod.kind == "layer" else self.block(mod)
            object.__setattr__(module, "_netspec_ir", mod)  # for init, summaries and tools
            self.built[mod.uid] = module
        return self.built[mod.uid]

    def layer(self, mod: ModuleIR) -> nn.Module:
        assert mod.layer is not None and mod.resolved_args is not None
        cls = mod.layer.cls or getattr(nn, mod.cls_name)
        kwargs = dict(mod.resolved_args)
        if mod.layer.factory_kwargs and self.dtype is not None:
            kwargs["dtype"] = self.dtype
        try:
            module = _construct_on_meta(cls, kwargs, mod.layer.factory_kwargs)
        except Exception as exc:   # torch's own argument checks, beyond netspec's rules
            raise SpecError([Diagnostic("argument error", f"{mod.cls_name} rejects these "
                                        f"arguments: {exc}", mod.span)]) from None
        if self.dtype is not None and not mod.layer.factory_kwargs:
            module = module.to(dtype=self.dtype)
        return module

    def block(self, mod: ModuleIR) -> nn.Module:
        assert mod.graph is not None
        if is_sequential(mod):
            children = OrderedDict((name, self.module(child))
                                   for name, child in sequential_children(mod))
            module = _sequential_class(mod.cls_name)(children)
        else:
            module = self.dataflow(mod)
        for tie in mod.ties:
            owner = module.get_submodule(".".join(tie.target[:-1]))
            setattr(owner, tie.target[-1], module.get_parameter(".".join(tie.source)))
        return module

    def dataflow(self, mod: ModuleIR) -> nn.Module:
        """A block with a generated ``forward``, its children, and its own tensors."""
        module = _generated_class(forward_class_name(mod), forward_source(mod))()
        for name, child in mod.children.items():
            module.add_module(name, self.module(child))
        makers: dict[str, Any] = {}
        for name, decl in mod.tensors.items():
            assert decl.shapes is not None
            dtype = torch.bool if decl.boolean else self.dtype
            empty = {k: torch.empty(decl.shapes[k], device="meta", dtype=dtype)
                     for k in decl.items}
            make = {k: self.maker(frag, mod, decl.boolean) for k, frag in decl.items.items()}
            if decl.container == "tensor":
                if decl.trainable:
                    module.register_parameter(name, nn.Parameter(empty[""]))
                else:
                    module.register_buffer(name, empty[""])
                makers[name] = make[""]
                continue
            if decl.container == "list":
                keys = [str(i) for i in range(len(empty))]
                holder = nn.ParameterList([nn.Parameter(empty[k]) for k in keys]) \
                    if decl.trainable else BufferList([empty[k] for k in keys])
            else:
                holder = nn.ParameterDict({k: nn.Parameter(t) for k, t in empty.items()}) \
                    if decl.trainable else BufferDict(empty)
            object.__setattr__(holder, "_netspec_makers", make)
            module.add_module(name, holder)
        object.__setattr__(module, "_netspec_makers", makers)
        return module

    def maker(self, frag, mod: ModuleIR, boolean: bool = False):
        """A function ``make(device)`` computing a const/param tensor from its expression, in
        the model's float dtype unless ``boolean`` (a mask)."""
        namespace: dict[str, Any] = {"torch": torch, "F": torch.nn.functional}
        exec(tensor_source(frag, mod), namespace)
        make, dtype = namespace["make"], self.dtype or torch.get_default_dtype()

        def run(device: Any) -> torch.Tensor:
            value = make(device, dtype, None)
            return value.to(dtype) if not (value.is_floating_point() or boolean) else value
        return run


@gc_paused
def build_module(root: ModuleIR, *, device: Any = None, dtype: Any = None,
                 seed: int | None = None) -> nn.Module:
    """Instantiate the module tree of a shaped ``ModuleIR`` and initialise it on ``device``.

    ``device="meta"`` returns the structure only; ``netspec.materialize`` finishes it later.
    """
    from netspec.init import materialize

    model = _Builder(dtype).module(root)
    return materialize(model, device, seed=seed)
