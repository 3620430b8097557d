"""Every spec's model works with torch.compile(fullgraph=True) and torch.export.

Each spec in specs/ is built at its declared input with every dim symbol set to 2 and checked
against its own eager output:

* ``torch.compile(model, fullgraph=True)`` traces the whole forward into one graph (no graph
  breaks; a model with an RNN, LSTM or GRU needs Dynamo's experimental ``allow_rnn``). The
  backend is ``aot_eager``: Dynamo captures the graph and AOTAutograd traces it
  (functionalisation, decompositions, the backward graph), but no C++ is compiled, which keeps
  the file fast on a small machine. One spec also goes through the default backend (Inductor);
  that test is marked ``slow``.
* ``torch.export.export(model, (x,))`` exports it, and the exported program computes the same
  output, also with the batch dim exported as dynamic.

The exception is specs/fixed_hidden_mlp.net: its ``while sum(abs(x)) > 1`` is control flow on
a tensor value, which neither a full graph nor an export can hold; those tests assert the
failure, and that torch.compile with graph breaks allowed still matches eager.

Deselect the slow tests with ``-m "not slow"``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import netspec
from netspec.dims import Sym

SPECS = Path(__file__).resolve().parent.parent / "specs"
SPEC_FILES = sorted(SPECS.glob("*.net"))

# specs whose forward branches on a tensor value at run time, with the reason
DATA_DEPENDENT = {
    "fixed_hidden_mlp.net": "`while sum(abs(x)) > 1` loops on a tensor value (data-dependent "
                            "control flow)",
}
# torch's own export path calls a deprecated torch.jit helper; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")

BACKEND = "aot_eager"   # see the module docstring; Inductor is tested once, below
RTOL, ATOL = 1e-5, 1e-6

with warnings.catch_warnings():     # `slow` is not registered in pyproject.toml
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    slow = pytest.mark.slow

# the largest models: compiling and exporting them takes several seconds each
SLOW_SPECS = {"alexnet.net", "resnet.net"}


def _param(path: Path):
    marks = [slow] if path.name in SLOW_SPECS else []
    return pytest.param(path, id=path.name, marks=marks)


TRACEABLE = [_param(p) for p in SPEC_FILES if p.name not in DATA_DEPENDENT]
DATA_DEP = [_param(p) for p in SPEC_FILES if p.name in DATA_DEPENDENT]


def build(path: Path, batch: int = 2) -> tuple[torch.nn.Module, torch.Tensor]:
    """The spec's model in eval mode, and an input of its declared shape (symbols -> batch)."""
    model = netspec.build(path).eval()
    declared = model._netspec.ir.in_shape
    shape = tuple(batch if isinstance(d, Sym) else d for d in declared)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    return model, x


def eager(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x.clone())


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch: no cached graphs, no recompilation limits."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# -- torch.compile ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", TRACEABLE)
def test_compile_fullgraph_matches_eager(path: Path):
    model, x = build(path)
    want = eager(model, x)
    compiled = torch.compile(model, fullgraph=True, backend=BACKEND)
    # Dynamo traces RNN, LSTM and GRU modules only with its experimental allow_rnn
    recurrent = any(isinstance(m, torch.nn.RNNBase) for m in model.modules())
    with torch.no_grad(), torch._dynamo.config.patch(allow_rnn=recurrent):
        got = compiled(x.clone())
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("path", [p for p in TRACEABLE if p.id in ("mlp.net", "tied.net",
                                                                     "my_linear.net",
                                                                     "lenet5.net")])
def test_compile_fullgraph_gradients_match_eager(path: Path):
    """The compiled backward gives the eager gradients (tied weights included)."""
    model, x = build(path)
    model(x.clone()).square().sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.compile(model, fullgraph=True, backend=BACKEND)(x.clone()).square().sum().backward()
    got = {n: p.grad for n, p in model.named_parameters()}
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("path", DATA_DEP)
def test_compile_fullgraph_rejects_data_dependent_control_flow(path: Path):
    model, x = build(path)
    with torch.no_grad():
        model.linear.weight.mul_(0.01)    # keep the loop short in eager mode
    compiled = torch.compile(model, fullgraph=True, backend=BACKEND)
    with pytest.raises(torch._dynamo.exc.TorchDynamoException,
                       match="(?i)data-dependent|dynamic control flow"):
        with torch.no_grad():
            compiled(x.clone())


@pytest.mark.parametrize("path", DATA_DEP)
def test_compile_with_graph_breaks_matches_eager(path: Path):
    """Without fullgraph, torch.compile breaks the graph at the loop and still matches eager."""
    model, x = build(path)
    with torch.no_grad():
        model.linear.weight.mul_(0.01)
    want = eager(model, x)
    with torch.no_grad():
        got = torch.compile(model, backend=BACKEND)(x.clone())
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


@slow
def test_compile_default_backend_matches_eager():
    """Inductor, the default backend, on one spec (it compiles C++: tens of seconds here)."""
    model, x = build(SPECS / "lenet5.net")
    want = eager(model, x)
    with torch.no_grad():
        got = torch.compile(model, fullgraph=True)(x.clone())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# -- torch.export -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", TRACEABLE)
def test_export_matches_eager(path: Path):
    model, x = build(path)
    want = eager(model, x)
    program = torch.export.export(model, (x.clone(),))
    with torch.no_grad():
        got = program.module()(x.clone())
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def _batch_is_symbolic(path: Path) -> bool:
    model = netspec.build(path, device="meta")
    declared = model._netspec.ir.in_shape
    return bool(declared) and isinstance(declared[0], Sym)


@pytest.mark.parametrize("path", [p for p in TRACEABLE if _batch_is_symbolic(p.values[0])])
def test_export_with_dynamic_batch_matches_eager(path: Path):
    """The batch dim N stays symbolic in the exported program: other batch sizes run too."""
    model, x = build(path)
    batch = torch.export.Dim("batch", min=2, max=1024)
    program = torch.export.export(model, (x.clone(),), dynamic_shapes=({0: batch},))
    for size in (3, 5):
        _, other = build(path, batch=size)
        want = eager(model, other)
        with torch.no_grad():
            got = program.module()(other.clone())
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("path", DATA_DEP)
def test_export_rejects_data_dependent_control_flow(path: Path):
    """Export traces one path through the program; a loop on a tensor value has none."""
    model, x = build(path)
    assert DATA_DEPENDENT[path.name]
    with pytest.raises((RuntimeError, torch._dynamo.exc.TorchDynamoException),
                       match="(?i)data-dependent|dynamic control flow"):
        torch.export.export(model, (x.clone(),))
