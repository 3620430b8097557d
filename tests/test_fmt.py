"""``netspec.fmt``: the canonical layout of ``.net`` files.

Hand-written messy inputs with their exact expected output; then the properties: idempotence,
every comment kept, the formatted spec builds the identical model, every spec in ``specs/`` is
already formatted, and comments anywhere a comment may go survive formatting.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from pygments.token import Comment

import netspec
from netspec.dims import Sym
from netspec.errors import SpecError
from netspec.fmt import WIDTH, format_file, format_source, is_formatted, spec_files
from netspec.highlight import NetspecLexer
from netspec.parse import parse

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.net"))

# (id, messy input, exact expected output)
CASES = [
    ("subscripts-tight-slices-spaced-items", """\
block Last {
input x:[N,6,4]
y = x[ :,-1 ]
z = x[1 : , ::2,  # every other step
0:3 ]
return y+z[ 0 ]
}""", """\
block Last {
    input x: [N, 6, 4]
    y = x[:, -1]
    z = x[
        1:,
        ::2,  # every other step
        0:3,
    ]
    return y + z[0]
}
"""),
    ("ellipsis-as-an-item", """\
block Last {
input x:[N,6,4]
y = x[ ... ,-1 ]
return y[...]
}""", """\
block Last {
    input x: [N, 6, 4]
    y = x[..., -1]
    return y[...]
}
"""),
    ("spacing", """\
block  MLP ( classes:int=10 ) {
input x:[N,784]
hidden:Linear(256,in_features = 784)
act :ReLU( )
output: Linear( classes )
}""", """\
block MLP(classes: int = 10) {
    input x: [N, 784]
    hidden: Linear(256, in_features=784)
    act: ReLU()
    output: Linear(classes)
}
"""),
    ("semicolons-split-one-line-bodies-kept", """\
block Net {
    input x: [N, 20]
    net: { Linear(64);ReLU() ; }
    Linear(8); ReLU();
}
""", """\
block Net {
    input x: [N, 20]
    net: { Linear(64); ReLU() }
    Linear(8)
    ReLU()
}
"""),
    ("blank-lines", """\


block A { Linear(8); ReLU() }
block B {

    input x: [N, 4]



    A
    Linear(1)

}


""", """\
block A { Linear(8); ReLU() }

block B {
    input x: [N, 4]

    A
    Linear(1)
}
"""),
    ("comments", """\
# header comment

block MLP {   # the model
    input x: [N, 784]     # any batch size
    hidden: Linear(256) # 784 -> 256
  # the output layer
    output: Linear(10)
    # nothing after this
}
# trailer
""", """\
# header comment

block MLP {  # the model
    input x: [N, 784]    # any batch size
    hidden: Linear(256)  # 784 -> 256
    # the output layer
    output: Linear(10)
    # nothing after this
}
# trailer
"""),
    ("long-chain-and-expanded-body", """\
block BasicBlock(channels: int, stride: int = 1) {
    input x: [N, C, H, W]
    y = x -> conv1: Conv2d(channels, kernel_size=3, stride=stride, padding=1, bias=false) -> bn1: BatchNorm2d() -> relu: ReLU(inplace=true)
    shortcut = if stride != 1 or C != channels {
        x -> downsample: { Conv2d(channels, kernel_size=1, stride=stride, bias=false); BatchNorm2d() }
    }
    else { x }
    return relu(y + shortcut)
}
""", """\
block BasicBlock(channels: int, stride: int = 1) {
    input x: [N, C, H, W]
    y = x
        -> conv1: Conv2d(channels, kernel_size=3, stride=stride, padding=1, bias=false)
        -> bn1: BatchNorm2d()
        -> relu: ReLU(inplace=true)
    shortcut = if stride != 1 or C != channels {
        x -> downsample: {
            Conv2d(channels, kernel_size=1, stride=stride, bias=false)
            BatchNorm2d()
        }
    } else { x }
    return relu(y + shortcut)
}
"""),
    ("long-header-and-call", """\
block Head(width: int = 64, hidden: int = width * 4, dropout_probability: float = 0.1, act: str = "gelu") {
    input x: [N, 32]
    y = reshape(Linear(hidden, bias=true, in_features=32), N, hidden // 4, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1)
    Linear(hidden, bias=true) -> Dropout(dropout_probability) -> Linear(width) -> ReLU()
}
""", """\
block Head(
    width: int = 64,
    hidden: int = width * 4,
    dropout_probability: float = 0.1,
    act: str = "gelu",
) {
    input x: [N, 32]
    y = reshape(
        Linear(hidden, bias=true, in_features=32),
        N,
        hidden // 4,
        2,
        2,
        1,
        1,
        1,
        1,
        1,
        1,
        1,
        1,
    )
    Linear(hidden, bias=true) -> Dropout(dropout_probability) -> Linear(width) -> ReLU()
}
"""),
    ("comments-inside-calls-and-chains", """\
block Continued {
    input x: [N, 3, 32, 32]
    Conv2d(16,
           kernel_size=3,    # still the same call
           padding=1)
    y = x -> BatchNorm2d()   # normalise
          # then
          -> ReLU()
    return y + x
}
""", """\
block Continued {
    input x: [N, 3, 32, 32]
    Conv2d(
        16,
        kernel_size=3,  # still the same call
        padding=1,
    )
    y = x
        -> BatchNorm2d()  # normalise
        # then
        -> ReLU()
    return y + x
}
"""),
    ("expressions", """\
block Exprs(n: int = 2) {
    input x: [N, 20]
    const w = rand(20,20)*2-1
    param b = zeros( 20 )
    relu(x@w+b)
    x*-1+(x-1)**2
    x if n>1 and not n==3 or n<=0 else x/2
    reshape(x,N,-1)
}
""", """\
block Exprs(n: int = 2) {
    input x: [N, 20]
    const w = rand(20, 20) * 2 - 1
    param b = zeros(20)
    relu(x @ w + b)
    x * -1 + (x - 1) ** 2
    x if n > 1 and not n == 3 or n <= 0 else x / 2
    reshape(x, N, -1)
}
"""),
    ("imports-and-branch-constructs", """\
import "blocks.net"
import "more.net"


import "last.net"
block Net {
    repeat 3 as "layer {i}" {Linear(4);ReLU()}
    concat(dim=1) {a: Linear(2); b: {Linear(2);Tanh()}}
    add {Identity(); Linear(4)}
    while sum(abs(x))>1 {x/2}
}
""", """\
import "blocks.net"
import "more.net"

import "last.net"

block Net {
    repeat 3 as "layer {i}" { Linear(4); ReLU() }
    concat(dim=1) { a: Linear(2); b: { Linear(2); Tanh() } }
    add { Identity(); Linear(4) }
    while sum(abs(x)) > 1 { x / 2 }
}
"""),
    ("let-tie-init", """\
block Tied() {
    let shared=Linear(8)
    shared;shared
    tie shared . weight = other.weight
    init{Linear.weight:normal(std=0.01);"*.bias":zeros()}
}
init {
    Linear.weight in "head.*" : xavier_uniform()
}
""", """\
block Tied {
    let shared = Linear(8)
    shared
    shared
    tie shared.weight = other.weight
    init { Linear.weight: normal(std=0.01); "*.bias": zeros() }
}

init {
    Linear.weight in "head.*": xavier_uniform()
}
"""),
    ("if-else-and-empty-parens", """\
block Branches(deep: bool = false) {
    if deep { Conv2d(16, 3, padding=1) }
    else if not deep { Identity() } else { ReLU() }
    concat() { Linear(1) }
    if deep { Conv2d(16, 3, padding=1) } else { Conv2d(32, kernel_size=5, padding=2, dilation=1, bias=false) }
}
""", """\
block Branches(deep: bool = false) {
    if deep { Conv2d(16, 3, padding=1) } else if not deep { Identity() } else { ReLU() }
    concat { Linear(1) }
    if deep { Conv2d(16, 3, padding=1) } else {
        Conv2d(32, kernel_size=5, padding=2, dilation=1, bias=false)
    }
}
"""),
    ("crlf-tabs-trailing-commas", "block Numbers {\r\n\tinput x : [ N , 4 , ]\r\n\t"
     "Linear( 4 , )   ;   Dropout( 0.5 )\t# drop\r\n\tLayerNorm(4, eps=1e-5)\r\n}", """\
block Numbers {
    input x: [N, 4]
    Linear(4)
    Dropout(0.5)  # drop
    LayerNorm(4, eps=1e-5)
}
"""),
    ("python-import", 'import  python   "my_layers"\nblock A{MyLayer(3)}', """\
import python "my_layers"

block A { MyLayer(3) }
"""),
    ("empty-and-comment-only", "\n\n# just a note   \n\n\n", "# just a note\n"),
    ("empty", "  \n\n", ""),
]


@pytest.mark.parametrize("source, expected", [pytest.param(s, e, id=i) for i, s, e in CASES])
def test_messy_input_exact_output(source: str, expected: str) -> None:
    assert format_source(source) == expected


@pytest.mark.parametrize("source", [pytest.param(s, id=i) for i, s, _ in CASES]
                         + [pytest.param(p.read_text(), id=p.name) for p in SPECS])
def test_idempotent(source: str) -> None:
    once = format_source(source)
    assert format_source(once) == once


def comments(text: str) -> list[str]:
    """Comment texts in order, found by the Pygments lexer (independently of the formatter)."""
    return [value.rstrip() for token, value in NetspecLexer().get_tokens(text)
            if token in Comment]


@pytest.mark.parametrize("source", [pytest.param(s, id=i) for i, s, _ in CASES]
                         + [pytest.param(p.read_text(), id=p.name) for p in SPECS])
def test_keeps_every_comment(source: str) -> None:
    assert comments(format_source(source)) == comments(source)


@pytest.mark.parametrize("source", [pytest.param(s, id=i) for i, s, _ in CASES]
                         + [pytest.param(p.read_text(), id=p.name) for p in SPECS])
def test_layout_invariants(source: str) -> None:
    out = format_source(source)
    for line in out.splitlines():
        assert line == line.rstrip() and "\t" not in line
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 4 == 0
    assert "\n\n\n" not in out
    assert out == "" or (out.endswith("\n") and not out.endswith("\n\n"))


def test_doc_examples_format() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text()
    examples = re.findall(r"```netspec(?:-error)?\n(.*?)```", text, flags=re.S)
    assert examples
    for example in examples:
        out = format_source(example)
        assert format_source(out) == out
        assert comments(out) == comments(example)


def test_every_spec_is_formatted() -> None:
    unformatted = [p.name for p in SPECS if not is_formatted(p.read_text(), str(p))]
    assert not unformatted, f"run the formatter over: {unformatted}"
    for path in SPECS:   # and, being formatted, no line is wider than WIDTH but comments
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0].rstrip() if '"' not in line else line
            assert len(code) <= WIDTH or line.lstrip().startswith("#"), (path.name, line)


def test_syntax_errors_raise_the_parsers_diagnostic() -> None:
    for text in ("block A {", "block A { Linear(10 }", "block { }", 'import "x'):
        with pytest.raises(SpecError) as got:
            format_source(text, "bad.net")
        with pytest.raises(SpecError) as expected:
            parse(text, "bad.net")
        assert got.value.render() == expected.value.render()


def test_format_file(tmp_path: Path) -> None:
    path = tmp_path / "net.net"
    path.write_text("block A{Linear(1);ReLU()}\n")
    assert format_file(path, write=False) is True          # --check: says, does not write
    assert path.read_text() == "block A{Linear(1);ReLU()}\n"
    assert format_file(path) is True
    assert path.read_text() == "block A { Linear(1); ReLU() }\n"
    assert format_file(path) is False
    assert [p.name for p in tmp_path.iterdir()] == ["net.net"]   # no temporary file left
    bad = tmp_path / "bad.net"
    bad.write_text("block A {\n")
    with pytest.raises(SpecError):
        format_file(bad)
    assert bad.read_text() == "block A {\n"


def test_spec_files(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    for path in (tmp_path / "a.net", sub / "b.net", sub / "notes.txt"):
        path.write_text("")
    assert spec_files([tmp_path, tmp_path / "a.net"]) == [tmp_path / "a.net", sub / "b.net"]


def test_deep_nesting() -> None:
    deep = "block D {\n    input x: [N, 4]\n    y = " + "relu(" * 200 + "x" + ")" * 200 + "\n}\n"
    parse(deep)                                   # within the parser's limits
    out = format_source(deep)
    assert format_source(out) == out


# ---- the formatted spec builds the identical model --------------------------------------------

_CODE_OR_NOT = re.compile(r'(#[^\n]*|"(?:[^"\\\n]|\\.)*")')


def messy(text: str) -> str:
    """The same spec, badly laid out: no indentation, odd spaces (comments, strings kept)."""
    parts = _CODE_OR_NOT.split(text)
    for i in range(0, len(parts), 2):        # the code between comments and strings
        code = re.sub(r"(?m)^[ \t]+", "", parts[i])
        code = code.replace(",", " ,").replace("(", "( ").replace(")", " )")
        code = code.replace("[", "[ ").replace(":", " :")
        code = re.sub(r"(?<![=!<>])=(?!=)", "  =  ", code)
        parts[i] = code
    return "".join(parts)


def _concrete(shape) -> list[int]:
    return [2 if isinstance(d, Sym) else int(d) for d in shape]


def _build_facts(text: str):
    model = netspec.build(text, seed=0)
    model.eval()
    analysis = model._netspec
    x = torch.randn(_concrete(analysis.ir.in_shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    state = {k: (tuple(v.shape), v.detach().clone()) for k, v in model.state_dict().items()}
    code = {path: getattr(type(m), "code", None) for path, m in model.named_modules()}
    return state, code, out


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_formatting_builds_the_identical_model(path: Path) -> None:
    original = messy(path.read_text())
    assert original != path.read_text()
    formatted = format_source(original)
    assert formatted == path.read_text()          # the messy copy formats back to the file
    state_a, code_a, out_a = _build_facts(original)
    state_b, code_b, out_b = _build_facts(formatted)
    assert list(state_a) == list(state_b)
    for key, (shape, value) in state_a.items():
        assert state_b[key][0] == shape
        assert torch.equal(state_b[key][1], value), key
    assert code_a == code_b
    assert torch.equal(out_a, out_b)


# ---- comments in every place a comment may go ---------------------------------------------------

PLACES = """\
import "blocks.net"
block Net(width: int = 8, p: float = 0.5) {
    input x: [N, 4]
    net: { Linear(width); ReLU() }
    y = x -> Linear(width, bias=true) -> relu(x * 2 + 1)
    z = concat(dim=1) { Linear(2); Identity() }
    if width > 4 { Dropout(p) } else { Identity() }
    reshape(max(y, dim=[1]), N, -1)
    init { Linear.weight: normal(std=0.01) }
}
"""


def _insertions(text: str):
    """The spec with one comment inserted after each token, wherever that still parses to the
    same syntax tree."""
    shape = _strip(parse(text))
    ends = sorted({m.end() for m in re.finditer(r'[A-Za-z0-9_."]+|[^\sA-Za-z0-9_."]', text)})
    for pos in ends:
        for comment in ("  # TC\n", "\n# OC\n"):
            candidate = text[:pos] + comment + text[pos:]
            try:
                if _strip(parse(candidate)) != shape:
                    continue
            except SpecError:
                continue
            yield candidate


def _strip(node):
    from netspec.fmt import _shape
    return _shape(node)


def test_comments_anywhere_survive() -> None:
    count = 0
    for candidate in _insertions(PLACES):
        count += 1
        out = format_source(candidate)
        assert comments(out) == comments(candidate)
        assert format_source(out) == out
    assert count > 40


UNFORMATTED = "block A {\n  input x: [N, 8]\n  Linear(8); ReLU()\n}\n"


@pytest.mark.parametrize("check", [False, True])
def test_a_dash_formats_standard_input_to_standard_output(capsys, monkeypatch, check) -> None:
    """``netspec fmt -`` is how an editor calls a formatter: text in, text out, no file."""
    import io

    from netspec.cli import app

    monkeypatch.setattr("sys.stdin", io.StringIO(UNFORMATTED))
    with pytest.raises(SystemExit) as info:
        app(["fmt", *(["--check"] if check else []), "-"], prog_name="netspec")
    out, err = capsys.readouterr()
    assert err == ""
    if check:
        assert (info.value.code, out) == (1, "")
    else:
        assert (info.value.code, out) == (0, format_source(UNFORMATTED))
        assert out == "block A {\n    input x: [N, 8]\n    Linear(8)\n    ReLU()\n}\n"


def test_a_dash_reports_a_syntax_error_in_standard_input(capsys, monkeypatch) -> None:
    import io

    from netspec.cli import app

    monkeypatch.setattr("sys.stdin", io.StringIO("block A {\n  Linear(\n}\n"))
    with pytest.raises(SystemExit) as info:
        app(["fmt", "-"], prog_name="netspec")
    out, err = capsys.readouterr()
    assert (info.value.code, out) == (1, "")
    assert err.startswith("<stdin>:3:1: syntax error") and "Traceback" not in err
