"""The Python API: ``build``, ``check``, ``analyze``, each a composition of the stages."""

from __future__ import annotations

import ast as pyast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from netspec.dims import Shape
from netspec.elaborate import elaborate
from netspec.errors import Diagnostic, LimitError, SourceMap, SpecError
from netspec.ir import ModuleIR, lint
from netspec.limits import Limits, using
from netspec.program import Program, load
from netspec.shapes import infer_shapes


@dataclass
class Analysis:
    """A checked spec: the loaded program, the shaped IR, and how it was requested."""

    program: Program
    ir: ModuleIR
    block: str
    args: dict[str, Any]
    input_shape: Shape | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def output_shape(self) -> Shape | None:
        return self.ir.out_shape

    @property
    def sources(self) -> SourceMap:
        return self.program.sources


def parse_shape(text: str | Sequence[int] | None) -> Shape | None:
    """``"[2, 1, 28, 28]"`` or ``(2, 1, 28, 28)`` -> a shape tuple."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            value = pyast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise SpecError([Diagnostic("argument error", f"--input {text!r} is not a shape",
                                        hint='write it like "[2, 1, 28, 28]"')]) from None
    else:
        value = text
    if isinstance(value, int):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise SpecError([Diagnostic("argument error", f"input shape {text!r} must be a list of "
                                    "non-negative integers", hint='e.g. "[2, 1, 28, 28]"')])
    return tuple(value)


def parse_value(text: str) -> Any:
    """A ``--set k=v`` value in spec syntax: 3, 0.5, true, false, none, "text", or a bare word."""
    words = {"true": True, "false": False, "none": None}
    if text in words:
        return words[text]
    try:
        value = pyast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, (int, float, str)) else text


def analyze(spec: str | Path | Program, block: str | None = None, input: Any = None, *,
            limits: Limits | None = None, args: dict[str, Any] | None = None,
            **block_args: Any) -> Analysis:
    """Parse, elaborate and shape-check ``spec`` (a path or source text); raises ``SpecError``.

    Block arguments come as keywords, or in ``args`` (for names such as ``input``).
    """
    block_args = {**(args or {}), **block_args}
    if block is not None and not isinstance(block, str):
        raise SpecError([Diagnostic("argument error", f"block={block!r} must be a block name")])
    with using(limits):
        program = spec if isinstance(spec, Program) else load(spec)
        depth = sys.getrecursionlimit()
        sys.setrecursionlimit(max(depth, 20_000))    # deep expression trees recurse
        try:
            ir = elaborate(program, block, block_args)
            lint(ir)
            shape = parse_shape(input)
            infer_shapes(ir, shape, program.sources)
        except RecursionError:
            raise LimitError([Diagnostic("limit error", "this spec nests too deeply to compile",
                                         hint="split long expressions into named values")],
                             program.sources) from None
        except SpecError as exc:
            raise type(exc)(exc.diagnostics, program.sources) from None
        finally:
            sys.setrecursionlimit(depth)
    return Analysis(program, ir, ir.cls_name, dict(block_args), shape)


def check(spec: str | Path, block: str | None = None, input: Any = None, *,
          limits: Limits | None = None, **block_args: Any) -> list[Diagnostic]:
    """Every problem found in ``spec``; an empty list when it is sound."""
    try:
        check_init_rules(analyze(spec, block, input, limits=limits, **block_args))
    except SpecError as exc:
        return exc.diagnostics
    return []


def build(spec: str | Path, block: str | None = None, input: Any = None, device: Any = None,
          dtype: Any = None, seed: int | None = None, *, limits: Limits | None = None,
          **block_args: Any):
    """Compile ``spec`` into a ``torch.nn.Module`` (on ``device``, in ``dtype``).

    ``seed`` makes the weights bit-identical from run to run; ``device="meta"`` builds the
    structure only (see ``materialize``); ``limits`` overrides the resource limits.
    """
    with using(limits):
        analysis = analyze(spec, block, input, **block_args)
        return build_analysis(analysis, device=device, dtype=dtype, seed=seed)


def build_analysis(analysis: Analysis, *, device: Any = None, dtype: Any = None,
                   seed: int | None = None):
    """Build the module of an analysed spec (see ``build``)."""
    import torch

    from netspec.builder import build_module

    problems = []
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            problems.append("dtype must be a torch dtype such as torch.float32 or \"float64\"")
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            problems.append(f"device={device!r} is not a torch device")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                             or not 0 <= seed < 2 ** 63):
        problems.append(f"seed={seed!r} must be an integer in [0, 2**63)")
    if problems:
        raise SpecError([Diagnostic("argument error", p) for p in problems])
    try:
        model = build_module(analysis.ir, device=device, dtype=dtype, seed=seed)
    except SpecError as exc:       # init rules and torch's own checks point into the spec
        raise type(exc)(exc.diagnostics, analysis.sources) from None
    object.__setattr__(model, "_netspec", analysis)
    return model


def check_init_rules(analysis: Analysis) -> None:
    """Raise if an init rule selects nothing.

    The rules are matched against the parameters the layers' tensor tables name; only a layer
    without a table needs torch to say what it holds (a build on the meta device).
    """
    if not any(mod.init_rules for _, mod in analysis.ir.walk()):
        return
    from netspec.init import plan_sites
    from netspec.tensors import Unknown, static_model

    try:
        model = static_model(analysis.ir)
    except Unknown:
        build_analysis(analysis, device="meta")
        return
    plan_sites(model.sites(), analysis.sources)


def materialize(model, device: Any = "cpu", seed: int | None = None):
    """Allocate and initialise a model built with ``device="meta"``, in place."""
    from netspec.init import materialize as _materialize

    return _materialize(model, device, seed=seed)
