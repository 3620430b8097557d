"""Init policies and seeded builds.

Which parameters each kind of rule selects (layer type + parameter name, layer type, a glob
over the path relative to the declaring block, both, an exact path), what every initialiser
puts into a tensor, the order in which rules apply, d2l's initialisation examples, located
errors for rules that match nothing, and bit-identical weights under a seed, also when a model
is built on the meta device and materialised later.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import netspec

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SPEC_FILES = sorted(SPECS.glob("*.net"))


def build(src: str, **kw) -> nn.Module:
    return netspec.build(textwrap.dedent(src), **kw)


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters()}


def is_constant(t: torch.Tensor, value: float) -> bool:
    return bool((t == value).all())


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def with_init(body: str, rules: str) -> str:
    """The spec ``body`` (ending in its last block's '}') with ``rules`` in that block."""
    body = textwrap.dedent(body).rstrip()
    assert body.endswith("}")
    rules = textwrap.indent(textwrap.dedent(rules).strip(), "        ")
    return body[:-1] + "    init {\n" + rules + "\n    }\n}\n"


# ---- which parameters a rule selects --------------------------------------------------------

MIXED = """
block Head {
    Linear(32); ReLU(); Linear(10)
}

block Net {
    input x: [N, 3, 8, 8]
    conv: Conv2d(4, 3, padding=1)
    bn: BatchNorm2d()
    flatten(x, 1)
    body: Linear(64, in_features=256)
    head: Head
}
"""

ALL_MIXED = {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "body.weight", "body.bias",
             "head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}


@pytest.mark.parametrize("rule, selected", [
    ("Linear.weight", {"body.weight", "head.0.weight", "head.2.weight"}),
    ("Linear.bias", {"body.bias", "head.0.bias", "head.2.bias"}),
    ("Linear", {"body.weight", "body.bias", "head.0.weight", "head.0.bias", "head.2.weight",
                "head.2.bias"}),
    ("Conv2d", {"conv.weight", "conv.bias"}),
    ("BatchNorm2d.weight", {"bn.weight"}),
    ('"*.bias"', {"conv.bias", "bn.bias", "body.bias", "head.0.bias", "head.2.bias"}),
    ('"head.*"', {"head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}),
    ('"head.[02].weight"', {"head.0.weight", "head.2.weight"}),
    ('"b*.weight"', {"bn.weight", "body.weight"}),
    ('Linear.weight in "head.*"', {"head.0.weight", "head.2.weight"}),
    ('Linear in "head.2.*"', {"head.2.weight", "head.2.bias"}),
    ('"head.2.bias"', {"head.2.bias"}),
    ('"conv.weight"', {"conv.weight"}),
    ("body.weight", {"body.weight"}),          # an exact path, unquoted
    ("head.0.bias", {"head.0.bias"}),
], ids=lambda v: v if isinstance(v, str) else None)
def test_rule_selects_exactly(rule: str, selected: set[str]):
    model = build(with_init(MIXED, f"{rule}: constant(val=7)"), seed=0)
    got = params(model)
    assert set(got) == ALL_MIXED
    hit = {name for name, t in got.items() if is_constant(t, 7.0)}
    assert hit == selected
    # everything else still has its layer's own initialisation
    for name in ALL_MIXED - selected:
        assert not (got[name] == 7.0).any(), name


def test_rule_by_block_type_selects_its_own_parameters():
    src = """
    block MyLinear(units: int) {
        input x: [N, in_units]
        param weight = randn(in_units, units)
        param bias = randn(units)
        relu(x @ weight + bias)
    }
    block Net {
        input x: [N, 6]
        MyLinear(5)
        Linear(3)
        MyLinear(2)
        init { MyLinear.weight: constant(val=7) }
    }
    """
    got = params(build(src, seed=0))
    assert {n for n, t in got.items() if is_constant(t, 7.0)} == {"0.weight", "2.weight"}
    # the biases keep their spec expression randn(units)
    assert not is_constant(got["0.bias"], 7.0) and got["0.bias"].std() > 0


def test_rule_selects_a_parameter_list_item():
    src = (SPECS / "param_list.net").read_text()
    src = src.rstrip()[:-1] + '    init { "params.1": zeros(); "params.3": ones() }\n}\n'
    model = netspec.build(src, seed=0)
    p = model.params
    assert is_constant(p[1], 0.0) and is_constant(p[3], 1.0)
    assert not is_constant(p[0], 0.0) and not is_constant(p[2], 0.0)
    assert p[0].std() > 0.5          # randn(4, 4), untouched


def test_glob_is_relative_to_the_declaring_block():
    src = """
    block Inner {
        Linear(8); ReLU(); Linear(8)
        init { "0.weight": constant(val=7) }
    }
    block Outer {
        input x: [N, 8]
        Linear(8)
        Inner
    }
    """
    got = params(build(src, seed=0))
    assert {n for n, t in got.items() if is_constant(t, 7.0)} == {"1.0.weight"}


def test_rule_in_a_repeated_block_applies_to_every_copy():
    src = """
    block B {
        Linear(8); ReLU()
        init { Linear.weight: constant(val=7) }
    }
    block Net {
        input x: [N, 8]
        repeat 3 { B }
        Linear(2)
    }
    """
    got = params(build(src, seed=0))
    assert {n for n, t in got.items() if is_constant(t, 7.0)} == {
        "0.0.weight", "1.0.weight", "2.0.weight"}


def test_rule_reaches_a_shared_module_once():
    src = (SPECS / "tied.net").read_text().rstrip()[:-1] + \
        "    init { Linear.weight in \"2.*\": constant(val=7) }\n}\n"
    model = netspec.build(src, seed=0)
    assert model[2] is model[4]
    assert is_constant(model[4].weight, 7.0)
    assert not is_constant(model[0].weight, 7.0) and not is_constant(model[6].weight, 7.0)


# ---- what each initialiser produces ----------------------------------------------------------

WIDE = """
block Wide {
    input x: [N, 512]
    Linear(256)
}
"""
FAN_IN, FAN_OUT = 512, 256


def wide_weight(init: str, seed: int = 0) -> torch.Tensor:
    model = build(with_init(WIDE, f"Linear.weight: {init}"), seed=seed)
    return model[0].weight.detach()


def close(value: float, want: float, rel: float) -> bool:
    return abs(value - want) <= rel * abs(want)


def test_constant_ones_zeros_are_exact():
    assert is_constant(wide_weight("constant(val=0.25)"), 0.25)
    assert is_constant(wide_weight("constant(-3)"), -3.0)
    assert is_constant(wide_weight("ones()"), 1.0)
    assert is_constant(wide_weight("zeros()"), 0.0)


def test_normal_statistics():
    w = wide_weight("normal(mean=0.5, std=2)")
    assert abs(w.mean().item() - 0.5) < 0.05
    assert close(w.std().item(), 2.0, 0.02)
    w = wide_weight("normal(0, 0.01)")
    assert abs(w.mean().item()) < 1e-3 and close(w.std().item(), 0.01, 0.02)


def test_uniform_bounds_and_statistics():
    w = wide_weight("uniform(a=-3, b=5)")
    assert w.min() >= -3 and w.max() <= 5
    assert w.min() < -2.99 and w.max() > 4.99
    assert abs(w.mean().item() - 1.0) < 0.05
    assert close(w.std().item(), 8 / math.sqrt(12), 0.02)


def test_xavier_uniform_bound():
    bound = 2.0 * math.sqrt(6 / (FAN_IN + FAN_OUT))
    w = wide_weight("xavier_uniform(gain=2)")
    assert w.abs().max() <= bound + 1e-6
    assert w.abs().max() > 0.99 * bound
    assert close(w.std().item(), bound / math.sqrt(3), 0.02)


def test_xavier_normal_std():
    w = wide_weight("xavier_normal(gain=0.5)")
    assert close(w.std().item(), 0.5 * math.sqrt(2 / (FAN_IN + FAN_OUT)), 0.02)
    assert abs(w.mean().item()) < 0.1 * w.std().item()


def test_kaiming_uniform_bound():
    bound = math.sqrt(2) * math.sqrt(3 / FAN_IN)       # gain of relu, fan_in
    w = wide_weight('kaiming_uniform(nonlinearity="relu")')
    assert w.abs().max() <= bound + 1e-6 and w.abs().max() > 0.99 * bound
    w = wide_weight('kaiming_uniform(mode="fan_out", nonlinearity="relu")')
    bound = math.sqrt(2) * math.sqrt(3 / FAN_OUT)
    assert w.abs().max() <= bound + 1e-6 and w.abs().max() > 0.99 * bound


def test_kaiming_normal_on_a_convolution_uses_its_fan():
    src = """
    block C {
        input x: [N, 32, 8, 8]
        Conv2d(64, 3)
        init { Conv2d.weight: kaiming_normal(mode="fan_out", nonlinearity="relu") }
    }
    """
    w = build(src, seed=0)[0].weight.detach()
    assert w.shape == (64, 32, 3, 3)
    assert close(w.std().item(), math.sqrt(2 / (64 * 9)), 0.03)
    src = src.replace('mode="fan_out", ', "")
    w = build(src, seed=0)[0].weight.detach()
    assert close(w.std().item(), math.sqrt(2 / (32 * 9)), 0.03)


def test_trunc_normal_stays_in_its_interval():
    w = wide_weight("trunc_normal(mean=0, std=1, a=-0.5, b=0.5)")
    assert w.min() >= -0.5 and w.max() <= 0.5
    assert w.min() < -0.49 and w.max() > 0.49
    # standard normal truncated to [-0.5, 0.5]: std = sqrt(1 - 2 a phi(a) / (2 Phi(a) - 1))
    phi = math.exp(-0.125) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))
    assert close(w.std().item(), math.sqrt(1 - phi / (2 * big_phi - 1)), 0.02)


def test_orthogonal_rows():
    w = wide_weight("orthogonal()").double()
    torch.testing.assert_close(w @ w.T, torch.eye(FAN_OUT, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    w = wide_weight("orthogonal(gain=1.5)").double()
    torch.testing.assert_close(w @ w.T, 2.25 * torch.eye(FAN_OUT, dtype=torch.float64),
                               atol=1e-5, rtol=0)


def test_sparse_zeros_per_column():
    w = wide_weight("sparse(sparsity=0.25, std=0.02)")
    zeros_per_column = (w == 0).sum(dim=0)
    assert (zeros_per_column == math.ceil(0.25 * FAN_OUT)).all()
    assert close(w[w != 0].std().item(), 0.02, 0.03)


def test_eye_is_exact():
    assert torch.equal(wide_weight("eye()"), torch.eye(FAN_OUT, FAN_IN))


@pytest.mark.parametrize("init, groups, in_channels", [("dirac()", 1, 8),
                                                         ("dirac(groups=2)", 2, 4)])
def test_dirac_is_exact(init, groups, in_channels):
    src = f"""
    block C {{
        input x: [N, {in_channels * groups}, 8, 8]
        Conv2d(8, 3, padding=1, groups={groups}, bias=false)
        init {{ Conv2d.weight: {init} }}
    }}
    """
    model = build(src, seed=0)
    want = torch.nn.init.dirac_(torch.empty(8, in_channels, 3, 3), groups=groups)
    assert torch.equal(model[0].weight.detach(), want)
    if groups == 1:      # the identity: a dirac convolution with padding returns its input
        x = torch.randn(2, 8, 8, 8)
        with torch.no_grad():
            assert torch.equal(model(x), x)


def test_default_restores_the_layer_initialisation():
    src = with_init(WIDE, 'Linear: constant(val=7)\n"0.weight": default()')
    model = build(src, seed=0)
    w, b = model[0].weight.detach(), model[0].bias.detach()
    assert is_constant(b, 7.0)
    bound = 1 / math.sqrt(FAN_IN)
    assert w.abs().max() <= bound and close(w.std().item(), bound / math.sqrt(3), 0.03)


def test_default_on_one_parameter_leaves_the_others_alone():
    src = with_init(WIDE, "Linear.weight: constant(val=7)\nLinear.bias: default()")
    model = build(src, seed=0)
    assert is_constant(model[0].weight, 7.0)
    bias = model[0].bias.detach()
    assert bias.abs().max() <= 1 / math.sqrt(FAN_IN) and bias.std() > 0


def test_expression_steps_run_in_order_on_x():
    assert is_constant(wide_weight("constant(val=2) -> x * x + 1"), 5.0)
    assert is_constant(wide_weight("zeros() -> x + 3 -> x / 2"), 1.5)


# ---- rule order ------------------------------------------------------------------------------

SMALL = """
block Net {
    input x: [N, 4]
    Linear(8); ReLU(); Linear(2)
}
"""


def test_later_rule_wins():
    model = build(with_init(SMALL, "Linear.weight: constant(val=1)\n"
                                   "Linear.weight: constant(val=2)"), seed=0)
    assert is_constant(model[0].weight, 2.0) and is_constant(model[2].weight, 2.0)


def test_later_general_rule_beats_earlier_specific_rule():
    model = build(with_init(SMALL, '"0.weight": constant(val=1)\nLinear: constant(val=2)'),
                  seed=0)
    assert all(is_constant(p, 2.0) for p in model.parameters())
    model = build(with_init(SMALL, 'Linear: constant(val=2)\n"0.weight": constant(val=1)'),
                  seed=0)
    assert is_constant(model[0].weight, 1.0)
    assert is_constant(model[0].bias, 2.0) and is_constant(model[2].weight, 2.0)


def test_block_rules_beat_file_rules_wherever_the_file_section_is():
    src = """
    init {
        Linear.weight: constant(val=1)
        Linear.bias: constant(val=3)
    }
    block Net {
        input x: [N, 4]
        Linear(8); ReLU(); Linear(2)
        init { Linear.weight: constant(val=2) }
    }
    init { "2.bias": constant(val=4) }
    """
    model = build(src, seed=0)
    assert is_constant(model[0].weight, 2.0) and is_constant(model[2].weight, 2.0)
    assert is_constant(model[0].bias, 3.0)     # only file rules match the biases
    assert is_constant(model[2].bias, 4.0)     # the later file rule wins


def test_inner_block_beats_outer_block():
    src = """
    block Inner {
        Linear(8); ReLU(); Linear(8)
        init { Linear.weight: constant(val=3) }
    }
    block Outer {
        input x: [N, 8]
        first: Linear(8)
        inner: Inner
        init {
            "inner.0.weight": constant(val=1)
            Linear.weight: constant(val=2)
            Linear.bias in "inner.*": constant(val=5)
        }
    }
    """
    model = build(src, seed=0)
    assert is_constant(model.first.weight, 2.0)
    # the outer rules are more specific, but the inner block has the last word
    assert is_constant(model.inner[0].weight, 3.0) and is_constant(model.inner[2].weight, 3.0)
    # where the inner block says nothing, the outer rule holds
    assert is_constant(model.inner[0].bias, 5.0) and is_constant(model.inner[2].bias, 5.0)


def test_inline_sequence_rules_are_innermost():
    src = """
    init { Linear.weight: constant(val=1) }
    block Net {
        input x: [N, 4]
        net: { Linear(8); ReLU(); Linear(8); init { Linear.weight: constant(val=3) } }
        Linear(2)
    }
    """
    model = build(src, seed=0)
    assert is_constant(model.net[0].weight, 3.0) and is_constant(model.net[2].weight, 3.0)
    assert is_constant(model[1].weight, 1.0)


# ---- d2l's examples (seed 002 "parameter management": net = Linear(4, 8), ReLU, Linear(8, 1))

D2L = """
block Net {
    input x: [N, 4]
    Linear(8); ReLU(); Linear(1)
}
"""


def test_d2l_init_normal():
    model = build(with_init(D2L, "Linear.weight: normal(mean=0, std=0.01)\n"
                                 "Linear.bias: zeros()"), seed=0)
    for i in (0, 2):
        w = model[i].weight.detach()
        assert (w != 0).all() and w.abs().max() < 0.06    # 6 standard deviations
        assert is_constant(model[i].bias, 0.0)
    # on a layer wide enough for statistics
    wide = build(with_init(WIDE, "Linear.weight: normal(mean=0, std=0.01)\n"
                                 "Linear.bias: zeros()"), seed=0)
    assert close(wide[0].weight.std().item(), 0.01, 0.02)


def test_d2l_init_constant():
    model = build(with_init(D2L, "Linear.weight: constant(val=1)\nLinear.bias: zeros()"),
                  seed=0)
    for i in (0, 2):
        assert is_constant(model[i].weight, 1.0) and is_constant(model[i].bias, 0.0)


@pytest.mark.parametrize("rules", [
    '"0.weight": xavier_uniform()\n"2.weight": constant(val=42)',
    'Linear.weight in "0.*": xavier_uniform()\nLinear.weight in "2.*": constant(val=42)',
])
def test_d2l_xavier_and_42(rules):
    model = build(with_init(D2L, rules), seed=0)
    bound = math.sqrt(6 / (4 + 8))
    w0 = model[0].weight.detach()
    assert w0.abs().max() <= bound and w0.std() > 0 and not is_constant(w0, 42.0)
    assert is_constant(model[2].weight, 42.0)
    # the biases keep PyTorch's default
    assert model[0].bias.abs().max() <= 1 / math.sqrt(4)
    assert model[2].bias.abs().max() <= 1 / math.sqrt(8)
    assert not is_constant(model[2].bias, 42.0)


@pytest.mark.parametrize("body", [D2L, WIDE], ids=["d2l", "wide"])
def test_d2l_custom_init(body):
    model = build(with_init(body, "Linear.weight: uniform(-10, 10) -> x * (abs(x) >= 5)"),
                  seed=0)
    weights = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    for w in weights:
        assert ((w == 0) | (w.abs() >= 5)).all()
        assert w.abs().max() <= 10
    every = torch.cat([w.flatten() for w in weights])
    assert (every != 0).any()
    if body is WIDE:      # about half of uniform(-10, 10) has |w| < 5
        assert 0.45 < (every == 0).float().mean().item() < 0.55
    for m in model:
        if isinstance(m, nn.Linear):      # biases untouched
            assert m.bias.abs().max() <= 1 / math.sqrt(m.in_features)


# ---- errors in rules -------------------------------------------------------------------------

def test_rule_matching_nothing_is_a_located_error():
    src = "block Net {\n    input x: [N, 4]\n    Linear(8)\n    init {\n" \
          "        Linear.weight: zeros()\n        Conv2d.weight: zeros()\n    }\n}\n"
    for device in (None, "meta"):
        with pytest.raises(netspec.SpecError) as info:
            netspec.build(src, device=device)
        diags = info.value.diagnostics
        assert len(diags) == 1          # the matching rule is fine
        assert diags[0].kind == "init error"
        assert (diags[0].span.line, diags[0].span.column) == (6, 9)
        message = str(info.value)
        assert ":6:9: init error: this init rule matches no parameter" in message


def test_every_unmatched_rule_is_reported():
    src = "block Net {\n    input x: [N, 4]\n    Linear(8)\n    init {\n" \
          '        "head.*": zeros()\n        BatchNorm1d: ones()\n    }\n}\n'
    with pytest.raises(netspec.SpecError) as info:
        netspec.build(src)
    assert [(d.span.line, d.span.column) for d in info.value.diagnostics] == [(5, 9), (6, 9)]
    assert all("matches no parameter" in d.message for d in info.value.diagnostics)


def test_inner_rule_does_not_see_the_outer_block():
    src = """
    block Inner {
        Linear(8)
        init { Conv2d.weight: zeros() }
    }
    block Outer {
        input x: [N, 3, 4, 4]
        Conv2d(2, 1)
        flatten(x, 1)
        Inner
    }
    """
    with pytest.raises(netspec.SpecError, match="matches no parameter"):
        build(src)


def test_file_rule_matching_nothing_is_an_error():
    with pytest.raises(netspec.SpecError, match="init error: this init rule matches no"):
        build('init { "nothing.*": zeros() }\n' + SMALL)


def test_check_reports_a_rule_matching_nothing():
    src = with_init(SMALL, "Conv2d.weight: zeros()")
    diags = netspec.check(src)
    assert [d.kind for d in diags] == ["init error"]
    assert "matches no parameter" in diags[0].message
    assert netspec.check(with_init(SMALL, "Linear.weight: zeros()")) == []


def test_rule_matching_nothing_shows_the_source_line():
    src = with_init(SMALL, "Conv2d.weight: zeros()")
    with pytest.raises(netspec.SpecError) as info:
        netspec.build(src)
    lines = str(info.value).splitlines()
    assert any(line.rstrip().endswith("| " + " " * 8 + "Conv2d.weight: zeros()")
               for line in lines), lines
    assert any(line.strip().endswith("^" * len("Conv2d.weight: zeros()")) for line in lines)


@pytest.mark.parametrize("rule", [
    '"*.bias": xavier_uniform()',            # needs 2 dimensions
    "Linear.bias: eye()",                    # needs 2 dimensions
    "Linear.weight: dirac()",                # needs 3 to 5 dimensions
    "Linear.weight: uniform(5, -5)",         # an empty interval
    "Linear.weight: normal(std=-1)",         # a negative deviation
    "Linear.weight: transpose(x, 0, 1)",     # changes the shape
])
def test_initialiser_that_does_not_fit_the_tensor_is_a_spec_error(rule):
    with pytest.raises(netspec.SpecError):
        build(with_init(SMALL, rule))


@pytest.mark.parametrize("rule, match", [
    ("Linaer.weight: zeros()", "unknown layer 'Linaer'"),
    ("Linear.weight: normall()", "unknown initialiser 'normall'"),
    ('Linear.weight: kaiming_normal(mode="fan_sideways")', "mode"),
    ('Linear.weight: normal(std="wide")', "std"),
    ('"*.weight" in "head.*": zeros()', "`in` follows a layer selector"),
])
def test_bad_rules_are_spec_errors(rule, match):
    with pytest.raises(netspec.SpecError, match=match):
        build(with_init(SMALL, rule))


# ---- seeds -----------------------------------------------------------------------------------

def test_seeded_builds_are_bit_identical_for_every_spec():
    for path in SPEC_FILES:
        if path.name == "alexnet.net":
            continue      # the round trip in test_checkpoint.py covers it; 46M weights
        a, b = netspec.build(path, seed=11), netspec.build(path, seed=11)
        assert states_equal(a, b), path.name


@pytest.mark.parametrize("name", ["mlp.net", "fixed_hidden_mlp.net", "my_linear.net",
                                  "param_list.net", "param_dict.net", "resnet.net"])
def test_different_seeds_and_no_seed_differ(name):
    path = SPECS / name
    a = netspec.build(path, seed=1).state_dict()
    random = [k for k, t in a.items() if t.numel() > 1 and t.is_floating_point()
              and not torch.all(t == t.flatten()[0])]
    assert random
    unseeded = netspec.build(path).state_dict()
    for b in (netspec.build(path, seed=2).state_dict(), unseeded,
              netspec.build(path).state_dict()):
        for k in random:
            assert not torch.equal(a[k], b[k]), k
    # and the two unseeded builds differ from each other
    other = netspec.build(path).state_dict()
    for k in random:
        assert not torch.equal(unseeded[k], other[k]), k


def test_const_and_param_tensors_follow_the_seed():
    a, b = (netspec.build(SPECS / "fixed_hidden_mlp.net", seed=5) for _ in range(2))
    assert torch.equal(a.rand_weight, b.rand_weight)
    c = netspec.build(SPECS / "fixed_hidden_mlp.net", seed=6)
    assert not torch.equal(a.rand_weight, c.rand_weight)
    m1, m2 = (netspec.build(SPECS / "my_linear.net", seed=5) for _ in range(2))
    for (n1, p1), (n2, p2) in zip(m1.named_parameters(), m2.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    d1, d2 = (netspec.build(SPECS / "param_dict.net", seed=5) for _ in range(2))
    for key in ("linear1", "linear2", "linear3"):
        assert torch.equal(d1.params[key], d2.params[key])


def test_seed_does_not_disturb_the_global_generator():
    torch.manual_seed(123)
    want = torch.rand(5)
    torch.manual_seed(123)
    netspec.build(SPECS / "fixed_hidden_mlp.net", seed=9)
    assert torch.equal(torch.rand(5), want)


def test_seed_with_rules_and_args_is_deterministic():
    src = with_init(MIXED, 'Linear.weight: normal(0, 0.1)\n"conv.weight": kaiming_uniform()\n'
                           "Linear.weight in \"head.*\": uniform(-10, 10) -> x * (abs(x) >= 5)")
    assert states_equal(build(src, seed=3), build(src, seed=3))
    assert not states_equal(build(src, seed=3), build(src, seed=4))
    a = netspec.build(SPECS / "mlp.net", seed=3, classes=7)
    b = netspec.build(SPECS / "mlp.net", seed=3, classes=7)
    assert a.output.weight.shape == (7, 256) and states_equal(a, b)


@pytest.mark.parametrize("name", ["tied.net", "fixed_hidden_mlp.net", "my_linear.net",
                                  "param_list.net", "resnet.net"])
def test_meta_then_materialize_equals_direct_build(name):
    path = SPECS / name
    direct = netspec.build(path, seed=21)
    meta = netspec.build(path, device="meta", seed=21)
    assert all(p.is_meta for p in meta.parameters())
    done = netspec.materialize(meta, device="cpu", seed=21)
    assert done is meta
    assert not any(t.is_meta for t in list(done.parameters()) + list(done.buffers()))
    assert states_equal(direct, done)
    if name == "tied.net":
        assert done[2] is done[4] and done[2].weight is done[4].weight


def test_meta_then_materialize_keeps_ties_and_rules():
    src = """
    block A {
        input x: [N, 4]
        a: Linear(4)
        b: Linear(4)
        tie b.weight = a.weight
        init { "a.*": normal(0, 0.5); "b.bias": constant(val=7) }
    }
    """
    direct = build(src, seed=2)
    done = netspec.materialize(build(src, device="meta"), device="cpu", seed=2)
    assert done.a.weight is done.b.weight
    assert is_constant(done.b.bias, 7.0)
    assert states_equal(direct, done)


def _sharing(model: nn.Module) -> list[list[str]]:
    """The names of each parameter and buffer, grouped by the tensor object they name."""
    groups: dict[int, list[str]] = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + \
            list(model.named_buffers(remove_duplicate=False)):
        groups.setdefault(id(t), []).append(name)
    return sorted(groups.values())


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.name for p in SPEC_FILES])
def test_allocation_is_torch_to_empty_with_sharing_kept(path):
    """materialize allocates as ``Module.to_empty`` does (its own loop is faster): the same
    names, shapes, strides, dtypes and parameter flags, on the device, and a tensor that several
    modules hold on the meta device is still one tensor."""
    from netspec.init import _to_empty

    ours = netspec.build(path, device="meta")
    sharing = _sharing(ours)
    _to_empty(ours, torch.device("cpu"))
    theirs = netspec.build(path, device="meta").to_empty(device="cpu")

    def layout(model):
        return [(name, type(t), t.shape, t.stride(), t.dtype, t.device, t.requires_grad)
                for name, t in list(model.named_parameters(remove_duplicate=False)) +
                list(model.named_buffers(remove_duplicate=False))]
    assert layout(ours) == layout(theirs)
    assert _sharing(ours) == sharing


def test_tie_inside_a_layer_with_its_own_apply():
    """An LSTM allocates through its own ``_apply`` (which re-flattens its weights); a tie
    into it holds afterwards, and the weights its kernel reads are its parameters."""
    model = build("""
    block A {
        input x: [N, 5, 8]
        rnn: LSTM(8, batch_first=true)
        tie rnn.weight_hh_l0 = rnn.weight_ih_l0
    }
    """, seed=0)
    rnn = model.rnn
    assert rnn.weight_hh_l0 is rnn.weight_ih_l0 and not rnn.weight_hh_l0.is_meta
    assert all(w is getattr(rnn, n) for w, n in zip(rnn._flat_weights, rnn._flat_weights_names))


def test_materialize_when_torch_swaps_tensors_on_conversion():
    """With torch's swap-on-conversion setting, allocation is left to ``Module._apply``."""
    previous = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        done = netspec.materialize(netspec.build(SPECS / "tied.net", device="meta"), seed=5)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(previous)
    assert states_equal(done, netspec.build(SPECS / "tied.net", seed=5))
    assert done[2].weight is done[4].weight


def _digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_seeded_weights_are_the_same_in_another_process():
    code = ("from __future__ import annotations\nimport hashlib, netspec, torch\n"
            "from torch import nn\n" + inspect.getsource(_digest) +
            "for name in ('fixed_hidden_mlp.net', 'my_linear.net', 'rgnet.net'):\n"
            "    print(_digest(netspec.build('specs/' + name, seed=17)))\n")
    env = dict(os.environ, PYTHONHASHSEED="12345",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    want = [_digest(netspec.build(SPECS / name, seed=17))
            for name in ("fixed_hidden_mlp.net", "my_linear.net", "rgnet.net")]
    assert out.stdout.split() == want


# ---- the default initialisation --------------------------------------------------------------

@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.name for p in SPEC_FILES])
def test_nothing_is_left_on_meta(path):
    model = netspec.build(path)
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors or path.name == "centered.net"
    for t in tensors:
        assert not t.is_meta and t.device.type == "cpu"
        assert torch.isfinite(t).all()


def test_default_init_looks_like_pytorch():
    model = netspec.build(SPECS / "lenet5.net", seed=0)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            for p in (m.weight, m.bias):
                assert p.abs().max() <= bound
                assert p.abs().max() > 0.5 * bound       # not squeezed towards zero
    # the spread of kaiming_uniform(a=sqrt(5)): U(-b, b), std b / sqrt(3)
    big = netspec.build(SPECS / "mlp.net", seed=0).hidden
    bound = 1 / math.sqrt(784)
    assert close(big.weight.std().item(), bound / math.sqrt(3), 0.02)
    assert abs(big.weight.mean().item()) < 0.1 * bound
    # batch norm starts at the identity
    resnet = netspec.build(SPECS / "resnet.net", seed=0)
    bn = resnet.bn1
    assert is_constant(bn.weight, 1.0) and is_constant(bn.bias, 0.0)
    assert is_constant(bn.running_mean, 0.0) and is_constant(bn.running_var, 1.0)


def test_layers_without_a_rule_keep_the_default_next_to_ruled_ones():
    model = build(with_init(MIXED, "Linear.weight: zeros()"), seed=0)
    assert is_constant(model.body.weight, 0.0)
    assert model.body.bias.abs().max() <= 1 / math.sqrt(256) and model.body.bias.std() > 0
    conv = model.conv.weight.detach()
    assert conv.abs().max() <= 1 / math.sqrt(27) and conv.std() > 0
    assert is_constant(model.bn.weight, 1.0) and is_constant(model.bn.bias, 0.0)


# ---- summary --init --------------------------------------------------------------------------

def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    from netspec.cli import app

    monkeypatch.setenv("COLUMNS", "240")
    with pytest.raises(SystemExit) as info:
        app(args, prog_name="netspec")
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_summary_init_names_the_rule_of_every_parameter(tmp_path, capsys, monkeypatch):
    src = with_init(MIXED, 'Linear.weight: normal(mean=0, std=0.01)\n"*.bias": zeros()\n'
                           'Linear.weight in "head.*": constant(val=42)')
    spec = tmp_path / "mixed.net"
    spec.write_text(src)
    code, out, err = run_cli(["summary", str(spec), "--init"], capsys, monkeypatch)
    assert code == 0, err
    want = {
        "conv.weight": "default", "conv.bias": '"*.bias": zeros()',
        "bn.weight": "default", "bn.bias": '"*.bias": zeros()',
        "body.weight": "Linear.weight: normal(mean=0, std=0.01)",
        "body.bias": '"*.bias": zeros()',
        "head.0.weight": 'Linear.weight in "head.*": constant(val=42)',
        "head.0.bias": '"*.bias": zeros()',
        "head.2.weight": 'Linear.weight in "head.*": constant(val=42)',
        "head.2.bias": '"*.bias": zeros()',
    }
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 5 and cells[1] in want:     # parameter | layer | rule
            rows[cells[1]] = (cells[2], cells[3])
    assert set(rows) == set(want)
    for name, rule in want.items():
        assert rows[name][1] == rule, name
    assert rows["bn.weight"][0] == "BatchNorm2d" and rows["head.2.bias"][0] == "Linear"


def test_summary_init_reports_an_unmatched_rule(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "bad.net"
    spec.write_text(with_init(SMALL, "Conv2d: zeros()"))
    code, out, err = run_cli(["summary", str(spec), "--init"], capsys, monkeypatch)
    assert code == 1
    assert "init error: this init rule matches no parameter" in err
    assert "Traceback" not in err + out


def test_no_weight_is_initialised_twice(monkeypatch):
    """A ruled weight is never default-initialised first; the layer's bias still is, once."""
    calls: list[tuple] = []
    original = {name: getattr(torch.nn.init, name) for name in
                ("kaiming_uniform_", "uniform_", "constant_")}
    for name, fn in original.items():
        def spy(tensor, *args, _name=name, _fn=fn, **kwargs):
            if tensor.device.type != "meta":    # building on meta touches no memory
                calls.append((_name, tuple(tensor.shape)))
            return _fn(tensor, *args, **kwargs)
        monkeypatch.setattr(torch.nn.init, name, spy)
    model = netspec.build("block A { input x: [N, 4]; Linear(8); init { Linear.weight: "
                          "constant(val=1) } }", seed=0)
    assert calls == [("uniform_", (8,)), ("constant_", (8, 4))]
    assert torch.equal(model[0].weight, torch.ones(8, 4))
    calls.clear()
    netspec.build("block A { input x: [N, 4]; Linear(8) }", seed=0)
    assert calls == [("kaiming_uniform_", (8, 4)), ("uniform_", (8,))]
