"""ONNX export: every spec in specs/ exports, passes onnx.checker, and runs in onnxruntime with
PyTorch's outputs, at its declared input (symbols = 2) and, with a symbolic batch, at batch 3.

A spec with a runtime ``while`` (data-dependent control flow, as in fixed_hidden_mlp.net) is
refused with a located ``ExportError`` before the exporter runs: torch's exporter cannot capture
such a loop (it fails on the data-dependent condition), and a tracing exporter would silently
fix the iteration count. Failures never touch an existing output file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_MISSING = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
if _MISSING:
    pytest.skip(f"ONNX export tests need {', '.join(_MISSING)} (pip install 'netspec[onnx]')",
                allow_module_level=True)

import numpy as np
import onnx
import onnxruntime as ort
import torch

import netspec
from netspec.dims import Sym
from netspec.onnx_export import ExportError, export_onnx

SPECS = Path(__file__).resolve().parent.parent / "specs"
RTOL, ATOL = 1e-4, 1e-5


def has_runtime_loop(spec: Path) -> bool:
    """Whether the spec's default entry has a ``while`` on tensor values anywhere in its tree."""
    analysis = netspec.analyze(spec)
    return any(node.get("op") == "loop"
               for _, mod in analysis.ir.walk() if mod.graph is not None
               for _, node in mod.graph.nodes(data=True))


ALL_SPECS = sorted(SPECS.glob("*.net"))
EXPORTABLE = [s for s in ALL_SPECS if not has_runtime_loop(s)]


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    return session.run(None, {inp.name: x.numpy()})[0]


def torch_out(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("spec", EXPORTABLE, ids=[s.name for s in EXPORTABLE])
def test_export_matches_pytorch(spec: Path, tmp_path: Path):
    model = netspec.build(spec, seed=0)
    declared = model._netspec.ir.in_shape
    shape = tuple(2 if isinstance(d, Sym) else d for d in declared)
    path = export_onnx(model, tmp_path / "model.onnx")
    assert path == tmp_path / "model.onnx" and path.is_file()
    assert model.training, "export_onnx must restore the model's own (training) mode"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]   # no temporary left behind

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["netspec.block"] == model._netspec.block

    model.eval()
    torch.manual_seed(1)
    x = torch.randn(shape)
    np.testing.assert_allclose(run_onnx(path, x), torch_out(model, x), rtol=RTOL, atol=ATOL)

    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if isinstance(declared[0], Sym):
        assert batch.dim_param, "a symbolic batch must be a dynamic axis in the ONNX graph"
        x3 = torch.randn((3,) + shape[1:])
        np.testing.assert_allclose(run_onnx(path, x3), torch_out(model, x3),
                                   rtol=RTOL, atol=ATOL)
    else:
        assert batch.dim_value == shape[0]


def test_data_dependent_loop_is_refused(tmp_path: Path):
    spec = SPECS / "fixed_hidden_mlp.net"
    assert has_runtime_loop(spec)
    model = netspec.build(spec, seed=0)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")
    with pytest.raises(netspec.NetspecError) as info:
        export_onnx(model, out)
    error = info.value
    assert isinstance(error, ExportError)
    message = str(error)
    assert "cannot be exported to ONNX" in message and "data-dependent" in message
    assert "while" in message
    (diag,) = error.diagnostics
    assert diag.span is not None and diag.span.file.endswith("fixed_hidden_mlp.net")
    assert "while" in error.sources.line(diag.span.file, diag.span.line)
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_exporter_failure_is_a_netspec_error(tmp_path: Path):
    """A model outside netspec with data-dependent control flow: the exporter's own refusal."""
    class Branchy(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x - 1

    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")
    with pytest.raises(ExportError, match="cannot be exported to ONNX.*data-dependent"):
        export_onnx(Branchy(), out, input_shape=[2, 3])
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_arguments(tmp_path: Path):
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x + 1

    with pytest.raises(ExportError, match="no declared input shape"):
        export_onnx(Plain(), tmp_path / "a.onnx")
    model = netspec.build(SPECS / "mlp.net", seed=0)
    with pytest.raises(ExportError, match="has 3 dims"):
        export_onnx(model, tmp_path / "a.onnx", input_shape=[2, 784, 1])
    with pytest.raises(ExportError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=0)
    meta = netspec.build(SPECS / "mlp.net", device="meta")
    with pytest.raises(ExportError, match="meta device"):
        export_onnx(meta, tmp_path / "a.onnx")
    assert not list(tmp_path.iterdir())


def test_input_shape_and_opset(tmp_path: Path):
    """An explicit example input (batch 1 still exports a dynamic batch) and an older opset."""
    model = netspec.build(SPECS / "mlp.net", seed=0).eval()
    path = export_onnx(model, tmp_path / "mlp.onnx", input_shape="[1, 784]", opset=18)
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    assert proto.graph.input[0].name == "x"
    for n in (1, 5):
        x = torch.randn(n, 784)
        np.testing.assert_allclose(run_onnx(path, x), torch_out(model, x), rtol=RTOL, atol=ATOL)
