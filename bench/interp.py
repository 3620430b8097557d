"""A naive graph interpreter: the reference point for what compiling ``forward`` saves.

Every call walks the IR graph of each block (``model._netspec.ir``, node by node in insertion
order, which is a topological order), keeps the values in a dict keyed by node id, and
dispatches on each node's ``op``: ``call_module`` calls the child (recursing into child
blocks), ``call_function`` looks the function up in a table of torch callables. Layers are
the model's own ``nn.Module``s, so the interpreter computes exactly what the model does.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F

from netspec.dims import Sym
from netspec.ir import ModuleIR, Ref

# registry name -> callable taking (tensors..., **static kwargs by torch's names)
FUNCTIONS: dict[str, Any] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "floordiv": operator.floordiv, "remainder": operator.mod, "pow": operator.pow,
    "matmul": operator.matmul, "neg": operator.neg,
    "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "silu": F.silu,
    "gelu": F.gelu, "abs": torch.abs, "exp": torch.exp, "sqrt": torch.sqrt,
    "softmax": F.softmax, "log_softmax": F.log_softmax,
    "flatten": torch.flatten, "transpose": torch.transpose, "mm": torch.mm,
    "sum": lambda x, dim=None, keepdim=False: torch.sum(x) if dim is None
    else torch.sum(x, dim, keepdim),
    "mean": lambda x, dim=None, keepdim=False: torch.mean(x) if dim is None
    else torch.mean(x, dim, keepdim),
    "max_pool2d": F.max_pool2d, "avg_pool2d": F.avg_pool2d,
    "cat": lambda *ts, dim=0: torch.cat(ts, dim),
}


class GraphInterpreter:
    """``GraphInterpreter(model)(x)`` computes ``model(x)`` by walking the IR on every call."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.modules: dict[int, torch.nn.Module] = {}
        for module in model.modules():
            ir = getattr(module, "_netspec_ir", None)
            if ir is not None:
                self.modules[ir.uid] = module
        self.root: ModuleIR = model._netspec.ir

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.call(self.root, x)

    def call(self, ir: ModuleIR, x: torch.Tensor) -> torch.Tensor:
        if ir.kind == "layer":
            return self.modules[ir.uid](x)
        return self.block(ir, x)

    def block(self, ir: ModuleIR, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, Any] = {}
        for nid, data in ir.graph.nodes(data=True):
            op = data["op"]
            if op == "placeholder":
                values[nid] = x
            elif op == "call_module":
                child = ir.children[data["target"]]
                if len(data["args"]) == 1 and not data["kwargs"]:
                    values[nid] = self.call(child, values[data["args"][0].node])
                    continue
                args = [values[a.node] for a in data["args"]]       # attn(q, k, v)
                kwargs = {k: values[v.node] if isinstance(v, Ref) else v
                          for k, v in data["kwargs"].items()}
                out = self.modules[child.uid](*args, **kwargs)
                index = child.layer.output_index
                values[nid] = out if index is None else out[index]
            elif op == "call_function":
                args = [values[a.node] if isinstance(a, Ref) else a for a in data["args"]]
                kwargs = data.get("static", data["kwargs"])
                if any(isinstance(v, Sym) for v in kwargs.values()):
                    raise NotImplementedError("symbolic static arguments")
                values[nid] = FUNCTIONS[data["target"]](*args, **kwargs)
            elif op == "get_attr":
                module = self.modules[ir.uid]
                decl = ir.tensors[data["target"]]
                holder = getattr(module, data["target"])
                key = data.get("key")
                values[nid] = (holder if decl.container == "tensor" else
                               holder[int(key)] if decl.container == "list" else holder[key])
            elif op == "output":
                return values[data["args"][0].node]
            else:
                raise NotImplementedError(op)
        raise AssertionError("a graph without an output")


def has_dataflow(model: torch.nn.Module) -> bool:
    """Whether any block of ``model`` got a generated forward (is not an nn.Sequential)."""
    for module in model.modules():
        ir = getattr(module, "_netspec_ir", None)
        if ir is not None and ir.kind == "block" and not isinstance(module, torch.nn.Sequential):
            return True
    return False
