"""ONNX export of netspec-built models: ``export_onnx(model, path)``.

The model is exported with ``torch.onnx.export(..., dynamo=True)``, the exporter built on
``torch.export``. It refuses code whose control flow depends on tensor values instead of
recording the one path the example input happened to take, so a model that cannot be
represented fails loudly rather than exporting a graph that computes something else. (The
legacy TorchScript exporter, ``dynamo=False``, traces a ``while`` on tensor values into a fixed
number of iterations and exports it without complaint; it is also deprecated.)

The example input has the model's declared input shape with every symbolic dim set to 2; a
symbolic batch dim (dim 0) stays dynamic in the ONNX graph. The model is exported in eval mode
(its own modes are restored afterwards), checked with ``onnx.checker.check_model``, and
written atomically: a failing export leaves an existing file untouched.

Needs the ``onnx`` extra: ``onnx``, ``onnxscript`` (the exporter), and ``onnxruntime`` to run
the result.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from netspec.errors import Diagnostic, NetspecError, SpecError, Span

__all__ = ["ExportError", "export_onnx"]

EXAMPLE_DIM = 2          # the size given to every symbolic dim in the example input
PROTOBUF_LIMIT = 2 ** 31  # an ONNX file is one protobuf message, at most 2 GiB


class ExportError(SpecError):
    """A model cannot be exported to ONNX (the diagnostics say why, and where in the spec)."""


def export_onnx(model: Any, path: str | Path, input_shape: str | Sequence[int] | None = None,
                opset: int | None = None, *, verbose: bool = False) -> Path:
    """Export ``model`` to the ONNX file ``path`` and return the path.

    ``input_shape`` overrides the example input (default: the model's declared input with
    symbolic dims set to 2); ``opset`` is the ONNX opset (default: the exporter's). A symbolic
    batch dim (dim 0 of the declared input) is dynamic in the exported graph. ``verbose`` lets
    the exporter print its progress and diagnostics. Raises ``ExportError`` (a
    ``NetspecError``) when the model cannot be exported, naming the reason.
    """
    analysis = getattr(model, "_netspec", None)
    sources = analysis.sources if analysis is not None else None
    name = type(model).__name__
    if analysis is not None:
        _refuse_runtime_loops(analysis, name)
    shape, dynamic_batch = _example_shape(analysis, input_shape, name)
    if opset is not None and (not isinstance(opset, int) or isinstance(opset, bool) or opset < 1):
        _fail(f"opset must be a positive integer, not {opset!r}")

    torch, onnx = _import_exporter()
    example = _example_input(torch, model, shape, name)
    input_name = _input_name(model, analysis)
    output_name = "output" if input_name != "output" else "result"
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None

    try:
        with _eval_mode(model), _quiet(not verbose):
            program = torch.onnx.export(
                model, (example,), dynamo=True, dynamic_shapes=dynamic_shapes,
                input_names=[input_name], output_names=[output_name], opset_version=opset,
                verbose=verbose)
            proto = program.model_proto
    except NetspecError:
        raise
    except Exception as exc:  # the exporter raises many types; each becomes one ExportError
        raise ExportError([Diagnostic(
            "export error", f"{name} cannot be exported to ONNX: {_reason(exc)}",
            hint="ONNX needs a graph fixed at export time: no control flow on tensor "
                 "values, no data-dependent shapes")], sources) from exc

    import netspec

    for key, value in {"netspec.version": netspec.__version__,
                       "netspec.block": getattr(analysis, "block", None) or name}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)

    size = proto.ByteSize()
    if size >= PROTOBUF_LIMIT:
        _fail(f"{name} is {size / 2 ** 30:.1f} GiB as ONNX; one ONNX file holds at most 2 GiB "
              "(export large models with torch.onnx and external data)", sources)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        _fail(f"the ONNX graph exported from {name} does not pass onnx.checker: "
              f"{_first_line(str(exc))}", sources)
    data = proto.SerializeToString()

    from netspec.checkpoint import atomic_file

    path = Path(path)
    with atomic_file(path) as f:
        f.write(data)
    return path


# ---- checks -----------------------------------------------------------------------------------

def _refuse_runtime_loops(analysis: Any, name: str) -> None:
    """A ``while`` runs a number of times that depends on tensor values: no ONNX graph for it."""
    found: list[Diagnostic] = []
    for path, mod in analysis.ir.walk():
        if mod.graph is None:
            continue
        for _, node in mod.graph.nodes(data=True):
            if node.get("op") == "loop":
                where = f"block {mod.cls_name}" + (f" (at {path})" if path else "")
                found.append(Diagnostic(
                    "export error",
                    f"{name} cannot be exported to ONNX: the `while` loop in {where} repeats "
                    "a number of times that depends on tensor values (data-dependent control "
                    "flow), which ONNX export cannot capture",
                    node.get("span") if isinstance(node.get("span"), Span) else None,
                    hint="use a fixed number of steps (repeat n { ... }), or run this model "
                         "in PyTorch"))
    if found:
        raise ExportError(found, analysis.sources)


def _example_shape(analysis: Any, input_shape: Any, name: str) -> tuple[tuple[int, ...], bool]:
    """The example input's shape, and whether dim 0 is a dynamic batch."""
    from netspec.api import parse_shape
    from netspec.dims import Sym

    declared = getattr(analysis.ir, "in_shape", None) if analysis is not None else None
    dynamic = bool(declared) and isinstance(declared[0], Sym)
    if input_shape is not None:
        shape = parse_shape(input_shape)
        if not shape:
            _fail("input_shape must have at least one dim")
        if declared is not None and len(shape) != len(declared):
            _fail(f"input_shape {list(shape)} has {len(shape)} dims; {name} takes "
                  f"{len(declared)}-D input", analysis.sources)
        if dynamic and shape[0] < EXAMPLE_DIM:
            # torch.export fixes a dim of size 0 or 1; the batch is dynamic, so the example's
            # batch size does not shape the graph.
            shape = (EXAMPLE_DIM,) + tuple(shape[1:])
        return tuple(shape), dynamic
    if declared is None:
        _fail(f"{name} has no declared input shape; pass input_shape "
              "(e.g. input_shape=[2, 1, 28, 28])", analysis.sources if analysis else None)
    return tuple(EXAMPLE_DIM if isinstance(d, Sym) else int(d) for d in declared), dynamic


def _import_exporter():
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter translates with it)
        import torch
    except ImportError as exc:
        _fail(f"ONNX export needs the onnx extra ({exc.name} is not installed)",
              hint="pip install 'netspec[onnx]'")
    return torch, onnx


def _example_input(torch: Any, model: Any, shape: tuple[int, ...], name: str):
    tensors = list(model.parameters()) + list(model.buffers())
    if any(t.device.type == "meta" for t in tensors):
        _fail(f"{name} is on the meta device; materialize it before exporting",
              hint="netspec.materialize(model)")
    floating = [t for t in tensors if t.is_floating_point()]
    dtype = floating[0].dtype if floating else torch.get_default_dtype()
    device = tensors[0].device if tensors else torch.device("cpu")
    return torch.randn(shape, dtype=dtype, device=device)


def _input_name(model: Any, analysis: Any) -> str:
    """The spec's name for the input (``x``, ``img``), else the forward's parameter name."""
    graph = getattr(getattr(analysis, "ir", None), "graph", None)
    if graph is not None:
        for _, node in graph.nodes(data=True):
            if node.get("op") == "placeholder" and str(node.get("name") or "").isidentifier():
                return node["name"]
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        params = []
    return params[0] if params and params[0].isidentifier() else "input"


# ---- helpers ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Eval mode for the export (dropout off, batch-norm running stats), then each module's own."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence the exporter's progress lines, log warnings and graph dumps (errors still raise)."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    import warnings

    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _reason(exc: BaseException) -> str:
    """The root cause of an exporter failure in a line or two, with the user line it names."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(exc)
    reason = f"{type(root).__name__}: {_first_line(str(root))}" if root is not exc \
        else _first_line(_strip_ansi(text))
    if "## Exception summary" in text:          # the exporter's own summary of the cause
        summary = _strip_ansi(text.split("## Exception summary", 1)[1]).strip()
        reason = re.sub(r"<class '(?:[\w.]*\.)?(\w+)'>", r"\1", _first_line(summary))
    marker = "The following call raised this error:"
    if marker in text:
        call = [ln.strip() for ln in text.split(marker, 1)[1].strip().splitlines()[:2]]
        reason += f" (raised by {': '.join(ln for ln in call if ln)})"
    return reason


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "unknown error")


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _fail(message: str, sources: Any = None, *, hint: str | None = None):
    raise ExportError([Diagnostic("export error", message, hint=hint)], sources)
