"""The seed models as specs, checked against hand-written PyTorch twins (tests/twins.py).

Each row of CASES is one spec block with its twin; every row gets the same checks: parameter
count, state_dict keys in order, identical outputs after loading the twin's weights, the
statically inferred output shape, and the printed module structure. Tests after the table
cover what only some models have: tied weights, constants, the dict choice, and every spec file
building on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

import netspec
from netspec.dims import Sym

import twins  # tests/twins.py

SPECS = Path(__file__).resolve().parent.parent / "specs"


@dataclass(frozen=True)
class Case:
    spec: str                       # file under specs/
    block: str | None               # None: the file's default entry (its last block)
    args: dict[str, Any]            # block arguments
    input: tuple[int, ...]          # the input the outputs are compared on
    twin: Callable[[], nn.Module]   # the hand-written model
    build_input: bool = False       # the block declares no (concrete) input: build at `input`
    call: dict[str, Any] = field(default_factory=dict)  # extra forward arguments of the twin
    same_print: bool = True         # print() equal up to the top-level class name


def case(spec, block, args, input, twin, **options) -> Any:
    name = spec.removesuffix(".net") + (f":{block}" if block else "") + "".join(
        f",{k}={v}" for k, v in args.items())
    return pytest.param(Case(spec, block, args, tuple(input), twin, **options), id=name)


# One line per model. same_print=False where the twin's containers are plain nn.Sequential
# (the spec's blocks are Sequential subclasses named after the block).
CASES = [
    case("mlp.net", None, {}, (2, 784), twins.MLP),
    case("mysequential.net", None, {}, (2, 20), twins.my_sequential),
    case("fixed_hidden_mlp.net", None, {}, (2, 20), twins.FixedHiddenMLP),
    case("nest_mlp.net", None, {}, (2, 20), twins.NestMLP),
    case("nest_mlp.net", "NestMLP20", {}, (2, 20), twins.NestMLP20),
    case("parallel.net", None, {}, (2, 20), twins.parallel),
    case("copies.net", None, {}, (2, 20), twins.muti_module),
    case("rgnet.net", None, {}, (2, 4), twins.rgnet, same_print=False),
    case("tied.net", None, {}, (2, 20), twins.tied, same_print=False),
    case("tied.net", "TiedTwice", {}, (3, 2), twins.tied_twice, same_print=False),
    case("centered.net", None, {}, (2, 8), twins.centered_net, same_print=False),
    case("centered.net", "CenteredLayer", {}, (4, 5), twins.CenteredLayer, build_input=True),
    case("my_linear.net", None, {}, (2, 64), twins.my_linear_net, same_print=False),
    case("my_linear.net", "MyLinear", {"units": 3}, (2, 5), lambda: twins.MyLinear(5, 3),
         build_input=True),
    case("param_list.net", None, {}, (2, 4), twins.MyListDense),
    case("param_dict.net", None, {}, (2, 4), twins.MyDictDense),
    case("param_dict.net", None, {"choice": "linear2"}, (2, 4), twins.MyDictDense,
         call={"choice": "linear2"}),
    case("param_dict.net", None, {"choice": "linear3"}, (2, 4), twins.MyDictDense,
         call={"choice": "linear3"}),
    case("lenet.net", None, {}, (2, 1, 28, 28), twins.lenet, same_print=False),
    case("lenet5.net", None, {}, (2, 1, 32, 32), twins.LeNet),
    case("alexnet.net", None, {}, (2, 1, 224, 224), twins.AlexNet),
    case("deferred.net", None, {}, (2, 20), twins.deferred, same_print=False),
    case("resnet.net", None, {}, (2, 3, 64, 64), twins.resnet18, same_print=False),
    case("lstm_classifier.net", None, {}, (3, 12, 8), twins.LSTMClassifier),
    case("transformer.net", None, {}, (3, 10, 16), twins.TransformerClassifier),
    case("transformer.net", "EncoderBlock", {}, (2, 7, 16), twins.EncoderBlock,
         build_input=True),
]


# -- helpers ----------------------------------------------------------------------------------

def build(c: Case, *, concrete: bool | None = None) -> nn.Module:
    """The spec's model; at the case's input shape when ``concrete`` (default: when it must)."""
    concrete = c.build_input if concrete is None else concrete
    return netspec.build(SPECS / c.spec, c.block, input=list(c.input) if concrete else None,
                         **c.args)


def make_twin(c: Case) -> nn.Module:
    torch.manual_seed(0)
    # Batch-norm statistics and affine weights start as 0/1; make them count in eval mode.
    return twins.randomize_batchnorm(c.twin())


def sample(c: Case) -> torch.Tensor:
    return torch.randn(c.input, generator=torch.Generator().manual_seed(1))


def _base(atom: str) -> str:
    return re.sub(r"@\d+$", "", atom)


def concrete_shape(shape: tuple, declared: tuple | None, real_input: tuple) -> tuple:
    """Substitute the input's symbols (N, C, ...) by the sizes of the real input."""
    values: dict[str, int] = {}
    for d, size in zip(declared or (), real_input):
        if isinstance(d, Sym) and len(d.terms) == 1:
            (mono, coeff), = d.terms.items()
            if coeff == 1 and len(mono) == 1:
                values[_base(mono[0])] = size
    out = []
    for d in shape:
        if isinstance(d, Sym):
            d = d.substitute({a: values[_base(a)] for a in d.atoms if _base(a) in values})
        out.append(d)
    return tuple(out)


def structure(model: nn.Module) -> list[tuple[str, str]]:
    """(path, repr) of every leaf module and (path, child names) of every container."""
    rows = []
    for name, m in model.named_modules(remove_duplicate=False):
        children = [n for n, _ in m.named_children()]
        rows.append((name, repr(m) if not children else "children: " + ", ".join(children)))
    return rows


def without_top_name(model: nn.Module) -> str:
    text = str(model)
    return text[len(type(model).__name__):]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- the per-model checks ---------------------------------------------------------------------

@pytest.mark.parametrize("c", CASES)
def test_parameter_count(c: Case):
    ours, twin = build(c), make_twin(c)
    assert n_params(ours) == n_params(twin)
    assert len(list(ours.parameters())) == len(list(twin.parameters()))


@pytest.mark.parametrize("c", CASES)
def test_state_dict_keys(c: Case):
    ours, twin = build(c).state_dict(), make_twin(c).state_dict()
    assert list(ours) == list(twin)
    assert [t.shape for t in ours.values()] == [t.shape for t in twin.values()]


@pytest.mark.parametrize("c", CASES)
def test_same_outputs(c: Case):
    ours, twin = build(c), make_twin(c)
    result = ours.load_state_dict(twin.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    ours.eval()
    twin.eval()
    x = sample(c)
    with torch.no_grad():
        got = ours(x.clone())
        want = twin(x.clone(), **c.call)
    assert got.shape == want.shape
    # the generated code runs the same torch ops in the same order: bit-for-bit equal
    assert torch.equal(got, want), f"max difference {(got - want).abs().max().item()}"


@pytest.mark.parametrize("c", CASES)
def test_static_output_shape(c: Case):
    """The inferred output shape, symbolic (N substituted) and at a concrete input."""
    x = sample(c)
    for concrete in sorted({c.build_input, True}):
        model = build(c, concrete=concrete).eval()
        analysis = model._netspec
        with torch.no_grad():
            real = tuple(model(x).shape)
        static = concrete_shape(analysis.output_shape, analysis.ir.in_shape, c.input)
        assert static == real, f"concrete={concrete}: {analysis.output_shape} vs {real}"
        if concrete and isinstance(analysis.ir.in_shape[0], Sym):
            # the batch stays free: built at one input, the model takes any batch size
            with torch.no_grad():
                twice = tuple(model(torch.cat([x, x])).shape)
            assert twice == ((2 * real[0],) + real[1:] if real else ())


@pytest.mark.parametrize("c", CASES)
def test_printed_structure(c: Case):
    ours, twin = build(c), make_twin(c)
    assert structure(ours) == structure(twin)
    if c.same_print:
        assert without_top_name(ours) == without_top_name(twin)


# -- tied weights -----------------------------------------------------------------------------

@pytest.mark.parametrize("block, uses, input", [
    ("Tied", (2, 4), (5, 20)),
    ("TiedTwice", (0, 2), (5, 2)),
])
def test_tied_gradients_add_up(block, uses, input):
    ours = netspec.build(SPECS / "tied.net", block)
    a, b = uses
    assert ours[a] is ours[b]
    assert ours[a].weight is ours[b].weight
    # the shared Linear's weight and bias are listed once
    linears = {id(m) for m in ours if isinstance(m, nn.Linear)}
    assert len(linears) == sum(isinstance(m, nn.Linear) for m in ours) - 1
    assert len(list(ours.parameters())) == 2 * len(linears)

    # a twin with two separate Linears holding the same weights
    untied = nn.Sequential(*[
        (nn.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear) else m)
        for m in ours])
    untied.load_state_dict(ours.state_dict())
    assert untied[a] is not untied[b]

    x = torch.randn(input, generator=torch.Generator().manual_seed(2))
    ours(x).square().sum().backward()
    untied(x).square().sum().backward()
    for name in ("weight", "bias"):
        shared = getattr(ours[a], name).grad
        summed = getattr(untied[a], name).grad + getattr(untied[b], name).grad
        torch.testing.assert_close(shared, summed, rtol=1e-5, atol=1e-7)
        # the other layers get the same gradients as in the untied net
        for i, m in enumerate(ours):
            if isinstance(m, nn.Linear) and i not in uses:
                torch.testing.assert_close(getattr(m, name).grad,
                                           getattr(untied[i], name).grad, rtol=1e-5, atol=1e-7)


def test_tied_matches_seed_twin_gradients():
    """The d2l twin's shared Linear gets the same summed gradient as ours."""
    ours, twin = netspec.build(SPECS / "tied.net"), twins.tied()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(4, 20)
    ours(x).sum().backward()
    twin(x).sum().backward()
    assert twin[2] is twin[4] and ours[2] is ours[4]
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), twin.named_parameters()):
        assert n1 == n2
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-6, atol=1e-7)


# -- constants --------------------------------------------------------------------------------

def test_constants_are_saved_and_not_trained():
    model = netspec.build(SPECS / "fixed_hidden_mlp.net")
    state = model.state_dict()
    assert "rand_weight" in state and state["rand_weight"].shape == (20, 20)
    assert "rand_weight" in dict(model.named_buffers())
    assert "rand_weight" not in dict(model.named_parameters())
    assert [n for n, _ in model.named_parameters()] == ["linear.weight", "linear.bias"]
    const = model.get_buffer("rand_weight")
    assert not const.requires_grad
    assert ((const >= 0) & (const < 1)).all()  # rand(20, 20)

    before = const.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(3, 20)
    with torch.no_grad():
        model.linear.weight.mul_(0.01)  # keep the output small so the loop ends early
    weight_before = model.linear.weight.detach().clone()
    loss = model(x)
    assert loss.shape == ()
    loss.backward()
    assert const.grad is None
    optimizer.step()
    assert torch.equal(model.get_buffer("rand_weight"), before)
    assert not torch.equal(model.linear.weight, weight_before)

    # and a fresh build takes the saved constant back
    other = netspec.build(SPECS / "fixed_hidden_mlp.net")
    assert not torch.equal(other.get_buffer("rand_weight"), before)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.get_buffer("rand_weight"), before)


# -- MyDictDense's choice ---------------------------------------------------------------------

@pytest.mark.parametrize("choice, width", [("linear1", 4), ("linear2", 1), ("linear3", 2)])
def test_dict_choice(choice, width):
    model = netspec.build(SPECS / "param_dict.net", choice=choice)
    assert concrete_shape(model._netspec.output_shape, model._netspec.ir.in_shape, (7, 4)) == (
        7, width)
    assert model(torch.randn(7, 4)).shape == (7, width)
    # all three parameters exist whatever the choice, as in the seed
    assert [n for n, _ in model.named_parameters()] == [
        "params.linear1", "params.linear2", "params.linear3"]


# -- ResNet-18 --------------------------------------------------------------------------------

def test_resnet18_has_torchvision_size():
    assert n_params(netspec.build(SPECS / "resnet.net")) == 11_689_512  # torchvision resnet18


# -- the LSTM classifier ----------------------------------------------------------------------

def test_lstm_classifier_seeded_equals_its_twin_built_under_the_same_seed():
    """netspec initialises the LSTM by its own reset_parameters, then the Linear, drawing from
    the generator in the order torch's constructors do."""
    ours = netspec.build(SPECS / "lstm_classifier.net", seed=5)
    torch.manual_seed(5)
    twin = twins.LSTMClassifier()
    for (name, p), (twin_name, q) in zip(ours.state_dict().items(), twin.state_dict().items()):
        assert name == twin_name and torch.equal(p, q), name
    ours.train()
    twin.train()
    x = torch.randn(3, 12, 8)
    torch.manual_seed(6)
    got = ours(x)                      # dropout between the LSTM's layers, same random draws
    torch.manual_seed(6)
    assert torch.equal(got, twin(x))


def test_lstm_classifier_standalone_source_reads_like_its_twin():
    """nn.LSTM takes *args in torch; the source still gives the sizes by position, and the
    forward picks the output out of the LSTM's tuple and its last step by a subscript."""
    from netspec.emit_python import python_source

    source = python_source(netspec.analyze(SPECS / "lstm_classifier.net"))
    assert "self.lstm = nn.LSTM(8, 32, num_layers=2, batch_first=True, dropout=0.1)\n" in source
    assert "x = mods['lstm'](x)[0]  # [N, 12, 32]\n" in source
    assert "x = mods['head'](x[:, -1])  # [N, 5]\n" in source       # the last step, as written


# -- the seed's AlexNet typos are caught ------------------------------------------------------

def test_alexnet_seed_typos_are_shape_errors():
    text = (SPECS / "alexnet.net").read_text()
    conv = "Conv2d(384, 3, 1, 1, in_channels=384)"
    assert text.count(conv) == 1
    diags = netspec.check(text.replace(conv, "Conv2d(383, 3, 1, 1, in_channels=384)"))
    assert diags and "383" in str(diags[0])
    linear = "Linear(4096)\n"
    assert text.count(linear) == 1
    diags = netspec.check(text.replace(linear, "Linear(4086)\n"))
    assert diags and "4086" in str(diags[0])


# -- every spec file --------------------------------------------------------------------------

SPEC_FILES = sorted(SPECS.glob("*.net"))


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.name for p in SPEC_FILES])
def test_spec_builds_and_runs(path: Path):
    assert path.read_text().startswith("#"), "a spec starts with a comment saying what it is"
    assert netspec.check(path) == []
    model = netspec.build(path).eval()
    declared = model._netspec.ir.in_shape
    assert declared is not None
    shape = tuple(2 if isinstance(d, Sym) else d for d in declared)
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert tuple(out.shape) == concrete_shape(model._netspec.output_shape, declared, shape)
