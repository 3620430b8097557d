"""Building layers: meta-first construction gives torch's own classes, on meta, and the
materialised weights equal a layer constructed by torch under the same seed."""

from __future__ import annotations

import copy

import pytest
import torch

import netspec
from netspec.args import spec_literal
from test_layers import SHAPE_CASES


def layer_spec(name: str, stated: dict, shape: tuple | list) -> str:
    """A block whose one step is the layer; a layer of several tensors (a list of shapes) is
    a ``let`` called on the input and on constants of the other shapes."""
    args = ", ".join(f"{k}={spec_literal(v)}" for k, v in stated.items())
    if not isinstance(shape, list):
        return f"block B {{\n    input x: {list(shape)}\n    only: {name}({args})\n}}\n"
    first, *others = shape
    consts = "".join(f"    const in{i} = zeros({', '.join(map(str, s))})\n"
                     for i, s in enumerate(others, 1))
    operands = ", ".join(["x"] + [f"in{i}" for i in range(1, len(shape))])
    return (f"block B {{\n    input x: {list(first)}\n{consts}    let only = {name}({args})\n"
            f"    only({operands})\n}}\n")


CASES = [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(SHAPE_CASES)]


@pytest.mark.parametrize("name,stated,shape", CASES)
def test_meta_build_is_the_torch_class_with_nothing_allocated(name, stated, shape):
    model = netspec.build(layer_spec(name, stated, shape), device="meta")
    layer = model.only
    assert type(layer) is getattr(torch.nn, name)
    for t in list(layer.parameters()) + list(layer.buffers()):
        assert t.is_meta


@pytest.mark.parametrize("name,stated,shape", CASES)
def test_materialised_layer_equals_torch_under_the_same_seed(name, stated, shape):
    model = netspec.build(layer_spec(name, stated, shape), seed=1234)
    layer = model.only
    resolved = layer._netspec_ir.resolved_args
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        twin = getattr(torch.nn, name)(**resolved)
    ours, theirs = layer.state_dict(), twin.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


RECURRENT = [c for c in CASES if c.values[0] in ("RNN", "LSTM", "GRU")]


@pytest.mark.parametrize("name,stated,shape", RECURRENT)
def test_materialised_recurrent_layer_runs_as_torch_under_the_same_seed(name, stated, shape):
    """After materialising, the flat weights an RNN's kernel reads are its parameters, and a
    step passes on element 0 of torch's result (``output``)."""
    model = netspec.build(layer_spec(name, stated, shape), seed=7)
    layer = model.only
    assert not isinstance(model, torch.nn.Sequential)   # it would pass the tuple on
    assert [w is p for w, p in zip(layer._flat_weights, layer.parameters())] == \
        [True] * len(layer._flat_weights_names)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        twin = getattr(torch.nn, name)(**layer._netspec_ir.resolved_args)
    model.eval()
    twin.eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), twin(x)[0])
    assert tuple(model(x).shape) == model._netspec.output_shape


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_recurrent_layer_built_in_another_dtype(dtype):
    model = netspec.build(layer_spec("GRU", dict(hidden_size=5, batch_first=True), (2, 3, 4)),
                          seed=0, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert model(torch.randn(2, 3, 4, dtype=dtype)).dtype == dtype


def test_recurrent_steps_in_nested_chains_repeats_and_lets_pass_on_the_output():
    text = ("block R {\n    input x: [N, 5, 4]\n"
            "    enc: { LSTM(8, batch_first=true); Tanh() }\n"
            "    repeat 2 as \"gru{i}\" { GRU(8, batch_first=true) }\n"
            "    let shared = RNN(8, batch_first=true)\n    shared\n    shared\n}\n")
    model = netspec.build(text, seed=0)
    assert not isinstance(model.enc, torch.nn.Sequential)   # it would pass the tuple on
    x = torch.randn(2, 5, 4)
    h = torch.tanh(model.enc.get_submodule("0")(x)[0])
    for layer in (model.gru0, model.gru1, model.shared, model.shared):
        h = layer(h)[0]
    assert torch.equal(model(x), h)


def test_select_and_narrow_take_steps_of_a_sequence():
    """The recipe of docs/language.md for the last step of a sequence, and the functions that
    say the same: select, and narrow for a range of steps."""
    last = netspec.build("block Last { input x: [N, 6, 4]; lstm: LSTM(16, batch_first=true)\n"
                         "x[:, -1] }", seed=0)
    both = netspec.build("block Both { input x: [N, 6, 4]; lstm: LSTM(16, batch_first=true)\n"
                         "return select(x, 1, -1) + sum(narrow(x, 1, -3, 3), dim=1) }", seed=0)
    x = torch.randn(3, 6, 4)
    output, (h_n, _) = last.lstm(x)
    assert torch.equal(last(x), output[:, -1])
    assert torch.equal(last(x), h_n[-1])
    assert torch.equal(both(x), output[:, -1] + output[:, -3:].sum(dim=1))


def test_a_built_model_deep_copies_into_an_independent_twin():
    model = netspec.build("specs/resnet.net", seed=0).eval()
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))
        next(twin.parameters()).zero_()
        assert not torch.equal(twin(x), model(x))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(model.parameters(),
                                                              twin.parameters()))


NESTED_BODIES = """\
block A {
    input x: [N, C]
    y = x -> { h = Linear(8); return relu(h) + h }
    res_block: { h = Linear(8); return sigmoid(h) * h }
    chain: { Linear(8); ReLU() }
    maybe: { if C != 8 { Linear(8) } }
}"""


def test_a_nested_body_with_a_forward_of_its_own_is_named_by_its_label() -> None:
    """The class printed by ``print(model)``, the summary's and the standalone source's agree;
    a body that is a chain (once a shape-dependent ``if`` is decided) stays an nn.Sequential."""
    from netspec.emit_python import python_source
    from netspec.summary import summarize

    model = netspec.build(NESTED_BODIES, input=[2, 8])
    names = {k: type(m).__name__ for k, m in model.named_children()}
    assert names == {"0": "Block", "res_block": "ResBlock", "chain": "Sequential",
                     "maybe": "Sequential"}
    assert type(model.chain) is torch.nn.Sequential and type(model.maybe) is torch.nn.Sequential
    analysis = netspec.analyze(NESTED_BODIES, input=[2, 8])
    rows = {r["path"]: r["layer"] for r in summarize(analysis)["rows"]}
    assert {k: rows[k] for k in names} == names
    source = python_source(analysis)
    assert "class Block(nn.Module):" in source and "class ResBlock(nn.Module):" in source
    x = torch.rand(2, 8)
    h = getattr(getattr(model, "0"), "0")(x)
    assert torch.equal(getattr(model, "0")(x), torch.relu(h) + h)


def _missing_device() -> tuple[str, str]:
    """A device this machine lacks, and what netspec should say of it."""
    if not torch.cuda.is_available():
        return "cuda", "device='cuda': torch has no cuda device on this machine"
    n = torch.cuda.device_count()
    return f"cuda:{n}", f"device='cuda:{n}': this machine has {n} cuda device(s)"


@pytest.mark.parametrize("call", ["build", "materialize", "load"])
def test_a_device_this_machine_lacks_is_an_argument_error(call, tmp_path) -> None:
    """Not torch's AssertionError from deep inside the build: a NetspecError up front."""
    device, message = _missing_device()
    spec = "block Net {\n    input x: [N, 4]\n    Linear(2)\n}\n"
    with pytest.raises(netspec.SpecError) as info:
        if call == "build":
            netspec.build(spec, device=device)
        elif call == "materialize":
            netspec.materialize(netspec.build(spec, device="meta"), device)
        else:
            path = tmp_path / "net.safetensors"
            netspec.save(netspec.build(spec), path)
            netspec.load(path, device=device)
    assert str(info.value) == f"argument error: {message}"
