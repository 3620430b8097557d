"""A user's own nn.Module classes in specs: import python, entry points, trust."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import netspec
from netspec import user_layers

DATA = Path(__file__).parent / "data" / "user_layers"


def test_imported_layers_build_and_compute() -> None:
    model = netspec.build(DATA / "net.net", seed=0)
    assert type(model.dense).__name__ == "MyDense"
    assert model.dense.weight.shape == (6, 4)          # in_features inferred, as stated
    x = torch.rand(3, 6)
    expected = model[3](torch.relu(x @ model.dense.weight).mul(3.0).reshape(3, 2, 2).sum(-1))
    assert torch.allclose(model(x), expected)


def test_shapes_come_from_the_stated_rule_and_the_meta_probe() -> None:
    analysis = netspec.analyze(DATA / "net.net")
    dims = [str(d) for d in analysis.ir.children["dense"].out_shape]
    assert dims == ["N", "4"]
    assert analysis.ir.children["2"].out_shape[1:] == (2,)      # Pairs: 4 -> 2
    assert str(analysis.ir.children["2"].out_shape[0]) == "N"  # the batch stays symbolic


def test_did_you_mean_covers_user_layers(tmp_path: Path) -> None:
    spec = (DATA / "net.net").read_text().replace("MyDense(4)", "MyDens(4)")
    (tmp_path / "net.net").write_text(spec)
    (tmp_path / "mylayers.py").write_text((DATA / "mylayers.py").read_text())
    with pytest.raises(netspec.SpecError, match="did you mean 'MyDense'"):
        netspec.build(tmp_path / "net.net")


def test_missing_python_module_is_located(tmp_path: Path) -> None:
    (tmp_path / "bad.net").write_text('import python "no_such_module_here"\n'
                                      "block A { input x: [N, 2]; Linear(2) }\n")
    with pytest.raises(netspec.SpecError) as info:
        netspec.build(tmp_path / "bad.net")
    assert "bad.net:1:1: import error: cannot import Python module 'no_such_module_here'" in \
        str(info.value)


def test_checkpoint_spec_imports_python_only_when_trusted(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = netspec.build(DATA / "net.net", seed=1)
    path = tmp_path / "m.safetensors"
    netspec.save(model, path)
    monkeypatch.chdir(DATA)
    with pytest.raises(netspec.SpecError, match="run no Python unless trusted"):
        netspec.load(path)
    loaded = netspec.load(path, trust=True)
    x = torch.rand(2, 6)
    assert torch.equal(loaded(x), model(x))


def test_entry_point_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    class Point:
        name, value = "Doubler", "tests:Doubler"

        def load(self):
            class Doubler(torch.nn.Module):
                def forward(self, x):
                    return torch.cat([x, x], dim=-1)
            return Doubler

    monkeypatch.setattr(user_layers, "entry_points", lambda: {"Doubler": Point()})
    model = netspec.build("block A { input x: [N, 3]; Doubler(); Linear(2) }")
    assert model[1].in_features == 6
    with pytest.raises(netspec.SpecError, match="did you mean 'Doubler'|unknown layer"):
        netspec.build("block A { input x: [N, 3]; Dubler() }")


def test_user_layer_weights_come_from_its_constructor() -> None:
    """A layer without reset_parameters is initialised by its own __init__, once, with the seed."""
    a = netspec.build(DATA / "net.net", seed=3)
    b = netspec.build(DATA / "net.net", seed=3)
    weight = a.dense.weight
    assert torch.isfinite(weight).all() and weight.std() > 0.5      # randn, as __init__ says
    assert torch.equal(weight, b.dense.weight)


KEYWORD_ONLY = '''\
import torch
from torch import nn


class Gate(nn.Module):
    """A layer whose options come after a ``*``: torch refuses them by position."""

    def __init__(self, in_features, out_features, *, bias=True, scale=1.0):
        super().__init__()
        self.proj = nn.Linear(in_features, out_features, bias=bias)
        self.scale = scale

    def forward(self, x):
        return torch.sigmoid(self.proj(x)) * self.scale
'''


@pytest.mark.parametrize("call, error", [
    ("Gate(8, scale=0.5)", None),                   # netspec's order, the size inferred
    ("Gate(4, 8, scale=0.5)", None),                # torch's order: in_features stated
    # torch's order, bias not bound: in_features=8 is then checked against the input
    ("Gate(8, false)", "in_features=8, but the input here has 4 features"),
    ("Gate(4, 8, false)", "Gate takes 1 positional argument, but 3 were given"),
])
def test_keyword_only_arguments_are_never_bound_by_position(tmp_path: Path, call: str,
                                                            error: str | None) -> None:
    (tmp_path / "gates.py").write_text(KEYWORD_ONLY)
    (tmp_path / "net.net").write_text(f'import python "gates"\n'
                                      f'block Net {{\n    input x: [N, 4]\n    {call}\n}}\n')
    if error is not None:
        with pytest.raises(netspec.SpecError, match=error) as info:
            netspec.build(tmp_path / "net.net")
        if "positional" in error:
            assert "bias, scale are keyword-only: write bias=..." in str(info.value)
        return
    model = netspec.build(tmp_path / "net.net", seed=0)
    gate = model[0]
    assert (gate.proj.in_features, gate.proj.out_features, gate.scale) == (4, 8, 0.5)
    x = torch.rand(3, 4)
    assert torch.equal(model(x), torch.sigmoid(gate.proj(x)) * 0.5)


TWO_TENSORS = '''\
import torch
from torch import nn


class Gate(nn.Module):
    """Gates one tensor by another; states its size and its shape rule, for two tensors."""

    netspec_in_sizes = {"features": -1}

    @staticmethod
    def netspec_shape(args, x, y):
        return x

    def __init__(self, features):
        super().__init__()
        self.proj = nn.Linear(features, features)

    def forward(self, x, y):
        return torch.sigmoid(self.proj(y)) * x
'''


def test_a_stated_shape_rule_gets_a_shape_for_each_tensor(tmp_path: Path) -> None:
    (tmp_path / "pair_gates.py").write_text(TWO_TENSORS)      # not "gates": imported above
    (tmp_path / "net.net").write_text('import python "pair_gates"\nblock Net {\n'
                                      '    input x: [N, 8]\n'
                                      '    let gate = Gate()\n    h = x -> Linear(8)\n'
                                      '    gate(x, h)\n}\n')
    model = netspec.build(tmp_path / "net.net", seed=0)
    assert model.gate.proj.in_features == 8
    x = torch.rand(3, 8)
    h = getattr(model, "0")(x)
    assert torch.equal(model(x), torch.sigmoid(model.gate.proj(h)) * x)
    assert [str(d) for d in netspec.analyze(tmp_path / "net.net").output_shape] == ["N", "8"]


BAD_RULES = '''\
import netspec
from torch import nn


class Refuses(nn.Module):
    @staticmethod
    def netspec_shape(args, x):
        if len(x) != 3:
            raise netspec.ShapeRuleError(f"Refuses takes [N, T, C], not a {len(x)}-D input",
                                         hint="add a time dimension")
        return x

    def forward(self, x):
        return x


class Crashes(nn.Module):
    @staticmethod
    def netspec_shape(args, x):
        return x[5]

    def forward(self, x):
        return x


class ReturnsNothing(nn.Module):
    @staticmethod
    def netspec_shape(args, x):
        pass

    def forward(self, x):
        return x
'''


@pytest.mark.parametrize("layer, message, hint", [
    ("Refuses", "Refuses takes [N, T, C], not a 2-D input", "add a time dimension"),
    ("Crashes", "Crashes.netspec_shape raised IndexError: tuple index out of range",
     "raise netspec.ShapeRuleError(message) for a shape the layer refuses"),
    ("ReturnsNothing", "ReturnsNothing.netspec_shape returned None, not a shape",
     "return a tuple of sizes"),
])
def test_a_stated_shape_rule_that_fails_is_a_located_error(tmp_path: Path, layer: str,
                                                          message: str, hint: str) -> None:
    (tmp_path / "bad_rules.py").write_text(BAD_RULES)
    (tmp_path / "net.net").write_text(f'import python "bad_rules"\nblock Net {{\n'
                                      f'    input x: [N, 8]\n    {layer}()\n}}\n')
    with pytest.raises(netspec.SpecError) as info:
        netspec.analyze(tmp_path / "net.net")
    text = str(info.value)
    assert message in text and hint in text
    assert "net.net:4:5" in text and "Traceback" not in text
