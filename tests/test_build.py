"""Building layers: meta-first construction gives torch's own classes, on meta, and the
materialised weights equal a layer constructed by torch under the same seed."""

from __future__ import annotations

import pytest
import torch

import netspec
from netspec.args import spec_literal
from test_layers import SHAPE_CASES


def layer_spec(name: str, stated: dict, shape: tuple) -> str:
    args = ", ".join(f"{k}={spec_literal(v)}" for k, v in stated.items())
    return f"block B {{\n    input x: {list(shape)}\n    only: {name}({args})\n}}\n"


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
