"""What the fast parser must keep: the AST and its spans, precedence, errors, the GC's state.

The parser reads each expression flat and gives it its structure by precedence climbing, builds
the AST while Lark parses, and lexes with its own loop (``netspec.parse._Lexer``). The expected
spans and structures below are those of the earlier parser (a grammar level per precedence and a
separate tree-to-AST pass), which the rewrite keeps exactly.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
from pathlib import Path

import pytest

from netspec import ast
from netspec import parse as parsing
from netspec.errors import Span, SpecError
from netspec.parse import parse

ROOT = Path(__file__).resolve().parent.parent


def _spans(node) -> list[str]:
    """Every node under ``node``, depth first in field order: its type and span."""
    out: list[str] = []

    def walk(value) -> None:
        if isinstance(value, tuple):
            for item in value:
                walk(item)
            return
        if not dataclasses.is_dataclass(value) or isinstance(value, Span):
            return
        span = getattr(value, "span", None)
        if span is not None:
            out.append(f"{type(value).__name__} {span.line}:{span.column}-"
                       f"{span.end_line}:{span.end_column}")
        for field in dataclasses.fields(value):
            walk(getattr(value, field.name))

    walk(node)
    return out


def _render(node) -> str:
    """An expression with every operation in brackets."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, (ast.Num, ast.Str, ast.Lit)):
        return repr(node.value)
    if isinstance(node, (ast.BinOp, ast.BoolOp)):
        return f"({_render(node.left)} {node.op} {_render(node.right)})"
    if isinstance(node, ast.UnOp):
        return f"({node.op}{_render(node.operand)})"
    if isinstance(node, ast.Not):
        return f"(not {_render(node.operand)})"
    if isinstance(node, ast.Ternary):
        return f"({_render(node.then)} if {_render(node.cond)} else {_render(node.orelse)})"
    if isinstance(node, ast.Call):
        args = [_render(a) for a in node.args] + [f"{k.name}={_render(k.value)}"
                                                   for k in node.keywords]
        return f"{_render(node.func)}({', '.join(args)})"
    if isinstance(node, ast.Index):
        return f"{_render(node.value)}[{', '.join(_render(i) for i in node.items)}]"
    if isinstance(node, ast.Slice):
        parts = ["" if p is None else _render(p) for p in (node.start, node.stop, node.step)]
        return ":".join(parts if node.step is not None else parts[:2])
    if isinstance(node, ast.Attr):
        return f"{_render(node.value)}.{node.name}"
    if isinstance(node, ast.ListLit):
        return "[" + ", ".join(_render(i) for i in node.items) + "]"
    raise TypeError(node)


def _first_link(text: str):
    return parse(text).blocks[0].body.stmts[0].value.links[0].node


# ---- spans --------------------------------------------------------------------------------------

def _in_template(expr: str) -> str:
    return "block B(p: int = (3)) {\n    y = first: " + expr + "\n        -> (x)\n}\n"


EXPRESSION_SPANS = {   # the expression starts at column 16 of line 2
    "(a + b) * c": ["BinOp 2:16-2:27", "BinOp 2:17-2:22", "Name 2:17-2:18", "Name 2:21-2:22",
                    "Name 2:26-2:27"],
    "-(2) + -x ** 2": ["BinOp 2:16-2:30", "Num 2:16-2:20", "UnOp 2:23-2:30", "BinOp 2:24-2:30",
                       "Name 2:24-2:25", "Num 2:29-2:30"],
    "a ** -b ** c": ["BinOp 2:16-2:28", "Name 2:16-2:17", "UnOp 2:21-2:28", "BinOp 2:22-2:28",
                     "Name 2:22-2:23", "Name 2:27-2:28"],
    "not a == b and c or d": ["BoolOp 2:16-2:37", "BoolOp 2:16-2:32", "Not 2:16-2:26",
                              "BinOp 2:20-2:26", "Name 2:20-2:21", "Name 2:25-2:26",
                              "Name 2:31-2:32", "Name 2:36-2:37"],
    "a if b else c if d else e": ["Ternary 2:16-2:41", "Name 2:21-2:22", "Name 2:16-2:17",
                                  "Ternary 2:28-2:41", "Name 2:33-2:34", "Name 2:28-2:29",
                                  "Name 2:40-2:41"],
    "f(x)(y)[0].z": ["Attr 2:16-2:28", "Index 2:16-2:26", "Call 2:16-2:23", "Call 2:16-2:20",
                     "Name 2:16-2:17", "Name 2:18-2:19", "Name 2:21-2:22", "Num 2:24-2:25"],
    "g(k=(v), w=[1, (2),])": ["Call 2:16-2:37", "Name 2:16-2:17", "Keyword 2:18-2:23",
                              "Name 2:21-2:22", "Keyword 2:25-2:36", "ListLit 2:27-2:36",
                              "Num 2:28-2:29", "Num 2:32-2:33"],
    "((a)) - (b)": ["BinOp 2:16-2:27", "Name 2:18-2:19", "Name 2:25-2:26"],
}


@pytest.mark.parametrize("expr", sorted(EXPRESSION_SPANS))
def test_expression_spans(expr: str) -> None:
    """A node's span reaches the brackets around its first and last operands, not its own."""
    assert _spans(_first_link(_in_template(expr))) == EXPRESSION_SPANS[expr]


def test_statement_spans() -> None:
    """Keywords, labels, bodies' braces and a bracketed last link all count; the file spans
    from its first token to its last newline."""
    assert _spans(parse(_in_template("a"))) == [
        "SpecFile 1:1-5:1", "BlockDef 1:1-4:2", "BlockParam 1:9-1:21", "Num 1:19-1:20",
        "Body 1:23-4:2", "Assign 2:5-3:15", "Chain 2:9-3:15", "Link 2:9-2:17", "Name 2:16-2:17",
        "Link 3:12-3:15", "Name 3:13-3:14"]
    assert parse("").span == Span("<string>", 1, 1, 1, 1)
    assert parse("\n\n# only a comment\n").span == Span("<string>", 1, 1, 4, 1)


# ---- structure ----------------------------------------------------------------------------------

PRECEDENCE = [
    ("a + b * c", "(a + (b * c))"),
    ("a - b - c", "((a - b) - c)"),
    ("a / b * c // d % e @ f", "(((((a / b) * c) // d) % e) @ f)"),
    ("a ** b ** c", "(a ** (b ** c))"),
    ("-a ** b", "(-(a ** b))"),
    ("a ** -b ** c", "(a ** (-(b ** c)))"),
    ("-a * b", "((-a) * b)"),
    ("- -3", "3"),
    ("-(3)", "-3"),
    ("--x", "(-(-x))"),
    ("2 ** -1", "(2 ** -1)"),
    ("not a == b and c or d", "(((not (a == b)) and c) or d)"),
    ("not not a", "(not (not a))"),
    ("x or not y and z", "(x or ((not y) and z))"),
    ("a if b else c if d else e", "(a if b else (c if d else e))"),
    ("(a if b else c) if d else e", "((a if b else c) if d else e)"),
    ("a < b + c", "(a < (b + c))"),
    ("a + b < c * d", "((a + b) < (c * d))"),
    ("-a.b[0](c)", "(-a.b[0](c))"),
    ("(a < b) == c", "((a < b) == c)"),
    ("a == (b < c)", "(a == (b < c))"),
    ("not -a < b", "(not ((-a) < b))"),
    ("a and b or c and d", "((a and b) or (c and d))"),
    ("[1, -2.5, -x][0] ** 2", "([1, -2.5, (-x)][0] ** 2)"),
    ("-x[:, a + 1:-1, ::2][0]", "(-x[:, (a + 1):-1, ::2][0])"),
    ("x[1:2:3, (4):]", "x[1:2:3, 4:]"),
]


@pytest.mark.parametrize("expr, structure", PRECEDENCE)
def test_precedence_and_associativity(expr: str, structure: str) -> None:
    assert _render(_first_link("block B {\n    y = " + expr + "\n}\n")) == structure


@pytest.mark.parametrize("expr", ["a + not b", "- not b", "a == not b", "a if b", "a * * b"])
def test_operators_out_of_place_are_syntax_errors(expr: str) -> None:
    with pytest.raises(SpecError, match="syntax error"):
        parse("block B {\n    y = " + expr + "\n}\n")


def test_long_expressions_parse() -> None:
    """Left-associative runs are built in a loop; prefixes and `**` nest as deep as written."""
    sum_ = _first_link("block B {\n    y = x" + " + x" * 5000 + "\n}\n")
    assert isinstance(sum_, ast.BinOp) and sum_.span.end_column == 10 + 4 * 5000
    negated = _first_link("block B {\n    y = " + "-" * 5000 + "x\n}\n")
    assert isinstance(negated, ast.UnOp)


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, first, second", [("0 < a < b", "<", "<"),
                                                 ("a == b != c", "==", "!=")])
def test_chained_comparisons_are_located_errors(expr: str, first: str, second: str) -> None:
    text = "block B {\n    if " + expr + " { ReLU() }\n}\n"
    with pytest.raises(SpecError) as info:
        parse(text, "c.net")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.message == "comparisons cannot be chained"
    a, b, c = re.split(r" [<=!]+ ", expr)
    assert diagnostic.hint == f"write `{a} {first} {b} and {b} {second} {c}`"
    column = 8 + expr.rindex(second)
    assert diagnostic.span == Span("c.net", 2, column, 2, column + len(second))


def test_a_bad_escape_is_reported_after_syntax_errors() -> None:
    """Strings are read as they are parsed, but a syntax error later in the file comes first."""
    with pytest.raises(SpecError, match="never closed"):
        parse('block B {\n    Upsample(mode="a\\x")\n    Linear(\n')
    with pytest.raises(SpecError, match="bad escape"):
        parse('block B {\n    Upsample(mode="a\\x")\n}\n')


# ---- the lexer ----------------------------------------------------------------------------------

def _sources() -> list[tuple[str, str]]:
    files = sorted((ROOT / "specs").glob("*.net")) + sorted((ROOT / "bench/specs").glob("*.net"))
    texts = [(p.name, p.read_text()) for p in files]
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for i, m in enumerate(re.finditer(r"```netspec\n(.*?)```", doc.read_text(), re.S)):
            texts.append((f"{doc.name}#{i}", m.group(1)))
    return texts


def _assert_same_asts(parser, reference, variants=lambda text: (text,)) -> None:
    """``parser`` gives the AST ``reference`` gives, on every source text that parses."""
    compared = 0
    for name, text in _sources():
        for variant in variants(text):
            try:
                expected = parsing._located(reference, variant, name)
            except SpecError:
                continue
            assert parsing._parse_with(parser, variant, name) == expected, name
            compared += 1
    assert compared > 20


def test_netspec_lexer_reads_what_larks_lexer_reads() -> None:
    """The fast lexer gives the same AST as Lark's contextual lexer on every spec that parses,
    with Windows line ends too."""
    _assert_same_asts(parsing._parser()[0], parsing._reference_parser(),
                      lambda text: (text, text.replace("\n", "\r\n")))


def test_the_pickled_parser_parses_as_one_built_afresh(tmp_path: Path) -> None:
    """The parser loaded from its cache file gives the same ASTs as one Lark builds, and the
    parse actions are the process's own (Lark compares them by identity)."""
    built = parsing._lark(parsing._Lexer, "fast", transformer=parsing._BUILDER)
    path = str(tmp_path / "parser.cache")
    parsing._pickle(built, path)
    loaded = parsing._unpickled(path)
    assert loaded is not None and loaded is not built
    _assert_same_asts(loaded, built)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_cache_folder_others_may_write_is_not_used(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert parsing._cache_file("grammar", "parser")          # the folder is made private
    os.chmod(tmp_path / "netspec", 0o777)
    assert parsing._cache_file("grammar", "parser") is False


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"\x80\x05N."])
def test_a_damaged_parser_cache_is_ignored(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "parser.cache"
    path.write_bytes(content)
    assert parsing._unpickled(str(path)) is None
    assert parsing._unpickled(str(tmp_path / "absent.cache")) is None


def test_ignored_text_never_starts_a_token() -> None:
    """``_Lexer`` skips ignored text before trying the terminals; Lark tries them in one
    alternation. The two agree while no terminal can match where ignored text starts."""
    parser = parsing._parser()[0]
    ignored = set(parser.lexer_conf.ignore)
    for terminal in parser.terminals:
        if terminal.name in ignored:
            continue
        for start in (" ", "\t", "\f", "#"):
            assert not re.match(terminal.pattern.to_regexp(), start + "x1 "), terminal.name


# ---- construction and the garbage collector -----------------------------------------------------

def test_fast_constructors_build_equal_nodes() -> None:
    span = parsing._Span("f", 1, 2, 3, 4)
    assert span == Span("f", 1, 2, 3, 4) and hash(span) == hash(Span("f", 1, 2, 3, 4))
    name = parsing._Name("x", span)
    assert name == ast.Name("x", span) and repr(name) == repr(ast.Name("x", span))
    with pytest.raises(dataclasses.FrozenInstanceError):
        name.id = "y"


def test_constructors_refuse_classes_with_post_init() -> None:
    @dataclasses.dataclass(frozen=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            raise AssertionError

    with pytest.raises(TypeError):
        parsing._maker(Checked)


@pytest.mark.parametrize("collecting", [True, False])
def test_parse_leaves_the_collector_as_it_found_it(collecting: bool) -> None:
    was = gc.isenabled()
    (gc.enable if collecting else gc.disable)()
    try:
        parse("block B {\n    Linear(4)\n}\n")
        assert gc.isenabled() is collecting
        assert gc.get_freeze_count() == 0
    finally:
        (gc.enable if was else gc.disable)()


def test_parse_keeps_objects_frozen_by_others() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        parse("block B {\n    Linear(4)\n}\n")
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_syntax_nodes_compare_hash_and_list_children_by_their_fields() -> None:
    """Every node equals a copy of itself and hashes alike, one of a single field (``...``)
    included, and ``ast.children`` lists the nodes in its fields in order."""
    tree = parse("block A {\n    input x: [N, 4, 4]\n    x = x[..., 0] + relu(x[0, ...])\n}\n",
                 "a.net")
    nodes = []
    stack = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(ast.children(node))
    assert any(isinstance(n, ast.Ellipsis) for n in nodes)
    for node in nodes:
        copy = type(node)(*node._values(node))
        assert copy == node and hash(copy) == hash(node)
        assert list(ast.children(node)) == [
            item for value in node._values(node)
            for item in (value if isinstance(value, tuple) else (value,))
            if isinstance(item, ast.Node)]
