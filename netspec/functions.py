"""The tensor functions of spec expressions: shape rules and code emitters, one record per function.

Every function is a ``FunctionDef`` in ``registry.FUNCTIONS``; ``BINARY_OPS`` and ``UNARY_OPS`` map
spec operators (``+``, ``@``, unary ``-``) to these names. This module never imports torch.

Conventions
-----------
Parameters
    ``params`` lists the tensor parameters first, then the static ones, in call order.
    ``tensors`` is the number of leading tensor parameters, or ``-1`` when the tensors are
    variadic (``cat``, ``stack``: ``Param("*tensors")``). A ``Param`` whose name starts with ``*``
    is variadic: it collects the remaining positional arguments into a tuple, and its ``type``
    describes that tuple (``Param("*dims", tuple[int, ...])``). Parameters after a variadic one
    can only be given by keyword (``full(2, 3, value=0.5)``). Dim-valued arguments (reshape and
    factory sizes) may be symbolic and are typed ``Any``. Types validate in pydantic's strict
    mode.

Shape rules: ``shape(*tensor_shapes, **static_args) -> tuple``
    Tensor shapes come positionally as tuples of dims; a Python number operand has shape ``()``
    and is treated as a 0-d tensor. Static arguments come by name with defaults applied; a
    variadic static argument comes as a tuple under its name without the ``*`` (``shape=(N, -1)``).
    Anything torch would reject raises ``ShapeRuleError`` with ``arg`` (the argument at fault) or
    ``operand`` (the index of the tensor at fault).

Symbolic dims
    A named symbol (``N``) stands for a size of at least 2: it is never broadcast away nor
    squeezed. Two dims are *known equal* or *known different* only when their difference is a
    constant (both concrete, or ``N + 1`` vs ``N``) or a polynomial in named symbols whose
    coefficients share one sign (``400*N`` vs ``300*N``); otherwise they are assumed compatible,
    and a rule raises only for what is provably wrong. When an unknown pair must be merged
    (broadcasting, the non-cat dims of ``cat``) the concrete dim is kept, since it is the only
    size that can make the pair valid; between two unrelated symbols the first one is kept.
    Pooling and padding share the pooling and padding layers' rules (``netspec.layers``); a
    ``ceil_mode`` pooling whose last window may or may not be dropped has an opaque length.

Emitters: ``emit(*tensor_sources, **static_sources) -> str``
    Every argument is Python source text (``"x"``, ``"1"``, ``"(2, 3)"``, ``"'mean'"``). A
    variadic static argument is one source for the whole tuple (``shape="(N, -1)"``); a list of
    element sources is accepted too. Static arguments may be omitted, and those whose source
    equals the default are dropped from the output for readability, so ``softmax`` emits
    ``F.softmax(x, dim=1)`` and ``sum`` with ``dim=None`` emits ``torch.sum(x)``. Operators emit
    parenthesised Python operators (``(a + b)``, ``(a @ b)``, ``(-a)``); functions emit ``torch.``
    or ``F.`` calls. A number literal given where a function needs a tensor is wrapped as
    ``torch.tensor(...)``. Factory emitters accept extra keyword sources (``device``, ``dtype``,
    ``generator``) and append them, dropping ``generator`` where torch takes none.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

from netspec.args import spec_literal
from netspec.dims import Dim, Shape, Sym, agree, fmt_shape, numel, shapes_agree, unify
from netspec.layers import broadcast, padded_length, pool_shape
from netspec.registry import (
    FUNCTIONS,
    REQUIRED,
    FunctionDef,
    Param,
    ShapeRuleError,
    register_function,
    static_params,
)

DimsArg = int | tuple[int, ...] | None
Number = int | float
SizeArg = int | tuple[int, ...]

__all__ = ["FUNCTION_NAMES", "Positions", "SliceValue", "lookup_function"]


def _is_dim(d: Any) -> bool:
    """Whether ``d`` can be a size: an int (not a bool) or a symbolic dim."""
    return isinstance(d, Sym) or (isinstance(d, int) and not isinstance(d, bool))


def _norm_dim(dim: int, shape: Shape, arg: str = "dim", extra: int = 0) -> int:
    """Normalise a possibly negative dim of ``shape`` (``extra`` = 1 for inserted dims)."""
    rank = max(len(shape) + extra, 1)
    if not isinstance(dim, int) or not -rank <= dim < rank:
        raise ShapeRuleError(
            f"{arg}={dim} is out of range for the {len(shape)}-D input {fmt_shape(shape)}",
            arg=arg, hint=f"expected a dim in {-rank}..{rank - 1}")
    return dim % rank


def _dim_set(dim: DimsArg, shape: Shape, arg: str = "dim") -> tuple[int, ...]:
    """Normalise an int, tuple or None (all dims; an empty tuple too, as torch does)."""
    if dim is None or dim == ():
        return tuple(range(len(shape)))
    dims = tuple(_norm_dim(d, shape, arg) for d in (dim if isinstance(dim, tuple) else (dim,)))
    if len(set(dims)) != len(dims):
        raise ShapeRuleError(f"{arg}={dim} names a dim more than once", arg=arg)
    return dims if shape else ()


def _check_rank(shape: Shape, ranks: tuple[int, ...], what: str, operand: int = 0) -> None:
    """Raise unless the input has one of the accepted ranks."""
    if len(shape) not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        got = f"{len(shape)}-D {fmt_shape(shape)}"
        raise ShapeRuleError(f"{what} expects a {want} input, got {got}", operand=operand)


def _sizes(values: tuple, arg: str, allow_hole: bool = False) -> tuple:
    """Check a tuple of sizes given as separate arguments (``-1`` allowed where ``allow_hole``)."""
    if len(values) == 1 and isinstance(values[0], (tuple, list)):
        raise ShapeRuleError("give the sizes as separate arguments, not as one tuple", arg=arg,
                             hint="e.g. reshape(x, N, -1), zeros(2, 3)")
    for d in values:
        if not _is_dim(d):
            raise ShapeRuleError(f"{arg}: {spec_literal(d)} is not a size", arg=arg)
        if isinstance(d, int) and d < 0 and not (allow_hole and d == -1):
            raise ShapeRuleError(f"{arg}: invalid size {d}", arg=arg)
    return tuple(values)


# -- emitters -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)      # generated code repeats the same few sources
def _literal(src: str) -> Any:
    """The value of a literal source, or REQUIRED when it is not a literal (never mutated)."""
    try:
        return ast.literal_eval(src)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return REQUIRED


def _is_default(src: str, default: Any) -> bool:
    """Whether a static source spells the parameter's default."""
    if default is REQUIRED:
        return False
    value = _literal(src)
    return value is not REQUIRED and value == default


def _tensor_src(src: str) -> str:
    """Wrap a number literal so it can stand where torch requires a tensor."""
    value = _literal(src)
    return f"torch.tensor({src})" if isinstance(value, (int, float, complex)) else src


def _atom(src: str) -> str:
    """Parenthesise a source unless it is already safe before ``.attr``."""
    try:
        node = ast.parse(src, mode="eval").body
    except SyntaxError:
        return f"({src})"
    if isinstance(node, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
        return src
    return src if src.startswith("(") and _closes_at_end(src) else f"({src})"


def _bare(src: str) -> str:
    """A tensor argument without the parentheses of an operator expression, which a call's
    commas already delimit: ``torch.relu(x + y)``, not ``torch.relu((x + y))``."""
    return src[1:-1] if src.startswith("(") and _closes_at_end(src) else src


def _closes_at_end(src: str) -> bool:
    """Whether the bracket opened by the first character closes at the last one."""
    depth = 0
    for i, ch in enumerate(src):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return i == len(src) - 1
    return False


def _tuple_src(src: Any) -> str:
    """One source for a variadic argument: a tuple source, or a list of element sources."""
    if isinstance(src, (tuple, list)):
        return f"({src[0]},)" if len(src) == 1 else f"({', '.join(src)})"
    return src


def _default_src(target: str, param: Param) -> str:
    """The source of an omitted positional argument."""
    if param.name.startswith("*"):
        return "()"
    if param.required:
        raise TypeError(f"{target}: missing argument {param.name!r}")
    return repr(param.default)


def _call(target: str, params: tuple[Param, ...], *, tensors: int = 1, positional: int = 0,
          rename: dict[str, str] | None = None, wrap: bool = True, generator: bool = False,
          written_with: dict[str, str] | None = None) -> Callable[..., str]:
    """An emitter for ``target(tensors..., statics...)``.

    The first ``positional`` statics are written by position, the rest as keywords unless at their
    default; ``written_with={"keepdim": "dim"}`` writes ``dim`` even at its default whenever
    ``keepdim`` is written. Factories (``tensors=0``) append extra keyword sources; ``generator``
    says whether torch accepts one.
    """
    statics = {p.name.lstrip("*"): p for p in static_params(params, tensors)}
    rename, written_with = rename or {}, written_with or {}

    def emit(*tensor_srcs: str, **static_srcs: Any) -> str:
        srcs = [_bare(_tensor_src(s) if wrap else s) for s in tensor_srcs]
        parts = [_tuple_src(srcs)] if tensors < 0 else srcs
        written = {k for k, p in statics.items()
                   if k in static_srcs and not _is_default(static_srcs[k], p.default)}
        written |= {written_with[k] for k in written if k in written_with}
        for i, (key, p) in enumerate(statics.items()):
            src = static_srcs.get(key)
            if src is None:
                src = _default_src(target, p)
            elif p.name.startswith("*"):
                src = _tuple_src(src)
            if i < positional:
                parts.append(src)
            elif key in written:
                parts.append(f"{rename.get(key, key)}={src}")
        extra = {k: v for k, v in static_srcs.items() if k not in statics}
        if extra and tensors != 0:
            raise TypeError(f"{target}: unexpected arguments {sorted(extra)}")
        parts += [f"{k}={v}" for k, v in extra.items() if generator or k != "generator"]
        return f"{target}({', '.join(parts)})"

    return emit


def _define(name: str, params: tuple[Param, ...] | list[Param], shape: Callable[..., Shape],
            emit: Callable[..., str] | None = None, *, target: str | None = None, tensors: int = 1,
            factory: bool = False, doc: str = "", label: Callable[..., str] | None = None,
            fresh: bool = False, inplace: str | None = None,
            **call_options: Any) -> FunctionDef:
    """Register a function; ``emit`` defaults to a ``_call`` of ``target``, and ``inplace`` names
    the in-place variant's target (``torch.relu_``)."""
    params = tuple(params)
    if emit is None:
        emit = _call(target or f"torch.{name}", params, tensors=tensors, **call_options)
    in_place = _call(inplace, params, tensors=tensors, **call_options) if inplace else None
    return register_function(FunctionDef(name=name, params=params, shape=shape, emit=emit,
                                         tensors=tensors, factory=factory, doc=doc, label=label,
                                         fresh=fresh, inplace=in_place))


# -- elementwise ----------------------------------------------------------------------------------

def _same(x: Shape, **_: Any) -> Shape:
    """Elementwise: the output has the input's shape."""
    return tuple(x)


def _binary_shape(a: Shape, b: Shape, **_: Any) -> Shape:
    """Elementwise on two operands with broadcasting."""
    return broadcast(a, b)


def _operator(op: str) -> Callable[[str, str], str]:
    """An emitter for a Python binary operator."""
    return lambda a, b: f"({a} {op} {b})"


def _binary(name: str, op: str | None = None, doc: str = "", fresh: bool = False) -> None:
    """Register a broadcasting binary function, emitted as an operator when it has one."""
    params = (Param("a"), Param("b"))
    emit = _operator(op) if op else None
    _define(name, params, _binary_shape, emit, tensors=2, doc=doc or f"elementwise {name}",
            fresh=fresh)


def _unary(name: str, target: str, *statics: Param, doc: str = "",
           inplace: str | None = None) -> None:
    """Register an elementwise function of one tensor and optional static arguments."""
    _define(name, (Param("x"), *statics), _same, target=target, doc=doc or f"elementwise {name}",
            inplace=inplace)


# add, sub, mul and div always return a new tensor, and their backward reads only the operands
# (pow's reads its result), so relu(y + x) can be torch.relu_(y + x), as torchvision's ResNet
# writes it: one allocation fewer
for _name, _op in {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//",
                   "remainder": "%", "pow": "**", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
                   "eq": "==", "ne": "!="}.items():
    _binary(_name, _op, fresh=_name in ("add", "sub", "mul", "div"))
_binary("maximum", doc="elementwise maximum")
_binary("minimum", doc="elementwise minimum")
_define("neg", (Param("x"),), _same, lambda x: f"(-{x})", doc="negation", fresh=True)
_unary("relu", "torch.relu", inplace="torch.relu_")

for _name, _target in {
        "relu6": "F.relu6", "sigmoid": "torch.sigmoid", "tanh": "torch.tanh",
        "silu": "F.silu", "mish": "F.mish", "selu": "F.selu", "exp": "torch.exp",
        "log": "torch.log", "log1p": "torch.log1p", "abs": "torch.abs", "sqrt": "torch.sqrt",
        "rsqrt": "torch.rsqrt", "square": "torch.square", "sin": "torch.sin", "cos": "torch.cos",
        "sign": "torch.sign", "floor": "torch.floor", "ceil": "torch.ceil",
        "logical_not": "torch.logical_not", "reciprocal": "torch.reciprocal"}.items():
    _unary(_name, _target)
_unary("gelu", "F.gelu", Param("approximate", Literal["none", "tanh"], "none"))
_unary("elu", "F.elu", Param("alpha", float, 1.0))
_unary("leaky_relu", "F.leaky_relu", Param("negative_slope", float, 0.01))
_unary("softplus", "F.softplus", Param("beta", float, 1.0), Param("threshold", float, 20.0))
_unary("round", "torch.round", Param("decimals", int, 0))


def _hardtanh_shape(x: Shape, *, min_val: float, max_val: float) -> Shape:
    """Elementwise; the bounds must be ordered."""
    if min_val > max_val:
        raise ShapeRuleError(f"min_val={min_val} is greater than max_val={max_val}", arg="min_val")
    return tuple(x)


def _clamp_shape(x: Shape, *, min: Number | None, max: Number | None) -> Shape:  # noqa: A002
    """Elementwise; at least one bound is needed."""
    if min is None and max is None:
        raise ShapeRuleError("clamp needs min or max (or both)", arg="min")
    return tuple(x)


_define("hardtanh", (Param("x"), Param("min_val", float, -1.0), Param("max_val", float, 1.0)),
        _hardtanh_shape, target="F.hardtanh", doc="clamp to [min_val, max_val]")
_define("clamp", (Param("x"), Param("min", Number | None, None), Param("max", Number | None, None)),
        _clamp_shape, doc="clamp to [min, max]")


# -- matmul ---------------------------------------------------------------------------------------

def _matmul_shape(a: Shape, b: Shape, **_: Any) -> Shape:
    """torch.matmul: 1-D operands are promoted and demoted again; batch dims broadcast."""
    for i, s in enumerate((a, b)):
        if not s:
            raise ShapeRuleError("matmul needs tensors of at least 1 dim, not a scalar", operand=i)
    k_a, k_b = a[-1], b[0] if len(b) == 1 else b[-2]
    if not agree(k_a, k_b):
        which = "size" if len(b) == 1 else "second-to-last dim"
        raise ShapeRuleError(f"the inner dims differ, {fmt_shape(a)} @ {fmt_shape(b)}", operand=1,
                             hint=f"the last dim of the left operand ({k_a}) must equal the "
                                  f"{which} of the right one ({k_b})")
    try:
        batch = broadcast(a[:-2], b[:-2])
    except ShapeRuleError:
        raise ShapeRuleError(f"the batch dims of {fmt_shape(a)} @ {fmt_shape(b)} do not broadcast",
                             operand=1) from None
    return batch + tuple(a[-2:-1]) + tuple(b[-1:] if len(b) > 1 else ())


def _mm_shape(a: Shape, b: Shape, **_: Any) -> Shape:
    """torch.mm: two 2-D operands only."""
    _check_rank(a, (2,), "mm", 0)
    _check_rank(b, (2,), "mm", 1)
    return _matmul_shape(a, b)


_define("matmul", (Param("a"), Param("b")), _matmul_shape, _operator("@"), tensors=2,
        doc="matrix product with torch.matmul's broadcasting")
_define("mm", (Param("a"), Param("b")), _mm_shape, tensors=2, doc="2-D matrix product")


# -- softmax, normalize ---------------------------------------------------------------------------

def _along_dim(x: Shape, *, dim: int, **_: Any) -> Shape:
    """Elementwise along a checked dim."""
    _norm_dim(dim, x)
    return tuple(x)


_define("softmax", (Param("x"), Param("dim", int)), _along_dim, target="F.softmax",
        doc="softmax along dim")
_define("log_softmax", (Param("x"), Param("dim", int)), _along_dim, target="F.log_softmax",
        doc="log-softmax along dim")
_define("normalize", (Param("x"), Param("p", float, 2.0), Param("dim", int, 1),
                      Param("eps", float, 1e-12)),
        _along_dim, target="F.normalize", doc="divide by the p-norm along dim")


# -- reductions -----------------------------------------------------------------------------------

def _reduce_shape(x: Shape, *, dim: DimsArg, keepdim: bool, nonempty: bool = False,
                  empty_dims: str = "all") -> Shape:
    """Drop (or keep as 1) the reduced dims; ``nonempty``: a reduced dim must not be 0.

    ``empty_dims`` says what ``dim=()`` means, which differs between torch functions: ``"all"``
    dims, ``"none"`` of them, or ``"error"``.
    """
    if dim == () and empty_dims != "all":
        if empty_dims == "error":
            raise ShapeRuleError("dim=() names no dim; give at least one", arg="dim")
        return tuple(x)
    dims = _dim_set(dim, x)
    if nonempty and any(x[d] == 0 for d in dims):
        raise ShapeRuleError(f"cannot reduce over an empty dim of {fmt_shape(x)}", arg="dim")
    if keepdim:
        return tuple(1 if i in dims else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i not in dims)


def _reduction(name: str, target: str | None = None, *, dim_type: Any = DimsArg,
               dim_default: Any = None, before: tuple[Param, ...] = (),
               after: tuple[Param, ...] = (), nonempty: bool = False, empty_dims: str = "all",
               keepdim_needs_dim: bool = False, emit: Callable[..., str] | None = None,
               **call_options: Any) -> None:
    """Register a reduction ``name(x, *before, dim, keepdim, *after)``.

    ``keepdim_needs_dim``: torch only keeps dims when a dim is given (``prod``).
    """
    params = (Param("x"), *before, Param("dim", dim_type, dim_default),
              Param("keepdim", bool, False), *after)

    def shape(x: Shape, *, dim: DimsArg, keepdim: bool, **_: Any) -> Shape:
        """The reduced shape."""
        if keepdim_needs_dim and keepdim and dim is None:
            raise ShapeRuleError(f"{name} keeps dims only when given a dim", arg="keepdim")
        return _reduce_shape(x, dim=dim, keepdim=keepdim, nonempty=nonempty, empty_dims=empty_dims)

    doc = f"{name} over dim" + (" (all dims if None)" if dim_default is None else "")
    _define(name, params, shape, emit, target=target, doc=doc, written_with={"keepdim": "dim"},
            **call_options)


def _max_emit(name: str) -> Callable[..., str]:
    """Values-only max/min: ``torch.max(x, dim=1).values``, ``torch.max(x)`` for all dims."""
    def emit(x: str, dim: str = "None", keepdim: str = "False") -> str:
        x = _tensor_src(x)
        keep = not _is_default(keepdim, False)
        if _is_default(dim, None):
            return f"torch.a{name}({x}, keepdim={keepdim})" if keep else f"torch.{name}({x})"
        extra = f", keepdim={keepdim}" if keep else ""
        return f"torch.{name}({x}, dim={dim}{extra}).values"

    return emit


for _name in ("sum", "mean", "amax", "amin", "all", "any"):
    _reduction(_name, nonempty=_name in ("amax", "amin"),
               empty_dims="none" if _name in ("all", "any") else "all")
_reduction("prod", dim_type=int | None, keepdim_needs_dim=True)
_reduction("max", dim_type=int | None, nonempty=True, emit=_max_emit("max"))
_reduction("min", dim_type=int | None, nonempty=True, emit=_max_emit("min"))
_reduction("std", after=(Param("correction", Number, 1),))
_reduction("var", after=(Param("correction", Number, 1),))
_reduction("norm", "torch.linalg.vector_norm", before=(Param("p", float, 2.0),),
           rename={"p": "ord"})
_reduction("logsumexp", dim_type=int | tuple[int, ...], dim_default=REQUIRED, empty_dims="error")


# -- shape ops ------------------------------------------------------------------------------------

def _flatten_shape(x: Shape, *, start_dim: int, end_dim: int) -> Shape:
    """Merge dims start_dim..end_dim into one."""
    s, e = _norm_dim(start_dim, x, "start_dim"), _norm_dim(end_dim, x, "end_dim")
    if s > e:
        raise ShapeRuleError(f"start_dim={start_dim} comes after end_dim={end_dim}",
                             arg="start_dim")
    x = tuple(x) or (1,)
    return x[:s] + (numel(x[s:e + 1]),) + x[e + 1:]


def _reshape_shape(x: Shape, *, shape: tuple) -> Shape:
    """Same number of elements; one -1 is inferred."""
    sizes = _sizes(shape, "shape", allow_hole=True)
    holes = [i for i, d in enumerate(sizes) if isinstance(d, int) and d == -1]
    if len(holes) > 1:
        raise ShapeRuleError("only one size can be -1", arg="shape")
    total, known = numel(x), numel([d for d in sizes if not (isinstance(d, int) and d == -1)])

    def refuse(why: str) -> ShapeRuleError:       # the message is built only on an error
        return ShapeRuleError(f"cannot reshape {fmt_shape(x)} ({total} elements) into "
                              f"{fmt_shape(sizes)}{why}", arg="shape")
    if not holes:
        if not agree(total, known):
            raise refuse(f" ({known} elements)")
        return sizes
    if known == 0:
        raise refuse(": -1 is ambiguous next to a 0 size")
    inferred = total // known
    if _divides(known, total) is False or not agree(inferred * known, total):
        raise refuse(f": {total} is not a multiple of {known}")
    return sizes[:holes[0]] + (inferred,) + sizes[holes[0] + 1:]


def _divides(d: Dim, total: Dim) -> bool | None:
    """Whether ``d`` divides ``total`` when decidable: ints, or a monomial ``c*M`` whose symbolic
    part ``M`` divides ``total`` leaving an int (``3*N`` does not divide ``10*N``)."""
    if isinstance(d, int) and isinstance(total, int):
        return total % d == 0
    if isinstance(d, Sym) and len(d.terms) == 1:
        (monomial, coeff), = d.terms.items()
        rest = total // Sym({monomial: 1})
        if isinstance(rest, int):
            return rest % coeff == 0
    return None


def _transpose_shape(x: Shape, *, dim0: int, dim1: int) -> Shape:
    """Swap two dims."""
    a, b = _norm_dim(dim0, x, "dim0"), _norm_dim(dim1, x, "dim1")
    out = list(x)
    if out:
        out[a], out[b] = out[b], out[a]
    return tuple(out)


def _permute_shape(x: Shape, *, dims: tuple[int, ...]) -> Shape:
    """Reorder all dims."""
    if len(dims) != len(x):
        raise ShapeRuleError(f"permute needs {len(x)} dims for the {len(x)}-D input "
                             f"{fmt_shape(x)}, got {len(dims)}", arg="dims")
    order = [_norm_dim(d, x, "dims") for d in dims]
    if len(set(order)) != len(order):
        raise ShapeRuleError(f"permute: dims {tuple(dims)} repeat a dim", arg="dims")
    return tuple(x[d] for d in order)


def _index_range(size: Dim, index: int, arg: str, dim: int, *, end: bool = False,
                 name: str | None = None) -> None:
    """Refuse an index provably outside ``-size..size - 1`` (``end``: up to ``size`` itself).
    A named symbol is at least 2, so only indices beyond -2..1 are unknown for it."""
    top = 1 if end else 0
    if isinstance(size, int):
        if not -size <= index < size + top:
            raise ShapeRuleError(f"{name or arg}={index} is out of range for dim {dim}, of "
                                 f"size {size}",
                                 arg=arg, hint=f"expected {-size}..{size - 1 + top}")


def _select_shape(x: Shape, *, dim: int, index: int) -> Shape:
    """One index of a dim, which goes away: ``select(x, 1, -1)`` is ``x[:, -1]``."""
    if not x:
        raise ShapeRuleError("select cannot be applied to a 0-D tensor", operand=0)
    d = _norm_dim(dim, x)
    _index_range(x[d], index, "index", dim)
    return tuple(x[:d]) + tuple(x[d + 1:])


def _narrow_shape(x: Shape, *, dim: int, start: int, length: int) -> Shape:
    """``length`` entries of a dim from ``start`` (negative counts from the end): ``narrow(x, 1,
    0, 3)`` is ``x[:, 0:3]``."""
    if not x:
        raise ShapeRuleError("narrow cannot be applied to a 0-D tensor", operand=0)
    d = _norm_dim(dim, x)
    if length < 0:
        raise ShapeRuleError(f"length={length} must not be negative", arg="length")
    size = x[d]
    _index_range(size, start, "start", dim, end=True)
    if isinstance(size, int):
        first = start + size if start < 0 else start
        if first + length > size:
            raise ShapeRuleError(f"start {first} + length {length} runs past dim {dim}, of "
                                 f"size {size}", arg="length",
                                 hint=f"at most {size - first} from there")
    return tuple(x[:d]) + (length,) + tuple(x[d + 1:])


@dataclass(frozen=True, slots=True, repr=False)
class SliceValue:
    """A slice in a tensor subscript, ``start:stop:step`` (each an int or None). Its repr is
    how it is written, so a subscript's source is its items' reprs: ``x[:, 1:3]``."""

    start: int | None
    stop: int | None
    step: int | None

    def __repr__(self) -> str:
        text = f"{_bound(self.start)}:{_bound(self.stop)}"
        return text if self.step is None else f"{text}:{self.step}"

    def as_slice(self) -> slice:
        return slice(self.start, self.stop, self.step)

    def length(self, size: Dim) -> Dim:
        """The length of this slice of a dim of ``size``, as Python (and torch) slice it."""
        start, stop, step = self.start, self.stop, 1 if self.step is None else self.step
        if step <= 0:
            raise ShapeRuleError(f"the step of {self!r} must be positive", arg="index",
                                 hint="torch slices with a positive step only")
        if isinstance(size, int):
            return len(range(*slice(start, stop, step).indices(size)))
        # A dim of symbolic size is taken to be as long as the bounds need. Each bound counts
        # from the start (>= 0) or from the end (< 0, or a left-out stop).
        a = 0 if start is None else start
        b = 0 if stop is None else stop
        a_from_end, b_from_end = a < 0, stop is None or b < 0
        if a_from_end == b_from_end:      # both from the start, or both from the end
            whole: Dim = max(b - a, 0)
        elif b_from_end:
            whole = size + b - a
        else:
            raise ShapeRuleError(f"the length of {self!r} of a dim of size {size} is not known "
                                 "at compile time", arg="index",
                                 hint="give the input a concrete shape with --input")
        if isinstance(whole, int) and whole == 0:
            return 0
        return whole if step == 1 else (whole - 1) // step + 1


@dataclass(frozen=True, slots=True, repr=False)
class Positions:
    """A list of positions in a tensor subscript, ``x[:, [2, 1, 0]]``: the dim keeps one entry
    per position, in their order (torch's advanced indexing by one list). Its repr is how it is
    written."""

    items: tuple[int, ...]

    def __repr__(self) -> str:
        return "[" + ", ".join(map(str, self.items)) + "]"


def _bound(value: int | None) -> str:
    return "" if value is None else str(value)


def _getitem_shape(x: Shape, *, index: tuple) -> Shape:
    """``x[i, a:b, None, ..., [p, q]]``: an integer item removes its dim, a slice keeps it with
    the slice's length, a list of positions keeps it with one entry per position, ``None``
    inserts a dim of size 1, ``...`` keeps as many dims as the other items leave; dims after
    the last item are kept.

    With one list, torch selects by the integers first, so the list's dim stays where it is
    (NumPy would move it to the front when an integer stands apart from it).
    """
    items = index if isinstance(index, tuple) else (index,)
    ellipses = [k for k, item in enumerate(items) if item is ...]
    if len(ellipses) > 1:
        raise ShapeRuleError("a subscript can have only one ellipsis (...)",
                             arg=f"index{ellipses[1]}", hint="remove this one")
    lists = [k for k, item in enumerate(items) if isinstance(item, Positions)]
    if len(lists) > 1:
        # torch pairs several lists up element by element, and where their dim goes depends
        # on whether they stand together: one list at a time reads plainly
        raise ShapeRuleError("a subscript can have only one list of positions",
                             arg=f"index{lists[1]}", hint="pick along one dim at a time: "
                             + _one_list_each(items, lists[1]))
    used = sum(item is not None and item is not ... for item in items)
    if used > len(x):
        raise ShapeRuleError(f"{used} subscripts for the {len(x)}-D input {fmt_shape(x)}",
                             arg="index", hint=f"at most {len(x)}: one per dim")
    out = []
    d = 0                       # the input dim the next item reads
    for k, item in enumerate(items):
        if item is None:
            out.append(1)
            continue
        if item is ...:
            out.extend(x[d:d + len(x) - used])
            d += len(x) - used
            continue
        if isinstance(item, SliceValue):
            try:
                out.append(item.length(x[d]))
            except ShapeRuleError as exc:
                raise ShapeRuleError(exc.message, arg=f"index{k}", hint=exc.hint) from None
        elif isinstance(item, int) and not isinstance(item, bool):
            _index_range(x[d], item, f"index{k}", d, name="index")
        elif isinstance(item, Positions):
            size = x[d]
            wrong = [p for p in item.items if isinstance(size, int) and not -size <= p < size]
            if wrong:
                raise ShapeRuleError(f"position {wrong[0]} is out of range for dim {d}, of size "
                                     f"{size}", arg=f"index{k}",
                                     hint=f"expected {-size}..{size - 1}")
            out.append(len(item.items))
        else:
            raise ShapeRuleError(f"a subscript must be an integer, a slice, a list of positions, "
                                 f"none or ..., not {spec_literal(item)}", arg=f"index{k}",
                                 hint="pick positions with a subscript: x[0, [1, 2]]")
        d += 1
    return tuple(out) + tuple(x[d:])


def _one_list_each(items: tuple, second: int) -> str:
    """``x[:, [0, 7], [1, 2]]`` as two subscripts of one list each: ``x[:, [0, 7]][:, :, [1, 2]]``
    (an integer's dim is gone by the second, a ``None``'s is there)."""
    first = [":" if k == second else spec_literal(item) for k, item in enumerate(items)]
    while first and first[-1] == ":":
        first.pop()
    then = ["..." if item is ... else ":" for item in items[:second]
            if not isinstance(item, int) or isinstance(item, bool)]
    return f"x[{', '.join(first)}][{', '.join(then + [spec_literal(items[second])])}]"


def _getitem_emit(x: str, index: str = "()") -> str:
    """``x[i, a:b]``, from the source of the subscript's tuple (its items' reprs)."""
    inner = index[1:-1] if index.startswith("(") and index.endswith(")") else index
    return f"{_atom(_tensor_src(x))}[{inner.rstrip(',')}]"


def _unsqueeze_shape(x: Shape, *, dim: int) -> Shape:
    """Insert a dim of size 1."""
    d = _norm_dim(dim, x, extra=1)
    return tuple(x[:d]) + (1,) + tuple(x[d:])


def _squeeze_shape(x: Shape, *, dim: DimsArg) -> Shape:
    """Remove size-1 dims (symbolic dims are assumed not to be 1)."""
    dims = _dim_set(dim, x)
    return tuple(d for i, d in enumerate(x) if not (i in dims and d == 1))


def _expand_shape(x: Shape, *, size: tuple) -> Shape:
    """Broadcast to a larger shape; -1 keeps a dim."""
    sizes = _sizes(size, "size", allow_hole=True)
    lead = len(sizes) - len(x)
    if lead < 0:
        raise ShapeRuleError(f"expand needs at least {len(x)} sizes for {fmt_shape(x)}", arg="size")
    out = []
    for i, want in enumerate(sizes):
        hole = isinstance(want, int) and want == -1
        if i < lead:
            if hole:
                raise ShapeRuleError("-1 is not allowed for a new leading dim", arg="size")
            out.append(want)
            continue
        have = x[i - lead]
        if hole or have == 1:
            out.append(have if hole else want)
        elif not agree(want, have):
            raise ShapeRuleError(f"cannot expand {fmt_shape(x)} to {fmt_shape(sizes)}: "
                                 f"size {have} is not 1 at dim {i - lead}", arg="size")
        else:
            out.append(unify(want, have))
    return tuple(out)


def _t_shape(x: Shape) -> Shape:
    """Transpose a matrix; 0-D and 1-D pass through."""
    if len(x) > 2:
        raise ShapeRuleError(f"t expects at most 2 dims, got {len(x)}-D {fmt_shape(x)}", operand=0)
    return tuple(reversed(x))


def _cat_shape(*shapes: Shape, dim: int) -> Shape:
    """Concatenate along dim; all other dims must match."""
    if not shapes:
        raise ShapeRuleError("cat needs at least one tensor")
    for i, s in enumerate(shapes):
        if not s:
            raise ShapeRuleError(f"cat: tensor {i} is 0-D and cannot be concatenated", operand=i)
    first = shapes[0]
    d = _norm_dim(dim, first)
    out = list(first)
    for i, s in enumerate(shapes[1:], 1):
        if len(s) != len(first):
            raise ShapeRuleError(f"cat: tensor {i} is {len(s)}-D {fmt_shape(s)} where tensor 0 is "
                                 f"{len(first)}-D {fmt_shape(first)}", operand=i)
        for j, (have, want) in enumerate(zip(s, first)):
            if j == d:
                out[j] = out[j] + have
            elif not agree(out[j], have):     # out[j]: the size merged so far
                raise ShapeRuleError(
                    f"cat: tensor {i} has {have} at dim {j} where tensor 0 has {want}"
                    + ("" if out[j] == want else f" (taken to be {out[j]})"),
                    operand=i, hint=f"all dims but the cat dim {d} must match")
            else:
                out[j] = unify(out[j], have)
    return tuple(out)


def _stack_shape(*shapes: Shape, dim: int) -> Shape:
    """Stack equal shapes along a new dim."""
    if not shapes:
        raise ShapeRuleError("stack needs at least one tensor")
    out = list(shapes[0])
    for i, s in enumerate(shapes[1:], 1):
        if not shapes_agree(out, s):
            raise ShapeRuleError(f"stack: tensor {i} has shape {fmt_shape(s)} where tensor 0 has "
                                 f"{fmt_shape(shapes[0])}", operand=i)
        out = [unify(a, b) for a, b in zip(out, s)]
    d = _norm_dim(dim, shapes[0], extra=1)
    return tuple(out[:d]) + (len(shapes),) + tuple(out[d:])


def _where_shape(cond: Shape, a: Shape, b: Shape) -> Shape:
    """Broadcast of the condition and both branches."""
    return broadcast(cond, a, b)


def _pad_shape(x: Shape, *, pad: tuple[int, ...], value: float) -> Shape:
    """Constant padding, (left, right) pairs from the last dim backwards; negative ones crop."""
    if len(pad) % 2:
        raise ShapeRuleError(f"pad needs (before, after) pairs, got {len(pad)} numbers", arg="pad")
    if len(pad) > 2 * len(x):
        raise ShapeRuleError(f"pad has {len(pad) // 2} pairs for the {len(x)}-D input "
                             f"{fmt_shape(x)}", arg="pad")
    out = list(x)
    for i in range(len(pad) // 2):
        d = len(x) - 1 - i
        out[d] = padded_length("Constant", x[d], pad[2 * i], pad[2 * i + 1], shown=f"pad={pad}",
                               where=f"dim {d} of the input {fmt_shape(x)}", arg="pad")
    return tuple(out)


def _view_emit(x: str, shape: Any = "()") -> str:
    """``x.view((sizes))``."""
    return f"{_atom(_tensor_src(x))}.view({_tuple_src(shape)})"


def _expand_emit(x: str, size: Any = "()") -> str:
    """``x.expand((sizes))``."""
    return f"{_atom(_tensor_src(x))}.expand({_tuple_src(size)})"


_define("flatten", (Param("x"), Param("start_dim", int, 0), Param("end_dim", int, -1)),
        _flatten_shape, doc="merge dims start_dim..end_dim")
_define("reshape", (Param("x"), Param("*shape", Any)), _reshape_shape, positional=1,
        doc="reshape; one size may be -1")
_define("view", (Param("x"), Param("*shape", Any)), _reshape_shape, _view_emit,
        doc="reshape without copying; one size may be -1")
_define("transpose", (Param("x"), Param("dim0", int), Param("dim1", int)), _transpose_shape,
        positional=2, doc="swap two dims")
_define("permute", (Param("x"), Param("*dims", tuple[int, ...])), _permute_shape, positional=1,
        doc="reorder the dims")
_define("unsqueeze", (Param("x"), Param("dim", int)), _unsqueeze_shape, positional=1,
        doc="insert a size-1 dim")
_define("squeeze", (Param("x"), Param("dim", DimsArg, None)), _squeeze_shape,
        doc="remove size-1 dims")
_define("expand", (Param("x"), Param("*size", Any)), _expand_shape, _expand_emit,
        doc="broadcast to a larger shape without copying")
_define("t", (Param("x"),), _t_shape, doc="transpose a matrix")
_define("getitem", (Param("x"), Param("index", Any)), _getitem_shape, _getitem_emit,
        doc="x[i, a:b, ...], written as a subscript",
        label=lambda index: "[" + ", ".join("none" if i is None else "..." if i is ... else
                                            repr(i) for i in index) + "]")
_define("select", (Param("x"), Param("dim", int), Param("index", int)), _select_shape,
        positional=2, doc="one index of a dim, which goes away (x[:, i])")
_define("narrow", (Param("x"), Param("dim", int), Param("start", int),
                   Param("length", int)), _narrow_shape, positional=3,
        doc="length entries of a dim from start (x[:, start:start + length])")
_define("contiguous", (Param("x"),), _same, lambda x: f"{_atom(_tensor_src(x))}.contiguous()",
        doc="a contiguous copy if needed")
_define("cat", (Param("*tensors"), Param("dim", int, 0)), _cat_shape, tensors=-1,
        doc="concatenate along an existing dim")
_define("stack", (Param("*tensors"), Param("dim", int, 0)), _stack_shape, tensors=-1,
        doc="stack along a new dim")
_define("where", (Param("cond"), Param("a"), Param("b")), _where_shape, tensors=3, wrap=False,
        doc="a where cond else b")
_define("pad", (Param("x"), Param("pad", tuple[int, ...]), Param("value", float, 0.0)), _pad_shape,
        target="F.pad", positional=1, doc="constant padding")


# -- pooling --------------------------------------------------------------------------------------

def _spatial(value: Any, n: int, arg: str) -> tuple:
    """Expand an int or 1-tuple to ``n`` spatial values."""
    values = value if isinstance(value, tuple) else (value,)
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ShapeRuleError(f"{arg}={value} needs 1 or {n} values", arg=arg)
    return tuple(values)


def _pool_shape(n: int, name: str) -> Callable[..., Shape]:
    """The shape rule of an n-D max or avg pooling: the pooling layers' rule."""
    kind = "max" if name.startswith("max") else "avg"

    def shape(x: Shape, *, kernel_size: SizeArg, stride: SizeArg | None, padding: SizeArg,
              dilation: SizeArg = 1, ceil_mode: bool = False, **_: Any) -> Shape:
        """Pool the last n dims."""
        _check_rank(x, (n + 1, n + 2), name)
        ks = _spatial(kernel_size, n, "kernel_size")
        ss = _spatial(ks if stride is None or stride == () else stride, n, "stride")
        ps, ds = _spatial(padding, n, "padding"), _spatial(dilation, n, "dilation")
        for arg, values in (("kernel_size", ks), ("stride", ss), ("dilation", ds)):
            if any(v <= 0 for v in values):
                raise ShapeRuleError(f"{arg} must be positive, got {values}", arg=arg)
        if any(p < 0 for p in ps):
            raise ShapeRuleError(f"padding={padding} must not be negative", arg="padding")
        args = {"kernel_size": kernel_size, "stride": ss, "padding": padding,
                "dilation": dilation, "ceil_mode": ceil_mode}
        return pool_shape(kind, args, tuple(x), n)

    return shape


def _adaptive_shape(n: int, name: str) -> Callable[..., Shape]:
    """The shape rule of an n-D adaptive pooling."""
    def shape(x: Shape, *, output_size: Any) -> Shape:
        """Set the last n dims to output_size (None keeps a dim)."""
        _check_rank(x, (n + 1, n + 2), name)
        sizes = _spatial(output_size, n, "output_size")
        if any(s is not None and (not _is_dim(s) or (isinstance(s, int) and s < 0)) for s in sizes):
            raise ShapeRuleError(f"output_size={output_size} is not a size", arg="output_size")
        return tuple(x[:-n]) + tuple(have if s is None else s for s, have in zip(sizes, x[-n:]))

    return shape


for _n in (1, 2):
    _pool_common = (Param("x"), Param("kernel_size", SizeArg),
                    Param("stride", SizeArg | None, None), Param("padding", SizeArg, 0))
    _define(f"max_pool{_n}d", (*_pool_common, Param("dilation", SizeArg, 1),
                               Param("ceil_mode", bool, False)),
            _pool_shape(_n, f"max_pool{_n}d"), target=f"F.max_pool{_n}d", positional=1,
            doc=f"{_n}-D max pooling")
    _define(f"avg_pool{_n}d", (*_pool_common, Param("ceil_mode", bool, False),
                               Param("count_include_pad", bool, True)),
            _pool_shape(_n, f"avg_pool{_n}d"), target=f"F.avg_pool{_n}d", positional=1,
            doc=f"{_n}-D average pooling")
    for _kind in ("avg", "max"):
        _name = f"adaptive_{_kind}_pool{_n}d"
        _define(_name, (Param("x"), Param("output_size", int | tuple[int | None, ...])),
                _adaptive_shape(_n, _name), target=f"F.{_name}", positional=1,
                doc=f"{_n}-D adaptive {_kind} pooling to output_size")


# -- factories ------------------------------------------------------------------------------------

def _size_shape(*, size: tuple, **_: Any) -> Shape:
    """A tensor of the given sizes."""
    return _sizes(size, "size")


def _eye_shape(*, n: Any, m: Any) -> Shape:
    """An n x m identity."""
    return _sizes((n,), "n") + (_sizes((m,), "m") if m is not None else (n,))


def _ceil_div(a: Any, b: Any) -> Any:
    """Ceiling division that also works for symbolic dims."""
    return -((-a) // b)


def _arange_shape(*, start: Any, end: Any, step: Any) -> Shape:
    """The number of steps from start to end."""
    start, end = (0, start) if end is None else (start, end)
    if step == 0:
        raise ShapeRuleError("step must be nonzero", arg="step")
    if all(isinstance(v, (int, float)) for v in (start, end, step)):
        if (end - start) * step < 0:
            raise ShapeRuleError(f"arange from {start} to {end} cannot move by step {step}",
                                 arg="step")
        return (math.ceil((end - start) / step),)
    if not all(isinstance(v, (int, Sym)) for v in (start, end, step)):
        raise ShapeRuleError("arange with a symbolic bound needs integer start and step",
                             arg="start")
    return (_ceil_div(end - start, step),)


def _linspace_shape(*, start: Number, end: Number, steps: Any) -> Shape:
    """steps points."""
    return _sizes((steps,), "steps")


def _randint_shape(*, low: int, high: int, size: tuple) -> Shape:
    """A tensor of the given sizes; low < high."""
    if low >= high:
        raise ShapeRuleError(f"randint needs low < high, got low={low}, high={high}", arg="high")
    return _sizes(size, "size")


def _arange_emit(start: str, end: str = "None", step: str = "1", **extra: str) -> str:
    """``torch.arange(end)``, ``torch.arange(start, end)`` or ``torch.arange(start, end, step)``."""
    args = [start] if _is_default(end, None) else [start, end]
    if not _is_default(step, 1):
        args = ["0", start, step] if len(args) == 1 else [*args, step]
    extra.pop("generator", None)
    return f"torch.arange({', '.join(args + [f'{k}={v}' for k, v in extra.items()])})"


def _factory(name: str, params: tuple[Param, ...], shape: Callable[..., Shape], *,
             generator: bool = False, positional: int | None = None,
             emit: Callable[..., str] | None = None, doc: str) -> None:
    """Register a factory; statics go to torch by position unless ``positional`` says fewer."""
    emit = emit or _call(f"torch.{name}", params, tensors=0, wrap=False, generator=generator,
                         positional=len(params) if positional is None else positional)
    _define(name, params, shape, emit, tensors=0, factory=True, doc=doc)


_factory("rand", (Param("*size", Any),), _size_shape, generator=True, doc="uniform on [0, 1)")
_factory("randn", (Param("*size", Any),), _size_shape, generator=True, doc="standard normal")
_factory("zeros", (Param("*size", Any),), _size_shape, doc="all zeros")
_factory("ones", (Param("*size", Any),), _size_shape, doc="all ones")
_factory("full", (Param("*size", Any), Param("value", Number | bool)), _size_shape,
         doc="filled with value: full(2, 3, value=0.5)")
_factory("randint", (Param("low", int), Param("high", int), Param("*size", Any)), _randint_shape,
         generator=True, doc="uniform integers in [low, high)")
_factory("eye", (Param("n", Any), Param("m", Any, None)), _eye_shape, positional=1,
         doc="identity matrix, n x m")
_factory("arange", (Param("start", Any), Param("end", Any, None), Param("step", Any, 1)),
         _arange_shape, emit=_arange_emit, doc="arange(end) or arange(start, end, step)")
_factory("linspace", (Param("start", Number), Param("end", Number), Param("steps", Any)),
         _linspace_shape, doc="steps evenly spaced points from start to end")


# -- lookup ---------------------------------------------------------------------------------------

del _name, _op, _target, _n, _kind, _pool_common
FUNCTION_NAMES: tuple[str, ...] = tuple(sorted(FUNCTIONS))


# the function registered under a name, or None: the table's own ``get``, which every stage
# calls once a node, without a Python call of its own
lookup_function: Callable[[str], FunctionDef | None] = FUNCTIONS.get


# -- dtypes ---------------------------------------------------------------------------------------
# Shape inference also tracks each value's dtype kind: "bool", "int" or "float" (None: unknown,
# as for the input, which may hold indices or floats). Kinds are ordered bool < int < float, and
# under torch's type promotion a result takes the highest kind of its operands, a Python number
# included (``(x > 0) * 1.0`` is float, ``(x > 0) + 1`` int). A rule gets the operands' kinds and
# the static arguments, returns the result's kind, and raises ``ShapeRuleError`` for what torch
# refuses. Every function has a rule; an operand of unknown kind is never refused.

Kind = str | None
_RANK = {"bool": 0, "int": 1, "float": 2}
DTYPE_RULES: dict[str, Callable[..., Kind]] = {}


def _promote(kinds: tuple[Kind, ...], **_: Any) -> Kind:
    """The highest kind; unknown unless a float decides it."""
    if "float" in kinds:
        return "float"
    if None in kinds:
        return None
    return max(kinds, key=_RANK.__getitem__, default=None)


def _kept(kinds: tuple[Kind, ...], **_: Any) -> Kind:
    """The input's kind: shape ops and max/min keep it."""
    return kinds[0]


def _to_float(kinds: tuple[Kind, ...], **_: Any) -> Kind:
    """Floating functions turn bool and int tensors into float ones."""
    return "float"


def _to_bool(kinds: tuple[Kind, ...], **_: Any) -> Kind:
    """Comparisons and logical ops."""
    return "bool"


def _counted(kinds: tuple[Kind, ...], **_: Any) -> Kind:
    """sum and prod count bools and add ints as int64."""
    return kinds[0] if kinds[0] in ("float", None) else "int"


def _refusing(rule: Callable[..., Kind], refused: tuple[str, ...], what: str,
              hint: str) -> Callable[..., Kind]:
    """``rule``, raising where an operand has a kind torch refuses here."""
    refused_set = frozenset(refused)

    def checked(kinds: tuple[Kind, ...], **static: Any) -> Kind:
        """The rule, after the check."""
        if refused_set.isdisjoint(kinds):
            return rule(kinds, **static)
        i, kind = next((i, k) for i, k in enumerate(kinds) if k in refused_set)
        article = "an" if kind == "int" else "a"
        raise ShapeRuleError(f"{what} {article} {kind} tensor", operand=i, hint=hint)

    return checked


def _no_bool_pair(kinds: tuple[Kind, ...], **_: Any) -> Kind:
    """torch refuses ``a - b`` when both are bool."""
    if kinds == ("bool", "bool"):
        raise ShapeRuleError("torch cannot subtract two bool tensors", operand=1,
                             hint=FLOAT_HINT)
    return _promote(kinds)


def _arange_kind(kinds: tuple[Kind, ...], **static: Any) -> Kind:
    """Integer bounds and step give int64, any float bound float."""
    return "float" if any(isinstance(v, float) for v in static.values()) else "int"


def _full_kind(kinds: tuple[Kind, ...], *, value: Any, **_: Any) -> Kind:
    """The fill value's kind."""
    return "bool" if isinstance(value, bool) else "int" if isinstance(value, int) else "float"


FLOAT_HINT = "make it float first: multiply it by 1.0, as in `(x > 0) * 1.0`"

for _name in ("add", "mul", "pow", "maximum", "minimum", "remainder", "floordiv", "cat",
              "stack"):
    DTYPE_RULES[_name] = _promote
DTYPE_RULES["sub"] = _no_bool_pair
DTYPE_RULES["where"] = lambda kinds, **_: _promote(kinds[1:])
for _name in ("lt", "le", "gt", "ge", "eq", "ne", "logical_not", "all", "any"):
    DTYPE_RULES[_name] = _to_bool
for _name in ("div", "sigmoid", "tanh", "exp", "log", "log1p", "sqrt", "rsqrt", "sin", "cos",
              "reciprocal", "rand", "randn", "zeros", "ones", "eye", "linspace"):
    DTYPE_RULES[_name] = _to_float
for _name in ("flatten", "reshape", "view", "transpose", "permute", "unsqueeze", "squeeze",
              "expand", "t", "contiguous", "amax", "amin", "max", "min", "select", "narrow",
              "getitem"):
    DTYPE_RULES[_name] = _kept
DTYPE_RULES["sum"] = DTYPE_RULES["prod"] = _counted
DTYPE_RULES["neg"] = _refusing(_kept, ("bool",), "torch cannot negate", "use logical_not(x) "
                               "for a bool, or " + FLOAT_HINT)
DTYPE_RULES["relu"] = _refusing(_kept, ("bool",), "relu cannot take", FLOAT_HINT)
DTYPE_RULES["mean"] = _refusing(_kept, ("bool", "int"), "mean cannot take", FLOAT_HINT)
DTYPE_RULES["randint"] = lambda kinds, **_: "int"
DTYPE_RULES["arange"] = _arange_kind
DTYPE_RULES["full"] = _full_kind


def _round_kind(kinds: tuple[Kind, ...], *, decimals: int = 0, **_: Any) -> Kind:
    """round keeps an int tensor as it is, but rounds to decimals in floating point only."""
    if decimals and kinds[0] == "int":
        raise ShapeRuleError("round with decimals cannot take an int tensor", operand=0,
                             hint=FLOAT_HINT.replace("(x > 0)", "x"))
    return kinds[0]


def _clamp_kind(kinds: tuple[Kind, ...], **static: Any) -> Kind:
    """clamp promotes with its number bounds: a float bound gives a float, an int one turns a
    bool into an int."""
    bounds = [literal_kind(static[k]) for k in ("min", "max") if static.get(k) is not None]
    kind = _promote((kinds[0], *bounds))
    if kind == "bool":
        raise ShapeRuleError("clamp cannot take a bool tensor", operand=0, hint=FLOAT_HINT)
    return kind


def _matmul_kind(name: str) -> Callable[..., Kind]:
    """Matrix products take two int or two float tensors, never a bool."""

    def rule(kinds: tuple[Kind, ...], **_: Any) -> Kind:
        """The operands' common kind."""
        if "bool" in kinds:
            raise ShapeRuleError(f"{name} cannot take a bool tensor", operand=kinds.index("bool"),
                                 hint=FLOAT_HINT)
        a, b = kinds
        if a is None or b is None or a == b:
            return a or b          # torch multiplies only two tensors of one kind
        raise ShapeRuleError(f"{name} cannot multiply an int tensor with a float one",
                             operand=kinds.index("int"),
                             hint="make the int one float first: multiply it by 1.0")

    return rule


# floating-point kernels: they refuse bool and int tensors, so a result is always a float
_FLOAT_ONLY = ("mish", "selu", "silu", "gelu", "elu", "leaky_relu", "softplus", "softmax",
               "log_softmax", "normalize", "norm", "std", "var", "max_pool1d",
               "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d",
               "adaptive_max_pool2d")
for _name in _FLOAT_ONLY:
    DTYPE_RULES[_name] = _refusing(_to_float, ("bool", "int"), f"{_name} cannot take",
                                   FLOAT_HINT)
for _name in ("abs", "ceil", "floor", "relu6", "hardtanh", "max_pool2d", "avg_pool1d",
              "avg_pool2d"):
    DTYPE_RULES[_name] = _refusing(_kept, ("bool",), f"{_name} cannot take", FLOAT_HINT)
DTYPE_RULES["round"] = _refusing(_round_kind, ("bool",), "round cannot take", FLOAT_HINT)
DTYPE_RULES["sign"] = DTYPE_RULES["pad"] = _kept       # pad casts its value to the input's kind
DTYPE_RULES["square"] = _counted                      # a bool squared is an int64
DTYPE_RULES["logsumexp"] = _to_float
DTYPE_RULES["clamp"] = _clamp_kind
DTYPE_RULES["matmul"], DTYPE_RULES["mm"] = _matmul_kind("matmul"), _matmul_kind("mm")
# the functions whose result has a known kind even when their operands' kinds are unknown;
# shape inference calls no other rule on one operand of unknown kind
KIND_MAKERS = frozenset([n for n, rule in DTYPE_RULES.items() if rule in (_to_bool, _to_float)]
                        + list(_FLOAT_ONLY))
del _name


_LITERAL_KINDS: dict[type, Kind] = {bool: "bool", int: "int", Sym: "int", float: "float"}


def literal_kind(value: Any) -> Kind:
    """The kind a Python number operand takes part in promotion with (a dim is an int)."""
    return _LITERAL_KINDS.get(value.__class__)
