"""The Python API: ``build``, ``check``, ``analyze``, each a composition of the stages."""

from __future__ import annotations

import ast as pyast
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from netspec.args import spec_literal
from netspec.dims import Shape, Sym
from netspec.elaborate import elaborate
from netspec.errors import Diagnostic, LimitError, SourceMap, SpecError
from netspec.ir import ModuleIR, has_init_rules, lint
from netspec.limits import Limits, using
from netspec.notes import spec_notes
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

    @property
    def notes(self) -> list[Diagnostic]:
        """What the check reports without failing (``netspec check`` prints them): symbolic
        sizes taken as equal on trust (a ``cat`` of ``2*(H//4)`` and ``H//2`` rows holds only
        for some ``H``), and values computed but never used."""
        return spec_notes(self.ir)


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
    """A ``--set k=v`` value in spec syntax: 3, 0.5, true, false, none, "text", a list of
    them (``[64, 128]``, a tuple), or a bare word (a string, in a list too)."""
    try:
        return _literal(pyast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError):
        return text


_WORDS = {"true": True, "false": False, "none": None}


def _literal(node: pyast.expr) -> Any:
    """A value of Python's syntax tree for a ``--set`` value: spec words and bare words in
    place of Python names; ValueError for anything else (an expression)."""
    if isinstance(node, pyast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, pyast.Name):
        return _WORDS.get(node.id, node.id)
    if isinstance(node, pyast.UnaryOp) and isinstance(node.op, pyast.USub):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    if isinstance(node, (pyast.List, pyast.Tuple)):
        return tuple(_literal(item) for item in node.elts)
    raise ValueError("not a value")


def analyze(spec: str | Path | Program, block: str | None = None, input: Any = None, *,
            limits: Limits | None = None, args: dict[str, Any] | None = None,
            free_dims: bool = False, **block_args: Any) -> Analysis:
    """Parse, elaborate and shape-check ``spec`` (a path or source text); raises ``SpecError``.

    Block arguments come as keywords, or in ``args`` (for names such as ``input``). With
    ``free_dims`` (for building), a concrete ``input`` fixes only the declared dims that the
    model's construction needs; see ``_free_dims``.
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
            if free_dims and shape is not None:
                ir = _free_dims(program, block, block_args, ir, shape)
        except RecursionError:
            raise LimitError([Diagnostic("limit error", "this spec nests too deeply to compile",
                                         hint="split long expressions into named values")],
                             program.sources) from None
        except SpecError as exc:
            raise type(exc)(_note_given(exc.diagnostics, block_args), program.sources) from None
        finally:
            sys.setrecursionlimit(depth)
    return Analysis(program, ir, ir.cls_name, dict(block_args), shape)


def _note_given(diagnostics: list[Diagnostic], block_args: dict[str, Any]) -> list[Diagnostic]:
    """The diagnostics, the first noting the block arguments given from outside the spec: a
    value that caused an error may appear in no file."""
    if not block_args or not diagnostics:
        return diagnostics
    given = ", ".join(f"{k}={spec_literal(v)}" for k, v in block_args.items())
    first = diagnostics[0]
    note = f"built with {given} (block arguments from outside the spec)"
    return [replace(first, notes=first.notes + (note,)), *diagnostics[1:]]


def _free_dims(program: Program, block: str | None, block_args: dict[str, Any],
               fixed: ModuleIR, shape: Shape) -> ModuleIR:
    """The IR for the concrete input ``shape`` with every dim the entry block declares as a
    symbol left free where the model's construction does not need its value.

    ``fixed`` is the IR with all of them bound. Binding ``N`` of ``input x: [N, 4, 6]`` to the
    2 of ``input=[2, 4, 6]`` would write 2 into the generated code (``reshape(x, N, 24)``
    becoming ``reshape(x, (2, 24))``), and the model would take only batches of 2. Each
    declared symbol is tried free in turn, and stays free if the spec still checks and every
    layer and tensor is built exactly as in ``fixed``: the model is the same at ``shape``,
    and also runs at other sizes, as a hand-written one does.
    """
    declared = fixed.input_dims or ()
    if len(declared) != len(shape):
        return fixed
    free: set[int] = set()
    best = fixed
    for i, dim in enumerate(declared):
        if not (isinstance(dim, Sym) and dim.atom() is not None):
            continue
        ir = elaborate(program, block, block_args)    # a shaped IR is not shaped again
        lint(ir)
        assert ir.input_dims is not None
        trial = tuple(ir.input_dims[j] if j in free or j == i else shape[j]
                      for j in range(len(shape)))
        try:
            infer_shapes(ir, trial, program.sources)
        except SpecError:
            continue           # the spec needs this dim's value (a size is inferred from it)
        if _built_alike(ir, fixed):
            free.add(i)
            best = ir
    return best


def _built_alike(a: ModuleIR, b: ModuleIR) -> bool:
    """Whether two shaped IRs of one spec construct the same modules and tensors."""
    walked_a, walked_b = list(a.walk()), list(b.walk())
    if [p for p, _ in walked_a] != [p for p, _ in walked_b]:
        return False
    for (_, x), (_, y) in zip(walked_a, walked_b):
        if x.cls_name != y.cls_name or x.resolved_args != y.resolved_args:
            return False
        if {k: t.shapes for k, t in x.tensors.items()} != \
                {k: t.shapes for k, t in y.tensors.items()}:
            return False
    return True


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
        analysis = analyze(spec, block, input, free_dims=True, **block_args)
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
    problem = device_problem(device) if device is not None else None
    if problem is not None:
        problems.append(problem)
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
    if has_init_rules(analysis.ir) and matched_static_model(analysis) is None:
        build_analysis(analysis, device="meta")


def matched_static_model(analysis: Analysis):
    """The model's modules and tensors from the layers' tensor tables, its init rules matched
    as a build matches them (one matching nothing is an error); None when some layer has no
    table, so that only a build can tell what it holds."""
    from netspec.init import plan_sites
    from netspec.tensors import Unknown, static_model

    try:
        model = static_model(analysis.ir)
    except Unknown:
        return None
    if has_init_rules(analysis.ir):
        plan_sites(model.sites(), analysis.sources)
    return model


def materialize(model, device: Any = "cpu", seed: int | None = None):
    """Allocate and initialise a model built with ``device="meta"``, in place."""
    from netspec.init import materialize as _materialize

    check_device(device)
    return _materialize(model, device, seed=seed)


def check_device(device: Any) -> None:
    """Refuse, as an argument error, a ``device`` that ``device_problem`` finds wrong."""
    problem = device_problem(device)
    if problem is not None:
        raise SpecError([Diagnostic("argument error", problem)])


def device_problem(device: Any) -> str | None:
    """Why a model cannot be put on ``device`` here (not a device, or none of its kind on this
    machine), or None: a clear error rather than torch's assertion deep in the build."""
    import torch

    try:
        where = torch.device(device)
    except (RuntimeError, TypeError):
        return f"device={device!r} is not a torch device"
    if where.type in ("cpu", "meta"):
        return None
    backend = getattr(torch, where.type, None)
    available = getattr(backend, "is_available", None)
    if callable(available) and not available():
        return f"device={device!r}: torch has no {where.type} device on this machine"
    count = getattr(backend, "device_count", None)
    if where.index is not None and callable(count) and where.index >= count():
        return f"device={device!r}: this machine has {count()} {where.type} device(s)"
    return None
