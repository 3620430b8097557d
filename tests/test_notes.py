"""Notes: what a check reports about a sound spec without failing it. Sizes taken as equal on
trust (a shape rule can neither prove nor refuse that two symbolic sizes agree: the check goes
on and says so, with sizes that break it), and values computed but never used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import netspec
from netspec.dims import Sym
from netspec.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted((ROOT / "specs").glob("*.net")) + sorted((ROOT / "bench/specs").glob("*.net"))

# Two poolings down and two transposed convolutions up: the skip connections line up only
# when H and W are multiples of 4, the classic U-Net pitfall.
UNET = """\
block Down(c: int) {
    MaxPool2d(2); Conv2d(c, 3, padding=1); ReLU()
}

block UNet {
    input x: [N, 3, H, W]
    e1 = x -> Conv2d(8, 3, padding=1)
    e2 = e1 -> down1: Down(16)
    b = e2 -> down2: Down(32)
    u2 = b -> up2: ConvTranspose2d(16, 2, stride=2)
    d2 = cat(u2, e2, dim=1)
    u1 = d2 -> up1: ConvTranspose2d(8, 2, stride=2)
    return cat(u1, e1, dim=1) -> head: Conv2d(1, 1)
}
"""


def test_each_size_taken_on_trust_is_a_note_at_its_step() -> None:
    analysis = netspec.analyze(UNET)
    assert [str(d) for d in analysis.output_shape] == ["N", "1", "4*(H//4)", "4*(W//4)"]
    notes = analysis.notes
    assert [(d.kind, d.span.line, d.span.column) for d in notes] == \
        [("note", 11, 10)] * 2 + [("note", 13, 12)] * 2
    assert [d.message for d in notes] == [
        "sizes assumed equal: 2*(H//4) and H//2", "sizes assumed equal: 2*(W//4) and W//2",
        "sizes assumed equal: 4*(H//4) and H", "sizes assumed equal: 4*(W//4) and W"]
    assert notes[0].hint == ("they agree only when H % 4 is 0 or 1; with H = 2 they are 0 and "
                             "1; a concrete --input checks them exactly")
    assert notes[2].hint == ("they agree only when H is a multiple of 4; with H = 1 they are 0 "
                             "and 1; a concrete --input checks them exactly")
    assert netspec.check(UNET) == []          # notes are not errors


def test_the_note_is_right_about_torch() -> None:
    """The sizes a note names as agreeing run; the others fail in torch, as the note says,
    and a concrete input turns the note into the error."""
    model = netspec.build(UNET, input=[1, 3, 16, 16]).eval()
    assert not netspec.analyze(UNET, input=[1, 3, 16, 16]).notes
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 1, 16, 16)
        with pytest.raises(RuntimeError):
            model(torch.randn(1, 3, 18, 16))      # 18 % 4 == 2: the first cat fails
    with pytest.raises(SpecError) as info:
        netspec.analyze(UNET, input=[1, 3, 18, 16])
    (d,) = info.value.diagnostics
    assert (d.kind, d.span.line) == ("shape error", 11)
    assert "cat: tensor 1 has 9 at dim 2 where tensor 0 has 8" in d.message


def test_a_product_taken_on_trust_without_a_pattern() -> None:
    text = """
block Project {
    input x: [N, D]
    param w = randn(16, 4)
    return x @ w
}"""
    (note,) = netspec.analyze(text).notes
    assert (note.message, note.span.line) == ("sizes assumed equal: D and 16", 5)
    assert note.hint == "with D = 1 they are 1 and 16; a concrete --input checks them exactly"


def test_check_prints_the_notes_and_succeeds(tmp_path, capsys, monkeypatch) -> None:
    from netspec.cli import app

    spec = tmp_path / "unet.net"
    spec.write_text(UNET)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        app(["check", "unet.net"], prog_name="netspec")
    out, err = capsys.readouterr()
    assert info.value.code == 0
    assert out == "ok: unet.net: UNet [N, 3, H, W] -> [N, 1, 4*(H//4), 4*(W//4)]\n"
    assert err.startswith(
        "unet.net:11:10: note: sizes assumed equal: 2*(H//4) and H//2\n"
        "   11 |     d2 = cat(u2, e2, dim=1)\n"
        "      |          ^^^^^^^^^^^^^^^^^^\n"
        "   hint: they agree only when H % 4 is 0 or 1;")
    assert err.count("note:") == 4
    with pytest.raises(SystemExit) as info:
        app(["check", "unet.net", "--input", "[2, 3, 32, 32]"], prog_name="netspec")
    out, err = capsys.readouterr()
    assert (info.value.code, err) == (0, "")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_summary_prints_the_notes_apart_from_its_table(tmp_path, capsys, monkeypatch,
                                                       fmt) -> None:
    import json

    from netspec.cli import app

    (tmp_path / "unet.net").write_text(UNET)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        app(["summary", "unet.net", "--format", fmt], prog_name="netspec")
    out, err = capsys.readouterr()
    assert info.value.code == 0
    assert err.count("note: sizes assumed equal") == 4 and "sizes assumed" not in out
    if fmt == "json":
        assert json.loads(out)["rows"]


def test_the_editor_gets_the_notes() -> None:
    from netspec.lsp import analyse_document

    doc = analyse_document(UNET)
    assert [(d.kind, d.message, d.span.line, d.hint) for d in doc.diagnostics] == \
        [(d.kind, d.message, d.span.line, d.hint) for d in netspec.analyze(UNET).notes]
    assert len(doc.diagnostics) == 4


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.name)
def test_the_example_specs_have_no_notes(path: Path) -> None:
    assert netspec.analyze(path).notes == []


UNUSED = """\
block Heads {
    input x: [N, 8]
    y = x -> Linear(4)
    z = relu(x)
    t = z * 2
    w = sum(abs(z + 1))
    Linear(3)
    while sum(abs(x)) > w { x / 2 }
    return x
}
"""


def test_a_value_nothing_reads_is_a_note() -> None:
    """y and t are never read; z is read by t and w, and w by the loop's condition."""
    notes = netspec.analyze(UNUSED).notes
    assert [(d.kind, d.message, d.span.line, d.span.column) for d in notes] == [
        ("note", "the value 'y' is never used", 3, 14),
        ("note", "the value 't' is never used", 5, 9)]
    assert notes[0].hint.startswith("a step applies to the running value, not to the last "
                                    "named one")
    model = netspec.build(UNUSED)                 # a note is not an error: it builds
    assert model(torch.randn(2, 8)).shape == (2, 3)


def test_a_step_whose_result_is_dropped_is_a_note() -> None:
    text = "block B {\n    input x: [N, 8]\n    y = relu(x)\n    Linear(4)\n    return y\n}\n"
    (note,) = netspec.analyze(text).notes
    assert (note.message, note.span.line) == ("the result of this step is never used", 4)


def test_sizes_that_divide_by_zero_are_no_counterexample() -> None:
    """A size that would divide by zero (W = 1 in ``(H*W)//(W - 1)``) is skipped, not a
    crash: the first counterexample is a size an input can have."""
    from netspec.dims import counterexample, equal_residues

    H, W = Sym.symbol("H"), Sym.symbol("W")
    assert counterexample((H * W) // (W - 1), H) == {"H": 1, "W": 2}
    assert equal_residues(H // (H - 1), H, "H") is None


def test_a_block_input_taken_on_trust_is_a_note_at_the_step_that_applies_it() -> None:
    """A block that wants a square input, given [N, H, W]: H and W agree only for some
    inputs. The caller's symbols stay its own (W was once rebound to H here)."""
    text = """\
block Square {
    input x: [N, C, C]
    Flatten()
}

block Net {
    input x: [N, H, W]
    y = x -> Square
    return y + reshape(x, N, H * W)
}"""
    analysis = netspec.analyze(text)
    assert [str(d) for d in analysis.output_shape] == ["N", "H*W"]
    (note,) = analysis.notes          # no note on the reshape: H and W are still H and W
    assert (note.message, note.span.line, note.span.column) == \
        ("sizes assumed equal: W and H", 8, 14)
    assert note.notes == ("Square declares its input [N, H, H] at <string>:2:5",)
    assert note.hint == ("with H = 1, W = 2 they are 2 and 1; a concrete --input checks them "
                         "exactly")
    model = netspec.build(text, input=[2, 3, 3])
    assert model(torch.ones(2, 3, 3)).shape == (2, 9)
    with pytest.raises(SpecError, match=r"Square declares the input \[N, C, C\], \[2, 3, 3\] "
                                        r"here, but gets \[2, 3, 4\]"):
        netspec.analyze(text, input=[2, 3, 4])


def test_a_concrete_declared_size_reaches_the_block_body() -> None:
    """[N, 16] declared, [N, H] given: the body is built for 16 (its Linear infers it), and
    the note says the model holds only for H = 16."""
    text = """\
block Sixteen {
    input x: [N, 16]
    Linear(4)
}

block Net {
    input x: [N, H]
    Sixteen
}"""
    analysis = netspec.analyze(text)
    assert [str(d) for d in analysis.output_shape] == ["N", "4"]
    (note,) = analysis.notes
    assert (note.message, note.span.line) == ("sizes assumed equal: H and 16", 8)
    model = netspec.build(text, block="Sixteen")
    assert model[0].in_features == 16


def test_a_stated_size_on_a_symbolic_dim_is_used_and_noted() -> None:
    """``in_features=16`` where the input's last dim is H: before, the error asked the user
    to state in_features, which they had."""
    text = """\
block Net {
    input x: [N, H]
    Linear(8, in_features=16)
    ReLU()
}"""
    analysis = netspec.analyze(text)
    assert [str(d) for d in analysis.output_shape] == ["N", "8"]
    (note,) = analysis.notes
    assert (note.message, note.span.line) == ("sizes assumed equal: H and 16", 3)
    model = netspec.build(text)
    assert model[0].in_features == 16
    assert model(torch.ones(3, 16)).shape == (3, 8)


def test_an_expect_taken_on_trust_is_a_note_at_the_expect() -> None:
    text = """\
block Net {
    input x: [N, D]
    expect [N, 32]
    ReLU()
}"""
    (note,) = netspec.analyze(text).notes
    assert (note.message, note.span.line, note.span.column) == \
        ("sizes assumed equal: D and 32", 3, 5)
    with pytest.raises(SpecError, match=r"expected \[2, 32\], but the value here is \[2, 31\]"):
        netspec.analyze(text, input=[2, 31])
    assert not netspec.analyze(text, input=[2, 32]).notes


@pytest.mark.parametrize("layer", ["Softmax", "LogSoftmax", "Softmin"])
@pytest.mark.parametrize("shape", [(7,), (2, 5), (2, 3, 5), (2, 3, 4, 5)])
def test_a_softmax_without_dim_is_a_note_that_names_torch_s_choice(layer, shape) -> None:
    """The dim the note names is the one torch's layer picks (the batch dim of a 3-D input)."""
    text = f"block B {{\n    input x: {list(shape)}\n    {layer}()\n}}\n"
    (note,) = netspec.analyze(text).notes
    dim = int(note.message.split("picks dim ")[1].split()[0])
    assert (note.kind, note.span.line, note.span.column) == ("note", 3, 5)
    assert note.message.startswith(f"{layer}() without dim")
    model = netspec.build(text)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        got = model(x)
    assert torch.equal(got, getattr(torch.nn, layer)(dim=dim)(x))
    assert f"{layer}(dim=" in note.hint
    assert netspec.analyze(text.replace(f"{layer}()", f"{layer}(dim=-1)")).notes == []


def test_a_softmax_without_dim_in_a_repeated_block_is_noted_once() -> None:
    text = ("block Head {\n    input x: [N, T, 8]\n    Softmax()\n}\n"
            "block Net {\n    input x: [N, T, 8]\n    repeat 3 { Head() }\n}\n")
    notes = netspec.analyze(text).notes
    assert [(n.message.split(":")[0], n.span.line) for n in notes] == [("Softmax() without dim", 3)]
