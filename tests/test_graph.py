"""``netspec.graph``: pictures of specs (Graphviz source always, SVG/PNG when ``dot`` exists)."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest

import netspec
from netspec.errors import NetspecError

pytest.importorskip("graphviz", reason="the graphviz Python package is not installed")

from netspec.graph import render, to_dot  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"
SPEC_FILES = sorted(SPECS.glob("*.net"))

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="the Graphviz program `dot` is not installed (e.g. apt-get install graphviz)")


def svg_texts(path: Path) -> list[str]:
    """The text elements of an SVG file, unescaped."""
    return [html.unescape(t) for t in
            re.findall(r"<text\b[^>]*>(.*?)</text>", path.read_text(encoding="utf-8"), re.S)]


def labels(dot: str, pattern: str) -> list[str]:
    """The node and cluster labels of a dot source that match ``pattern``."""
    return [m for m in re.findall(r'label="((?:[^"\\]|\\.)*)"', dot) if re.search(pattern, m)]


def _blocks(spec: Path) -> list[str]:
    return re.findall(r"^block (\w+)", spec.read_text(), re.M)


@pytest.fixture(scope="module")
def resnet():
    return netspec.analyze(SPECS / "resnet.net")


# ---- the SVG of ResNet-18 -----------------------------------------------------------------------

@needs_dot
def test_resnet_svg_has_clusters_layers_and_shapes(resnet, tmp_path):
    out = render(resnet, tmp_path / "resnet.svg")
    assert out == tmp_path / "resnet.svg"
    svg = out.read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert 'class="cluster"' in svg
    texts = svg_texts(out)
    for title in ("ResNet18(classes=1000)", "layer1: Stage(channels=64, blocks=2, stride=1)",
                  "layer2.0: BasicBlock(channels=128, stride=2)",
                  "layer2.0.downsample: Sequential"):
        assert title in texts, title
    assert "conv1: Conv2d 3→64 k7 s2 p3" in texts
    assert "9,408 params" in texts
    assert "fc: Linear 512→1000" in texts
    assert "[N, 64, 16, 16]" in texts           # an edge label: the shape after maxpool
    assert "[N, 1000]" in texts
    assert "add" in texts and "relu" in texts   # function nodes


@needs_dot
def test_resnet_svg_folds_identical_blocks_unless_expanded(resnet, tmp_path):
    folded = svg_texts(render(resnet, tmp_path / "folded.svg"))
    assert "×2" in folded
    assert "layer1.0–1: BasicBlock(channels=64, stride=1)" in folded
    assert "[N, 64, 16, 16] → [N, 64, 16, 16]" in folded
    assert "layer2.1: BasicBlock(channels=128, stride=1)" in folded   # differs from layer2.0

    expanded = svg_texts(render(resnet, tmp_path / "expanded.svg", expand=True))
    assert not any("×" in t for t in expanded)
    assert "layer1.0: BasicBlock(channels=64, stride=1)" in expanded
    assert "layer1.1: BasicBlock(channels=64, stride=1)" in expanded


def test_folding_draws_a_repeated_block_once(resnet):
    folded, expanded = to_dot(resnet), to_dot(resnet, expand=True)
    assert len(labels(folded, r"^conv1: Conv2d 64→64 k3 p1")) == 1
    assert len(labels(expanded, r"^conv1: Conv2d 64→64 k3 p1")) == 2
    assert "×2" in folded and "×" not in expanded


def test_a_repeated_stack_of_layers_is_folded_with_its_count():
    src = """
block Deep {
    input x: [N, C, 20]
    repeat 200 { Linear(64); ReLU() }
    repeat 3 { MaxPool1d(2) }
}"""
    analysis = netspec.analyze(src, input="[2, 4, 20]")
    dot = to_dot(analysis)
    # the first Linear is 20→64, the other 199 are 64→64: one unit drawn, "×199"
    assert len(labels(dot, r"Linear 20→64")) == 1
    assert len(labels(dot, r"Linear 64→64")) == 1
    assert labels(dot, r"×199")
    pool = labels(dot, r"MaxPool1d k2")
    assert len(pool) == 1 and "×3" in pool[0] and "[2, 4, 64] → [2, 4, 8]" in pool[0]
    expanded = to_dot(analysis, expand=True)
    assert len(labels(expanded, r"Linear 64→64")) == 199
    assert len(labels(expanded, r"MaxPool1d k2")) == 3
    assert "×" not in expanded


def test_a_subscript_is_drawn_as_written():
    dot = to_dot(netspec.analyze("block S { input x: [N, 6, 16]; x[:, none, 1:, ::2] }"))
    assert labels(dot, r"^\[:, none, 1:, ::2\]$")


# ---- sharing, ties and constants ----------------------------------------------------------------

def test_a_let_module_used_twice_is_marked_shared():
    dot = to_dot(netspec.analyze(SPECS / "tied.net", "Tied"))
    uses = labels(dot, r"^shared: Linear 8→8")
    assert len(uses) == 2
    assert "shared: use 1 of 2" in uses[0] and "shared: use 2 of 2" in uses[1]
    assert re.search(r'label="shared: Linear 8→8[^\n]*style="rounded,filled,dashed"', dot)
    assert 'label="same module"' in dot and "style=dotted" in dot


@needs_dot
def test_the_tied_svg_shows_the_sharing(tmp_path):
    texts = svg_texts(render(netspec.analyze(SPECS / "tied.net", "Tied"), tmp_path / "t.svg"))
    assert "shared: use 1 of 2" in texts and "shared: use 2 of 2" in texts
    assert "same module" in texts


def test_a_tie_is_noted_on_both_modules():
    src = """
block T {
    input x: [N, 4]
    a: Linear(4)
    b: Linear(4)
    tie b.weight = a.weight
}"""
    dot = to_dot(netspec.analyze(src))
    assert labels(dot, r"^b: Linear 4→4.*weight tied to a\.weight")
    assert labels(dot, r"^a: Linear 4→4.*weight tied to b\.weight")
    assert 'label=tied' in dot or 'label="tied"' in dot


def test_a_const_is_drawn_as_a_constant():
    dot = to_dot(netspec.analyze(SPECS / "fixed_hidden_mlp.net"))
    const = labels(dot, r"^const rand_weight")
    assert len(const) == 1 and "[20, 20]" in const[0]
    assert re.search(r'label="const rand_weight[^\n]*shape=cylinder', dot)
    assert labels(dot, r"^while")


def test_params_of_a_block_are_drawn_with_their_counts():
    dot = to_dot(netspec.analyze(SPECS / "param_list.net"))
    drawn = labels(dot, r"^param params\[")
    assert len(drawn) == 4
    assert any("[4, 1]" in d and "4 params" in d for d in drawn)


# ---- every spec ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.stem)
def test_every_spec_renders_to_dot(spec, tmp_path):
    analysis = netspec.analyze(spec)
    out = render(analysis, tmp_path / f"{spec.stem}.dot")
    source = out.read_text(encoding="utf-8")
    assert source.startswith("digraph")
    assert source == to_dot(analysis)
    assert render(analysis, tmp_path / f"{spec.stem}-all.dot", expand=True).exists()


@needs_dot
@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.stem)
def test_every_spec_renders_to_svg(spec, tmp_path):
    for block in _blocks(spec):
        try:
            analysis = netspec.analyze(spec, block)
        except netspec.SpecError:      # a block needing arguments or an input shape
            continue
        out = render(analysis, tmp_path / f"{block}.svg")
        assert "<svg" in out.read_text(encoding="utf-8")


@needs_dot
def test_png_and_pdf(tmp_path):
    analysis = netspec.analyze(SPECS / "lenet.net")
    assert render(analysis, tmp_path / "n.png").read_bytes().startswith(b"\x89PNG")
    assert render(analysis, tmp_path / "n.pdf").read_bytes().startswith(b"%PDF")


# ---- errors -------------------------------------------------------------------------------------

def test_without_dot_the_dot_file_is_written_with_a_hint(tmp_path, monkeypatch):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))      # no `dot` program to be found
    target = tmp_path / "net.svg"
    with pytest.raises(NetspecError) as info:
        render(netspec.analyze(SPECS / "lenet.net"), target)
    message = str(info.value)
    dot_file = tmp_path / "net.dot"
    assert dot_file.exists() and dot_file.read_text(encoding="utf-8").startswith("digraph")
    assert not target.exists()
    assert str(dot_file) in message
    assert f"dot -Tsvg {dot_file} -o {target}" in message


def test_without_dot_via_the_binding(tmp_path, monkeypatch):
    import graphviz

    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(("dot",))

    monkeypatch.setattr(graphviz.Source, "pipe", missing)
    with pytest.raises(NetspecError, match=r"dot -Tpng .*n\.dot -o .*n\.png"):
        render(netspec.analyze(SPECS / "mlp.net"), tmp_path / "n.png")
    assert (tmp_path / "n.dot").exists()


def test_an_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(NetspecError, match=r"\.svg, \.png, \.pdf or \.dot"):
        render(netspec.analyze(SPECS / "mlp.net"), tmp_path / "net.jpeg")


def test_edges_leaving_a_named_value_carry_its_name():
    analysis = netspec.analyze("""
block Skip {
    input x: [N, 8]
    e1 = Linear(16)
    u = e1 -> ReLU() -> Linear(16)
    return relu(u + e1)
}
""")
    dot = to_dot(analysis)
    edge_labels = re.findall(r'-> \w+ \[label="([^"]*)"', dot)
    # input -> e1 -> ReLU -> u; u, e1 -> add -> relu -> output
    assert edge_labels == ["[N, 8]", "e1 [N, 16]", "[N, 16]", "u [N, 16]", "e1 [N, 16]",
                           "[N, 16]", "[N, 16]"]
