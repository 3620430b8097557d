"""The syntax tree: frozen dataclasses, each carrying the ``Span`` of the text it came from.

They have slots rather than a dict: a spec has about a node per token, so the tree is smaller and
quicker to build and to free.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Iterator, Union

from netspec.errors import Span


class Node:
    """What every syntax-tree class shares: equality, hashing and a repr, by its fields in order.

    Defined once here rather than generated per class by ``dataclass``: generating them took a
    third of the time of importing netspec's own modules.
    """

    __slots__ = ()
    _names: tuple[str, ...] = ()
    _values: Any = None            # the fields' values as a tuple, from an ``attrgetter``

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._names = names = tuple(cls.__dict__.get("__annotations__", ()))
        get = operator.attrgetter(*names)
        # a static method, like the attrgetter: called as node._values(node) either way
        cls._values = get if len(names) > 1 else staticmethod(lambda node: (get(node),))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values(self) == other._values(other)   # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values(self))

    def __repr__(self) -> str:
        values = self._values(self)
        return f"{type(self).__name__}(" + ", ".join(
            f"{name}={value!r}" for name, value in zip(self._names, values)) + ")"


node = dataclass(frozen=True, slots=True, repr=False, eq=False)


def children(node: Node) -> Iterator[Node]:
    """The syntax nodes directly under ``node``, in field order (a tuple field's in order)."""
    for value in node._values(node):
        if isinstance(value, Node):
            yield value
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Node):
                    yield item


# ---- expressions ------------------------------------------------------------------------------

@node
class Name(Node):
    """A reference to a value, block argument, dim symbol, layer, block or function."""
    id: str
    span: Span


@node
class Num(Node):
    """An integer or float literal."""
    value: int | float
    span: Span


@node
class Str(Node):
    """A string literal."""
    value: str
    span: Span


@node
class Lit(Node):
    """``true``, ``false`` or ``none``."""
    value: bool | None
    span: Span


@node
class BinOp(Node):
    """``left op right`` for arithmetic, ``@`` and comparisons."""
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@node
class UnOp(Node):
    """``-operand``."""
    op: str
    operand: "Expr"
    span: Span


@node
class BoolOp(Node):
    """``left and right`` / ``left or right`` (compile time only)."""
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@node
class Not(Node):
    """``not operand`` (compile time only)."""
    operand: "Expr"
    span: Span


@node
class Ternary(Node):
    """``a if cond else b`` (compile time only)."""
    cond: "Expr"
    then: "Expr"
    orelse: "Expr"
    span: Span


@node
class Keyword(Node):
    """``name=value`` in a call."""
    name: str
    value: "Expr"
    span: Span


@node
class Call(Node):
    """``func(args, name=value)``: a layer, block, function or tensor factory."""
    func: "Expr"
    args: tuple["Expr", ...]
    keywords: tuple[Keyword, ...]
    span: Span


@node
class Index(Node):
    """``value[i]``, ``value[a:b]`` or ``value[i, a:b]``: one item per subscript."""
    value: "Expr"
    items: "tuple[Expr | Slice | Ellipsis, ...]"
    span: Span


@node
class Slice(Node):
    """``start:stop:step`` in a subscript; a part left out is None."""
    start: "Expr | None"
    stop: "Expr | None"
    step: "Expr | None"
    span: Span


@node
class Ellipsis(Node):
    """``...`` in a subscript: a full slice of every dim the other items leave."""
    span: Span


@node
class Attr(Node):
    """``value.name``."""
    value: "Expr"
    name: str
    span: Span


@node
class ListLit(Node):
    """``[a, b, c]``: a shape, a list of tensors, or a list argument."""
    items: tuple["Expr", ...]
    span: Span


Expr = Union[Name, Num, Str, Lit, BinOp, UnOp, BoolOp, Not, Ternary, Call, Index, Attr, ListLit]


# ---- steps ------------------------------------------------------------------------------------

@node
class Body(Node):
    """``{ stmt; stmt }``: a block body, a nested sequence or a list of branches."""
    stmts: tuple["Stmt", ...]
    span: Span


@node
class Seq(Node):
    """A nested sequence used as a step: ``net: { Linear(64); ReLU() }``."""
    body: Body
    span: Span


@node
class Concat(Node):
    """``concat(dim=1) { branch; branch }``."""
    args: tuple[Expr, ...]
    keywords: tuple[Keyword, ...]
    branches: Body
    span: Span


@node
class Add(Node):
    """``add { branch; branch }``."""
    branches: Body
    span: Span


@node
class Repeat(Node):
    """``repeat count [as i | as "name {i}"] { body }``."""
    count: Expr
    index: str            # the index variable: the ``as`` name, or ``i``
    pattern: str | None   # the child name pattern, if given
    body: Body
    span: Span


@node
class If(Node):
    """``if cond { ... } else { ... }``, decided at compile time."""
    cond: Expr
    then: Body
    orelse: Union[Body, "If", None]
    span: Span


@node
class While(Node):
    """``while cond { ... }``, a loop run on every forward call."""
    cond: Expr
    body: Body
    span: Span


StepNode = Union[Expr, Seq, Concat, Add, Repeat, If, While]


@node
class Link(Node):
    """One element of a chain, optionally named: ``conv1: Conv2d(64, kernel_size=3)``."""
    label: str | None
    label_span: Span | None
    node: StepNode
    span: Span


@node
class Chain(Node):
    """``a -> b -> c``: each link is applied to the output of the one before."""
    links: tuple[Link, ...]
    span: Span


# ---- statements -------------------------------------------------------------------------------

@node
class InputDecl(Node):
    """``input x: [N, 784]``."""
    name: str
    dims: tuple[Expr, ...]
    span: Span
    name_span: Span


@node
class Let(Node):
    """``let name = Layer(...)``: one module shared by every use."""
    name: str
    value: Link
    span: Span
    name_span: Span


@node
class ConstDecl(Node):
    """``const name = <tensor expression>``: a saved, untrained buffer."""
    name: str
    value: Expr
    span: Span
    name_span: Span


@node
class ParamDecl(Node):
    """``param name = <tensor expression>``: a trainable parameter."""
    name: str
    value: Expr
    span: Span
    name_span: Span


@node
class Path(Node):
    """A dotted module path: ``head.weight``, ``features.0.bias``."""
    parts: tuple[str, ...]
    span: Span

    def __str__(self) -> str:
        return ".".join(self.parts)


@node
class Tie(Node):
    """``tie target = source``: the target parameter becomes the source parameter."""
    target: Path
    source: Path
    span: Span


@node
class Assign(Node):
    """``name = chain``: names a value in a dataflow block."""
    name: str
    value: Chain
    span: Span
    name_span: Span


@node
class Return(Node):
    """``return chain``: the block's output."""
    value: Chain
    span: Span


@node
class Expect(Node):
    """``expect [N, 400]``: asserts the running value's shape."""
    dims: tuple[Expr, ...]
    span: Span


@node
class Step(Node):
    """A chain applied to the running value."""
    chain: Chain
    span: Span


@node
class InitRule(Node):
    """``Linear.weight: normal(std=0.01)``, ``"*.bias": zeros()``, ``T.p in "pat": ...``."""
    selector: Union[Path, Str]
    within: Str | None
    init: Chain
    span: Span


@node
class InitSection(Node):
    """``init { rules }``."""
    rules: tuple[InitRule, ...]
    span: Span


Stmt = Union[InputDecl, Let, ConstDecl, ParamDecl, Tie, Assign, Return, Expect, Step, InitSection]


# ---- top level --------------------------------------------------------------------------------

@node
class BlockParam(Node):
    """``name: type = default`` in a block header."""
    name: str
    type: str
    default: Expr | None
    span: Span
    type_span: Span


@node
class BlockDef(Node):
    """``block Name(params) { body }``."""
    name: str
    params: tuple[BlockParam, ...]
    body: Body
    span: Span
    name_span: Span


@node
class Import(Node):
    """``import "other.net"``, or ``import python "pkg.layers"`` for a user's own layers."""
    path: str
    span: Span
    python: bool = False


@node
class SpecFile(Node):
    """One parsed ``.net`` file."""
    file: str
    imports: tuple[Import, ...]
    blocks: tuple[BlockDef, ...]
    init: tuple[InitSection, ...]
    span: Span
