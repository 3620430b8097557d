"""Standalone PyTorch source for an analysed spec: ``python_source(analysis) -> str``.

The result imports only ``torch`` (and ``collections`` when a Sequential needs named children)
and builds the same module tree as ``netspec.build``: the same classes by name, the same child
names, the same ``state_dict`` keys in the same order, the same ``forward`` code (from
``codegen.forward_source``). It reads like hand-written PyTorch:

* one class per block *structure*. Instances of a block whose code differs only in the sizes and
  other values given to their layers and tensors share one class, and those values become
  arguments of its ``__init__`` (``BasicBlock(channels)``, ``MyLinear(in_units, units)``), named
  after the block's arguments or input dims where they match. Instances that differ in anything
  else (a ``downsample`` branch, another forward) get their own class: ``BasicBlock_2``;
* layers are written ``nn.Linear(784, 256)``: required arguments by position (``kernel_size`` by
  name, as torchvision does), every other argument by name when it differs from torch's default;
* ``const``/``param`` tensors keep their spec expressions (``torch.rand(20, 20)``);
* a ``let`` module is created once and used wherever the spec uses it; ``tie`` is an assignment
  of one parameter to another;
* a block that is a chain of modules is an ``nn.Sequential`` subclass; a nested chain
  ``{ ... }`` is a plain ``nn.Sequential`` written where it is used;
* long lines are wrapped inside brackets; redundant parentheses in ``forward`` are dropped
  (the expressions are unchanged: same syntax tree, same evaluation order).

``build()`` at the end returns the entry block's module, initialised as PyTorch initialises
its layers (the spec's ``init`` rules and ``seed`` are not reproduced); load a state_dict to get
netspec's weights.
"""

from __future__ import annotations

import ast
import inspect
import io
import keyword
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from netspec.builder import is_sequential
from netspec.codegen import Emitter, strip_parens, forward_source, static_source, tensor_source
from netspec.dims import Sym, fmt_shape
from netspec.registry import FunctionDef
from netspec.ir import Fragment, ModuleIR, forward_class_name, has_init_rules

WIDTH = 99          # the longest line the output aims for
_INDENT = "    "
_RESERVED = {"self", "nn", "torch", "F", "OrderedDict", "BufferList", "BufferDict", "build",
             "x", "mods", "super", "getattr", "setattr", "str", "int", "float", "bool", "len",
             "enumerate", "tuple"}
_DEFAULT_DTYPE = "torch.get_default_dtype()"


def python_source(analysis: Any) -> str:
    """Standalone PyTorch source for ``analysis`` (a ``netspec.Analysis``).

    The source defines one class per distinct block structure and ``build()``, which returns a
    new instance of the entry block. It imports only ``torch`` and the standard library.
    """
    return _Program(analysis).source()


# ---- the description of a class body: statements over nodes with literal slots ----------------

_REQUIRED = object()


@dataclass(eq=False)
class _Slot:
    """A literal value written in ``__init__``: stays a literal, or becomes an argument."""

    value: Any
    hint: str                    # a name for it, should it become an argument
    default: Any = _REQUIRED     # a keyword argument at this value is left out


@dataclass(eq=False)
class _Call:
    func: str
    args: list = field(default_factory=list)                 # nodes
    kwargs: list = field(default_factory=list)               # (name, node)
    explode: bool = False      # one argument a line when the statement is too long


@dataclass(eq=False)
class _Code:
    """Source text with ``\\x00i\\x00`` markers standing for ``slots[i]``."""

    text: str
    slots: list = field(default_factory=list)


@dataclass(eq=False)
class _Child:
    """A child block written as a call of its class."""

    mod: ModuleIR


@dataclass(eq=False)
class _Ref:
    """A module made elsewhere (a ``let``), by its uid."""

    uid: int


@dataclass(eq=False)
class _List:
    items: list
    brackets: str = "[]"
    explode: bool = True


@dataclass(eq=False)
class _Pairs:
    """``[("a", node), ...]`` (OrderedDict items) or ``{"a": node, ...}`` (dict)."""

    items: list
    style: str = "items"
    explode: bool = True


@dataclass(eq=False)
class _Stmt:
    """One statement of ``__init__``: ``prefix + node + suffix``."""

    prefix: str
    node: Any = None
    suffix: str = ""


@dataclass(eq=False)
class _Body:
    mod: ModuleIR
    name: str                    # display name (block name)
    base: str                    # "nn.Module" | "nn.Sequential"
    stmts: list
    externals: list              # [(uid, parameter name)]: let modules handed in by the parent
    forward: list | None         # [(indent, code, comment)] of the forward, None for Sequential


@dataclass(eq=False)
class _Group:
    """The instances that share one class."""

    key: Any
    instances: list
    name: str = ""
    params: list = field(default_factory=list)       # [(name, annotation)]
    param_of: dict = field(default_factory=dict)     # column key -> parameter name
    values: dict = field(default_factory=dict)       # uid -> [value per parameter]
    decided: bool = False
    slot_column: list = field(default_factory=list)  # per slot: column key, or None if constant


# ---- helpers -----------------------------------------------------------------------------------

def _vkey(value: Any) -> tuple:
    return (type(value).__name__, repr(value))


def _literal(value: Any) -> str:
    if isinstance(value, float) and value != value:
        return "float('nan')"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "float('inf')" if value > 0 else "-float('inf')"
    return repr(value)


def _identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _attr(owner: str, name: str) -> str:
    return f"{owner}.{name}" if _identifier(name) else f"getattr({owner}, {name!r})"


def _sanitize(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    return name + "_" if keyword.iskeyword(name) else name


def _symbol_name(dim: Any) -> str | None:
    atom = dim.atom() if isinstance(dim, Sym) else None
    return None if atom is None else re.sub(r"@\d+$", "", atom)


def _symbols(mod: ModuleIR) -> dict[str, Any]:
    """The input's dim symbols bound to sizes in this instance (``C`` -> 64)."""
    out: dict[str, Any] = {}
    for d, v in zip(mod.input_dims or (), mod.in_shape or ()):
        name = _symbol_name(d)
        if name is not None and isinstance(v, int):
            out.setdefault(name, v)
    return out


def _signature(cls_name: str) -> list[inspect.Parameter]:
    import torch.nn as nn

    try:
        params = list(inspect.signature(getattr(nn, cls_name).__init__).parameters.values())[1:]
    except (TypeError, ValueError, AttributeError):
        return []
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return _table_signature(cls_name) or params
    return params


def _table_signature(cls_name: str) -> list[inspect.Parameter]:
    """The documented arguments of a layer whose ``__init__`` takes ``*args, **kwargs`` (RNN,
    LSTM, GRU), from the layer table, so that the source reads ``nn.LSTM(32, 64)``."""
    from netspec.registry import LAYERS

    layer = LAYERS.get(cls_name)
    if layer is None:
        return []
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return [inspect.Parameter(p.name, kind, default=inspect.Parameter.empty if p.required
                              else p.default) for p in layer.params]


_FIRST_BY_POSITION = {"p", "negative_slope"}   # nn.Dropout(0.1), nn.LeakyReLU(0.2)


def _defaults_of(mod: ModuleIR) -> set[str]:
    """The arguments of a layer that are at torch's default."""
    args = mod.resolved_args or {}
    return {p.name for p in _signature(mod.cls_name)
            if p.name in args and p.default is not inspect.Parameter.empty
            and (_same(args[p.name], p.default) or _at_others_value(mod, p.name))}


def _at_others_value(mod: ModuleIR, name: str) -> bool:
    """``kdim=16`` where embed_dim is 16: the value the layer gives the argument left out."""
    other = dict(mod.layer.defaults_to).get(name) if mod.layer is not None else None
    args = mod.resolved_args or {}
    return other is not None and _same(args[name], args.get(other))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and inspect.isfunction(b):     # activation="relu" is torch's F.relu
        return a == b.__name__
    return type(a) is type(b) and repr(a) == repr(b)


# ---- the program -------------------------------------------------------------------------------

class _Program:
    def __init__(self, analysis: Any):
        self.analysis = analysis
        self.root: ModuleIR = analysis.ir
        self.owner: dict[int, int] = {}      # let module uid -> uid of the block that makes it
        self.let_name: dict[int, str] = {}
        self.parent_chain: dict[int, list[int]] = {}
        self._find_owners()
        self.bodies: dict[int, _Body] = {}
        self.scopes: dict[int, dict] = {}
        self.keys: dict[int, Any] = {}
        self.groups: dict[Any, _Group] = {}
        self.group_of: dict[int, _Group] = {}
        self.order: list[_Group] = []
        self.uses_ordered_dict = False
        self.helpers: set[str] = set()

    # -- ownership of let modules ----------------------------------------------------------------
    def _find_owners(self) -> None:
        seen: set[int] = set()
        queue = [(self.root, [])]
        while queue:
            mod, ancestors = queue.pop(0)
            if mod.uid in seen:
                continue
            seen.add(mod.uid)
            self.parent_chain[mod.uid] = ancestors
            for name, child in mod.children.items():
                if name in mod.shared and child.uid not in self.owner:
                    self.owner[child.uid] = mod.uid
                    self.let_name[child.uid] = name
                queue.append((child, ancestors + [mod.uid]))

    def _inside(self, uid: int, block: ModuleIR) -> bool:
        """Whether module ``uid`` is ``block`` or below it."""
        return uid == block.uid or block.uid in self.parent_chain.get(uid, [])

    def needs(self, mod: ModuleIR) -> list[int]:
        """Let modules used below ``mod`` but made by one of its ancestors, in order of use."""
        out: list[int] = []

        def add(uid: int) -> None:
            owner = self.owner.get(uid)
            if owner is not None and not self._inside(owner, mod) and uid not in out:
                out.append(uid)

        for child in mod.children.values():
            if child.uid in self.owner:
                add(child.uid)
                if self.owner[child.uid] == mod.uid and child.kind == "block":
                    for uid in self.needs(child):
                        add(uid)
            elif child.kind == "block":
                for uid in self.needs(child):
                    add(uid)
        return out

    # -- describing one block instance -----------------------------------------------------------
    def externals(self, mod: ModuleIR) -> list[tuple[int, str]]:
        """The let modules ``mod``'s class takes as arguments, with their names."""
        externals = []
        taken: set[str] = set()
        for uid in self.needs(mod):
            name = _sanitize(self.let_name[uid])
            base, k = name, 1
            while name in taken or name in _RESERVED:
                k += 1
                name = f"{base}_{k}"
            taken.add(name)
            externals.append((uid, name))
        return externals

    def body(self, mod: ModuleIR) -> _Body:
        if mod.uid in self.bodies:
            return self.bodies[mod.uid]
        externals = self.externals(mod)
        if is_sequential(mod):
            body = self._sequential_body(mod, externals)
        else:
            body = self._generated_body(mod, externals)
        self.bodies[mod.uid] = body
        return body

    def module_node(self, mod: ModuleIR) -> Any:
        """The expression that makes ``mod`` where its parent makes it."""
        if mod.kind == "layer":
            return self.layer_node(mod)
        if self._inline(mod):
            return self.inline_sequential(mod)
        return _Child(mod)

    def layer_node(self, mod: ModuleIR) -> _Call:
        args = dict(mod.resolved_args or {})
        call = _Call(f"nn.{mod.cls_name}")
        positional = True
        for index, p in enumerate(_signature(mod.cls_name)):
            if p.name not in args:
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if p.default is inspect.Parameter.empty:
                    positional = False
                continue
            value = args.pop(p.name)
            if _at_others_value(mod, p.name):
                continue
            required = p.default is inspect.Parameter.empty
            if p.name in _FIRST_BY_POSITION and index == 0 \
                    and not mod.resolved_args.keys() - {p.name} - _defaults_of(mod):
                call.args.append(_Slot(value, p.name, p.default))     # nn.Dropout(0.1)
                continue
            if (required and positional and p.name != "kernel_size"
                    and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)):
                call.args.append(_Slot(value, p.name))
                continue
            positional = False
            call.kwargs.append((p.name, _Slot(value, p.name,
                                              _REQUIRED if required else p.default)))
        for name, value in args.items():   # not in the signature (a **kwargs layer)
            call.kwargs.append((name, _Slot(value, name)))
        return call

    def chain_children(self, mod: ModuleIR) -> list[tuple[str, ModuleIR]]:
        """The children of a chain block, named as ``builder`` names them."""
        out = []
        for _, data in mod.graph.nodes(data=True):
            if data["op"] != "call_module":
                continue
            target = data["target"]
            name = target if target not in mod.shared else (
                data.get("label") or str(data["position"]))
            out.append((name, mod.children[target]))
        return out

    def inline_sequential(self, mod: ModuleIR) -> _Call:
        """A nested chain ``{ ... }``: a plain ``nn.Sequential`` written in place."""
        return self._sequential_call("nn.Sequential", mod)

    def _sequential_call(self, func: str, mod: ModuleIR) -> _Call:
        children = self.chain_children(mod)
        nodes = [(name, self.use(child, mod)) for name, child in children]
        if [name for name, _ in children] == [str(i) for i in range(len(children))]:
            return _Call(func, [node for _, node in nodes], explode=True)
        self.uses_ordered_dict = True
        return _Call(func, [_Call("OrderedDict", [_Pairs(nodes)])])

    def use(self, child: ModuleIR, parent: ModuleIR) -> Any:
        """A child where ``parent`` uses it: a reference for a let module, else its maker."""
        if child.uid in self.owner:
            return _Ref(child.uid)
        return self.module_node(child)

    def _inline(self, mod: ModuleIR) -> bool:
        return mod.kind == "block" and mod.cls_name == "Sequential" and is_sequential(mod)

    def _hoisted(self, mod: ModuleIR) -> list[tuple[str, ModuleIR]]:
        """Let modules of nested chains written in ``mod``'s ``__init__``: made there first."""
        out: list[tuple[str, ModuleIR]] = []

        def visit(block: ModuleIR) -> None:
            for child in block.children.values():
                if self._inline(child):
                    out.extend(self._owned_lets(child))
                    visit(child)

        visit(mod)
        return out

    def scope(self, mod: ModuleIR) -> dict[int, tuple[Any, str]]:
        """Every let module ``mod``'s ``__init__`` can name: uid -> (role, source)."""
        if mod.uid in self.scopes:
            return self.scopes[mod.uid]
        body_externals = self.externals(mod)
        out: dict[int, tuple[Any, str]] = {
            uid: (("external", name), name) for uid, name in body_externals}
        taken = {name for _, name in body_externals}
        sequential = is_sequential(mod)
        for name, child in self._owned_lets(mod):
            local = self._local(name)
            taken.add(local)
            out[child.uid] = (("own", name), local if sequential else _attr("self", name))
        for name, child in self._hoisted(mod):
            local, k = self._local(name), 1
            while local in taken:
                k += 1
                local = f"{self._local(name)}_{k}"
            taken.add(local)
            out[child.uid] = (("hoisted", local), local)
        self.scopes[mod.uid] = out
        return out

    def _owned_lets(self, mod: ModuleIR) -> list[tuple[str, ModuleIR]]:
        return [(name, child) for name, child in mod.children.items()
                if self.owner.get(child.uid) == mod.uid and self.let_name[child.uid] == name]

    def _hoisted_stmts(self, mod: ModuleIR, child: ModuleIR) -> list[_Stmt]:
        """Statements making the let modules of nested chain ``child``, before ``child``."""
        if not self._inline(child):
            return []
        scope = self.scope(mod)
        return [_Stmt(f"{scope[let.uid][1]} = ", self.module_node(let))
                for _, let in self._owned_lets(child) + self._hoisted(child)]

    def _sequential_body(self, mod: ModuleIR, externals: list) -> _Body:
        stmts = []
        for name, child in self._owned_lets(mod):
            stmts += self._hoisted_stmts(mod, child)
            stmts.append(_Stmt(f"{self._local(name)} = ", self.module_node(child)))
        for _, child in self.chain_children(mod):
            if child.uid not in self.owner:
                stmts += self._hoisted_stmts(mod, child)
        stmts.append(_Stmt("", self._sequential_call("super().__init__", mod)))
        stmts.extend(self._ties(mod))
        return _Body(mod, mod.cls_name, "nn.Sequential", stmts, externals, None)

    @staticmethod
    def _local(name: str) -> str:
        name = _sanitize(name)
        return name + "_" if name in _RESERVED else name

    def _generated_body(self, mod: ModuleIR, externals: list) -> _Body:
        stmts = [_Stmt("super().__init__()")]
        for name, child in mod.children.items():
            made_here = self.owner.get(child.uid, mod.uid) == mod.uid and (
                child.uid not in self.owner or self.let_name[child.uid] == name)
            if made_here:
                stmts += self._hoisted_stmts(mod, child)
            node = self.module_node(child) if made_here else _Ref(child.uid)
            if _identifier(name):
                stmts.append(_Stmt(f"self.{name} = ", node))
            else:
                stmts.append(_Stmt(f"self.add_module({name!r}, ", node, ")"))
        for name, decl in mod.tensors.items():
            makers = {k: self.tensor_node(frag, mod, decl.boolean)
                      for k, frag in decl.items.items()}
            if decl.container == "tensor":
                node = makers[""]
                if decl.trainable:
                    node = _Call("nn.Parameter", [node])
                    stmts.append(_Stmt(f"self.{name} = ", node) if _identifier(name) else
                                 _Stmt(f"self.register_parameter({name!r}, ", node, ")"))
                else:
                    stmts.append(_Stmt(f"self.register_buffer({name!r}, ", node, ")"))
                continue
            if decl.trainable:
                items = {k: _Call("nn.Parameter", [n]) for k, n in makers.items()}
                func = "nn.ParameterList" if decl.container == "list" else "nn.ParameterDict"
            else:
                items = makers
                func = "BufferList" if decl.container == "list" else "BufferDict"
                self.helpers.add(func)
            if decl.container == "list":
                node = _Call(func, [_List([items[str(i)] for i in range(len(items))])])
            else:
                node = _Call(func, [_Pairs(list(items.items()), "dict")])
            stmts.append(_Stmt(f"self.{name} = ", node) if _identifier(name) else
                         _Stmt(f"self.add_module({name!r}, ", node, ")"))
        stmts.extend(self._ties(mod))
        return _Body(mod, forward_class_name(mod), "nn.Module",
                     stmts, externals, _forward_lines(mod))

    def _ties(self, mod: ModuleIR) -> list[_Stmt]:
        out = []
        for tie in mod.ties:
            owner = _path("self", tie.target[:-1])
            source = _path("self", tie.source[:-1])
            source = _attr(source, tie.source[-1]) if tie.source[:-1] or _identifier(
                tie.source[-1]) else f"self.get_parameter({tie.source[-1]!r})"
            if _identifier(tie.target[-1]):
                out.append(_Stmt(f"{owner}.{tie.target[-1]} = {source}"))
            else:
                out.append(_Stmt(f"setattr({owner}, {tie.target[-1]!r}, {source})"))
        return out

    def tensor_node(self, frag: Fragment, mod: ModuleIR, boolean: bool = False) -> _Code:
        emitter = _TensorEmitter(mod)
        out = strip_parens(emitter.graph(frag.graph, "None", {}))
        if emitter.lines:
            raise NotImplementedError("a const/param expression that needs statements")
        if not boolean and not _is_floating(frag, mod):
            out = f"({out}).to({_DEFAULT_DTYPE})"
        return _Code(out, emitter.slots)

    # -- structure keys and groups ---------------------------------------------------------------
    def key(self, mod: ModuleIR) -> Any:
        """What makes two instances one class: everything but the values of their literals."""
        if mod.uid not in self.keys:
            body = self.body(mod)
            roles = {uid: role for uid, (role, _) in self.scope(mod).items()}
            forward = None if body.forward is None else tuple(
                (indent, code) for indent, code, _ in body.forward)
            self.keys[mod.uid] = (body.name, body.base, tuple(n for _, n in body.externals),
                                  tuple(self._shape(s, roles) for s in body.stmts), forward)
        return self.keys[mod.uid]

    def _shape(self, node: Any, roles: dict) -> Any:
        if isinstance(node, _Stmt):
            return ("stmt", node.prefix, self._shape(node.node, roles), node.suffix)
        if node is None:
            return None
        if isinstance(node, _Slot):
            return ("slot", node.default is _REQUIRED)
        if isinstance(node, _Call):
            return ("call", node.func, tuple(self._shape(a, roles) for a in node.args),
                    tuple((k, self._shape(v, roles)) for k, v in node.kwargs))
        if isinstance(node, _Code):
            return ("code", node.text)
        if isinstance(node, _Child):
            return ("child", self.key(node.mod))
        if isinstance(node, _Ref):
            return ("ref", roles[node.uid])
        if isinstance(node, _List):
            return ("list", node.brackets, tuple(self._shape(i, roles) for i in node.items))
        if isinstance(node, _Pairs):
            return ("pairs", node.style, tuple((k, self._shape(v, roles)) for k, v in node.items))
        raise AssertionError(node)

    def collect(self) -> None:
        """Group every block instance by structure, in order of first appearance."""
        seen: set[int] = set()

        def visit(mod: ModuleIR) -> None:
            if mod.uid in seen:
                return
            seen.add(mod.uid)
            if mod.kind == "block" and not self._inline(mod):
                key = self.key(mod)
                group = self.groups.get(key)
                if group is None:
                    group = self.groups[key] = _Group(key, [])
                    self.order.append(group)
                group.instances.append(mod)
                self.group_of[mod.uid] = group
            for child in mod.children.values():
                visit(child)

        visit(self.root)

    # -- deciding what becomes an argument -------------------------------------------------------
    def _slot_walk(self, node: Any, visit) -> None:
        if node is None or isinstance(node, _Ref):
            return
        if isinstance(node, _Slot):
            visit(node)
        elif isinstance(node, _Call):
            for a in node.args:
                self._slot_walk(a, visit)
            for _, v in node.kwargs:
                self._slot_walk(v, visit)
        elif isinstance(node, _Code):
            for s in node.slots:
                visit(s)
        elif isinstance(node, _Child):
            group = self.decide(self.group_of[node.mod.uid])
            for (name, _), value in zip(group.params, group.values[node.mod.uid]):
                visit(_Slot(value, name))
        elif isinstance(node, _List):
            for i in node.items:
                self._slot_walk(i, visit)
        elif isinstance(node, _Pairs):
            for _, v in node.items:
                self._slot_walk(v, visit)

    def decide(self, group: _Group) -> _Group:
        if group.decided:
            return group
        per_instance = [[] for _ in group.instances]
        for i, mod in enumerate(group.instances):
            for stmt in self.body(mod).stmts:
                self._slot_walk(stmt.node, per_instance[i].append)
        first = group.instances[0]
        block_args = {name: tuple(_vkey(m.block_args.get(name)) for m in group.instances)
                      for name in first.block_args}
        symbols = {}
        for name in _symbols(first):
            column = tuple(_vkey(_symbols(m).get(name)) for m in group.instances)
            symbols.setdefault(name, column)
        taken = set(_RESERVED) | {n for _, n in self.body(first).externals} | {
            g.name for g in self.order} | {text for _, text in self.scope(first).values()}
        n_slots = len(per_instance[0])
        for j in range(n_slots):
            column = tuple(_vkey(values[j].value) for values in per_instance)
            if len(set(column)) == 1:
                group.slot_column.append(None)
                continue
            group.slot_column.append(column)
            if column in group.param_of:
                continue
            name = next((n for n, c in block_args.items() if c == column), None) or next(
                (n for n, c in symbols.items() if c == column), None) or per_instance[0][j].hint
            name = _sanitize(name)
            base, k = name, 1
            while name in taken:
                k += 1
                name = f"{base}_{k}"
            taken.add(name)
            group.param_of[column] = name
            types = {type(values[j].value) for values in per_instance}
            annotation = next(iter(types)).__name__ if len(types) == 1 and next(
                iter(types)) in (int, float, bool, str) else ""
            group.params.append((name, annotation))
            for mod, values in zip(group.instances, per_instance):
                group.values.setdefault(mod.uid, []).append(values[j].value)
        for mod in group.instances:
            group.values.setdefault(mod.uid, [])
        group.decided = True
        return group

    # -- naming ----------------------------------------------------------------------------------
    def name_groups(self) -> None:
        taken = set(_RESERVED)
        for group in self.order:
            base = _sanitize(self.body(group.instances[0]).name)
            name, k = base, 1
            while name in taken:
                k += 1
                name = f"{base}_{k}"
            taken.add(name)
            group.name = name

    # -- rendering -------------------------------------------------------------------------------
    def source(self) -> str:
        self.collect()
        self.name_groups()
        for group in self.order:
            self.decide(group)
        classes = []
        done: set[int] = set()

        def define(group: _Group) -> None:
            if id(group) in done:
                return
            done.add(id(group))
            for sub in self._child_groups(group.instances[0]):
                define(sub)
            classes.append(self.render_class(group))

        define(self.group_of[self.root.uid])
        for group in self.order:
            define(group)
        needs_f = any(re.search(r"(?<![\w.'\"])F\.", text) for text in classes)
        head = self.header()
        imports = []
        if self.uses_ordered_dict:
            imports += ["from collections import OrderedDict", ""]
        imports.append("import torch")
        if needs_f:
            imports.append("import torch.nn.functional as F")
        imports.append("from torch import nn")
        parts = [head + "\n\n" + "\n".join(imports)]
        parts += [_HELPERS[name] for name in ("BufferList", "BufferDict") if name in self.helpers]
        parts += classes
        root = self.group_of[self.root.uid].name
        parts.append(f"def build() -> nn.Module:\n"
                     f"{_INDENT}\"\"\"A new {root}, with PyTorch's default initialisation.\"\"\"\n"
                     f"{_INDENT}return {root}()")
        return "\n\n\n".join(parts) + "\n"

    def _child_groups(self, mod: ModuleIR) -> Iterator[_Group]:
        for child in mod.children.values():
            if child.uid in self.group_of:
                yield self.group_of[child.uid]
            elif child.kind == "block":
                yield from self._child_groups(child)

    def header(self) -> str:
        from netspec import __version__

        analysis, ir = self.analysis, self.root
        root = analysis.program.root
        spec = Path(root).name if Path(root).is_absolute() else root
        args = ", ".join(f"{k}={_literal(v)}" for k, v in ir.block_args.items())
        lines = [f"# Generated by netspec {__version__} from {spec}.",
                 f"# Block: {ir.cls_name}({args})" if args else f"# Block: {ir.cls_name}",
                 f"# Input: {fmt_shape(ir.in_shape)}" if ir.in_shape is not None else None,
                 "#",
                 "# Standalone PyTorch: needs only torch. build() returns the model with",
                 "# PyTorch's default initialisation; load a state_dict saved from netspec's",
                 "# model for its weights."]
        if has_init_rules(ir):
            lines.append("# The spec's init rules are not reproduced here.")
        return "\n".join(line for line in lines if line is not None)

    def render_class(self, group: _Group) -> str:
        mod = group.instances[0]
        body = self.body(mod)
        scope = {uid: text for uid, (_, text) in self.scope(mod).items()}
        renderer = _Renderer(self, group, scope)
        params = [f"{n}: {a}" if a else n for n, a in group.params]
        params += [f"{name}: nn.Module" for _, name in body.externals]
        lines = [f"class {group.name}({body.base}):"]
        if params or len(body.stmts) > 1 or body.forward is None:
            lines.append(f"{_INDENT}def __init__({', '.join(['self'] + params)}):")
            for stmt in body.stmts:
                lines += renderer.statement(stmt, _INDENT * 2)
        if body.forward is not None:
            if len(lines) > 1:
                lines.append("")
            for indent, code, comment in self._forward_comments(group):
                lines += _wrap(f"{_INDENT}{indent}{code}" + (f"  # {comment}" if comment else ""))
        return "\n".join(lines)

    def _forward_comments(self, group: _Group) -> list[tuple[str, str, str]]:
        forwards = [self.body(m).forward for m in group.instances]
        names = {column: name for column, name in group.param_of.items()}
        first = group.instances[0]
        symbol_columns: dict[tuple, list[tuple[int, str]]] = {}
        for position, d in enumerate(first.input_dims or ()):
            name = _symbol_name(d)
            if name is not None and name in _symbols(first):
                column = tuple(_vkey(_symbols(m).get(name)) for m in group.instances)
                symbol_columns.setdefault(column, []).append((position, name))
        out = []
        for i, (indent, code, comment) in enumerate(forwards[0]):
            comments = [f[i][2] for f in forwards]
            if len(set(comments)) > 1:
                comment = _general_shape(comments, names, symbol_columns)
            out.append((indent, code, comment))
        return out


class _Renderer:
    """Writes the nodes of one class body, literals as values or as ``__init__`` arguments.

    With ``explode``, containers of modules and tensors end in a trailing comma, which makes
    the line wrapper put one item a line (black's "magic trailing comma").
    """

    def __init__(self, program: _Program, group: _Group, scope: dict[int, str]):
        self.p, self.group, self.scope = program, group, scope
        self.index = 0
        self.explode = False

    def statement(self, stmt: _Stmt, indent: str) -> list[str]:
        start = self.index
        text = indent + stmt.prefix + (self.render(stmt.node) if stmt.node is not None else "") \
            + stmt.suffix
        if len(text) > WIDTH and stmt.node is not None:
            self.index, self.explode = start, True
            text = indent + stmt.prefix + self.render(stmt.node) + stmt.suffix
            self.explode = False
        return _wrap(text)

    def _join(self, parts: list[str], magic: bool) -> str:
        return ", ".join(parts) + ("," if magic and len(parts) > 1 else "")

    def _magic(self, node: Any) -> bool:
        """Whether ``node`` takes the trailing comma (the outermost container that can)."""
        magic = self.explode and node.explode
        if magic:
            self.explode = False
        return magic

    def slot(self, slot: _Slot) -> str | None:
        j = self.index
        self.index += 1
        column = self.group.slot_column[j]
        if column is not None:
            return self.group.param_of[column]
        if slot.default is not _REQUIRED and _same(slot.value, slot.default):
            return None
        return _literal(slot.value)

    def render(self, node: Any) -> str:
        if isinstance(node, _Slot):
            text = self.slot(node)
            return text if text is not None else _literal(node.value)
        if isinstance(node, _Call):
            magic = self._magic(node)
            parts = []
            for a in node.args:
                text = self.slot(a) if isinstance(a, _Slot) else self.render(a)
                if text is not None:
                    parts.append(text)
            for name, value in node.kwargs:
                if isinstance(value, _Slot):
                    text = self.slot(value)
                    if text is None:
                        continue
                else:
                    text = self.render(value)
                parts.append(f"{name}={text}")
            self.explode |= magic
            return f"{node.func}({self._join(parts, magic)})"
        if isinstance(node, _Code):
            texts = [self.slot(s) for s in node.slots]
            return _tidy_expr(re.sub("\x00(\\d+)\x00", lambda m: texts[int(m.group(1))],
                                     node.text))
        if isinstance(node, _Child):
            child_group = self.p.group_of[node.mod.uid]
            args = [self.slot(_Slot(v, n)) for (n, _), v in
                    zip(child_group.params, child_group.values[node.mod.uid])]
            parts = [a if i < 2 else f"{n}={a}" for i, ((n, _), a) in
                     enumerate(zip(child_group.params, args))]
            body = self.p.body(node.mod)
            for uid, name in body.externals:
                parts.append(self.scope[uid] if len(parts) < 2 else f"{name}={self.scope[uid]}")
            return f"{child_group.name}({', '.join(parts)})"
        if isinstance(node, _Ref):
            return self.scope[node.uid]
        if isinstance(node, _List):
            magic = self._magic(node)
            inner = self._join([self.render(i) for i in node.items], magic)
            self.explode |= magic
            return f"{node.brackets[0]}{inner}{node.brackets[1]}"
        if isinstance(node, _Pairs):
            magic = self._magic(node)
            if node.style == "dict":
                items = [f"{k!r}: {self.render(v)}" for k, v in node.items]
                text = "{" + self._join(items, magic) + "}"
            else:
                items = [f"({k!r}, {self.render(v)})" for k, v in node.items]
                text = "[" + self._join(items, magic) + "]"
            self.explode |= magic
            return text
        raise AssertionError(node)


def _path(owner: str, parts: tuple[str, ...]) -> str:
    if all(_identifier(p) for p in parts):
        return ".".join((owner,) + tuple(parts))
    return f"{owner}.get_submodule({'.'.join(parts)!r})"


def _general_shape(comments: list[str], names: dict, symbols: dict) -> str:
    """One shape comment for instances whose shapes differ: ``[N, channels, ?, ?]``."""
    split = []
    for c in comments:
        if not (c.startswith("[") and c.endswith("]")):
            return ""
        split.append([d.strip() for d in c[1:-1].split(",")] if c != "[]" else [])
    if len({len(s) for s in split}) != 1:
        return ""
    dims = []
    for position, column_text in enumerate(zip(*split)):
        if len(set(column_text)) == 1:
            dims.append(column_text[0])
            continue
        try:
            column = tuple(_vkey(int(d)) for d in column_text)
        except ValueError:
            dims.append("?")
            continue
        candidates = symbols.get(column, [])
        symbol = next((n for p, n in candidates if p == position), None) or next(
            (n for _, n in candidates), None)
        dims.append(names.get(column) or symbol or "?")
    return "[" + ", ".join(dims) + "]"


# ---- const/param expressions -------------------------------------------------------------------

class _TensorEmitter(Emitter):
    """``codegen``'s emitter, with factories written as in hand-written code, their sizes
    and values as slots: ``torch.randn(in_units, units)``."""

    def __init__(self, mod: ModuleIR):
        super().__init__(mod, {})
        self.slots: list[_Slot] = []

    def slot(self, value: Any, hint: str) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return static_source(value, {})
        self.slots.append(_Slot(value, hint))
        return f"\x00{len(self.slots) - 1}\x00"

    def function_source(self, fn: FunctionDef, data: dict) -> str:
        if not fn.factory:
            return super().function_source(fn, data)
        name = data["target"]
        static = dict(data.get("static", data["kwargs"]))

        def sizes() -> list[str]:
            return [self.slot(d, "size") for d in static.get("size", ())]

        def size_tuple() -> str:
            items = sizes()
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"

        if name in ("rand", "randn", "zeros", "ones"):
            items = sizes()
            return f"torch.{name}({', '.join(items) if items else '()'})"
        if name == "full":
            value = static["value"]
            if isinstance(value, (int, bool)) and not isinstance(value, float) \
                    and abs(int(value)) <= 2 ** 53:
                value = float(value)
            if isinstance(value, float):
                return f"torch.full({size_tuple()}, {self.slot(value, 'value')})"
            return f"torch.full({size_tuple()}, {self.slot(value, 'value')}, " \
                   f"dtype={_DEFAULT_DTYPE})"
        if name == "randint":
            return (f"torch.randint({self.slot(static['low'], 'low')}, "
                    f"{self.slot(static['high'], 'high')}, {size_tuple()}, "
                    f"dtype={_DEFAULT_DTYPE})")
        if name == "eye":
            args = [self.slot(static["n"], "n")]
            if static.get("m") is not None:
                args.append(self.slot(static["m"], "m"))
            return f"torch.eye({', '.join(args)})"
        if name == "arange":
            start, end, step = static.get("start"), static.get("end"), static.get("step", 1)
            values = [start] if end is None else [start, end]
            if step != 1:
                values = [0, start, step] if end is None else [start, end, step]
            integral = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            hints = ["end"] if len(values) == 1 else ["start", "end", "step"]
            items = [self.slot(v, h) for v, h in zip(values, hints)]
            extra = f", dtype={_DEFAULT_DTYPE}" if integral else ""
            return f"torch.arange({', '.join(items)}{extra})"
        if name == "linspace":
            return (f"torch.linspace({self.slot(static['start'], 'start')}, "
                    f"{self.slot(static['end'], 'end')}, {self.slot(static['steps'], 'steps')})")
        kwargs = {k: static_source(v, {}) for k, v in static.items()}
        return fn.emit(dtype=_DEFAULT_DTYPE, **kwargs)


def _is_floating(frag: Fragment, mod: ModuleIR) -> bool:
    """Whether netspec's own maker gives a floating-point tensor (else it converts it)."""
    import torch

    namespace: dict[str, Any] = {"torch": torch, "F": torch.nn.functional}
    exec(tensor_source(frag, mod), namespace)
    try:
        value = namespace["make"]("meta", torch.get_default_dtype(), None)
    except (RuntimeError, NotImplementedError):     # an operation without a meta kernel
        value = namespace["make"]("cpu", torch.get_default_dtype(), None)
    return value.is_floating_point()


# ---- forward -----------------------------------------------------------------------------------

def _forward_lines(mod: ModuleIR) -> list[tuple[str, str, str]]:
    """The forward as (indent, code, shape comment) lines, redundant parentheses dropped."""
    out = []
    for line in forward_source(mod).splitlines():
        indent = line[:len(line) - len(line.lstrip())]
        code, comment = _split_comment(line.strip())
        out.append((indent, _tidy(code), comment))
    return out


def _split_comment(line: str) -> tuple[str, str]:
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line).readline):
            if tok.type == tokenize.COMMENT:
                return line[:tok.start[1]].rstrip(), tok.string[1:].strip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return line, ""


_STATEMENT = re.compile(r"^(return |while |[A-Za-z_][A-Za-z_0-9]* = )(.*?)(:?)$")


def _tidy(code: str) -> str:
    """``x = torch.relu(((x @ w) + 1))`` -> ``x = torch.relu(x @ w + 1)``: the same tree."""
    m = _STATEMENT.match(code)
    if not m:
        return code
    prefix, expr, colon = m.groups()
    if (prefix == "while ") != (colon == ":"):
        return code
    return prefix + _tidy_expr(expr) + colon


def _tidy_expr(expr: str) -> str:
    """``(x @ w) + 1`` -> ``x @ w + 1``, checked to parse to the same tree."""
    try:
        tree = ast.parse(expr, mode="eval")
        tidy = ast.unparse(tree)
        if ast.dump(ast.parse(tidy, mode="eval")) != ast.dump(tree):
            return expr
    except SyntaxError:
        return expr
    return tidy


# ---- line wrapping -----------------------------------------------------------------------------

_PREC = {"or": 1, "and": 2, "<": 4, ">": 4, "<=": 4, ">=": 4, "==": 4, "!=": 4, "|": 5, "^": 6,
         "&": 7, "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "//": 10, "%": 10, "@": 10,
         "**": 11}


@dataclass
class _Scan:
    tokens: list          # (type, string, start, end)
    commas: list          # token indices of commas at depth 0
    ops: list             # (token index, precedence) of binary operators at depth 0
    last_open: int | None  # token index of the bracket closed by the last token


def _scan(text: str) -> _Scan | None:
    try:
        raw = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    tokens = [(t.type, t.string, t.start[1], t.end[1]) for t in raw
              if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER,
                                tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT)]
    if any(t[0] == tokenize.ERRORTOKEN for t in tokens) or not tokens:
        return None
    depth, stack, commas, ops = 0, [], [], []
    last_open = None
    prev = None
    for i, (typ, s, _, _) in enumerate(tokens):
        if typ == tokenize.OP and s in "([{":
            stack.append(i)
            depth += 1
        elif typ == tokenize.OP and s in ")]}":
            if not stack:
                return None
            opened = stack.pop()
            depth -= 1
            if i == len(tokens) - 1 and depth == 0:
                last_open = opened
        elif depth == 0 and i > 0:
            if s == "," and typ == tokenize.OP:
                commas.append(i)
            elif (typ == tokenize.OP and s in _PREC) or (typ == tokenize.NAME and s in (
                    "and", "or")):
                unary = prev is not None and (
                    (prev[0] == tokenize.OP and prev[1] not in ")]}")
                    or (prev[0] == tokenize.NAME and keyword.iskeyword(prev[1])
                        and prev[1] not in ("None", "True", "False")))
                if not unary:
                    ops.append((i, _PREC[s]))
        prev = (typ, s)
    if stack:
        return None
    return _Scan(tokens, commas, ops, last_open)


def _inside(text: str, indent: str) -> list[str]:
    """Lines for ``text``, which stands inside brackets (so it may break anywhere).

    A trailing comma after two items or more asks for one item a line even when they would fit
    on one (black's "magic trailing comma")."""
    long = len(indent) + len(text) > WIDTH
    inner_magic = _has_magic_comma(text)
    if not long and not inner_magic and not text.endswith(","):
        return [indent + text]
    scan = _scan(text)
    if scan is None:
        return [indent + text]
    magic = text.endswith(",") and len(scan.commas) > 1
    if not long and not inner_magic and not magic:
        return [indent + text]
    if scan.commas:
        cuts = [scan.tokens[i][2] for i in scan.commas]
        pieces, start = [], 0
        for cut in cuts:
            pieces.append(text[start:cut].strip())
            start = cut + 1
        tail = text[start:].strip()
        if tail:
            pieces.append(tail)
        lines = []
        for piece in pieces:
            sub = _inside(piece, indent)
            sub[-1] += ","
            lines += sub
        return lines
    if scan.ops and long:
        low = min(p for _, p in scan.ops)
        cuts = [scan.tokens[i][2] for i, p in scan.ops if p == low]
        pieces, start = [], 0
        for cut in cuts:
            pieces.append(text[start:cut].strip())
            start = cut
        pieces.append(text[start:].strip())
        lines = []
        for piece in pieces:
            lines += _inside(piece, indent)
        return lines
    if scan.last_open is not None:
        return _bracket_split("", text, scan, indent, "")
    return [indent + text]


def _has_magic_comma(text: str) -> bool:
    """Whether a bracket of ``text`` holds two items or more and a trailing comma."""
    if not re.search(r",\s*[)\]}]", text):
        return False
    scan = _scan(text)
    if scan is None:
        return False
    commas: list[int] = []
    previous = None
    for typ, s, _, _ in scan.tokens:
        if typ == tokenize.OP and s in "([{":
            commas.append(0)
        elif typ == tokenize.OP and s in ")]}":
            if commas.pop() > 1 and previous == ",":
                return True
        elif typ == tokenize.OP and s == "," and commas:
            commas[-1] += 1
        previous = s
    return False


def _bracket_split(prefix: str, text: str, scan: _Scan, indent: str, suffix: str) -> list[str]:
    """``f(a, b)`` -> ``f(`` / the arguments, one level deeper / ``)``; hugs a lone argument
    that is itself a call: ``super().__init__(OrderedDict([`` ... ``]))``."""
    head, close = prefix + text[:scan.tokens[scan.last_open][3]], text[-1]
    inner = text[scan.tokens[scan.last_open][3]:-1].strip()
    while inner:
        sub = _scan(inner)
        if sub is None or sub.commas or sub.ops or sub.last_open is None:
            break
        cut = sub.tokens[sub.last_open][3]
        if len(indent) + len(head) + cut > WIDTH:
            break
        head, close, inner = head + inner[:cut], inner[-1] + close, inner[cut:-1].strip()
    if not inner:
        return [indent + head + close + suffix]
    return [indent + head] + _inside(inner, indent + _INDENT) + [indent + close + suffix]


def _wrap(line: str) -> list[str]:
    """A statement as lines no longer than ``WIDTH`` where brackets allow."""
    if len(line) <= WIDTH:
        return [line]
    indent = line[:len(line) - len(line.lstrip())]
    code, comment = _split_comment(line.strip())
    comment = f"  # {comment}" if comment else ""
    if len(indent) + len(code) <= WIDTH:
        return [indent + code + comment]
    prefix, expr, suffix = "", code, ""
    m = _STATEMENT.match(code)
    if m and (m.group(1) == "while ") == (m.group(3) == ":"):
        prefix, expr, suffix = m.groups()
    else:
        scan = _scan(code)
        if scan is not None:
            for i, (typ, s, start, end) in enumerate(scan.tokens):
                if typ == tokenize.OP and s == "=" and _depth_at(scan, i) == 0:
                    prefix, expr = code[:end] + " ", code[end:].strip()
                    break
    scan = _scan(expr)
    if scan is None:
        return [line]
    if not scan.commas and not scan.ops and scan.last_open is not None:
        expr, scan, trailer = _without_index(expr, scan)
        lines = _bracket_split(prefix, expr, scan, indent, trailer + suffix)
    else:
        lines = [indent + prefix + "("] + _inside(expr, indent + _INDENT) + \
            [indent + ")" + suffix]
    lines[-1] += comment
    return lines


def _without_index(expr: str, scan: _Scan) -> tuple[str, _Scan, str]:
    """``f(a, b)[0]`` -> ``f(a, b)`` and ``[0]``: a call's arguments are what a long line breaks,
    and the index closes it, ``)[0]``, as black writes it."""
    i = scan.last_open
    if i is None or i == 0 or scan.tokens[i][1] != "[" or scan.tokens[i - 1][1] != ")":
        return expr, scan, ""
    head = _scan(expr[:scan.tokens[i][2]])
    if head is None or head.last_open is None:
        return expr, scan, ""
    return expr[:scan.tokens[i][2]], head, expr[scan.tokens[i][2]:]


def _depth_at(scan: _Scan, index: int) -> int:
    depth = 0
    for typ, s, _, _ in scan.tokens[:index]:
        if typ == tokenize.OP and s in "([{":
            depth += 1
        elif typ == tokenize.OP and s in ")]}":
            depth -= 1
    return depth


_HELPERS = {
    "BufferList": '''class BufferList(nn.Module):
    """A list of constant tensors, saved with the model and never trained."""

    def __init__(self, tensors):
        super().__init__()
        for i, t in enumerate(tensors):
            self.register_buffer(str(i), t)

    def __getitem__(self, index):
        return self._buffers[str(index)]

    def __len__(self):
        return len(self._buffers)''',
    "BufferDict": '''class BufferDict(nn.Module):
    """A dict of constant tensors, saved with the model and never trained."""

    def __init__(self, tensors):
        super().__init__()
        for k, t in tensors.items():
            self.register_buffer(k, t)

    def __getitem__(self, key):
        return self._buffers[key]

    def __len__(self):
        return len(self._buffers)''',
}
