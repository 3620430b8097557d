"""The layer table: a ``LayerDef`` per common ``torch.nn`` layer, and a fallback by introspection.

Each entry lists the constructor's arguments in torch's order with torch's defaults (minus
``device`` and ``dtype``), typed so that pydantic rejects nonsense (``kernel_size=-1``,
``p=1.5``); says which arguments are read off the input (``in_channels``); and gives a shape
rule that raises ``ShapeRuleError`` wherever torch would fail at run time. Shape rules use
plain arithmetic, so symbolic dims flow through them. Importing this module does not import
torch; only the fallback in ``lookup_layer`` does, and only when it is used.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, create_model

from netspec.dims import Dim, Shape, Sym, agree, fmt_shape, is_static, numel, shapes_agree, unify
from netspec.registry import (LAYERS, REQUIRED, InSize, LayerDef, Param, ShapeRuleError,
                              TensorArg, register_layer)

# -- argument types (pydantic-validated, importable without torch) ---------------------------------


def _nonzero(value: int) -> int:
    """Reject 0 (a divisor)."""
    if value == 0:
        raise ValueError("must not be 0")
    return value


Bool = Annotated[bool, Strict()]
Int = Annotated[int, Strict()]
PosInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
NonZeroInt = Annotated[int, Strict(), AfterValidator(_nonzero)]
Float = Annotated[float, Strict()]
PosFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0)]
Prob = Annotated[float, Strict(), Field(ge=0, le=1)]
SizeOrMinus1 = Annotated[int, Strict(), Field(ge=-1)]  # a reshape size; -1 means "the rest"
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
UpsampleMode = Literal["nearest", "linear", "bilinear", "bicubic", "trilinear", "area",
                       "nearest-exact"]


def _tuple(item: Any, n: int) -> Any:
    """``tuple[item, item, ...]`` with n entries."""
    return tuple[(item,) * n]


def _size(n: int) -> Any:
    """A positive size given once or per spatial dim: ``3`` or ``(3, 5)``."""
    return PosInt | _tuple(PosInt, n)


def _nonneg(n: int) -> Any:
    """A non-negative amount given once or per spatial dim."""
    return NonNegInt | _tuple(NonNegInt, n)


def _conv_padding(n: int) -> Any:
    """Convolution padding: an amount per side, or ``"same"`` / ``"valid"``."""
    return _nonneg(n) | Literal["same", "valid"]


Size1, Size2, Size3 = _size(1), _size(2), _size(3)
Padding1, Padding2, Padding3 = _conv_padding(1), _conv_padding(2), _conv_padding(3)

# -- shared helpers --------------------------------------------------------------------------------

_SPATIAL = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_LAYOUT = {1: "[N, C, L]", 2: "[N, C, H, W]", 3: "[N, C, D, H, W]"}

Rule = Callable[[dict[str, Any], Shape], Shape]


def P(name: str, type_: Any = Any, default: Any = REQUIRED) -> Param:
    """Shorthand for a ``Param``."""
    return Param(name, type_, default)


def _nt(value: Any, n: int) -> tuple:
    """Expand an int (or a 1-tuple) to an n-tuple; pass longer tuples through."""
    if isinstance(value, (list, tuple)):
        return tuple(value) * n if len(value) == 1 else tuple(value)
    return (value,) * n


def _ranks_text(ranks: tuple[int, ...] | None, min_rank: int) -> str:
    """``a 3-D or 4-D input`` / ``an input of at least 3 dims``."""
    if ranks is None:
        return f"an input of at least {min_rank} dim{'s' if min_rank != 1 else ''}"
    names = [f"{r}-D" for r in ranks]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"a {text} input"


def _expect_rank(name: str, x: Shape, ranks: tuple[int, ...] | None, min_rank: int,
                 layout: str) -> None:
    """Raise unless ``len(x)`` is one of ``ranks`` (or at least ``min_rank``)."""
    ok = len(x) in ranks if ranks is not None else len(x) >= min_rank
    if not ok:
        where = f" {layout}" if layout else ""
        raise ShapeRuleError(f"{name} expects {_ranks_text(ranks, min_rank)}{where}, "
                             f"got the {len(x)}-D input {fmt_shape(x)}")


def _broadcast_dim(a: Dim, b: Dim) -> Dim | None:
    """The broadcast of two dims, or None when they clash."""
    if a == 1:
        return b
    if b == 1:
        return a
    return unify(a, b) if agree(a, b) else None


def broadcast(*shapes: Shape) -> Shape:
    """Broadcast shapes left to right; the first one that clashes is the operand at fault."""
    out: Shape = ()
    for i, shape in enumerate(shapes):
        n = max(len(out), len(shape))
        a, b = (1,) * (n - len(out)) + tuple(out), (1,) * (n - len(shape)) + tuple(shape)
        merged = tuple(_broadcast_dim(x, y) for x, y in zip(a, b))
        if i and None in merged:
            k = merged.index(None)
            raise ShapeRuleError(
                f"cannot broadcast {fmt_shape(out)} with {fmt_shape(shape)}",
                operand=i, hint=f"at dim {k - n}: {a[k]} vs {b[k]}")
        out = merged
    return out


def _norm_dim(dim: int, x: Shape, arg: str = "dim") -> int:
    """Turn a possibly negative dim index into a positive one, as torch does."""
    span = max(len(x), 1)
    if not -span <= dim < span:
        raise ShapeRuleError(f"{arg}={dim} is out of range for the {len(x)}-D input {fmt_shape(x)}",
                             arg=arg)
    return dim % span


def _divides(value: Any, by: int) -> bool:
    """False only when a concrete ``value`` is provably not a multiple of ``by``."""
    return not is_static(value) or value % by == 0


def _scaled(d: Any, factor: float) -> Any:
    """``floor(d * factor)`` for an int or symbolic dim."""
    if float(factor).is_integer():
        return d * int(factor)
    if is_static(d):
        return int(d * factor)  # torch truncates the (positive) product
    return Sym.symbol(f"floor({d}*{factor:g})")


@dataclass(frozen=True)
class _From:
    """An argument read off one input dim (``in_channels`` from the channel dim)."""

    param: str
    dim: int                 # index into the input shape
    what: str                # "channel" / "last": how the dim is named in messages
    noun: str                # "channels" / "features": what the layer calls the size
    as_tuple: bool = False   # LayerNorm wants ``(x[-1],)``
    check: bool = True       # compare a stated value with the input in the shape rule


def _layer(name: str, params: tuple[Param, ...], rule: Rule | None = None, *,
           ranks: tuple[int, ...] | None = None, min_rank: int = 0, layout: str = "",
           sizes: tuple[_From, ...] = (), factory: bool = False, doc: str = "",
           output_index: int | None = None) -> LayerDef:
    """Build and register a LayerDef whose shape rule checks the rank, then stated sizes."""

    def check(x: Shape) -> None:
        _expect_rank(name, x, ranks, min_rank, layout)

    def shape(args: dict[str, Any], x: Shape) -> Shape:
        x = tuple(x)
        check(x)
        for s in sizes:
            _check_stated(args, s, x)
        return tuple(rule(args, x)) if rule else x

    in_sizes = tuple(InSize(s.param, _inferrer(s, check), s.noun, compare=s.check,
                            dim=None if s.as_tuple else s.dim) for s in sizes)
    return register_layer(LayerDef(name, params, in_sizes, shape, ranks, factory, doc,
                                   output_index=output_index))


def _inferrer(s: _From, check: Callable[[Shape], None]) -> Callable[[Shape], Any]:
    """The ``InSize.infer`` function for one ``_From``."""

    def infer(x: Shape) -> Any:
        x = tuple(x)
        check(x)
        d = x[s.dim]
        if not is_static(d):
            # [N, T, 16] into Conv1d: the features are last, where a sequence model keeps them
            last = x[-1] if s.what == "channel" and s.dim == -2 and len(x) == 3 and \
                is_static(x[-1]) else None
            raise ShapeRuleError(f"cannot infer {s.param}: the input's {s.what} dim is the symbol "
                                 f"{d}; state {s.param}= or give a concrete input shape",
                                 arg=s.param, hint=None if last is None else
                                 f"the channels come before the length, [N, C, L]: if the {last} "
                                 f"features of {fmt_shape(x)} are the channels, move them first "
                                 f"with transpose(x, 1, 2)")
        return (d,) if s.as_tuple else d

    return infer


def _check_stated(args: dict[str, Any], s: _From, x: Shape) -> None:
    """Raise when a stated size disagrees with a concrete input dim."""
    if not s.check:
        return
    d, v = x[s.dim], args[s.param]
    if is_static(d) and is_static(v) and d != v:
        raise ShapeRuleError(f"{s.param}={v} but the input {fmt_shape(x)} has {d} {s.noun}",
                             arg=s.param)


def _channel(nd: int, param: str, check: bool = True) -> _From:
    """The channel dim of an (optionally batched) nd-spatial input: ``-(nd + 1)``."""
    return _From(param, -(nd + 1), "channel", "channels", check=check)


# -- windows: the output length of a conv or pooling along one dim ---------------------------------


def _kernel_text(args: dict[str, Any], arg: str, dim: str, k: int, d: int) -> str:
    """How a too-large kernel is named in a message."""
    if d != 1:
        return f"the dilated kernel {dim} {d * (k - 1) + 1}"
    if isinstance(args[arg], int):
        return f"{arg}={k}"
    return f"the kernel {dim} {k}"


def pool_length(h: Any, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> Any:
    """torch's ``pooling_output_shape`` along one dim; convolutions use it with ``ceil=False``.

    Windows of effective size ``d * (k - 1) + 1`` slide at stride s over h padded by p on each
    side. With ``ceil`` a last partial window is kept if it starts inside the input or its left
    padding, so it may overhang the end by up to ``s - 1``. A static result below 1 means that
    no window fits.
    """
    eff = d * (k - 1) + 1
    if not ceil:
        return (h + 2 * p - eff) // s + 1
    out = (h + 2 * p - eff + s - 1) // s + 1
    if is_static(h):
        return out - 1 if (out - 1) * s >= h + p else out  # last window must start inside
    if s + p <= eff:
        return out                                       # the correction can never apply
    return Sym.symbol(f"ceil_pool({h}, k={eff}, s={s}, p={p})")


def _window(args: dict[str, Any], dim: str, h: Any, k: int, s: int, p: int, d: int = 1,
            ceil: bool = False, arg: str = "kernel_size") -> Any:
    """Output length of a window of size k (stride s, padding p, dilation d) sliding over h."""
    out = pool_length(h, k, s, p, d, ceil)
    if not is_static(out) or out >= 1:
        return out
    what = "padded input" if p else "input"
    message = f"{_kernel_text(args, arg, dim, k, d)} is larger than the {what} {dim} {h + 2 * p}"
    if not ceil:
        raise ShapeRuleError(message, arg=arg)
    raise ShapeRuleError(f"{message}, even with ceil_mode=true", arg=arg,
                         hint=f"with ceil_mode=true the last window may overhang the end of the "
                              f"input by at most stride - 1 = {s - 1}")


def _spatial_windows(args: dict[str, Any], x: Shape, nd: int, *, stride: Any, padding: Any,
                     dilation: Any = 1, ceil: bool = False) -> tuple:
    """Output lengths of a window over each of the last nd dims."""
    k, s, p, d = (_nt(v, nd) for v in (args["kernel_size"], stride, padding, dilation))
    return tuple(_window(args, _SPATIAL[nd][i], h, k[i], s[i], p[i], d[i], ceil)
                 for i, h in enumerate(x[-nd:]))


def uncovered_window(h: int, k: int, s: int, p: int, d: int, out: int) -> int | None:
    """The first of ``out`` windows whose dilated taps all miss the input (only dilation can
    make one), or None.

    A window starting inside the input holds its start, and no window starts past the input's
    end, so only the windows starting in the left padding (``o * s < p``) need a look.
    """
    o = 0
    while o < out and o * s < p:
        start = o * s - p                  # negative: inside the left padding
        skip = -(start // d)               # taps before the first one at or after 0
        if skip >= k or start + skip * d >= h:
            return o
        o += 1
    return None


def _half_kernel(args: dict[str, Any], nd: int) -> None:
    """Pooling padding may be at most half the kernel size.

    torch (2.13) compares it with kernel_size itself, not with the wider dilated window.
    """
    k, p = _nt(args["kernel_size"], nd), _nt(args.get("padding", 0), nd)
    dilated = _nt(args.get("dilation", 1), nd) != (1,) * nd
    for ki, pi in zip(k, p):
        if pi > ki // 2:
            also = "; dilation does not count, only kernel_size itself" if dilated else ""
            raise ShapeRuleError(f"padding={args['padding']} must be at most half of "
                                 f"kernel_size={args['kernel_size']}", arg="padding",
                                 hint=f"a padding of {pi} needs a kernel size of at least "
                                      f"{2 * pi}{also}")


def _no_indices(args: dict[str, Any]) -> None:
    """Layers in a spec produce one tensor; ``return_indices=True`` would make a tuple."""
    if args.get("return_indices"):
        raise ShapeRuleError("return_indices=True makes the layer return a tuple, which a spec "
                             "layer cannot produce", arg="return_indices")


# -- linear & embedding ----------------------------------------------------------------------------


def _linear(args: dict[str, Any], x: Shape) -> Shape:
    return x[:-1] + (args["out_features"],)  # [*, in] -> [*, out]


_layer("Linear", (P("in_features", PosInt), P("out_features", PosInt), P("bias", Bool, True)),
       _linear, min_rank=1, layout="[*, in_features]", factory=True,
       sizes=(_From("in_features", -1, "last", "features"),), doc="y = x W^T + b")

_layer("Identity", (), doc="returns its input")


def _embedding(args: dict[str, Any], x: Shape) -> Shape:
    n, idx = args["num_embeddings"], args["padding_idx"]
    if idx is not None and not -n <= idx < n:
        raise ShapeRuleError(f"padding_idx={idx} must lie within num_embeddings={n}",
                             arg="padding_idx")
    return x + (args["embedding_dim"],)  # [*] indices -> [*, embedding_dim]


_layer("Embedding", (P("num_embeddings", PosInt), P("embedding_dim", PosInt),
                     P("padding_idx", Int | None, None), P("max_norm", Float | None, None),
                     P("norm_type", Float, 2.0), P("scale_grad_by_freq", Bool, False),
                     P("sparse", Bool, False)),
       _embedding, factory=True, doc="a lookup table of embeddings, indexed by integer input")

# -- layers of several tensors ---------------------------------------------------------------------
# forward(query, key, value) and forward(input1, input2): a spec declares one with ``let`` and
# calls it on named values, ``y = attn(x, x, x)``.


def _last_dim_of(layer: str, name: str, param: str, index: int, ranks: tuple[int, ...],
                 layout: str) -> InSize:
    """``param`` read off the last dim of the layer's tensor ``name`` (its ``index``-th)."""

    def infer(x: Shape) -> Any:
        if len(x) not in ranks:
            raise ShapeRuleError(f"{layer} expects {_ranks_text(ranks, 0)} {name} {layout}, "
                                 f"got {fmt_shape(x)}", operand=index)
        if not is_static(x[-1]):
            raise ShapeRuleError(f"cannot infer {param}: the {name}'s last dim is the symbol "
                                 f"{x[-1]}; state {param}= or give a concrete input shape",
                                 arg=param)
        return x[-1]

    return InSize(param, infer, "features", dim=-1, input=index)


_ATTENTION_LAYOUT = "([L, E]; [L, N, E], or [N, L, E] with batch_first)"


def _multihead_attention(args: dict[str, Any], q: Shape, k: Shape, v: Shape, *,
                         key_padding_mask: Shape | None = None, attn_mask: Shape | None = None,
                         **static: Any) -> Shape:
    # q: [L, N, E] (batch_first: [N, L, E]; unbatched: [L, E]); k: [S, N, kdim]; v: [S, N, vdim]
    for i, (name, x) in enumerate((("query", q), ("key", k), ("value", v))):
        if len(x) not in (2, 3):
            raise ShapeRuleError(f"MultiheadAttention expects a 2-D or 3-D {name} "
                                 f"{_ATTENTION_LAYOUT}, got {fmt_shape(x)}", operand=i)
    if not len(q) == len(k) == len(v):
        raise ShapeRuleError(f"MultiheadAttention's query, key and value must all be batched "
                             f"(3-D) or all unbatched (2-D), got {fmt_shape(q)}, {fmt_shape(k)} "
                             f"and {fmt_shape(v)}")
    batched = len(q) == 3
    length, batch = (1, 0) if batched and args["batch_first"] else (0, 1)
    if batched and not (agree(k[batch], q[batch]) and agree(v[batch], q[batch])):
        raise ShapeRuleError(f"MultiheadAttention's query, key and value have batch sizes "
                             f"{q[batch]}, {k[batch]} and {v[batch]}; they must be equal",
                             hint=None if args["batch_first"] else
                             "the batch is dim 1 unless batch_first=true")
    if not agree(v[length], k[length]):
        raise ShapeRuleError(f"MultiheadAttention's key and value have lengths {k[length]} and "
                             f"{v[length]}; they must be equal", operand=2)
    embed, heads = args["embed_dim"], args["num_heads"]
    if embed % heads:
        raise ShapeRuleError(f"embed_dim={embed} is not divisible by num_heads={heads}",
                             arg="num_heads")
    n, tgt, src = (q[batch] if batched else None), q[length], k[length]
    if key_padding_mask is not None:
        want = (n, src) if batched else (src,)
        if not shapes_agree(key_padding_mask, want):
            raise ShapeRuleError(f"key_padding_mask is {fmt_shape(key_padding_mask)}, but "
                                 f"MultiheadAttention needs [batch, key length] = "
                                 f"{fmt_shape(want)}", arg="key_padding_mask")
    if attn_mask is not None:
        wants = [(tgt, src)] + ([(n * heads, tgt, src)] if batched else [])
        if not any(shapes_agree(attn_mask, w) for w in wants):
            raise ShapeRuleError(f"attn_mask is {fmt_shape(attn_mask)}, but MultiheadAttention "
                                 f"needs " + " or ".join(fmt_shape(w) for w in wants),
                                 arg="attn_mask")
    return q[:-1] + (embed,)


register_layer(LayerDef(
    "MultiheadAttention",
    (P("embed_dim", PosInt), P("num_heads", PosInt), P("dropout", Prob, 0.0),
     P("bias", Bool, True), P("add_bias_kv", Bool, False), P("add_zero_attn", Bool, False),
     P("kdim", PosInt | None, None), P("vdim", PosInt | None, None),
     P("batch_first", Bool, False)),
    tuple(_last_dim_of("MultiheadAttention", name, param, i, (2, 3), _ATTENTION_LAYOUT)
          for i, (name, param) in enumerate((("query", "embed_dim"), ("key", "kdim"),
                                             ("value", "vdim")))),
    _multihead_attention, None, True,
    "attention of a query over keys and values, in num_heads heads", output_index=0,
    inputs=("query", "key", "value"),
    submodules=(("out_proj", "NonDynamicallyQuantizableLinear"),),
    defaults_to=(("kdim", "embed_dim"), ("vdim", "embed_dim")),
    forward_params=(P("key_padding_mask", TensorArg, None), P("need_weights", Bool, True),
                    P("attn_mask", TensorArg, None), P("average_attn_weights", Bool, True),
                    P("is_causal", Bool, False))))


def _unfold(args: dict[str, Any], x: Shape) -> Shape:
    # [N, C, H, W] -> [N, C * kh * kw, L]: L sliding blocks, each its kernel's values
    blocks = _spatial_windows(args, x, 2, stride=args["stride"], padding=args["padding"],
                              dilation=args["dilation"])
    kh, kw = _nt(args["kernel_size"], 2)
    return x[:-3] + (x[-3] * kh * kw, blocks[0] * blocks[1])


def _fold(args: dict[str, Any], x: Shape) -> Shape:
    # [N, C * kh * kw, L] -> [N, C, *output_size]: the inverse arrangement of Unfold's blocks
    kh, kw = _nt(args["kernel_size"], 2)
    size = _nt(args["output_size"], 2)
    if not _divides(x[-2], kh * kw):
        raise ShapeRuleError(f"Fold's input has {x[-2]} values per block, not a multiple of "
                             f"the kernel's {kh * kw} positions", arg="kernel_size")
    blocks = _spatial_windows(args, size, 2, stride=args["stride"], padding=args["padding"],
                              dilation=args["dilation"])
    if not agree(x[-1], blocks[0] * blocks[1]):
        raise ShapeRuleError(f"Fold's input has {x[-1]} blocks, but output_size="
                             f"{fmt_shape(size)} holds {blocks[0] * blocks[1]} "
                             f"({blocks[0]} x {blocks[1]})", arg="output_size")
    return x[:-2] + (x[-2] // (kh * kw), *size)


_layer("Unfold", (P("kernel_size", Size2), P("dilation", Size2, 1), P("padding", _nonneg(2), 0),
                  P("stride", Size2, 1)), _unfold, ranks=(3, 4), layout="[N, C, H, W]",
       doc="sliding blocks of the input, each flattened: [N, C * kh * kw, blocks]")
_layer("Fold", (P("output_size", Size2), P("kernel_size", Size2), P("dilation", Size2, 1),
                P("padding", _nonneg(2), 0), P("stride", Size2, 1)), _fold, ranks=(2, 3),
       layout="[N, C * kh * kw, blocks]", doc="sums sliding blocks back into an image")


def _cosine_similarity(args: dict[str, Any], x1: Shape, x2: Shape) -> Shape:
    # x1, x2 broadcast together; dim reduced
    both = broadcast(x1, x2)
    return tuple(d for i, d in enumerate(both) if i != _norm_dim(args["dim"], both))


def _pairwise_distance(args: dict[str, Any], x1: Shape, x2: Shape) -> Shape:
    # x1, x2 broadcast together; the last dim reduced (kept as 1 with keepdim)
    both = broadcast(x1, x2)
    if not both:
        raise ShapeRuleError("PairwiseDistance takes vectors, got two 0-D inputs")
    return both[:-1] + ((1,) if args["keepdim"] else ())


register_layer(LayerDef(
    "CosineSimilarity", (P("dim", Int, 1), P("eps", PosFloat, 1e-8)), (), _cosine_similarity,
    doc="cosine similarity of two tensors along dim", inputs=("x1", "x2")))
register_layer(LayerDef(
    "PairwiseDistance", (P("p", Float, 2.0), P("eps", NonNegFloat, 1e-6),
                         P("keepdim", Bool, False)), (), _pairwise_distance,
    doc="the p-norm distance between two tensors, over their last dim", inputs=("x1", "x2")))

# TransformerEncoderLayer and TransformerDecoderLayer: attention and a feed-forward network with
# residual connections and LayerNorm, whose output has the shape of src (tgt)

_ENCODER_LAYOUT = "([S, E]; [S, N, E], or [N, S, E] with batch_first)"


def _layer_attention(layer: str, args: dict[str, Any], q: Shape, kv: Shape, mask: str,
                     padding: str, forward: dict[str, Any]) -> None:
    """MultiheadAttention's rule for one attention of a transformer layer, its messages in the
    layer's own argument names (d_model, nhead, src_mask, ...)."""
    names = {"embed_dim": "d_model", "num_heads": "nhead", "attn_mask": mask,
             "key_padding_mask": padding, "MultiheadAttention": layer}
    try:
        _multihead_attention({"embed_dim": args["d_model"], "num_heads": args["nhead"],
                              "batch_first": args["batch_first"]}, q, kv, kv,
                             attn_mask=forward.get(mask), key_padding_mask=forward.get(padding))
    except ShapeRuleError as exc:
        message = exc.message
        for old, new in names.items():
            message = message.replace(old, new)
        raise ShapeRuleError(message, arg=names.get(exc.arg or "", exc.arg), hint=exc.hint,
                             operand=exc.operand) from None


def _second_tensor(layer: str, args: dict[str, Any], first: tuple[str, Shape],
                   second: tuple[str, Shape], width_hint: str | None = None) -> None:
    """A transformer's second tensor (a decoder's memory, Transformer's tgt) against its first:
    the first of rank 2 or 3, both of it, the second of d_model features, the same batch."""
    (a, x), (b, y) = first, second
    _expect_rank(layer, x, (2, 3), 0, _ENCODER_LAYOUT)
    if len(y) != len(x):
        raise ShapeRuleError(f"{layer}'s {a} and {b} must both be batched (3-D) or both "
                             f"unbatched (2-D), got {fmt_shape(x)} and {fmt_shape(y)}", operand=1)
    if not agree(y[-1], args["d_model"]):
        raise ShapeRuleError(f"{layer}'s {b} has {y[-1]} features, but d_model is "
                             f"{args['d_model']}", operand=1, hint=width_hint)
    batch = 0 if args["batch_first"] else 1
    if len(x) == 3 and not agree(y[batch], x[batch]):
        raise ShapeRuleError(f"{layer}'s {a} and {b} have batch sizes {x[batch]} and "
                             f"{y[batch]}; they must be equal", operand=1,
                             hint=None if args["batch_first"] else
                             "the batch is dim 1 unless batch_first=true")


def _transformer_encoder_layer(args: dict[str, Any], src: Shape, **forward: Any) -> Shape:
    _expect_rank("TransformerEncoderLayer", src, (2, 3), 0, _ENCODER_LAYOUT)
    _layer_attention("TransformerEncoderLayer", args, src, src, "src_mask",
                     "src_key_padding_mask", forward)
    return src


def _transformer_decoder_layer(args: dict[str, Any], tgt: Shape, memory: Shape,
                               **forward: Any) -> Shape:
    # tgt: [T, N, E] (batch_first: [N, T, E]; unbatched: [T, E]); memory: [S, N, E]
    layer = "TransformerDecoderLayer"
    _second_tensor(layer, args, ("tgt", tgt), ("memory", memory),
                   width_hint="memory is attended with the layer's own width: project it first, "
                              "or use MultiheadAttention with kdim and vdim")
    _layer_attention(layer, args, tgt, tgt, "tgt_mask", "tgt_key_padding_mask", forward)
    _layer_attention(layer, args, tgt, memory, "memory_mask", "memory_key_padding_mask",
                     forward)
    return tgt


_TRANSFORMER_LAYER_PARAMS = (
    P("d_model", PosInt), P("nhead", PosInt), P("dim_feedforward", PosInt, 2048),
    P("dropout", Prob, 0.1), P("activation", Literal["relu", "gelu"], "relu"),
    P("layer_norm_eps", PosFloat, 1e-5), P("batch_first", Bool, False),
    P("norm_first", Bool, False), P("bias", Bool, True))
# (attentions, norms) of an encoder layer and of a decoder layer
_ENCODER, _DECODER = (("self_attn",), 2), (("self_attn", "multihead_attn"), 3)


def _transformer_parts(attentions: tuple[str, ...], norms: int) -> tuple[tuple[str, str], ...]:
    """A transformer layer's submodules, in the order its constructor makes them."""
    parts = [part for name in attentions for part in (
        (name, "MultiheadAttention"), (f"{name}.out_proj", "NonDynamicallyQuantizableLinear"))]
    parts += [("linear1", "Linear"), ("dropout", "Dropout"), ("linear2", "Linear")]
    parts += [(f"norm{k}", "LayerNorm") for k in range(1, norms + 1)]
    return (*parts, *((f"dropout{k}", "Dropout") for k in range(1, norms + 1)))


register_layer(LayerDef(
    "TransformerEncoderLayer", _TRANSFORMER_LAYER_PARAMS,
    (_last_dim_of("TransformerEncoderLayer", "src", "d_model", 0, (2, 3), _ENCODER_LAYOUT),),
    _transformer_encoder_layer, None, True,
    "self-attention and a feed-forward network, each with a residual connection and LayerNorm",
    inputs=("src",),
    submodules=_transformer_parts(*_ENCODER),
    forward_params=(P("src_mask", TensorArg, None), P("src_key_padding_mask", TensorArg, None),
                    P("is_causal", Bool, False))))

register_layer(LayerDef(
    "TransformerDecoderLayer", _TRANSFORMER_LAYER_PARAMS,
    (_last_dim_of("TransformerDecoderLayer", "tgt", "d_model", 0, (2, 3), _ENCODER_LAYOUT),),
    _transformer_decoder_layer, None, True,
    "self-attention, attention over memory and a feed-forward network, each with a residual "
    "connection and LayerNorm",
    inputs=("tgt", "memory"),
    submodules=_transformer_parts(*_DECODER),
    forward_params=(P("tgt_mask", TensorArg, None), P("memory_mask", TensorArg, None),
                    P("tgt_key_padding_mask", TensorArg, None),
                    P("memory_key_padding_mask", TensorArg, None),
                    P("tgt_is_causal", Bool, False), P("memory_is_causal", Bool, False))))


def _transformer(args: dict[str, Any], src: Shape, tgt: Shape, **forward: Any) -> Shape:
    # src: [S, N, E], tgt: [T, N, E] (batch_first: [N, S, E], [N, T, E]; unbatched: [S, E], [T, E])
    layer = "Transformer"
    _second_tensor(layer, args, ("src", src), ("tgt", tgt))
    _layer_attention(layer, args, src, src, "src_mask", "src_key_padding_mask", forward)
    _layer_attention(layer, args, tgt, tgt, "tgt_mask", "tgt_key_padding_mask", forward)
    _layer_attention(layer, args, tgt, src, "memory_mask", "memory_key_padding_mask", forward)
    return tgt


def _transformer_stacks(args: dict[str, Any]) -> tuple[tuple[str, int, tuple], ...]:
    """Transformer's encoder and decoder: (name, layer count, (attentions, norms) of a layer)."""
    return (("encoder", args["num_encoder_layers"], _ENCODER),
            ("decoder", args["num_decoder_layers"], _DECODER))


def _transformer_modules(args: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """An encoder and a decoder: their layers in a ModuleList each, then a LayerNorm."""
    parts: list[tuple[str, str]] = []
    for stack, count, layer in _transformer_stacks(args):
        kind = stack.capitalize()
        parts += [(stack, f"Transformer{kind}"), (f"{stack}.layers", "ModuleList")]
        own = _transformer_parts(*layer)
        for i in range(count):
            prefix = f"{stack}.layers.{i}"
            parts.append((prefix, f"Transformer{kind}Layer"))
            parts += [(f"{prefix}.{path}", cls) for path, cls in own]
        parts.append((f"{stack}.norm", "LayerNorm"))
    return tuple(parts)


register_layer(LayerDef(
    "Transformer",
    (P("d_model", PosInt, 512), P("nhead", PosInt, 8), P("num_encoder_layers", NonNegInt, 6),
     P("num_decoder_layers", NonNegInt, 6), *_TRANSFORMER_LAYER_PARAMS[2:5],
     P("custom_encoder", Literal[None], None), P("custom_decoder", Literal[None], None),
     *_TRANSFORMER_LAYER_PARAMS[5:]),
    (_last_dim_of("Transformer", "src", "d_model", 0, (2, 3), _ENCODER_LAYOUT),),
    _transformer, None, True, "an encoder of src and a decoder of tgt attending to it",
    inputs=("src", "tgt"), submodules=_transformer_modules,
    forward_params=(*(P(f"{name}_mask", TensorArg, None) for name in ("src", "tgt", "memory")),
                    *(P(f"{name}_key_padding_mask", TensorArg, None)
                      for name in ("src", "tgt", "memory")),
                    P("src_is_causal", Bool | None, None), P("tgt_is_causal", Bool | None, None),
                    P("memory_is_causal", Bool, False))))


def _bilinear(args: dict[str, Any], x1: Shape, x2: Shape) -> Shape:
    # [*, in1_features], [*, in2_features] -> [*, out_features]
    if not shapes_agree(x2[:-1], x1[:-1]):
        raise ShapeRuleError(f"Bilinear's inputs must have the same leading dims, got "
                             f"{fmt_shape(x1)} and {fmt_shape(x2)}", operand=1)
    return x1[:-1] + (args["out_features"],)


register_layer(LayerDef(
    "Bilinear",
    (P("in1_features", PosInt), P("in2_features", PosInt), P("out_features", PosInt),
     P("bias", Bool, True)),
    tuple(_last_dim_of("Bilinear", name, param, i, (1, 2, 3, 4, 5, 6), "[*, features]")
          for i, (name, param) in enumerate((("input1", "in1_features"),
                                             ("input2", "in2_features")))),
    _bilinear, None, True, "y = x1^T A x2 + b", inputs=("input1", "input2")))

# -- reshaping -------------------------------------------------------------------------------------


def _flatten(args: dict[str, Any], x: Shape) -> Shape:
    if not x:
        return (1,)
    start = _norm_dim(args["start_dim"], x, "start_dim")
    end = _norm_dim(args["end_dim"], x, "end_dim")
    if start > end:
        raise ShapeRuleError(f"start_dim={args['start_dim']} comes after end_dim={args['end_dim']} "
                             f"for the input {fmt_shape(x)}", arg="start_dim")
    return x[:start] + (numel(x[start:end + 1]),) + x[end + 1:]


_layer("Flatten", (P("start_dim", Int, 1), P("end_dim", Int, -1)), _flatten,
       doc="flattens a contiguous range of dims")


def _unflatten(args: dict[str, Any], x: Shape) -> Shape:
    i = _norm_dim(args["dim"], x)
    sizes, d = tuple(args["unflattened_size"]), x[i]
    if not sizes:
        raise ShapeRuleError("unflattened_size must not be empty", arg="unflattened_size")
    if list(sizes).count(-1) > 1:
        raise ShapeRuleError("unflattened_size may contain -1 at most once", arg="unflattened_size")
    known = numel(tuple(s for s in sizes if s != -1))
    if -1 in sizes:
        if known == 0 or not _divides(d, known):
            raise ShapeRuleError(f"unflattened_size={sizes} cannot fill dim {args['dim']} of size "
                                 f"{d}: {d} is not a multiple of {known}", arg="unflattened_size")
        sizes = tuple(d // known if s == -1 else s for s in sizes)
    elif is_static(d) and known != d:
        raise ShapeRuleError(f"unflattened_size={sizes} multiplies to {known}, but dim "
                             f"{args['dim']} of the input {fmt_shape(x)} has size {d}",
                             arg="unflattened_size")
    return x[:i] + sizes + x[i + 1:]


_layer("Unflatten", (P("dim", Int), P("unflattened_size", tuple[SizeOrMinus1, ...])),
       _unflatten, min_rank=1, doc="splits one dim into several")

# -- convolutions ----------------------------------------------------------------------------------


def _check_groups(args: dict[str, Any]) -> None:
    """Both channel counts must be multiples of ``groups``."""
    g = args["groups"]
    for name in ("in_channels", "out_channels"):
        if args[name] % g:
            raise ShapeRuleError(f"{name}={args[name]} is not divisible by groups={g}",
                                 arg="groups")


def _mode_padding(args: dict[str, Any], x: Shape, nd: int) -> None:
    """Reflect/circular padding modes need the padding to fit inside the input."""
    mode = args["padding_mode"]
    if mode not in ("reflect", "circular") or args["padding"] == "valid":
        return
    kind = "Reflection" if mode == "reflect" else "Circular"
    for dim, h, (lo, hi) in zip(_SPATIAL[nd], x[-nd:], _conv_pads(args, nd)):
        shown = f"padding={args['padding']}"
        if args["padding"] == "same":
            shown = f"padding='same' ({lo} before, {hi} after)"
        padded_length(kind, h, lo, hi, shown=shown, where=f"the input {dim} {h}")


def _conv_pads(args: dict[str, Any], nd: int) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim; ``"same"`` puts the odd one after, as torch."""
    if args["padding"] != "same":
        return [(p, p) for p in _nt(args["padding"], nd)]
    k, d = _nt(args["kernel_size"], nd), _nt(args["dilation"], nd)
    total = [di * (ki - 1) for ki, di in zip(k, d)]
    return [(t // 2, t - t // 2) for t in total]


def _conv_rule(nd: int) -> Rule:
    def rule(args: dict[str, Any], x: Shape) -> Shape:
        _check_groups(args)
        pad = args["padding"]
        if pad == "same":
            if any(s != 1 for s in _nt(args["stride"], nd)):
                raise ShapeRuleError("padding='same' is not supported for strided convolutions",
                                     arg="padding")
        _mode_padding(args, x, nd)
        if pad == "same":
            return x[:-nd - 1] + (args["out_channels"],) + x[-nd:]
        spatial = _spatial_windows(args, x, nd, stride=args["stride"],
                                   padding=0 if pad == "valid" else pad, dilation=args["dilation"])
        return x[:-nd - 1] + (args["out_channels"],) + spatial  # [N, C_in, *] -> [N, C_out, *']

    return rule


def _conv(nd: int) -> LayerDef:
    """ConvNd: [N, C_in, *spatial] -> [N, C_out, *spatial']."""
    size = _size(nd)
    params = (P("in_channels", PosInt), P("out_channels", PosInt), P("kernel_size", size),
              P("stride", size, 1), P("padding", _conv_padding(nd), 0), P("dilation", size, 1),
              P("groups", PosInt, 1), P("bias", Bool, True),
              P("padding_mode", PaddingMode, "zeros"))
    return _layer(f"Conv{nd}d", params, _conv_rule(nd), ranks=(nd + 1, nd + 2),
                  layout=_LAYOUT[nd], sizes=(_channel(nd, "in_channels"),), factory=True,
                  doc=f"{nd}-D convolution")


def _conv_transpose_rule(nd: int) -> Rule:
    def rule(args: dict[str, Any], x: Shape) -> Shape:
        _check_groups(args)
        k, s, p, op, d = (_nt(args[a], nd) for a in
                          ("kernel_size", "stride", "padding", "output_padding", "dilation"))
        out = []
        for i, h in enumerate(x[-nd:]):
            if op[i] >= s[i] and op[i] >= d[i]:
                raise ShapeRuleError(f"output_padding={args['output_padding']} must be smaller "
                                     f"than either stride={args['stride']} or "
                                     f"dilation={args['dilation']}", arg="output_padding")
            o = (h - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1
            if is_static(o) and o < 1:
                raise ShapeRuleError(f"the output {_SPATIAL[nd][i]} would be {o} for the input "
                                     f"{fmt_shape(x)}; padding={args['padding']} is too large",
                                     arg="padding")
            out.append(o)
        return x[:-nd - 1] + (args["out_channels"],) + tuple(out)

    return rule


def _conv_transpose(nd: int) -> LayerDef:
    """ConvTransposeNd: [N, C_in, *spatial] -> [N, C_out, *spatial'] (upsampling)."""
    size, amount = _size(nd), _nonneg(nd)
    params = (P("in_channels", PosInt), P("out_channels", PosInt), P("kernel_size", size),
              P("stride", size, 1), P("padding", amount, 0), P("output_padding", amount, 0),
              P("groups", PosInt, 1), P("bias", Bool, True), P("dilation", size, 1),
              P("padding_mode", Literal["zeros"], "zeros"))  # torch rejects the other modes
    return _layer(f"ConvTranspose{nd}d", params, _conv_transpose_rule(nd), ranks=(nd + 1, nd + 2),
                  layout=_LAYOUT[nd], sizes=(_channel(nd, "in_channels"),), factory=True,
                  doc=f"{nd}-D transposed convolution")


# -- normalisation ---------------------------------------------------------------------------------


def _batch_norm(nd: int) -> LayerDef:
    """BatchNormNd over dim 1; BatchNorm1d takes [N, C] or [N, C, L]."""
    params = (P("num_features", PosInt), P("eps", Float, 1e-05), P("momentum", Float | None, 0.1),
              P("affine", Bool, True), P("track_running_stats", Bool, True), P("bias", Bool, True))
    ranks = (2, 3) if nd == 1 else (nd + 2,)
    layout = "[N, C] or [N, C, L]" if nd == 1 else _LAYOUT[nd]
    return _layer(f"BatchNorm{nd}d", params, ranks=ranks, layout=layout,
                  sizes=(_From("num_features", 1, "channel", "channels"),), factory=True,
                  doc=f"batch normalisation over {nd}-D feature maps")


def _instance_norm_rule(nd: int) -> Rule:
    def rule(args: dict[str, Any], x: Shape) -> Shape:
        c, n = x[-nd - 1], args["num_features"]
        if (args["affine"] or args["track_running_stats"]) and is_static(c) and c != n:
            raise ShapeRuleError(f"num_features={n} but the input {fmt_shape(x)} has {c} channels",
                                 arg="num_features")
        if numel(x[-nd:]) == 1:
            raise ShapeRuleError(f"instance norm needs more than 1 spatial element per channel, "
                                 f"got the input {fmt_shape(x)}")
        return x

    return rule


def _instance_norm(nd: int) -> LayerDef:
    """InstanceNormNd; accepts unbatched [C, *spatial] input."""
    params = (P("num_features", PosInt), P("eps", Float, 1e-05), P("momentum", Float, 0.1),
              P("affine", Bool, False), P("track_running_stats", Bool, False),
              P("bias", Bool, True))
    return _layer(f"InstanceNorm{nd}d", params, _instance_norm_rule(nd), ranks=(nd + 1, nd + 2),
                  layout=_LAYOUT[nd], sizes=(_channel(nd, "num_features", check=False),),
                  factory=True, doc=f"instance normalisation over {nd}-D feature maps")


def _trailing_norm(args: dict[str, Any], x: Shape) -> Shape:
    """LayerNorm / RMSNorm: normalized_shape must equal the trailing dims."""
    ns = _nt(args["normalized_shape"], 1)
    tail = x[len(x) - len(ns):] if len(ns) <= len(x) else x
    if len(ns) > len(x) or any(is_static(d) and d != n for d, n in zip(tail, ns)):
        raise ShapeRuleError(f"normalized_shape={args['normalized_shape']} does not match the "
                             f"trailing dims of the input {fmt_shape(x)}", arg="normalized_shape")
    return x


_NORMALIZED = _From("normalized_shape", -1, "last", "trailing dims", as_tuple=True, check=False)
_NormShape = PosInt | tuple[PosInt, ...]

_layer("LayerNorm", (P("normalized_shape", _NormShape), P("eps", Float, 1e-05),
                     P("elementwise_affine", Bool, True), P("bias", Bool, True)),
       _trailing_norm, min_rank=1, sizes=(_NORMALIZED,), factory=True,
       doc="layer normalisation over the trailing dims")

_layer("RMSNorm", (P("normalized_shape", _NormShape), P("eps", Float | None, None),
                   P("elementwise_affine", Bool, True)),
       _trailing_norm, min_rank=1, sizes=(_NORMALIZED,), factory=True,
       doc="root-mean-square normalisation over the trailing dims")


def _group_norm(args: dict[str, Any], x: Shape) -> Shape:
    c, g = args["num_channels"], args["num_groups"]
    if c % g:
        raise ShapeRuleError(f"num_channels={c} is not divisible by num_groups={g}",
                             arg="num_groups")
    # torch refuses a group of one value, in training and in eval alike
    per_group = x[0] * (x[1] // g) if isinstance(x[1], int) else None
    for d in x[2:]:
        per_group = per_group * d if per_group is not None else None
    if isinstance(per_group, int) and per_group == 1:
        raise ShapeRuleError(f"group norm needs more than 1 value per group, but the input "
                             f"{fmt_shape(x)} has 1 in each of its {g} groups",
                             hint="use fewer groups, or a bigger batch or input")
    return x


_layer("GroupNorm", (P("num_groups", PosInt), P("num_channels", PosInt), P("eps", Float, 1e-05),
                     P("affine", Bool, True), P("bias", Bool, True)),
       _group_norm, min_rank=2, layout="[N, C, *]", factory=True,
       sizes=(_From("num_channels", 1, "channel", "channels"),),
       doc="group normalisation over channel groups")

_layer("LocalResponseNorm", (P("size", PosInt), P("alpha", Float, 0.0001), P("beta", Float, 0.75),
                             P("k", Float, 1.0)),
       min_rank=3, layout="[N, C, *]", doc="local response normalisation across channels")

# -- dropout ---------------------------------------------------------------------------------------

_DROPOUT = (P("p", Prob, 0.5), P("inplace", Bool, False))
for _name, _ranks, _min, _layout in [
    ("Dropout", None, 0, ""),
    ("Dropout1d", (2, 3), 0, _LAYOUT[1]),
    ("Dropout2d", None, 2, _LAYOUT[2]),  # torch only warns for ranks other than 3 and 4
    ("Dropout3d", None, 0, _LAYOUT[3]),  # torch only warns for ranks other than 4 and 5
    ("AlphaDropout", None, 0, ""),
    ("FeatureAlphaDropout", None, 2, "[N, C, *]"),
]:
    _layer(_name, _DROPOUT, ranks=_ranks, min_rank=_min, layout=_layout, doc="dropout")

# -- activations -----------------------------------------------------------------------------------

_INPLACE = (P("inplace", Bool, False),)
_ELEMENTWISE: dict[str, tuple[Param, ...]] = {
    "ReLU": _INPLACE,
    "ReLU6": _INPLACE,
    "LeakyReLU": (P("negative_slope", Float, 0.01),) + _INPLACE,
    "ELU": (P("alpha", Float, 1.0),) + _INPLACE,
    "SELU": _INPLACE,
    "CELU": (P("alpha", Float, 1.0),) + _INPLACE,
    "GELU": (P("approximate", Literal["none", "tanh"], "none"),),
    "SiLU": _INPLACE,
    "Mish": _INPLACE,
    "Sigmoid": (),
    "Tanh": (),
    "Hardsigmoid": _INPLACE,
    "Hardswish": _INPLACE,
    "Softplus": (P("beta", Float, 1.0), P("threshold", Float, 20.0)),
    "Softsign": (),
    "Softshrink": (P("lambd", NonNegFloat, 0.5),),
    "Hardshrink": (P("lambd", Float, 0.5),),
    "Tanhshrink": (),
    "Threshold": (P("threshold", Float), P("value", Float)) + _INPLACE,
    "LogSigmoid": (),
    "RReLU": (P("lower", Float, 0.125), P("upper", Float, 0.3333333333333333)) + _INPLACE,
}
for _name, _params in _ELEMENTWISE.items():
    _layer(_name, _params, doc="elementwise activation")


def _hardtanh(args: dict[str, Any], x: Shape) -> Shape:
    lo = args["min_value"] if args["min_value"] is not None else args["min_val"]
    hi = args["max_value"] if args["max_value"] is not None else args["max_val"]
    if hi <= lo:
        raise ShapeRuleError(f"max_val={hi} must be greater than min_val={lo}", arg="max_val")
    return x


_layer("Hardtanh", (P("min_val", Float, -1.0), P("max_val", Float, 1.0), P("inplace", Bool, False),
                    P("min_value", Float | None, None), P("max_value", Float | None, None)),
       _hardtanh, doc="clamps to [min_val, max_val]")


def _prelu(args: dict[str, Any], x: Shape) -> Shape:
    n = args["num_parameters"]
    c = x[1] if len(x) >= 2 else 1  # torch reads channels from dim 1
    if n != 1 and is_static(c) and c != n:
        raise ShapeRuleError(f"num_parameters={n} but the input {fmt_shape(x)} has {c} channels "
                             f"(dim 1)", arg="num_parameters")
    return x


_layer("PReLU", (P("num_parameters", PosInt, 1), P("init", Float, 0.25)), _prelu, factory=True,
       doc="leaky ReLU with a learned slope per channel")


def _along_dim(args: dict[str, Any], x: Shape) -> Shape:
    if args["dim"] is not None:
        _norm_dim(args["dim"], x)
    return x


for _name in ("Softmax", "LogSoftmax", "Softmin"):
    _layer(_name, (P("dim", Int | None, None),), _along_dim, doc="normalises along dim")

_layer("Softmax2d", (), ranks=(3, 4), layout="[N, C, H, W]", doc="softmax over channels")


def _glu(args: dict[str, Any], x: Shape) -> Shape:
    i = _norm_dim(args["dim"], x)
    if not _divides(x[i], 2):
        raise ShapeRuleError(f"GLU halves dim {args['dim']}, but it has the odd size {x[i]} in the "
                             f"input {fmt_shape(x)}", arg="dim")
    return x[:i] + (x[i] // 2,) + x[i + 1:]


_layer("GLU", (P("dim", Int, -1),), _glu, min_rank=1, doc="gated linear unit; halves dim")

# -- pooling ---------------------------------------------------------------------------------------


def _stride(args: dict[str, Any]) -> Any:
    """Pooling stride defaults to the kernel size."""
    return args["stride"] if args["stride"] is not None else args["kernel_size"]


def _kernel_within_input(args: dict[str, Any], x: Shape, nd: int) -> None:
    """3-D average pooling (and LPPool3d, which runs it) wants every input dim to be at least
    the kernel size; padding and ceil_mode do not count."""
    for dim, h, k in zip(_SPATIAL[nd], x[-nd:], _nt(args["kernel_size"], nd)):
        if is_static(h) and h < k:
            raise ShapeRuleError(f"{_kernel_text(args, 'kernel_size', dim, k, 1)} is larger "
                                 f"than the input {dim} {h}", arg="kernel_size",
                                 hint="3-D average pooling needs each input dim to be at least "
                                      "the kernel size; padding does not count")


def _windows_hold_input(args: dict[str, Any], x: Shape, nd: int, out: tuple) -> None:
    """Every dilated max-pooling window must hold an input element: torch gives -inf for one
    that holds only padding, and may write outside its buffers."""
    k, s, p, d = (_nt(v, nd) for v in (args["kernel_size"], _stride(args), args["padding"],
                                       args["dilation"]))
    for i, (dim, h, o) in enumerate(zip(_SPATIAL[nd], x[-nd:], out)):
        if not (is_static(h) and is_static(o)):
            continue
        bad = uncovered_window(h, k[i], s[i], p[i], d[i], o)
        if bad is not None:
            raise ShapeRuleError(f"with dilation={args['dilation']} and padding="
                                 f"{args['padding']}, pooling window {bad} along the {dim} holds "
                                 f"only padding: its taps skip the input {dim} {h}",
                                 arg="padding", hint="use less padding or dilation: torch fills "
                                 "such a window with -inf")


def pool_shape(kind: Literal["max", "avg", "lp"], args: dict[str, Any], x: Shape,
               nd: int) -> Shape:
    """[*, C, *spatial] -> [*, C, *pooled]: the MaxPool/AvgPool/LPPool layers and the
    max_pool/avg_pool functions, with torch's checks.

    ``args`` has kernel_size, stride (None: the kernel size) and ceil_mode, and may have
    padding (else 0) and dilation (else 1).
    """
    args = {"padding": 0, "dilation": 1, **args}
    _half_kernel(args, nd)
    if kind != "max" and nd == 3:
        _kernel_within_input(args, x, nd)
    out = _spatial_windows(args, x, nd, stride=_stride(args), padding=args["padding"],
                           dilation=args["dilation"], ceil=args["ceil_mode"])
    if kind == "max":
        _windows_hold_input(args, x, nd, out)
    return x[:-nd] + out


def _max_pool(nd: int) -> LayerDef:
    """MaxPoolNd: [N, C, *spatial] -> [N, C, *pooled]."""
    size = _size(nd)

    def rule(args: dict[str, Any], x: Shape) -> Shape:
        _no_indices(args)
        return pool_shape("max", args, x, nd)

    params = (P("kernel_size", size), P("stride", size | None, None), P("padding", _nonneg(nd), 0),
              P("dilation", size, 1), P("return_indices", Bool, False), P("ceil_mode", Bool, False))
    return _layer(f"MaxPool{nd}d", params, rule, ranks=(nd + 1, nd + 2), layout=_LAYOUT[nd],
                  doc=f"{nd}-D max pooling")


def _avg_pool(nd: int) -> LayerDef:
    """AvgPoolNd: [N, C, *spatial] -> [N, C, *pooled]."""
    size = _size(nd)

    def rule(args: dict[str, Any], x: Shape) -> Shape:
        return pool_shape("avg", args, x, nd)

    params = (P("kernel_size", size), P("stride", size | None, None), P("padding", _nonneg(nd), 0),
              P("ceil_mode", Bool, False), P("count_include_pad", Bool, True))
    if nd > 1:
        params += (P("divisor_override", NonZeroInt | None, None),)
    return _layer(f"AvgPool{nd}d", params, rule, ranks=(nd + 1, nd + 2), layout=_LAYOUT[nd],
                  doc=f"{nd}-D average pooling")


def _lp_pool(nd: int) -> LayerDef:
    """LPPoolNd: power-average pooling, no padding."""
    # LPPool1d multiplies its result by kernel_size, which fails for a tuple
    size = PosInt if nd == 1 else _size(nd)

    def rule(args: dict[str, Any], x: Shape) -> Shape:
        return pool_shape("lp", args, x, nd)

    params = (P("norm_type", Float), P("kernel_size", size), P("stride", _size(nd) | None, None),
              P("ceil_mode", Bool, False))
    return _layer(f"LPPool{nd}d", params, rule, ranks=(nd + 1, nd + 2), layout=_LAYOUT[nd],
                  doc=f"{nd}-D power-average pooling")


def _adaptive_pool(kind: str, nd: int) -> LayerDef:
    """AdaptiveAvg/MaxPoolNd: the spatial dims become output_size (None keeps the input's)."""
    entry = PosInt if nd == 1 else PosInt | None

    def rule(args: dict[str, Any], x: Shape) -> Shape:
        _no_indices(args)
        out = _nt(args["output_size"], nd)
        return x[:-nd] + tuple(h if o is None else o for h, o in zip(x[-nd:], out))

    params = (P("output_size", PosInt | _tuple(entry, nd)),)
    if kind == "Max":
        params += (P("return_indices", Bool, False),)
    return _layer(f"Adaptive{kind}Pool{nd}d", params, rule, ranks=(nd + 1, nd + 2),
                  layout=_LAYOUT[nd], doc=f"{nd}-D adaptive {kind.lower()} pooling")


for _nd in (1, 2, 3):
    _conv(_nd)
    _conv_transpose(_nd)
    _batch_norm(_nd)
    _instance_norm(_nd)
    _max_pool(_nd)
    _avg_pool(_nd)
    _lp_pool(_nd)
    _adaptive_pool("Avg", _nd)
    _adaptive_pool("Max", _nd)

# -- upsampling ------------------------------------------------------------------------------------

_MODE_RANKS = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}
_SCALE = PosFloat | tuple[PosFloat, ...]


def _upsample(args: dict[str, Any], x: Shape) -> Shape:
    """[N, C, *spatial] -> [N, C, *size] or [N, C, *floor(spatial * scale_factor)]."""
    mode, size, scale = args.get("mode", "nearest"), args["size"], args["scale_factor"]
    nd = len(x) - 2
    if mode in _MODE_RANKS and len(x) != _MODE_RANKS[mode]:
        raise ShapeRuleError(f"mode='{mode}' needs a {_MODE_RANKS[mode]}-D input, got the "
                             f"{len(x)}-D input {fmt_shape(x)}", arg="mode")
    if mode in ("nearest", "area", "nearest-exact") and args.get("align_corners") is not None:
        raise ShapeRuleError(f"align_corners can only be set with the interpolating modes, not "
                             f"mode='{mode}'", arg="align_corners")
    if (size is None) == (scale is None):
        raise ShapeRuleError("give exactly one of size and scale_factor",
                             arg="size" if size is not None else None)
    if size is not None and args.get("recompute_scale_factor"):
        raise ShapeRuleError("recompute_scale_factor is not meaningful with an explicit size",
                             arg="recompute_scale_factor")
    arg, value = ("size", size) if size is not None else ("scale_factor", scale)
    if isinstance(value, (list, tuple)) and len(value) != nd:
        raise ShapeRuleError(f"{arg}={value} has {len(value)} entries but the input "
                             f"{fmt_shape(x)} has {nd} spatial dim{'s' if nd != 1 else ''}",
                             arg=arg)
    if size is not None:
        return x[:2] + _nt(size, nd)
    out = tuple(_scaled(h, f) for h, f in zip(x[2:], _nt(scale, nd)))
    if any(is_static(o) and o < 1 for o in out):
        raise ShapeRuleError(f"scale_factor={scale} shrinks the input {fmt_shape(x)} to nothing",
                             arg="scale_factor")
    return x[:2] + out


_layer("Upsample", (P("size", PosInt | tuple[PosInt, ...] | None, None),
                    P("scale_factor", _SCALE | None, None), P("mode", UpsampleMode, "nearest"),
                    P("align_corners", Bool | None, None),
                    P("recompute_scale_factor", Bool | None, None)),
       _upsample, ranks=(3, 4, 5), layout="[N, C, *spatial]", doc="upsampling by interpolation")

_UPSAMPLE_2D = (P("size", Size2 | None, None), P("scale_factor", PosFloat | _tuple(PosFloat, 2)
                                                  | None, None))
_layer("UpsamplingNearest2d", _UPSAMPLE_2D, _upsample, ranks=(3, 4, 5), layout=_LAYOUT[2],
       doc="nearest-neighbour upsampling")
_layer("UpsamplingBilinear2d", _UPSAMPLE_2D,
       lambda args, x: _upsample({**args, "mode": "bilinear", "align_corners": True}, x),
       ranks=(4,), layout=_LAYOUT[2], doc="bilinear upsampling")

# -- channel rearrangement -------------------------------------------------------------------------


def _pixel_shuffle(args: dict[str, Any], x: Shape) -> Shape:
    r = args["upscale_factor"]
    c, h, w = x[-3:]
    if not _divides(c, r * r):
        raise ShapeRuleError(f"the input's {c} channels are not divisible by upscale_factor**2 = "
                             f"{r * r}", arg="upscale_factor")
    return x[:-3] + (c // (r * r), h * r, w * r)  # [*, C*r*r, H, W] -> [*, C, H*r, W*r]


def _pixel_unshuffle(args: dict[str, Any], x: Shape) -> Shape:
    r = args["downscale_factor"]
    c, h, w = x[-3:]
    for dim, d in (("height", h), ("width", w)):
        if not _divides(d, r):
            raise ShapeRuleError(f"the input {dim} {d} is not divisible by downscale_factor={r}",
                                 arg="downscale_factor")
    return x[:-3] + (c * r * r, h // r, w // r)  # [*, C, H*r, W*r] -> [*, C*r*r, H, W]


def _channel_shuffle(args: dict[str, Any], x: Shape) -> Shape:
    g, c = args["groups"], x[1]
    if not _divides(c, g):
        raise ShapeRuleError(f"the input's {c} channels are not divisible by groups={g}",
                             arg="groups")
    return x


_layer("PixelShuffle", (P("upscale_factor", PosInt),), _pixel_shuffle, min_rank=3,
       layout="[*, C, H, W]", doc="moves channels into space")
_layer("PixelUnshuffle", (P("downscale_factor", PosInt),), _pixel_unshuffle, min_rank=3,
       layout="[*, C, H, W]", doc="moves space into channels")
_layer("ChannelShuffle", (P("groups", PosInt),), _channel_shuffle, min_rank=3,
       layout="[N, C, *]", doc="interleaves channel groups")

# -- padding ---------------------------------------------------------------------------------------


def _pad_rule(kind: str, nd: int) -> Rule:
    def rule(args: dict[str, Any], x: Shape) -> Shape:
        pads = _nt(args["padding"], 2 * nd)  # (left, right, top, bottom, front, back)
        shown = f"padding={args['padding']}"
        if kind in ("Reflection", "Replication"):
            _nonempty_input(kind, x, nd)
        out = list(x)
        for j in range(nd):
            i = len(x) - 1 - j                # pads[2j:2j+2] apply to the j-th dim from the end
            where = f"the input {_SPATIAL[nd][nd - 1 - j]} {x[i]}"
            out[i] = padded_length(kind, x[i], pads[2 * j], pads[2 * j + 1], shown=shown,
                                   where=where)
        if kind in ("Reflection", "Replication"):
            _some_output(kind, shown, x, tuple(out[-nd:]))
        return tuple(out)

    return rule


def padded_length(kind: str, h: Any, lo: int, hi: int, *, shown: str, where: str,
                  arg: str = "padding") -> Any:
    """h padded by lo before and hi after (a negative amount crops), where torch allows it.

    ``kind`` is a padding layer's prefix ("Zero", "Constant", "Reflection", "Replication",
    "Circular"). ``shown`` is the padding as written (``padding=(1, -2)``) and ``where`` names
    the dim (``the input width 3``), both for messages. A symbolic h is not checked.
    """
    out = h + lo + hi
    if not is_static(h):
        return out
    crop = h + min(lo, 0) + min(hi, 0)     # what the negative sides leave of the input
    if kind in ("Zero", "Constant") and crop < 0:
        raise ShapeRuleError(f"{shown} crops {h - crop} from {where}", arg=arg,
                             hint="negative padding removes elements, at most as many as the "
                                  "dim has")
    if kind == "Reflection" and max(lo, hi) >= h:
        raise ShapeRuleError(f"reflection {shown} must be smaller than {where}", arg=arg,
                             hint="reflection mirrors the input without repeating its edge, so "
                                  "each side may add at most the dim's size - 1")
    if kind == "Circular":
        _circular_fits(h, lo, hi, crop, shown=shown, where=where, arg=arg)
    if out < 0:
        raise ShapeRuleError(f"{kind.lower()} {shown} crops {where} below zero", arg=arg)
    return out


def _circular_fits(h: int, lo: int, hi: int, crop: int, *, shown: str, where: str,
                   arg: str) -> None:
    """Circular padding wraps around at most once, copying from what the negative side left.

    torch checks only the first; past what the crop left it refuses, returns uninitialised
    memory, or wraps more than once, depending on the memory layout, so both are refused here.
    """
    if max(lo, hi) > h:
        raise ShapeRuleError(f"circular {shown} must be at most {where}", arg=arg,
                             hint="circular padding may wrap around the input at most once")
    if max(lo, hi) > crop:
        raise ShapeRuleError(f"circular {shown} adds {max(lo, hi)}, but its negative side leaves "
                             f"only {crop} of {where} to copy from", arg=arg,
                             hint="a circular pad may wrap around at most what is left after "
                                  "cropping")


def _nonempty_input(kind: str, x: Shape, nd: int) -> None:
    """Reflection and replication padding need every dim but the batch to be non-empty."""
    if any(is_static(d) and d == 0 for d in (x[1:] if len(x) == nd + 2 else x)):
        raise ShapeRuleError(f"{kind.lower()} padding needs a non-empty input, got "
                             f"{fmt_shape(x)}", arg="padding")


def _some_output(kind: str, shown: str, x: Shape, out: Shape) -> None:
    """Reflection and replication padding keep at least one padded dim non-empty."""
    if all(is_static(o) and o < 1 for o in out):
        raise ShapeRuleError(f"{kind.lower()} {shown} crops the input {fmt_shape(x)} to nothing: "
                             f"the padded dims would be {fmt_shape(out)}", arg="padding",
                             hint=f"{kind.lower()} padding needs at least one padded dim of "
                                  f"size 1 or more")


def _pad(kind: str, nd: int) -> LayerDef:
    """KindPadNd: pads the last nd dims; constant kinds accept any rank >= nd."""
    params = (P("padding", Int | _tuple(Int, 2 * nd)),)
    if kind == "Constant":
        params += (P("value", Float),)
    if kind in ("Zero", "Constant"):
        ranks, min_rank = None, nd
    else:
        ranks, min_rank = (nd + 1, nd + 2), 0
    return _layer(f"{kind}Pad{nd}d", params, _pad_rule(kind, nd), ranks=ranks, min_rank=min_rank,
                  layout=_LAYOUT[nd], doc=f"{kind.lower()} padding of the last {nd} dims")


for _kind in ("Zero", "Constant", "Reflection", "Replication", "Circular"):
    for _nd in (1, 2, 3):
        _pad(_kind, _nd)

# -- recurrent -------------------------------------------------------------------------------------
#
# torch's RNN, LSTM and GRU return (output, h_n) and LSTMCell returns (h, c): in a spec these pass
# on element 0 (``output_index``), the output at every step or the new hidden state.

_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3, "RNNCell": 1, "LSTMCell": 4, "GRUCell": 3}
_SEQUENCE = "[L, N, input_size], [N, L, input_size] with batch_first, or [L, input_size]"
_Nonlinearity = Literal["tanh", "relu"]


def _recurrent_params(name: str) -> tuple[Param, ...]:
    """torch's documented arguments; the classes themselves take ``*args, **kwargs``."""
    head = (P("input_size", PosInt), P("hidden_size", PosInt), P("num_layers", PosInt, 1))
    if name == "RNN":
        head += (P("nonlinearity", _Nonlinearity, "tanh"),)
    tail = (P("bias", Bool, True), P("batch_first", Bool, False), P("dropout", Prob, 0.0),
            P("bidirectional", Bool, False))
    if name == "LSTM":       # RNN and GRU refuse proj_size
        tail += (P("proj_size", NonNegInt, 0),)
    return head + tail


def _recurrent_rule(args: dict[str, Any], x: Shape) -> Shape:
    """Each step's input_size features -> directions * (proj_size or hidden_size)."""
    proj, hidden = args.get("proj_size", 0), args["hidden_size"]
    if proj >= hidden:
        raise ShapeRuleError(f"proj_size={proj} must be smaller than hidden_size={hidden}",
                             arg="proj_size")
    steps = x[1] if len(x) == 3 and args["batch_first"] else x[0]
    if is_static(steps) and steps == 0:
        raise ShapeRuleError(f"the input {fmt_shape(x)} has no time steps; a recurrent layer "
                             f"needs a sequence of length 1 or more")
    directions = 2 if args["bidirectional"] else 1
    return x[:-1] + (directions * (proj or hidden),)


def _cell_rule(args: dict[str, Any], x: Shape) -> Shape:
    return x[:-1] + (args["hidden_size"],)  # [N, input_size] or [input_size] -> hidden


_INPUT_SIZE = _From("input_size", -1, "last", "features")

for _name in ("RNN", "LSTM", "GRU"):
    _layer(_name, _recurrent_params(_name), _recurrent_rule, ranks=(2, 3), layout=_SEQUENCE,
           sizes=(_INPUT_SIZE,), factory=True, output_index=0,
           doc=f"a multi-layer {_name} over a sequence; passes on the output at every step")

for _name in ("RNNCell", "LSTMCell", "GRUCell"):
    _params = (P("input_size", PosInt), P("hidden_size", PosInt), P("bias", Bool, True))
    if _name == "RNNCell":
        _params += (P("nonlinearity", _Nonlinearity, "tanh"),)
    _layer(_name, _params, _cell_rule, ranks=(1, 2), layout="[N, input_size] or [input_size]",
           sizes=(_INPUT_SIZE,), factory=True, output_index=0 if _name == "LSTMCell" else None,
           doc=f"one {_name.removesuffix('Cell')} step; passes on the new hidden state")

# -- schema ----------------------------------------------------------------------------------------


def layer_schema(layer: LayerDef) -> type[BaseModel]:
    """A pydantic model (extra arguments forbidden) that validates a layer's arguments."""
    if layer._schema is None:
        fields = {p.name: (p.type, ... if p.required else p.default) for p in layer.params}
        config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)
        layer._schema = create_model(f"{layer.name}Args", __config__=config, **fields)
    return layer._schema


# -- fallback: any other torch.nn layer, by introspection ------------------------------------------

_LAST_DIM = ("in_features", "input_size", "embed_dim", "d_model", "normalized_shape")
_CHANNEL_DIM = ("in_channels", "num_features", "num_channels")
_NOT_LAYERS = {"Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList",
               "ParameterDict", "Container", "DataParallel"}
_PRIMES = (97, 89, 83, 79, 73, 71, 67, 61, 59, 53, 47, 43, 41, 37, 31, 29)
_FALLBACK: dict[str, LayerDef | None] = {}


# -- the tensors each layer owns (for summaries and checks without torch) -------------------------

def _tup(value: Any, n: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _no_tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
    return {}


def _linear_tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
    out = {"weight": ((args["out_features"], args["in_features"]), "param")}
    if args["bias"]:
        out["bias"] = ((args["out_features"],), "param")
    return out


def _conv_tensors(nd: int, transposed: bool):
    def tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
        cin, cout, groups = args["in_channels"], args["out_channels"], args["groups"]
        kernel = _tup(args["kernel_size"], nd)
        weight = (cin, cout // groups, *kernel) if transposed else (cout, cin // groups, *kernel)
        out = {"weight": (weight, "param")}
        if args["bias"]:
            out["bias"] = ((cout,), "param")
        return out
    return tensors


def _norm_tensors(affine_key: str, stats_key: str | None):
    def tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
        c = (args["num_features"],)
        out = {}
        if args[affine_key]:
            out["weight"] = (c, "param")
            if args.get("bias", True):
                out["bias"] = (c, "param")
        if stats_key is not None and args[stats_key]:
            out.update(running_mean=(c, "buffer"), running_var=(c, "buffer"),
                       num_batches_tracked=((), "buffer"))
        return out
    return tensors


def _layer_norm_tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
    shape = _tup(args["normalized_shape"], 1)
    out = {}
    if args["elementwise_affine"]:
        out["weight"] = (shape, "param")
        if args.get("bias", False):
            out["bias"] = (shape, "param")
    return out


def _group_norm_tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
    c = (args["num_channels"],)
    if not args["affine"]:
        return {}
    return {"weight": (c, "param"), **({"bias": (c, "param")} if args.get("bias", True) else {})}


TensorRule = Callable[[dict[str, Any]], dict[str, tuple[Shape, str]]]


def _recurrent_tensors(gates: int) -> TensorRule:
    """Per layer and direction, in torch's order: weight_ih, weight_hh, bias_ih, bias_hh and
    (LSTM with proj_size) weight_hr; suffix ``_l{k}`` and ``_reverse`` for the backward one."""
    def tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
        hidden, proj = args["hidden_size"], args.get("proj_size", 0)
        real = proj or hidden                     # the size of h, as the next layer sees it
        directions = 2 if args["bidirectional"] else 1
        out: dict[str, tuple[Shape, str]] = {}
        for k in range(args["num_layers"]):
            width = args["input_size"] if k == 0 else real * directions
            for suffix in ("", "_reverse")[:directions]:
                out[f"weight_ih_l{k}{suffix}"] = ((gates * hidden, width), "param")
                out[f"weight_hh_l{k}{suffix}"] = ((gates * hidden, real), "param")
                if args["bias"]:
                    out[f"bias_ih_l{k}{suffix}"] = ((gates * hidden,), "param")
                    out[f"bias_hh_l{k}{suffix}"] = ((gates * hidden,), "param")
                if proj:
                    out[f"weight_hr_l{k}{suffix}"] = ((proj, hidden), "param")
        return out
    return tensors


def _cell_tensors(gates: int) -> TensorRule:
    def tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
        rows, hidden = gates * args["hidden_size"], args["hidden_size"]
        out = {"weight_ih": ((rows, args["input_size"]), "param"),
               "weight_hh": ((rows, hidden), "param")}
        if args["bias"]:
            out.update(bias_ih=((rows,), "param"), bias_hh=((rows,), "param"))
        return out
    return tensors


def _attention_tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
    e, kdim, vdim = args["embed_dim"], args["kdim"] or args["embed_dim"], \
        args["vdim"] or args["embed_dim"]
    if kdim == e and vdim == e:             # one packed projection of q, k and v
        out = {"in_proj_weight": ((3 * e, e), "param")}
    else:
        out = {"q_proj_weight": ((e, e), "param"), "k_proj_weight": ((e, kdim), "param"),
               "v_proj_weight": ((e, vdim), "param")}
    if args["bias"]:
        out["in_proj_bias"] = ((3 * e,), "param")
    if args["add_bias_kv"]:
        out.update(bias_k=((1, 1, e), "param"), bias_v=((1, 1, e), "param"))
    out["out_proj.weight"] = ((e, e), "param")
    if args["bias"]:
        out["out_proj.bias"] = ((e,), "param")
    return out


def _transformer_layer_tensors(attentions: tuple[str, ...], norms: int) -> TensorRule:
    """Each attention's tensors under its name, then linear1, linear2 and the norms."""
    def tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
        d, ff, bias = args["d_model"], args["dim_feedforward"], args["bias"]
        attention = _attention_tensors({"embed_dim": d, "kdim": None, "vdim": None,
                                        "bias": bias, "add_bias_kv": False})
        out = {f"{name}.{k}": v for name in attentions for k, v in attention.items()}
        for name, shape in (("linear1", (ff, d)), ("linear2", (d, ff))):
            out[f"{name}.weight"] = (shape, "param")
            if bias:
                out[f"{name}.bias"] = ((shape[0],), "param")
        for k in range(1, norms + 1):
            out[f"norm{k}.weight"] = ((d,), "param")
            if bias:
                out[f"norm{k}.bias"] = ((d,), "param")
        return out
    return tensors


def _transformer_tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
    """Each encoder layer's tensors, the encoder's norm, then the decoder's likewise."""
    out: dict[str, tuple[Shape, str]] = {}
    d = args["d_model"]
    for stack, count, layer in _transformer_stacks(args):
        own = _transformer_layer_tensors(*layer)(args)
        for i in range(count):
            out.update({f"{stack}.layers.{i}.{k}": v for k, v in own.items()})
        out[f"{stack}.norm.weight"] = ((d,), "param")
        if args["bias"]:
            out[f"{stack}.norm.bias"] = ((d,), "param")
    return out


def _bilinear_tensors(args: dict[str, Any]) -> dict[str, tuple[Shape, str]]:
    out = {"weight": ((args["out_features"], args["in1_features"], args["in2_features"]),
                      "param")}
    if args["bias"]:
        out["bias"] = ((args["out_features"],), "param")
    return out


_TENSORS: dict[str, Callable[[dict[str, Any]], dict[str, tuple[Shape, str]]]] = {
    "Linear": _linear_tensors,
    "MultiheadAttention": _attention_tensors,
    "Bilinear": _bilinear_tensors,
    "TransformerEncoderLayer": _transformer_layer_tensors(*_ENCODER),
    "TransformerDecoderLayer": _transformer_layer_tensors(*_DECODER),
    "Transformer": _transformer_tensors,
    **{f"Conv{n}d": _conv_tensors(n, False) for n in (1, 2, 3)},
    **{f"ConvTranspose{n}d": _conv_tensors(n, True) for n in (1, 2, 3)},
    **{f"BatchNorm{n}d": _norm_tensors("affine", "track_running_stats") for n in (1, 2, 3)},
    **{f"InstanceNorm{n}d": _norm_tensors("affine", "track_running_stats") for n in (1, 2, 3)},
    "LayerNorm": _layer_norm_tensors,
    "RMSNorm": lambda a: {"weight": (_tup(a["normalized_shape"], 1), "param")}
    if a["elementwise_affine"] else {},
    "GroupNorm": _group_norm_tensors,
    "PReLU": lambda a: {"weight": ((a["num_parameters"],), "param")},
    "Embedding": lambda a: {"weight": ((a["num_embeddings"], a["embedding_dim"]), "param")},
    **{name: _recurrent_tensors(_GATES[name]) for name in ("RNN", "LSTM", "GRU")},
    **{name: _cell_tensors(_GATES[name]) for name in ("RNNCell", "LSTMCell", "GRUCell")},
}
for _name, _layer_def in LAYERS.items():
    _layer_def.tensors = _TENSORS.get(_name, _no_tensors)


# -- value kinds -----------------------------------------------------------------------------------
# What each layer does with a bool, int or float tensor (torch on CPU; tests/test_dtypes.py runs
# every shape case on all three): the output's kind for each input kind torch accepts, a kind it
# refuses left out. Layers with weights, norms, most activations and adaptive pools compute in
# floating point only; layers that move values keep any kind; some take ints but not bools.

_KEEP = {"bool": "bool", "int": "int", "float": "float"}      # moves or pads values
_NUMBER = {"int": "int", "float": "float"}                    # compares or averages, not bools
_FLOAT = {"float": "float"}                                    # floating-point kernels
_TO_FLOAT = {"bool": "float", "int": "float", "float": "float"}
_NUMBER_TO_FLOAT = {"int": "float", "float": "float"}
_KINDS: dict[str, dict[str, str]] = {
    **dict.fromkeys(("Identity", "Flatten", "Unflatten", "PixelShuffle", "PixelUnshuffle",
                     "ChannelShuffle"), _KEEP),
    **{f"{kind}Pad{n}d": _KEEP for kind in ("Zero", "Constant", "Circular") for n in (1, 2, 3)},
    **{f"{kind}Pad{n}d": _NUMBER for kind in ("Reflection", "Replication") for n in (1, 2, 3)},
    **dict.fromkeys(("ReLU", "ReLU6", "Hardtanh", "Threshold", "MaxPool2d", "MaxPool3d",
                     "AvgPool1d", "AvgPool2d", "AvgPool3d"), _NUMBER),   # not MaxPool1d
    **dict.fromkeys(("Sigmoid", "Tanh", "LPPool1d", "LPPool2d", "LPPool3d"), _TO_FLOAT),
    **dict.fromkeys(("Softsign", "Tanhshrink", "LocalResponseNorm", "PairwiseDistance"),
                    _NUMBER_TO_FLOAT),
    "Embedding": {"int": "float"},
    **dict.fromkeys(("Unfold", "Fold"), {"bool": "bool", "float": "float"}),   # not ints, on CPU
}
_INDEX_LAYERS = frozenset({"Embedding", "EmbeddingBag"})     # see LayerDef.indices
_DROPOUTS = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
             "FeatureAlphaDropout")


def _dropout_kinds(args: dict[str, Any]) -> dict[str, str]:
    """In training, dropout scales by a float mask unless p is 0 or 1 (it then returns or zeroes
    its input as it is)."""
    return _KEEP if args["p"] in (0, 1) else _FLOAT


def _fixed(table: dict[str, str]) -> Callable[[dict[str, Any]], dict[str, str]]:
    """A kind rule that does not depend on the layer's arguments."""
    return lambda args: table


for _name, _layer_def in LAYERS.items():
    _layer_def.kinds = _dropout_kinds if _name in _DROPOUTS else _fixed(_KINDS.get(_name, _FLOAT))
    _layer_def.indices = _name in _INDEX_LAYERS


def lookup_layer(name: str) -> LayerDef | None:
    """The table's LayerDef for ``name``, else one built from ``torch.nn.<name>``, else None."""
    if name in LAYERS:
        return LAYERS[name]
    if name not in _FALLBACK:
        _FALLBACK[name] = _introspect(name)
    return _FALLBACK[name]


def _plausible(name: str, cls: Any) -> bool:
    """Whether a ``torch.nn`` attribute is a layer class (not a container, loss or lazy module)."""
    import torch

    return (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)
            and not name.startswith(("_", "Lazy")) and name not in _NOT_LAYERS
            and "Loss" not in name and not issubclass(cls, torch.nn.modules.loss._Loss))


def _introspect(name: str) -> LayerDef | None:
    """Build a LayerDef for a ``torch.nn`` class from its signature and a meta-device probe."""
    if not name.isidentifier():
        return None
    import torch

    cls = getattr(torch.nn, name, None)
    if not _plausible(name, cls):
        return None
    layer = layer_from_class(cls, name)
    layer.indices = name in _INDEX_LAYERS
    return layer


def layer_from_class(cls: Any, name: str | None = None) -> LayerDef:
    """A LayerDef for any ``nn.Module`` class: a torch layer, or a user's own.

    A class may state what netspec cannot guess: ``netspec_in_sizes = {"in_features": -1}``
    (arguments read off an input dim) and a ``netspec_shape(args, shape) -> shape`` static
    method, given one shape per tensor its ``forward`` takes. Otherwise input sizes are guessed
    from argument names and the output shape is found by running the module on meta tensors.
    """
    sig = inspect.signature(cls.__init__)
    params, factory = [], False
    for p in list(sig.parameters.values())[1:]:
        if p.name in ("device", "dtype"):
            factory = True
        elif p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and not p.name.startswith("_"):
            default = REQUIRED if p.default is p.empty else p.default
            params.append(Param(p.name, Any, default, p.kind is p.KEYWORD_ONLY))
    stated = getattr(cls, "netspec_in_sizes", None)
    if stated is not None:
        sizes = tuple(_stated_size(param, dim) for param, dim in stated.items())
    else:
        sizes = tuple(_guess_size(p.name) for p in params if p.name in _LAST_DIM + _CHANNEL_DIM)
    rule = getattr(cls, "netspec_shape", None)
    shape = _stated_rule(cls, rule) if rule is not None else _probe_rule(cls)
    doc = (inspect.getdoc(cls) or "").split("\n", 1)[0]
    inputs, forward_params = _forward_signature(cls)
    return LayerDef(name or cls.__name__, tuple(params), sizes, shape, None, factory, doc,
                    cls=cls, inputs=inputs, forward_params=forward_params)


def _forward_signature(cls: Any) -> tuple[tuple[str, ...], tuple[Param, ...]]:
    """The tensors ``cls.forward`` needs (its required positional arguments) and its optional
    arguments: TransformerDecoderLayer takes ``(tgt, memory)``, and ``tgt_mask=`` and such."""
    try:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]   # after self
    except (TypeError, ValueError):
        return ("input",), ()
    needed = tuple(p.name for p in params if p.default is p.empty and
                   p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    optional = tuple(Param(p.name, Any, p.default) for p in params
                     if p.default is not p.empty and p.kind not in (p.VAR_POSITIONAL,
                                                                     p.VAR_KEYWORD))
    return needed or ("input",), optional


def _stated_rule(cls: Any, rule: Callable[..., Any]) -> Rule:
    """A class's own ``netspec_shape``, given one shape per tensor. Whatever else it raises, or
    a result that is not a shape, becomes a located shape error naming the rule."""

    def shape(args: dict[str, Any], *xs: Shape, **forward: Any) -> Shape:
        try:
            out = rule(args, *(tuple(x) for x in xs))
        except ShapeRuleError:
            raise
        except Exception as exc:  # a bug in the user's rule: located, not a traceback
            first = str(exc).strip().split("\n")[0]
            raise ShapeRuleError(
                f"{cls.__name__}.netspec_shape raised {type(exc).__name__}"
                + (f": {first}" if first else ""),
                hint="raise netspec.ShapeRuleError(message) for a shape the layer refuses"
            ) from exc
        out = tuple(out) if isinstance(out, (tuple, list)) else out
        if not _is_shape(out):
            raise ShapeRuleError(f"{cls.__name__}.netspec_shape returned {out!r}, not a shape",
                                 hint="return a tuple of sizes, such as (*x[:-1], 10)")
        return out

    return shape


def _stated_size(param: str, dim: int) -> InSize:
    """An InSize a user layer declared: ``param`` is the input's size at ``dim``."""
    s = _From(param, dim, f"dim {dim}", "features")

    def check(x: Shape) -> None:
        if not -len(x) <= dim < len(x):
            raise ShapeRuleError(f"cannot infer {param} from the {len(x)}-D input {fmt_shape(x)}",
                                 arg=param)

    return InSize(param, _inferrer(s, check), s.noun)


def _guess_size(param: str) -> InSize:
    """An InSize read from the last dim or from dim 1, guessed from the argument's name."""
    last = param in _LAST_DIM
    s = _From(param, -1 if last else 1, "last" if last else "channel",
              "features" if last else "channels", as_tuple=param == "normalized_shape")

    def check(x: Shape) -> None:
        need = 1 if last else 2
        if len(x) < need:
            raise ShapeRuleError(f"cannot infer {param} from the {len(x)}-D input {fmt_shape(x)}",
                                 arg=param)

    return InSize(param, _inferrer(s, check), s.noun)


def _probe_rule(cls: Any) -> Rule:
    """A shape rule that runs the module on meta tensors, with primes standing in for symbols:
    on one input, or on each of the tensors its ``forward`` takes, ``forward`` arguments
    included (a tuple of sizes there is a tensor's shape, from a call's ``tgt_mask=m``)."""

    def shape(args: dict[str, Any], *xs: Shape, **forward: Any) -> Shape:
        xs = tuple(tuple(x) for x in xs)
        try:
            first = _probe(cls, args, xs, forward, _PRIMES[0::2])
            second = _probe(cls, args, xs, forward, _PRIMES[1::2])
        except ShapeRuleError:
            raise
        except Exception as exc:  # whatever torch raised, as a located shape error
            raise ShapeRuleError(str(exc).strip().split("\n")[0]) from exc
        if len(first) != len(second):
            raise ShapeRuleError(f"{cls.__name__}'s output rank depends on the symbolic dims of "
                                 f"the input {', '.join(fmt_shape(x) for x in xs)}")
        return tuple(_unprobe(a, b, i, cls.__name__) for i, (a, b) in enumerate(zip(first, second)))

    return shape


def _unprobe(a: tuple, b: tuple, i: int, name: str) -> Any:
    """Combine one output dim of the two probe runs: a constant, an input symbol, or opaque."""
    (va, sa), (vb, sb) = a, b
    if va == vb:
        return va
    if sa is not None and sa == sb:
        return sa
    return Sym.symbol(f"{name}_out{i}")


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(d, Sym) or (isinstance(d, int) and
                                                                    not isinstance(d, bool))
                                            for d in value)


def _probe(cls: Any, args: dict[str, Any], xs: tuple[Shape, ...], forward: dict[str, Any],
           primes: tuple[int, ...]) -> list[tuple]:
    """Run ``cls(**args)`` on meta tensors of the shapes ``xs`` (and the tensor arguments in
    ``forward``); gives (size, the symbol it stands for) per dim of the output."""
    import torch

    shapes = [*xs, *(v for v in forward.values() if _is_shape(v))]
    concrete = {d for x in shapes for d in x if is_static(d)}
    free = iter(p for p in primes if p not in concrete)
    probe: dict[Any, int] = {}         # one prime per symbol, the same in every tensor
    for x in shapes:
        for d in x:
            if not is_static(d) and d not in probe:
                probe[d] = next(free)
    sizes = [[d if is_static(d) else probe[d] for d in x] for x in xs]
    kwargs = {k: torch.zeros([d if is_static(d) else probe[d] for d in v], device="meta")
              if _is_shape(v) else v for k, v in forward.items()}
    back = {v: k for k, v in probe.items()}
    with torch.device("meta"):
        module = cls(**args)
    y = _run(module, sizes, kwargs)
    return [(int(n), back.get(int(n))) for n in y.shape]


def _run(module: Any, sizes: list[list[int]], kwargs: dict[str, Any]) -> Any:
    """Call the module on float meta tensors (integer ones if floats are refused)."""
    import torch

    try:
        y = module(*(torch.empty(size, device="meta") for size in sizes), **kwargs)
    except Exception as first:
        try:
            y = module(*(torch.empty(size, device="meta", dtype=torch.long) for size in sizes),
                       **kwargs)
        except Exception:
            raise first from None
    if isinstance(y, (tuple, list)):
        # the next step would get the whole tuple at run time (layers that return a tuple
        # have a table entry that says which element a step passes on)
        raise ShapeRuleError(f"{type(module).__name__} returns a {type(y).__name__} of "
                             f"{len(y)}, not one tensor, so it cannot be a step")
    return y


# Every layer class in torch.nn (torch 2.x), minus containers, losses, Module and Lazy* classes.
LAYER_NAMES: tuple[str, ...] = (
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "AlphaDropout", "AvgPool1d", "AvgPool2d",
    "AvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Bilinear", "CELU",
    "ChannelShuffle", "CircularPad1d", "CircularPad2d", "CircularPad3d", "ConstantPad1d",
    "ConstantPad2d", "ConstantPad3d", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d",
    "ConvTranspose2d", "ConvTranspose3d", "CosineSimilarity", "CrossMapLRN2d", "Dropout",
    "Dropout1d", "Dropout2d", "Dropout3d", "ELU", "Embedding", "EmbeddingBag",
    "FeatureAlphaDropout", "Flatten", "Fold", "FractionalMaxPool2d", "FractionalMaxPool3d",
    "GELU", "GLU", "GRU", "GRUCell", "GroupNorm", "Hardshrink", "Hardsigmoid", "Hardswish",
    "Hardtanh", "Identity", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LPPool1d",
    "LPPool2d", "LPPool3d", "LSTM", "LSTMCell", "LayerNorm", "LeakyReLU", "Linear",
    "LocalResponseNorm", "LogSigmoid", "LogSoftmax", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d", "Mish", "MultiheadAttention", "PReLU",
    "PairwiseDistance", "PixelShuffle", "PixelUnshuffle", "RMSNorm", "RNN", "RNNBase", "RNNCell",
    "RNNCellBase", "RReLU", "ReLU", "ReLU6", "ReflectionPad1d", "ReflectionPad2d",
    "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d", "SELU", "SiLU",
    "Sigmoid", "Softmax", "Softmax2d", "Softmin", "Softplus", "Softshrink", "Softsign",
    "SyncBatchNorm", "Tanh", "Tanhshrink", "Threshold", "Transformer", "TransformerDecoder",
    "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "Unflatten",
    "Unfold", "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d", "ZeroPad1d", "ZeroPad2d",
    "ZeroPad3d",
)
