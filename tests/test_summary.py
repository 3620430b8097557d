"""``netspec.summary``: parameter counts, sharing, constants, MACs, depth and output formats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.table import Table

import netspec
from netspec.errors import NetspecError
from netspec.summary import (FORMATS, init_rows, render_summary, summarize, summary_rows,
                             summary_table)
from netspec.tensors import static_model

SPECS = Path(__file__).resolve().parent.parent / "specs"
SPEC_FILES = sorted(SPECS.glob("*.net"))
BENCH_FILES = sorted((SPECS.parent / "bench" / "specs").glob("*.net"))

TIE = """
block TinyLM(vocab: int = 50, dim: int = 16) {
    input tokens: [N, T]
    embed: Embedding(vocab, dim)
    head: Linear(vocab, bias=false)
    tie head.weight = embed.weight
}"""

LET_NESTED = """
block A {
    input x: [N, 4]
    let s = Linear(4)
    inner: { s; relu(x); s }
    relu(x)
    inner2: { s; Tanh() }
}"""


def by_path(rows: list[dict]) -> dict[str, dict]:
    return {r["path"]: r for r in rows}


def _entries(spec: Path) -> list[str | None]:
    """The blocks of a spec file that build without arguments."""
    out = []
    for block in re.findall(r"^block (\w+)", spec.read_text(), re.M):
        try:
            netspec.analyze(spec, block)
        except netspec.SpecError:
            continue
        out.append(block)
    return out


CASES = [(spec, block) for spec in SPEC_FILES for block in _entries(spec)]
BENCH_CASES = [(spec, block) for spec in BENCH_FILES for block in _entries(spec)]


# ---- the tensor tables against the model built on the meta device ------------------------------

@pytest.mark.parametrize("spec,block", CASES + BENCH_CASES,
                         ids=[f"{s.stem}-{b}" for s, b in CASES + BENCH_CASES])
def test_static_summary_equals_the_meta_build(spec, block):
    """Counted from the tensor tables (no torch) or read off a meta build: the same summary."""
    analysis = netspec.analyze(spec, block)
    static_model(analysis.ir)       # every layer has a table: the summary needs no build
    for depth in (-1, 1):
        assert summarize(analysis, depth) == summarize(analysis, depth, build=True)
        for fmt in FORMATS:
            assert render_summary(analysis, depth, fmt) == \
                render_summary(analysis, depth, fmt, build=True)
    assert init_rows(analysis) == init_rows(analysis, build=True)


# ---- totals against the real model --------------------------------------------------------------

@pytest.mark.parametrize("spec,block", CASES, ids=[f"{s.stem}-{b}" for s, b in CASES])
def test_totals_equal_the_built_model(spec, block):
    analysis = netspec.analyze(spec, block)
    model = netspec.build(spec, block, seed=0)
    totals = summarize(analysis)["totals"]
    assert totals["params"] == sum(p.numel() for p in model.parameters())
    assert totals["trainable"] + totals["shared"] + totals["frozen"] == totals["params"]
    assert totals["const"] + totals["buffers"] == sum(b.numel() for b in model.buffers())
    rows = summary_rows(analysis)
    root = rows[0]
    assert root["level"] == 0 and root["params"] == totals["params"]
    # every tensor is counted in exactly one row: the leaves add up to the total
    leaves = [r for r in rows if r["kind"] in ("layer", "param", "const")]
    assert sum(r["params"] for r in leaves) == totals["params"]
    assert sum(r["const"] + r["buffers"] for r in leaves) == totals["const"] + totals["buffers"]


@pytest.mark.parametrize("src", [TIE, LET_NESTED], ids=["tie", "let_nested"])
def test_totals_with_ties_and_nested_lets(src):
    analysis = netspec.analyze(src)
    model = netspec.build(src, seed=0)
    totals = summarize(analysis)["totals"]
    assert totals["params"] == sum(p.numel() for p in model.parameters())
    assert totals["shared"] > 0


# ---- sharing ------------------------------------------------------------------------------------

def test_a_let_module_is_counted_once_and_marked_shared():
    rows = by_path(summary_rows(netspec.analyze(SPECS / "tied.net", "Tied")))
    first, again = rows["2"], rows["4"]
    assert first["layer"] == again["layer"] == "Linear"
    assert first["shared"] == 8 * 8 + 8 and first["trainable"] == 0
    assert "shared module, used 2 times" in first["note"] and "4" in first["note"]
    assert again["params"] == 0 and "same module as 2" in again["note"]
    assert rows["(model)"]["params"] == (20 * 8 + 8) + (8 * 8 + 8) + (8 + 1)
    assert rows["(model)"]["shared"] == 72
    assert first["macs"] == again["macs"] == 64       # MACs are counted at every use


def test_a_tied_parameter_is_counted_once_where_it_is_first_used():
    rows = by_path(summary_rows(netspec.analyze(TIE)))
    assert rows["embed"]["shared"] == 50 * 16 and "shared with head.weight" in rows["embed"]["note"]
    assert rows["head"]["params"] == 0
    assert "weight = embed.weight" in rows["head"]["note"]
    assert rows["(model)"]["params"] == 50 * 16


def test_a_let_used_in_nested_blocks_is_counted_once():
    rows = summary_rows(netspec.analyze(LET_NESTED))
    linear = [r for r in rows if r["layer"] == "Linear"]
    assert len(linear) == 3                                   # three uses
    assert sum(r["params"] for r in linear) == 4 * 4 + 4     # one set of weights
    assert sum(1 for r in linear if "same module" in r["note"]) == 2


# ---- constants and buffers ----------------------------------------------------------------------

def test_constants_are_counted_apart_from_trainable_parameters():
    data = summarize(netspec.analyze(SPECS / "fixed_hidden_mlp.net"))
    rows, totals = by_path(data["rows"]), data["totals"]
    const = rows["rand_weight"]
    assert const["kind"] == "const" and const["const"] == 400 and const["params"] == 0
    assert const["output"] == "[20, 20]"
    assert totals["const"] == 400 and totals["buffers"] == 0
    assert totals["params"] == 420 and totals["shared"] == 420   # the Linear, used twice


def test_layer_buffers_are_not_constants():
    rows = by_path(summary_rows(netspec.analyze(SPECS / "resnet.net")))
    bn = rows["bn1"]
    assert bn["trainable"] == 128 and bn["buffers"] == 64 + 64 + 1 and bn["const"] == 0


def test_params_of_a_block_get_their_own_row():
    rows = by_path(summary_rows(netspec.analyze(SPECS / "param_list.net")))
    assert rows["params"]["kind"] == "param" and rows["params"]["trainable"] == 3 * 16 + 4
    rows = by_path(summary_rows(netspec.analyze(SPECS / "my_linear.net")))
    assert rows["0.weight"]["trainable"] == 64 * 8 and rows["0.bias"]["trainable"] == 8
    assert rows["0"]["macs"] == 64 * 8                     # x @ weight: a matmul


# ---- MACs ---------------------------------------------------------------------------------------

def test_linear_macs():
    rows = by_path(summary_rows(netspec.analyze(SPECS / "mlp.net")))
    assert rows["hidden"]["macs"] == 784 * 256
    assert rows["act"]["macs"] == 0
    assert rows["output"]["macs"] == 256 * 10
    assert rows["(model)"]["macs"] == 784 * 256 + 256 * 10


def test_linear_macs_count_every_row_but_the_batch():
    src = "block B { input x: [N, 7, 16]; Linear(32) }"
    assert summarize(netspec.analyze(src))["totals"]["macs"] == 7 * 16 * 32


def test_conv2d_macs():
    rows = by_path(summary_rows(netspec.analyze(SPECS / "resnet.net")))
    # conv1: [N, 3, 64, 64] -> [N, 64, 32, 32], 7x7 kernels over 3 channels
    assert rows["conv1"]["macs"] == 64 * 32 * 32 * 3 * 7 * 7
    # layer2.0.downsample.0: a 1x1 convolution 64 -> 128 on 8x8
    assert rows["layer2.0.downsample.0"]["macs"] == 128 * 8 * 8 * 64
    assert rows["maxpool"]["macs"] == 0 and rows["relu"]["macs"] == 0


def test_grouped_and_transposed_convolutions():
    src = """
block C {
    input x: [N, 8, 10, 10]
    a: Conv2d(16, kernel_size=3, groups=4)
    b: ConvTranspose2d(4, kernel_size=2, stride=2)
}"""
    rows = by_path(summary_rows(netspec.analyze(src)))
    assert rows["a"]["output"] == "[N, 16, 8, 8]"
    assert rows["a"]["macs"] == 16 * 8 * 8 * (8 // 4) * 3 * 3
    assert rows["b"]["macs"] == (16 * 8 * 8) * 4 * 2 * 2      # per input element


def test_lenet_total_macs_by_hand():
    conv1 = 6 * 28 * 28 * 1 * 5 * 5          # padding 2 keeps 28x28
    conv2 = 16 * 10 * 10 * 6 * 5 * 5
    fc = 400 * 120 + 120 * 84 + 84 * 10
    data = summarize(netspec.analyze(SPECS / "lenet.net"))
    assert data["totals"]["macs"] == conv1 + conv2 + fc == 416_520
    assert data["macs_per"] == "sample" and data["totals"]["macs_complete"]
    batch = summarize(netspec.analyze(SPECS / "lenet.net", input="[2, 1, 28, 28]"))
    assert batch["totals"]["macs"] == 2 * 416_520 and batch["macs_per"] == "input"


def test_macs_with_other_symbols_stay_symbolic():
    data = summarize(netspec.analyze(TIE))
    assert data["totals"]["macs"] == "800*T"           # head: 16 * 50 per token


# ---- depth --------------------------------------------------------------------------------------

def test_depth_one_rolls_deeper_rows_up():
    analysis = netspec.analyze(SPECS / "resnet.net")
    full, top = summarize(analysis), summarize(analysis, depth=1)
    assert max(r["level"] for r in top["rows"]) == 1
    assert "layer1" in by_path(top["rows"]) and "layer1.0" not in by_path(top["rows"])
    assert top["totals"] == full["totals"]
    layer1 = by_path(full["rows"])["layer1"]
    assert by_path(top["rows"])["layer1"] == layer1
    inside = [r for r in full["rows"] if r["path"].startswith("layer1.") and r["kind"] == "layer"]
    assert layer1["params"] == sum(r["params"] for r in inside)
    assert layer1["macs"] == sum(r["macs"] for r in inside)
    assert sum(r["params"] for r in top["rows"] if r["level"] == 1) == full["totals"]["params"]
    assert [r["path"] for r in summarize(analysis, depth=0)["rows"]] == ["(model)"]


# ---- formats ------------------------------------------------------------------------------------

def test_json_parses():
    text = render_summary(netspec.analyze(SPECS / "tied.net", "Tied"), fmt="json")
    data = json.loads(text)
    assert data["block"] == "Tied" and data["input"] == "[N, 20]"
    assert data["totals"]["params"] == 249 and data["totals"]["macs"] == 296
    assert {"path", "layer", "output", "trainable", "shared", "const", "buffers", "macs",
            "note"} <= set(data["rows"][0])


def test_markdown_has_a_header_row():
    text = render_summary(netspec.analyze(SPECS / "fixed_hidden_mlp.net"), fmt="markdown")
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| module |"))
    assert lines[header].split("|")[1:4] == [" module ", " layer ", " output shape "]
    assert re.fullmatch(r"\|(-{3}:?\|){3}(-{3}:?\|)+", lines[header + 1])
    assert "| `rand_weight` | const | `[20, 20]` |" in text
    assert "const" in lines[header] and "shared" in lines[header]
    assert "420 parameters" in text and "400 constant values" in text


def test_text_is_a_rich_table_with_totals():
    analysis = netspec.analyze(SPECS / "resnet.net")
    text = render_summary(analysis, depth=1, width=200)
    assert "ResNet18 [N, 3, 64, 64] -> [N, 1000]" in text
    assert "11,689,512 parameters" in text and "9,620 buffer values" in text
    assert "MACs per sample" in text and "MACs/sample" in text
    assert "layer4" in text and "conv2" not in text
    assert isinstance(summary_table(analysis, depth=1), Table)


def test_an_unknown_format_is_refused():
    with pytest.raises(NetspecError, match="text, markdown, json"):
        render_summary(netspec.analyze(SPECS / "mlp.net"), fmt="yaml")


def test_cli_summary_into_a_pipe_keeps_each_row_on_one_line(capsys, monkeypatch):
    """Output that is not a terminal is printed at the table's width, however narrow the
    console says it is: every module's row holds its whole shape, as summarize computes it."""
    from netspec.cli import app

    monkeypatch.setenv("COLUMNS", "40")
    with pytest.raises(SystemExit) as info:
        app(["summary", str(SPECS / "resnet.net"), "--depth", "1"], prog_name="netspec")
    out = capsys.readouterr().out
    assert info.value.code == 0
    rows = {r["path"]: r for r in summarize(netspec.analyze(SPECS / "resnet.net"), 1)["rows"]
            if r["path"]}
    lines = {cells[1]: cells for line in out.splitlines()
             if len(cells := [c.strip() for c in line.split("│")]) > 3}
    assert set(rows) <= set(lines)
    for path, row in rows.items():
        assert lines[path][2] == row["layer"] and lines[path][3] == row["output"], path


LOWER_CASE_DIMS = """
block Tagged {
    input x: [batch, 4]
    fc: Linear(8)
    ReLU()
}
"""


def test_shapes_that_look_like_rich_markup_are_printed_as_they_are(tmp_path, capsys,
                                                                   monkeypatch):
    """``[batch, 8]`` is what rich markup's style tags look like; the summary, its title and
    the init table print it as text, in the CLI and in ``render_summary``."""
    from netspec.cli import app

    text = render_summary(netspec.analyze(LOWER_CASE_DIMS))
    assert "Tagged [batch, 4] -> [batch, 8]" in text
    assert text.count("[batch, 8]") == 4      # the title, the model, fc and the ReLU
    path = tmp_path / "[tagged].net"                  # a file name in brackets, too
    path.write_text(LOWER_CASE_DIMS)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        app(["summary", str(path), "--init"], prog_name="netspec")
    out = capsys.readouterr().out
    assert info.value.code == 0
    rows = [line for line in out.splitlines() if "│" in line]
    assert any("fc" in r and "Linear" in r and "[batch, 8]" in r for r in rows), out
    assert "[tagged].net: Tagged [batch, 4] -> [batch, 8]" in out
    assert any("fc.weight" in r and "Linear" in r for r in rows), out
