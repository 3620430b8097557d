"""The syntax tree: frozen dataclasses, each carrying the ``Span`` of the text it came from.

They have slots rather than a dict: a spec has about a node per token, so the tree is smaller and
quicker to build and to free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from netspec.errors import Span


# ---- expressions ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Name:
    """A reference to a value, block argument, dim symbol, layer, block or function."""
    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class Num:
    """An integer or float literal."""
    value: int | float
    span: Span


@dataclass(frozen=True, slots=True)
class Str:
    """A string literal."""
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class Lit:
    """``true``, ``false`` or ``none``."""
    value: bool | None
    span: Span


@dataclass(frozen=True, slots=True)
class BinOp:
    """``left op right`` for arithmetic, ``@`` and comparisons."""
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class UnOp:
    """``-operand``."""
    op: str
    operand: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``left and right`` / ``left or right`` (compile time only)."""
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Not:
    """``not operand`` (compile time only)."""
    operand: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Ternary:
    """``a if cond else b`` (compile time only)."""
    cond: "Expr"
    then: "Expr"
    orelse: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Keyword:
    """``name=value`` in a call."""
    name: str
    value: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    """``func(args, name=value)``: a layer, block, function or tensor factory."""
    func: "Expr"
    args: tuple["Expr", ...]
    keywords: tuple[Keyword, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Index:
    """``value[index]``."""
    value: "Expr"
    index: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Attr:
    """``value.name``."""
    value: "Expr"
    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class ListLit:
    """``[a, b, c]``: a shape, a list of tensors, or a list argument."""
    items: tuple["Expr", ...]
    span: Span


Expr = Union[Name, Num, Str, Lit, BinOp, UnOp, BoolOp, Not, Ternary, Call, Index, Attr, ListLit]


# ---- steps ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Body:
    """``{ stmt; stmt }``: a block body, a nested sequence or a list of branches."""
    stmts: tuple["Stmt", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Seq:
    """A nested sequence used as a step: ``net: { Linear(64); ReLU() }``."""
    body: Body
    span: Span


@dataclass(frozen=True, slots=True)
class Concat:
    """``concat(dim=1) { branch; branch }``."""
    args: tuple[Expr, ...]
    keywords: tuple[Keyword, ...]
    branches: Body
    span: Span


@dataclass(frozen=True, slots=True)
class Add:
    """``add { branch; branch }``."""
    branches: Body
    span: Span


@dataclass(frozen=True, slots=True)
class Repeat:
    """``repeat count [as i | as "name {i}"] { body }``."""
    count: Expr
    index: str            # the index variable: the ``as`` name, or ``i``
    pattern: str | None   # the child name pattern, if given
    body: Body
    span: Span


@dataclass(frozen=True, slots=True)
class If:
    """``if cond { ... } else { ... }``, decided at compile time."""
    cond: Expr
    then: Body
    orelse: Union[Body, "If", None]
    span: Span


@dataclass(frozen=True, slots=True)
class While:
    """``while cond { ... }``, a loop run on every forward call."""
    cond: Expr
    body: Body
    span: Span


StepNode = Union[Expr, Seq, Concat, Add, Repeat, If, While]


@dataclass(frozen=True, slots=True)
class Link:
    """One element of a chain, optionally named: ``conv1: Conv2d(64, kernel_size=3)``."""
    label: str | None
    label_span: Span | None
    node: StepNode
    span: Span


@dataclass(frozen=True, slots=True)
class Chain:
    """``a -> b -> c``: each link is applied to the output of the one before."""
    links: tuple[Link, ...]
    span: Span


# ---- statements -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class InputDecl:
    """``input x: [N, 784]``."""
    name: str
    dims: tuple[Expr, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Let:
    """``let name = Layer(...)``: one module shared by every use."""
    name: str
    value: Link
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class ConstDecl:
    """``const name = <tensor expression>``: a saved, untrained buffer."""
    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class ParamDecl:
    """``param name = <tensor expression>``: a trainable parameter."""
    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Path:
    """A dotted module path: ``head.weight``, ``features.0.bias``."""
    parts: tuple[str, ...]
    span: Span

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Tie:
    """``tie target = source``: the target parameter becomes the source parameter."""
    target: Path
    source: Path
    span: Span


@dataclass(frozen=True, slots=True)
class Assign:
    """``name = chain``: names a value in a dataflow block."""
    name: str
    value: Chain
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Return:
    """``return chain``: the block's output."""
    value: Chain
    span: Span


@dataclass(frozen=True, slots=True)
class Expect:
    """``expect [N, 400]``: asserts the running value's shape."""
    dims: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Step:
    """A chain applied to the running value."""
    chain: Chain
    span: Span


@dataclass(frozen=True, slots=True)
class InitRule:
    """``Linear.weight: normal(std=0.01)``, ``"*.bias": zeros()``, ``T.p in "pat": ...``."""
    selector: Union[Path, Str]
    within: Str | None
    init: Chain
    span: Span


@dataclass(frozen=True, slots=True)
class InitSection:
    """``init { rules }``."""
    rules: tuple[InitRule, ...]
    span: Span


Stmt = Union[InputDecl, Let, ConstDecl, ParamDecl, Tie, Assign, Return, Expect, Step, InitSection]


# ---- top level --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BlockParam:
    """``name: type = default`` in a block header."""
    name: str
    type: str
    default: Expr | None
    span: Span
    type_span: Span


@dataclass(frozen=True, slots=True)
class BlockDef:
    """``block Name(params) { body }``."""
    name: str
    params: tuple[BlockParam, ...]
    body: Body
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Import:
    """``import "other.net"``, or ``import python "pkg.layers"`` for a user's own layers."""
    path: str
    span: Span
    python: bool = False


@dataclass(frozen=True, slots=True)
class SpecFile:
    """One parsed ``.net`` file."""
    file: str
    imports: tuple[Import, ...]
    blocks: tuple[BlockDef, ...]
    init: tuple[InitSection, ...]
    span: Span
