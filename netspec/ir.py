"""The graph IR: a tree of ``ModuleIR`` whose blocks carry a networkx dataflow graph.

Every graph node has an ``op`` from a fixed set (after torch.fx):

=============== ==================================================================
``placeholder`` the block's input (one per graph)
``call_module`` apply child module ``target`` to ``args[0]`` (a layer of several tensors:
                to all ``args``, with ``kwargs`` for its ``forward``)
``call_function`` apply registry function ``target`` to ``args`` (node refs or statics)
``get_attr``    read the block's own tensor ``target`` (a ``const`` or ``param``)
``branch``      a compile-time ``if`` on dim symbols: ``then``/``orelse`` fragments
``loop``        a runtime ``while``: ``cond`` and ``body`` fragments
``output``      the graph's result, ``args[0]``
=============== ==================================================================

Passes add one attribute each: ``infer_shapes`` sets ``shape`` on every node and removes every
``branch``; nothing else mutates a graph after elaboration. ``lint`` checks the invariants.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import networkx as nx

from netspec.errors import Span
from netspec.gc_pause import gc_paused
from netspec.registry import LayerDef

OPS = frozenset({"placeholder", "call_module", "call_function", "get_attr", "branch", "loop",
                 "output"})


@dataclass(frozen=True)
class Ref:
    """A graph value used as an argument: the id of the node that produces it."""

    node: str


@dataclass
class TensorDecl:
    """A ``const`` (buffer) or ``param`` (Parameter): one tensor, or a list/dict of them."""

    name: str
    trainable: bool
    items: dict[str, "Fragment"]   # "" for a single tensor; "0", "1".. or keys for containers
    container: str                 # "tensor" | "list" | "dict"
    span: Span
    shapes: dict[str, tuple] | None = None   # set by infer_shapes
    # set by infer_shapes: a const whose every item is boolean (a mask) stays boolean;
    # anything else is stored in the model's floating dtype
    boolean: bool = False


@dataclass
class TieIR:
    """``tie target = source`` between two parameter paths inside one block."""

    target: tuple[str, ...]
    source: tuple[str, ...]
    span: Span
    target_span: Span
    source_span: Span


@dataclass
class Fragment:
    """A sub-graph with one placeholder and one output, and the children it introduces."""

    graph: nx.DiGraph
    children: dict[str, "ModuleIR"] = field(default_factory=dict)


_uids = itertools.count()


@dataclass(slots=True)
class ModuleIR:
    """One module of the tree: a torch.nn layer, or a block with a dataflow graph."""

    kind: str                      # "layer" | "block"
    cls_name: str                  # "Linear", or the block name, or "Sequential"
    span: Span
    layer: LayerDef | None = None
    args: dict[str, Any] = field(default_factory=dict)       # layer arguments as written
    arg_spans: dict[str, Span] = field(default_factory=dict)
    graph: nx.DiGraph | None = None
    children: dict[str, "ModuleIR"] = field(default_factory=dict)
    shared: set[str] = field(default_factory=set)            # children declared with `let`
    tensors: dict[str, TensorDecl] = field(default_factory=dict)
    ties: list[TieIR] = field(default_factory=list)
    init_rules: list[Any] = field(default_factory=list)
    input_dims: tuple | None = None      # declared input dims (ints / Syms), None if undeclared
    input_span: Span | None = None
    expects: list[tuple[str, tuple, Span]] = field(default_factory=list)
    block_args: dict[str, Any] = field(default_factory=dict)
    label: str | None = None             # a ``{ }`` body's step name (``gate: { ... }``)
    # a layer call whose positional arguments also read in torch's order, reaching the input
    # size (``LSTM(64, 2)``): (args, arg_spans, how many were positional); infer_shapes keeps
    # the reading that fits the input and drops this
    torch_reading: tuple[dict[str, Any], dict[str, Span], int] | None = None
    uid: int = field(default_factory=_uids.__next__)   # 0, 1, 2, ... in order of creation
    # set by infer_shapes:
    resolved_args: dict[str, Any] | None = None   # layer args with lazy sizes filled in
    in_shape: tuple | None = None
    out_shape: tuple | None = None

    def walk(self, prefix: str = "") -> Iterator[tuple[str, "ModuleIR"]]:
        """Every module of the tree with its dotted path, parents first, shared ones once."""
        seen: set[int] = set()
        queue = collections.deque([(prefix, self)])
        while queue:
            path, mod = queue.popleft()
            if mod.uid in seen:
                continue
            seen.add(mod.uid)
            yield path, mod
            if mod.children:             # a layer has none: most of a tree's modules
                for name, child in mod.children.items():
                    queue.append((join_path(path, name), child))


class _NoItems(dict):
    """An empty dict that refuses items, shared by every layer's IR (its children, tensors and
    block arguments) and by every graph node without keyword arguments. A dict, unlike a
    ``MappingProxyType``, so a built model, which keeps its IR, can still be deep-copied."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a shared empty dict: a layer's ModuleIR has no children, tensors or "
                        "block arguments, and a node without keyword arguments has none")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _refuse  # type: ignore


NO_ITEMS: Any = _NoItems()
_NO_NAMES: Any = frozenset()


def layer_ir(layer: LayerDef, span: Span, args: dict[str, Any],
             arg_spans: dict[str, Span]) -> ModuleIR:
    """The ``ModuleIR`` of one layer call. A layer has no children, tensors, ties, rules or
    expectations of its own, so it shares read-only empty ones instead of making nine
    containers per layer (a tenth of the IR's memory on a long chain)."""
    # by position, in the order of ModuleIR's fields (keywords cost twice as much here):
    # kind, cls_name, span, layer, args, arg_spans, graph, children, shared, tensors, ties,
    # init_rules, input_dims, input_span, expects, block_args
    return ModuleIR("layer", layer.name, span, layer, args, arg_spans, None, NO_ITEMS,
                    _NO_NAMES, NO_ITEMS, (), (), None, None, (), NO_ITEMS)


def join_path(path: str, name: str) -> str:
    """A child's dotted path: ``conv`` under ``block.0`` is ``block.0.conv``; under the root,
    ``conv``."""
    return f"{path}.{name}" if path else name


def forward_class_name(mod: ModuleIR) -> str:
    """The class of a block with a generated forward: the block's name; for a ``{ }`` body
    (``Sequential`` in the IR, which its class is not), its label's: ``gate: { ... }`` is a
    ``Gate``, ``res_block:`` a ``ResBlock``, an unnamed body a ``Block``."""
    if mod.cls_name != "Sequential":
        return mod.cls_name
    name = "".join(part[:1].upper() + part[1:] for part in (mod.label or "").split("_"))
    return name if name.isidentifier() else "Block"


def class_name(mod: ModuleIR) -> str:
    """The class of the module built for ``mod``: its layer, a block's ``nn.Sequential``
    (subclass), or the generated class of a block with a forward of its own."""
    if mod.kind == "block" and not is_sequential(mod):
        return forward_class_name(mod)
    return mod.cls_name


def new_graph() -> nx.DiGraph:
    return nx.DiGraph()


def add_node(graph: nx.DiGraph, nid: str, data: dict[str, Any]) -> str:
    """Add a new node with its attributes (``op``, ``target``, ``args`` as a tuple, ``kwargs``,
    ``span`` and any more; the dict becomes the node's own) and the edges from every ``Ref``
    among its arguments.

    The node and its edges go straight into the graph's adjacency dicts, as
    ``DiGraph.add_node``/``add_edge`` would write them (an edge's data dict shared by
    ``_succ`` and ``_pred``) but without their argument checks and nested calls, which took
    about half the time of adding a node.
    """
    succ = graph._succ
    graph._node[nid] = data
    succ[nid] = {}
    preds = graph._pred[nid] = {}
    for ref in refs(data["args"], data["kwargs"]):
        source = ref.node
        if source in succ:       # a fragment may use values of the enclosing graph
            preds[source] = succ[source][nid] = {}
    cache = getattr(graph, "__networkx_cache__", None)
    if cache:                    # converted copies of the graph that networkx keeps
        cache.clear()
    return nid


def graph_nodes(mod: ModuleIR) -> Iterator[tuple[nx.DiGraph, dict]]:
    """Every node of a block's graphs with the graph that holds it: its own graph first, then
    its ``const``/``param`` expressions, then the ``while`` loops' cond and body in them."""
    graphs = collections.deque([mod.graph] if mod.graph is not None else [])
    graphs.extend(frag.graph for decl in mod.tensors.values() for frag in decl.items.values())
    while graphs:
        graph = graphs.popleft()
        for _, data in graph.nodes(data=True):
            yield graph, data
            if data["op"] == "loop":
                graphs.extend((data["cond"].graph, data["body"].graph))


def refs(args: tuple, kwargs: dict) -> Sequence[Ref]:
    """The ``Ref``s among a node's arguments, in order (looking one level into lists)."""
    if not kwargs and len(args) == 1 and args[0].__class__ is Ref:
        return args                               # one tensor argument: most nodes
    out = [a for a in args if a.__class__ is Ref]
    if not kwargs and len(out) == len(args):      # the usual node: tensor arguments only
        return out
    out = []
    for values in (args, kwargs.values()):
        for a in values:
            if isinstance(a, Ref):
                out.append(a)
            elif isinstance(a, (tuple, list)):
                out.extend(x for x in a if isinstance(x, Ref))
    return out


def placeholder(graph: nx.DiGraph) -> str:
    return next(n for n, d in graph.nodes(data=True) if d["op"] == "placeholder")


def output(graph: nx.DiGraph) -> str:
    return next(n for n, d in graph.nodes(data=True) if d["op"] == "output")


def is_sequential(mod: ModuleIR) -> bool:
    """A block is a Sequential when its graph is a chain of module calls and nothing else.

    A call of a layer that returns a tuple (an LSTM) needs its element picked out, which an
    ``nn.Sequential`` would not do, so a block with one has a generated forward.
    """
    if mod.kind != "block" or mod.tensors or mod.graph is None:
        return False
    previous = None
    for nid, data in mod.graph.nodes(data=True):
        op = data["op"]
        if op == "placeholder":
            previous = nid
        elif op in ("call_module", "output"):
            value = data["args"][0]
            if value.__class__ is not Ref or value.node != previous or len(data["args"]) > 1 \
                    or data["kwargs"]:
                return False
            child = mod.children[data["target"]] if op == "call_module" else None
            if child is not None and child.layer is not None and \
                    child.layer.output_index is not None:
                return False
            previous = nid
        else:
            return False
    return True


def has_init_rules(root: ModuleIR) -> bool:
    """Whether any block of the tree (or the file, whose rules the root holds) has init rules."""
    return any(mod.init_rules for _, mod in root.walk())


def sequential_children(mod: ModuleIR) -> list[tuple[str, ModuleIR]]:
    """The children of a Sequential block's built module (``is_sequential``), in order.

    A ``let`` module sits at each position it is used, as in PyTorch's own tied example;
    every other child appears once, under its name.
    """
    children = []
    for _, data in mod.graph.nodes(data=True):
        if data["op"] == "call_module":
            target = data["target"]
            name = target if target not in mod.shared else (
                data.get("label") or str(data["position"]))
            children.append((name, mod.children[target]))
    return children


class LintError(AssertionError):
    """An IR invariant does not hold: a bug in netspec, never in the user's spec."""


@gc_paused
def lint(module: ModuleIR, *, shaped: bool = False) -> None:
    """Check the IR's invariants over the whole tree; ``shaped`` after ``infer_shapes``."""
    for path, mod in module.walk():
        where = path or mod.cls_name
        if mod.kind == "layer":
            if mod.layer is None or mod.graph is not None:
                raise LintError(f"{where}: a layer has a LayerDef and no graph")
            if shaped and mod.resolved_args is None:
                raise LintError(f"{where}: a layer without resolved arguments")
            continue
        if mod.graph is None:
            raise LintError(f"{where}: a block without a graph")
        _lint_graph(mod.graph, mod, where, shaped, outer=set())


def _lint_graph(graph: nx.DiGraph, mod: ModuleIR, where: str, shaped: bool,
                outer: set[str]) -> None:
    seen: set[str] = set()                   # the nodes before this one in insertion order
    ends = {"placeholder": 0, "output": 0}
    preds = graph._pred
    for nid, data in graph._node.items():
        op = data["op"]
        if op not in OPS:
            raise LintError(f"{where}: node {nid} has unknown op {op!r}")
        if op in ends:
            ends[op] += 1
        if shaped and op == "branch":
            raise LintError(f"{where}: branch {nid} survived shape inference")
        if shaped and "shape" not in data:
            raise LintError(f"{where}: node {nid} has no shape")
        for ref in refs(data["args"], data["kwargs"]):
            if ref.node not in seen and ref.node not in outer:
                raise LintError(f"{where}: node {nid} uses {ref.node} before it is defined")
        # the passes visit nodes in insertion order, so it must be a topological order (which
        # also rules out cycles): every edge comes from a node before this one
        if not seen.issuperset(preds[nid]):
            raise LintError(f"{where}: an edge goes backwards in the node order")
        if op == "call_module":
            if data["target"] not in mod.children:
                raise LintError(f"{where}: node {nid} calls unknown child {data['target']!r}")
        elif op == "get_attr":
            if data["target"] not in mod.tensors:
                raise LintError(f"{where}: node {nid} reads unknown tensor {data['target']!r}")
        elif op == "loop":
            for frag in (data["cond"], data["body"]):
                _lint_graph(frag.graph, mod, where, shaped, outer | seen)
        seen.add(nid)
    if ends["placeholder"] != 1 or ends["output"] != 1:
        raise LintError(f"{where}: a graph needs exactly one placeholder and one output")
