"""``netspec.emit_python``: standalone PyTorch source that rebuilds what ``netspec.build`` builds.

Every spec in specs/ (default entry, declared input, symbolic dims = 2), every ```netspec example
of docs/language.md and a few sources below are turned into Python and checked against the
model netspec builds: only torch and the standard library imported, the same state_dict keys in
the same order with the same shapes and dtypes, bit-identical outputs in eval mode after loading
netspec's weights, the same module tree (names, class names up to a ``_2`` suffix, leaf reprs),
and the same sharing: a ``tie`` is one Parameter, a ``let`` module one object.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import netspec
from netspec.dims import Sym
from netspec.emit_python import WIDTH, python_source

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.net"))
LANGUAGE = ROOT / "docs" / "language.md"
ALLOWED_IMPORTS = {"torch", "collections", "typing", "__future__"}


# ---- helpers -----------------------------------------------------------------------------------

def generate(analysis) -> tuple[str, nn.Module]:
    """The source for ``analysis`` and a model built from it in a fresh namespace."""
    source = python_source(analysis)
    namespace: dict = {"__name__": "generated"}
    exec(compile(source, "<generated>", "exec"), namespace)
    return source, namespace["build"]()


def sample_input(analysis, integers_below: int | None = None) -> torch.Tensor:
    shape = tuple(2 if isinstance(d, Sym) else d for d in analysis.ir.in_shape)
    generator = torch.Generator().manual_seed(1)
    if integers_below is not None:
        return torch.randint(0, integers_below, shape, generator=generator)
    return torch.randn(shape, generator=generator)


def imported_modules(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add((node.module or "").split(".")[0])
    return found


def same_class_name(ours: str, theirs: str) -> bool:
    """``BasicBlock_2`` stands for a second structure of netspec's ``BasicBlock``."""
    return ours == theirs or re.fullmatch(re.escape(theirs) + r"_\d+", ours) is not None


def without_suffixes(text: str) -> str:
    return re.sub(r"\b([A-Za-z_]\w*?)_\d+\(", r"\1(", text)


def sharing(named) -> set[frozenset[str]]:
    """Names grouped by the object they name."""
    groups: dict[int, set[str]] = {}
    for name, obj in named:
        groups.setdefault(id(obj), set()).add(name)
    return {frozenset(g) for g in groups.values()}


def assert_equivalent(source: str, ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    assert imported_modules(source) <= ALLOWED_IMPORTS, imported_modules(source)
    assert "netspec" not in re.sub(r"^#.*$", "", source, flags=re.M)

    # state_dict: keys in order, shapes, dtypes
    mine, want = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(want)
    assert [(t.shape, t.dtype) for t in mine.values()] == [(t.shape, t.dtype)
                                                           for t in want.values()]

    # module tree, as print(model) shows it
    got = list(ours.named_modules(remove_duplicate=False))
    expected = list(theirs.named_modules(remove_duplicate=False))
    assert [n for n, _ in got] == [n for n, _ in expected]
    for (name, a), (_, b) in zip(got, expected):
        assert same_class_name(type(a).__name__, type(b).__name__), name
        if not list(a.children()):
            assert repr(a) == repr(b), name
    assert without_suffixes(str(ours)) == without_suffixes(str(theirs))

    # ties and let modules: the same objects under the same names
    assert sharing(ours.named_parameters(remove_duplicate=False)) == \
        sharing(theirs.named_parameters(remove_duplicate=False))
    assert sharing(ours.named_modules(remove_duplicate=False)) == \
        sharing(theirs.named_modules(remove_duplicate=False))
    assert sharing(ours.named_buffers(remove_duplicate=False)) == \
        sharing(theirs.named_buffers(remove_duplicate=False))

    # netspec's weights give the same outputs, bit for bit
    result = ours.load_state_dict(theirs.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        got_out, want_out = ours(x.clone()), theirs(x.clone())
    assert got_out.shape == want_out.shape
    assert torch.equal(got_out, want_out)
    # sharing survives loading
    assert sharing(ours.named_parameters(remove_duplicate=False)) == \
        sharing(theirs.named_parameters(remove_duplicate=False))


def check(spec, *, integers_below: int | None = None, **options) -> str:
    analysis = netspec.analyze(spec, **options)
    source, ours = generate(analysis)
    theirs = netspec.build(spec, **options)
    assert_equivalent(source, ours, theirs, sample_input(analysis, integers_below))
    return source


# ---- every spec --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec(path: Path) -> None:
    check(path)


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_as_a_module_file(path: Path, tmp_path: Path) -> None:
    analysis = netspec.analyze(path)
    file = tmp_path / f"generated_{path.stem}.py"
    file.write_text(python_source(analysis))
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = module
    try:
        spec.loader.exec_module(module)
        ours, theirs = module.build(), netspec.build(path)
        assert type(ours).__module__ == file.stem
        assert_equivalent(file.read_text(), ours, theirs, sample_input(analysis))
    finally:
        del sys.modules[file.stem]


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_source_is_tidy(path: Path) -> None:
    analysis = netspec.analyze(path)
    source = python_source(analysis)
    assert source == python_source(netspec.analyze(path))          # deterministic
    long = [line for line in source.splitlines() if len(line) > WIDTH]
    assert not long
    assert source.startswith(f"# Generated by netspec {netspec.__version__} from ")
    assert path.name in source.splitlines()[0]
    assert f"# Block: {analysis.ir.cls_name}" in source
    compile(source, "<generated>", "exec")


# ---- how the source reads ----------------------------------------------------------------------

def test_resnet_shares_classes_between_instances_of_one_structure() -> None:
    source, model = generate(netspec.analyze(ROOT / "specs" / "resnet.net"))
    assert type(model.layer1[0]) is type(model.layer2[1]) is type(model.layer4[1])
    assert type(model.layer2[0]) is type(model.layer3[0]) is not type(model.layer1[0])
    names = {type(m).__name__ for m in model.modules()}
    assert {"BasicBlock", "BasicBlock_2", "Stage", "Stage_2", "ResNet18"} <= names
    assert sum(1 for n in names if n.startswith("BasicBlock")) == 2
    assert "class BasicBlock(nn.Module):\n    def __init__(self, channels: int):" in source
    assert "self.layer3 = Stage_2(128, 256)" in source
    assert "nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)" in source
    assert "self.fc = nn.Linear(512, 1000)" in source
    assert "self.avgpool = nn.AdaptiveAvgPool2d((1, 1))" in source


def test_layers_read_like_hand_written_code() -> None:
    source = check(ROOT / "specs" / "mlp.net")
    assert "('hidden', nn.Linear(784, 256))" in source
    assert "class MLP(nn.Sequential):" in source
    assert "from collections import OrderedDict" in source
    source = check(ROOT / "specs" / "lenet.net")
    assert "nn.Conv2d(1, 6, kernel_size=5, padding=2)" in source
    assert "nn.AvgPool2d(kernel_size=2, stride=2)" in source


def test_tensors_keep_their_spec_expressions() -> None:
    source = check(ROOT / "specs" / "fixed_hidden_mlp.net")
    assert "self.register_buffer('rand_weight', torch.rand(20, 20))" in source
    assert "self.linear = nn.Linear(20, 20)" in source
    source = check(ROOT / "specs" / "my_linear.net")
    assert "def __init__(self, in_units: int, units: int):" in source
    assert "self.weight = nn.Parameter(torch.randn(in_units, units))" in source
    assert "MyLinear(64, 8), MyLinear(8, 1)" in source


def test_let_modules_are_made_once() -> None:
    source = check(ROOT / "specs" / "tied.net")
    assert source.count("nn.Linear(8, 8)") == 1
    _, model = generate(netspec.analyze(ROOT / "specs" / "tied.net"))
    assert model[2] is model[4]


def test_no_ordered_dict_import_when_unused() -> None:
    source = python_source(netspec.analyze(ROOT / "specs" / "tied.net"))
    assert "OrderedDict" not in source
    assert "import torch.nn.functional as F" not in source


# ---- features no spec file has -----------------------------------------------------------------

EXTRA = {
    "tie_generated": """
block TinyLM(vocab: int = 50, dim: int = 16) {
    input tokens: [N, T]
    embed: Embedding(vocab, dim)
    head: Linear(vocab, bias=false)
    tie head.weight = embed.weight
}""",
    "tie_chain": """
block T {
    input x: [N, 4]
    a: Linear(4)
    b: Linear(4)
    tie b.weight = a.weight
}""",
    "let_in_nested_blocks": """
block A {
    input x: [N, 4]
    let s = Linear(4)
    inner: { s; relu(x); s }
    relu(x)
    inner2: { s; Tanh() }
}""",
    "let_only_in_nested_chain": """
block A {
    input x: [N, 4]
    let s = Linear(4)
    inner: { s; ReLU() }
    inner2: { s; Tanh() }
}""",
    "let_block_and_named_use": """
block Pair { Linear(6); ReLU() }
block A {
    input x: [N, 6]
    let p = Pair
    p
    h: p
    Linear(2)
}""",
    "let_inside_nested_chains": """
block A {
    input x: [N, 4]
    let t = { Linear(4); Tanh() }
    inner: { let s = { t; Linear(4) }; s; t; s; t }
    relu(x)
    more: { let u = Linear(4); u; ReLU(); u }
}""",
    "let_inside_nested_chain_of_a_chain": """
block A {
    input x: [N, 4]
    let t = { Linear(4); Tanh() }
    inner: { let s = { t; Linear(4) }; s; t; s; t }
    Linear(2)
}""",
    "tensor_factories": """
block B(k: int = 3) {
    input x: [N, 4]
    const c = arange(4) * 0.5 + full(4, value=2)
    const d = rand(4) > 0.5
    param p = [randn(4, 4), zeros(4, k)]
    const e = dict(a=eye(4), b=linspace(0, 1, 4))
    param q = randint(0, 10, 4, 4)
    const r = arange(1, 9, 2)
    const s = ones(4) * full(4, value=true)
    where(d, x, 0.0) * c + x @ p[0] + mean(e["a"], dim=0) + mean(q) + r + s + e["b"]
}""",
    "instances_with_different_sizes": """
block Mlp(width: int) {
    input x: [N, D]
    Linear(width); ReLU(); Dropout(0.1)
    Linear(D)
}
block Net {
    input x: [N, 8]
    a: Mlp(16)
    b: Mlp(32)
    c: Mlp(32)
    d: { Linear(8); Mlp(4) }
}""",
    "layer_defaults_vary": """
block Head(p: float = 0.5, bias: bool = true) { Dropout(p); Linear(4, bias=bias) }
block Net {
    input x: [N, 4]
    Head()
    Head(0.0, false)
    Head(0.2)
}""",
    "awkward_names": """
block lambda_ {
    input x: [N, 4]
    repeat 2 as "block {i}" { Linear(4) }
    class_: Linear(4)
}
block Net {
    input x: [N, 4]
    param lam = randn(4)
    y = x -> m: lambda_
    z = x -> n: { Linear(4); Tanh() }
    return y * lam + z
}""",
    "long_expressions": """
block Wide {
    input features_in: [N, 32]
    h = features_in -> trunk_module_with_a_long_name: { Linear(64); ReLU() }
    a = h -> first_head_with_a_long_name: Linear(8)
    b = h -> second_head_with_a_long_name: Linear(8)
    return cat(a, b, softmax(a, dim=1) * b, log_softmax(b, dim=1) - a, tanh(a) + sigmoid(b), dim=1)
}""",
}


OPTIONS = {"tie_generated": {"input": [2, 5], "integers_below": 50}}


def check_extra(name: str) -> str:
    return check(EXTRA[name], **OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", list(EXTRA))
def test_extra_source(name: str) -> None:
    source = check_extra(name)
    assert not [line for line in source.splitlines() if len(line) > WIDTH]


def test_ties_are_assignments() -> None:
    source = check_extra("tie_generated")
    assert "self.head.weight = self.embed.weight" in source
    _, model = generate(netspec.analyze(EXTRA["tie_generated"], input=[2, 5]))
    assert model.head.weight is model.embed.weight
    assert len(list(model.parameters())) == 1
    source = check_extra("tie_chain")
    assert "self.b.weight = self.a.weight" in source


def test_let_modules_are_handed_to_nested_blocks() -> None:
    source = check_extra("let_in_nested_blocks")
    assert "def __init__(self, s: nn.Module):" in source
    assert "self.inner = Inner(self.s)" in source      # named by its label
    assert source.count("nn.Linear(4, 4)") == 1
    _, model = generate(netspec.analyze(EXTRA["let_in_nested_blocks"]))
    assert model.s is model.inner.s is model.inner2[0]
    source = check_extra("let_only_in_nested_chain")
    assert "s = nn.Linear(4, 4)" in source and source.count("nn.Linear(4, 4)") == 1
    source = check_extra("let_inside_nested_chains")
    assert "s = nn.Sequential(self.t, nn.Linear(4, 4))" in source
    assert source.index("self.t = ") < source.index("s = nn.Sequential(self.t")


def test_block_values_become_constructor_arguments() -> None:
    source = check_extra("instances_with_different_sizes")
    assert "class Mlp(nn.Sequential):\n    def __init__(self, width: int):" in source
    assert "('b', Mlp(32))" in source and "('a', Mlp(16))" in source
    assert "nn.Dropout(0.1)" in source
    assert "class Mlp_2" not in source
    source = check_extra("layer_defaults_vary")
    assert "def __init__(self, p: float, bias: bool):" in source
    assert "Head(0.0, False)" in source


def test_tensor_factories_keep_netspec_dtypes() -> None:
    source = check_extra("tensor_factories")
    assert "torch.full((4,), 2.0)" in source                      # an int fill, as a float
    assert "torch.rand(4) > 0.5" in source                       # a boolean mask stays one
    assert "(torch.rand(4) > 0.5).to(" not in source
    assert "torch.arange(1, 9, 2, dtype=torch.get_default_dtype())" in source
    assert "BufferDict({'a': torch.eye(4), 'b': torch.linspace(0, 1, 4)})" in source
    assert "class BufferDict(nn.Module):" in source and "class BufferList" not in source


def test_forward_loses_only_redundant_parentheses() -> None:
    source = check(ROOT / "specs" / "fixed_hidden_mlp.net")
    assert "x = torch.relu_(x @ self._buffers['rand_weight'] + 1)  # [N, 20]" in source
    source = check_extra("long_expressions")
    assert "        return torch.cat(\n            (\n                a,\n" in source


def test_header_names_spec_block_arguments_and_init_rules() -> None:
    source = python_source(netspec.analyze(ROOT / "specs" / "mlp.net", classes=5))
    assert "# Block: MLP(classes=5)\n# Input: [N, 784]\n" in source
    assert "nn.Linear(256, 5)" in source
    ruled = "init { Linear.weight: zeros() }\n" + EXTRA["tie_chain"]
    assert "init rules are not reproduced" in python_source(netspec.analyze(ruled))


# ---- the documentation's examples --------------------------------------------------------------

def _examples() -> list:
    text = LANGUAGE.read_text()
    found = []
    for m in re.finditer(r"^```netspec\n(.*?)^```", text, re.M | re.S):
        body = m.group(1)
        line = text.count("\n", 0, m.start()) + 1
        found.append(pytest.param(body, id=f"language.md:{line}"))
    return found


@pytest.mark.parametrize("source", _examples())
def test_docs_example(source: str) -> None:
    directives = dict(re.findall(r"^\s*# (input|block|input values): (.+?)\s*$", source, re.M))
    options = {k: directives[k] for k in ("input", "block") if k in directives}
    ids = re.fullmatch(r"integers below (\d+)", directives.get("input values", ""))
    check(source, integers_below=int(ids.group(1)) if ids else None, **options)


def test_transformer_layers_leave_torch_s_default_activation_out() -> None:
    """activation="relu" is torch's default F.relu: written only when it is "gelu"."""
    spec = """block T {
    input x: [N, 5, 8]
    enc: TransformerEncoderLayer(nhead=2, dim_feedforward=16, batch_first=true)
    let dec = TransformerDecoderLayer(nhead=2, dim_feedforward=16, activation="gelu")
    memory = x -> Linear(8)
    dec(x, memory)
}"""
    source = check(spec)
    assert "nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)" in source
    assert "nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, activation='gelu')" in source


def test_lists_of_positions_are_written_as_lists() -> None:
    source = check("""
block Pick {
    input x: [N, 3, 8]
    x[:, [2, 0], -1] + x[:, [1, 1], 0]
}
""", input=[2, 3, 8])
    assert "x[:, [2, 0], -1] + x[:, [1, 1], 0]" in source
