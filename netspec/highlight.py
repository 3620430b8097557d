"""Syntax highlighting for ``.net`` specs: a Pygments lexer.

``NetspecLexer`` colours keywords, the block name after ``block``, layer and block names
(capitalised names: ``Linear``, ``ResNet18``; a single capital such as ``N`` or ``C`` is a
dim symbol), functions (a lower-case name before ``(``), keyword arguments, step labels
(``conv1:``), the running value ``x``, numbers, strings, comments, operators and ``->``.

It is registered with Pygments under the name ``netspec`` through the ``pygments.lexers``
entry point, so ``pygmentize -l netspec file.net`` and Sphinx or MkDocs code fences written as
```` ```netspec ```` use it once the package is installed.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, include, words
from pygments.token import (Comment, Keyword, Name, Number, Operator, Punctuation, String,
                            Whitespace)

__all__ = ["NetspecLexer", "KEYWORDS"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"

# every keyword of grammars/netspec.lark, by role
DECLARATIONS = ("input", "let", "const", "param", "tie")
CONTROL = ("return", "expect", "init", "concat", "repeat", "as", "if", "else", "while", "in")
LOGICAL = ("and", "or", "not")
CONSTANTS = ("true", "false", "none")
TYPES = ("int", "float", "bool", "str")
KEYWORDS = ("import", "python", "block", "add") + DECLARATIONS + CONTROL + LOGICAL + CONSTANTS


class NetspecLexer(RegexLexer):
    """Pygments lexer for netspec ``.net`` files."""

    name = "netspec"
    aliases = ["netspec"]
    filenames = ["*.net"]
    mimetypes = ["text/x-netspec"]
    url = "https://pypi.org/project/netspec/"

    tokens = {
        "root": [
            (r"\)", Punctuation),               # unbalanced: still punctuation
            include("code"),
        ],
        "paren": [                              # inside ( ): keyword arguments
            (r"(" + _NAME + r")([ \t]*)(=)(?!=)", bygroups(Name.Attribute, Whitespace,
                                                         Operator)),
            (r"\)", Punctuation, "#pop"),
            include("code"),
        ],
        "code": [
            (r"\n", Whitespace),
            (r"[ \t\f\r]+", Whitespace),
            (r"#.*?$", Comment.Single),
            (r'"', String.Double, "string"),
            (r"\b(import)(\s+)(python)\b", bygroups(Keyword.Namespace, Whitespace,
                                                     Keyword.Namespace)),
            (r"\bimport\b", Keyword.Namespace),
            (r"\b(block)(\s+)(" + _NAME + ")", bygroups(Keyword.Declaration, Whitespace,
                                                       Name.Class)),
            (r"\bblock\b", Keyword.Declaration),
            # a block parameter: `classes: int`
            (r"(" + _NAME + r")([ \t]*)(:)([ \t]*)" + r"\b(int|float|bool|str)\b",
             bygroups(Name.Variable, Whitespace, Punctuation, Whitespace, Keyword.Type)),
            (r"\b(input|let|const|param)(\s+)(" + _NAME + ")",
             bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            (words(DECLARATIONS, prefix=r"\b", suffix=r"\b"), Keyword.Declaration),
            (r"\badd(?=\s*\{)", Keyword),            # `add { ... }`; `add(a, b)` is a function
            (words(CONTROL, prefix=r"\b", suffix=r"\b"), Keyword),
            (words(LOGICAL, prefix=r"\b", suffix=r"\b"), Operator.Word),
            (words(CONSTANTS, prefix=r"\b", suffix=r"\b"), Keyword.Constant),
            (r"[0-9]+\.[0-9]+([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+", Number.Float),
            (r"[0-9]+", Number.Integer),
            # a step label `conv1: Conv2d(...)`, an init rule `Linear.weight: ...`
            (r"(" + _NAME + r")([ \t]*)(:)", bygroups(Name.Label, Whitespace, Punctuation)),
            (r"[A-Z][A-Za-z0-9_]*(?=[ \t]*\()", Name.Class),   # layer and block calls
            (r"[A-Z][0-9_]*\b", Name.Variable),       # dim symbols: N, C, H, W, D1
            (r"[A-Z][A-Za-z0-9_]*", Name.Class),     # blocks used by name
            (r"(" + _NAME + r")(?=[ \t]*\()", Name.Function),
            (r"\bx\b", Name.Builtin.Pseudo),         # the running value
            (_NAME, Name),
            (r"->", Operator),
            (r"\*\*|//|==|!=|<=|>=|[-+*/%@<>=]", Operator),
            (r"\(", Punctuation, "paren"),
            (r"[{}\[\],;.:]", Punctuation),
        ],
        "string": [
            (r'[^"\\\n]+', String.Double),
            (r"\\.", String.Escape),
            (r'"', String.Double, "#pop"),
            (r"\n", Whitespace, "#pop"),   # an unterminated string ends at the line's end
        ],
    }
