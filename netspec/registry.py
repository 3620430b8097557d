"""The op registries: per-layer and per-function behaviour as small declarative records.

A ``LayerDef`` says how a ``torch.nn`` class is called from a spec (its arguments, which of them
are inferred from the input) and what shape it produces. A ``FunctionDef`` does the same for a
tensor function used in expressions (``relu(x)``, ``x @ w``). Later stages look ops up here and
never branch on op names themselves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

from netspec.dims import Shape

REQUIRED: Any = object()  # marks an argument without a default


class ShapeRuleError(Exception):
    """Raised by a shape rule; the shapes pass turns it into a located ``SpecError``.

    ``arg`` names the argument at fault (the error is then shown at that argument),
    ``operand`` the index of the tensor operand at fault, ``hint`` an optional hint line.
    """

    def __init__(self, message: str, *, arg: str | None = None, operand: int | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.operand = operand
        self.hint = hint


class TensorArg:
    """The type of a ``forward`` argument that takes a tensor (``attn_mask``), not a value."""


@dataclass(frozen=True)
class Param:
    """One argument of a layer or function, in call order."""

    name: str
    type: Any = Any  # a typing annotation that pydantic validates; importable without torch
    default: Any = REQUIRED
    keyword_only: bool = False   # after a ``*`` in the constructor: never bound by position

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class InSize:
    """An argument that is inferred from the input shape, and checked when the user states it."""

    param: str
    infer: Callable[[Shape], Any]  # input shape -> value; raise ShapeRuleError if impossible
    noun: str = "features"         # "the input here has 383 channels"
    compare: bool = True           # False: the shape rule checks a stated value itself
    dim: int | None = None         # the input dim it is read from, if a single one
    input: int = 0                 # which of the layer's tensors it is read from (``inputs``)


@dataclass
class LayerDef:
    """How one ``torch.nn`` layer is spelled in a spec and what shape it outputs."""

    name: str                              # torch.nn class name: "Conv2d"
    params: tuple[Param, ...]              # every constructor argument in torch's order
    in_sizes: tuple[InSize, ...] = ()      # arguments inferred from the input
    shape: Callable[[dict[str, Any], Shape], Shape] | None = None  # (args, input) -> output
    rank: tuple[int, ...] | None = None    # accepted input ranks, None = any
    factory_kwargs: bool = False           # constructor accepts device= and dtype=
    doc: str = ""
    # torch's forward returns a tuple and a spec step passes on this element of it
    # (``output`` of an LSTM's ``(output, (h_n, c_n))``); None: it returns one tensor
    output_index: int | None = None
    _schema: Any = field(default=None, repr=False, compare=False)
    cls: Any = field(default=None, repr=False, compare=False)   # None: torch.nn.<name>
    # (args) -> {name: (shape, "param" | "buffer")}: the layer's own tensors, without torch;
    # None when unknown (netspec then builds the layer on the meta device to find out)
    tensors: Callable[[dict[str, Any]], dict[str, tuple[Shape, str]]] | None = \
        field(default=None, repr=False, compare=False)
    # (args) -> {input kind: output kind} for the value kinds "bool", "int" and "float", a kind
    # torch refuses left out; None when unknown (a user's layer, one found by introspection)
    kinds: Callable[[dict[str, Any]], dict[str, str]] | None = \
        field(default=None, repr=False, compare=False)
    # its input holds integer indices (Embedding): its output is a float tensor even where the
    # input's kind is unknown, and a float input is refused as not indices
    indices: bool = False
    # the tensors ``forward`` takes, in order: a step passes one, the running value; a layer
    # of several (MultiheadAttention's query, key, value) is a ``let`` called on them, and its
    # shape rule takes one shape for each: ``shape(args, *shapes, **forward)``
    inputs: tuple[str, ...] = ("input",)
    # keyword arguments of ``forward`` such a call may pass: static values (``need_weights``)
    # or tensors (``attn_mask``; their shapes reach the rule)
    forward_params: tuple[Param, ...] = ()
    # (name, class name) of each submodule the layer builds for itself (MultiheadAttention's
    # ``out_proj``), whose tensors its table lists as ``name.tensor``
    # or a function of the arguments where they decide them (Transformer's layer counts)
    submodules: tuple[tuple[str, str], ...] | Callable[[dict[str, Any]], tuple[tuple[str, str],
                                                                            ...]] = ()
    # (argument, other): the argument left at None takes the other's value (MultiheadAttention's
    # kdim is embed_dim), so at that value it is at its default: source writes leave it out
    defaults_to: tuple[tuple[str, str], ...] = ()

    def parts(self, args: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """The submodules of a call with these (resolved) arguments."""
        return self.submodules(args) if callable(self.submodules) else self.submodules

    @functools.cached_property
    def positional(self) -> tuple[Param, ...]:
        """The arguments a spec may give by position: torch's order minus inferred sizes."""
        inferred = {s.param for s in self.in_sizes}
        return tuple(p for p in self.params if p.name not in inferred and not p.keyword_only)

    @functools.cached_property
    def torch_positional(self) -> tuple[Param, ...]:
        """The arguments torch's own order binds by position: all but keyword-only ones."""
        return tuple(p for p in self.params if not p.keyword_only)

    @functools.cached_property
    def torch_order_from(self) -> tuple[int, tuple[tuple[int, str], ...]]:
        """(k, required): a call with more than k positional arguments reaches an inferred size
        in torch's order, and is a whole call in that order only if it gives every required
        argument, (position, name), that its positional ones do not. Linear: ``(0, ((0,
        "in_features"), (1, "out_features")))``. Without inferred sizes k is out of reach."""
        inferred = {s.param for s in self.in_sizes}
        first = next((i for i, p in enumerate(self.params) if p.name in inferred), None)
        if first is None:
            return len(self.params) + 1, ()
        never = len(self.params)           # a keyword-only argument is not given by position
        return first, tuple((never if p.keyword_only else i, p.name)
                            for i, p in enumerate(self.params) if p.required)


@dataclass
class FunctionDef:
    """A tensor function usable in spec expressions: ``relu(x)``, ``mean(x, dim=1)``, ``a @ b``."""

    name: str                              # spelling in a spec: "relu", "matmul"
    params: tuple[Param, ...]              # tensors first, then static arguments
    shape: Callable[..., Shape]            # (*tensor_shapes, **static_args) -> output shape
    emit: Callable[..., str]               # (*arg_sources, **kwarg_sources) -> Python expression
    tensors: int = 1                       # how many leading params are tensors; -1 = variadic
    factory: bool = False                  # creates a tensor from static args (rand, zeros)
    # a new tensor that no backward reads (x + y): a consumer may overwrite it in place
    fresh: bool = False
    # (*arg_sources) -> the call applied in place to its tensor (torch.relu_), used on a fresh
    # operand; only for functions whose output has their input's shape and dtype
    inplace: Callable[..., str] | None = field(default=None, repr=False, compare=False)
    doc: str = ""
    # (**static_args) -> how a call is shown (drawings, hovers); None: its name and arguments
    label: Callable[..., str] | None = field(default=None, repr=False, compare=False)
    _schema: Any = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def static_params(self) -> tuple[Param, ...]:
        """The parameters after the tensors."""
        return static_params(self.params, self.tensors)


def static_params(params: tuple[Param, ...], tensors: int) -> tuple[Param, ...]:
    """The parameters after the tensor ones; ``tensors < 0``: after the variadic first one."""
    return params[1:] if tensors < 0 else params[tensors:]


LAYERS: dict[str, LayerDef] = {}
FUNCTIONS: dict[str, FunctionDef] = {}
BINARY_OPS: dict[str, str] = {     # spec operator -> FUNCTIONS key
    "+": "add", "-": "sub", "*": "mul", "/": "div", "//": "floordiv", "%": "remainder",
    "@": "matmul", "**": "pow",
    "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne",
}
UNARY_OPS: dict[str, str] = {"-": "neg"}


def register_layer(layer: LayerDef) -> LayerDef:
    LAYERS[layer.name] = layer
    return layer


def register_function(fn: FunctionDef) -> FunctionDef:
    FUNCTIONS[fn.name] = fn
    return fn
