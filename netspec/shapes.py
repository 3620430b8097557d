"""Stage 3, ``infer_shapes``: every value's shape, statically, from the input shape alone.

Walks the ``ModuleIR`` tree in dataflow order. Dim symbols are bound where a block's input
arrives; lazy sizes (``in_features``...) are filled in, stated ones checked; compile-time
``branch`` nodes on dim symbols are decided and spliced; ties and ``expect`` are checked.
Errors are located at the step that fails and name the shape that arrived and its origin.
"""

from __future__ import annotations

import contextlib
import operator
from typing import Any, Iterator

import networkx as nx

from netspec.args import has_symbols, memo_key, validate_values
from netspec.dims import ASSUMED, Shape, Sym, agree, fmt_shape, unify
from netspec.elaborate import Pred
from netspec.errors import Collector, Diagnostic, SourceMap, SpecError, Span, did_you_mean
from netspec.functions import (
    DTYPE_RULES,
    FLOAT_HINT,
    KIND_MAKERS,
    Kind,
    literal_kind,
    lookup_function,
)
from netspec.gc_pause import gc_paused
from netspec.ir import Fragment, ModuleIR, Ref, TensorDecl, lint, placeholder
from netspec.limits import current as current_limits
from netspec.registry import LayerDef, ShapeRuleError
from netspec.tensors import layer_tensors

_UNKNOWN = None  # the shape of a value downstream of an error
_PLAIN = frozenset({int, float, bool, str, type(None)})   # values that hold no dim symbols


def _layer_key(mod: ModuleIR, shape: Shape) -> tuple | None:
    """A key for a layer call with plain arguments (no dim symbols) on an input shape: two
    calls with equal keys resolve the same arguments and give the same output shape. A spec
    repeats a few layer calls many times (``Linear(16)``, ``ReLU()``, ``Conv2d(64, 3)``)."""
    assert mod.layer is not None
    args = memo_key(mod.layer.params, mod.args.items())
    return None if args is None else (id(mod.layer), shape, args)


class _Origin(tuple):
    """Where a value came from, ``(span, "step" or "input")``, for "the step on line 13 outputs
    [N, 383, 12, 12]". A tuple, made as ``_Origin((span, "step"))``: shape inference makes one
    a node, and a tuple's constructor runs no Python code."""

    __slots__ = ()
    span = property(operator.itemgetter(0))
    what = property(operator.itemgetter(1))

    def note(self, shape: Shape) -> str | None:
        if self.span is None:
            return f"the given input is {fmt_shape(shape)}" if self.what == "input" else None
        if self.what == "input":
            return f"the input is {fmt_shape(shape)} ({self.span})"
        return f"the step on line {self.span.line} outputs {fmt_shape(shape)}"


class _ShapeInference:
    def __init__(self, sources: SourceMap):
        self.errors = Collector(sources)
        self.bindings: dict[str, Any] = {}
        self.max_dim = current_limits().max_dim
        self.layers_seen: dict[tuple, tuple[dict, Shape]] = {}   # see _layer_key
        # dtype kinds ("bool", "int", "float"; None unknown) of the current graph's values, the
        # kind its placeholder receives, and the kind of the value the last node produced
        self.kinds: dict[str, Kind] = {}
        self.entry_kind: Kind = None
        self.kind_out: Kind = None

    # ---- symbols --------------------------------------------------------------------------
    def subst(self, value: Any) -> Any:
        if isinstance(value, Sym):
            for _ in range(64):      # bindings may chain: C@5 -> C@2 -> 64
                new = value.substitute(self.bindings)
                if new is value or not isinstance(new, Sym) or new == value:
                    return new
                value = new
            return value
        if isinstance(value, tuple):
            return tuple(self.subst(v) for v in value)
        if isinstance(value, Pred):
            return value.evaluate(self.subst)
        return value

    def bind(self, declared: Any, actual: Any) -> bool:
        """Unify a declared dim with an arriving one; False if they are known to differ. A pair
        neither proved nor refuted (``16`` against a free ``H``) is taken on trust and left in
        ``ASSUMED`` for the caller to note."""
        atom = declared.atom() if isinstance(declared, Sym) else None
        if atom is not None and atom not in self.bindings:
            if declared != actual:
                self.bindings[atom] = actual
            return True
        return agree(actual, self.subst(declared))

    def error(self, kind: str, message: str, span: Span | None, hint: str | None = None,
              notes: tuple = ()) -> None:
        self.errors.add(Diagnostic(kind, message, span, hint, tuple(n for n in notes if n)))

    # ---- modules --------------------------------------------------------------------------
    def module(self, mod: ModuleIR, shape: Shape, span: Span, origin: _Origin,
               kind: Kind = None, step: dict | None = None) -> Shape | None:
        """The output shape of ``mod`` on ``shape``; ``step``: the attributes of the node that
        applies it, where sizes its declared input takes on trust are noted."""
        if mod.kind == "layer":
            out = self.layer(mod, shape, span, origin, step)
            if kind is None and not mod.layer.indices:
                return out       # the usual case: an input of unknown kind, an unknown output
            if out is None:
                return out
            if not _from_torch(mod):
                return out       # a layer of the user's own: its code decides what it takes
            taken = self.layer_kind(mod, kind, span, origin)
            if taken is False:
                return _UNKNOWN
            self.kind_out = taken
            return out
        return self.block(mod, shape, span, origin, kind, step)

    def layer_kind(self, mod: ModuleIR, kind: Kind, span: Span, origin: _Origin) -> Kind | bool:
        """The kind of a layer's output for an input of this kind, its arguments resolved; False,
        having said so, where torch refuses the input. Embeddings need indices; the table says
        what every other layer of it takes and gives."""
        if mod.layer.indices:
            if kind is None or kind == "int":
                return "float"
            self.error("type error", f"{mod.cls_name} needs an integer tensor of indices, but "
                       f"the value here is {_a(kind)} tensor", span,
                       hint="indices come from the input, arange, randint or a sum of bools",
                       notes=(_kind_note(origin, kind),))
            return False
        rule = mod.layer.kinds if mod.layer is not None else None
        if rule is None:     # a torch layer outside the table: one with weights needs floats
            if kind == "float":
                return "float"
            if not param_shapes(mod):
                return None
            takes: dict[str, str] = {"float": "float"}
        else:
            takes = rule(mod.resolved_args)
            if kind in takes:
                return takes[kind]
        needs = "an int or float input" if "int" in takes else "a floating-point input"
        self.error("type error", f"{mod.cls_name} needs {needs}, but the value here is "
                   f"{_a(kind)} tensor", span, hint=FLOAT_HINT,
                   notes=(_kind_note(origin, kind),))
        return False

    def layer(self, mod: ModuleIR, shape: Shape, span: Span, origin: _Origin,
              step: dict | None = None, more: tuple = (), forward: dict | None = None,
              forward_spans: dict | None = None) -> Shape | None:
        """A layer's output shape on ``shape`` (and ``more`` tensors for a layer of several,
        ``forward`` its forward arguments); stated sizes taken on trust are noted at ``step``."""
        layer = mod.layer
        assert layer is not None
        key = None                 # calls like this one give the same result
        if not more and mod.resolved_args is None and mod.torch_reading is None:
            key = _layer_key(mod, shape)
            seen = self.layers_seen.get(key) if key is not None else None
            if seen is not None and len(layer.inputs) == 1:
                # the same layer call on the same input as before: the same result
                mod.resolved_args, mod.in_shape, mod.out_shape = dict(seen[0]), shape, seen[1]
                return seen[1]
        if len(layer.inputs) != 1 + len(more):
            target, label = str((step or {}).get("target", "")), (step or {}).get("label")
            is_let = label is None and target.isidentifier()       # attn(x, x): a let's call
            self.error("shape error", _arity_message(layer, 1 + len(more), step), span,
                       hint=_arity_hint(layer, label or (target if is_let else "m"), is_let))
            return _UNKNOWN
        out = self.layer_shape(mod, [shape, *more], span, origin, forward or {},
                               forward_spans or {}, key,
                               (step or {}).get("operand_spans") or ())
        if ASSUMED:              # stated sizes taken on trust
            _take_on_trust(step)
        return out

    def layer_shape(self, mod: ModuleIR, xs: list, span: Span, origin: _Origin,
                    forward: dict, forward_spans: dict, key: tuple | None,
                    operands: tuple = ()) -> Shape | None:
        """The shape rule on the input shapes ``xs`` (one per tensor of ``layer.inputs``, written
        at ``operands`` in a let's call), the sizes it reads off them inferred or checked; the
        result is kept under ``key``."""
        layer = mod.layer
        assert layer is not None
        by_position: dict[str, int] = {}       # input sizes given by position: their index
        if mod.torch_reading is not None:
            picked = self.pick_reading(mod, xs, mod.span)    # where its arguments are written
            if picked is None:
                return _UNKNOWN
            by_position = picked
            if mod.resolved_args is None and len(xs) == 1:
                key = _layer_key(mod, xs[0])     # the arguments as the kept reading binds them
        values = {k: v if v.__class__ in _PLAIN else self.subst(v) for k, v in mod.args.items()}
        for size in layer.in_sizes:
            stated = values.get(size.param)
            if not size.compare and stated is not None:
                continue          # a stated value the shape rule checks itself
            dim, which = size.dim, size.input
            shape = xs[which]
            if stated.__class__ is int and dim is not None and -len(shape) <= dim < len(shape) \
                    and shape[dim].__class__ is not int:
                # a size stated where the input's dim is symbolic (16 for H): taken on trust
                # and noted, unless the two are known to differ
                if agree(shape[dim], stated):
                    xs[which] = shape = _with_dim(shape, dim, stated)
                    key = None          # each such call notes it at its own step
            try:
                inferred = size.infer(shape)
            except ShapeRuleError as exc:
                if stated is not None and dim is not None and exc.arg == size.param:
                    inferred = shape[dim]       # known to differ from the stated size
                else:
                    self.error("shape error", exc.message, span, hint=exc.hint,
                               notes=(origin.note(shape),))
                    return _UNKNOWN
            if stated is not None and not _same(stated, inferred):
                self.error("shape error", f"{size.param}={_show(stated)}, but the "
                           f"{'input' if len(xs) == 1 else layer.inputs[which]} here has "
                           f"{_show(inferred)} {size.noun}",
                           mod.arg_spans.get(size.param, span),
                           hint=_stated_size_hint(size.param, by_position),
                           notes=(origin.note(shape),))
                if size.dim is None or not isinstance(stated, int):
                    return _UNKNOWN
                key = None            # another call like this one must report its own error
                # go on as if the stated size had arrived, to find later, independent errors
                xs[which] = _with_dim(shape, size.dim, stated)
                inferred = stated
            if mod.resolved_args is not None and not _same(mod.resolved_args[size.param],
                                                           inferred):
                self.error("shape error", f"this shared {layer.name} was built for "
                           f"{size.param}={_show(mod.resolved_args[size.param])}, but the input "
                           f"here has {_show(inferred)} {size.noun}", span,
                           hint="a shared module must see the same input size at every use",
                           notes=(origin.note(shape),))
                return _UNKNOWN
            values[size.param] = inferred
        shape = xs[0]
        if mod.resolved_args is None and not self.resolve(mod, values, shape, span):
            return _UNKNOWN
        try:
            out = tuple(layer.shape(mod.resolved_args, *xs, **forward)) if layer.shape \
                else shape
        except ShapeRuleError as exc:
            where = mod.arg_spans.get(exc.arg, span) if exc.arg else span
            note = origin.note(shape)
            if exc.arg is None and exc.operand is not None and 0 < exc.operand < len(operands):
                where = operands[exc.operand]       # dec(x, memory): at memory
                note = f"the {layer.inputs[exc.operand]} is {fmt_shape(xs[exc.operand])}"
            self.error("shape error", exc.message, forward_spans.get(exc.arg, where),
                       hint=exc.hint, notes=(note,))
            return _UNKNOWN
        mod.out_shape = out
        if key is not None:
            self.layers_seen[key] = (dict(mod.resolved_args), out)
        return out

    def pick_reading(self, mod: ModuleIR, xs: list, span: Span) -> dict[str, int] | None:
        """Keep the reading of a call's positional arguments that fits the input: torch's
        order, where they include the input size, or netspec's, without it. ``LSTM(64, 2)`` on
        128 features is ``hidden_size=64, num_layers=2``; on 64 it reads both ways, an error.
        Where neither fits, the one that names the problem best: torch's when netspec's has
        arguments of the wrong type or range (``Linear(512, 256)``: in_features=512 does not
        match the input, rather than "bias=256 is not a bool"). Returns the input sizes the
        kept reading gives by position, with their index; None when it cannot choose."""
        layer = mod.layer
        assert layer is not None and mod.torch_reading is not None
        torch_args, torch_spans, count = mod.torch_reading
        mod.torch_reading = None
        fits_torch = True
        for size in layer.in_sizes:
            if size.param in torch_args:
                try:
                    inferred = size.infer(xs[size.input])
                except ShapeRuleError:
                    return {}           # the usual path reports it
                fits_torch = fits_torch and _same(self.subst(torch_args[size.param]), inferred)
        lazy = self.reading_fits(mod, mod.args, xs)
        if lazy == "fits" and fits_torch:
            torch_names = [p.name for p in layer.params[:count]]
            lazy_names = [p.name for p in layer.positional[:count]]
            as_torch = ", ".join(f"{k}={_show(torch_args[k])}" for k in torch_names)
            as_lazy = ", ".join(f"{k}={_show(mod.args[k])}" for k in lazy_names)
            inferred = ", ".join(p for p in torch_names if p not in lazy_names)
            self.error("argument error", f"the positional arguments of {layer.name} read two "
                       f"ways here: in torch's order, {as_torch}; without the input size, as "
                       f"netspec reads them, {as_lazy}", span,
                       hint=f"name them, or leave out {inferred}: netspec reads it from the "
                            f"input")
            return None
        if lazy != "fits" and (fits_torch or lazy == "bad arguments"):
            mod.args, mod.arg_spans = torch_args, torch_spans
            return {p.name: i for i, p in enumerate(layer.params[:count])
                    if any(s.param == p.name for s in layer.in_sizes)}
        return {}

    def reading_fits(self, mod: ModuleIR, args: dict[str, Any], xs: list) -> str:
        """Whether a layer call's arguments, with its sizes inferred from the input shapes
        ``xs``, are valid and accept them: "fits", "bad arguments" or "bad shape"."""
        layer = mod.layer
        assert layer is not None
        values = {k: self.subst(v) for k, v in args.items()}
        try:
            for size in layer.in_sizes:
                values.setdefault(size.param, size.infer(xs[size.input]))
        except ShapeRuleError:
            return "bad shape"
        diagnostics: list[Diagnostic] = []
        resolved = validate_values(layer.params, values, {}, mod.span, callee=layer.name,
                                   diagnostics=diagnostics)
        if diagnostics:
            return "bad arguments"
        try:
            if layer.shape is not None:
                layer.shape(resolved, *xs)
        except ShapeRuleError:
            return "bad shape"
        return "fits"

    def resolve(self, mod: ModuleIR, values: dict[str, Any], shape: Shape, span: Span) -> bool:
        """Validate a layer's arguments, inferred sizes included, and keep them; False if bad."""
        layer = mod.layer
        assert layer is not None
        spans = mod.arg_spans
        diagnostics: list[Diagnostic] = []
        resolved = validate_values(layer.params, values, spans, span, callee=layer.name,
                                   diagnostics=diagnostics)
        for d in diagnostics:
            self.errors.add(d)
        if diagnostics:
            return False
        for k, v in resolved.items():
            if v.__class__ is int and v > self.max_dim:
                self.error("limit error", f"{layer.name}: {k}={v:,} is over the limit of "
                           f"{self.max_dim:,}", spans.get(k, span))
                return False
        for k, v in resolved.items():
            if v.__class__ not in _PLAIN and has_symbols(v):
                self.error("shape error", f"{layer.name}: {k}={_show(v)} is not a concrete size",
                           spans.get(k, span), hint="give the input a concrete shape with --input")
                return False
        mod.resolved_args = resolved
        mod.in_shape = shape
        return True

    def block(self, mod: ModuleIR, shape: Shape, span: Span, origin: _Origin,
              kind: Kind = None, step: dict | None = None) -> Shape | None:
        with self.kind_scope(kind):
            return self.block_body(mod, shape, span, origin, step)

    @contextlib.contextmanager
    def kind_scope(self, entry: Kind) -> Iterator[None]:
        """A graph of its own (a block's, a tensor's): fresh kinds, its input of kind ``entry``."""
        outer = self.kinds, self.entry_kind
        self.kinds, self.entry_kind = {}, entry
        try:
            yield
        finally:
            self.kinds, self.entry_kind = outer

    def block_body(self, mod: ModuleIR, shape: Shape, span: Span, origin: _Origin,
                   step: dict | None = None) -> Shape | None:
        if mod.input_dims is not None:
            declared = self.subst(mod.input_dims)
            fits = len(declared) == len(shape) and all(
                self.bind(d, a) for d, a in zip(mod.input_dims, shape))
            bound = self.subst(mod.input_dims)         # its symbols as this input binds them
            if ASSUMED:
                _take_on_trust(step, why=f"{mod.cls_name} declares its input "
                               f"{fmt_shape(bound)}" +
                               (f" at {mod.input_span}" if mod.input_span else ""))
            if fits:          # the body sees the declared sizes where they are concrete
                shape = tuple(unify(a, d) for a, d in zip(shape, bound))
            else:
                # written with symbols this input binds to sizes it lacks: show them bound
                here = f", {fmt_shape(bound)} here" if len(bound) == len(shape) and any(
                    b != d and b != a for b, d, a in zip(bound, declared, shape)) else ""
                self.error("shape error", f"{mod.cls_name} declares the input "
                           f"{fmt_shape(declared)}{here}, but gets {fmt_shape(shape)}",
                           span, notes=(origin.note(shape) if origin.span else
                                        "the input shape was given with --input (input= in "
                                        "Python)" if span == mod.input_span else None,
                                        f"declared at {mod.input_span}"
                                        if mod.input_span and mod.input_span != span else None))
                return _UNKNOWN
        if mod.in_shape is not None and mod.out_shape is not None and mod.in_shape == shape:
            self.kind_out = None
            return mod.out_shape     # a shared block used again with the same input
        mod.in_shape = shape
        env: dict[str, Shape | None] = {}
        origins: dict[str, _Origin] = {}
        assert mod.graph is not None
        out = self.graph(mod, mod.graph, shape, origin, env, origins)
        for decl in mod.tensors.values():     # tensors no step reads are still built
            self.tensor_shapes(mod, decl)
        for name in mod.shared:               # a let no step uses has no input to size it
            child = mod.children[name]
            if child.in_shape is None and not _applied(mod, name):
                self.error("shape error", f"let '{name}' is never used, so its input size is "
                           "unknown", child.span, hint="use it as a step, or remove it")
        for node, dims, espan in mod.expects:
            actual = env.get(node)
            expected = self.subst(dims)
            fits = actual is None or (len(actual) == len(expected) and
                                      all(self.bind(e, a) for e, a in zip(dims, actual)))
            if ASSUMED:
                _take_on_trust(mod.graph.nodes[node], espan)
            if not fits:
                self.error("shape error", f"expected {fmt_shape(expected)}, but the value here "
                           f"is {fmt_shape(actual)}", espan, notes=(origins[node].note(actual),))
        self.ties(mod)
        mod.out_shape = out
        self.kind_out = self.kinds.get(list(mod.graph.nodes)[-1])
        return out

    # ---- graphs ---------------------------------------------------------------------------
    def graph(self, mod: ModuleIR, graph: nx.DiGraph, shape: Shape, origin: _Origin,
              env: dict, origins: dict) -> Shape | None:
        nodes = list(graph.nodes(data=True))
        max_dim = self.max_dim
        kinds = self.kinds
        i = 0
        while i < len(nodes):
            nid, data = nodes[i]
            op = data["op"]
            if op == "branch":
                graph = self.splice_branch(mod, graph, nid, data)
                nodes = list(graph.nodes(data=True))
                continue
            if op == "placeholder":
                out = shape
                origins[nid] = origin
                if self.entry_kind is not None:
                    kinds[nid] = self.entry_kind
            elif op == "output":
                ref = data["args"][0]
                out = env.get(ref.node)
                origins[nid] = origins.get(ref.node, origin)
                if ref.node in kinds:
                    kinds[nid] = kinds[ref.node]
            else:
                inputs = []
                src = None
                known = True
                for a in data["args"]:
                    if isinstance(a, Ref):
                        arriving = env.get(a.node)
                        known = known and arriving is not _UNKNOWN
                        if src is None:
                            src = origins.get(a.node, origin)
                        inputs.append(arriving)
                    else:
                        inputs.append(())
                out = self.node(mod, data, inputs, src or origin, env, origins) if known \
                    else _UNKNOWN
                if self.kind_out is not None:     # absent from kinds: unknown
                    kinds[nid] = self.kind_out
                    self.kind_out = None
                origins[nid] = _Origin((data["span"], "step"))
            if out is not None:
                for d in out:
                    if d.__class__ is int and d > max_dim:
                        self.error("limit error", f"the shape {fmt_shape(out)} has a dimension "
                                   f"over the limit of {max_dim:,}", data["span"])
                        out = _UNKNOWN
                        break
            env[nid] = data["shape"] = out
            i += 1
        return env[nodes[-1][0]]

    def node(self, mod: ModuleIR, data: dict, inputs: list, origin: _Origin, env: dict,
             origins: dict) -> Shape | None:
        op = data["op"]
        if op == "call_module":
            child = mod.children[data["target"]]
            if len(inputs) > 1 or data["kwargs"]:
                return self.module_call(child, data, inputs, origin, env)
            return self.module(child, inputs[0], data["span"], origin,
                               self.kinds.get(data["args"][0].node), data)
        if op == "get_attr":
            decl = mod.tensors[data["target"]]
            shapes = self.tensor_shapes(mod, decl)
            # const and param tensors take the model's float dtype, but a boolean const stays
            self.kind_out = "bool" if decl.boolean else "float"
            return None if shapes is None else shapes[data.get("key") or ""]
        if op == "call_function":
            return self.function(data, inputs, origin)
        if op == "loop":
            self.entry_kind = None     # the body may change the kind from one turn to the next
            cond = self.fragment(mod, data["cond"], inputs[0], origin, env, origins)
            body = self.fragment(mod, data["body"], inputs[0], origin, env, origins)
            if body is not None and cond is not None and body != inputs[0]:
                self.error("shape error", f"a while loop must keep the shape of its value, but "
                           f"its body turns {fmt_shape(inputs[0])} into {fmt_shape(body)}",
                           data["body"].graph.nodes[list(data["body"].graph.nodes)[-1]]["span"])
                return _UNKNOWN
            self.kind_out = None
            return inputs[0]
        raise AssertionError(op)

    def module_call(self, mod: ModuleIR, data: dict, inputs: list, origin: _Origin,
                    env: dict) -> Shape | None:
        """``attn(q, k, v, attn_mask=m)``: a ``let`` layer called on tensors of its own."""
        forward = {k: env.get(v.node) if v.__class__ is Ref else v
                   for k, v in data["kwargs"].items()}
        if any(v is _UNKNOWN for v in forward.values()):
            return _UNKNOWN
        kinds = [self.kinds.get(a.node) for a in data["args"]]
        out = self.layer(mod, inputs[0], data["span"], origin, data, tuple(inputs[1:]), forward,
                         data.get("arg_spans"))
        if out is not None and out is not _UNKNOWN and any(k is not None for k in kinds):
            for i, kind in enumerate(kinds):
                if kind is None:
                    continue
                taken = self.layer_kind(mod, kind, data["operand_spans"][i], origin)
                if taken is False:
                    return _UNKNOWN
                self.kind_out = taken
        return out

    def fragment(self, mod: ModuleIR, frag: Fragment, shape: Shape, origin: _Origin,
                 env: dict, origins: dict) -> Shape | None:
        return self.graph(mod, frag.graph, shape, origin, env, origins)

    def function(self, data: dict, inputs: list, origin: _Origin) -> Shape | None:
        fn = lookup_function(data["target"])
        kwargs = {k: self.subst(v) for k, v in data["kwargs"].items()} if data["kwargs"] else {}
        data["static"] = kwargs
        rule = DTYPE_RULES.get(fn.name)
        category = "shape error"
        try:
            out = tuple(fn.shape(*inputs, **kwargs))
            if ASSUMED:          # sizes the rule took as equal without knowing they are
                data.pop("assumes", None)        # this run's, where a block runs again
                _take_on_trust(data)
            if rule is not None:
                category = "type error"
                args = data["args"]
                if len(args) == 1 and args[0].__class__ is Ref:    # one tensor: most calls
                    only = self.kinds.get(args[0].node)
                    if only is not None or fn.name in KIND_MAKERS:
                        self.kind_out = rule((only,), **kwargs)
                else:
                    self.kind_out = rule(self.operand_kinds(args), **kwargs)
            return out
        except ShapeRuleError as exc:
            ASSUMED.clear()
            spans = data.get("operand_spans") or ()
            where = data["span"]
            if exc.arg and exc.arg in data.get("arg_spans", {}):
                where = data["arg_spans"][exc.arg]
            elif exc.operand is not None and exc.operand < len(spans):
                where = spans[exc.operand]
            self.error(category, exc.message, where, hint=exc.hint)
            return _UNKNOWN

    def operand_kinds(self, args: tuple) -> tuple[Kind, ...]:
        """The kinds of a call's operands, tensors and numbers."""
        known = self.kinds
        return tuple([known.get(a.node) if a.__class__ is Ref else literal_kind(a)
                      for a in args])

    def splice_branch(self, mod: ModuleIR, graph: nx.DiGraph, nid: str, data: dict) -> nx.DiGraph:
        """Replace a ``branch`` node by the fragment its (now decidable) condition selects."""
        cond = self.subst(data["cond"])
        if not isinstance(cond, bool):
            self.error("shape error", f"cannot decide this condition at compile time: {cond}",
                       data["span"], hint="the dims it uses must be known from the input shape")
            cond = True
        frag: Fragment = data["then"] if cond else data["orelse"]
        mod.children.update(frag.children)
        return _splice(mod, graph, nid, frag)

    # ---- tensors and ties -----------------------------------------------------------------
    def tensor_shapes(self, mod: ModuleIR, decl: TensorDecl) -> dict[str, Shape] | None:
        """The shapes of a tensor declaration's items, computed once."""
        if decl.shapes is None:
            shapes = {}
            kinds = set()
            for key, frag in decl.items.items():
                env: dict = {}
                with self.kind_scope(None):
                    out = self.graph(mod, frag.graph, (), _Origin((decl.span, "step")), env, {})
                    kinds.add(self.kinds.get(list(frag.graph.nodes)[-1]))
                if out is None:
                    return None
                if has_symbols(out):
                    self.error("shape error", f"the shape of '{decl.name}' {fmt_shape(out)} is "
                               f"not concrete", decl.span,
                               hint="its sizes must be known from the arguments or the input")
                    return None
                shapes[key] = out
            decl.shapes = shapes
            decl.boolean = not decl.trainable and kinds == {"bool"}
        return decl.shapes

    def ties(self, mod: ModuleIR) -> None:
        for tie in mod.ties:
            found = []
            for path, span in ((tie.target, tie.target_span), (tie.source, tie.source_span)):
                shape = self.param_shape(mod, path, span)
                if shape is None:
                    break
                found.append(shape)
            else:
                if found[0] != found[1]:
                    self.error("shape error", f"cannot tie {'.'.join(tie.target)} "
                               f"{fmt_shape(found[0])} to {'.'.join(tie.source)} "
                               f"{fmt_shape(found[1])}: the shapes differ", tie.span)

    def param_shape(self, mod: ModuleIR, path: tuple[str, ...], span: Span) -> Shape | None:
        owner, name = mod, path[-1]
        for part in path[:-1]:
            if part not in owner.children:
                self.error("name error", f"no module '{part}' in {'.'.join(path)}", span,
                           hint=did_you_mean(part, owner.children) or
                           "modules here: " + ", ".join(owner.children))
                return None
            owner = owner.children[part]
        shapes = param_shapes(owner)
        if shapes is None:
            return None
        if name not in shapes:
            self.error("name error", f"no parameter '{name}' in {'.'.join(path)}", span,
                       hint=did_you_mean(name, shapes) or "parameters here: " + ", ".join(shapes))
            return None
        return shapes[name]


def param_shapes(mod: ModuleIR) -> dict[str, Shape] | None:
    """The direct parameters of a module and their shapes: from the layer's tensor table, or
    for a layer without one, by building it on ``meta``."""
    if mod.kind == "block":
        return {name: decl.shapes[""] for name, decl in mod.tensors.items()
                if decl.trainable and decl.container == "tensor" and decl.shapes}
    if mod.resolved_args is None:
        return None
    table = layer_tensors(mod)
    if table is not None:
        return {name: tuple(shape) for name, (shape, kind) in table.items() if kind == "param"}
    import torch

    with torch.device("meta"):
        layer = (mod.layer.cls or getattr(torch.nn, mod.cls_name))(**mod.resolved_args)
    return {n: tuple(p.shape) for n, p in layer.named_parameters(recurse=False)}


def _splice(mod: ModuleIR, graph: nx.DiGraph, nid: str, frag: Fragment) -> nx.DiGraph:
    """A copy of ``graph`` with node ``nid`` replaced by the nodes of ``frag``."""
    out = nx.DiGraph()
    fg = frag.graph
    entry = placeholder(fg)
    branch_input = graph.nodes[nid]["args"][0]
    rename: dict[str, Ref] = {entry: branch_input}
    result: Ref | None = None

    def fix(value: Any) -> Any:
        if isinstance(value, Ref):
            return rename.get(value.node, value)
        if isinstance(value, tuple):
            return tuple(fix(v) for v in value)
        return value

    for node, data in graph.nodes(data=True):
        if node != nid:
            new = dict(data, args=fix(data["args"]), kwargs={k: fix(v) for k, v in
                                                               data["kwargs"].items()})
            out.add_node(node, **new)
            continue
        for fnode, fdata in fg.nodes(data=True):
            if fdata["op"] == "placeholder":
                continue
            if fdata["op"] == "output":
                result = fix(fdata["args"][0])
                continue
            new_id = f"{fnode}_b{nid.rsplit('_', 1)[-1]}"
            out.add_node(new_id, **dict(fdata, args=fix(fdata["args"]),
                                        kwargs={k: fix(v) for k, v in fdata["kwargs"].items()}))
            rename[fnode] = Ref(new_id)
        assert result is not None
        rename[nid] = result
        if result.node in out and out.nodes[result.node]["op"] != "placeholder":
            out.nodes[result.node]["name"] = data.get("name", out.nodes[result.node].get("name"))
    for node, data in out.nodes(data=True):
        for a in list(data["args"]) + list(data["kwargs"].values()):
            for r in (a if isinstance(a, tuple) else (a,)):
                if isinstance(r, Ref) and r.node in out:
                    out.add_edge(r.node, node)
    mod.graph = out if mod.graph is graph else mod.graph
    return out


def _kind_note(origin: _Origin, kind: str) -> str | None:
    """Where the non-float value was made: "the step on line 3 gives a bool tensor"."""
    if origin.span is None or origin.what == "input":
        return None
    return f"the step on line {origin.span.line} gives {_a(kind)} tensor"


def _from_torch(mod: ModuleIR) -> bool:
    """Whether a layer is a ``torch.nn`` class, whose dtype needs are known."""
    cls = mod.layer.cls if mod.layer is not None else None
    return cls is None or cls.__module__.startswith("torch.")


def _a(kind: str) -> str:
    """The kind with its article: "a bool", "an int"."""
    return f"an {kind}" if kind == "int" else f"a {kind}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (list, tuple)) and len(a) == 1:
        return _same(a[0], b)
    if isinstance(b, (list, tuple)) and len(b) == 1:
        return _same(a, b[0])
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _applied(mod: ModuleIR, name: str) -> bool:
    """Whether a step of ``mod`` applies its child ``name`` (though its shape may be unknown:
    an error there is not also "never used")."""
    return any(d["op"] == "call_module" and d["target"] == name
               for _, d in mod.graph.nodes(data=True))


def _arity_message(layer: LayerDef, given: int, step: dict | None) -> str:
    names = ", ".join(layer.inputs)
    needs = f"{layer.name} takes {len(layer.inputs)} tensor{'s' if len(layer.inputs) > 1 else ''}"
    if len(layer.inputs) > 1:
        needs += f" ({names})"
    if given == 1 and (step is None or len(step["args"]) == 1):
        return f"{needs}, but a step passes it one"
    return f"{needs}, but this call passes {given}"


def _arity_hint(layer: LayerDef, name: str, is_let: bool) -> str:
    if len(layer.inputs) == 1:
        return f"apply it to one tensor: `y = {name}(x)`, or `x -> {name}`"
    args = ", ".join({"query": "x", "key": "x", "value": "x"}.get(n, n) for n in layer.inputs)
    if is_let:
        return f"call it on its {len(layer.inputs)} tensors: `y = {name}({args})`"
    return (f"declare it with `let {name} = {layer.name}(...)` and call it on its tensors: "
            f"`y = {name}({args})`")


_ORDINALS = ("first", "second", "third", "fourth")


def _stated_size_hint(param: str, by_position: dict[str, int]) -> str:
    """How to let netspec infer an input size the user stated wrongly: by name or by position
    (``Linear(512, 256)``, torch's order)."""
    if param not in by_position:
        return f"remove {param}= to infer it, or fix the step before"
    i = by_position[param]
    nth = _ORDINALS[i] if i < len(_ORDINALS) else f"argument {i + 1}"
    return f"leave out {param}, the {nth} argument, to infer it, or fix the step before"


def _with_dim(shape: Shape, dim: int, size: Any) -> Shape:
    """``shape`` with ``size`` at ``dim`` (negative counting from the end)."""
    return tuple(size if i == dim % len(shape) else d for i, d in enumerate(shape))


def _take_on_trust(data: dict | None, span: Span | None = None, why: str | None = None) -> None:
    """Empty ``ASSUMED`` onto a node's ``assumes`` (none: dropped): ``(a, b, span, why)`` per
    pair of sizes, ``span`` where it is noted (None: at the node) and ``why`` a note on where
    it comes from."""
    if data is not None:
        data["assumes"] = (*data.get("assumes", ()),
                           *((a, b, span, why) for a, b in ASSUMED))
    ASSUMED.clear()


@gc_paused
def infer_shapes(module: ModuleIR, input_shape: Shape | None, sources: SourceMap | None = None,
                 ) -> ModuleIR:
    """Infer every shape of ``module`` for ``input_shape`` (or its declared input)."""
    sources = sources or SourceMap()
    inference = _ShapeInference(sources)
    ASSUMED.clear()          # what an earlier run left when it stopped on a bug
    if input_shape is None:
        if module.input_dims is None:
            raise SpecError([Diagnostic("shape error", f"block {module.cls_name} declares no "
                                        "input, so its input shape is unknown", module.span,
                                        hint="add `input x: [N, ...]` or pass --input")],
                            sources)
        shape = module.input_dims
        origin = _Origin((module.input_span, "input"))
    else:
        shape = tuple(input_shape)
        origin = _Origin((None, "input"))
    inference.module(module, shape, module.input_span or module.span, origin)
    inference.errors.check()
    lint(module, shaped=True)
    return module
