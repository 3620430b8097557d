"""The language end to end: each feature built from source text and checked against PyTorch."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import netspec
from netspec.dims import Sym
from netspec.ir import lint
from netspec.parse import parse


def build(src: str, **kw):
    return netspec.build(src, **kw)


# ---- syntax ------------------------------------------------------------------------------------

def test_newlines_inside_brackets_and_arrow_continuations() -> None:
    model = build("""
block A {
    input x: [N,
              6]
    y = x -> Linear(
            4)
          -> ReLU()
    return y
}""")
    assert model(torch.rand(3, 6)).shape == (3, 4)


def test_semicolons_and_comments() -> None:
    model = build("block A { input x: [N, 3]; Linear(2); ReLU() }  # trailing comment")
    assert isinstance(model, nn.Sequential) and len(model) == 2


def test_ast_nodes_carry_spans() -> None:
    tree = parse("block A {\n  input x: [N, 3]\n  h: Linear(2)\n}\n", "f.net")
    step = tree.blocks[0].body.stmts[1]
    link = step.chain.links[0]
    assert (link.label_span.line, link.label_span.column) == (3, 3)
    assert (link.node.span.line, link.node.span.column) == (3, 6)


# ---- blocks, arguments, entries ----------------------------------------------------------------

SRC_BLOCKS = """
block Head(classes: int = 10, p: float = 0.5) { Dropout(p); Linear(classes) }
block Net(classes: int = 10) {
    input x: [N, 32]
    body: { Linear(64); ReLU() }
    head: Head(classes)
}
"""


def test_last_block_is_the_entry_and_arguments_flow() -> None:
    model = build(SRC_BLOCKS, classes=7)
    assert type(model).__name__ == "Net"
    assert model.head[1].out_features == 7
    assert model.head[0].p == 0.5


def test_block_keyword_picks_another_entry() -> None:
    model = build(SRC_BLOCKS, block="Head", input=[2, 5], classes=3)
    assert model(torch.rand(2, 5)).shape == (2, 3)


def test_wrong_argument_type_is_an_error() -> None:
    with pytest.raises(netspec.SpecError, match="argument 'classes' is int"):
        build(SRC_BLOCKS, classes="ten")


VGG_LIST = """
block VGG(widths: list = [8, 16], classes: int = 10) {
    input x: [N, 3, 16, 16]
    features: {
        repeat len(widths) as "stage{i}" { Conv2d(widths[i], 3, padding=1); ReLU(); MaxPool2d(2) }
    }
    Flatten()
    classifier: Linear(classes)
}
"""


def _vgg_twin(widths: list[int]) -> nn.Module:
    stages, channels = [], 3
    for w in widths:
        stages.append(nn.Sequential(nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(),
                                    nn.MaxPool2d(2)))
        channels = w
    side = 16 // 2 ** len(widths)
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(OrderedDict((f"stage{i}", s) for i, s in enumerate(stages)))),
        ("1", nn.Flatten()), ("classifier", nn.Linear(channels * side * side, 10))]))


@pytest.mark.parametrize("widths", [None, [4, 8, 16], (6,)])
def test_a_list_argument_sizes_repeated_stages(widths) -> None:
    """A ``list`` block argument, its length by ``len``, its items by index: the same model as
    a hand-written loop over the list, from the default, a Python list or a tuple."""
    torch.manual_seed(0)
    model = build(VGG_LIST) if widths is None else build(VGG_LIST, widths=widths)
    twin = _vgg_twin(list(widths or [8, 16]))
    assert list(model.state_dict()) == list(twin.state_dict())
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(x), twin(x), rtol=0, atol=0)
    assert model._netspec.ir.block_args["widths"] == tuple(widths or (8, 16))


def test_a_checkpoint_keeps_a_list_argument(tmp_path) -> None:
    model = build(VGG_LIST, widths=[4, 12])
    netspec.save(model, tmp_path / "vgg.safetensors")
    loaded = netspec.load(tmp_path / "vgg.safetensors")
    assert loaded._netspec.ir.block_args["widths"] == (4, 12)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_list_argument_from_the_command_line(tmp_path, capsys, monkeypatch) -> None:
    from netspec.cli import app

    (tmp_path / "vgg.net").write_text(VGG_LIST)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        app(["check", "vgg.net", "--set", "widths=[4, 8, 16]"], prog_name="netspec")
    assert info.value.code == 0
    assert capsys.readouterr().out == "ok: vgg.net: VGG [N, 3, 16, 16] -> [N, 10]\n"
    with pytest.raises(SystemExit) as info:
        app(["check", "vgg.net", "--set", "widths=[4, 8, 16, 32, 64]"], prog_name="netspec")
    assert info.value.code == 1                # five poolings of 16 rows leave none
    assert "shape error" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [
    (8, "VGG: argument 'widths' is list, but got 8"),
    ("[8, 16]", "VGG: argument 'widths' is list, but got the string \"[8, 16]\""),
])
def test_a_list_argument_takes_only_a_list(value, message) -> None:
    with pytest.raises(netspec.SpecError) as info:
        build(VGG_LIST, widths=value)
    assert info.value.diagnostics[0].message == message


@pytest.mark.parametrize("call, message", [
    ("len(3)", "len() takes a list, not 3"),
    ("len(widths, widths)", "len() takes one argument"),
])
def test_len_takes_one_list(call, message) -> None:
    src = VGG_LIST.replace("len(widths)", call)
    with pytest.raises(netspec.SpecError) as info:
        build(src)
    assert info.value.diagnostics[0].message == message


def test_parse_value_reads_lists() -> None:
    from netspec.api import parse_value

    assert parse_value('[1, [2, 3], "a,b", true, none, 0.5]') == \
        (1, (2, 3), "a,b", True, None, 0.5)
    assert parse_value("[]") == ()


def test_unknown_block_argument_has_did_you_mean() -> None:
    with pytest.raises(netspec.SpecError, match="did you mean 'classes'"):
        build(SRC_BLOCKS, clases=3)


# ---- symbols and shapes ------------------------------------------------------------------------

def test_batch_symbol_stays_symbolic_and_input_binds_it() -> None:
    analysis = netspec.analyze("block A { input x: [N, 8]; Linear(4) }")
    assert isinstance(analysis.output_shape[0], Sym) and str(analysis.output_shape[0]) == "N"
    analysis = netspec.analyze("block A { input x: [N, 8]; Linear(4) }", input=[5, 8])
    assert analysis.output_shape == (5, 4)


def test_symbols_usable_in_expressions() -> None:
    model = build("block A { input x: [N, C, L]; reshape(x, N, C * L) -> Linear(3) }",
                  input=[2, 4, 5])
    assert model[1].in_features == 20 if isinstance(model, nn.Sequential) else True
    assert model(torch.rand(2, 4, 5)).shape == (2, 3)


def test_reshape_with_symbolic_batch_runs_with_other_batches() -> None:
    model = build("block A { input x: [N, 2, 3]; reshape(x, N, -1) }")
    assert model(torch.rand(7, 2, 3)).shape == (7, 6)


def test_expect_checks_the_running_shape() -> None:
    build("block A { input x: [N, 16, 5, 5]; Flatten(); expect [N, 400]; Linear(10) }")
    with pytest.raises(netspec.SpecError, match=r"expected \[N, 300\]"):
        build("block A { input x: [N, 16, 5, 5]; Flatten(); expect [N, 300] }")


def test_declared_input_is_checked_against_the_given_one() -> None:
    with pytest.raises(netspec.SpecError, match=r"declares the input \[N, 784\]"):
        netspec.analyze("block A { input x: [N, 784]; Linear(3) }", input=[2, 20])


def test_stated_size_is_checked() -> None:
    build("block A { input x: [N, 20]; Linear(4, in_features=20) }")
    with pytest.raises(netspec.SpecError, match="in_features=21, but the input here has 20"):
        build("block A { input x: [N, 20]; Linear(4, in_features=21) }")


def test_block_without_input_takes_its_callers_shape() -> None:
    model = build("block B { Linear(3) }\nblock A { input x: [N, 5]; b1: B; b2: B }")
    assert model.b1[0].in_features == 5 and model.b2[0].in_features == 3


# ---- sequences, naming, repeat -----------------------------------------------------------------

def test_unnamed_steps_are_numbered_by_position() -> None:
    model = build("block A { input x: [N, 3]; Linear(3); act: ReLU(); Linear(2) }")
    assert list(dict(model.named_children())) == ["0", "act", "2"]


def test_repeat_with_pattern_names_each_copy() -> None:
    model = build('block A { input x: [N, 4]; repeat 3 as "layer{i}" { Linear(4); ReLU() } }')
    assert list(dict(model.named_children())) == ["layer0", "layer1", "layer2"]
    assert isinstance(model.layer1, nn.Sequential) and len(model.layer1) == 2
    assert model.layer0[0].weight is not model.layer1[0].weight


def test_repeat_without_pattern_inlines_and_index_is_usable() -> None:
    model = build("block A { input x: [N, 4]; repeat 3 as k { Linear(4 * (k + 1)) } }")
    assert [m.out_features for m in model] == [4, 8, 12]
    assert [m.in_features for m in model] == [4, 4, 8]


def test_repeat_count_must_not_be_negative() -> None:
    with pytest.raises(netspec.SpecError, match="non-negative integer count, not -2"):
        build("block A { input x: [N, 4]; repeat -2 { Linear(4) } }")


DEPTH = """block A(depth: int = 0) {
    input x: [N, 8]
    Linear(6)
    repeat depth as k { Linear(6 + k); ReLU() }
    Linear(4)
}
"""


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_repeat_zero_times_is_no_step(depth) -> None:
    """``repeat depth`` with depth 0 adds nothing: the model is the hand-written Sequential
    with an empty loop, names and outputs included, and 1 or 2 copies match theirs too."""
    model = netspec.build(DEPTH, seed=0, args={"depth": depth})
    layers, width = [nn.Linear(8, 6)], 6
    for k in range(depth):
        layers += [nn.Linear(width, 6 + k), nn.ReLU()]
        width = 6 + k
    twin = nn.Sequential(*layers, nn.Linear(width, 4))
    assert list(model.state_dict()) == list(twin.state_dict())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in twin.parameters())
    twin.load_state_dict(model.state_dict())
    x = torch.randn(3, 8)
    torch.testing.assert_close(model(x), twin(x), rtol=0, atol=0)


@pytest.mark.parametrize("src", [
    "block A { input x: [N, 8]; repeat 0 { Linear(8) } }",
    'block A { input x: [N, 8]; repeat 0 as "p{i}" { Linear(8); ReLU() } }',
    "block A { input x: [N, 8]; y = repeat 0 { Linear(8) }; return y }",
])
def test_a_block_of_repeat_zero_is_the_identity(src) -> None:
    model = build(src)
    assert list(model.state_dict()) == [] and list(model.children()) == []
    x = torch.randn(3, 8)
    assert torch.equal(model(x), x)
    assert [str(d) for d in netspec.analyze(src).output_shape] == ["N", "8"]


def test_repeat_zero_passes_a_named_value_on() -> None:
    model = build("block A { input x: [N, 8]; y = repeat 0 as k { Linear(8) }; "
                  "return relu(x + y) }")
    x = torch.randn(3, 8)
    torch.testing.assert_close(model(x), torch.relu(x + x), rtol=0, atol=0)


UNTAKEN = """block Unused(w: int) { Linear(w) }
block Sub { input x: [N, 8]; Linear(8) }
block Net(f: bool = false, n: int = 0) {
    input x: [N, 8]
    let Shared = Linear(8)
    Skip = x
    if f { Shared; Sub; Skip; Linear(8, bias=3) } else { Shared }
    repeat n as K { Sub(); Linear(8 * K) }
    Linear(2)
}
"""


def test_code_not_built_is_checked_for_misspelt_names_only() -> None:
    """Code that is not built (a block nothing uses, an untaken if, a body repeated 0 times)
    may use the lets, values, arguments and indices around it and other blocks; an error
    that depends on values (``bias=3``) is reported once arguments make it taken."""
    model = build(UNTAKEN)
    twin = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))     # the else branch, then the head
    assert list(model.state_dict()) == list(twin.state_dict())
    twin.load_state_dict(model.state_dict())
    x = torch.randn(3, 8)
    torch.testing.assert_close(model(x), twin(x), rtol=0, atol=0)
    with pytest.raises(netspec.SpecError, match="bias"):
        netspec.build(UNTAKEN, f=True)


def test_unused_blocks_of_an_imported_file_are_checked_with_that_file(tmp_path) -> None:
    """A misspelt layer in a block that the root file does not use, in a file it imports, is
    that file's mistake: reported when that file is checked, not in every program using it."""
    (tmp_path / "lib.net").write_text("block Used { Linear(4) }\nblock Unused { Lineer(4) }\n")
    (tmp_path / "main.net").write_text('import "lib.net"\n'
                                       "block Net {\n    input x: [N, 8]\n    Used\n}\n")
    assert netspec.check(tmp_path / "main.net") == []
    problems = netspec.check(tmp_path / "lib.net")
    assert [(d.kind, d.message) for d in problems] == [
        ("name error", "unknown layer or block 'Lineer'")]


ROOT = Path(__file__).parent.parent
EXAMPLES = [(p.stem, p.read_text()) for p in sorted((ROOT / "specs").glob("*.net")) +
            sorted((ROOT / "bench" / "specs").glob("*.net"))] + [
    (f"{doc.name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(1))
    for doc in sorted((ROOT / "docs").glob("*.md")) for text in [doc.read_text()]
    for m in re.finditer(r"^```netspec\n(.*?)^```", text, flags=re.M | re.S)]


@pytest.mark.parametrize("text", [t for _, t in EXAMPLES], ids=[n for n, _ in EXAMPLES])
def test_every_block_of_an_example_passes_as_code_not_built(text: str) -> None:
    """With a probe block as the entry, nothing of an example spec (in specs/ or in the docs)
    is built, so all of it is checked as code that is not built: no false alarm in any of its
    calls, steps or keywords. Examples that are not valid on their own are skipped."""
    try:
        netspec.analyze(text)
    except netspec.SpecError:
        pytest.skip("not valid on its own (an example of an error, or a fragment)")
    probe = text + "\nblock NotBuiltProbe {\n    input x: [N, 1]\n    Identity()\n}\n"
    assert netspec.analyze(probe).ir.cls_name == "NotBuiltProbe"


# ---- compile-time if ---------------------------------------------------------------------------

def test_static_if_on_arguments() -> None:
    src = ("block A(deep: bool = false) { input x: [N, 4]\n"
           "  if deep { Linear(8); ReLU(); Linear(4) } else { Linear(4) } }")
    assert len(build(src)) == 1
    assert len(build(src, deep=True)) == 3


def test_if_on_a_dim_symbol_is_decided_by_the_input() -> None:
    src = """
block Proj(out: int) {
    input x: [N, C]
    if C != out { proj: Linear(out) } else { x }
}
block A { input x: [N, 8]; same: Proj(8); other: Proj(3) }
"""
    model = build(src)
    assert list(dict(model.same.named_children())) == []
    assert isinstance(model.other.proj, nn.Linear)
    assert model(torch.rand(2, 8)).shape == (2, 3)


# ---- dataflow ----------------------------------------------------------------------------------

def test_named_values_and_return() -> None:
    model = build("""
block R { input x: [N, 6]
    y = x -> Linear(6) -> ReLU()
    z = y * 2
    return relu(x + z)
}""")
    x = torch.rand(3, 6)
    expected = torch.relu(x + 2 * torch.relu(model._modules["0"](x)))
    assert torch.equal(model(x), expected)


def test_running_value_can_be_reassigned() -> None:
    model = build("block A { input x: [N, 4]\n x = x -> Linear(4)\n x = x * 3\n return x }")
    x = torch.rand(2, 4)
    assert torch.allclose(model(x), model._modules["0"](x) * 3)


def test_a_value_is_computed_before_its_input_is_reassigned() -> None:
    # y and z are used once, at the end, after x has moved on: the generated forward must not
    # postpone relu(x) to the return line, where x is another tensor
    model = build("""
block B { input x: [N, 4]
    y = relu(x)
    x = Linear(4)
    z = sigmoid(x)
    x = Linear(4)
    return y + z + x
}""")
    x = torch.randn(3, 4)
    a = model._modules["0"](x)
    expected = torch.relu(x) + torch.sigmoid(a) + model._modules["1"](a)
    assert torch.allclose(model(x), expected)
    assert "y = torch.relu(x)" in type(model).code      # computed where the spec computes it


def test_a_single_function_call_is_written_into_the_next_module_call() -> None:
    model = build("block B { input x: [N, 4]; Linear(4); relu(x); Linear(4); sigmoid(x) * 2\n"
                  "Linear(4); tanh(x) }")
    x = torch.randn(3, 4)
    first, second, third = (model._modules[k] for k in "012")
    expected = torch.tanh(third(torch.sigmoid(second(torch.relu(first(x)))) * 2))
    assert torch.equal(model(x), expected)
    code = type(model).code
    assert "x = mods['1'](torch.relu(x))" in code              # as one would write it
    assert "x = torch.sigmoid(x) * 2" in code                  # a longer one keeps its line


@pytest.mark.parametrize("step, in_place", [
    ("relu(y + x)", True),          # the sum is a new tensor only relu reads
    ("relu(y - x)", True),
    ("relu(y * x)", True),
    ("relu(y / 2)", True),
    ("relu(-y)", True),
    ("relu(y)", False),             # y is a module's output: it may be saved for backward
    ("relu(y ** 2)", False),        # pow's backward reads its result
    ("relu(y @ w)", False),         # matmul may return a view
    ("sigmoid(y + x)", False),      # no in-place form: sigmoid_ of an int tensor would fail
    ("relu(y + x) + (y + x)", True),    # two sums, two tensors: the first only relu reads
])
def test_relu_of_a_new_temporary_is_applied_in_place(step: str, in_place: bool) -> None:
    model = build(f"""
block R {{ input x: [N, 4]
    param w = randn(4, 4)
    y = x -> Linear(4) -> Sigmoid()
    return {step}
}}""")
    code = type(model).code
    assert ("torch.relu_(" in code) == in_place, code
    # the same values and gradients as the out-of-place forward
    x = torch.randn(3, 4, requires_grad=True)
    lin, w = model._modules["0"], model._parameters["w"]
    y = torch.sigmoid(lin(x))
    expected = eval(step.replace("relu", "torch.relu").replace("sigmoid(", "torch.sigmoid("),
                    {"torch": torch, "x": x, "y": y, "w": w})
    want = torch.autograd.grad(expected.sum(), (x, lin.weight, w), allow_unused=True)
    got_out = model(x)
    got = torch.autograd.grad(got_out.sum(), (x, lin.weight, w), allow_unused=True)
    assert torch.allclose(got_out, expected)
    for g, e in zip(got, want):
        assert (g is None and e is None) or torch.allclose(g, e)


def test_relu_in_place_keeps_a_value_read_again_later() -> None:
    # s is read twice, so it is a variable, never overwritten by relu
    model = build("""
block R { input x: [N, 4]
    s = x + 1
    return relu(s) + s
}""")
    assert "torch.relu_(" not in type(model).code
    x = torch.randn(3, 4)
    assert torch.equal(model(x), torch.relu(x + 1) + (x + 1))


def test_tensor_subscripts_are_pytorchs() -> None:
    model = build("""
block Steps { input x: [N, 6, 16]
    first = x[:, 0]
    rest = x[:, 1:, ::2]
    return first[:, :8] + sum(rest, dim=1) + mean(x[-1, -2:, 3:11])
}""")
    x = torch.randn(3, 6, 16)
    expected = x[:, 0][:, :8] + x[:, 1:, ::2].sum(dim=1) + x[-1, -2:, 3:11].mean()
    assert torch.equal(model(x), expected)
    code = type(model).code
    assert "x[:, 1:, ::2]" in code and "x[:, 0]" in code      # written as subscripts


def test_an_ellipsis_stands_for_the_dims_the_other_subscripts_leave() -> None:
    model = build("""
block Ends { input x: [N, 3, 8, 8]
    last = x[..., -1]
    first = x[0, ...]
    return last[..., none] + first[..., 0:1] + x[...][0, 0, ..., 2, 3]
}""")
    x = torch.randn(2, 3, 8, 8)
    expected = x[..., -1][..., None] + x[0, ...][..., 0:1] + x[...][0, 0, ..., 2, 3]
    assert torch.equal(model(x), expected)
    code = type(model).code
    assert "x[..., -1]" in code and "x[0, ...]" in code        # written as subscripts


def test_a_const_tensor_is_subscripted_and_a_const_list_indexed() -> None:
    model = build("""
block Proj { input x: [N, 4]
    const w = rand(4, 6)
    const ws = [rand(4, 2), rand(4, 3)]
    return x @ w[:, :2] + x @ ws[0] + x @ ws[1][:, 1:]
}""")
    x = torch.randn(3, 4)
    w, w0, w1 = model.w, model.ws[0], model.ws[1]
    assert torch.allclose(model(x), x @ w[:, :2] + x @ w0 + x @ w1[:, 1:])


def test_subscript_shapes_follow_the_symbolic_batch() -> None:
    analysis = netspec.analyze("block A { input x: [N, 8]; x[1:, :3] }")
    n = analysis.ir.input_dims[0]
    assert analysis.ir.out_shape == (n - 1, 3)
    model = build("block A { input x: [N, 8]; x[1:, :3] }")
    x = torch.randn(5, 8)
    assert torch.equal(model(x), x[1:, :3])


def test_lists_take_an_index_or_a_slice() -> None:
    model = build("""
block Widths { input x: [N, 4]
    repeat 2 { Linear([8, 16, 32][1:][i]) }
}""")
    assert [m.out_features for m in model.children()] == [16, 32]


def test_add_and_concat_branches() -> None:
    model = build("""
block A { input x: [N, 4]
    concat(dim=1) { a: Linear(3); b: Linear(5) }
    add { x; Linear(8) }
}""")
    x = torch.rand(2, 4)
    h = torch.cat([model.a(x), model.b(x)], dim=1)
    assert torch.equal(model(x), h + model._modules["2"](h))


def test_while_loop_runs_at_runtime() -> None:
    model = build("block A { input x: [N, 3]; while sum(abs(x)) > 1 { x / 2 } }")
    x = torch.full((1, 3), 4.0)
    assert torch.equal(model(x), torch.full((1, 3), 0.25))


def test_while_body_must_keep_the_shape() -> None:
    with pytest.raises(netspec.SpecError, match="must keep the shape"):
        build("block A { input x: [N, 3]; while sum(x) > 1 { Linear(2) } }")


# ---- sharing, ties, tensors --------------------------------------------------------------------

def test_let_is_one_module_object() -> None:
    model = build("block A { input x: [N, 4]; let s = Linear(4); s; ReLU(); s }")
    assert model[0] is model[2]


def test_tie_makes_one_parameter() -> None:
    model = build("""
block A { input x: [N, 4]
    a: Linear(4)
    b: Linear(4)
    tie b.weight = a.weight
}""")
    assert model.a.weight is model.b.weight
    assert model.a.bias is not model.b.bias
    model(torch.rand(2, 4)).sum().backward()
    assert model.a.weight.grad is not None


def test_tie_with_unknown_path_has_a_hint() -> None:
    with pytest.raises(netspec.SpecError, match="no parameter 'weigth'"):
        build("block A { input x: [N, 4]; a: Linear(4); b: Linear(4); tie b.weigth = a.weight }")


def test_const_is_a_buffer_and_param_is_a_parameter() -> None:
    model = build("""
block A(k: int = 3) { input x: [N, d]
    const c = ones(d)
    param w = zeros(d, k)
    (x + c) @ w
}""", input=[2, 5])
    assert dict(model.named_buffers())["c"].shape == (5,)
    assert dict(model.named_parameters())["w"].shape == (5, 3)
    assert "c" in model.state_dict()


def test_factories_are_only_allowed_in_const_and_param() -> None:
    with pytest.raises(netspec.SpecError, match="belongs in a const or param"):
        build("block A { input x: [N, 4]; x + rand(4) }")


# ---- imports -----------------------------------------------------------------------------------

def test_imports_are_relative_and_cycles_are_errors(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.net").write_text("block Mlp { Linear(8); ReLU() }\n")
    (tmp_path / "net.net").write_text('import "lib/blocks.net"\n'
                                      "block Net { input x: [N, 3]; Mlp; Linear(2) }\n")
    model = netspec.build(tmp_path / "net.net")
    assert model(torch.rand(2, 3)).shape == (2, 2)
    (tmp_path / "a.net").write_text('import "b.net"\nblock A { Linear(2) }\n')
    (tmp_path / "b.net").write_text('import "a.net"\nblock B { Linear(2) }\n')
    with pytest.raises(netspec.SpecError, match="import cycle"):
        netspec.build(tmp_path / "a.net")
    (tmp_path / "c.net").write_text('import "missing.net"\nblock C { Linear(2) }\n')
    with pytest.raises(netspec.SpecError, match="cannot find 'missing.net'"):
        netspec.build(tmp_path / "c.net")


# ---- building ----------------------------------------------------------------------------------

def test_meta_build_allocates_nothing_and_materializes() -> None:
    model = netspec.build("specs/alexnet.net", device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    netspec.materialize(model, "cpu", seed=0)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model(torch.rand(1, 1, 224, 224)).shape == (1, 10)


def test_dtype_is_applied() -> None:
    model = build("block A { input x: [N, 4]; const c = ones(4); Linear(2) }", dtype="float64")
    assert all(t.dtype == torch.float64 for t in model.state_dict().values())


def test_ir_is_reachable_and_lints() -> None:
    analysis = netspec.analyze("specs/resnet.net")
    lint(analysis.ir, shaped=True)
    kinds = {d["op"] for _, mod in analysis.ir.walk() if mod.graph is not None
             for _, d in mod.graph.nodes(data=True)}
    assert kinds <= {"placeholder", "call_module", "call_function", "get_attr", "loop", "output"}


def test_generated_forward_is_readable_python() -> None:
    model = netspec.build("specs/fixed_hidden_mlp.net")
    code = type(model).code
    assert "def forward(self, x):" in code and "while" in code and "# [N, 20]" in code
    compile(code, "<test>", "exec")


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "netspec", "check", "specs/lenet.net"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: specs/lenet.net: LeNet [N, 1, 28, 28] -> [N, 10]")


@pytest.mark.parametrize("spec, status, stream, text", [
    ("specs/lenet.net", 0, "stdout", "ok: specs/lenet.net: LeNet"),
    ("tests/errors/add_mismatch.net", 1, "stderr", "add_mismatch.net:"),
])
def test_the_cli_process_exits_with_its_status_and_all_its_output(spec, status, stream,
                                                                  text) -> None:
    """``main`` leaves without the interpreter's teardown; what it wrote is still all there
    (the streams are flushed first), and the exit status is the command's."""
    result = subprocess.run([sys.executable, "-m", "netspec", "check", spec],
                            capture_output=True, text=True)
    assert result.returncode == status, result.stderr
    assert text in getattr(result, stream)
    assert getattr(result, stream).endswith("\n")


def test_the_cli_process_survives_a_reader_that_goes_away() -> None:
    """``netspec summary spec | head -1``: no traceback when the pipe closes early."""
    proc = subprocess.Popen([sys.executable, "-m", "netspec", "summary",
                             "bench/specs/llama70b.net"],     # 120 kB: more than a pipe holds
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err, err


POSITIONS = """
block Pick {
    input x: [N, 3, 8, 8]
    bgr = x[:, [2, 1, 0]]                  # [N, 3, 8, 8]
    rows = bgr[..., [0, 0, -1], 1:3]       # [N, 3, 3, 2]
    return rows[0, :, [1, 0]] * 2.0        # [3, 2, 2]: the integer selects first
}
"""


def test_lists_of_positions_pick_as_in_pytorch() -> None:
    """``x[:, [2, 1, 0]]``: the shapes netspec infers and the values the model computes are
    torch's, eagerly, under ``torch.compile(fullgraph=True)`` and through ``torch.export``."""
    def twin(x: torch.Tensor) -> torch.Tensor:
        rows = x[:, [2, 1, 0]][..., [0, 0, -1], 1:3]
        return rows[0, :, [1, 0]] * 2.0

    analysis = netspec.analyze(POSITIONS, input=[2, 3, 8, 8])
    model = netspec.build(POSITIONS)
    x = torch.randn(2, 3, 8, 8)
    assert tuple(analysis.output_shape) == twin(x).shape == (3, 2, 2)
    assert torch.equal(model(x), twin(x))
    assert "x[:, [2, 1, 0]]" in type(model).code
    torch._dynamo.reset()
    assert torch.equal(torch.compile(model, fullgraph=True)(x), twin(x))
    assert torch.equal(torch.export.export(model, (x,)).module()(x), twin(x))


def test_pre_commit_hooks_run_netspec_on_the_files_they_are_given(tmp_path) -> None:
    """Each hook of .pre-commit-hooks.yaml (YAML in its JSON form) is a netspec command that
    takes the staged .net files, as pre-commit passes them: check fails on a broken spec and
    passes a good one; fmt rewrites a spec into its layout."""
    import json
    import re

    text = (Path(__file__).resolve().parent.parent / ".pre-commit-hooks.yaml").read_text()
    hooks = {h["id"]: h for h in json.loads(re.sub(r"(?m)^#.*\n", "", text))}
    assert set(hooks) == {"netspec-check", "netspec-fmt"}
    good, bad = tmp_path / "good.net", tmp_path / "bad.net"
    good.write_text("block A {\n    input x: [N, 4]\n    Linear(2)\n}\n")
    bad.write_text("block B {\n    input x: [N, 4]\n    x + Linear(3)(x)\n}\n")
    loose = tmp_path / "loose.net"
    loose.write_text("block C {  input x: [N, 4]\n  Linear( 2 )\n}\n")

    def run(hook: str, *files) -> subprocess.CompletedProcess:
        entry = hooks[hook]["entry"].split()
        assert entry[0] == "netspec" and all(re.search(hooks[hook]["files"], str(f))
                                             for f in files)
        return subprocess.run([sys.executable, "-m", "netspec", *entry[1:], *map(str, files)],
                              capture_output=True, text=True)

    assert run("netspec-check", good).returncode == 0
    result = run("netspec-check", good, bad)
    assert result.returncode == 1 and "bad.net:3" in result.stderr
    assert run("netspec-fmt", loose).returncode == 0
    assert loose.read_text() == "block C {\n    input x: [N, 4]\n    Linear(2)\n}\n"
