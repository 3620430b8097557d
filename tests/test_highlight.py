"""Editor support: the Pygments lexer (``netspec.highlight``) and the TextMate grammar
(``editors/netspec.tmLanguage.json``)."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, String

from netspec.highlight import KEYWORDS, NetspecLexer
from netspec.parse import grammar_path

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.net"))
TM_GRAMMAR = ROOT / "editors" / "netspec.tmLanguage.json"


def grammar_keywords() -> set[str]:
    """Every keyword of grammars/netspec.lark: the quoted all-letter literals."""
    return set(re.findall(r'"([a-z]+)"', grammar_path().read_text()))


def doc_examples() -> list[str]:
    text = (ROOT / "docs" / "language.md").read_text()
    return re.findall(r"```netspec(?:-error)?\n(.*?)```", text, flags=re.S)


def tokens(text: str) -> list[tuple]:
    return [(t, v) for t, v in NetspecLexer().get_tokens(text) if v.strip()]


# ---- Pygments ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_specs_lex_without_errors(path: Path) -> None:
    text = path.read_text()
    toks = list(NetspecLexer().get_tokens(text))
    assert [v for t, v in toks if t in Error] == []
    assert "".join(v for _, v in toks) == text      # every character is accounted for


def test_doc_examples_lex_without_errors() -> None:
    examples = doc_examples()
    assert examples
    for text in examples:
        assert [v for t, v in NetspecLexer().get_tokens(text) if t in Error] == [], text


def test_token_types() -> None:
    text = ('import python "my.layers"\n'
            'block Net(width: int = 8) {  # the model\n'
            '    input img: [N, 3, 32, 32]\n'
            '    conv1: Conv2d(width, kernel_size=3, bias=false)\n'
            '    y = x -> relu(x) -> Dropout(0.5)\n'
            '    repeat 2 as "layer {i}" { Block1 }\n'
            '    add { Identity(); Linear(4) }\n'
            '    if width > 4 and not true { x } else { x ** 2 }\n'
            '}\n')
    toks = tokens(text)
    kind = {}
    for t, v in toks:
        kind.setdefault(v, t)
    assert kind["import"] in Keyword and kind["python"] in Keyword
    assert kind["block"] in Keyword and kind["Net"] is Name.Class
    assert kind["int"] is Keyword.Type and kind["width"] is Name.Variable
    assert kind["# the model"] in Comment
    assert kind["input"] in Keyword and kind["N"] is Name.Variable       # a dim symbol
    assert kind["conv1"] is Name.Label
    assert kind["Conv2d"] is Name.Class and kind["Dropout"] is Name.Class
    assert kind["Block1"] is Name.Class
    assert kind["kernel_size"] is Name.Attribute
    assert kind["false"] is Keyword.Constant
    assert kind["relu"] is Name.Function
    assert kind["x"] is Name.Builtin.Pseudo
    assert kind["->"] in Operator and kind["**"] in Operator and kind[">"] in Operator
    assert kind["3"] is Number.Integer and kind["0.5"] is Number.Float
    assert kind['"'] in String
    for word in ("repeat", "as", "add", "if", "else"):
        assert kind[word] in Keyword, word
    assert kind["and"] is Operator.Word and kind["not"] is Operator.Word


def test_add_as_a_function_is_a_function() -> None:
    assert (Name.Function, "add") in tokens("y = add(x, 1)\n")
    assert (Keyword, "add") in tokens("add { Identity() }\n")


def test_lexer_keywords_cover_the_grammar() -> None:
    assert grammar_keywords() - set(KEYWORDS) <= {"int", "float", "bool", "str"}
    for word in grammar_keywords():
        contexts = (f"{word} {{ }}\n", f"{word} x\n", f'import {word} "x"\n')
        kinds = {t for text in contexts for t, v in tokens(text) if v == word}
        assert any(k in Keyword or k in Operator.Word for k in kinds), word


def test_registered_with_pygments() -> None:
    names = {ep.name for ep in metadata.entry_points(group="pygments.lexers")}
    if "netspec" not in names:
        pytest.skip('the "pygments.lexers" entry point netspec = '
                    '"netspec.highlight:NetspecLexer" is not installed (add it to pyproject.toml'
                    ' and reinstall the package)')
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert isinstance(get_lexer_by_name("netspec"), NetspecLexer)
    assert isinstance(get_lexer_for_filename("model.net", "block A { Linear(1) }"),
                      NetspecLexer)


# ---- the TextMate grammar ----------------------------------------------------------------------

def _patterns(grammar: dict):
    """Every pattern object of the grammar: top level, repository, nested."""
    stack = list(grammar.get("patterns", [])) + list(grammar.get("repository", {}).values())
    while stack:
        pattern = stack.pop()
        yield pattern
        stack.extend(pattern.get("patterns", []))


@pytest.fixture(scope="module")
def tm() -> dict:
    return json.loads(TM_GRAMMAR.read_text())


def test_textmate_header(tm) -> None:
    assert tm["scopeName"] == "source.netspec"
    assert tm["name"] == "netspec" and "net" in tm["fileTypes"]


def test_textmate_regexes_compile_and_includes_resolve(tm) -> None:
    count = 0
    for pattern in _patterns(tm):
        for key in ("match", "begin", "end"):
            if key in pattern:
                re.compile(pattern[key])      # plain regexes: Python's re reads them too
                count += 1
        include = pattern.get("include")
        if include is not None:
            assert include == "$self" or include[1:] in tm["repository"], include
    assert count > 20


def _scopes(tm: dict, text: str, word: str) -> set[str]:
    """The scopes some pattern of the grammar gives ``word`` at the start of ``text``."""
    found = set()
    for pattern in _patterns(tm):
        if "match" not in pattern:
            continue
        m = re.compile(pattern["match"]).match(text)
        if m is None:
            continue
        if m.group(0) == word and "name" in pattern:
            found.add(pattern["name"])
        for index, capture in pattern.get("captures", {}).items():
            if m.group(int(index)) == word and "name" in capture:
                found.add(capture["name"])
    return found


def test_textmate_covers_every_keyword(tm) -> None:
    for word in sorted(grammar_keywords()):
        scopes: set[str] = set()
        for text in (f"{word} ", f"{word} {{", f"{word} Name", f"import {word} ", f"x: {word}"):
            scopes |= _scopes(tm, text, word)
        assert any(s.startswith(("keyword", "storage", "constant.language", "support.type"))
                   for s in scopes), (word, scopes)


def test_textmate_scopes_for_the_main_tokens(tm) -> None:
    assert "comment.line.number-sign.netspec" in _scopes(tm, "# note", "# note")
    assert "entity.name.type.block.netspec" in _scopes(tm, "block ResNet18 {", "ResNet18")
    assert "support.class.layer.netspec" in _scopes(tm, "Conv2d(3)", "Conv2d")
    assert "support.function.netspec" in _scopes(tm, "relu(x)", "relu")
    assert "keyword.operator.arrow.netspec" in _scopes(tm, "-> ReLU()", "->")
    assert "constant.numeric.float.netspec" in _scopes(tm, "1e-5", "1e-5")
    assert "entity.name.tag.label.netspec" in _scopes(tm, "conv1: Conv2d(3)", "conv1")
    assert "support.type.netspec" in _scopes(tm, "classes: int = 10", "int")
