"""``netspec summary``: a table of a spec's modules with output shapes and parameter counts."""

from __future__ import annotations

from rich.table import Table

from netspec.api import Analysis, build_analysis
from netspec.dims import fmt_shape


def summary_rows(analysis: Analysis, depth: int = -1) -> list[dict]:
    """One row per module (shared modules once): path, layer, output shape, parameter counts.

    The model is built on the ``meta`` device, so no weight memory is allocated.
    """
    model = build_analysis(analysis, device="meta")
    rows = []
    for path, module in model.named_modules():
        level = 0 if not path else path.count(".") + 1
        if depth >= 0 and level > depth:
            continue
        ir = getattr(module, "_netspec_ir", None)
        params = {id(p): p for p in module.parameters()}
        rows.append({
            "path": path or "(model)",
            "layer": type(module).__name__,
            "output": fmt_shape(ir.out_shape) if ir is not None and ir.out_shape is not None
            else "",
            "params": sum(p.numel() for p in params.values()),
            "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
            "buffers": sum(b.numel() for b in module.buffers()),
            "level": level,
        })
    return rows


def summary_table(analysis: Analysis, depth: int = -1) -> Table:
    rows = summary_rows(analysis, depth)
    ir = analysis.ir
    table = Table(title=f"{analysis.program.root}: {ir.cls_name} "
                        f"{fmt_shape(ir.in_shape)} -> {fmt_shape(ir.out_shape)}")
    table.add_column("path")
    table.add_column("layer")
    table.add_column("output shape")
    table.add_column("params", justify="right")
    for row in rows:
        indent = "  " * max(0, row["level"] - 1)
        table.add_row(indent + row["path"].rsplit(".", 1)[-1] if row["level"] else row["path"],
                      row["layer"], row["output"], f"{row['params']:,}")
    total = rows[0]
    table.caption = (f"{total['params']:,} parameters ({total['trainable']:,} trainable), "
                     f"{total['buffers']:,} buffer values")
    return table


def init_table(analysis: Analysis) -> Table:
    """Which rule initialises each parameter (``default``: the layer's own initialisation)."""
    from netspec.init import describe_plan

    model = build_analysis(analysis, device="meta")
    table = Table(title="init")
    table.add_column("parameter")
    table.add_column("layer")
    table.add_column("rule")
    for path, layer, rule in describe_plan(model):
        table.add_row(path, layer, rule)
    return table
