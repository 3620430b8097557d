"""Stage 1, ``parse``: text -> ``ast.SpecFile``. Lark does the work; the Transformer is glue."""

from __future__ import annotations

import ast as pyast
import gc
import hashlib
import os
import re
import sys
from functools import lru_cache
from pathlib import Path as FsPath
from typing import Iterator

import lark
from lark import Token, Transformer, v_args

from netspec import ast
from netspec.errors import Diagnostic, LimitError, SourceMap, Span, SpecError
from netspec.limits import current as current_limits

_GRAMMAR_CANDIDATES = (
    FsPath(__file__).parent / "grammars" / "netspec.lark",         # installed wheel
    FsPath(__file__).parent.parent / "grammars" / "netspec.lark",  # source checkout
)

_RECURSION = 20_000
_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}


def grammar_path() -> FsPath:
    for candidate in _GRAMMAR_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("netspec.lark grammar not found next to the package")


class _TooDeep(Exception):
    """Brackets nest deeper than the limit allows."""

    def __init__(self, tok: Token):
        self.tok = tok


class _PostLexer:
    """Drops newlines inside ( ) and [ ] and before a line starting with '->' or 'else'."""

    always_accept = ("_NL",)
    _continues = re.compile(r"(?:\s|#[^\n]*)*(?:->|else\b)")

    def __init__(self) -> None:
        self.open: list[Token] = []
        self.text = ""

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        self.open = []
        for tok in stream:
            if tok.type == "_NL":
                if self.open and self.open[-1].type in ("LPAR", "LSQB"):
                    continue
                if self._continues.match(self.text, tok.end_pos):
                    continue
            elif tok.type in _OPENERS:
                self.open.append(tok)
                if len(self.open) > 4 * current_limits().max_depth:
                    raise _TooDeep(tok)
            elif tok.type in _CLOSERS and self.open and self.open[-1].type == _CLOSERS[tok.type]:
                self.open.pop()
            yield tok


def _cache_file(grammar: str) -> str | bool:
    """Where Lark keeps the parse tables it built (about 0.2 s to rebuild), or False.

    The file lives in the user's own cache directory, never a shared temporary one, and Lark
    rebuilds it whenever the grammar text changes.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "netspec")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return False
    if not os.access(folder, os.W_OK):
        return False
    digest = hashlib.sha256(grammar.encode()).hexdigest()[:16]
    return os.path.join(folder, f"grammar-{lark.__version__}-{digest}.cache")


@lru_cache(maxsize=1)
def _parser() -> tuple[lark.Lark, _PostLexer]:
    postlex = _PostLexer()
    grammar = grammar_path().read_text()
    options = dict(parser="lalr", lexer="contextual", propagate_positions=True,
                   maybe_placeholders=True, postlex=postlex)
    try:
        parser = lark.Lark(grammar, cache=_cache_file(grammar), **options)
    except Exception:   # an unreadable or stale cache file: build the tables afresh
        parser = lark.Lark(grammar, cache=False, **options)
    return parser, postlex


# ---- tree -> AST ------------------------------------------------------------------------------

def _span(file: str, item) -> Span:
    return Span(file, item.line, item.column, item.end_line, item.end_column)


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    """Builds ``netspec.ast`` nodes from Lark's parse tree."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def s(self, meta) -> Span:
        return _span(self.file, meta)

    def t(self, tok: Token) -> Span:
        return _span(self.file, tok)

    # top level
    def start(self, meta, *items):
        imports = tuple(i for i in items if isinstance(i, ast.Import))
        blocks = tuple(i for i in items if isinstance(i, ast.BlockDef))
        inits = tuple(i for i in items if isinstance(i, ast.InitSection))
        span = self.s(meta) if not meta.empty else Span(self.file, 1, 1, 1, 1)
        return ast.SpecFile(self.file, imports, blocks, inits, span)

    def import_stmt(self, meta, python, path):
        return ast.Import(_string(path, self.file), self.s(meta), python is not None)

    def block_def(self, meta, name, params, body):
        return ast.BlockDef(str(name), params or (), body, self.s(meta), self.t(name))

    def block_params(self, meta, *params):
        return tuple(p for p in params if p is not None)

    def block_param(self, meta, name, type_, default):
        return ast.BlockParam(str(name), str(type_), default, self.s(meta), self.t(type_))

    def body(self, meta, *stmts):
        return ast.Body(tuple(stmts), self.s(meta))

    # statements
    def input_decl(self, meta, name, dims):
        return ast.InputDecl(str(name), dims.items, self.s(meta), self.t(name))

    def let_decl(self, meta, name, link):
        return ast.Let(str(name), link, self.s(meta), self.t(name))

    def const_decl(self, meta, name, value):
        return ast.ConstDecl(str(name), value, self.s(meta), self.t(name))

    def param_decl(self, meta, name, value):
        return ast.ParamDecl(str(name), value, self.s(meta), self.t(name))

    def tie_stmt(self, meta, target, source):
        return ast.Tie(target, source, self.s(meta))

    def assign(self, meta, name, chain):
        return ast.Assign(str(name), chain, self.s(meta), self.t(name))

    def return_stmt(self, meta, chain):
        return ast.Return(chain, self.s(meta))

    def expect_stmt(self, meta, dims):
        return ast.Expect(dims.items, self.s(meta))

    def step(self, meta, chain):
        return ast.Step(chain, self.s(meta))

    def chain(self, meta, *links):
        return ast.Chain(tuple(links), self.s(meta))

    def link(self, meta, label, node):
        if label is None:
            return ast.Link(None, None, node, self.s(meta))
        return ast.Link(str(label), self.t(label), node, self.s(meta))

    def seq(self, meta, body):
        return ast.Seq(body, self.s(meta))

    def concat(self, meta, call_args, body):
        args, keywords = call_args if call_args is not None else ((), ())
        return ast.Concat(args, keywords, body, self.s(meta))

    def add(self, meta, body):
        return ast.Add(body, self.s(meta))

    def repeat(self, meta, count, tok, body):
        index, pattern = "i", None
        if tok is not None and tok.type == "STRING":
            pattern = _string(tok, self.file)
        elif tok is not None:
            index = str(tok)
        return ast.Repeat(count, index, pattern, body, self.s(meta))

    def if_step(self, meta, cond, then, orelse=None):
        return ast.If(cond, then, orelse, self.s(meta))

    def while_step(self, meta, cond, body):
        return ast.While(cond, body, self.s(meta))

    def path(self, meta, *parts):
        return ast.Path(tuple(str(p) for p in parts), self.s(meta))

    def init_section(self, meta, *rules):
        return ast.InitSection(tuple(rules), self.s(meta))

    def init_rule(self, meta, selector, within, init):
        if isinstance(selector, Token):
            selector = ast.Str(_string(selector, self.file), self.t(selector))
        if within is not None:
            within = ast.Str(_string(within, self.file), self.t(within))
        return ast.InitRule(selector, within, init, self.s(meta))

    # expressions
    def ternary(self, meta, then, cond, orelse):
        return ast.Ternary(cond, then, orelse, self.s(meta))

    def or_op(self, meta, left, right):
        return ast.BoolOp("or", left, right, self.s(meta))

    def and_op(self, meta, left, right):
        return ast.BoolOp("and", left, right, self.s(meta))

    def not_op(self, meta, operand):
        return ast.Not(operand, self.s(meta))

    def binop(self, meta, left, op, right):
        return ast.BinOp(str(op), left, right, self.s(meta))

    def unop(self, meta, op, operand):
        if isinstance(operand, ast.Num):  # fold -3 into a literal
            return ast.Num(-operand.value, self.s(meta))
        return ast.UnOp(str(op), operand, self.s(meta))

    def call(self, meta, func, call_args):
        args, keywords = call_args
        return ast.Call(func, args, keywords, self.s(meta))

    def call_args(self, meta, *items):
        items = tuple(i for i in items if i is not None)
        args = tuple(i for i in items if not isinstance(i, ast.Keyword))
        keywords = tuple(i for i in items if isinstance(i, ast.Keyword))
        return args, keywords

    def keyword(self, meta, name, value):
        return ast.Keyword(str(name), value, self.s(meta))

    def index(self, meta, value, index):
        return ast.Index(value, index, self.s(meta))

    def attr(self, meta, value, name):
        return ast.Attr(value, str(name), self.s(meta))

    def name(self, meta, tok):
        return ast.Name(str(tok), self.t(tok))

    def int_lit(self, meta, tok):
        return ast.Num(int(tok), self.t(tok))

    def float_lit(self, meta, tok):
        return ast.Num(float(tok), self.t(tok))

    def string_lit(self, meta, tok):
        return ast.Str(_string(tok, self.file), self.t(tok))

    def true_lit(self, meta):
        return ast.Lit(True, self.s(meta))

    def false_lit(self, meta):
        return ast.Lit(False, self.s(meta))

    def none_lit(self, meta):
        return ast.Lit(None, self.s(meta))

    def list_lit(self, meta, *items):
        return ast.ListLit(tuple(i for i in items if i is not None), self.s(meta))


def _string(tok: Token, file: str = "<string>") -> str:
    try:
        return pyast.literal_eval(str(tok))
    except (ValueError, SyntaxError) as exc:
        reason = str(exc.args[0] if exc.args else exc).rsplit(": ", 1)[-1]
        raise SpecError([Diagnostic("syntax error", f"bad escape in a string: {reason}",
                                    _span(file, tok), hint="write a backslash as \\\\")]) \
            from None


# ---- errors -----------------------------------------------------------------------------------

_READABLE = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "_NL": "a new line", "$END": "the end of the file", "COMP_OP": "a comparison",
}


_STRUCTURAL = {"','", "')'", "']'", "'}'", "';'", "a new line", "'->'"}


def _describe(terminal: str, parser: lark.Lark) -> str:
    if terminal in _READABLE:
        return _READABLE[terminal]
    try:
        pattern = parser.get_terminal(terminal).pattern
    except KeyError:
        return terminal.lower()
    if isinstance(pattern, lark.lexer.PatternStr):
        return f"'{pattern.value}'"
    return terminal.lower()


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line"
    return f"'{tok.value}'"


def _syntax_diagnostic(exc: lark.exceptions.UnexpectedInput, file: str, text: str,
                       parser: lark.Lark, postlex: _PostLexer) -> Diagnostic:
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        span = Span(file, exc.line, exc.column, exc.line, exc.column + 1)
        if char == '"':
            end = text.find("\n", exc.pos_in_stream)
            end = len(text) if end < 0 else end
            span = Span(file, exc.line, exc.column, exc.line, exc.column + end - exc.pos_in_stream)
            return Diagnostic("syntax error", "unterminated string", span,
                              hint="close the string with '\"' on the same line")
        if not char.isascii():
            return Diagnostic("syntax error", f"non-ASCII character '{char}' (U+{ord(char):04X})",
                              span, hint="names, numbers and operators are ASCII; "
                                         "non-ASCII text may appear only in comments and strings")
        if char == "'":
            return Diagnostic("syntax error", "unexpected character \"'\"", span,
                              hint='strings are written in double quotes: "nearest"')
        return Diagnostic("syntax error", f"unexpected character '{char}'", span)
    assert isinstance(exc, lark.exceptions.UnexpectedToken)
    tok = exc.token
    expected = {_describe(t, parser) for t in exc.expected if not t.startswith("__")}
    if postlex.open and postlex.open[-1].type in ("LPAR", "LSQB"):
        expected.discard("a new line")
    if expected & _STRUCTURAL and tok.type not in ("$END",):
        expected &= _STRUCTURAL  # "expected ',' or ')'" says more than every operator
    expected = sorted(expected)
    hint = ("expected " + ", ".join(expected[:-1]) + (" or " if len(expected) > 1 else "")
            + expected[-1]) if expected else None
    if tok.type == "$END":
        opener = postlex.open[-1] if postlex.open else None
        if opener is not None:
            closer = {"LBRACE": "}", "LPAR": ")", "LSQB": "]"}[opener.type]
            return Diagnostic("syntax error", f"'{opener.value}' is never closed",
                              _span(file, opener), hint=f"add the matching '{closer}'")
        lines = text.splitlines() or [""]
        span = Span(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
        return Diagnostic("syntax error", "unexpected end of file", span, hint=hint)
    span = _span(file, tok)
    if tok.type == "_NL":
        line_text = text.splitlines()[tok.line - 1] if tok.line <= len(text.splitlines()) else ""
        col = len(line_text.rstrip()) + 1
        span = Span(file, tok.line, col, tok.line, col + 1)
    if tok.type in _CLOSERS and not any(t.type == _CLOSERS[tok.type] for t in postlex.open):
        return Diagnostic("syntax error", f"unmatched '{tok.value}'", span, hint=hint)
    if tok.type in ("INT", "FLOAT") and exc.state is not None and "NAME" in exc.expected:
        return Diagnostic("syntax error", f"unexpected number {_token_text(tok)}", span, hint=hint)
    notes: tuple[str, ...] = ()
    opener = postlex.open[-1] if postlex.open else None
    if opener is not None and opener.type in ("LPAR", "LSQB") and tok.line > opener.line:
        closer = ")" if opener.type == "LPAR" else "]"
        notes = (f"the '{opener.value}' at {file}:{opener.line}:{opener.column} is still open",)
        hint = f"the '{opener.value}' on line {opener.line} is never closed: add '{closer}'"
    if tok.type == "DOT" and text[tok.end_pos:tok.end_pos + 1].isdigit():
        hint = "write numbers with a leading digit: 0.5"
    return Diagnostic("syntax error", f"unexpected {_token_text(tok)}", span, hint=hint,
                      notes=notes)


def parse(text: str, file: str = "<string>") -> ast.SpecFile:
    """Parse one ``.net`` source text into a ``SpecFile``; syntax errors raise ``SpecError``."""
    parser, postlex = _parser()
    sources = SourceMap({file: text})
    postlex.text = text
    collecting = gc.isenabled()
    gc.disable()      # parsing allocates many small objects that live until the AST is built
    depth = sys.getrecursionlimit()
    sys.setrecursionlimit(max(depth, _RECURSION))   # a flat `a + b + ...` is a deep tree
    try:
        tree = parser.parse(text)
        return _ToAst(file).transform(tree)
    except lark.exceptions.UnexpectedInput as exc:
        raise SpecError([_syntax_diagnostic(exc, file, text, parser, postlex)], sources) from None
    except _TooDeep as exc:
        raise LimitError([Diagnostic("limit error", "brackets nest too deeply",
                                     _span(file, exc.tok))], sources) from None
    except (RecursionError, lark.exceptions.VisitError) as exc:
        if isinstance(exc, lark.exceptions.VisitError) and isinstance(exc.orig_exc, SpecError):
            raise SpecError(exc.orig_exc.diagnostics, sources) from None
        if isinstance(exc, lark.exceptions.VisitError) and \
                not isinstance(exc.orig_exc, RecursionError):
            raise
        raise LimitError([Diagnostic("limit error", "this spec nests too deeply to compile",
                                     Span(file, 1, 1, 1, 2),
                                     hint="split long expressions into named values")],
                         sources) from None
    finally:
        sys.setrecursionlimit(depth)
        if collecting:
            gc.enable()
