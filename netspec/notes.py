"""Notes: what ``netspec check`` reports about a sound spec without failing it.

* a size taken as equal on trust: a shape rule, a block's declared input or an ``expect``
  could neither prove nor refuse that two symbolic sizes agree (``infer_shapes`` leaves them
  on the node as ``assumes``);
* a value computed and never used: ``pool = mean(x, dim=1)`` followed by a step that applies
  to the running value, not to ``pool``;
* ``Softmax()`` without ``dim``, for which torch picks a dim by the input's rank: the batch
  dim of a 3-D input.
"""

from __future__ import annotations

from typing import Any

from netspec.dims import counterexample, equal_residues, fmt_shape, substitute, symbol_name
from netspec.errors import Diagnostic, Span
from netspec.ir import ModuleIR, graph_nodes, refs


def spec_notes(module: ModuleIR) -> list[Diagnostic]:
    """Every note on a shaped IR, in source order."""
    notes = _assumption_notes(module) + _unused_notes(module) + _implicit_dim_notes(module)
    return sorted(notes, key=lambda d: (d.span.file, d.span.line, d.span.column)
                  if d.span else ("", 0, 0))


def _unused_notes(module: ModuleIR) -> list[Diagnostic]:
    """A note for each step whose value nothing reads: not a later step, the output, a loop or
    an ``expect``. Its module still exists and holds parameters that never train."""
    notes: dict[Span, Diagnostic] = {}
    for _, mod in module.walk():
        if mod.graph is None:
            continue
        graph = mod.graph
        read = {nid for nid, _, _ in mod.expects}      # and what a loop's cond or body reads
        read.update(r.node for g, d in graph_nodes(mod) if g is not graph
                    for r in refs(d["args"], d["kwargs"]))
        for nid, data in graph.nodes(data=True):
            if data["op"] in ("placeholder", "output") or graph._succ[nid] or nid in read:
                continue
            span = data.get("span")
            if span is None or span in notes:
                continue
            name = data.get("name")       # "x" for the running value
            what = f"the value '{name}'" if name and name != "x" else "the result of this step"
            notes[span] = Diagnostic(
                "note", f"{what} is never used", span,
                hint="a step applies to the running value, not to the last named one: use the "
                     "value by name (`value -> step`), or remove it")
    return list(notes.values())


_IMPLICIT_DIM = frozenset({"Softmax", "LogSoftmax", "Softmin"})


def _implicit_dim_notes(module: ModuleIR) -> list[Diagnostic]:
    """A note for each ``Softmax()`` without ``dim`` on an input of known rank (once for the
    copies of a block)."""
    notes: dict[Span, Diagnostic] = {}
    for _, mod in module.walk():
        if mod.kind != "layer" or mod.cls_name not in _IMPLICIT_DIM or mod.in_shape is None \
                or (mod.resolved_args or {}).get("dim") is not None or mod.span in notes:
            continue
        rank = len(mod.in_shape)
        dim = 0 if rank in (0, 1, 3) else 1          # torch's legacy choice, _get_softmax_dim
        notes[mod.span] = Diagnostic(
            "note", f"{mod.cls_name}() without dim: torch picks dim {dim} for this {rank}-D "
            f"input {fmt_shape(mod.in_shape)}, and warns that the choice is deprecated",
            mod.span, hint=f"state it: {mod.cls_name}(dim={dim})" if dim == rank - 1 else
            f"state it: {mod.cls_name}(dim=-1) for the last dim, or {mod.cls_name}(dim={dim}) "
            f"for torch's choice")
    return list(notes.values())


def _assumption_notes(module: ModuleIR) -> list[Diagnostic]:
    """A note for each equality of sizes that ``infer_shapes`` took on trust (a node's
    ``assumes``), with sizes for which it fails where small ones show it."""
    notes: dict[tuple, Diagnostic] = {}
    for _, mod in module.walk():
        for _, data in graph_nodes(mod):
            for a, b, span, why in data.get("assumes", ()):
                note = _assumption_note(a, b, span or data["span"], why)
                notes.setdefault((note.span, note.message), note)
    return list(notes.values())


def _assumption_note(a: Any, b: Any, span: Span | None, why: str | None) -> Diagnostic:
    check = "a concrete --input checks them exactly"
    notes = (why,) if why else ()
    sizes = counterexample(a, b)
    if sizes is None:
        return Diagnostic("note", f"sizes assumed equal: {a} and {b}", span,
                          hint=f"netspec cannot tell whether they always are; {check}",
                          notes=notes)
    given = ", ".join(f"{symbol_name(name)} = {v}" for name, v in sizes.items())
    example = f"with {given} they are {substitute(a, sizes)} and {substitute(b, sizes)}"
    pattern = equal_residues(a, b, *sizes) if len(sizes) == 1 else None
    if pattern is not None and pattern[1]:
        (name,), (period, residues) = sizes, pattern
        name = symbol_name(name)
        if period == 2:
            when = f"{name} is {'even' if residues == [0] else 'odd'}"
        elif residues == [0]:
            when = f"{name} is a multiple of {period}"
        else:
            when = f"{name} % {period} is " + " or ".join(str(r) for r in residues)
        example = f"they agree only when {when}; {example}"
    return Diagnostic("note", f"sizes assumed equal: {a} and {b}", span,
                      hint=f"{example}; {check}", notes=notes)
