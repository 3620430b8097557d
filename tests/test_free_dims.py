"""A concrete input fixes only the dims a model's construction needs.

``netspec.build(spec, input=[2, 4, 6])`` checks the spec at that input, but a dim the spec
declares as a symbol (``N``) stays free in the built model where no layer or tensor needs its
value: the model takes any batch size, as a hand-written one does. A dim a size is inferred
from (``D`` of ``[N, D]`` feeding a ``Linear``) is bound.
"""

from __future__ import annotations

import torch

import netspec
from netspec.dims import Sym

RESHAPE = """
block Net {
    input x: [N, 4, 6]
    reshape(x, N, 24)
    Linear(3)
}
"""

INFERRED = """
block Net {
    input x: [N, D]
    Linear(3)
    reshape(x, N, 3, 1)
}
"""


def test_a_declared_batch_stays_free() -> None:
    model = netspec.build(RESHAPE, input=[2, 4, 6], seed=0)
    assert "(_N, 24)" in type(model).code           # read from the input, not written as 2
    twin = netspec.build(RESHAPE, seed=0)             # no input: N symbolic throughout
    assert model.state_dict().keys() == twin.state_dict().keys()
    x = torch.randn(5, 4, 6)
    assert torch.equal(model(x), twin(x))
    assert model._netspec.input_shape == (2, 4, 6)   # what was asked for is kept


def test_a_dim_that_sizes_a_layer_is_bound_and_the_rest_stay_free() -> None:
    model = netspec.build(INFERRED, input=[2, 7])
    in_shape = model._netspec.ir.in_shape
    assert isinstance(in_shape[0], Sym) and in_shape[1] == 7
    assert model._modules["0"].in_features == 7
    assert model(torch.randn(9, 7)).shape == (9, 3, 1)


def test_check_and_summary_still_show_the_concrete_input() -> None:
    analysis = netspec.analyze(RESHAPE, input=[2, 4, 6])
    assert analysis.output_shape == (2, 3)


def test_a_checkpoint_built_at_an_input_loads_with_the_batch_free(tmp_path) -> None:
    model = netspec.build(RESHAPE, input=[2, 4, 6], seed=1)
    path = tmp_path / "m.safetensors"
    netspec.save(model, path)
    loaded = netspec.load(path)
    x = torch.randn(3, 4, 6)
    assert torch.equal(loaded(x), model(x))


def test_a_spec_whose_sizes_need_every_dim_is_built_as_before() -> None:
    spec = "block Net {\n    input x: [N, C]\n    reshape(x, N * C)\n    Linear(2)\n}\n"
    model = netspec.build(spec, input=[2, 3])       # in_features = N * C: N must be bound
    assert model._netspec.ir.in_shape == (2, 3)
    assert model(torch.randn(2, 3)).shape == (2,)
