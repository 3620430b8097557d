"""``netspec summary``: every module with its output shape, parameters and multiply-accumulates.

The model's tensors come from the layers' tensor tables (``netspec.tensors``: no torch), or,
when some layer has no table (a user's layer, a torch.nn layer netspec has no rule for), from
the model built on the ``meta`` device (structure only, no weight memory). It is walked in the
order of the spec's dataflow, one row per *use* of a module:

* parameters are counted once, at their first use. A parameter that appears in more than one
  place (a ``let`` module used several times, a ``tie``) is counted in ``shared`` where it is
  first used, and every other place notes where it is counted;
* ``const`` tensors (buffers of the spec's own) are counted in ``const``; the buffers of
  layers, such as BatchNorm's running statistics, in ``buffers``;
* MACs (multiply-accumulates) are computed from the resolved arguments and the inferred
  shapes: ``Linear`` costs ``in_features`` per output element, ``Conv`` costs
  ``in_channels / groups * prod(kernel_size)`` per output element, a transposed convolution
  ``out_channels / groups * prod(kernel_size)`` per input element, a normalisation layer one
  per element, ``matmul``/``mm`` in expressions the inner size per output element; activations,
  pooling, dropout and reshapes cost none. Biases are not counted. When the batch size is the
  symbol of the input's first dim (``N``), MACs are given per sample; a ``while`` loop is
  counted for one iteration.

Block rows hold the totals of everything inside them, so a summary cut at ``depth`` still adds
up.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from netspec.api import Analysis, build_analysis, matched_static_model
from netspec.dims import Sym, fmt_shape, numel
from netspec.init import describe, plan_sites
from netspec.ir import ModuleIR, Ref, class_name, is_sequential, join_path
from netspec.tensors import StaticModel, StaticModule, read_module

FORMATS = ("text", "markdown", "json")
_COUNTS = ("trainable", "shared", "frozen", "const", "buffers")


@dataclass
class Row:
    """One use of a module (or one ``const``/``param`` declaration) in the summary."""

    path: str
    name: str
    layer: str
    kind: str                      # "model" | "block" | "layer" | "param" | "const"
    level: int
    parent: int | None
    output: tuple | None = None
    macs: Any = 0                  # an int, or a Sym when it depends on symbolic sizes
    macs_known: bool = True
    notes: list[str] = field(default_factory=list)
    tensors: list[tuple[str, Any, str]] = field(default_factory=list)  # (name, tensor, class)
    own: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTS, 0))
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTS, 0))
    reuse_of: str | None = None    # the path of the first use, for a module used again

    @property
    def params(self) -> int:
        return self.total["trainable"] + self.total["shared"] + self.total["frozen"]

    def as_dict(self, per_sample: Any) -> dict:
        return {
            "path": self.path, "name": self.name, "layer": self.layer, "kind": self.kind,
            "level": self.level, "output": fmt_shape(self.output) if self.output is not None
            else "", "params": self.params, **self.total,
            "macs": _json_dim(_per_sample(self.macs, per_sample)) if self.macs_known else None,
            "note": "; ".join(self.notes),
        }


# ---- MACs --------------------------------------------------------------------------------------

def _prod(values: Any) -> int:
    return math.prod(values) if isinstance(values, (tuple, list)) else int(values)


def _kernel(args: dict[str, Any], n: int) -> int:
    k = args["kernel_size"]
    return _prod(k) if isinstance(k, (tuple, list)) else int(k) ** n


_CONV = re.compile(r"(Lazy)?Conv([123])d")
_CONV_T = re.compile(r"(Lazy)?ConvTranspose([123])d")
_NORMS = ("BatchNorm", "InstanceNorm", "GroupNorm", "LayerNorm", "RMSNorm", "LocalResponseNorm",
          "SyncBatchNorm")
_ELEMENTWISE = ("PReLU",)
_FREE = ("Embedding", "EmbeddingBag")


def layer_macs(name: str, args: dict[str, Any], x: tuple | None, y: tuple | None,
               has_params: bool, more: Sequence[tuple | None] = ()) -> Any:
    """The MACs of one call of layer ``name``: an int, a Sym, or None when unknown."""
    if x is None or y is None:
        return None
    if name in ("Linear", "LazyLinear"):
        return numel(y) * args["in_features"]
    if name == "Bilinear":
        return numel(y) * args["in1_features"] * args["in2_features"]
    if m := _CONV.fullmatch(name):
        return numel(y) * (args["in_channels"] // args.get("groups", 1)) * _kernel(args, int(m[2]))
    if m := _CONV_T.fullmatch(name):
        return numel(x) * (args["out_channels"] // args.get("groups", 1)) * _kernel(args, int(m[2]))
    if name.startswith(_NORMS) or name in _ELEMENTWISE:
        return numel(y)
    if name in _FREE:
        return 0
    if name == "MultiheadAttention" and len(more) == 2 and None not in more:
        (k, v), e = more, args["embed_dim"]
        length = 1 if args.get("batch_first") and len(x) == 3 else 0
        # q and output projections, scores and weighted sum per query; k and v projections
        return (numel(x[:-1]) * (2 * e * e + 2 * k[length] * e) +
                numel(k[:-1]) * e * (args["kdim"] or e) + numel(v[:-1]) * e * (args["vdim"] or e))
    if name == "TransformerEncoderLayer":
        d, ff = args["d_model"], args["dim_feedforward"]
        tokens = numel(x[:-1])
        length = x[-2] if args.get("batch_first") and len(x) == 3 else x[0]
        # q, k, v and output projections; scores and weighted sum; feed-forward; two norms
        return tokens * (4 * d * d + 2 * length * d + 2 * d * ff + 2 * d)
    if name == "TransformerDecoderLayer" and len(more) == 1 and more[0] is not None:
        (m,), d, ff = more, args["d_model"], args["dim_feedforward"]
        first = args.get("batch_first") and len(x) == 3
        length, memory_length = (x[-2], m[-2]) if first else (x[0], m[0])
        # self-attention as the encoder's; over memory: q and output projections and scores and
        # weighted sum per target token, k and v projections per memory token; three norms
        return (numel(x[:-1]) * (6 * d * d + 2 * (length + memory_length) * d + 2 * d * ff
                                 + 3 * d) + numel(m[:-1]) * 2 * d * d)
    if name == "Transformer" and len(more) == 1 and more[0] is not None:
        (tgt,), d = more, args["d_model"]
        # its encoder layers on src, the decoder's on tgt over the encoded src; two norms
        return (args["num_encoder_layers"] * layer_macs("TransformerEncoderLayer", args, x, x,
                                                        True) + numel(x[:-1]) * d +
                args["num_decoder_layers"] * layer_macs("TransformerDecoderLayer", args, tgt,
                                                        tgt, True, (x,)) + numel(tgt[:-1]) * d)
    return None if has_params else 0


def function_macs(target: str, operands: list[tuple | None], out: tuple | None) -> Any:
    """The MACs of a function in an expression: ``matmul``/``mm``; other functions cost none."""
    if target in ("matmul", "mm") and operands and operands[0] is not None and out is not None:
        a = operands[0]
        return numel(out) * (a[-1] if a else 1)
    return 0


def _batch_atom(analysis: Analysis) -> str | None:
    """The symbol of the input's batch dim (``N``), when the first input dim is one."""
    shape = analysis.ir.in_shape
    if not shape or not isinstance(shape[0], Sym):
        return None
    return shape[0].atom()


def _per_sample(value: Any, atom: str | None) -> Any:
    if atom is not None and isinstance(value, Sym):
        return value.substitute({atom: 1})
    return value


def _json_dim(value: Any) -> Any:
    return value if isinstance(value, int) else str(value)


# ---- the walk ----------------------------------------------------------------------------------

class _Summary:
    def __init__(self, analysis: Analysis, model: StaticModel):
        self.analysis = analysis
        self.built = model.by_uid
        self.rows: list[Row] = []
        self.first_use: dict[int, int] = {}      # module uid -> row of its first use
        self.reuses: dict[int, list[str]] = {}   # row of a first use -> paths of the others
        ir = analysis.ir
        self.visit(ir, "", "(model)", 0, None, ir.in_shape, ir.out_shape)
        self.count()

    # rows and MACs
    def visit(self, mod: ModuleIR, path: str, name: str, level: int, parent: int | None,
              x: tuple | None, y: tuple | None, more: Sequence[tuple | None] = ()
              ) -> tuple[Any, bool]:
        """A row for ``mod`` on input ``x`` (and ``more`` tensors: attention's key, value)."""
        kind = "model" if parent is None else mod.kind
        row = Row(path or "(model)", name, class_name(mod), kind, level, parent, y)
        index = len(self.rows)
        self.rows.append(row)
        module = self.built.get(mod.uid)
        if mod.uid in self.first_use:                       # a shared module used again
            first = self.rows[self.first_use[mod.uid]]
            row.reuse_of = first.path
            row.notes.append(f"same module as {first.path}, counted there" if first.path != row.path
                             else "the same module again, counted above")
            self.reuses.setdefault(self.first_use[mod.uid], []).append(row.path)
            row.tensors = self._module_tensors(module)
            if mod.kind == "layer":
                row.macs, row.macs_known = self._layer_macs(mod, module, x, y, more)
            else:
                row.macs, row.macs_known = first.macs, first.macs_known
            return row.macs, row.macs_known
        self.first_use[mod.uid] = index
        if mod.kind == "layer":
            row.tensors = self._module_tensors(module)
            row.macs, row.macs_known = self._layer_macs(mod, module, x, y, more)
            return row.macs, row.macs_known
        for tname, decl in mod.tensors.items():
            self._tensor_row(mod, module, tname, decl, path, level + 1, index)
        sequential = is_sequential(mod)
        macs, known = self.graph(mod, mod.graph, dict(mod.children), path, level, index,
                                 sequential, {})
        for cname, child in mod.children.items():           # declared but never called
            if child.uid not in self.first_use:
                self.visit(child, join_path(path, cname), cname, level + 1, index,
                           child.in_shape, child.out_shape)
        row.macs, row.macs_known = macs, known
        return macs, known

    def graph(self, mod: ModuleIR, graph: Any, children: dict[str, ModuleIR], path: str,
              level: int, index: int, sequential: bool, shapes: dict[str, Any]) -> tuple[Any, bool]:
        macs: Any = 0
        known = True
        for nid, data in graph.nodes(data=True):
            shapes[nid] = data.get("shape")
            op = data["op"]
            operands = [shapes.get(a.node) if isinstance(a, Ref) else None
                        for a in data["args"]]
            if op == "call_module":
                target = data["target"]
                child = children[target]
                name = target
                if sequential and target in mod.shared:
                    name = data.get("label") or str(data["position"])
                m, k = self.visit(child, join_path(path, name), name, level + 1, index,
                                  operands[0] if operands else None, data.get("shape"),
                                  operands[1:])
            elif op == "call_function":
                m, k = function_macs(data["target"], operands, data.get("shape")), True
            elif op == "loop":
                m, k = 0, True
                for frag in (data["cond"], data["body"]):
                    fm, fk = self.graph(mod, frag.graph, {**children, **frag.children}, path,
                                        level, index, False, shapes)
                    m, k = m + fm, k and fk
                if "while loop: MACs of one iteration" not in self.rows[index].notes:
                    self.rows[index].notes.append("while loop: MACs of one iteration")
            else:
                continue
            if m is None:
                known = False
            else:
                macs = macs + m
            known = known and k
        return macs, known

    def _layer_macs(self, mod: ModuleIR, module: StaticModule | None, x: tuple | None,
                    y: tuple | None, more: Sequence[tuple | None] = ()) -> tuple[Any, bool]:
        has_params = module is not None and bool(module.named_parameters())
        m = layer_macs(mod.cls_name, mod.resolved_args or {}, x, y, has_params, more)
        return (0, False) if m is None else (m, True)

    def _tensor_row(self, mod: ModuleIR, module: StaticModule | None, tname: str, decl: Any,
                    path: str, level: int, parent: int) -> None:
        kind = "param" if decl.trainable else "const"
        if decl.container == "tensor":
            layer, output = kind, (decl.shapes or {}).get("")
        else:
            layer, output = f"{kind} {decl.container}[{len(decl.items)}]", None
        row = Row(join_path(path, tname), tname, layer, kind, level, parent, output)
        self.rows.append(row)
        if module is None:
            return
        if decl.container == "tensor":
            tensor = module.params.get(tname) if decl.trainable else module.buffers.get(tname)
            if tensor is not None:
                row.tensors = [(tname, tensor, kind)]
        else:
            holder = module.children.get(tname)
            if holder is not None:
                row.tensors = [(f"{tname}.{n}", t, "param") for n, t in
                               holder.named_parameters()] + \
                              [(f"{tname}.{n}", t, "const") for n, t in holder.named_buffers()]

    @staticmethod
    def _module_tensors(module: StaticModule | None) -> list[tuple[str, Any, str]]:
        if module is None:
            return []
        return [(n, t, "param") for n, t in module.named_parameters()] + \
               [(n, t, "buffer") for n, t in module.named_buffers()]

    # parameter counts
    def count(self) -> None:
        places: dict[int, list[tuple[int, str]]] = {}
        for i, row in enumerate(self.rows):
            for tname, tensor, _ in row.tensors:
                places.setdefault(id(tensor), []).append((i, join_path(row.path if row.level
                                                                   else "", tname)))
        for i, paths in self.reuses.items():
            first = self.rows[i]
            others = [p for p in paths if p != first.path]
            note = f"shared module, used {len(paths) + 1} times"
            first.notes.append(note + (f": also as {', '.join(others)}" if others else ""))
        for i, row in enumerate(self.rows):
            for tname, tensor, cls in row.tensors:
                where = places[id(tensor)]
                first, first_name = where[0]
                if first != i:
                    if row.reuse_of is None:                # a tie, not a module used again
                        row.notes.append(f"{tname} = {first_name} (counted there)")
                    continue
                n = tensor.numel()
                if cls == "param":
                    if len(where) > 1:
                        row.own["shared"] += n
                        tied = [name for j, name in where[1:] if self.rows[j].reuse_of is None]
                        if tied:
                            row.notes.append(f"{tname} shared with {', '.join(tied)}")
                    elif tensor.requires_grad:
                        row.own["trainable"] += n
                    else:
                        row.own["frozen"] += n
                elif cls == "const":
                    row.own["const"] += n
                else:
                    row.own["buffers"] += n
        for row in self.rows:
            row.total = dict(row.own)
        for row in reversed(self.rows):
            if row.parent is not None:
                parent = self.rows[row.parent].total
                for key in _COUNTS:
                    parent[key] += row.total[key]


def model_tensors(analysis: Analysis, *, build: bool = False) -> StaticModel:
    """The modules and tensors of the model, from the tensor tables when every layer has one.

    Otherwise (or with ``build``) they are read off the model built on the ``meta`` device.
    Either way init rules are matched, as a build matches them: one matching nothing is an error.
    """
    model = None if build else matched_static_model(analysis)
    return model if model is not None else read_module(built_modules(analysis)[0])


def built_modules(analysis: Analysis) -> tuple[Any, dict[int, Any]]:
    """The model built on the ``meta`` device, and its modules by ``ModuleIR.uid``."""
    from netspec.init import _reapply_ties

    model = build_analysis(analysis, device="meta")
    _reapply_ties(model)      # as materialize does: a chain block's ties are made there
    built: dict[int, Any] = {}
    for module in model.modules():
        ir = module.__dict__.get("_netspec_ir")
        if ir is not None:
            built[ir.uid] = module
    return model, built


# ---- public API --------------------------------------------------------------------------------

def summarize(analysis: Analysis, depth: int = -1, *, build: bool = False) -> dict:
    """The summary as data: ``rows`` (one dict per module use, to ``depth``) and ``totals``.

    ``build`` counts on the model built on the ``meta`` device even when the tensor tables
    know every layer (the same numbers, with torch).
    """
    s = _Summary(analysis, model_tensors(analysis, build=build))
    atom = _batch_atom(analysis)
    root = s.rows[0]
    ir = analysis.ir
    rows = [r.as_dict(atom) for r in s.rows if depth < 0 or r.level <= depth]
    totals = {"params": root.params, **root.total,
              "macs": _json_dim(_per_sample(root.macs, atom)), "macs_complete": root.macs_known}
    return {
        "spec": str(analysis.program.root), "block": ir.cls_name,
        "input": fmt_shape(ir.in_shape) if ir.in_shape is not None else None,
        "output": fmt_shape(ir.out_shape) if ir.out_shape is not None else None,
        "macs_per": "sample" if atom is not None else "input",
        "rows": rows, "totals": totals,
    }


def summary_rows(analysis: Analysis, depth: int = -1) -> list[dict]:
    """One row per use of a module (parents first), cut at ``depth`` (-1: every level).

    Keys: path, name, layer, kind, level, output, params, trainable, shared, frozen, const,
    buffers, macs (an int, a string when symbolic, None when unknown) and note.
    """
    return summarize(analysis, depth)["rows"]


def _count(n: int) -> str:
    return f"{n:,}" if n else ""


def _macs_cell(value: Any) -> str:
    if value is None:
        return "?"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _human(value: Any) -> str:
    if not isinstance(value, int):
        return str(value)
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return str(value)


def _columns(data: dict) -> list[tuple[str, str]]:
    """The (key, header) of the count columns worth showing: trainable always."""
    totals = data["totals"]
    cols = [("trainable", "trainable")]
    for key, header in (("shared", "shared"), ("frozen", "frozen"), ("const", "const"),
                        ("buffers", "buffers")):
        if totals[key]:
            cols.append((key, header))
    return cols


def _title(data: dict) -> str:
    return f"{data['spec']}: {data['block']} {data['input'] or '?'} -> {data['output'] or '?'}"


def _caption(data: dict) -> str:
    t = data["totals"]
    split = [f"{t['trainable']:,} trainable"]
    if t["shared"]:
        split.append(f"{t['shared']:,} shared, counted once")
    if t["frozen"]:
        split.append(f"{t['frozen']:,} frozen")
    parts = [f"{t['params']:,} parameters ({', '.join(split)})",
             f"{t['const']:,} constant values", f"{t['buffers']:,} buffer values"]
    per = "per sample" if data["macs_per"] == "sample" else f"for input {data['input']}"
    macs = _human(t["macs"]) + ("" if t["macs_complete"] else " + ?")
    parts.append(f"{macs} MACs {per}")
    return ", ".join(parts)


def _display_name(row: dict) -> str:
    if not row["level"]:
        return row["path"]
    return "  " * (row["level"] - 1) + row["name"]


def summary_table(analysis: Analysis, depth: int = -1, data: dict | None = None) -> Table:
    """The summary as a rich ``Table``; the caption holds the totals."""
    data = data or summarize(analysis, depth)
    cols = _columns(data)
    notes = any(r["note"] for r in data["rows"])
    # every text is a Text, never a str, which rich would read as markup: a shape such as
    # [batch, 16] would be taken for a style tag and vanish
    table = Table(title=Text(_title(data), style="table.title"),
                  caption=Text(_caption(data), style="table.caption"))
    table.add_column("module")
    table.add_column("layer")
    table.add_column("output shape")
    for _, header in cols:
        table.add_column(header, justify="right")
    table.add_column("MACs/sample" if data["macs_per"] == "sample" else "MACs", justify="right")
    if notes:
        table.add_column("note")
    for row in data["rows"]:
        cells = [_display_name(row), row["layer"], row["output"]]
        cells += [_count(row[key]) if key != "trainable" else f"{row[key]:,}" for key, _ in cols]
        cells.append(_macs_cell(row["macs"]))
        if notes:
            cells.append(row["note"])
        table.add_row(*map(Text, cells))
    return table


def _markdown(data: dict) -> str:
    cols = _columns(data)
    macs_header = "MACs/sample" if data["macs_per"] == "sample" else "MACs"
    header = ["module", "layer", "output shape"] + [h for _, h in cols] + [macs_header, "note"]
    lines = [f"**{_title(data)}**", "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i >= 3 and i < len(header) - 1 else "---"
                            for i in range(len(header))) + "|"]

    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|")

    for row in data["rows"]:
        cells = [f"`{row['path']}`", row["layer"], f"`{row['output']}`" if row["output"] else ""]
        cells += [_count(row[key]) if key != "trainable" else f"{row[key]:,}" for key, _ in cols]
        cells += [_macs_cell(row["macs"]), row["note"]]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    lines += ["", _caption(data)]
    return "\n".join(lines) + "\n"


def render_summary(analysis: Analysis, depth: int = -1, fmt: str = "text",
                   width: int = 160, *, build: bool = False) -> str:
    """The summary as ``text`` (a rich table), ``markdown`` (a plain table) or ``json``."""
    if fmt not in FORMATS:
        from netspec.errors import NetspecError
        raise NetspecError(f"unknown summary format {fmt!r}: use one of {', '.join(FORMATS)}")
    data = summarize(analysis, depth, build=build)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "markdown":
        return _markdown(data)
    console = Console(record=True, width=width, file=_Null(), color_system=None)
    console.print(summary_table(analysis, depth, data))
    return console.export_text()


class _Null:
    """A file that drops what is written (the console only records)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def init_rows(analysis: Analysis, *, build: bool = False) -> list[tuple[str, str, str]]:
    """(parameter path, layer, rule text or "default") for every parameter, in model order."""
    model = model_tensors(analysis, build=build)
    return describe(plan_sites(model.sites(), analysis.sources))


def init_table(analysis: Analysis) -> Table:
    """Which rule initialises each parameter (``default``: the layer's own initialisation)."""
    table = Table(title="init")
    table.add_column("parameter")
    table.add_column("layer")
    table.add_column("rule")
    for path, layer, rule in init_rows(analysis):
        table.add_row(Text(path), Text(layer), Text(rule))
    return table
