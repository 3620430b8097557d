"""Python source for a block's ``forward``: one readable line per step, shapes in comments.

Submodules are fetched from ``self._modules`` once per call (``nn.Module.__getattr__`` costs
about a microsecond a lookup), single-use function results are inlined into their consumer so
``relu(x @ w + 1)`` reads as written, and variable names are reused once a value is dead.
"""

from __future__ import annotations

import keyword
from functools import lru_cache
from typing import Any, Sequence

import networkx as nx

from netspec.dims import Sym, fmt_shape
from netspec.errors import Diagnostic, SpecError
from netspec.functions import lookup_function
from netspec.ir import Fragment, ModuleIR, Ref, refs
from netspec.registry import FunctionDef


def static_source(value: Any, dims: dict[str, str]) -> str:
    """Python source for a compile-time value; symbolic dims read the input's shape."""
    if isinstance(value, Sym):
        return value.source(dims)
    if value is ...:
        return "..."                 # repr() writes Ellipsis
    if isinstance(value, tuple):
        inner = ", ".join(static_source(v, dims) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


_MAX_INLINE = 32   # deeper inlined expressions get a variable (Python nests at most 200 parens)
# A single-use function result is written into its consumer, up to a nesting depth by the
# consumer's op: relu(x @ w + 1), return x + y, mods['fc2'](torch.relu(x)). A module call keeps
# a line of its own, with its shape, and takes only a one-call argument, as one would write it.
_INLINE_INTO = {"call_function": _MAX_INLINE, "output": _MAX_INLINE, "call_module": 2}
_NO_KWARGS: dict[str, str] = {}      # the static arguments of relu(x): read, never written


class Emitter:
    """Turns one graph (and its loop fragments) into statements."""

    def __init__(self, mod: ModuleIR, dims: dict[str, str], indent: str = "    "):
        self.mod = mod
        self.dims = dims
        self.lines: list[str] = []
        self.indent = indent
        self.exprs: dict[str, str] = {}          # node id -> source of its value
        self.depth: dict[str, int] = {}          # node id -> nesting of its inlined source
        self.holder: dict[str, str] = {}         # variable name -> node id holding it now
        self.reads: dict[str, tuple[str, ...]] = {}   # inlined node id -> the nodes it reads
        self.fresh: set[str] = set()             # inlined nodes whose value is a new tensor
        self.comments: dict[Any, str] = {}       # shape -> its comment (shapes repeat)
        self.emitted: dict[tuple, str] = {}      # function and argument sources -> its source
        self.uses_modules = False
        # what a factory is given: make(device, dtype, generator)'s arguments in a const or
        # param; in a forward, the input's device (arange(T) sized by the input, each call)
        self.factory_args = {"device": "device", "dtype": "dtype", "generator": "generator"}

    def var_for(self, nid: str, base: str, last_use: dict[str, int], now: int) -> str:
        base = base if _usable_name(base) else "x"
        candidate, k = base, 1
        while candidate in self.holder and last_use.get(self.holder[candidate], -1) > now:
            k += 1
            candidate = f"{base}{k}"
        self.holder[candidate] = nid
        return candidate

    def graph(self, graph: nx.DiGraph, entry_src: str | None, outer_uses: dict[str, int]) -> str:
        """Emit every node; returns the source of the output value."""
        attrs = dict(graph.nodes(data=True))
        order = list(attrs)
        pos = {n: i for i, n in enumerate(order)}
        uses: dict[str, list[str]] = {}           # node id -> the nodes that read it
        last_use = dict(outer_uses)
        in_loops: set[str] = set()                # nodes read inside a loop: never inlined
        operands: dict[str, Sequence[Ref]] = {}   # node id -> the values it reads
        for now, n in enumerate(order):
            data = attrs[n]
            operands[n] = ops = refs(data["args"], data["kwargs"])
            for ref in ops:
                uses.setdefault(ref.node, []).append(n)
                if last_use.get(ref.node, -1) < now:
                    last_use[ref.node] = now
            if data["op"] == "loop":
                for frag in (data["cond"], data["body"]):
                    for _, fdata in frag.graph.nodes(data=True):
                        for ref in _refs(fdata):
                            if ref.node in pos:
                                last_use[ref.node] = max(last_use.get(ref.node, -1), now)
                                in_loops.add(ref.node)
        result = ""
        for now, n in enumerate(order):
            data = attrs[n]
            op = data["op"]
            if op == "placeholder":
                if n in self.exprs:
                    continue
                if entry_src is not None:
                    self.exprs[n] = entry_src
                else:
                    self.exprs[n] = self.var_for(n, data.get("name") or "x", last_use, now)
                continue
            if op == "output":
                result = self.src(data["args"][0])
                continue
            if op == "get_attr":
                self.exprs[n] = self.attr_source(data)
                continue
            if op == "call_function":
                fn = lookup_function(data["target"])
                expr = self.function_source(fn, data)
                consumers = uses.get(n)
                into = attrs[consumers[0]]["op"] if consumers and len(consumers) == 1 else None
                if into in _INLINE_INTO and n not in in_loops:
                    at = pos[consumers[0]]
                    if at == now + 1 or _one_expression(order, attrs, uses, pos, now, at):
                        ops = operands[n]
                        depth = 1 + (self.depth.get(ops[0].node, 0) if len(ops) == 1 else
                                     max([self.depth.get(r.node, 0) for r in ops], default=0))
                        if depth < _INLINE_INTO[into]:
                            self.inline(n, expr, depth, ops, last_use, at)
                            if fn.fresh:
                                self.fresh.add(n)
                            continue
                self.assign(n, data, expr, last_use, now)
                continue
            if op == "call_module":
                self.uses_modules = True
                args = data["args"]
                if len(args) == 1 and not data["kwargs"]:
                    a = args[0]
                    call = self.exprs[a.node] if a.__class__ is Ref else self.src(a)
                    if call[0] == "(":                   # (x + y): most arguments have none
                        call = strip_parens(call)
                else:               # attn(q, k, v, need_weights=False)
                    call = ", ".join([strip_parens(self.src(a)) for a in args] +
                                     [f"{k}={strip_parens(self.src(v))}"
                                      for k, v in data["kwargs"].items()])
                expr = f"mods[{data['target']!r}]({call})"
                layer = self.mod.children[data["target"]].layer
                if layer is not None and layer.output_index is not None:
                    expr += f"[{layer.output_index}]"   # an LSTM's (output, (h_n, c_n)): the output
                self.assign(n, data, expr, last_use, now)
                continue
            if op == "loop":
                self.loop(n, data, last_use, now)
                continue
            raise AssertionError(op)
        return result

    def inline(self, nid: str, expr: str, depth: int, operands: Sequence[Ref], last_use: dict,
               at: int) -> None:
        """Use ``expr`` in place of a variable for ``nid``, whose one consumer is the node at
        position ``at``. The variables the expression reads are kept until then: an inlined
        ``relu(x)`` must not see an ``x`` assigned after it."""
        self.exprs[nid] = expr
        self.depth[nid] = depth
        reads: list[str] = []
        for r in operands:
            reads.extend(self.reads.get(r.node, (r.node,)))
        self.reads[nid] = tuple(reads)
        for v in reads:
            if last_use.get(v, -1) < at:
                last_use[v] = at

    def assign(self, nid: str, data: dict, expr: str, last_use: dict, now: int) -> None:
        var = self.var_for(nid, data.get("name") or "x", last_use, now)
        shape = data.get("shape")
        comment = ""
        if shape is not None:
            comment = self.comments.get(shape)
            if comment is None:
                comment = self.comments[shape] = f"  # {fmt_shape(shape)}"
        if expr[0] == "(":                                # (x + y): a module call has none
            expr = strip_parens(expr)
        self.lines.append(f"{self.indent}{var} = {expr}{comment}")
        self.exprs[nid] = var

    def loop(self, nid: str, data: dict, last_use: dict, now: int) -> None:
        value = self.src(data["args"][0])
        var = self.var_for(nid, data.get("name") or "x", last_use, now)
        if var != value:
            self.lines.append(f"{self.indent}{var} = {value}")
        self.exprs[nid] = var
        cond = Emitter(self.mod, self.dims, self.indent)
        cond.exprs, cond.holder = dict(self.exprs), dict(self.holder)
        cond.factory_args = self.factory_args
        cond_src = cond.graph(data["cond"].graph, var, last_use)
        body = Emitter(self.mod, self.dims, self.indent + "    ")
        body.exprs, body.holder = dict(self.exprs), dict(self.holder)
        body.factory_args = self.factory_args
        body.holder[var] = nid
        body_src = body.graph(data["body"].graph, var, {**last_use, nid: 10**9})
        self.lines.extend(cond.lines)
        self.lines.append(f"{self.indent}while {strip_parens(cond_src)}:")
        self.lines.extend(body.lines)
        if body_src != var:
            self.lines.append(f"{self.indent}    {var} = {strip_parens(body_src)}")
        elif not body.lines:
            self.lines.append(f"{self.indent}    pass")
        self.uses_modules |= cond.uses_modules or body.uses_modules

    def src(self, value: Any) -> str:
        if isinstance(value, Ref):
            return self.exprs[value.node]
        return static_source(value, self.dims)

    def attr_source(self, data: dict) -> str:
        decl = self.mod.tensors[data["target"]]
        key = data.get("key")
        if decl.container == "tensor":
            store = "_parameters" if decl.trainable else "_buffers"
            return f"self.{store}[{decl.name!r}]"
        self.uses_modules = True
        index = int(key) if decl.container == "list" else key
        return f"mods[{decl.name!r}][{index!r}]"

    def function_source(self, fn: FunctionDef, data: dict) -> str:
        exprs = self.exprs
        args = [exprs[a.node] if a.__class__ is Ref else self.src(a) for a in data["args"]]
        static = data.get("static", data["kwargs"])
        emit = fn.emit
        if fn.inplace is not None and data["args"][0].__class__ is Ref and \
                data["args"][0].node in self.fresh:
            emit = fn.inplace                        # torch.relu_(y + x): y + x is ours alone
        if not static and not fn.factory:            # relu(x), x + y: tensors only
            kwargs = _NO_KWARGS
            key: tuple = (emit, *args)
        else:
            try:
                kwargs = {k: static_source(v, self.dims) for k, v in static.items()}
            except ValueError as exc:
                raise SpecError([Diagnostic("shape error", str(exc), data.get("span"),
                                            hint="give the input a concrete shape with "
                                            "--input")])
            if fn.factory:
                kwargs.update(self.factory_args)
            key = (emit, *args, *kwargs.items())     # sources are strings: hashable
        expr = self.emitted.get(key)
        if expr is None:                             # a forward repeats the same few calls
            expr = self.emitted[key] = emit(*args, **kwargs)
        return expr


def _one_expression(order: list[str], attrs: dict, uses: dict, pos: dict, start: int,
                    end: int) -> bool:
    """Whether the nodes between positions ``start`` and ``end`` are all function calls feeding
    ``end`` (the operands of one expression, ``a * b + c * d``): a value is inlined only into
    such a consumer, so the generated lines keep the spec's order of steps."""
    if end - start > _MAX_INLINE:
        return False
    for k in range(start + 1, end):
        m = order[k]
        consumers = uses.get(m)
        if attrs[m]["op"] != "call_function" or consumers is None or len(consumers) != 1 or \
                pos[consumers[0]] > end:
            return False
    return True


@lru_cache(maxsize=256)
def _usable_name(name: str) -> bool:
    """Whether a value's preferred name can be a variable of the generated forward."""
    return name.isidentifier() and not keyword.iskeyword(name) and name not in (
        "self", "mods", "torch", "F")


def strip_parens(expr: str) -> str:
    """Drop one pair of redundant outer parentheses."""
    if expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for i, ch in enumerate(expr):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(expr) - 1:
                return expr
        return expr[1:-1]
    return expr


def _refs(data: dict) -> Sequence[Ref]:
    return refs(data["args"], data["kwargs"])


def forward_source(mod: ModuleIR) -> str:
    """The ``forward`` method of a dataflow block, as Python source."""
    assert mod.graph is not None
    entry = next(n for n, d in mod.graph.nodes(data=True) if d["op"] == "placeholder")
    input_name = mod.graph.nodes[entry].get("name") or "x"
    if not _usable_name(input_name):
        input_name = "x"
    dims: dict[str, str] = {}
    prelude: list[str] = []
    for i, d in enumerate(mod.in_shape or ()):
        atom = d.atom() if isinstance(d, Sym) else None
        if atom is not None:
            dims[atom] = f"_{str(d)}"
            prelude.append(f"    _{str(d)} = {input_name}.shape[{i}]")
    emitter = Emitter(mod, dims)
    emitter.holder[input_name] = entry
    emitter.exprs[entry] = input_name
    emitter.factory_args = {"device": f"{input_name}.device"}
    out = emitter.graph(mod.graph, None, {})
    head = [f"def forward(self, {input_name}):"]
    if emitter.uses_modules:
        head.append("    mods = self._modules")
    used_dims = [line for line in prelude if line.split(" = ")[0].strip() in
                 "\n".join(emitter.lines) + out]
    return "\n".join(head + used_dims + emitter.lines + [f"    return {strip_parens(out)}"]) + "\n"


def tensor_source(frag: Fragment, mod: ModuleIR) -> str:
    """A function ``make(device, dtype, generator)`` creating a ``const``/``param`` tensor."""
    emitter = Emitter(mod, {})
    out = emitter.graph(frag.graph, "None", {})
    return "\n".join(["def make(device, dtype, generator):", *emitter.lines,
                      f"    return {strip_parens(out)}"]) + "\n"


def expression_function(frag: Fragment, mod: ModuleIR, name: str = "apply") -> str:
    """A function ``apply(x)`` evaluating a fragment over its placeholder (init expressions)."""
    emitter = Emitter(mod, {})
    entry = next(n for n, d in frag.graph.nodes(data=True) if d["op"] == "placeholder")
    emitter.exprs[entry] = "x"
    emitter.holder["x"] = entry
    out = emitter.graph(frag.graph, None, {})
    return "\n".join([f"def {name}(x):", *emitter.lines, f"    return {strip_parens(out)}"]) + "\n"
