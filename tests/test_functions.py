"""Tests for netspec.functions: every shape rule against real torch, through the emitted source."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from netspec.dims import Sym
from netspec.functions import FUNCTION_NAMES, Positions, SliceValue, lookup_function
from netspec.registry import BINARY_OPS, FUNCTIONS, UNARY_OPS, FunctionDef, ShapeRuleError

N = Sym.symbol("N")
H = Sym.symbol("H")


def S(start=None, stop=None, step=None):
    """A slice of a subscript, ``start:stop:step``."""
    return SliceValue(start, stop, step)


ALL = S()          # `:`


def P(*items):
    """A list of positions in a subscript: ``P(2, 0)`` is ``[2, 0]``."""
    return Positions(items)


# -- helpers --------------------------------------------------------------------------------------

def statics(fn: FunctionDef) -> tuple:
    """The static params of ``fn``."""
    return fn.params[1:] if fn.tensors < 0 else fn.params[fn.tensors:]


def with_defaults(fn: FunctionDef, given: dict) -> dict:
    """Static args as a shape rule receives them: defaults applied, variadics as tuples."""
    out = {}
    for p in statics(fn):
        key = p.name.lstrip("*")
        if key in given:
            out[key] = given[key]
        elif p.name.startswith("*"):
            out[key] = ()
        elif not p.required:
            out[key] = p.default
    return out


def prepare(name: str, operands: list, kwargs: dict):
    """Emit source for real operands: tuples become random tensors, numbers stay literals."""
    fn = FUNCTIONS[name]
    env = {"torch": torch, "F": F}
    srcs, shapes, values = [], [], []
    for i, op in enumerate(operands):
        if isinstance(op, (int, float)):
            srcs.append(repr(op))
            shapes.append(())
            values.append(op)
            continue
        t = op if isinstance(op, torch.Tensor) else torch.randn(op)
        env[f"t{i}"] = t
        srcs.append(f"t{i}")
        shapes.append(tuple(t.shape))
        values.append(t)
    src = fn.emit(*srcs, **{k: repr(v) for k, v in kwargs.items()})
    return fn, src, env, shapes, values


def rule(fn: FunctionDef, shapes: list, kwargs: dict):
    """Call the shape rule the way the shapes pass does."""
    return fn.shape(*shapes, **with_defaults(fn, kwargs))


def case(name, operands, kwargs=None, ref=None, id_=None):
    """One pytest param: function, operands (shapes, numbers or tensors), static args, reference."""
    kwargs = kwargs or {}
    label = id_ or f"{name}-" + "-".join(
        "x".join(map(str, o)) if isinstance(o, tuple) else type(o).__name__ for o in operands
    ) + "".join(f"-{k}={v}" for k, v in kwargs.items())
    return pytest.param(name, operands, kwargs, ref, id=label)


# -- cases ----------------------------------------------------------------------------------------

BINARY_REFS = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "floordiv": lambda a, b: a // b, "remainder": lambda a, b: a % b,
    "pow": lambda a, b: a ** b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "maximum": lambda a, b: torch.maximum(torch.as_tensor(a), torch.as_tensor(b)),
    "minimum": lambda a, b: torch.minimum(torch.as_tensor(a), torch.as_tensor(b)),
}
BINARY_OPERANDS = [
    [(2, 3), (2, 3)], [(4, 1, 3), (5, 1)], [(2, 3), 2.0], [3.0, (4,)], [(), (2, 3)],
    [(3, 1), (1, 4)],
]

UNARY_REFS = {
    "relu": torch.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "gelu": F.gelu, "silu": F.silu, "mish": F.mish, "elu": F.elu, "selu": F.selu,
    "leaky_relu": F.leaky_relu, "hardtanh": F.hardtanh, "softplus": F.softplus, "exp": torch.exp,
    "log": torch.log, "log1p": torch.log1p, "abs": torch.abs, "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt, "square": torch.square, "sin": torch.sin, "cos": torch.cos,
    "sign": torch.sign, "floor": torch.floor, "ceil": torch.ceil, "round": torch.round,
    "logical_not": torch.logical_not, "reciprocal": torch.reciprocal, "neg": torch.neg,
}
UNARY_STATICS = {
    "gelu": [{"approximate": "tanh"}], "elu": [{"alpha": 0.5}],
    "leaky_relu": [{"negative_slope": 0.2}], "hardtanh": [{"min_val": -0.5, "max_val": 2.0}],
    "softplus": [{"beta": 2.0, "threshold": 5.0}], "round": [{"decimals": 1}],
}

CASES = []
for _name, _ref in BINARY_REFS.items():
    CASES += [case(_name, ops, ref=_ref) for ops in BINARY_OPERANDS]
for _name, _ref in UNARY_REFS.items():
    CASES += [case(_name, [(2, 3)], ref=_ref), case(_name, [()], ref=_ref),
              case(_name, [(2, 0, 4)], ref=_ref)]
    CASES += [case(_name, [(3, 4)], kw, ref=lambda x, _f=_ref, _kw=kw: _f(x, **_kw))
              for kw in UNARY_STATICS.get(_name, [])]

CASES += [
    case("clamp", [(3, 4)], {"min": -0.5}, lambda x: torch.clamp(x, min=-0.5)),
    case("clamp", [(3, 4)], {"max": 0.5}, lambda x: torch.clamp(x, max=0.5)),
    case("clamp", [(3, 4)], {"min": -0.5, "max": 0.5}, lambda x: torch.clamp(x, -0.5, 0.5)),
    # matmul: every torch.matmul case
    *[case("matmul", ops, ref=torch.matmul) for ops in [
        [(3,), (3,)], [(2, 3), (3, 4)], [(3,), (3, 4)], [(2, 3), (3,)], [(5, 2, 3), (3, 4)],
        [(2, 3), (5, 3, 4)], [(3,), (5, 3, 4)], [(5, 2, 3), (3,)], [(6, 1, 2, 3), (5, 3, 4)],
        [(1, 2, 3), (7, 3, 4)]]],
    case("mm", [(2, 3), (3, 4)], ref=torch.mm),
    case("mm", [(1, 5), (5, 1)], ref=torch.mm),
    # softmax and friends
    *[case(n, [(2, 3, 4)], {"dim": d}, lambda x, _n=n, _d=d: getattr(F, _n)(x, dim=_d))
      for n in ("softmax", "log_softmax") for d in (0, 1, -1)],
    case("softmax", [()], {"dim": 0}, lambda x: F.softmax(x, dim=0)),
    case("normalize", [(2, 3)], {}, F.normalize),
    case("normalize", [(2, 3, 4)], {"p": 1.0, "dim": -1}, lambda x: F.normalize(x, p=1.0, dim=-1)),
]

for _name in ("sum", "mean", "amax", "amin", "all", "any", "std", "var", "norm", "logsumexp"):
    _ref = {"norm": torch.linalg.vector_norm}.get(_name, getattr(torch, _name))
    for _kw in ({}, {"dim": 1}, {"dim": -1, "keepdim": True}, {"dim": (0, 2)},
                {"dim": (2, -3), "keepdim": True}, {"keepdim": True}):
        if _name == "logsumexp" and "dim" not in _kw:
            continue
        CASES.append(case(_name, [(2, 3, 4)], _kw,
                          lambda x, _f=_ref, _k=_kw: _f(x, **{"dim": None, **_k})))
    if _name != "logsumexp":
        CASES.append(case(_name, [()], {}, lambda x, _f=_ref: _f(x)))
for _name in ("prod", "max", "min"):
    for _kw in ({}, {"dim": 1}, {"dim": -1, "keepdim": True}):
        CASES.append(case(_name, [(2, 3, 4)], _kw,
                          lambda x, _n=_name, _k=_kw: (torch.amax if _n == "max" else
                                                       torch.amin if _n == "min" else
                                                       torch.prod)(x, **_k)))
    CASES.append(case(_name, [()], {"dim": 0}, lambda x, _n=_name: getattr(torch, _n)(x)))
CASES += [
    case("max", [(2, 3)], {"keepdim": True}, lambda x: torch.amax(x, keepdim=True)),
    case("std", [(4, 5)], {"dim": 0, "correction": 0}, lambda x: torch.std(x, dim=0, correction=0)),
    case("norm", [(4, 5)], {"p": 1.0, "dim": 1},
         lambda x: torch.linalg.vector_norm(x, ord=1, dim=1)),
    case("sum", [(2, 3)], {"dim": 0}, lambda x: x.sum(0)),
    case("sum", [()], {"dim": 0}, lambda x: x.sum(0)),
    case("sum", [()], {"dim": -1, "keepdim": True}, lambda x: x.sum(-1, keepdim=True)),
    case("mean", [(2, 3)], {"dim": ()}, lambda x: torch.mean(x, dim=())),
    case("sum", [(2, 3)], {"dim": (), "keepdim": True},
         lambda x: torch.sum(x, dim=(), keepdim=True)),
    case("all", [(2, 3)], {"dim": ()}, lambda x: torch.all(x, dim=())),
    case("any", [(2, 3)], {"dim": (), "keepdim": True},
         lambda x: torch.any(x, dim=(), keepdim=True)),
]

CASES += [
    case("flatten", [(2, 3, 4, 5)], {}, torch.flatten),
    case("flatten", [(2, 3, 4, 5)], {"start_dim": 1}, lambda x: torch.flatten(x, 1)),
    case("flatten", [(2, 3, 4, 5)], {"start_dim": 1, "end_dim": 2},
         lambda x: torch.flatten(x, 1, 2)),
    case("flatten", [(2, 3)], {"start_dim": -1}, lambda x: torch.flatten(x, -1)),
    case("flatten", [()], {}, torch.flatten),
    case("reshape", [(2, 16, 5, 5)], {"shape": (2, -1)}, lambda x: x.reshape(2, -1)),
    case("reshape", [(2, 3, 4)], {"shape": (-1,)}, lambda x: x.reshape(-1)),
    case("reshape", [(2, 3, 4)], {"shape": (4, 3, 2)}, lambda x: x.reshape(4, 3, 2)),
    case("reshape", [(1,)], {"shape": ()}, lambda x: x.reshape(())),
    case("reshape", [(0, 3)], {"shape": (3, 0)}, lambda x: x.reshape(3, 0)),
    case("view", [(2, 3, 4)], {"shape": (6, -1)}, lambda x: x.view(6, -1)),
    case("view", [(2, 3, 4)], {"shape": (24,)}, lambda x: x.view(24)),
    case("transpose", [(2, 3, 4)], {"dim0": 0, "dim1": 2}, lambda x: x.transpose(0, 2)),
    case("transpose", [(2, 3)], {"dim0": -1, "dim1": -2}, lambda x: x.transpose(-1, -2)),
    case("transpose", [()], {"dim0": 0, "dim1": -1}, lambda x: x.transpose(0, -1)),
    case("permute", [(2, 3, 4)], {"dims": (2, 0, 1)}, lambda x: x.permute(2, 0, 1)),
    case("permute", [(2, 3)], {"dims": (-1, 0)}, lambda x: x.permute(1, 0)),
    case("permute", [()], {"dims": ()}, lambda x: x.permute(())),
    case("getitem", [(2, 3, 4)], {"index": (ALL, -1)}, lambda x: x[:, -1]),
    case("getitem", [(2, 3, 4)], {"index": (0,)}, lambda x: x[0]),
    case("getitem", [(2, 3, 4)], {"index": (None, ALL, None, 1)}, lambda x: x[None, :, None, 1]),
    case("getitem", [(2, 3)], {"index": (0, 1, None)}, lambda x: x[0, 1, None]),
    case("getitem", [(2, 3, 4)], {"index": (S(1, None), S(None, None, 2), S(-3, -1))},
         lambda x: x[1:, ::2, -3:-1]),
    case("getitem", [(2, 3, 4)], {"index": (S(5, 9), 0)}, lambda x: x[5:9, 0]),   # empty
    case("getitem", [(2, 3, 4)], {"index": (-2, S(0, 3, 2), S(3, 1))}, lambda x: x[-2, 0:3:2, 3:1]),
    case("getitem", [(2, 3, 4)], {"index": (..., -1)}, lambda x: x[..., -1]),
    case("getitem", [(2, 3, 4)], {"index": (0, ...)}, lambda x: x[0, ...]),
    case("getitem", [(2, 3, 4)], {"index": (None, ..., S(1, None))}, lambda x: x[None, ..., 1:]),
    case("getitem", [(2, 3, 4)], {"index": (...,)}, lambda x: x[...]),
    case("getitem", [(2, 3, 4)], {"index": (0, ..., 1, 2)}, lambda x: x[0, ..., 1, 2]),  # none
    case("getitem", [(2, 3, 4)], {"index": (..., None)}, lambda x: x[..., None]),
    # a list of positions keeps its dim in place; torch selects by integers first
    case("getitem", [(2, 3, 4)], {"index": (ALL, P(2, 0))}, lambda x: x[:, [2, 0]]),
    case("getitem", [(2, 3, 4)], {"index": (0, ALL, P(1, 1, 3))}, lambda x: x[0, :, [1, 1, 3]]),
    case("getitem", [(2, 3, 4)], {"index": (ALL, 0, P(-1, 0))}, lambda x: x[:, 0, [-1, 0]]),
    case("getitem", [(2, 3, 4)], {"index": (P(1, 0), 2)}, lambda x: x[[1, 0], 2]),
    case("getitem", [(2, 3, 4)], {"index": (..., P(0,), None)}, lambda x: x[..., [0], None]),
    case("getitem", [(2, 3, 4)], {"index": (None, P(1,), S(1, None))},
         lambda x: x[None, [1], 1:]),
    case("select", [(2, 3, 4)], {"dim": 1, "index": -1}, lambda x: x[:, -1]),
    case("select", [(2, 3, 4)], {"dim": -1, "index": 0}, lambda x: x[..., 0]),
    case("select", [(5,)], {"dim": 0, "index": -5}, lambda x: x[-5]),
    case("narrow", [(2, 3, 4)], {"dim": 1, "start": 0, "length": 3}, lambda x: x[:, 0:3]),
    case("narrow", [(2, 3, 4)], {"dim": 1, "start": -1, "length": 1}, lambda x: x[:, -1:]),
    case("narrow", [(2, 3, 4)], {"dim": -1, "start": 4, "length": 0}, lambda x: x[..., 4:]),
    case("unsqueeze", [(2, 3)], {"dim": 0}, lambda x: x.unsqueeze(0)),
    case("unsqueeze", [(2, 3)], {"dim": 2}, lambda x: x.unsqueeze(2)),
    case("unsqueeze", [(2, 3)], {"dim": -1}, lambda x: x.unsqueeze(-1)),
    case("unsqueeze", [()], {"dim": 0}, lambda x: x.unsqueeze(0)),
    case("squeeze", [(1, 3, 1)], {}, torch.squeeze),
    case("squeeze", [(1, 3, 1)], {"dim": 0}, lambda x: x.squeeze(0)),
    case("squeeze", [(1, 3, 1)], {"dim": 1}, lambda x: x.squeeze(1)),
    case("squeeze", [(1, 3, 1)], {"dim": (0, -1)}, lambda x: x.squeeze((0, -1))),
    case("expand", [(3, 1)], {"size": (3, 4)}, lambda x: x.expand(3, 4)),
    case("expand", [(3, 1)], {"size": (2, -1, 5)}, lambda x: x.expand(2, -1, 5)),
    case("expand", [()], {"size": (2, 2)}, lambda x: x.expand(2, 2)),
    case("t", [(2, 3)], {}, torch.t),
    case("t", [(3,)], {}, torch.t),
    case("t", [()], {}, torch.t),
    case("contiguous", [(2, 3)], {}, lambda x: x.contiguous()),
    case("cat", [(2, 3), (4, 3)], {}, lambda a, b: torch.cat((a, b))),
    case("cat", [(2, 3), (2, 5), (2, 1)], {"dim": 1}, lambda *ts: torch.cat(ts, 1)),
    case("cat", [(2, 3, 4), (2, 3, 1)], {"dim": -1}, lambda a, b: torch.cat((a, b), -1)),
    case("cat", [(2, 3)], {}, lambda a: torch.cat((a,))),
    case("stack", [(2, 3), (2, 3)], {}, lambda a, b: torch.stack((a, b))),
    case("stack", [(2, 3), (2, 3), (2, 3)], {"dim": 2}, lambda *ts: torch.stack(ts, 2)),
    case("stack", [(2, 3), (2, 3)], {"dim": -1}, lambda a, b: torch.stack((a, b), -1)),
    case("stack", [(), ()], {}, lambda a, b: torch.stack((a, b))),
    case("where", [torch.rand(3, 4) > 0.5, (3, 4), (3, 4)], {}, torch.where),
    case("where", [torch.rand(3, 1) > 0.5, (1, 4), 0.0], {}, torch.where),
    case("where", [torch.rand(2, 1, 4) > 0.5, 1.0, (5, 1)], {}, torch.where),
    case("pad", [(2, 3)], {"pad": (1, 2)}, lambda x: F.pad(x, (1, 2))),
    case("pad", [(2, 3, 4)], {"pad": (1, 1, 2, 0), "value": 1.5},
         lambda x: F.pad(x, (1, 1, 2, 0), value=1.5)),
    case("pad", [(2, 5)], {"pad": (-1, -2)}, lambda x: F.pad(x, (-1, -2))),
    case("pad", [(2, 5)], {"pad": ()}, lambda x: F.pad(x, ())),
    case("pad", [(2, 3)], {"pad": (2, -3)}, lambda x: F.pad(x, (2, -3))),
    # ceil_mode keeps a window that starts inside the input though the kernel is larger
    case("max_pool1d", [(2, 1, 3)], {"kernel_size": 4, "stride": 3, "ceil_mode": True},
         lambda x: F.max_pool1d(x, 4, stride=3, ceil_mode=True)),
    case("avg_pool2d", [(1, 3, 2)], {"kernel_size": (4, 2), "ceil_mode": True},
         lambda x: F.avg_pool2d(x, (4, 2), ceil_mode=True)),
]

POOLS = {f"{k}_pool{n}d": getattr(F, f"{k}_pool{n}d") for k in ("max", "avg") for n in (1, 2)}
for _name, _f in POOLS.items():
    _shape = (2, 3, 11) if _name.endswith("1d") else (2, 3, 9, 11)
    _kws = [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1},
            {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
            {"kernel_size": 2, "stride": 2, "ceil_mode": True}, {"kernel_size": (3,)}]
    if _name.endswith("2d"):
        _kws += [{"kernel_size": (2, 3), "stride": (1, 2)}, {"kernel_size": 2, "padding": (0, 1)}]
    if _name.startswith("max"):
        _kws += [{"kernel_size": 3, "dilation": 2}, {"kernel_size": 2, "stride": 1, "dilation": 3}]
    else:
        _kws += [{"kernel_size": 3, "padding": 1, "count_include_pad": False}]
    CASES += [case(_name, [_shape], kw, lambda x, _g=_f, _k=kw: _g(x, **_k)) for kw in _kws]
    CASES.append(case(_name, [_shape[1:]], {"kernel_size": 3}, lambda x, _g=_f: _g(x, 3)))
    CASES.append(case(_name, [(2, 3, 4, 4) if _name.endswith("2d") else (2, 3, 4)],
                      {"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True},
                      lambda x, _g=_f: _g(x, 2, stride=3, padding=1, ceil_mode=True)))
for _kind in ("avg", "max"):
    _n1, _n2 = f"adaptive_{_kind}_pool1d", f"adaptive_{_kind}_pool2d"
    _f1, _f2 = getattr(F, _n1), getattr(F, _n2)
    CASES += [
        case(_n1, [(2, 3, 10)], {"output_size": 4}, lambda x, g=_f1: g(x, 4)),
        case(_n1, [(3, 10)], {"output_size": (1,)}, lambda x, g=_f1: g(x, 1)),
        case(_n2, [(2, 3, 8, 9)], {"output_size": 1}, lambda x, g=_f2: g(x, 1)),
        case(_n2, [(2, 3, 8, 9)], {"output_size": (2, 5)}, lambda x, g=_f2: g(x, (2, 5))),
        case(_n2, [(3, 8, 9)], {"output_size": (None, 4)}, lambda x, g=_f2: g(x, (None, 4))),
    ]


@pytest.mark.filterwarnings("ignore:var\\(\\)|std\\(\\):UserWarning")
@pytest.mark.parametrize("name, operands, kwargs, ref", CASES)
def test_shape_and_values_match_torch(name, operands, kwargs, ref):
    fn, src, env, shapes, values = prepare(name, operands, kwargs)
    real = eval(src, env)
    assert rule(fn, shapes, kwargs) == tuple(real.shape), src
    expected = ref(*values)
    if isinstance(expected, tuple):  # (values, indices)
        expected = expected[0]
    torch.testing.assert_close(real, expected, equal_nan=True, check_dtype=True)


# -- errors: torch rejects, and so does the rule, naming the culprit ---------------------------

ERRORS = [
    case("add", [(2, 20), (30,)], {}, (None, 1)),
    case("mul", [(4, 3), (2, 4, 2)], {}, (None, 1)),
    case("maximum", [(2, 3), (4,)], {}, (None, 1)),
    case("sub", [(3, 1, 5), (4, 6)], {}, (None, 1)),
    case("matmul", [(2, 20), (30, 20)], {}, (None, 1)),
    case("matmul", [(3,), (4,)], {}, (None, 1)),
    case("matmul", [(2, 3, 4), (5, 4, 2)], {}, (None, 1)),
    case("matmul", [(), (3,)], {}, (None, 0)),
    case("matmul", [(3, 4), 2.0], {}, (None, 1)),
    case("mm", [(2, 3, 4), (4, 2)], {}, (None, 0)),
    case("mm", [(3, 4), (4,)], {}, (None, 1)),
    case("mm", [(3, 4), (5, 2)], {}, (None, 1)),
    case("softmax", [(5, 10)], {"dim": 3}, ("dim", None)),
    case("log_softmax", [(5, 10)], {"dim": -3}, ("dim", None)),
    case("normalize", [(3,)], {"dim": 1}, ("dim", None)),
    case("hardtanh", [(3,)], {"min_val": 2.0, "max_val": 1.0}, ("min_val", None)),
    case("clamp", [(3,)], {}, ("min", None)),
    case("sum", [(2, 3)], {"dim": 2}, ("dim", None)),
    case("mean", [(2, 3)], {"dim": (0, 0)}, ("dim", None)),
    case("amax", [(2, 0)], {"dim": 1}, ("dim", None)),
    case("logsumexp", [(2, 3)], {"dim": (1, -3)}, ("dim", None)),
    case("max", [(2, 3)], {"dim": -3}, ("dim", None)),
    case("prod", [(2, 3)], {"keepdim": True}, ("keepdim", None)),
    case("logsumexp", [(2, 3)], {"dim": ()}, ("dim", None)),
    case("sum", [()], {"dim": 1}, ("dim", None)),
    case("flatten", [(2, 3, 4)], {"start_dim": 2, "end_dim": 1}, ("start_dim", None)),
    case("flatten", [(2, 3, 4)], {"end_dim": 3}, ("end_dim", None)),
    case("reshape", [(2, 3, 4)], {"shape": (5, -1)}, ("shape", None)),
    case("reshape", [(2, 3, 4)], {"shape": (2, 3, 5)}, ("shape", None)),
    case("reshape", [(2, 3, 4)], {"shape": (-1, -1)}, ("shape", None)),
    case("reshape", [(2, 3, 4)], {"shape": (0, -1)}, ("shape", None)),
    case("reshape", [(2, 3, 4)], {"shape": (-2, 12)}, ("shape", None)),
    case("view", [(2, 3, 4)], {"shape": (7, -1)}, ("shape", None)),
    case("transpose", [(2, 3)], {"dim0": 0, "dim1": 2}, ("dim1", None)),
    case("permute", [(2, 3, 4)], {"dims": (0, 1)}, ("dims", None)),
    case("permute", [(2, 3, 4)], {"dims": (0, 1, 1)}, ("dims", None)),
    case("permute", [(2, 3)], {"dims": (0, 2)}, ("dims", None)),
    case("unsqueeze", [(2, 3)], {"dim": 3}, ("dim", None)),
    case("getitem", [(2, 3)], {"index": (0, 0, 0)}, ("index", None)),
    case("getitem", [(2, 3)], {"index": (ALL, P(0, 3))}, ("index1", None)),
    case("getitem", [(2, 3)], {"index": (P(-3,),)}, ("index0", None)),
    case("getitem", [(2, 3)], {"index": (None, 0, 3)}, ("index2", None)),
    case("getitem", [(2, 3)], {"index": (ALL, 3)}, ("index1", None)),
    case("getitem", [(2, 3)], {"index": (-3,)}, ("index0", None)),
    case("getitem", [(2, 3)], {"index": (S(None, None, 0),)}, ("index0", None)),
    case("getitem", [(2, 3)], {"index": (ALL, S(None, None, -1))}, ("index1", None)),
    case("getitem", [(2, 3)], {"index": (..., 0, 0, 0)}, ("index", None)),
    case("getitem", [(2, 3)], {"index": (..., 3)}, ("index1", None)),
    case("select", [(2, 3)], {"dim": 1, "index": 3}, ("index", None)),
    case("select", [(2, 3)], {"dim": 1, "index": -4}, ("index", None)),
    case("select", [(2, 3)], {"dim": 2, "index": 0}, ("dim", None)),
    case("select", [()], {"dim": 0, "index": 0}, (None, 0)),
    case("narrow", [(2, 3)], {"dim": 1, "start": 2, "length": 2}, ("length", None)),
    case("narrow", [(2, 3)], {"dim": 1, "start": -4, "length": 1}, ("start", None)),
    case("narrow", [(2, 3)], {"dim": 1, "start": 4, "length": 0}, ("start", None)),
    case("narrow", [(2, 3)], {"dim": 1, "start": 0, "length": -1}, ("length", None)),
    case("squeeze", [(1, 3)], {"dim": 2}, ("dim", None)),
    case("expand", [(3, 2)], {"size": (3, 4)}, ("size", None)),
    case("expand", [(3, 1)], {"size": (4,)}, ("size", None)),
    case("expand", [(3, 1)], {"size": (-1, 3, 1)}, ("size", None)),
    case("t", [(2, 3, 4)], {}, (None, 0)),
    case("cat", [(20, 3), (16, 4)], {}, (None, 1)),
    case("cat", [(2, 3), (2, 3), (2, 3, 1)], {"dim": 1}, (None, 2)),
    case("cat", [(2, 3), ()], {}, (None, 1)),
    case("cat", [(2, 3), (2, 3)], {"dim": 2}, ("dim", None)),
    case("stack", [(2, 3), (2, 4)], {}, (None, 1)),
    case("stack", [(2, 3), (2, 3)], {"dim": 3}, ("dim", None)),
    case("where", [torch.rand(3) > 0.5, (4,), (3,)], {}, (None, 1)),
    case("where", [torch.rand(3) > 0.5, (3,), (2, 4)], {}, (None, 2)),
    case("pad", [(2, 3)], {"pad": (1,)}, ("pad", None)),
    case("pad", [(2, 3)], {"pad": (1, 1, 1, 1, 1, 1)}, ("pad", None)),
    case("pad", [(2, 3)], {"pad": (-2, -2)}, ("pad", None)),
    case("pad", [(2, 1)], {"pad": (1, -2)}, ("pad", None)),
    case("max_pool1d", [(2, 3, 3)], {"kernel_size": 6, "stride": 3, "ceil_mode": True},
         ("kernel_size", None)),
    case("max_pool1d", [(2, 3, 8)], {"kernel_size": 3, "padding": 2, "dilation": 2},
         ("padding", None)),
    case("max_pool2d", [(2, 3, 4)], {"kernel_size": 5}, ("kernel_size", None)),
    case("max_pool1d", [(2, 3, 4)], {"kernel_size": 5}, ("kernel_size", None)),
    case("avg_pool1d", [(2, 3, 4)], {"kernel_size": 5}, ("kernel_size", None)),
    case("max_pool2d", [(2, 3, 9, 9)], {"kernel_size": 3, "padding": 2}, ("padding", None)),
    case("avg_pool2d", [(2, 3, 9, 9)], {"kernel_size": 3, "padding": 2}, ("padding", None)),
    case("max_pool1d", [(2, 3, 9)], {"kernel_size": 2, "padding": 2, "dilation": 3},
         ("padding", None)),
    case("max_pool1d", [(2, 3, 9)], {"kernel_size": 3, "stride": 0}, ("stride", None)),
    case("max_pool2d", [(9, 9)], {"kernel_size": 3}, (None, 0)),
    case("max_pool2d", [(1, 9, 9)], {"kernel_size": (3, 3, 3)}, ("kernel_size", None)),
    case("avg_pool2d", [(2, 3, 4, 5, 6)], {"kernel_size": 2}, (None, 0)),
    case("adaptive_avg_pool1d", [(10,)], {"output_size": 2}, (None, 0)),
    case("adaptive_max_pool2d", [(1, 3, 8, 8)], {"output_size": (1, 2, 3)}, ("output_size", None)),
]


@pytest.mark.parametrize("name, operands, kwargs, culprit", ERRORS)
def test_errors_match_torch(name, operands, kwargs, culprit):
    fn, src, env, shapes, _ = prepare(name, operands, kwargs)
    with pytest.raises(Exception):
        eval(src, env)
    with pytest.raises(ShapeRuleError) as err:
        rule(fn, shapes, kwargs)
    assert (err.value.arg, err.value.operand) == culprit, err.value.message


def test_a_second_ellipsis_is_refused_where_torch_would_guess():
    # torch reads x[..., 0, ...] (NumPy refuses it); which dims each `...` covers is a guess
    assert torch.randn(2, 3, 4)[..., 0, ...].shape == (2, 3)
    with pytest.raises(ShapeRuleError, match="only one ellipsis") as err:
        FUNCTIONS["getitem"].shape((2, 3, 4), index=(..., 0, ...))
    assert err.value.arg == "index2"


def test_a_second_list_of_positions_is_refused_where_torch_would_pair_them():
    # torch pairs x[[0, 1], :, [1, 2]] up element by element and moves the pairs' dim to the
    # front, while x[:, [0, 1], [1, 2]] keeps it in place: a reader cannot tell which
    x = torch.randn(2, 3, 4)
    assert x[[0, 1], :, [1, 2]].shape == (2, 3) and x[:, [0, 1], [1, 2]].shape == (2, 2)
    with pytest.raises(ShapeRuleError, match="only one list of positions") as err:
        FUNCTIONS["getitem"].shape((2, 3, 4), index=(P(0, 1), ALL, P(1, 2)))
    assert err.value.arg == "index2"


@pytest.mark.parametrize("index, hint, first, then, twice", [
    ((P(0, 1), ALL, P(1, 2)), "x[[0, 1]][:, :, [1, 2]]", (P(0, 1),), (ALL, ALL, P(1, 2)),
     lambda x: x[[0, 1]][:, :, [1, 2]]),
    ((0, P(1, 2), None, P(0, 3)), "x[0, [1, 2], none][:, :, [0, 3]]", (0, P(1, 2), None),
     (ALL, ALL, P(0, 3)), lambda x: x[0, [1, 2], None][:, :, [0, 3]]),
    ((P(1, 0), ..., P(0, 1)), "x[[1, 0], ...][:, ..., [0, 1]]", (P(1, 0), ...),
     (ALL, ..., P(0, 1)), lambda x: x[[1, 0], ...][:, ..., [0, 1]]),
])
def test_two_lists_of_positions_are_shown_as_two_subscripts(index, hint, first, then, twice):
    """The hint picks along one dim at a time, and means what it says: its two subscripts, one
    after the other, give the shape torch gives them."""
    getitem = FUNCTIONS["getitem"].shape
    with pytest.raises(ShapeRuleError) as err:
        getitem((2, 3, 4, 5), index=index)
    assert err.value.hint == f"pick along one dim at a time: {hint}"
    shape = getitem(getitem((2, 3, 4, 5), index=first), index=then)
    assert tuple(shape) == twice(torch.randn(2, 3, 4, 5)).shape


def test_error_messages():
    with pytest.raises(ShapeRuleError, match=r"cannot broadcast \[N, 20\] with \[30\]"):
        FUNCTIONS["add"].shape((N, 20), (30,))
    with pytest.raises(ShapeRuleError, match=r"the inner dims differ, \[N, 20\] @ \[30, 20\]"):
        FUNCTIONS["matmul"].shape((N, 20), (30, 20))
    with pytest.raises(ShapeRuleError, match=r"dim=3 is out of range for the 2-D input \[N, 10\]"):
        FUNCTIONS["softmax"].shape((N, 10), dim=3)
    with pytest.raises(ShapeRuleError, match=r"cat: tensor 1 has 16 at dim 0") as err:
        FUNCTIONS["cat"].shape((20, 3), (16, 4), dim=1)
    assert err.value.operand == 1


def test_pool_and_pad_functions_share_the_layer_messages():
    with pytest.raises(ShapeRuleError, match=r"pad=\(1, -2\) crops 2 from dim 1"):
        FUNCTIONS["pad"].shape((2, 1), pad=(1, -2), value=0.0)
    with pytest.raises(ShapeRuleError, match="at most half of kernel_size=3") as err:
        shape_of("max_pool1d", (2, 3, 8), kernel_size=3, padding=2, dilation=2)
    assert "dilation does not count" in err.value.hint


def test_dilated_max_pool_window_of_padding_only_is_refused():
    # taps at -1 and 1 miss the length-1 input: torch returns -inf and may corrupt its heap
    with pytest.raises(ShapeRuleError, match="holds only padding"):
        shape_of("max_pool1d", (2, 3, 1), kernel_size=2, padding=1, dilation=2)


# -- symbolic dims --------------------------------------------------------------------------------

def shape_of(name, *shapes, **kwargs):
    """The rule's output with defaults applied."""
    return rule(FUNCTIONS[name], list(shapes), kwargs)


@pytest.mark.parametrize("name, shapes, kwargs, expected", [
    ("reshape", [(N, 16, 5, 5)], {"shape": (N, -1)}, (N, 400)),
    ("reshape", [(N, 16, 5, 5)], {"shape": (-1, 400)}, (N, 400)),
    ("reshape", [(N, 16, 5, 5)], {"shape": (N, 16, 25)}, (N, 16, 25)),
    ("view", [(N, 4, 6)], {"shape": (N, 2, -1)}, (N, 2, 12)),
    ("flatten", [(N, 16, 5, 5)], {"start_dim": 1}, (N, 400)),
    ("flatten", [(N, 3, H)], {}, (3 * N * H,)),
    ("sum", [(N, 10)], {}, ()),
    ("mean", [(N, 3, H)], {"dim": (0, 2)}, (3,)),
    ("amax", [(N, 3)], {"dim": 0, "keepdim": True}, (1, 3)),
    ("add", [(N, 20), (20,)], {}, (N, 20)),
    ("add", [(N, 1), (1, 7)], {}, (N, 7)),
    ("mul", [(N, 20), (1, 20)], {}, (N, 20)),
    ("add", [(N, 20), (5, 1)], {}, (5, 20)),
    ("sub", [(N, 3), ()], {}, (N, 3)),
    ("matmul", [(N, 20), (20, 30)], {}, (N, 30)),
    ("matmul", [(N, H, 20), (20,)], {}, (N, H)),
    ("matmul", [(N, H), (H, 3)], {}, (N, 3)),
    ("cat", [(N, 3), (N, 5)], {"dim": 1}, (N, 8)),
    ("cat", [(N, 3), (N, 3)], {"dim": 0}, (2 * N, 3)),
    ("cat", [(N, 3), (4, 3)], {}, (N + 4, 3)),
    ("stack", [(N, 3), (N, 3)], {"dim": 1}, (N, 2, 3)),
    ("unsqueeze", [(N, 3)], {"dim": 1}, (N, 1, 3)),
    ("squeeze", [(N, 1, 3)], {}, (N, 3)),
    ("transpose", [(N, 3)], {"dim0": 0, "dim1": 1}, (3, N)),
    ("select", [(N, 12, 32)], {"dim": 1, "index": -1}, (N, 32)),
    ("getitem", [(N, 12, 32)], {"index": (ALL, -1, S(None, 8))}, (N, 8)),
    ("getitem", [(N, 12)], {"index": (S(1, -1),)}, (N - 2, 12)),     # as long as it needs
    ("getitem", [(N, 12, 32)], {"index": (..., S(None, 8))}, (N, 12, 8)),
    ("getitem", [(N, 12)], {"index": (S(-3, None),)}, (3, 12)),
    ("getitem", [(N, 12)], {"index": (S(None, None, 2),)}, ((N - 1) // 2 + 1, 12)),
    ("select", [(N, 12)], {"dim": 0, "index": 7}, (12,)),      # N may be 8 or more
    ("narrow", [(N, 12)], {"dim": 0, "start": 1, "length": 1}, (1, 12)),
    ("permute", [(N, 3, H)], {"dims": (2, 0, 1)}, (H, N, 3)),
    ("expand", [(N, 1)], {"size": (-1, 5)}, (N, 5)),
    ("max_pool2d", [(N, 3, H, 8)], {"kernel_size": 2}, (N, 3, (H - 2) // 2 + 1, 4)),
    ("max_pool2d", [(N, 3, 2 * H, 8)], {"kernel_size": 2}, (N, 3, H, 4)),
    ("adaptive_avg_pool2d", [(N, 3, H, 8)], {"output_size": (None, 1)}, (N, 3, H, 1)),
    ("where", [(N, 1), (1, 4), ()], {}, (N, 4)),
    ("pad", [(N, H)], {"pad": (1, 1)}, (N, H + 2)),
    ("rand", [], {"size": (N, 3)}, (N, 3)),
    ("arange", [], {"start": N}, (N,)),
    ("eye", [], {"n": N}, (N, N)),
])
def test_symbolic(name, shapes, kwargs, expected):
    assert shape_of(name, *shapes, **kwargs) == expected


@pytest.mark.parametrize("name, shapes, kwargs, culprit", [
    ("reshape", [(N, 16, 5, 5)], {"shape": (N, 300)}, ("shape", None)),
    ("reshape", [(N, 10)], {"shape": (N + 1, 10)}, ("shape", None)),
    ("reshape", [(N, 10)], {"shape": (N, 3, -1)}, ("shape", None)),
    ("add", [(3 * N, 20), (2 * N, 20)], {}, (None, 1)),
    ("add", [(N, 20), (N + 1, 20)], {}, (None, 1)),
    ("matmul", [(N, 20), (30, 20)], {}, (None, 1)),
    ("cat", [(N, 3), (N + 1, 3)], {"dim": 1}, (None, 1)),
    ("softmax", [(N, 10)], {"dim": 2}, ("dim", None)),
    ("reshape", [(N, 4)], {"shape": ((N, 4),)}, ("shape", None)),
    ("getitem", [(N, 4)], {"index": (S(-3, 5),)}, ("index0", None)),   # its length depends on N
])
def test_symbolic_errors(name, shapes, kwargs, culprit):
    with pytest.raises(ShapeRuleError) as err:
        shape_of(name, *shapes, **kwargs)
    assert (err.value.arg, err.value.operand) == culprit


def test_unknown_symbolic_pairs_are_accepted():
    M = Sym.symbol("M")
    assert shape_of("add", (N, 3), (M, 3)) == (N, 3)
    assert shape_of("matmul", (N, M), (N, 3)) == (N, 3)
    assert shape_of("reshape", (N, 4), shape=(M, -1))[0] == M


# -- emitted source -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, srcs, kwargs, expected", [
    ("add", ["x", "1"], {}, "(x + 1)"),
    ("matmul", ["x", "w"], {}, "(x @ w)"),
    ("pow", ["x", "2"], {}, "(x ** 2)"),
    ("neg", ["a"], {}, "(-a)"),
    ("relu", ["(x @ w + 1)"], {}, "torch.relu(x @ w + 1)"),
    ("softmax", ["x"], {"dim": "1"}, "F.softmax(x, dim=1)"),
    ("mean", ["x"], {}, "torch.mean(x)"),
    ("mean", ["x"], {"dim": "None", "keepdim": "False"}, "torch.mean(x)"),
    ("sum", ["x"], {"dim": "(0, 1)", "keepdim": "True"}, "torch.sum(x, dim=(0, 1), keepdim=True)"),
    ("reshape", ["x"], {"shape": "(N, -1)"}, "torch.reshape(x, (N, -1))"),
    ("reshape", ["x"], {"shape": ["N", "-1"]}, "torch.reshape(x, (N, -1))"),
    ("view", ["(a + b)"], {"shape": "(N, -1)"}, "(a + b).view((N, -1))"),
    ("view", ["a + b"], {"shape": "(4,)"}, "(a + b).view((4,))"),
    ("cat", ["a", "b"], {"dim": "1"}, "torch.cat((a, b), dim=1)"),
    ("cat", ["a"], {"dim": "0"}, "torch.cat((a,))"),
    ("max", ["x"], {"dim": "1"}, "torch.max(x, dim=1).values"),
    ("max_pool2d", ["x"], {"kernel_size": "2", "stride": "None"}, "F.max_pool2d(x, 2)"),
    ("gelu", ["x"], {"approximate": "'none'"}, "F.gelu(x)"),
    ("maximum", ["x", "0"], {}, "torch.maximum(x, torch.tensor(0))"),
    ("transpose", ["x"], {"dim0": "0", "dim1": "1"}, "torch.transpose(x, 0, 1)"),
    ("rand", [], {"size": "(20, 20)", "device": "device", "dtype": "dtype", "generator": "gen"},
     "torch.rand((20, 20), device=device, dtype=dtype, generator=gen)"),
    ("zeros", [], {"size": "(20, 20)", "device": "device", "dtype": "dtype", "generator": "gen"},
     "torch.zeros((20, 20), device=device, dtype=dtype)"),
    ("full", [], {"size": "(2, 3)", "value": "0.5"}, "torch.full((2, 3), 0.5)"),
    ("arange", [], {"start": "5"}, "torch.arange(5)"),
    ("arange", [], {"start": "5", "end": "None", "step": "2"}, "torch.arange(0, 5, 2)"),
])
def test_emit(name, srcs, kwargs, expected):
    assert FUNCTIONS[name].emit(*srcs, **kwargs) == expected


def test_emitted_operators_compose():
    x, w = torch.randn(4, 20), torch.randn(20, 3)
    inner = FUNCTIONS["add"].emit(FUNCTIONS["matmul"].emit("x", "w"), "1")
    src = FUNCTIONS["relu"].emit(FUNCTIONS["neg"].emit(inner))
    torch.testing.assert_close(eval(src, {"torch": torch, "F": F, "x": x, "w": w}),
                               torch.relu(-(x @ w + 1)))


# -- factories ------------------------------------------------------------------------------------

FACTORIES = [
    ("rand", {"size": (3, 4)}, lambda g: torch.rand((3, 4), generator=g)),
    ("rand", {"size": (5,)}, lambda g: torch.rand(5, generator=g)),
    ("randn", {"size": (2, 3, 4)}, lambda g: torch.randn((2, 3, 4), generator=g)),
    ("randn", {"size": ()}, lambda g: torch.randn((), generator=g)),
    ("randint", {"low": 0, "high": 10, "size": (3, 3)},
     lambda g: torch.randint(0, 10, (3, 3), generator=g).float()),
    ("zeros", {"size": (2, 0)}, lambda g: torch.zeros(2, 0)),
    ("ones", {"size": (4,)}, lambda g: torch.ones(4)),
    ("full", {"size": (2, 3), "value": 1.5}, lambda g: torch.full((2, 3), 1.5)),
    ("eye", {"n": 3}, lambda g: torch.eye(3)),
    ("eye", {"n": 3, "m": 5}, lambda g: torch.eye(3, 5)),
    ("arange", {"start": 5}, lambda g: torch.arange(5.0)),
    ("arange", {"start": 2, "end": 9, "step": 3}, lambda g: torch.arange(2.0, 9, 3)),
    ("arange", {"start": 0.5, "end": 2.0, "step": 0.25}, lambda g: torch.arange(0.5, 2.0, 0.25)),
    ("arange", {"start": 5, "step": 2}, lambda g: torch.arange(0.0, 5, 2)),
    ("arange", {"start": 5, "end": 0, "step": -2}, lambda g: torch.arange(5.0, 0, -2)),
    ("linspace", {"start": 0.0, "end": 1.0, "steps": 7}, lambda g: torch.linspace(0, 1, 7)),
]


@pytest.mark.parametrize("name, kwargs, ref", FACTORIES, ids=[f[0] for f in FACTORIES])
def test_factories(name, kwargs, ref):
    fn = FUNCTIONS[name]
    assert fn.factory and fn.tensors == 0
    src = fn.emit(**{k: repr(v) for k, v in kwargs.items()},
                  device="device", dtype="dtype", generator="gen")
    env = {"torch": torch, "device": torch.device("cpu"), "dtype": torch.float32,
           "gen": torch.Generator().manual_seed(7)}
    real = eval(src, env)
    assert fn.shape(**with_defaults(fn, kwargs)) == tuple(real.shape), src
    assert real.dtype == torch.float32
    torch.testing.assert_close(real, ref(torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("name, kwargs, arg", [
    ("zeros", {"size": (2, -1)}, "size"),
    ("rand", {"size": ((2, 3),)}, "size"),
    ("randint", {"low": 5, "high": 2, "size": (3,)}, "high"),
    ("arange", {"start": 5, "end": 0, "step": 1}, "step"),
    ("arange", {"start": 0, "end": 5, "step": 0}, "step"),
    ("eye", {"n": -1}, "n"),
])
def test_factory_errors(name, kwargs, arg):
    fn = FUNCTIONS[name]
    src = fn.emit(**{k: repr(v) for k, v in kwargs.items()}, device="device")
    with pytest.raises(Exception):
        eval(src, {"torch": torch, "device": torch.device("cpu")})
    with pytest.raises(ShapeRuleError) as err:
        fn.shape(**with_defaults(fn, kwargs))
    assert err.value.arg == arg


# -- registry -------------------------------------------------------------------------------------

def test_every_function_is_checked_against_torch():
    covered = {p.values[0] for p in CASES} | {f[0] for f in FACTORIES}
    assert covered == set(FUNCTION_NAMES)


def test_operators_and_lookup():
    for table in (BINARY_OPS, UNARY_OPS):
        for fn_name in table.values():
            assert lookup_function(fn_name) is FUNCTIONS[fn_name]
    assert lookup_function("no_such_function") is None
    assert FUNCTION_NAMES == tuple(sorted(FUNCTION_NAMES))


def test_param_conventions():
    for fn in FUNCTIONS.values():
        names = [p.name for p in fn.params]
        assert len(set(names)) == len(names), fn.name
        assert sum(n.startswith("*") for n in names) <= 1, fn.name
        assert fn.tensors == -1 or fn.tensors <= len(fn.params), fn.name
        assert fn.factory == (fn.tensors == 0), fn.name
        assert fn.doc, fn.name


def test_param_types_validate_with_pydantic():
    pydantic = pytest.importorskip("pydantic")
    for fn in FUNCTIONS.values():
        for p in fn.params:
            adapter = pydantic.TypeAdapter(p.type)
            if not p.required:
                adapter.validate_python(p.default, strict=True)

    def valid(name, param, value):
        """Validate as the argument binder does (strict)."""
        p = next(p for p in FUNCTIONS[name].params if p.name == param)
        return pydantic.TypeAdapter(p.type).validate_python(value, strict=True)

    assert valid("sum", "dim", (0, 1)) == (0, 1)
    assert valid("sum", "dim", None) is None
    assert valid("permute", "*dims", (1, 0)) == (1, 0)  # a variadic type describes the tuple
    assert valid("elu", "alpha", 1) == 1.0
    assert valid("adaptive_avg_pool2d", "output_size", (None, 4)) == (None, 4)
    with pytest.raises(pydantic.ValidationError):
        valid("gelu", "approximate", "fast")
    with pytest.raises(pydantic.ValidationError):
        valid("softmax", "dim", 1.5)


def test_instance_tagged_symbols_compare():
    a, b = Sym.symbol("C@3"), Sym.symbol("N@7")
    assert shape_of("reshape", (b, a, 4), shape=(b, -1)) == (b, 4 * a)
    with pytest.raises(ShapeRuleError):
        shape_of("reshape", (b, 10), shape=(b, 3, -1))
    with pytest.raises(ShapeRuleError):
        shape_of("add", (3 * b, 2), (2 * b, 2))


def test_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import netspec.functions as f\n"
            "assert f.lookup_function('relu') is not None\n"
            "print(f.FUNCTIONS['relu'].emit('x'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "torch.relu(x)"


def test_cat_compares_each_tensor_with_the_size_merged_so_far() -> None:
    """A symbolic size taken to be 3 by the second tensor cannot also be 4 for the third:
    torch refuses the cat for every H, and so does the rule."""
    H = Sym.symbol("H")
    with pytest.raises(ShapeRuleError) as info:
        lookup_function("cat").shape((2, H), (2, 3), (2, 4), dim=0)
    assert info.value.message == "cat: tensor 2 has 4 at dim 1 where tensor 0 has H (taken to be 3)"
    assert info.value.operand == 2
    with pytest.raises(RuntimeError):
        torch.cat((torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 4)), 0)
    assert lookup_function("cat").shape((2, H), (2, 3), (2, 3), dim=0) == (6, 3)
