"""Stage 2, ``elaborate``: a ``Program`` + an entry block + its arguments -> a ``ModuleIR`` tree.

Names are resolved, block calls instantiated, ``repeat`` expanded, compile-time ``if`` decided
(or, when it depends on a dim symbol bound only by the input, kept as a ``branch`` node for
``infer_shapes``), ``let``/``tie``/``const``/``param`` recorded. Compile-time values are plain
Python values; dim symbols are ``Sym``s unique to their block instance ("C@12", shown as "C").
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

from netspec import ast
from netspec.args import Arg, bind, has_symbols, validate
from netspec.dims import Sym
from netspec.errors import Collector, Diagnostic, LimitError, SpecError, Span, did_you_mean
from netspec.functions import (FUNCTION_NAMES, FUNCTIONS, Positions, SliceValue,
                               lookup_function)
from netspec.gc_pause import gc_paused
from netspec.init import INITS, InitRuleIR
from netspec.ir import (NO_ITEMS, Fragment, ModuleIR, Ref, TensorDecl, TieIR, add_node,
                        layer_ir, new_graph)
from netspec.layers import LAYER_NAMES, lookup_layer
from netspec.limits import current as current_limits
from netspec.program import Program
from netspec.registry import BINARY_OPS, UNARY_OPS, FunctionDef, LayerDef, Param, TensorArg

RUNNING = "x"          # the name of the running value in expressions
BLOCK_TYPES: dict[str, type | tuple] = {"int": int, "float": (float, int), "bool": bool, "str": str,
                                         "list": tuple}


def _frozen(value: Any) -> Any:
    """A list argument from Python (``widths=[64, 128]``) as a spec's list literal: a tuple."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class Pred:
    """A compile-time condition on dim symbols that only ``infer_shapes`` can decide."""

    op: str
    left: Any
    right: Any

    def evaluate(self, subst: Callable[[Any], Any]) -> "bool | Pred":
        left = self.left.evaluate(subst) if isinstance(self.left, Pred) else subst(self.left)
        right = self.right.evaluate(subst) if isinstance(self.right, Pred) else subst(self.right)
        return static_binop(self.op, left, right)

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass
class _ModuleValue:
    """A module reference in an expression: a fresh instance, or a ``let`` by name."""

    ir: ModuleIR
    let_name: str | None = None


_STATIC_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def static_binop(op: str, left: Any, right: Any) -> Any:
    """Apply ``op`` to compile-time values; comparisons on symbols may give a ``Pred``."""
    if op in ("and", "or"):
        for a, b in ((left, right), (right, left)):
            if isinstance(a, bool):
                if op == "and":
                    return b if a else False
                return True if a else b
        return Pred(op, left, right)
    symbolic = isinstance(left, (Sym, Pred)) or isinstance(right, (Sym, Pred))
    if op in ("==", "!="):
        if symbolic:
            if isinstance(left, Sym) and isinstance(right, Sym) and left == right:
                return op == "=="
            return Pred(op, left, right)
        return (left == right) if op == "==" else (left != right)
    if symbolic and op in ("<", "<=", ">", ">="):
        return Pred(op, left, right)
    if op not in _STATIC_OPS and op != "/":
        raise TypeError(op)
    _check_size(op, left, right)
    if op == "/" and isinstance(left, (int, Sym)) and isinstance(right, (int, Sym)) and \
            not isinstance(left, bool) and not isinstance(right, bool) and right != 0:
        quotient = left // right         # sizes divide exactly, or the spec is wrong
        if quotient * right == left or isinstance(left, Sym) or isinstance(right, Sym):
            return quotient              # a symbolic size: checked once the input binds it
    return _STATIC_OPS[op](left, right)


_BIG = 2 ** 63


def _check_size(op: str, left: Any, right: Any) -> None:
    """Refuse compile-time arithmetic whose result would be absurdly large (``10 ** 10 ** 10``)."""
    if op == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
        if abs(left) > 1 and right > 0 and right * math.log2(abs(left)) > 63:
            raise TypeError("too large")
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (tuple, str)) and isinstance(n, int) and len(seq) * n > 10_000:
                raise TypeError("too large")


class _Elaborator:
    """Holds the program-wide state of one elaboration: errors, the instantiation stack."""

    def count(self, n: int, span: Span | None) -> None:
        """Account for ``n`` more nodes; refuse the spec once it passes ``max_nodes``."""
        self.nodes += n
        if self.nodes > self.limits.max_nodes:
            raise LimitError([Diagnostic(
                "limit error", f"this spec elaborates to more than {self.limits.max_nodes:,} "
                "nodes", span, hint="raise Limits.max_nodes if this is intended")],
                self.program.sources)

    def __init__(self, program: Program):
        self.program = program
        self.errors = Collector(program.sources)
        self.stack: list[str] = []
        self.instances = 0
        self.bindings: dict[tuple, tuple | bool] = {}   # literal layer call -> how it bound
        self.nodes = 0
        self.limits = current_limits()
        self.user_layers: dict[str, LayerDef] = {}
        self.instantiated: set[str] = set()             # names of the blocks elaborated
        # code not elaborated (an untaken branch, a body repeated 0 times) by id, with the
        # names known where it stands, for _unelaborated_names
        self.skipped: dict[int, tuple[Any, set[str]]] = {}
        if program.python:
            from netspec.user_layers import python_layers

            self.user_layers = python_layers(program)

    def layer(self, name: str) -> LayerDef | None:
        """A layer by name: the user's imported ones first, then torch's, then plugins'."""
        if name in self.user_layers:
            return self.user_layers[name]
        found = lookup_layer(name)
        if found is None and self.program.trusted and name[:1].isupper():
            from netspec.user_layers import entry_point_layer, entry_points

            if name in entry_points():
                found = self.user_layers[name] = entry_point_layer(name)
        return found

    def layer_names(self) -> list[str]:
        return list(self.user_layers) + list(LAYER_NAMES)

    def instantiate(self, block: ast.BlockDef, bound: dict[str, Arg], call_span: Span,
                    inherited: dict[str, Any] | None = None) -> ModuleIR:
        """Elaborate one instance of ``block`` with bound arguments."""
        if block.name in self.stack:
            cycle = " -> ".join(self.stack[self.stack.index(block.name):] + [block.name])
            raise SpecError([Diagnostic("name error", f"block '{block.name}' uses itself ({cycle})",
                                        call_span, hint="blocks cannot be recursive")],
                            self.program.sources)
        if len(self.stack) >= self.limits.max_depth:
            raise LimitError([Diagnostic("limit error", f"blocks nest deeper than "
                                         f"{self.limits.max_depth}", call_span)],
                             self.program.sources)
        self.instances += 1
        self.instantiated.add(block.name)
        self.count(1, call_span)
        mod = ModuleIR("block", block.name, block.span)
        statics: dict[str, Any] = {}
        diagnostics: list[Diagnostic] = []
        seen: set[str] = set()
        for p in block.params:
            if p.name in seen:
                diagnostics.append(Diagnostic("name error", f"argument '{p.name}' is declared "
                                              "twice", p.span))
            seen.add(p.name)
            if p.name in bound:
                value = bound[p.name].value
                span = bound[p.name].span
            elif p.default is not None:
                value = _BodyBuilder(self, mod, statics, {}).static(p.default)
                span = p.default.span
            else:
                continue
            expected = BLOCK_TYPES.get(p.type)
            if expected is None:
                diagnostics.append(Diagnostic("type error", f"unknown argument type '{p.type}'",
                                              p.type_span, hint="argument types are int, float, "
                                              "bool, str and list"))
                continue
            if p.type == "list":
                value = _frozen(value)
            ok = isinstance(value, expected) and not (p.type in ("int", "float") and
                                                       isinstance(value, bool))
            ok = ok or (p.type == "int" and isinstance(value, Sym))
            if not ok:
                diagnostics.append(Diagnostic(
                    "type error", f"{block.name}: argument '{p.name}' is {p.type}, "
                    f"but got {_show_value(value)}", span))
                continue
            statics[p.name] = float(value) if p.type == "float" else value
        if diagnostics:
            raise SpecError(diagnostics, self.program.sources)
        mod.block_args = dict(statics)
        self.stack.append(block.name)
        try:
            builder = _BodyBuilder(self, mod, statics, dict(inherited or {}))
            builder.block_body(block.body)
        finally:
            self.stack.pop()
        return mod


@gc_paused
def elaborate(program: Program, block: str | None = None, args: dict[str, Any] | None = None,
              ) -> ModuleIR:
    """Instantiate the entry block (the root file's last block, or ``block``) with ``args``."""
    elab = _Elaborator(program)
    _check_duplicate_blocks(program, elab.errors)
    elab.errors.check()
    entry = _entry_block(program, block)
    diagnostics: list[Diagnostic] = []
    params = tuple(Param(p.name, default=None if p.default is not None else _REQUIRED)
                   for p in entry.params)
    bound = bind(params, params, (), [(k, Arg(v, entry.name_span), entry.name_span)
                                      for k, v in (args or {}).items()],
                 callee=f"block {entry.name}", call_span=entry.name_span, diagnostics=diagnostics)
    if diagnostics:
        hint = "set it with --set name=value, or as a keyword argument of netspec.build"
        raise SpecError([replace(d, hint=hint) if "missing" in d.message else d
                         for d in diagnostics], program.sources)
    try:
        module = elab.instantiate(entry, bound, entry.name_span)
        file_rules: list[InitRuleIR] = []
        builder = _BodyBuilder(elab, ModuleIR("block", "init", entry.span), {}, {})
        for section in program.files[program.root].init:
            file_rules.extend(builder.init_rules(section))
        module.init_rules[:0] = file_rules
    except LimitError:
        raise
    except SpecError as exc:     # reported with any misspelt names in code not reached
        elab.errors.absorb(exc)
        failure: SpecError | None = exc
    else:
        failure = None
    # a checkpoint's spec loads as it did when saved, whatever this check has learnt since
    reported = {d.span for d in elab.errors.diagnostics}
    for d in _unelaborated_names(elab) if not program.embedded else ():
        if d.span not in reported:
            elab.errors.add(d)
    elab.errors.check()
    if failure is not None:
        raise failure
    return module


_REQUIRED = Param("_").default


def _entry_block(program: Program, name: str | None) -> ast.BlockDef:
    if name is None:
        blocks = program.root_blocks
        if not blocks:
            raise SpecError([Diagnostic("name error", f"{program.root} defines no block",
                                        program.files[program.root].span,
                                        hint="write `block Name { ... }`")], program.sources)
        return blocks[-1]
    if name not in program.blocks:
        raise SpecError([Diagnostic("name error", f"no block named '{name}'",
                                    hint=did_you_mean(name, program.blocks) or
                                    "blocks: " + ", ".join(program.blocks))], program.sources)
    return program.blocks[name]


def _check_duplicate_blocks(program: Program, errors: Collector) -> None:
    for tree in program.files.values():
        seen: dict[str, ast.BlockDef] = {}
        for b in tree.blocks:
            if b.name in seen:
                errors.add(Diagnostic("name error", f"block '{b.name}' is defined twice",
                                      b.name_span,
                                      notes=(f"first defined at {seen[b.name].name_span}",)))
            seen[b.name] = b


def _show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'the string "{value}"'
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show_value(v) for v in value) + "]"
    return str(value)


_LITERALS = frozenset({ast.Num, ast.Str, ast.Lit})
_SPAN_OF = operator.attrgetter("span")


def _literal_call(layer: LayerDef, args: tuple, keywords: tuple) -> tuple | None:
    """A key for a layer call whose arguments are all literals (``Linear(16)``), which binds
    the same way every time; None for any other call."""
    key: list = [id(layer)]
    for a in args:
        if a.__class__ not in _LITERALS:
            return None
        key += (a.value.__class__, a.value)      # the class keeps 1, 1.0 and true apart
    for k in keywords:
        if k.value.__class__ not in _LITERALS:
            return None
        key += (k.name, k.value.value.__class__, k.value.value)
    return tuple(key)


def _values_and_spans(bound: dict[str, Arg]) -> tuple[dict[str, Any], dict[str, Span]]:
    """A binding's values and the spans where they were written, as ``ModuleIR`` keeps them."""
    return {k: a.value for k, a in bound.items()}, {k: a.span for k, a in bound.items()}


def _binding_indices(bound: dict[str, Arg], args: tuple, keywords: tuple) -> tuple | None:
    """How a literal call bound: for each parameter, the index of the argument written for it,
    counting keywords after positional arguments. None where an argument came from elsewhere
    (a variadic's gathered tuple): such a call is bound afresh.

    A later call like it takes the first one's dict of values (a ``ModuleIR``'s arguments are
    replaced, never changed) and its own spans at these indices."""
    where = {id(a.span): i for i, a in enumerate(args)}
    where.update({id(k.span): len(args) + i for i, k in enumerate(keywords)})
    indices = []
    for name, arg in bound.items():
        index = where.get(id(arg.span))
        if index is None:
            return None
        indices.append((name, index))
    return tuple(indices)


class _BodyBuilder:
    """Elaborates the statements of one block (or nested sequence) body into its graph."""

    def __init__(self, elab: _Elaborator, mod: ModuleIR, statics: dict[str, Any],
                 lets: dict[str, ModuleIR]):
        self.elab = elab
        self.mod = mod
        self.statics = statics
        self.lets = lets                          # visible `let` modules (inherited + own)
        self.values: dict[str, str] = {}          # named tensor values -> node id
        self.input_name: str | None = None
        self.position = 0                         # next position among module steps
        self.ids = itertools.count()
        self.graph = new_graph()
        self.children = mod.children              # where new child modules go
        self.attr_nodes: dict[tuple, str] = {}
        self.failed: set[str] = set()             # names whose definition failed
        mod.graph = self.graph

    # ---- helpers --------------------------------------------------------------------------
    def skip(self, code: Any) -> None:
        """Record code that is not elaborated, for ``_unelaborated_names``."""
        if code is not None and id(code) not in self.elab.skipped:
            known = {*self.lets, *self.values, *self.statics, *self.mod.tensors, *self.failed}
            if self.input_name is not None:
                known.add(self.input_name)
            self.elab.skipped[id(code)] = (code, known)

    def fail(self, kind: str, message: str, span: Span | None, hint: str | None = None,
             notes: tuple[str, ...] = ()) -> Any:
        raise SpecError([Diagnostic(kind, message, span, hint, notes)], self.elab.program.sources)

    def node(self, base: str, op: str, *, target: Any = None, args: tuple = (),
             kwargs: dict | None = None, span: Span | None = None, **attrs: Any) -> str:
        """A new node ``{base}_{k}`` of this body's graph, its value named ``base``."""
        elab = self.elab
        elab.nodes += 1
        if elab.nodes > elab.limits.max_nodes:
            elab.count(0, span)                  # refuses the spec
        nid = f"{base}_{next(self.ids)}"
        add_node(self.graph, nid, {"op": op, "target": target, "args": args,
                                   "kwargs": kwargs or NO_ITEMS, "span": span, "name": base,
                                   **attrs})
        return nid

    # ---- bodies ---------------------------------------------------------------------------
    def block_body(self, body: ast.Body) -> None:
        """A block's own body: an optional ``input`` declaration, then statements."""
        stmts = list(body.stmts)
        decl = None
        if stmts and isinstance(stmts[0], ast.InputDecl):
            decl = stmts.pop(0)
            self.declare_input(decl)
        entry = self.node(self.input_name or RUNNING, "placeholder", span=decl.span if decl
                          else body.span)
        if self.input_name:
            self.values[self.input_name] = entry
        result = self.statements(stmts, entry)
        self.node("output", "output", args=(Ref(result),), span=body.span)

    def nested_body(self, body: ast.Body, span: Span, label: str | None = None) -> ModuleIR:
        """A ``{ ... }`` step: a module of its own, seeing the enclosing compile-time names."""
        mod = ModuleIR("block", "Sequential", span)
        builder = _BodyBuilder(self.elab, mod, dict(self.statics), dict(self.lets))
        entry = builder.node(RUNNING, "placeholder", span=span)
        result = builder.statements(list(body.stmts), entry)
        builder.node("output", "output", args=(Ref(result),), span=body.span)
        mod.label = label
        return mod

    def declare_input(self, decl: ast.InputDecl) -> None:
        dims = []
        for d in decl.dims:
            if isinstance(d, ast.Name) and d.id not in self.statics:
                sym = Sym.symbol(f"{d.id}@{self.mod.uid}")
                self.statics[d.id] = sym
                dims.append(sym)
            else:
                value = self.static(d)
                if not isinstance(value, (int, Sym)) or isinstance(value, bool) or \
                        (isinstance(value, int) and value < 0):
                    self.fail("type error", f"a dimension must be a size or a symbol, "
                              f"not {_show_value(value)}", d.span)
                dims.append(value)
        self.input_name = decl.name
        self.mod.input_dims = tuple(dims)
        self.mod.input_span = decl.span

    def statements(self, stmts: list[ast.Stmt], running: str) -> str:
        """Elaborate statements in order; returns the node holding the body's result."""
        returned: str | None = None
        for stmt in stmts:
            if returned is not None:
                self.elab.errors.add(Diagnostic("syntax error", "statement after return",
                                                stmt.span, hint="return must come last"))
                break
            try:
                if stmt.__class__ is ast.Step:          # the usual statement
                    running = self.chain(stmt.chain, running)
                elif isinstance(stmt, ast.Return):
                    returned = self.chain(stmt.value, running)
                else:
                    running = self.statement(stmt, running)
            except LimitError:
                raise
            except SpecError as exc:
                self.elab.errors.absorb(exc)
                if isinstance(stmt, (ast.Assign, ast.Let, ast.ConstDecl, ast.ParamDecl)):
                    self.failed.add(stmt.name)   # its uses would only repeat the error
        return returned if returned is not None else running

    def statement(self, stmt: ast.Stmt, running: str) -> str:
        """Any statement but a step or a return; the running value after it."""
        if isinstance(stmt, ast.Assign):
            if stmt.name not in self.values and stmt.name != RUNNING:
                self.check_new_name(stmt.name, stmt.name_span)
            value = self.chain(stmt.value, running)
            if self.graph.nodes[value]["op"] != "placeholder":   # an alias keeps the input's name
                self.graph.nodes[value]["name"] = stmt.name
            if stmt.name == RUNNING:        # `x = ...` sets the running value
                return value
            self.values[stmt.name] = value
            return running
        if isinstance(stmt, ast.Let):
            self.check_new_name(stmt.name, stmt.name_span)
            value = self.link_module(stmt.value)
            if value is None:
                self.fail("type error", f"let '{stmt.name}' must be a layer, block or sequence",
                          stmt.value.span, hint="use `name = ...` to name a tensor value")
            if value.let_name is not None:
                self.fail("type error", "let of a let: use the first name", stmt.value.span)
            self.children[stmt.name] = value.ir
            self.mod.shared.add(stmt.name)
            self.lets[stmt.name] = value.ir
            return running
        if isinstance(stmt, (ast.ConstDecl, ast.ParamDecl)):
            self.tensor_decl(stmt)
            return running
        if isinstance(stmt, ast.Tie):
            self.mod.ties.append(TieIR(stmt.target.parts, stmt.source.parts, stmt.span,
                                       stmt.target.span, stmt.source.span))
            return running
        if isinstance(stmt, ast.Expect):
            dims = tuple(self.static(d) for d in stmt.dims)
            self.mod.expects.append((running, dims, stmt.span))
            return running
        if isinstance(stmt, ast.InitSection):
            self.mod.init_rules.extend(self.init_rules(stmt))
            return running
        if isinstance(stmt, ast.InputDecl):
            self.fail("syntax error", "input must be the first statement of a block", stmt.span)
        raise AssertionError(f"unhandled statement {stmt!r}")

    def check_new_name(self, name: str, span: Span) -> None:
        taken = (name in self.values or name in self.lets or name in self.mod.tensors
                 or name in self.statics or name == self.input_name)
        if taken:
            self.fail("name error", f"'{name}' is already defined", span,
                      hint="choose another name")

    # ---- chains and links -----------------------------------------------------------------
    def chain(self, chain: ast.Chain, running: str) -> str:
        value = running
        for link in chain.links:
            value = self.link(link, value)
        return value

    def link(self, link: ast.Link, value: str) -> str:
        node = link.node
        structured = _STRUCTURED_STEPS.get(node.__class__)
        if structured is not None:
            return structured(self, link, value)
        if node.__class__ is ast.Call and link.label is None and node.func.__class__ is ast.Name \
                and node.func.id in FUNCTIONS and node.func.id not in self.lets \
                and node.func.id not in self.elab.program.blocks:
            return self.call(node, value, False).node      # a function step: relu(x)
        if node.__class__ is ast.Call and node.func.__class__ is ast.Name and \
                node.func.id in self.lets and (node.args or node.keywords):
            if link.label is not None:
                self.fail("syntax error", f"'{node.func.id}' is a let module and keeps its "
                          f"name", link.label_span, hint="write the call without a label")
            return self.let_call(node, value)             # attn(q, k, v)
        module = self.link_module(link)
        if module is not None:
            return self.apply(module, value, link)
        if link.label is not None:
            self.fail("syntax error", "only layers, blocks and sequences can be named",
                      link.label_span, hint=f"to name a value write `{link.label} = ...`")
        result = self.expr(node, value)
        if not isinstance(result, Ref):
            self.fail("type error", f"a step must produce a tensor, not {_show_value(result)}",
                      node.span)
        return result.node

    def add_step(self, link: ast.Link, value: str) -> str:
        node = link.node
        outs = self.branches(node.branches, value)
        spans = [s.span for s in node.branches.stmts]
        total = outs[0]
        for other, span in zip(outs[1:], spans[1:]):
            total = self.call_function(lookup_function("add"), (Ref(total), Ref(other)), {},
                                       node.span, operand_spans=(spans[0], span))
        return total

    def link_module(self, link: ast.Link) -> _ModuleValue | None:
        """The module a link denotes, or None when it is a tensor expression."""
        node = link.node
        if isinstance(node, ast.Seq):
            return _ModuleValue(self.nested_body(node.body, node.span, link.label))
        if isinstance(node, ast.Name) and node.id != RUNNING and node.id not in self.values \
                and node.id not in self.mod.tensors and node.id not in self.statics \
                and node.id != self.input_name:
            return self.module_ref(node.id, (), (), node.span, node.span)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name in self.lets or name in self.elab.program.blocks:
                return self.module_ref(name, node.args, node.keywords, node.span, node.func.span)
            if lookup_function(name) is not None:
                return None
            layer = self.elab.layer(name)
            if layer is not None:          # the usual step: a layer call
                return _ModuleValue(self.layer_instance(layer, node.args, node.keywords,
                                                        node.span))
            if name[:1].isupper():         # an unknown module: a located error
                return self.module_ref(name, node.args, node.keywords, node.span, node.func.span)
        return None

    def is_module_name(self, name: str) -> bool:
        return name in self.lets or name in self.elab.program.blocks or (
            lookup_function(name) is None and self.elab.layer(name) is not None)

    def module_ref(self, name: str, args: tuple, keywords: tuple, span: Span,
                   name_span: Span) -> _ModuleValue:
        if name in self.lets:
            if args or keywords:
                self.fail("type error", f"'{name}' is a shared module; use it without arguments",
                          span, hint=f"write `{name}`")
            return _ModuleValue(self.lets[name], name)
        block = self.elab.program.blocks.get(name)
        if block is not None:
            bound = self.bind_call(name, tuple(Param(p.name, default=None if p.default else
                                                     _REQUIRED) for p in block.params),
                                   None, args, keywords, span)
            return _ModuleValue(self.elab.instantiate(block, bound, span))
        layer = self.elab.layer(name)
        if layer is None and name in self.failed:
            raise SpecError([], self.elab.program.sources)   # already reported where defined
        if layer is None and lookup_function(name) is not None:
            self.fail("type error", f"'{name}' is a function, not a layer", name_span,
                      hint=f"call it on the running value: {name}(x)")
        if layer is None:
            hint = _unknown_module_hint(name, self.elab.layer_names() +
                                        list(self.elab.program.blocks) + list(self.lets) +
                                        list(FUNCTION_NAMES) + list(self.values) +
                                        list(self.mod.tensors))
            if name[:1].isupper():
                self.fail("name error", f"unknown layer or block '{name}'", name_span, hint=hint)
            self.fail("name error", f"unknown name '{name}'", name_span,   # return y, x -> h
                      hint=hint or f"define it before its use: `{name} = ...` names a value, "
                                   f"`let {name} = ...` a module")
        return _ModuleValue(self.layer_instance(layer, args, keywords, span))

    def layer_instance(self, layer: LayerDef, args: tuple, keywords: tuple,
                       span: Span) -> ModuleIR:
        key = _literal_call(layer, args, keywords)
        recipe = self.elab.bindings.get(key) if key is not None else None
        if recipe.__class__ is tuple:    # the same literal call again: bound as before
            values, indices = recipe
            n = len(args)
            return layer_ir(layer, span, values, {k: (args[i] if i < n else keywords[i - n]).span
                                                  for k, i in indices})
        if layer.name in _STACKS:
            self.fail("type error", f"{layer.name} takes a module to copy, which netspec writes "
                      f"as a repeat", span, hint=_STACKS[layer.name])
        first, required = layer.torch_order_from
        if len(args) > first:
            given = {k.name for k in keywords}
            if all(i < len(args) or name in given for i, name in required):
                return self.two_readings(layer, args, keywords, span)
        bound = self.bind_call(layer.name, layer.params, layer.positional, args, keywords, span)
        values, spans = _values_and_spans(bound)
        if key is not None:
            indices = _binding_indices(bound, args, keywords)
            self.elab.bindings[key] = (values, indices) if indices is not None else False
        return layer_ir(layer, span, values, spans)

    def two_readings(self, layer: LayerDef, args: tuple, keywords: tuple, span: Span) -> ModuleIR:
        """A call whose positional arguments reach the input size in torch's order: ``LSTM(64,
        2)`` is ``input_size=64, hidden_size=2`` there, and ``hidden_size=64, num_layers=2`` in
        netspec's, without the size. Only the input can tell; infer_shapes decides."""
        lazy_error = None
        try:
            lazy = self.bind_call(layer.name, layer.params, layer.positional, args, keywords, span)
        except SpecError as exc:
            lazy, lazy_error = None, exc      # Linear(784, 256, true): only torch's order binds
        try:
            as_torch = self.bind_call(layer.name, layer.params, layer.torch_positional, args,
                                      keywords, span)
        except SpecError:
            if lazy_error is not None:
                raise lazy_error from None
            as_torch = None
        if lazy_error is not None:          # torch's order binds: it must also be valid
            assert as_torch is not None
            invalid: list[Diagnostic] = []
            validate(layer.params, as_torch, callee=layer.name, diagnostics=invalid)
            if invalid:
                raise lazy_error from None
        chosen = lazy if lazy is not None else as_torch
        mod = layer_ir(layer, span, *_values_and_spans(chosen))
        if lazy is not None and as_torch is not None:
            mod.torch_reading = (*_values_and_spans(as_torch), len(args))
        return mod

    def bind_call(self, callee: str, params: tuple[Param, ...],
                  positional: tuple[Param, ...] | None, args: tuple, keywords: tuple,
                  span: Span) -> dict[str, Arg]:
        diagnostics: list[Diagnostic] = []
        values = [Arg(self.static(a), a.span) for a in args]
        kws = [(k.name, Arg(self.static(k.value), k.span), k.span.head(len(k.name)))
               for k in keywords]
        bound = bind(params, params if positional is None else positional, values, kws,
                     callee=callee, call_span=span, diagnostics=diagnostics)
        if diagnostics:
            raise SpecError(diagnostics, self.elab.program.sources)
        return bound

    def let_call(self, call: ast.Call, value: str | None) -> str:
        """``attn(q, k, v, attn_mask=m)``: a ``let`` module applied to tensors of the call's
        own rather than to the running value, with ``forward`` arguments of its layer."""
        name = call.func.id
        shared = self.lets[name]
        tensors = []
        for a in call.args:
            v = self.expr(a, value)
            if v.__class__ is not Ref:
                self.fail("type error", f"{name}() takes tensors, not {_show_value(v)}", a.span)
            tensors.append(v)
        if not tensors:
            self.fail("argument error", f"{name}() needs the tensors to apply it to", call.span,
                      hint=f"write `{name}(x)`, or use `{name}` as a step")
        if shared.layer is None and (len(tensors) > 1 or call.keywords):
            self.fail("type error", f"'{name}' is a block, which takes one tensor", call.span,
                      hint=f"apply it to one tensor: `{name}(x)`")
        params = shared.layer.forward_params if shared.layer is not None else ()
        kwargs: dict[str, Any] = {}
        statics: dict[str, Arg] = {}
        for kw in call.keywords:
            param = next((p for p in params if p.name == kw.name), None)
            if param is None:
                hint = (f"its forward arguments are: {', '.join(p.name for p in params)}"
                        if params else f"{shared.cls_name} takes no forward arguments")
                self.fail("argument error", f"{name}() has no forward argument '{kw.name}'",
                          kw.span, hint=hint)
            v = self.expr(kw.value, value)
            if v.__class__ is Ref and param.type in (TensorArg, Any):
                kwargs[kw.name] = v            # attn_mask=m: a tensor
            elif param.type is TensorArg:
                self.fail("type error", f"{kw.name} takes a tensor, not {_show_value(v)}",
                          kw.value.span)
            elif v.__class__ is Ref:
                self.fail("type error", f"{kw.name} takes a value known at compile time, not "
                          f"a tensor", kw.value.span)
            else:
                statics[kw.name] = Arg(v, kw.span)
        if statics:
            diagnostics: list[Diagnostic] = []
            checked = validate([p for p in params if p.name in statics], statics,
                               callee=f"{name}()", diagnostics=diagnostics)
            if diagnostics:
                raise SpecError(diagnostics, self.elab.program.sources)
            kwargs.update((k, checked[k]) for k in statics)
        arg_spans = {kw.name: kw.span for kw in call.keywords}
        target, position = self.place(_ModuleValue(shared, name), None, call.span)
        return self.node(name, "call_module", target=target, args=tuple(tensors),
                         kwargs=kwargs, span=call.span, position=position, label=None,
                         operand_spans=tuple(a.span for a in call.args), arg_spans=arg_spans)

    def apply(self, module: _ModuleValue, value: str, link: ast.Link) -> str:
        """A ``call_module`` node: ``module`` applied to the running ``value``."""
        target, position = self.place(module, link.label, link.label_span or link.span)
        return self.node(RUNNING, "call_module", target=target, args=(Ref(value),),
                         span=link.span, position=position, label=link.label)

    def place(self, module: _ModuleValue, label: str | None, span: Span) -> tuple[str, int]:
        """The child name of a module step, and its position among the block's module steps
        (an unnamed step's name)."""
        position = self.position
        self.position += 1
        if module.let_name is not None:
            target = module.let_name
            if target not in self.children:       # an inherited let used in a nested body
                self.children[target] = module.ir
                self.mod.shared.add(target)
            return target, position
        target = label if label is not None else str(position)
        if target in self.children:
            self.fail("name error", f"'{target}' is already a module of this block", span,
                      hint="choose another name")
        self.children[target] = module.ir
        return target, position

    # ---- structured steps -----------------------------------------------------------------
    def branches(self, body: ast.Body, value: str) -> list[str]:
        outs = []
        for stmt in body.stmts:
            if not isinstance(stmt, ast.Step):
                self.fail("syntax error", "each line of concat or add is a branch: a layer, "
                          "block, sequence or chain", stmt.span)
            outs.append(self.chain(stmt.chain, value))
        if not outs:
            self.fail("syntax error", "concat and add need at least one branch", body.span)
        return outs

    def concat(self, node: ast.Concat, value: str) -> str:
        fn = lookup_function("cat")
        static = tuple(p for p in fn.params if not p.name.startswith("*"))
        bound = self.bind_call("concat", static, static, node.args, node.keywords, node.span)
        if "dim" not in bound:
            bound["dim"] = Arg(1, node.span)
        outs = self.branches(node.branches, value)
        diagnostics: list[Diagnostic] = []
        kwargs = validate(static, bound, callee="concat", diagnostics=diagnostics)
        if diagnostics:
            raise SpecError(diagnostics, self.elab.program.sources)
        return self.call_function(fn, tuple(Ref(o) for o in outs), kwargs, node.span,
                                  operand_spans=tuple(s.span for s in node.branches.stmts),
                                  arg_spans={k: a.span for k, a in bound.items()})

    def repeat(self, node: ast.Repeat, value: str, label: str | None) -> str:
        count = self.static(node.count)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            self.fail("type error", f"repeat needs a non-negative integer count, not "
                      f"{_show_value(count)}", node.count.span)
        if count > self.elab.limits.max_nodes:
            raise LimitError([Diagnostic("limit error", f"repeat {count:,} exceeds the limit of "
                                         f"{self.elab.limits.max_nodes:,} nodes",
                                         node.count.span)], self.elab.program.sources)
        if count == 0:
            self.skip(node.body)
        saved = self.statics.get(node.index, _MISSING)
        try:
            before = self.elab.nodes
            for i in range(count):
                if i == 1:   # one copy's cost predicts the rest: refuse before expanding them
                    self.elab.count((count - 1) * (self.elab.nodes - before), node.count.span)
                    self.elab.nodes -= (count - 1) * (self.elab.nodes - before)
                self.elab.count(1, node.count.span)   # even a copy that adds no node costs
                self.statics[node.index] = i
                if node.pattern is None:
                    value = self.statements(list(node.body.stmts), value)
                    continue
                name = _format_pattern(node.pattern, node.index, i, node.span, self)
                copy = self.repeat_copy(node.body, node.span)
                value = self.apply(_ModuleValue(copy), value,
                                   ast.Link(name, node.span, node.body, node.span))
        finally:
            if saved is _MISSING:
                self.statics.pop(node.index, None)
            else:
                self.statics[node.index] = saved
        return value

    def repeat_copy(self, body: ast.Body, span: Span) -> ModuleIR:
        stmts = body.stmts
        if len(stmts) == 1 and isinstance(stmts[0], ast.Step) and len(stmts[0].chain.links) == 1:
            module = self.link_module(stmts[0].chain.links[0])
            if module is not None and module.let_name is None:
                return module.ir
        return self.nested_body(body, span)

    def if_step(self, node: ast.If, value: str) -> str:
        cond = self.static(node.cond)
        if isinstance(cond, bool):
            chosen = node.then if cond else node.orelse
            self.skip(node.orelse if cond else node.then)
            if chosen is None:
                return value
            if isinstance(chosen, ast.If):
                return self.if_step(chosen, value)
            return self.statements(list(chosen.stmts), value)
        if not isinstance(cond, Pred):
            self.fail("type error", f"an if condition must be true or false, not "
                      f"{_show_value(cond)}", node.cond.span)
        start = self.position
        then = self.fragment(node.then.stmts, node.then.span, own_children=True)
        after_then, self.position = self.position, start
        orelse = node.orelse
        if isinstance(orelse, ast.If):
            orelse = ast.Body((ast.Step(ast.Chain((ast.Link(None, None, orelse, orelse.span),),
                                                  orelse.span), orelse.span),), orelse.span)
        other = self.fragment(orelse.stmts if orelse else (), node.span, own_children=True)
        self.position = max(self.position, after_then)
        return self.node(RUNNING, "branch", args=(Ref(value),), span=node.cond.span, cond=cond,
                         then=then, orelse=other)

    def while_step(self, node: ast.While, value: str) -> str:
        cond = self.fragment((ast.Step(ast.Chain((ast.Link(None, None, node.cond, node.cond.span),),
                                                 node.cond.span), node.cond.span),),
                             node.cond.span, own_children=False)
        body = self.fragment(node.body.stmts, node.body.span, own_children=False)
        return self.node(RUNNING, "loop", args=(Ref(value),), span=node.span, cond=cond,
                         body=body)

    def fragment(self, stmts: tuple, span: Span, *, own_children: bool) -> Fragment:
        """Elaborate statements into a separate graph whose placeholder is the running value."""
        saved = (self.graph, self.values, self.children)
        frag = Fragment(new_graph(), {} if own_children else self.children)
        self.graph, self.values = frag.graph, dict(self.values)
        self.children = frag.children
        try:
            entry = self.node(RUNNING, "placeholder", span=span)
            result = self.statements(list(stmts), entry)
            self.node("output", "output", args=(Ref(result),), span=span)
        finally:
            self.graph, self.values, self.children = saved
        return frag

    # ---- init policies --------------------------------------------------------------------
    def init_rules(self, section: ast.InitSection) -> list[InitRuleIR]:
        rules = []
        for rule in section.rules:
            try:
                rules.append(self.init_rule(rule))
            except LimitError:
                raise
            except SpecError as exc:
                self.elab.errors.absorb(exc)
        return rules

    def init_rule(self, rule: ast.InitRule) -> InitRuleIR:
        layer_type = param = pattern = None
        selector = rule.selector
        if isinstance(selector, ast.Str):
            pattern = selector.value
            if rule.within is not None:
                self.fail("syntax error", "`in` follows a layer selector such as Linear.weight",
                          rule.within.span)
        else:
            parts = selector.parts
            if parts[0][:1].isupper() and len(parts) <= 2:
                if self.elab.layer(parts[0]) is None and parts[0] not in self.elab.program.blocks:
                    self.fail("name error", f"unknown layer '{parts[0]}' in init rule",
                              selector.span, hint=did_you_mean(parts[0], self.elab.layer_names() +
                                                               list(self.elab.program.blocks)))
                layer_type = parts[0]
                param = parts[1] if len(parts) == 2 else None
            else:
                pattern = ".".join(parts)
            if rule.within is not None:
                pattern = rule.within.value
        steps: list[tuple] = []
        for link in rule.init.links:
            node = link.node
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in INITS:
                fn = INITS[node.func.id]
                bound = self.bind_call(f"{fn.name}()", fn.params, fn.params, node.args,
                                       node.keywords, node.span)
                diagnostics: list[Diagnostic] = []
                kwargs = validate(fn.params, bound, callee=f"{fn.name}()",
                                  diagnostics=diagnostics)
                if diagnostics:
                    raise SpecError(diagnostics, self.elab.program.sources)
                if fn.name == "default" and steps:
                    self.fail("init error", "default() must be the first step of a rule",
                              node.span, hint="it re-runs the layer's own initialisation")
                problem = fn.check(kwargs) if fn.check is not None else None
                if problem is not None:
                    self.fail("argument error", problem[0], node.span, hint=problem[1])
                steps.append(("init", fn.name, kwargs))
                continue
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    lookup_function(node.func.id) is None:
                self.fail("name error", f"unknown initialiser '{node.func.id}'", node.func.span,
                          hint=did_you_mean(node.func.id, INITS) or
                          "initialisers: " + ", ".join(INITS))
            step = ast.Step(ast.Chain((link,), link.span), link.span)
            saved = dict(self.children)
            frag = self.fragment((step,), link.span, own_children=False)
            if len(self.children) != len(saved) or any(
                    d["op"] in ("call_module", "loop", "branch", "get_attr")
                    for _, d in frag.graph.nodes(data=True)):
                self.children.clear()
                self.children.update(saved)
                self.fail("type error", "an init step is an initialiser or an expression over "
                          "x, the tensor being initialised", link.span)
            steps.append(("expr", frag))
        text = _source_text(self.elab.program.sources, rule.span)
        return InitRuleIR(layer_type, param, pattern, steps, text, rule.span)

    # ---- tensors --------------------------------------------------------------------------
    def tensor_decl(self, stmt: ast.ConstDecl | ast.ParamDecl) -> None:
        self.check_new_name(stmt.name, stmt.name_span)
        trainable = isinstance(stmt, ast.ParamDecl)
        value = stmt.value
        if isinstance(value, ast.ListLit):
            items = {str(i): v for i, v in enumerate(value.items)}
            container = "list"
        elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and \
                value.func.id == "dict":
            if value.args:
                self.fail("syntax error", "dict(...) takes only name=tensor entries",
                          value.args[0].span)
            items = {k.name: k.value for k in value.keywords}
            container = "dict"
        else:
            items, container = {"": value}, "tensor"
        frags = {key: self.tensor_fragment(expr) for key, expr in items.items()}
        self.mod.tensors[stmt.name] = TensorDecl(stmt.name, trainable, frags, container,
                                                 stmt.span)

    def tensor_fragment(self, expr: ast.Expr) -> Fragment:
        saved = (self.graph, self.values)
        frag = Fragment(new_graph())
        self.graph, self.values = frag.graph, {}
        try:
            entry = self.node("unused", "placeholder", span=expr.span)
            result = self.expr(expr, None, factories=True)
            if not isinstance(result, Ref):
                self.fail("type error", f"a const or param needs a tensor, not "
                          f"{_show_value(result)}", expr.span, hint="e.g. rand(20, 20)")
            self.node("output", "output", args=(result,), span=expr.span)
        finally:
            self.graph, self.values = saved
        del entry
        return frag

    # ---- expressions ----------------------------------------------------------------------
    def static(self, expr: ast.Expr) -> Any:
        """Evaluate a compile-time expression."""
        value = self.expr(expr, None)
        if isinstance(value, Ref):
            self.fail("type error", "a tensor cannot be used here: this value must be known "
                      "at compile time", expr.span)
        return value

    def expr(self, expr: ast.Expr, running: str | None, factories: bool = False) -> Any:
        """Evaluate an expression: a compile-time value, or a ``Ref`` to a new graph node."""
        if expr.__class__ in _LITERALS:
            return expr.value
        if expr.__class__ is ast.Name:
            return self.name(expr, running)
        if expr.__class__ is ast.Call:
            return self.call(expr, running, factories)
        if isinstance(expr, ast.ListLit):
            items = tuple(self.expr(i, running, factories) for i in expr.items)
            if any(isinstance(i, Ref) for i in items):
                inner = ", ".join(_source_text(self.elab.program.sources, i.span)
                                  for i in expr.items)
                self.fail("type error", "a list of tensors is only allowed as a const or param",
                          expr.span, hint=f"cat and stack take the tensors as arguments: "
                                          f"cat({inner}, dim=1), stack({inner})")
            return items
        if isinstance(expr, ast.BinOp):
            left = self.expr(expr.left, running, factories)
            right = self.expr(expr.right, running, factories)
            if isinstance(left, Ref) or isinstance(right, Ref):
                for side, operand in ((left, expr.left), (right, expr.right)):
                    if not isinstance(side, (Ref, int, float)) or isinstance(side, bool):
                        self.fail("type error", f"'{expr.op}' needs tensors or numbers, "
                                  f"not {_show_value(side)}", operand.span)
                fn = lookup_function(BINARY_OPS[expr.op])
                return Ref(self.call_function(fn, (left, right), {}, expr.span,
                                              operand_spans=(expr.left.span, expr.right.span)))
            return self.static_op(expr.op, left, right, expr)
        if isinstance(expr, ast.UnOp):
            operand = self.expr(expr.operand, running, factories)
            if isinstance(operand, Ref):
                fn = lookup_function(UNARY_OPS[expr.op])
                return Ref(self.call_function(fn, (operand,), {}, expr.span))
            return self.static_op("-", 0, operand, expr)
        if isinstance(expr, ast.BoolOp):
            left = self.static(expr.left)
            right = self.static(expr.right)
            return static_binop(expr.op, left, right)
        if isinstance(expr, ast.Not):
            value = self.static(expr.operand)
            if isinstance(value, Pred):
                return Pred("==", value, False)
            return not value
        if isinstance(expr, ast.Ternary):
            cond = self.static(expr.cond)
            if not isinstance(cond, bool):
                self.fail("type error", "this condition must be known at compile time",
                          expr.cond.span)
            return self.expr(expr.then if cond else expr.orelse, running, factories)
        if isinstance(expr, ast.Call):
            return self.call(expr, running, factories)
        if isinstance(expr, ast.Index):
            return self.index(expr, running, factories)
        if isinstance(expr, ast.Attr):
            hint = "parameters are reached by path only in `tie`"
            if expr.name in ("shape", "size") and expr.value.__class__ is ast.Name:
                hint = (f"name the sizes where the input is declared: `input {expr.value.id}: "
                        f"[N, C]` makes C the size of dim 1")
            self.fail("syntax error", "attribute access is not supported in expressions",
                      expr.span, hint=hint)
        raise AssertionError(f"unhandled expression {expr!r}")

    def static_op(self, op: str, left: Any, right: Any, expr: ast.Expr) -> Any:
        try:
            result = static_binop(op, left, right)
        except ZeroDivisionError:
            self.fail("value error", "division by zero", expr.span)
        except (TypeError, ValueError, OverflowError) as exc:
            if str(exc) == "too large":
                self.fail("limit error", "the value of this expression would be too large",
                          expr.span)
            self.fail("type error", f"cannot apply '{op}' to {_show_value(left)} and "
                      f"{_show_value(right)}", expr.span)
        if isinstance(result, int) and not isinstance(result, bool) and abs(result) >= _BIG:
            self.fail("limit error", "the value of this expression would be too large",
                      expr.span)
        return result

    def name(self, expr: ast.Name, running: str | None) -> Any:
        name = expr.id
        if name == RUNNING and running is not None:
            return Ref(running)
        if name in self.values:
            return Ref(self.values[name])
        if name in self.statics:
            return self.statics[name]
        if name in self.mod.tensors:
            decl = self.mod.tensors[name]
            if decl.container != "tensor":
                first = next(iter(decl.items), "0")
                key = first if decl.container == "list" else f'"{first}"'
                self.fail("type error", f"'{name}' is a {decl.container} of tensors", expr.span,
                          hint=f"pick one: {name}[{key}]")
            return Ref(self.get_attr(name, None, expr.span))
        if name == RUNNING and running is None:
            self.fail("name error", "'x' (the running value) is not available here", expr.span,
                      hint="const and param values are computed once, before any input exists")
        if self.is_module_name(name) or self.elab.layer(name) is not None:
            self.fail("type error", f"'{name}' is a module; it can only be used as a step",
                      expr.span, hint=f"write it on a line of its own, or `x -> {name}`")
        if name in self.failed:
            raise SpecError([], self.elab.program.sources)   # already reported where defined
        candidates = (list(self.values) + list(self.statics) + list(self.mod.tensors) +
                      list(self.lets) + [RUNNING] + list(FUNCTION_NAMES))
        hint = did_you_mean(name, candidates)
        if name in _PYTHON_LITERALS:
            hint = f"netspec writes {_PYTHON_LITERALS[name]} in lower case"
        self.fail("name error", f"unknown name '{name}'", expr.span, hint=hint)

    def get_attr(self, name: str, key: Any, span: Span) -> str:
        cache_key = (name, key, id(self.graph))
        if cache_key not in self.attr_nodes:
            self.attr_nodes[cache_key] = self.node(name, "get_attr", target=name, span=span,
                                                   key=key)
        return self.attr_nodes[cache_key]

    def index(self, expr: ast.Index, running: str | None, factories: bool) -> Any:
        if isinstance(expr.value, ast.Name) and expr.value.id in self.mod.tensors and \
                self.mod.tensors[expr.value.id].container != "tensor":   # one is subscripted
            decl = self.mod.tensors[expr.value.id]
            if len(expr.items) != 1 or isinstance(expr.items[0], (ast.Slice, ast.Ellipsis)):
                self.fail("type error", f"'{decl.name}' takes one key or position",
                          expr.span, hint=f"read an entry with {decl.name}[key], then index it")
            key = self.static(expr.items[0])
            lookup = str(key) if decl.container == "list" and isinstance(key, int) and \
                not isinstance(key, bool) else key
            if not isinstance(lookup, str) or lookup not in decl.items:
                keys = ", ".join(decl.items)
                self.fail("name error", f"'{decl.name}' has no entry {_show_value(key)}",
                          expr.items[0].span, hint=f"its entries are: {keys}")
            return Ref(self.get_attr(decl.name, lookup, expr.span))
        value = self.expr(expr.value, running, factories)
        if value.__class__ is Ref:
            return self.subscript(value, expr, running)
        if isinstance(value, tuple):
            if len(expr.items) != 1 or isinstance(expr.items[0], ast.Ellipsis):
                self.fail("type error", "a list takes one index or slice", expr.span,
                          hint="write lst[i] or lst[a:b]")
            item = expr.items[0]
            if isinstance(item, ast.Slice):
                return value[self.slice(item).as_slice()]
            index = self.static(item)
            if not isinstance(index, int) or not -len(value) <= index < len(value):
                self.fail("value error", f"index {_show_value(index)} is out of range for a "
                          f"list of {len(value)}", item.span)
            return value[index]
        self.fail("type error", f"only tensors, lists and const/param lists and dicts can be "
                  f"indexed, not {_show_value(value)}", expr.span)

    def subscript(self, value: Ref, expr: ast.Index, running: str | None) -> Ref:
        """``x[i, a:b, none, ...]`` on a tensor: a ``getitem`` node, its items known at compile
        time."""
        items: list[Any] = []
        spans: dict[str, Span] = {"index": expr.span}
        for d, item in enumerate(expr.items):
            if isinstance(item, ast.Slice):
                items.append(self.slice(item))
            elif isinstance(item, ast.Ellipsis):
                if ... in items:
                    self.fail("syntax error", "a subscript can have only one ellipsis (...)",
                              item.span, hint="remove this one")
                items.append(...)
            else:
                index = self.expr(item, running)
                if index.__class__ is Ref:
                    self.fail("type error", "a tensor cannot index a tensor here: a subscript "
                              "takes integers, slices, lists of integers, none and ... known at "
                              "compile time", item.span,
                              hint="for positions known when the model is built, write them "
                              "as a list, x[:, [2, 0, 1]], or a slice; a boolean mask selects a "
                              "number of elements known only at run time, and where(mask, x, 0) "
                              "keeps the shape instead")
                if isinstance(index, tuple):         # x[:, [2, 1, 0]]: positions along a dim
                    index = self.positions(index, item.span)
                elif index is not None and (not isinstance(index, int) or
                                            isinstance(index, bool)):
                    self.fail("type error", f"a tensor subscript must be an integer, a slice, a "
                              f"list of integers or none, not {_show_value(index)}", item.span,
                              hint="write an integer index, or none for a new dim of size 1")
                items.append(index)
            spans[f"index{d}"] = item.span
        return Ref(self.call_function(lookup_function("getitem"), (value,),
                                      {"index": tuple(items)}, expr.span,
                                      operand_spans=(expr.value.span,), arg_spans=spans))

    def positions(self, values: tuple, span: Span) -> Positions:
        """The positions of a list in a subscript: integers known at compile time."""
        if not values:
            self.fail("value error", "a list of positions needs at least one", span,
                      hint="an empty selection has no use in a model; leave the subscript out")
        for value in values:
            if not isinstance(value, int) or isinstance(value, bool):
                self.fail("type error", f"a list of positions holds integers, not "
                          f"{_show_value(value)}", span)
        return Positions(values)

    def slice(self, item: ast.Slice) -> SliceValue:
        """A slice's bounds, each an integer known at compile time or left out."""
        bounds = []
        for part in (item.start, item.stop, item.step):
            bound = None if part is None else self.static(part)
            if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)):
                self.fail("type error", f"a slice bound must be an integer, not "
                          f"{_show_value(bound)}", part.span)
            bounds.append(bound)
        return SliceValue(*bounds)

    def call(self, expr: ast.Call, running: str | None, factories: bool) -> Any:
        if not isinstance(expr.func, ast.Name):
            self.fail("syntax error", "only names can be called", expr.func.span,
                      hint=self.method_hint(expr))
        name = expr.func.id
        if name in self.lets and running is not None:    # x + attn(h, h, h); a let named cos
            return Ref(self.let_call(expr, running))     # shadows the function, as in a step
        fn = lookup_function(name)
        if fn is None:
            if name in _COMPILE_TIME_CALLS:
                return self.compile_time_call(name, expr)
            if self.is_module_name(name):
                self.fail("type error", f"'{name}' is a module; it can only be used as a step",
                          expr.span, hint=f"apply it with `x -> {name}(...)`")
            hint = did_you_mean(name, list(FUNCTION_NAMES) + self.elab.layer_names() +
                                list(self.elab.program.blocks))
            what = "layer or block" if name[:1].isupper() else "function"
            self.fail("name error", f"unknown {what} '{name}'", expr.func.span, hint=hint)
        in_step = fn.factory and not factories    # arange(T): sized by the input, each call
        if in_step and running is None:
            self.fail("type error", f"{name}() creates a tensor, so it belongs in a const or "
                      f"param", expr.span, hint=f"write `const t = {name}(...)` and use t")
        n_tensors = len(expr.args) if fn.tensors < 0 else fn.tensors
        operands = expr.args[:n_tensors]
        tensor_args = []
        tensors = False
        for a in operands:
            value = self.expr(a, running, factories)
            if value.__class__ is Ref:
                tensors = True
            elif not isinstance(value, (int, float)) or isinstance(value, bool):
                self.fail("type error", f"{name}() needs a tensor here, not {_show_value(value)}",
                          a.span)
            tensor_args.append(value)
        if len(tensor_args) < n_tensors or (fn.tensors < 0 and not tensor_args):
            self.fail("argument error", f"{name}() needs {max(n_tensors, 1)} tensor argument"
                      f"{'' if n_tensors == 1 else 's'}", expr.span)
        if not tensors and not fn.factory:
            self.fail("type error", f"{name}() needs at least one tensor argument", expr.span)
        static_params = fn.static_params
        statics = expr.args[n_tensors:] if fn.tensors >= 0 else ()
        operand_spans = tuple(map(_SPAN_OF, operands))
        if not (static_params or statics or expr.keywords):     # nothing to bind: relu(x)
            return Ref(self.call_function(fn, tuple(tensor_args), {}, expr.span,
                                          operand_spans=operand_spans))
        bound = self.bind_call(f"{name}()", static_params, static_params, statics,
                               expr.keywords, expr.span)
        diagnostics: list[Diagnostic] = []
        kwargs = validate(static_params, bound, callee=f"{name}()", diagnostics=diagnostics)
        if diagnostics:
            raise SpecError(diagnostics, self.elab.program.sources)
        if in_step and not any(has_symbols(v) for v in kwargs.values()):
            self.fail("type error", f"{name}() creates a tensor of a size known when the model "
                      f"is built, so it belongs in a const or param", expr.span,
                      hint=f"write `const t = {name}(...)` and use t; a step may create one "
                           f"only of a size that depends on the input, such as arange(T)")
        return Ref(self.call_function(fn, tuple(tensor_args), kwargs, expr.span,
                                      operand_spans=operand_spans,
                                      arg_spans={k: a.span for k, a in bound.items()}))

    def method_hint(self, expr: ast.Call) -> str | None:
        """How to write ``torch.relu(x)``, ``nn.Linear(10)`` or ``x.view(N, -1)`` in netspec."""
        func = expr.func
        if func.__class__ is not ast.Attr:
            return None
        name, owner, root = func.name, func.value, func.value
        while root.__class__ is ast.Attr:
            root = root.value
        if name in _CONTAINERS:
            return _CONTAINERS[name]
        if owner.__class__ is ast.Name and owner.id == "self":    # self.fc(x) from a forward
            return f"a block has no self: name the step where it applies, `{name}: Linear(8)`, " \
                   f"or declare `let {name} = Linear(8)` and write `x -> {name}`"
        function = lookup_function(name) is not None
        if root.__class__ is ast.Name and root.id in _PYTHON_MODULES:
            prefix = _source_text(self.elab.program.sources, owner.span)
            if function or self.elab.layer(name) is not None:
                return f"write {name}(...) without '{prefix}.': netspec names layers and " \
                       f"functions by themselves"
            return did_you_mean(name, list(FUNCTION_NAMES) + self.elab.layer_names())
        if function:
            text = [_source_text(self.elab.program.sources, a.span)
                    for a in (owner, *expr.args, *expr.keywords)]
            return f"netspec has no methods: write {name}({', '.join(text)})"
        return "netspec has no methods: a function takes the tensor as its first argument"

    def compile_time_call(self, name: str, expr: ast.Call) -> Any:
        """A function of compile-time values (``len(widths)``), evaluated here."""
        if expr.keywords or len(expr.args) != 1:
            self.fail("argument error", f"{name}() takes one argument", expr.span)
        value = self.static(expr.args[0])
        if not isinstance(value, tuple):
            self.fail("type error", f"{name}() takes a list, not {_show_value(value)}",
                      expr.args[0].span)
        return _COMPILE_TIME_CALLS[name](value)

    def call_function(self, fn: FunctionDef, args: tuple, kwargs: dict, span: Span, *,
                      operand_spans: tuple = (), arg_spans: dict | None = None) -> str:
        """A ``call_function`` node; ``arg_spans`` (where each static argument was written)
        only where it has any."""
        if arg_spans:
            return self.node(RUNNING, "call_function", target=fn.name, args=args,
                             kwargs=kwargs, span=span, operand_spans=operand_spans,
                             arg_spans=arg_spans)
        return self.node(RUNNING, "call_function", target=fn.name, args=args, kwargs=kwargs,
                         span=span, operand_spans=operand_spans)


_MISSING = object()

# the names Python code calls functions and layers through: torch.relu(x), nn.Linear(10)
_PYTHON_MODULES = frozenset({"torch", "nn", "F", "functional"})
# layers of Keras and Caffe by their names there, and how netspec writes them
_OTHER_FRAMEWORKS = {
    "Dense": "Linear(out_features)",
    "InnerProduct": "Linear(out_features)",
    "Convolution": "Conv2d(out_channels, kernel_size)",
    "BatchNormalization": "BatchNorm1d() or BatchNorm2d(), by the input's rank",
    "LayerNormalization": "LayerNorm()",
    "MaxPooling1D": "MaxPool1d(kernel_size)",
    "MaxPooling2D": "MaxPool2d(kernel_size)",
    "AveragePooling2D": "AvgPool2d(kernel_size)",
    "GlobalAveragePooling2D": "AdaptiveAvgPool2d(1) -> Flatten()",
    "GlobalMaxPooling2D": "AdaptiveMaxPool2d(1) -> Flatten()",
    "Pooling": "MaxPool2d(kernel_size) or AvgPool2d(kernel_size)",
    "Activation": "the activation's own layer, ReLU() or Tanh(), or a function, relu(x)",
    "Concatenate": "concat { ... }, or cat(a, b, dim=1)",
    "Reshape": "reshape(x, N, ...), or Flatten()",
    "Add": "add { ... }, or a + b",
}
# torch.nn's containers, which netspec writes as its own constructs
_CONTAINERS = {
    "Sequential": "steps in order are a { } body: `{ Linear(8); ReLU() }`",
    "ModuleList": "copies of a body are a repeat, `repeat n { Linear(8) }`; other modules are "
                  "steps, or lets",
    "ModuleDict": "a module with a name is a named step, `fc: Linear(8)`, or a let",
}
# torch.nn layers built from a module argument, and how netspec writes them: the same
# state_dict keys (layers.0.self_attn.in_proj_weight, ...)
_STACKS = {
    f"Transformer{part}": f"write `layers: {{ repeat num_layers {{ Transformer{part}Layer(nhead=4) "
    f"}} }}`, then `norm: LayerNorm()` for its norm" for part in ("Encoder", "Decoder")}
# Python's spelling of netspec's literals
_PYTHON_LITERALS = {"True": "true", "False": "false", "None": "none"}

# functions of compile-time lists, which are not tensor functions: name -> implementation
_COMPILE_TIME_CALLS: dict[str, Callable[[tuple], Any]] = {"len": len}


def _unknown_module_hint(name: str, candidates: list[str]) -> str | None:
    if name in _CONTAINERS:
        return _CONTAINERS[name]
    if name in _OTHER_FRAMEWORKS:
        return f"netspec uses torch.nn's layers: {_OTHER_FRAMEWORKS[name]}"
    return did_you_mean(name, candidates)


def _unelaborated_names(elab: _Elaborator) -> list[Diagnostic]:
    """Misspelt names in code that elaboration did not reach: a block of the root file that
    nothing uses, the untaken branch of an ``if``, a body repeated 0 times. Such code is not
    built, but a misspelt name in it is a mistake whatever the arguments. Each call
    (``Linear(8)``, ``relu(x)``) and each step written as a capitalised name (``Block``) is
    checked against the layers, functions and blocks and the names known where the code
    stands, and its keywords against what it takes. Other names are not: any name can be a
    dim symbol."""
    diagnostics: list[Diagnostic] = []
    # the root file's own blocks only: an imported file's unused blocks are checked when that
    # file is, and may use layers (a plugin's) that a program importing it does not need
    for block in elab.program.root_blocks:
        if block.name not in elab.instantiated:
            _check_names(elab, block.body, {p.name for p in block.params}, diagnostics)
    for node, known in elab.skipped.values():
        _check_names(elab, node, known, diagnostics)
    return diagnostics


def _check_names(elab: _Elaborator, code: Any, known: set[str],
                 diagnostics: list[Diagnostic]) -> None:
    """Append a diagnostic for each unknown layer, block or function called in ``code``, and
    each keyword that a layer, block or function there does not take; ``known`` are the names
    defined around it, to which those defined anywhere in it are added."""
    program = elab.program
    nodes = list(_ast_nodes(code))
    known = known | {n.name for n in nodes if isinstance(n, _DEFINITIONS)} | {
        n.index for n in nodes if isinstance(n, ast.Repeat)}
    containers = {id(n.value) for n in nodes if isinstance(n, (ast.ConstDecl, ast.ParamDecl))}
    for node in nodes:
        if node.__class__ is ast.Call and node.func.__class__ is ast.Name:
            name, span, keywords = node.func.id, node.func.span, node.keywords
            if name == "dict" and id(node) in containers:   # param p = dict(a=randn(4), ...)
                continue
        elif node.__class__ is ast.Link and node.node.__class__ is ast.Name:
            name, span, keywords = node.node.id, node.node.span, ()   # a step `Block`
            if not name[:1].isupper():
                continue       # a value, or a dim symbol: any name can be one
        else:
            continue
        if name in known:
            continue
        params: tuple[Param, ...] | None = None
        callee = name
        if name in program.blocks:
            params = tuple(Param(p.name) for p in program.blocks[name].params)
        elif (fn := lookup_function(name)) is not None:
            params, callee = fn.static_params, f"{name}()"
        elif (layer := elab.layer(name)) is not None:
            params = layer.params
        elif name in _COMPILE_TIME_CALLS:
            continue
        elif name[:1].isupper():
            hint = _unknown_module_hint(name, elab.layer_names() + list(program.blocks) +
                                        sorted(known))
            diagnostics.append(Diagnostic("name error", f"unknown layer or block '{name}'",
                                          span, hint=hint))
        else:
            hint = did_you_mean(name, list(FUNCTION_NAMES) + elab.layer_names() +
                                list(program.blocks))
            diagnostics.append(Diagnostic("name error", f"unknown function '{name}'", span,
                                          hint=hint))
        if params is not None and keywords:     # a keyword's name does not depend on values
            bind(params, (), (), [(k.name, Arg(None, k.span), k.span.head(len(k.name)))
                                  for k in keywords],
                 callee=callee, call_span=node.span, diagnostics=diagnostics)


_DEFINITIONS = (ast.Let, ast.Assign, ast.InputDecl, ast.ConstDecl, ast.ParamDecl)


def _ast_nodes(node: ast.Node) -> Iterator[ast.Node]:
    """``node`` and every syntax node under it, parents first, but for init sections (which
    call initialisers, not functions)."""
    stack = [node]
    while stack:
        node = stack.pop()
        if node.__class__ is not ast.InitSection:
            yield node
            stack.extend(reversed(list(ast.children(node))))


def _source_text(sources, span: Span) -> str:
    lines = (sources.texts.get(span.file) or "").splitlines()[span.line - 1:span.end_line]
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0][span.column - 1:span.end_column - 1]
    lines[0] = lines[0][span.column - 1:]
    lines[-1] = lines[-1][:span.end_column - 1]
    return " ".join(line.strip() for line in lines)


def _format_pattern(pattern: str, index: str, i: int, span: Span, builder: _BodyBuilder) -> str:
    try:
        return pattern.format(**{index: i})
    except (KeyError, IndexError, ValueError) as exc:
        builder.fail("value error", f"bad name pattern \"{pattern}\": use {{{index}}} for the "
                     f"copy's index ({exc})", span)


# links that are not a module or an expression: (builder, link, running value) -> value node
_STRUCTURED_STEPS: dict[type, Callable[[_BodyBuilder, ast.Link, str], str]] = {
    ast.Concat: lambda b, link, value: b.concat(link.node, value),
    ast.Add: _BodyBuilder.add_step,
    ast.Repeat: lambda b, link, value: b.repeat(link.node, value, link.label),
    ast.If: lambda b, link, value: b.if_step(link.node, value),
    ast.While: lambda b, link, value: b.while_step(link.node, value),
}
