"""Positional layer arguments in torch's order: a call that includes the input size, as torch
writes it (``Linear(784, 256)``), is read that way and the size is checked; one that reads
validly both ways on its input (``LSTM(64, 2)`` on 64 features) is an error, never a guess."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netspec
from netspec.errors import SpecError


def spec(body: str, shape: str) -> str:
    return f"block Net {{\n    input x: {shape}\n    {body}\n}}\n"


def only_layer(model: nn.Module) -> nn.Module:
    (layer,) = model.children()
    return layer


@pytest.mark.parametrize("body, shape, twin", [
    # torch's order: the size is stated, checked, and the model is torch's
    ("Linear(784, 256)", "[N, 784]", lambda: nn.Linear(784, 256)),
    ("Linear(784, 256, false)", "[N, 784]", lambda: nn.Linear(784, 256, False)),
    ("Conv2d(3, 16, kernel_size=5)", "[N, 3, 32, 32]", lambda: nn.Conv2d(3, 16, 5)),
    ("LSTM(64, 32, num_layers=2)", "[T, N, 64]", lambda: nn.LSTM(64, 32, num_layers=2)),
    # netspec's order: the size is left out, and the call does not fit torch's reading
    ("Linear(256)", "[N, 784]", lambda: nn.Linear(784, 256)),
    ("LSTM(128, 2)", "[T, N, 64]", lambda: nn.LSTM(64, 128, 2)),      # input_size 128 != 64
    ("GroupNorm(4)", "[N, 64, 8, 8]", lambda: nn.GroupNorm(4, 64)),
    ("Conv1d(32, 3)", "[N, 64, 20]", lambda: nn.Conv1d(64, 32, 3)),
])
def test_each_order_builds_torch_s_layer(body: str, shape: str, twin) -> None:
    torch.manual_seed(0)
    model = netspec.build(spec(body, shape))
    ours, theirs = only_layer(model), twin()
    assert repr(ours) == repr(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn([2 if d == "N" else 5 if d == "T" else int(d)
                     for d in shape.strip("[]").split(", ")])
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    torch.testing.assert_close(a[0] if isinstance(a, tuple) else a,
                               b[0] if isinstance(b, tuple) else b, rtol=0, atol=0)


@pytest.mark.parametrize("body, shape, torch_reading, netspec_reading", [
    ("LayerNorm(64)", "[N, 64]", "normalized_shape=64", "eps=64"),
    ("BatchNorm1d(64)", "[N, 64]", "num_features=64", "eps=64"),
    ("LSTM(64, 2)", "[T, N, 64]", "input_size=64, hidden_size=2", "hidden_size=64, num_layers=2"),
    ("Conv2d(1, 6, 5)", "[N, 1, 28, 28]", "in_channels=1, out_channels=6, kernel_size=5",
     "out_channels=1, kernel_size=6, stride=5"),
    ("TransformerEncoderLayer(32, 4)", "[N, T, 32]", "d_model=32, nhead=4",
     "nhead=32, dim_feedforward=4"),
    ("GroupNorm(4, 64)", "[N, 64, 8, 8]", "num_groups=4, num_channels=64", "num_groups=4, eps=64"),
])
def test_a_call_that_reads_both_ways_is_an_error(body: str, shape: str, torch_reading: str,
                                                 netspec_reading: str) -> None:
    """Before, each of these built silently in netspec's reading (LayerNorm with eps=64)."""
    with pytest.raises(SpecError) as info:
        netspec.analyze(spec(body, shape))
    (d,) = info.value.diagnostics
    name = body.split("(")[0]
    assert (d.kind, d.span.line, d.span.column) == ("argument error", 3, 5)
    assert d.message == (f"the positional arguments of {name} read two ways here: in torch's "
                         f"order, {torch_reading}; without the input size, as netspec reads "
                         f"them, {netspec_reading}")
    assert d.hint.startswith("name them, or leave out ")


def test_the_fix_the_hint_gives_builds_what_torch_would() -> None:
    model = netspec.build(spec("LayerNorm()", "[N, 64]"))
    assert repr(only_layer(model)) == repr(nn.LayerNorm(64))
    model = netspec.build(spec("LSTM(input_size=64, hidden_size=2)", "[T, N, 64]"))
    assert repr(only_layer(model)) == repr(nn.LSTM(64, 2))


def test_a_size_in_torch_s_order_that_does_not_match_is_located() -> None:
    with pytest.raises(SpecError) as info:
        netspec.analyze(spec("Linear(512, 256)", "[N, 784]"))
    (d,) = info.value.diagnostics
    assert d.message == "in_features=512, but the input here has 784 features"
    assert (d.span.line, d.span.column, d.span.end_column) == (3, 12, 15)


def test_a_call_that_binds_neither_way_reports_netspec_s_reading() -> None:
    with pytest.raises(SpecError) as info:
        netspec.analyze(spec("Linear(10, true, 3)", "[N, 20]"))
    (d,) = info.value.diagnostics
    assert d.message == "Linear takes 2 positional arguments, but 3 were given"
