"""``netspec graph``: a picture of a spec, drawn with Graphviz.

Blocks are nested clusters (labelled with the block, its arguments and its path), layers are
boxes (``conv1: Conv2d 3→64 k7 s2`` and the parameter count), functions of expressions are
small ovals, and every edge carries the shape flowing along it. Consecutive uses of identical
children (a ``repeat``) are drawn once with ``×k`` and the shape change, unless ``expand``.
Modules used more than once (``let``) have a dashed purple border and are linked by dotted
lines; tied parameters are noted on both modules and linked; ``const`` tensors are orange
cylinders, ``param`` tensors green ones.

``to_dot`` needs only the ``graphviz`` Python package; ``render`` to anything but ``.dot`` also
needs the Graphviz program ``dot``.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from netspec.api import Analysis
from netspec.dims import Sym, fmt_shape
from netspec.elaborate import RUNNING
from netspec.errors import NetspecError
from netspec.ir import ModuleIR, Ref, class_name, refs
from netspec.registry import FUNCTIONS, REQUIRED

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}

_MAX_PERIOD = 16          # the longest repeated unit of children that is folded

_FONT = "Helvetica"
_LAYER = {"shape": "box", "style": "rounded,filled", "fillcolor": "#dbe8f7", "color": "#5b7fa6"}
_SHARED = {"style": "rounded,filled,dashed", "fillcolor": "#ece1f7", "color": "#7b3fb0",
           "penwidth": "1.6"}
_TIED = {"style": "rounded,filled,dashed", "color": "#c0601a", "penwidth": "1.6"}
_FUNCTION = {"shape": "ellipse", "style": "filled", "fillcolor": "#eeeeee", "color": "#999999",
             "fontsize": "9", "height": "0.3", "margin": "0.04,0.02"}
_CONST = {"shape": "cylinder", "style": "filled", "fillcolor": "#fde3b8", "color": "#b97a1c"}
_PARAM = {"shape": "cylinder", "style": "filled", "fillcolor": "#d6efd0", "color": "#4f8f45"}
_LOOP = {"shape": "hexagon", "style": "filled", "fillcolor": "#fff4d6", "color": "#b8a060"}
_IO = {"shape": "oval", "style": "filled", "fillcolor": "#ffffff", "color": "#333333"}
_CLUSTER = {"style": "rounded", "color": "#8a8a8a", "labeljust": "l", "fontsize": "10"}
_CLUSTER_SHARED = {"style": "rounded,dashed", "color": "#7b3fb0", "penwidth": "1.6"}
_FOLD = {"style": "rounded,filled", "fillcolor": "#f4f4f4", "color": "#555555",
         "penwidth": "1.4"}


class _Val(NamedTuple):
    """A value of the dataflow: the dot node that produces it, its shape, and the name the spec
    gives it (``e1 = ...``), if any."""

    node: str
    shape: tuple | None
    name: str | None = None


def _text(*lines: str) -> str:
    """A Graphviz label of several centred lines (backslashes kept literal)."""
    return "\\n".join(line.replace("\\", "\\\\") for line in lines if line)


def _shape(shape: tuple | None) -> str:
    return fmt_shape(shape) if shape is not None else ""


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (tuple, list)):
        return "x".join(_value(x) for x in v)
    if callable(v) and hasattr(v, "__name__"):
        return v.__name__
    return str(v)


def _same(v: Any) -> Any:
    """An int for a tuple of equal ints (kernel 3 for (3, 3)), else the value."""
    if isinstance(v, (tuple, list)) and v and all(x == v[0] for x in v):
        return v[0]
    return v


_CONV = re.compile(r"(Lazy)?Conv(Transpose)?[123]d")
_POOL = re.compile(r"(Max|Avg|LP)Pool[123]d")


def layer_text(mod: ModuleIR) -> str:
    """The key arguments of a layer: ``3→64 k7 s2`` for a convolution, ``512→10`` for Linear."""
    a = mod.resolved_args or mod.args
    name = mod.cls_name
    try:
        if _CONV.fullmatch(name):
            parts = [f"{a['in_channels']}→{a['out_channels']}",
                     f"k{_value(_same(a['kernel_size']))}"]
            for key, short, default in (("stride", "s", 1), ("padding", "p", 0),
                                        ("dilation", "d", 1), ("groups", "g", 1)):
                if key in a and _same(a[key]) not in (default, "valid"):
                    parts.append(f"{short}{_value(_same(a[key]))}")
            return " ".join(parts)
        if name in ("Linear", "LazyLinear"):
            return f"{a['in_features']}→{a['out_features']}" + ("" if a.get("bias", True)
                                                                 else " no bias")
        if name == "Embedding":
            return f"{a['num_embeddings']}→{a['embedding_dim']}"
        if name.startswith(("BatchNorm", "InstanceNorm")):
            return str(a["num_features"])
        if name == "GroupNorm":
            return f"{a['num_groups']} groups of {a['num_channels']}"
        if name in ("LayerNorm", "RMSNorm"):
            return _value(a["normalized_shape"])
        if _POOL.fullmatch(name):
            parts = [f"k{_value(_same(a['kernel_size']))}"]
            stride = a.get("stride")
            if stride is not None and _same(stride) != _same(a["kernel_size"]):
                parts.append(f"s{_value(_same(stride))}")
            if _same(a.get("padding", 0)) not in (0, None):
                parts.append(f"p{_value(_same(a['padding']))}")
            return " ".join(parts)
        if name.startswith("Adaptive"):
            return "→" + _value(a["output_size"])
        if "Dropout" in name:
            return f"p={a['p']}"
    except (KeyError, TypeError):
        pass
    # any other layer: the arguments that differ from their defaults
    defaults = {p.name: p.default for p in mod.layer.params} if mod.layer else {}
    shown = [f"{k}={_value(v)}" for k, v in a.items()
             if k != "inplace" and (defaults.get(k, REQUIRED) is REQUIRED or v != defaults[k])]
    return " ".join(shown[:3]) + (" …" if len(shown) > 3 else "")


def _freeze(value: Any) -> Any:
    """A hashable stand-in for an argument value, for comparing structures."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Ref):
        return ("ref", value.node)
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, Sym):
        return ("sym", str(value))
    return ("obj", getattr(value, "__name__", None) or repr(value))


class _Drawer:
    def __init__(self, analysis: Analysis, expand: bool):
        import graphviz

        from netspec.summary import built_modules

        self.analysis = analysis
        self.expand = expand
        self.ir = analysis.ir
        _, self.built = built_modules(analysis)
        self.ids = itertools.count()
        self.edges: list[tuple[str, str, dict]] = []
        self.signatures: dict[int, Any] = {}
        self.use_count: Counter[int] = Counter()
        self.use_seen: Counter[int] = Counter()
        self.drawn: dict[int, list[str]] = {}        # module uid -> dot nodes of its uses
        self.tie_notes: dict[int, list[str]] = {}
        self.tie_links: list[tuple[int, int]] = []
        self._count_uses(self.ir, set())
        self._collect_ties()
        ir = self.ir
        self.dot = graphviz.Digraph(
            name=ir.cls_name,
            graph_attr={"rankdir": "TB", "fontname": _FONT, "fontsize": "11", "nodesep": "0.3",
                        "ranksep": "0.35", "label": _text(f"{analysis.program.root}: "
                                                          f"{ir.cls_name} {_shape(ir.in_shape)}"
                                                          f" → {_shape(ir.out_shape)}"),
                        "labelloc": "t"},
            node_attr={"fontname": _FONT, "fontsize": "10"},
            edge_attr={"fontname": _FONT, "fontsize": "8", "color": "#555555",
                       "fontcolor": "#333333", "arrowsize": "0.6"})

    # -- the pre-passes ---------------------------------------------------------------------------
    def _count_uses(self, mod: ModuleIR, visited: set[int]) -> None:
        """How often every module is called, over the whole tree (each block's graph once)."""
        if mod.kind != "block" or mod.uid in visited or mod.graph is None:
            return
        visited.add(mod.uid)
        for graph, children in self._graphs(mod):
            for _, data in graph.nodes(data=True):
                if data["op"] == "call_module":
                    child = children[data["target"]]
                    self.use_count[child.uid] += 1
                    self._count_uses(child, visited)

    @staticmethod
    def _graphs(mod: ModuleIR) -> list[tuple[Any, dict[str, ModuleIR]]]:
        out = [(mod.graph, mod.children)]
        for _, data in mod.graph.nodes(data=True):
            if data["op"] == "loop":
                for frag in (data["cond"], data["body"]):
                    out.append((frag.graph, {**mod.children, **frag.children}))
        return out

    def _collect_ties(self) -> None:
        for _, mod in self.ir.walk():
            for tie in mod.ties:
                target, source = self._resolve(mod, tie.target), self._resolve(mod, tie.source)
                if target is None or source is None:
                    continue
                t_name, s_name = ".".join(tie.target), ".".join(tie.source)
                self.tie_notes.setdefault(target.uid, []).append(
                    f"{tie.target[-1]} tied to {s_name}")
                self.tie_notes.setdefault(source.uid, []).append(
                    f"{tie.source[-1]} tied to {t_name}")
                self.tie_links.append((source.uid, target.uid))

    @staticmethod
    def _resolve(mod: ModuleIR, path: tuple[str, ...]) -> ModuleIR | None:
        for part in path[:-1]:
            mod = mod.children.get(part)
            if mod is None:
                return None
        return mod

    # -- folding --------------------------------------------------------------------------------
    def signature(self, mod: ModuleIR) -> Any:
        """The structure of a module, without its shapes: equal for identical repeats."""
        if mod.uid in self.signatures:
            return self.signatures[mod.uid]
        if mod.kind == "layer":
            sig: Any = ("layer", mod.cls_name, _freeze(mod.resolved_args or mod.args))
        else:
            nodes = []
            for graph, children in self._graphs(mod):
                order = {nid: i for i, nid in enumerate(graph.nodes)}
                for nid, data in graph.nodes(data=True):
                    target = data["target"]
                    if data["op"] == "call_module":
                        child = children[target]
                        target = (self.signature(child), target in mod.shared)
                    args = tuple(("ref", order.get(a.node, -1)) if isinstance(a, Ref)
                                 else _freeze(a) for a in data["args"])
                    nodes.append((data["op"], _freeze(target), args, _freeze(data["kwargs"]),
                                  _freeze(data.get("key"))))
            tensors = tuple((name, d.trainable, d.container,
                             tuple(sorted((k, _shape(v)) for k, v in (d.shapes or {}).items())))
                            for name, d in mod.tensors.items())
            sig = ("block", mod.cls_name, _freeze(mod.block_args), tuple(nodes), tensors,
                   tuple((t.target, t.source) for t in mod.ties))
        self.signatures[mod.uid] = sig
        return sig

    def _foldable(self, mod: ModuleIR, data: dict) -> bool:
        child = mod.children.get(data["target"])
        return (child is not None and data["target"] not in mod.shared
                and self.use_count[child.uid] == 1 and child.uid not in self.tie_notes)

    def fold_groups(self, mod: ModuleIR) -> dict[str, tuple[list[str], int, int]]:
        """Runs of identical consecutive children: first node -> (nodes, period, count)."""
        graph = mod.graph
        consumers: Counter[str] = Counter()
        for _, data in graph.nodes(data=True):
            for ref in refs(data["args"], data["kwargs"]):
                consumers[ref.node] += 1
            if data["op"] == "loop":
                for frag in (data["cond"], data["body"]):
                    for _, fdata in frag.graph.nodes(data=True):
                        for ref in refs(fdata["args"], fdata["kwargs"]):
                            consumers[ref.node] += 1
        segments: list[list[str]] = []
        current: list[str] = []
        for nid, data in graph.nodes(data=True):
            if data["op"] == "call_module" and self._foldable(mod, data):
                if (current and data["args"] == (Ref(current[-1]),) and not data["kwargs"]
                        and consumers[current[-1]] == 1):
                    current.append(nid)
                    continue
                segments.append(current)
                current = [nid]
            else:
                segments.append(current)
                current = []
        segments.append(current)
        groups: dict[str, tuple[list[str], int, int]] = {}
        for seg in segments:
            sigs = [self.signature(mod.children[graph.nodes[n]["target"]]) for n in seg]
            i = 0
            while i < len(seg):
                best: tuple[int, int] | None = None
                for p in range(1, min(_MAX_PERIOD, (len(seg) - i) // 2) + 1):
                    unit = sigs[i:i + p]
                    k = 1
                    while sigs[i + k * p:i + (k + 1) * p] == unit:
                        k += 1
                    if k >= 2 and (best is None or k * p > best[0] * best[1]):
                        best = (k, p)
                if best is None:
                    i += 1
                    continue
                k, p = best
                groups[seg[i]] = (seg[i:i + k * p], p, k)
                i += k * p
        return groups

    # -- drawing --------------------------------------------------------------------------------
    def new_id(self) -> str:
        return f"n{next(self.ids)}"

    def edge(self, src: _Val, dst: str, **attrs: str) -> None:
        label = " ".join(filter(None, (src.name, _shape(src.shape))))    # "e1 [N, 16, 64, 64]"
        if label:
            attrs.setdefault("label", label)
        self.edges.append((src.node, dst, attrs))

    def draw(self) -> str:
        ir = self.ir
        placeholder = next(d for _, d in ir.graph.nodes(data=True) if d["op"] == "placeholder")
        source = self.new_id()
        self.dot.node(source, _text(f"input {placeholder.get('name') or 'x'}"), **_IO)
        out = self.block(self.dot, ir, "", _Val(source, ir.in_shape))
        sink = self.new_id()
        self.dot.node(sink, "output", **_IO)
        self.edge(out, sink)
        for uid, nodes in self.drawn.items():
            if len(nodes) > 1:
                for a, b in zip(nodes, nodes[1:]):
                    self.edges.append((a, b, {"style": "dotted", "dir": "none",
                                              "constraint": "false", "color": "#7b3fb0",
                                              "fontcolor": "#7b3fb0", "label": "same module"}))
        for source_uid, target_uid in self.tie_links:
            a, b = self.drawn.get(source_uid), self.drawn.get(target_uid)
            if a and b:
                self.edges.append((a[0], b[0], {"style": "dotted", "dir": "none",
                                                "constraint": "false", "color": "#c0601a",
                                                "fontcolor": "#c0601a", "label": "tied"}))
        for tail, head, attrs in self.edges:
            self.dot.edge(tail, head, **attrs)
        return self.dot.source

    def _block_label(self, mod: ModuleIR, path: str, *, fold: str = "") -> str:
        args = ", ".join(f"{k}={_value(v)}" for k, v in mod.block_args.items())
        head = f"{class_name(mod)}({args})" if args else class_name(mod)
        return f"{fold or path}: {head}" if (fold or path) else head

    def _use_note(self, uid: int) -> str:
        n = self.use_count[uid]
        if n <= 1:
            return ""
        self.use_seen[uid] += 1
        return f"shared: use {self.use_seen[uid]} of {n}"

    def block(self, parent: Any, mod: ModuleIR, path: str, inp: _Val, *, fold: str = "",
              fold_lines: tuple[str, ...] = ()) -> _Val:
        shared = self.use_count[mod.uid] > 1
        note = self._use_note(mod.uid)
        with parent.subgraph(name=f"cluster_{next(self.ids)}") as g:
            attrs = dict(_CLUSTER)
            if fold:
                attrs.update(_FOLD)
            if shared:
                attrs.update(_CLUSTER_SHARED)
            lines = [self._block_label(mod, path, fold=fold), *fold_lines, note,
                     *self.tie_notes.get(mod.uid, [])]
            g.attr(label=_text(*lines), tooltip=path or mod.cls_name, **attrs)
            return self.body(g, mod, path, inp)

    def body(self, g: Any, mod: ModuleIR, path: str, inp: _Val) -> _Val:
        graph = mod.graph
        groups = {} if self.expand else self.fold_groups(mod)
        values: dict[str, _Val] = {}
        tensors: dict[tuple, str] = {}
        skip: set[str] = set()
        out = inp
        for nid, data in graph.nodes(data=True):
            if nid in skip:
                continue
            op = data["op"]
            if op == "placeholder":
                values[nid] = inp
            elif op == "output":
                arg = data["args"][0]
                out = values.get(arg.node, inp) if isinstance(arg, Ref) else inp
            elif op == "call_module":
                if nid in groups:
                    nodes, period, count = groups[nid]
                    skip.update(nodes)
                    values[nodes[-1]] = self.fold(g, mod, path, nodes, period, count, values)
                else:
                    first = data["args"][0].node
                    values[nid] = self.call(g, mod, path, data, values[first])
                    drawn = {first}
                    for ref in refs(data["args"], data["kwargs"]):   # attn(q, k, v): the rest
                        if ref.node not in drawn and ref.node in values:
                            drawn.add(ref.node)
                            self.edge(values[ref.node], values[nid].node)
            elif op == "call_function":
                values[nid] = self.function(g, data, values)
            elif op == "get_attr":
                key = (data["target"], data.get("key"))
                if key not in tensors:
                    tensors[key] = self.tensor(g, mod, data)
                values[nid] = _Val(tensors[key], data.get("shape"))
            elif op == "loop":
                values[nid] = self.loop(g, mod, data, values)
            name = data.get("name")
            if op != "placeholder" and name != RUNNING and nid in values:   # y = ...; h = ...
                values[nid] = values[nid]._replace(name=name)
        return out

    def call(self, g: Any, mod: ModuleIR, path: str, data: dict, src: _Val, *,
             fold: str = "", fold_lines: tuple[str, ...] = ()) -> _Val:
        target = data["target"]
        child = mod.children[target]
        child_path = f"{path}.{target}" if path else target
        if child.kind == "block":
            val = self.block(g, child, child_path, src, fold=fold, fold_lines=fold_lines)
            return _Val(val.node, data.get("shape"))
        node = self.new_id()
        module = self.built.get(child.uid)
        count = sum(p.numel() for p in module.parameters()) if module is not None else 0
        head = f"{target}: {class_name(child)} {layer_text(child)}".rstrip()
        if fold:
            head = f"{fold}: {class_name(child)} {layer_text(child)}".rstrip()
        note = self._use_note(child.uid)
        lines = [head, *fold_lines, f"{count:,} params" if count else "", note,
                 *self.tie_notes.get(child.uid, [])]
        attrs = dict(_LAYER)
        if note:
            attrs.update(_SHARED)
        elif child.uid in self.tie_notes:
            attrs.update(_TIED)
        if fold:
            attrs.update({"penwidth": "1.4", "peripheries": "2"})
        g.node(node, _text(*lines), tooltip=child_path, **attrs)
        self.drawn.setdefault(child.uid, []).append(node)
        self.edge(src, node)
        return _Val(node, data.get("shape"))

    def fold(self, g: Any, mod: ModuleIR, path: str, nodes: list[str], period: int, count: int,
             values: dict[str, _Val]) -> _Val:
        graph = mod.graph
        first, last = graph.nodes[nodes[0]], graph.nodes[nodes[-1]]
        src = values[first["args"][0].node]
        is_block = mod.children[first["target"]].kind == "block"
        span = _span(first["target"], last["target"], path if is_block and period == 1 else "")
        change = f"{_shape(src.shape)} → {_shape(last.get('shape'))}"
        if period == 1:
            val = self.call(g, mod, path, first, src, fold=span,
                            fold_lines=(f"×{count}", change))
            return _Val(val.node, last.get("shape"))
        with g.subgraph(name=f"cluster_{next(self.ids)}") as c:
            c.attr(label=_text(f"{span}: ×{count}", change), **{**_CLUSTER, **_FOLD})
            val = src
            for nid in nodes[:period]:
                val = self.call(c, mod, path, graph.nodes[nid], val)
        return _Val(val.node, last.get("shape"))

    def function(self, g: Any, data: dict, values: dict[str, _Val]) -> _Val:
        node = self.new_id()
        target = data["target"]
        fn = FUNCTIONS.get(target)
        statics = data.get("static") or data["kwargs"]
        if fn is not None and fn.label is not None:      # drawn as written: [:, -1]
            text = fn.label(**statics)
        else:
            extras = [_value(a) for a in data["args"] if not isinstance(a, (Ref, tuple, list))]
            defaults = {p.name: p.default for p in fn.params} if fn else {}
            for k, v in statics.items():
                if isinstance(v, Ref) or (k in defaults and defaults[k] is not REQUIRED
                                          and defaults[k] == v):
                    continue
                extras.append(f"{k}={_value(v)}")
            text = " ".join([target, *extras])
        g.node(node, _text(text), **_FUNCTION)
        for ref in refs(data["args"], data["kwargs"]):
            if ref.node in values:
                self.edge(values[ref.node], node)
        return _Val(node, data.get("shape"))

    def tensor(self, g: Any, mod: ModuleIR, data: dict) -> str:
        node = self.new_id()
        decl = mod.tensors[data["target"]]
        key = data.get("key")
        name = data["target"] + (f"[{key}]" if key is not None else "")
        lines = [f"{'param' if decl.trainable else 'const'} {name}", _shape(data.get("shape"))]
        if decl.trainable and data.get("shape") is not None:
            count = 1
            for d in data["shape"]:
                count = count * d if isinstance(d, int) else count
            lines.append(f"{count:,} params")
        g.node(node, _text(*lines), **(_PARAM if decl.trainable else _CONST))
        return node

    def loop(self, g: Any, mod: ModuleIR, data: dict, values: dict[str, _Val]) -> _Val:
        node = self.new_id()

        def ops(frag: Any) -> str:
            names = [d["target"] for _, d in frag.graph.nodes(data=True)
                     if d["op"] in ("call_function", "call_module")]
            return ", ".join(names) or "—"
        g.node(node, _text("while", f"cond: {ops(data['cond'])}", f"body: {ops(data['body'])}"),
               **_LOOP)
        arg = data["args"][0]
        if isinstance(arg, Ref) and arg.node in values:
            self.edge(values[arg.node], node)
        return _Val(node, data.get("shape"))


def _span(first: str, last: str, path: str) -> str:
    """``layer1.0–1`` for numbered children, ``0.block 0 … 0.block 3`` otherwise."""
    prefix = f"{path}." if path else ""
    if first.isdigit() and last.isdigit():
        return f"{prefix}{first}–{last}"
    return f"{prefix}{first} … {prefix}{last}"


def to_dot(analysis: Analysis, expand: bool = False) -> str:
    """The Graphviz source of a picture of ``analysis`` (see the module docstring)."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        raise NetspecError("drawing needs the graphviz Python package: pip install graphviz") \
            from None
    return _Drawer(analysis, expand).draw()


def render(analysis: Analysis, path: Path, expand: bool = False) -> Path:
    """Draw ``analysis`` to ``path``; the format comes from the suffix (.svg .png .pdf .dot).

    Without the Graphviz program ``dot``, the ``.dot`` file is written next to ``path`` and a
    ``NetspecError`` says how to render it.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise NetspecError(f"cannot tell the picture format from {path.name!r}: "
                           f"name it .svg, .png, .pdf or .dot")
    source = to_dot(analysis, expand)
    if fmt == "dot":
        path.write_text(source, encoding="utf-8")
        return path
    import graphviz

    try:
        data = graphviz.Source(source).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(source, encoding="utf-8")
        raise NetspecError(
            f"the Graphviz program `dot` was not found, so {path} was not drawn; wrote "
            f"{dot_path} instead. Install Graphviz (e.g. apt-get install graphviz, or brew "
            f"install graphviz) and render it with: "
            f"dot -T{fmt} {shlex.quote(str(dot_path))} -o {shlex.quote(str(path))}") from None
    except graphviz.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip()
        raise NetspecError(f"dot could not draw {path}: {detail}") from None
    path.write_bytes(data)
    return path
