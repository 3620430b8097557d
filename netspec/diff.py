"""``netspec diff``: what changes between two analysed specs, module by module.

``diff_specs(a, b)`` compares two ``Analysis`` objects by **module path** (the names
``state_dict`` keys start with, ``""`` for the model itself): modules only in ``b`` are
*added*, only in ``a`` *removed*, and in both *changed* when their type, their arguments
(layer arguments with inferred sizes filled in, block arguments, the shapes of ``const`` and
``param`` tensors), their output shape or the parameters they hold themselves differ.
Parameter counts come from a build on the ``meta`` device (no weight memory); the count of a
path includes its children, each shared parameter counted once.

Because matching is by path, inserting an unnamed layer into a sequence renumbers the layers
after it, and they show as changed: exactly the ``state_dict`` keys that would no longer
load. ``SpecDiff.render("text" | "markdown" | "json")`` formats the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from netspec.api import Analysis, build_analysis
from netspec.args import spec_literal
from netspec.dims import fmt_shape
from netspec.ir import class_name

__all__ = ["ModuleInfo", "ModuleChange", "SpecDiff", "diff_specs", "module_table"]

FORMATS = ("text", "markdown", "json")


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class ModuleInfo:
    """One module of a built spec."""

    path: str                          # "" for the model itself
    type: str                          # "Linear", a block name, "Sequential", "ParameterList"
    args: dict[str, Any]               # compared arguments (see the module docstring)
    output: tuple | None               # the output shape, None where not known
    params: int                        # parameters in this module and its children
    own_params: int                    # parameters held by this module itself
    buffers: int                       # buffer values in this module and its children

    @property
    def name(self) -> str:
        return self.path or "(model)"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type,
                "args": {k: _jsonable(v) for k, v in self.args.items()},
                "output": _shape_text(self.output), "params": self.params,
                "buffers": self.buffers}


@dataclass(frozen=True)
class ModuleChange:
    """A path present in both specs whose module differs."""

    old: ModuleInfo
    new: ModuleInfo

    @property
    def path(self) -> str:
        return self.new.path

    @property
    def name(self) -> str:
        return self.new.name

    @property
    def type_changed(self) -> bool:
        return self.old.type != self.new.type

    @property
    def args(self) -> dict[str, tuple[Any, Any]]:
        """Changed arguments: name -> (old value, new value); ``MISSING`` where absent."""
        keys = list(self.old.args) + [k for k in self.new.args if k not in self.old.args]
        out = {}
        for key in keys:
            old, new = self.old.args.get(key, MISSING), self.new.args.get(key, MISSING)
            if not _same(old, new):
                out[key] = (old, new)
        return out

    @property
    def output_changed(self) -> bool:
        return _shape_text(self.old.output) != _shape_text(self.new.output)

    @property
    def params_delta(self) -> int:
        return self.new.params - self.old.params

    def details(self) -> list[str]:
        """One line per difference, e.g. ``out_features: 120 -> 100``."""
        lines = []
        if self.type_changed:
            lines.append(f"type: {self.old.type} -> {self.new.type}")
        for key, (old, new) in self.args.items():
            lines.append(f"{key}: {_show(old)} -> {_show(new)}")
        if self.output_changed:
            lines.append(f"output: {_shape_text(self.old.output) or '?'} -> "
                         f"{_shape_text(self.new.output) or '?'}")
        if self.old.params != self.new.params:
            lines.append(f"parameters: {_count_change(self.old.params, self.new.params)}")
        if self.old.buffers != self.new.buffers:
            lines.append(f"buffer values: {_count_change(self.old.buffers, self.new.buffers)}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "old_type": self.old.type, "new_type": self.new.type,
                "args": {k: [_jsonable(o), _jsonable(n)] for k, (o, n) in self.args.items()},
                "old_output": _shape_text(self.old.output),
                "new_output": _shape_text(self.new.output),
                "old_params": self.old.params, "new_params": self.new.params,
                "params_delta": self.params_delta,
                "old_buffers": self.old.buffers, "new_buffers": self.new.buffers}


@dataclass(frozen=True)
class _Side:
    label: str
    block: str
    input: tuple | None
    output: tuple | None
    params: int
    trainable: int
    buffers: int

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.label, "block": self.block, "input": _shape_text(self.input),
                "output": _shape_text(self.output), "params": self.params,
                "trainable": self.trainable, "buffers": self.buffers}


@dataclass
class SpecDiff:
    """The differences between two specs; ``render`` formats them."""

    old: _Side
    new: _Side
    added: list[ModuleInfo] = field(default_factory=list)
    removed: list[ModuleInfo] = field(default_factory=list)
    changed: list[ModuleChange] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """No module added, removed or changed, and the same input and output shapes."""
        return (not self.added and not self.removed and not self.changed
                and _shape_text(self.old.input) == _shape_text(self.new.input)
                and _shape_text(self.old.output) == _shape_text(self.new.output))

    @property
    def params_delta(self) -> int:
        return self.new.params - self.old.params

    def to_dict(self) -> dict[str, Any]:
        return {"old": self.old.to_dict(), "new": self.new.to_dict(),
                "identical": self.identical, "params_delta": self.params_delta,
                "added": [m.to_dict() for m in self.added],
                "removed": [m.to_dict() for m in self.removed],
                "changed": [c.to_dict() for c in self.changed]}

    def render(self, fmt: str = "text") -> str:
        """``"text"`` (plain, no colour), ``"markdown"`` or ``"json"``."""
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2) + "\n"
        if fmt == "markdown":
            return self._markdown()
        if fmt == "text":
            return self._text()
        raise ValueError(f"unknown diff format {fmt!r}; use one of {', '.join(FORMATS)}")

    # renderers
    def _headline(self, side: _Side) -> str:
        return (f"{side.label}: {side.block} {_shape_text(side.input) or '?'} -> "
                f"{_shape_text(side.output) or '?'}, {side.params:,} parameters")

    def _summary(self) -> list[str]:
        lines = []
        if _shape_text(self.old.input) != _shape_text(self.new.input):
            lines.append(f"input: {_shape_text(self.old.input) or '?'} -> "
                         f"{_shape_text(self.new.input) or '?'}")
        if _shape_text(self.old.output) != _shape_text(self.new.output):
            lines.append(f"output: {_shape_text(self.old.output) or '?'} -> "
                         f"{_shape_text(self.new.output) or '?'}")
        lines.append(f"parameters: {_count_change(self.old.params, self.new.params)}")
        if self.old.buffers != self.new.buffers:
            lines.append(f"buffer values: {_count_change(self.old.buffers, self.new.buffers)}")
        lines.append(f"modules: {len(self.added)} added, {len(self.removed)} removed, "
                     f"{len(self.changed)} changed")
        return lines

    def _text(self) -> str:
        out = [f"--- {self._headline(self.old)}", f"+++ {self._headline(self.new)}"]
        if self.identical:
            out.append("no differences")
            return "\n".join(out) + "\n"
        out += self._summary()
        width = max([len(m.name) for m in self.added + self.removed]
                    + [len(c.name) for c in self.changed] + [4])
        for title, mark, items in (("added", "+", self.added), ("removed", "-", self.removed)):
            if not items:
                continue
            out += ["", f"{title}:"]
            for m in items:
                sign = mark if m.params else ""
                out.append(f"  {mark} {m.name.ljust(width)}  {m.type}"
                           + (f"  {_shape_text(m.output)}" if m.output is not None else "")
                           + f"  ({sign}{m.params:,} parameters)")
        if self.changed:
            out += ["", "changed:"]
            for c in self.changed:
                out.append(f"  ~ {c.name.ljust(width)}  {c.new.type}")
                out += [f"      {line}" for line in c.details()]
        return "\n".join(out) + "\n"

    def _markdown(self) -> str:
        out = ["| | spec | block | input | output | parameters |",
               "|---|---|---|---|---|---:|"]
        for mark, side in (("old", self.old), ("new", self.new)):
            out.append(f"| {mark} | `{_md(side.label)}` | {_md(side.block)} | "
                       f"`{_shape_text(side.input) or '?'}` | `{_shape_text(side.output) or '?'}` "
                       f"| {side.params:,} |")
        out.append("")
        if self.identical:
            out.append("No differences.")
            return "\n".join(out) + "\n"
        out.append("**Parameters:** " + _count_change(self.old.params, self.new.params)
                   + f". **Modules:** {len(self.added)} added, {len(self.removed)} removed, "
                   f"{len(self.changed)} changed.")
        rows = []
        for m in self.added:
            rows.append(("added", m.name, m.type, f"output `{_shape_text(m.output)}`"
                         if m.output is not None else "", _signed(m.params, "+")))
        for m in self.removed:
            rows.append(("removed", m.name, m.type, f"output `{_shape_text(m.output)}`"
                         if m.output is not None else "", _signed(m.params, "-")))
        for c in self.changed:
            kind = c.new.type if not c.type_changed else f"{c.old.type} -> {c.new.type}"
            details = [d for d in c.details() if not d.startswith(("type:", "parameters:"))]
            delta = _count_change(c.old.params, c.new.params) if c.params_delta else ""
            rows.append(("changed", c.name, kind, "<br>".join(f"`{_md(d)}`" for d in details),
                         delta))
        if rows:
            out += ["", "| change | path | type | details | parameters |",
                    "|---|---|---|---|---:|"]
            for change, name, kind, details, params in rows:
                out.append(f"| {change} | `{_md(name)}` | {_md(kind)} | {details} | {params} |")
        return "\n".join(out) + "\n"


# ---- collecting ---------------------------------------------------------------------------------

def module_table(analysis: Analysis) -> dict[str, ModuleInfo]:
    """Every module of ``analysis``'s model by path (shared modules once), built on ``meta``."""
    return _collect(analysis)[0]


def _collect(analysis: Analysis) -> tuple[dict[str, ModuleInfo], int]:
    model = build_analysis(analysis, device="meta")
    unique = {id(p): p for p in model.parameters()}
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    table: dict[str, ModuleInfo] = {}
    for path, module in model.named_modules():
        ir = getattr(module, "_netspec_ir", None)
        params = {id(p): p for p in module.parameters()}
        own = {id(p): p for p in module.parameters(recurse=False)}
        args: dict[str, Any] = {}
        output = None
        kind = type(module).__name__
        if ir is not None:
            kind = class_name(ir)
            output = ir.out_shape
            if ir.kind == "layer":
                args.update(ir.resolved_args if ir.resolved_args is not None else ir.args)
            else:
                args.update(ir.block_args)
                for name, decl in ir.tensors.items():
                    word = "param" if decl.trainable else "const"
                    args[f"{word} {name}"] = _tensor_shapes(decl)
        table[path] = ModuleInfo(path, kind, args, output,
                                 sum(p.numel() for p in params.values()),
                                 sum(p.numel() for p in own.values()),
                                 sum(b.numel() for b in module.buffers()))
    return table, trainable


def _side(analysis: Analysis, table: dict[str, ModuleInfo], trainable: int,
          label: str | None) -> _Side:
    root = analysis.ir
    return _Side(label or analysis.program.root, root.cls_name, root.in_shape, root.out_shape,
                 table[""].params, trainable, table[""].buffers)


def diff_specs(a: Analysis, b: Analysis, *, labels: tuple[str, str] | None = None) -> SpecDiff:
    """Compare the models of two analysed specs (``a`` old, ``b`` new) module by module."""
    (old, old_trainable), (new, new_trainable) = _collect(a), _collect(b)
    old_label, new_label = labels if labels is not None else (None, None)
    if labels is None and a.program.root == b.program.root:
        old_label, new_label = f"{a.program.root} (a)", f"{b.program.root} (b)"
    result = SpecDiff(_side(a, old, old_trainable, old_label),
                      _side(b, new, new_trainable, new_label))
    for path, info in new.items():
        if path not in old:
            result.added.append(info)
    for path, info in old.items():
        if path not in new:
            result.removed.append(info)
    for path, before in old.items():
        after = new.get(path)
        if after is None:
            continue
        change = ModuleChange(before, after)
        if (change.type_changed or change.args or change.output_changed
                or before.own_params != after.own_params
                or (not path and (before.params != after.params
                                  or before.buffers != after.buffers))):
            result.changed.append(change)
    return result


# ---- values -------------------------------------------------------------------------------------

def _tensor_shapes(decl: Any) -> Any:
    shapes = decl.shapes or {}
    if decl.container == "tensor":
        return shapes.get("")
    if decl.container == "list":
        return [shapes[k] for k in sorted(shapes, key=int)]
    return dict(shapes)


def _same(a: Any, b: Any) -> bool:
    """Equal as written: dim symbols compare by name (each analysis has its own ``N``), and
    ``3``, ``3.0`` and ``true`` differ."""
    return _show(a) == _show(b)


def _shape_text(shape: Any) -> str | None:
    return None if shape is None else fmt_shape(shape)


def _show(value: Any) -> str:
    """A value as it would be written in a spec."""
    return "(absent)" if value is MISSING else spec_literal(value)


def _jsonable(value: Any) -> Any:
    if value is MISSING:
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _count_change(old: int, new: int) -> str:
    if old == new:
        return f"{new:,} (unchanged)"
    return f"{old:,} -> {new:,} ({new - old:+,})"


def _signed(count: int, sign: str) -> str:
    return f"{sign}{count:,}" if count else "0"


def _md(text: str) -> str:
    return text.replace("|", "\\|")
