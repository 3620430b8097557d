"""Stage 1, ``parse``: text -> ``ast.SpecFile``, in one pass.

Lark parses with the LALR tables of ``grammars/netspec.lark``; netspec's lexer (``_Lexer``)
feeds it tokens, and ``_AstBuilder``'s methods, called as Lark reduces each rule, build the AST
with its spans on the way. Where the text has an error, it is parsed again with Lark's own lexer,
and the error is reported as Lark finds it (``_syntax_diagnostic``).
"""

from __future__ import annotations

import ast as pyast
import copy
import dataclasses
import difflib
import hashlib
import itertools
import os
import pickle
import re
import sys
import tempfile
import types
from functools import lru_cache
from pathlib import Path as FsPath
from typing import Any, Callable, Iterable, Iterator

import lark
import lark.parsers.lalr_analysis
from lark import Token

from netspec import ast
from netspec.errors import Diagnostic, LimitError, SourceMap, Span, SpecError
from netspec.gc_pause import paused
from netspec.limits import current as current_limits

_GRAMMAR_CANDIDATES = (
    FsPath(__file__).parent / "grammars" / "netspec.lark",         # installed wheel
    FsPath(__file__).parent.parent / "grammars" / "netspec.lark",  # source checkout
)

_RECURSION = 20_000
_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
_INLINE = ("LPAR", "LSQB")      # brackets inside which a newline is only a space


def grammar_path() -> FsPath:
    for candidate in _GRAMMAR_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("netspec.lark grammar not found next to the package")


class _TooDeep(Exception):
    """Brackets nest deeper than the limit allows."""

    def __init__(self, tok: Token):
        self.tok = tok


class _TooMany(Exception):
    """A file has more statements than ``Limits.max_nodes``; the first one over it."""

    def __init__(self, span: Span):
        self.span = span


class _PostLexer:
    """Drops newlines inside ( ) and [ ] and before a line starting with '->' or 'else'.

    ``_Lexer`` applies the same rule as it reads; this class applies it to Lark's own lexer (for
    error reports, and in ``netspec.fmt``).
    """

    always_accept = ("_NL",)
    continues = re.compile(r"(?:\s|#[^\n]*)*(?:->|else\b)").match

    def __init__(self) -> None:
        self.open: list[Token] = []
        self.text = ""

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        self.open = []
        for tok in stream:
            if tok.type == "_NL":
                if self.open and self.open[-1].type in _INLINE:
                    continue
                if self.continues(self.text, tok.end_pos):
                    continue
            elif tok.type in _OPENERS:
                self.open.append(tok)
                if len(self.open) > 4 * current_limits().max_depth:
                    raise _TooDeep(tok)
            elif tok.type in _CLOSERS and self.open and self.open[-1].type == _CLOSERS[tok.type]:
                self.open.pop()
            yield tok


class _Unlexable(Exception):
    """``_Lexer`` found text that no terminal of the parser's state matches."""


class _Unparsable(Exception):
    """``_drive`` met a token that the parser's state does not take."""


class _Lexer(lark.lexer.Lexer):
    """Lark's contextual lexer, and ``_PostLexer``, in one fast loop.

    Lark calls ``lex`` with the parser's state, which it reads before each token. Like Lark's
    contextual lexer it tries, in Lark's order, the terminals that the state accepts (and the
    newline, which the post-lexer may drop), and a name that spells a keyword the state accepts
    becomes that keyword. It skips ignored text in the same match as the token after it and
    makes tokens without Lark's argument checks. Text that it cannot read raises
    ``_Unlexable``; ``parse`` then parses again with Lark's lexer, which reports the error.
    """

    __future_interface__ = 2          # lex(lexer_state, parser_state)

    def __init__(self, conf: lark.lexer.LexerConf) -> None:
        self.terminals = {t.name: t for t in conf.terminals}
        ignored = [self.terminals[name] for name in conf.ignore]
        for t in conf.terminals:
            if t.pattern.flags or (t in ignored and _may_span_lines(t)):
                raise lark.exceptions.GrammarError(f"netspec's lexer cannot read {t.name}")
        self.skip = "(?:" + "|".join(t.pattern.to_regexp() for t in _lark_order(ignored)) + ")*"
        self.rest = re.compile(self.skip + r"\Z").match      # nothing left but ignored text
        self.multiline = {t.name for t in conf.terminals if _may_span_lines(t)}
        self.by_state: dict[Any, tuple] = {}
        self.by_accepts: dict[frozenset, tuple] = {}

    def scanner(self, parser_state: Any, state: Any) -> tuple:
        """``(match, groups)`` for the parser ``state``: the pattern's match, and for each group
        of the pattern its terminal, the keywords that its text may spell, and its role."""
        accepts = frozenset(name for name in parser_state.parse_conf.states[state]
                            if name in self.terminals) | frozenset(_PostLexer.always_accept)
        found = self.by_accepts.get(accepts)
        if found is None:
            found = self.by_accepts[accepts] = self.build(accepts)
        self.by_state[state] = found
        return found

    def build(self, accepts: frozenset) -> tuple:
        terminals = _lark_order(self.terminals[name] for name in accepts)
        keywords: dict[str, dict[str, str]] = {}
        spelled = set()
        for regexp in terminals:            # as lark.lexer._create_unless
            if regexp.pattern.type != "re":
                continue
            for word in terminals:
                if word.pattern.type != "str" or word.priority != regexp.priority:
                    continue
                match = re.match(regexp.pattern.to_regexp(), word.pattern.value)
                if match and match.group(0) == word.pattern.value:
                    keywords.setdefault(regexp.name, {})[word.pattern.value] = word.name
                    spelled.add(word.name)
        pattern = re.compile(self.skip + "(?:" + "|".join(
            f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals
            if t.name not in spelled) + ")")
        groups: list = [None] * (pattern.groups + 1)
        for name, index in pattern.groupindex.items():
            role = (_LINES if name in self.multiline else _OPENS if name in _OPENERS
                    else _CLOSES if name in _CLOSERS else 0)
            groups[index] = (name, keywords.get(name), role)
        return pattern.match, groups

    def lex(self, lexer_state: Any, parser_state: Any) -> Iterator[Token]:
        text = lexer_state.text
        text = text if isinstance(text, str) else text.text
        states = parser_state.state_stack     # the parser pushes and pops this very list
        by_state = self.by_state
        continues = _PostLexer.continues
        depth = 4 * current_limits().max_depth
        opened: list[Token] = []
        new = str.__new__
        lines, opens, closes = _LINES, _OPENS, _CLOSES
        pos, line, line_start = 0, 1, 0
        while True:
            found = by_state.get(states[-1]) or self.scanner(parser_state, states[-1])
            match, groups = found
            m = match(text, pos)
            if m is None:
                if self.rest(text, pos):
                    return
                raise _Unlexable()
            index = m.lastindex
            kind, words, role = groups[index]
            start = m.start(index)
            pos = m.end()
            value = text[start:pos]
            tok = new(Token, value)
            tok.line = line
            tok.column = start - line_start + 1
            if role == lines and "\n" in value:
                line += value.count("\n")
                line_start = start + value.rindex("\n") + 1
                if kind == "_NL" and ((opened and opened[-1].type in _INLINE)
                                      or continues(text, pos)):
                    continue
            elif words is not None:
                kind = words.get(value, kind)
            tok.type = kind
            tok.value = value
            tok.start_pos = start
            tok.end_pos = pos
            tok.end_line = line
            tok.end_column = pos - line_start + 1
            if role == opens:
                opened.append(tok)
                if len(opened) > depth:
                    raise _TooDeep(tok)
            elif role == closes and opened and opened[-1].type == _CLOSERS[kind]:
                opened.pop()
            yield tok


_LINES, _OPENS, _CLOSES = 1, 2, 3     # what the lexer does after matching a terminal


def _may_span_lines(terminal: Any) -> bool:
    """Whether a match may hold a newline (as lark.lexer._regexp_has_newline: it may say yes)."""
    r = terminal.pattern.to_regexp()
    return "\n" in r or "\\n" in r or "\\s" in r or "[^" in r or ("(?s" in r and "." in r)


def _lark_order(terminals: Iterable[Any]) -> list:
    """Terminals in the order Lark's lexer tries them (lark.lexer.BasicLexer)."""
    return sorted(terminals, key=lambda t: (-t.priority, -t.pattern.max_width,
                                            -len(t.pattern.value), t.name))


def _cache_file(grammar: str, name: str) -> str | bool:
    """Where a parser is cached (Lark's tables, or the whole fast parser), or False.

    The file lives in the user's own cache directory, never a shared temporary one, and is
    named by a digest of ``grammar`` (the text its contents depend on), so it is rebuilt
    whenever that changes. A folder that others may write is not used.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "netspec")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return False
    if not os.access(folder, os.W_OK) or not _private(folder):
        return False
    digest = hashlib.sha256(grammar.encode()).hexdigest()[:16]
    return os.path.join(folder, f"grammar-{name}-{lark.__version__}-{digest}.cache")


def _private(folder: str) -> bool:
    """Whether only this user can write ``folder``: the caches in it are pickles, and loading
    a pickle runs what it says."""
    if not hasattr(os, "getuid"):
        return True
    info = os.stat(folder)
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _lark(lexer: Any, cache_name: str, **options: Any) -> lark.Lark:
    """A parser for the grammar: LALR, the tables cached under ``cache_name``."""
    grammar = grammar_path().read_text()
    options = dict(parser="lalr", lexer=lexer, maybe_placeholders=True, **options)
    try:
        return lark.Lark(grammar, cache=_cache_file(grammar, cache_name), **options)
    except lark.exceptions.GrammarError:
        raise
    except Exception:   # an unreadable or stale cache file: build the tables afresh
        return lark.Lark(grammar, cache=False, **options)


# ---- AST building, during the parse ------------------------------------------------------------
#
# Each method of `_AstBuilder` named after a grammar rule (or alias) is Lark's callback for it: it
# receives the rule's children (tokens, the values of sub-rules, None for an absent `[optional]`)
# and returns an AST node, or a list for the rules that collect (`stmts`, `chain`, `head`,
# `flat`, `items`, `args`). A node spans from the start of its first child to the end of its
# last, keywords and punctuation included.

def _span(file: str, item: Any) -> Span:
    return Span(file, item.line, item.column, item.end_line, item.end_column)


def _maker(cls: type) -> Callable[..., Any]:
    """A constructor for the frozen dataclass ``cls``, taking every field in order.

    The dataclass's own ``__init__`` gets past frozenness with an ``object.__setattr__`` call
    per field; the parser makes a node and a span for nearly every token, so this stores the
    fields directly: into the instance's dict, or through the slots' descriptors (the code is
    generated the way ``dataclasses`` generates ``__init__``).
    """
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} needs its own __init__")
    names = [f.name for f in dataclasses.fields(cls)]
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    if "__slots__" in cls.__dict__:
        scope.update({f"set_{name}": cls.__dict__[name].__set__ for name in names})
        stores = "".join(f"    set_{name}(obj, {name})\n" for name in names)
    else:
        stores = "    fields = obj.__dict__\n" + "".join(
            f"    fields[{name!r}] = {name}\n" for name in names)
    exec(f"def make({', '.join(names)}):\n    obj = new(cls)\n{stores}    return obj\n", scope)
    return scope["make"]


_Span = _maker(Span)
_Name, _Num, _Str, _Lit = _maker(ast.Name), _maker(ast.Num), _maker(ast.Str), _maker(ast.Lit)
_BinOp, _BoolOp, _Call = _maker(ast.BinOp), _maker(ast.BoolOp), _maker(ast.Call)
_Keyword, _ListLit = _maker(ast.Keyword), _maker(ast.ListLit)
_Link, _Chain, _Step, _Assign = (_maker(ast.Link), _maker(ast.Chain), _maker(ast.Step),
                                 _maker(ast.Assign))


class _Paren:
    """``( expr )``: the expression, and the brackets that an enclosing node's span reaches to.

    The expression's own span stops inside the brackets; ``(a + b) * c`` starts at ``(``.
    """

    __slots__ = ("node", "lpar", "rpar")

    def __init__(self, node: ast.Expr, lpar: Token, rpar: Token):
        self.node = node
        self.lpar = lpar
        self.rpar = rpar


def _node(value: Any) -> Any:
    """The expression inside any brackets."""
    return value.node if value.__class__ is _Paren else value


def _first(value: Any) -> Any:
    """Where a parent whose first child is ``value`` starts (a span or a bracket)."""
    return value.lpar if value.__class__ is _Paren else value.span


def _last(value: Any) -> Any:
    """Where a parent whose last child is ``value`` ends."""
    return value.rpar if value.__class__ is _Paren else value.span


# Binding power of each binary operator, loosest first (see "expressions" in the grammar).
_OR, _AND, _COMPARISON, _SUM, _PRODUCT, _POWER = 1, 2, 4, 5, 6, 8
_BINARY = {"OR": _OR, "AND": _AND, "COMP_OP": _COMPARISON, "PLUS": _SUM, "MINUS": _SUM,
           "STAR": _PRODUCT, "SLASH": _PRODUCT, "DSLASH": _PRODUCT, "PERCENT": _PRODUCT,
           "AT": _PRODUCT, "POW_OP": _POWER}
_NOT_OPERAND = _COMPARISON      # `not a == b` is `not (a == b)`
_NEG_OPERAND = _POWER           # `-a ** b` is `-(a ** b)`, `-a * b` is `(-a) * b`
_LONGEST_QUOTED = 40            # operand text quoted in a hint, at most
_PREFIXES = ("NOT", "MINUS")
_CONSTANTS = {"TRUE": True, "FALSE": False, "NONE": None}


class _AstBuilder:
    """Lark's callbacks, for one parse at a time: ``reset`` names the file and gives its text."""

    def __init__(self) -> None:
        self.file = "<string>"
        self.text = ""
        self.escape: SpecError | None = None    # the first bad string escape
        self.statements = 0
        self.max_statements = 0

    def reset(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.escape = None
        self.statements = 0
        self.max_statements = current_limits().max_nodes

    def string(self, tok: Token) -> str:
        """A string literal's value. A bad escape is reported once the text has parsed, so that
        a syntax error anywhere is reported first."""
        try:
            return _string(tok, self.file)
        except SpecError as exc:
            self.escape = self.escape or exc
            return ""

    def between(self, first: Any, last: Any) -> Span:
        """From the start of ``first`` to the end of ``last`` (tokens or spans)."""
        return _Span(self.file, first.line, first.column, last.end_line, last.end_column)

    def t(self, tok: Token) -> Span:
        return _Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    # top level
    def start(self, c: list) -> ast.SpecFile:  # [sep] items, separated by sep [sep]
        imports = tuple(i for i in c if isinstance(i, ast.Import))
        blocks = tuple(i for i in c if isinstance(i, ast.BlockDef))
        inits = tuple(i for i in c if isinstance(i, ast.InitSection))
        if not c:
            span = Span(self.file, 1, 1, 1, 1)
        else:                                 # from the first token to the last
            first, last = c[0], c[-1]
            span = self.between(first[0] if first.__class__ is tuple else first.span,
                                last[1] if last.__class__ is tuple else last.span)
        if self.escape is not None:
            raise self.escape
        return ast.SpecFile(self.file, imports, blocks, inits, span)

    def sep(self, c: list) -> tuple[Token, Token]:  # separators -> (the first, the last)
        if len(c) == 1:
            return c[0], c[0]
        return c[0], c[1][1]

    def import_stmt(self, c: list) -> ast.Import:  # "import" [PYTHON] STRING
        keyword, python, path = c
        return ast.Import(self.string(path), self.between(keyword, path),
                          python is not None)

    def block_def(self, c: list) -> ast.BlockDef:  # "block" NAME [block_params] body
        keyword, name, params, body = c
        return ast.BlockDef(str(name), params or (), body, self.between(keyword, body.span),
                            self.t(name))

    def block_params(self, c: list) -> tuple[ast.BlockParam, ...]:
        return tuple(p for p in c if p is not None)

    def block_param(self, c: list) -> ast.BlockParam:  # NAME ":" NAME ["=" expr]
        name, type_, default = c
        last = type_ if default is None else _last(default)
        return ast.BlockParam(str(name), str(type_), None if default is None else _node(default),
                              self.between(name, last), self.t(type_))

    def body(self, c: list) -> ast.Body:  # "{" [sep] [stmts [sep]] "}"
        for stmts in c:
            if stmts.__class__ is list:
                return ast.Body(tuple(stmts), self.between(c[0], c[-1]))
        return ast.Body((), self.between(c[0], c[-1]))

    def stmts(self, c: list) -> list:  # [stmts sep] statement
        self.statements += 1
        if self.statements > self.max_statements:     # refused before parsing the rest
            raise _TooMany(c[-1].span)
        if len(c) == 1:
            return c
        c[0].append(c[2])
        return c[0]

    # statements
    def input_decl(self, c: list) -> ast.InputDecl:  # "input" NAME ":" list_lit
        keyword, name, _, dims = c
        return ast.InputDecl(str(name), dims.items, self.between(keyword, dims.span),
                             self.t(name))

    def let_decl(self, c: list) -> ast.Let:  # "let" NAME "=" link
        keyword, name, _, link = c
        return ast.Let(str(name), link, self.between(keyword, link.span), self.t(name))

    def const_decl(self, c: list) -> ast.ConstDecl:  # "const" NAME "=" expr
        keyword, name, _, value = c
        return ast.ConstDecl(str(name), _node(value), self.between(keyword, _last(value)),
                             self.t(name))

    def param_decl(self, c: list) -> ast.ParamDecl:  # "param" NAME "=" expr
        keyword, name, _, value = c
        return ast.ParamDecl(str(name), _node(value), self.between(keyword, _last(value)),
                             self.t(name))

    def tie_stmt(self, c: list) -> ast.Tie:  # "tie" path "=" path
        keyword, target, _, source = c
        return ast.Tie(target, source, self.between(keyword, source.span))

    def assign(self, c: list) -> ast.Assign:  # NAME "=" chain
        name, _, links = c
        chain = self.chain_node(links)
        end = chain.span
        return _Assign(name.value, chain,
                       _Span(self.file, name.line, name.column, end.end_line, end.end_column),
                       _Span(self.file, name.line, name.column, name.end_line, name.end_column))

    def return_stmt(self, c: list) -> ast.Return:  # "return" chain
        chain = self.chain_node(c[1])
        return ast.Return(chain, self.between(c[0], chain.span))

    def expect_stmt(self, c: list) -> ast.Expect:  # "expect" list_lit
        keyword, dims = c
        return ast.Expect(dims.items, self.between(keyword, dims.span))

    def step(self, c: list) -> ast.Step:
        chain = self.chain_node(c[0])
        return _Step(chain, chain.span)

    def chain(self, c: list) -> list[ast.Link]:  # [chain "->"] [NAME ":"] step
        first = c[0]
        if first.__class__ is list:
            first.append(self.link(c[2:]))
            return first
        return [self.link(c)]

    def chain_node(self, links: list) -> ast.Chain:
        if len(links) == 1:                   # a chain of one link spans what the link spans
            return _Chain((links[0],), links[0].span)
        return _Chain(tuple(links), self.between(links[0].span, links[-1].span))

    def link(self, c: list) -> ast.Link:  # [NAME ":"] step
        if len(c) == 1:
            node = c[0]
            if node.__class__ is _Paren:
                return _Link(None, None, node.node, self.between(node.lpar, node.rpar))
            return _Link(None, None, node, node.span)
        label, _, node = c
        return _Link(label.value, self.t(label), _node(node), self.between(label, _last(node)))

    def seq(self, c: list) -> ast.Seq:
        return ast.Seq(c[0], c[0].span)

    def concat(self, c: list) -> ast.Concat:  # "concat" [call_args] body
        keyword, call_args, body = c
        args, keywords = call_args if call_args is not None else ((), ())
        return ast.Concat(args, keywords, body, self.between(keyword, body.span))

    def add(self, c: list) -> ast.Add:  # "add" body
        return ast.Add(c[1], self.between(c[0], c[1].span))

    def repeat(self, c: list) -> ast.Repeat:  # "repeat" expr ["as" (NAME | STRING)] body
        keyword, count, _, tok, body = c
        index, pattern = "i", None
        if tok is not None and tok.type == "STRING":
            pattern = self.string(tok)
        elif tok is not None:
            index = str(tok)
        return ast.Repeat(_node(count), index, pattern, body, self.between(keyword, body.span))

    def if_step(self, c: list) -> ast.If:  # "if" expr body ["else" (body | if_step)]
        keyword, cond, then, _, orelse = c
        return ast.If(_node(cond), then, orelse,
                      self.between(keyword, (then if orelse is None else orelse).span))

    def while_step(self, c: list) -> ast.While:  # "while" expr body
        keyword, cond, body = c
        return ast.While(_node(cond), body, self.between(keyword, body.span))

    def path(self, c: list) -> ast.Path:  # NAME ("." (NAME | INT))*
        return ast.Path(tuple(str(p) for p in c), self.between(c[0], c[-1]))

    def init_section(self, c: list) -> ast.InitSection:  # "init" "{" rules and separators "}"
        rules = tuple(r for r in c if isinstance(r, ast.InitRule))
        return ast.InitSection(rules, self.between(c[0], c[-1]))

    def init_rule(self, c: list) -> ast.InitRule:  # (path | STRING) ["in" STRING] ":" chain
        selector, within, links = c
        first = selector
        if isinstance(selector, Token):
            selector = ast.Str(self.string(selector), self.t(selector))
        else:
            first = selector.span
        if within is not None:
            within = ast.Str(self.string(within), self.t(within))
        chain = self.chain_node(links)
        return ast.InitRule(selector, within, chain, self.between(first, chain.span))

    # expressions
    def expr(self, c: list) -> Any:  # operand | head operand | ternary
        if len(c) == 1:
            return self.operand(c[0])
        items = c[0]
        items.append(self.operand(c[1]))
        return self.climb(items, 0, 0)[0]

    def ternary(self, c: list) -> ast.Ternary:  # flat "if" flat "else" expr
        then, cond, orelse = self.climb(c[0], 0, 0)[0], self.climb(c[1], 0, 0)[0], c[2]
        return ast.Ternary(_node(cond), _node(then), _node(orelse),
                           self.between(_first(then), _last(orelse)))

    def flat(self, c: list) -> list:  # operand | head operand: the items, in order
        if len(c) == 1:
            return [self.operand(c[0])]
        items = c[0]
        items.append(self.operand(c[1]))
        return items

    def head(self, c: list) -> list:  # the items so far, in order
        first = c[0]
        if first.__class__ is list:           # head MINUS | head operand operator ["not"...]
            if len(c) == 2:
                first.append(c[1])
            else:
                first.append(self.operand(c[1]))
                first += c[2:]
            return first
        if first.__class__ is Token and first.type in _PREFIXES:   # "not"... | MINUS
            return c
        c[0] = self.operand(first)            # operand operator ["not"...]
        return c

    def operand(self, item: Any) -> Any:
        """The node for an operand: a token becomes a name or a literal."""
        if item.__class__ is not Token:
            return item
        kind = item.type
        span = _Span(self.file, item.line, item.column, item.end_line, item.end_column)
        if kind == "NAME":
            return _Name(item.value, span)
        if kind == "INT":
            return _Num(int(item), span)
        if kind == "FLOAT":
            return _Num(float(item), span)
        if kind == "STRING":
            return _Str(self.string(item), span)
        return _Lit(_CONSTANTS[kind], span)

    def climb(self, items: list, i: int, floor: int) -> tuple[Any, int]:
        """The expression at ``items[i]`` that binds tighter than ``floor``, and where it ends."""
        left = items[i]
        i += 1
        if left.__class__ is Token:           # a prefix operator
            if left.type == "NOT":
                operand, i = self.climb(items, i, _NOT_OPERAND)
                left = ast.Not(_node(operand), self.between(left, _last(operand)))
            else:
                operand, i = self.climb(items, i, _NEG_OPERAND)
                left = self.negate(left, operand)
        compared = None                       # the comparison already made at this level
        file = self.file
        while i < len(items):
            op = items[i]
            power = _BINARY[op.type]
            if power < floor:
                break
            if power == _COMPARISON:
                if compared is not None:
                    self.chained(items, i, left)
                compared = op
            right = items[i + 1]
            if right.__class__ is not Token and (i + 2 == len(items) or
                                                 _BINARY[items[i + 2].type] <= power
                                                 and power != _POWER):
                i += 2                        # an operand that the next operator leaves alone
            else:
                right, i = self.climb(items, i + 1, power if power == _POWER else power + 1)
            if left.__class__ is _Paren:
                first, left = left.lpar, left.node
            else:
                first = left.span
            if right.__class__ is _Paren:
                last, right = right.rpar, right.node
            else:
                last = right.span
            span = _Span(file, first.line, first.column, last.end_line, last.end_column)
            if power > _AND:
                left = _BinOp(op.value, left, right, span)
            else:
                left = _BoolOp(op.value, left, right, span)
        return left, i

    def negate(self, minus: Token, operand: Any) -> ast.Expr:
        span = self.between(minus, _last(operand))
        node = _node(operand)
        if isinstance(node, ast.Num):         # fold -3 into a literal
            return _Num(-node.value, span)
        return ast.UnOp(str(minus), node, span)

    def chained(self, items: list, i: int, left: ast.BinOp) -> None:
        """``a < b < c``: an error at the second comparison, with the conjunction to write."""
        op = items[i]
        right = self.climb(items, i + 1, _COMPARISON + 1)[0]
        parts = [self.quote(left.left), left.op, self.quote(left.right), op,
                 self.quote(_node(right))]
        if None in parts:
            hint = "write `a < b and b < c`"
        else:
            a, first, b, second, c = parts
            hint = f"write `{a} {first} {b} and {b} {second} {c}`"
        raise SpecError([Diagnostic("syntax error", "comparisons cannot be chained",
                                    self.t(op), hint=hint)])

    def quote(self, node: ast.Expr) -> str | None:
        """The source text of a short, one-line expression."""
        span = node.span
        if span.line != span.end_line or span.end_column - span.column > _LONGEST_QUOTED:
            return None
        lines = self.text.splitlines()
        return lines[span.line - 1][span.column - 1:span.end_column - 1]

    def paren(self, c: list) -> _Paren:  # "(" expr ")"
        return _Paren(_node(c[1]), c[0], c[2])

    def call(self, c: list) -> ast.Call:  # operand "(" [args] [argument] ")"
        func = self.operand(c[0])
        if func.__class__ is _Paren:
            first, func = func.lpar, func.node
        else:
            first = func.span
        rpar = c[-1]
        args, keywords = _split(self.arguments(c, 1))
        return _Call(func, args, keywords,
                     _Span(self.file, first.line, first.column, rpar.end_line, rpar.end_column))

    def arguments(self, c: list, opening: int) -> list:
        """The items between the bracket ``c[opening]`` and the last child (the closing one):
        [all but the last, each with its comma] [the last, if it has no comma]."""
        inside = len(c) - opening - 2
        if inside == 0:
            return []
        last = c[-2]
        if last.__class__ is list:
            return last
        if inside == 1:
            return [last.node if last.__class__ is _Paren else last]
        items = c[-3]
        items.append(last.node if last.__class__ is _Paren else last)
        return items

    def index(self, c: list) -> ast.Index:  # operand "[" (expr | subscripts) "]"
        value, _, inside, rsqb = c
        value = self.operand(value)
        items = tuple(inside) if inside.__class__ is list else (_node(inside),)
        return ast.Index(_node(value), items, self.between(_first(value), rsqb))

    def subscripts(self, c: list) -> list:  # items, commas between, maybe one after the last
        return [ast.Ellipsis(self.t(item)) if item.__class__ is Token else _node(item)
                for item in c if item.__class__ is not Token or item.type == "ELLIPSIS"]

    def slice(self, c: list) -> ast.Slice:  # [start] ":" [stop] [":" step]
        parts: list[Any] = [None, None, None]
        at = 0
        for child in c:
            if child.__class__ is Token:
                at += 1
            else:
                parts[at] = _node(child)
        first, last = c[0], c[-1]
        return ast.Slice(*parts, self.between(first if first.__class__ is Token else
                                              _first(first), last if last.__class__ is Token
                                              else _last(last)))

    def attr(self, c: list) -> ast.Attr:  # operand "." NAME
        value, _, name = c
        value = self.operand(value)
        return ast.Attr(_node(value), str(name), self.between(_first(value), name))

    def list_lit(self, c: list) -> ast.ListLit:  # "[" [items] [expr] "]"
        return _ListLit(tuple(self.arguments(c, 0)), self.between(c[0], c[-1]))

    def call_args(self, c: list) -> tuple[tuple, tuple]:
        # "(" [args] [argument] ")" -> (args, keywords)
        return _split(self.arguments(c, 0))

    def items(self, c: list) -> list:  # [items] expr ",": the expressions
        if len(c) == 2:
            return [_node(c[0])]
        c[0].append(_node(c[1]))
        return c[0]

    args = items                              # [args] (expr | keyword) ","

    def keyword(self, c: list) -> ast.Keyword:  # NAME "=" expr
        name, _, value = c
        if value.__class__ is _Paren:
            last, value = value.rpar, value.node
        else:
            last = value.span
        return _Keyword(name.value, value,
                        _Span(self.file, name.line, name.column, last.end_line, last.end_column))


def _split(arguments: list) -> tuple[tuple, tuple]:
    """Positional arguments and keywords, each in order."""
    for item in arguments:
        if item.__class__ is ast.Keyword:
            return (tuple(a for a in arguments if a.__class__ is not ast.Keyword),
                    tuple(a for a in arguments if a.__class__ is ast.Keyword))
    return tuple(arguments), ()


_BUILDER = _AstBuilder()
_POSTLEX = _PostLexer()


@lru_cache(maxsize=1)
def _parser() -> tuple[lark.Lark, _PostLexer]:
    """The parser, with netspec's lexer; it builds the AST as it goes (``_BUILDER``)."""
    key = grammar_path().read_text() + FsPath(__file__).read_text() + sys.version
    path = _cache_file(key, "parser")
    with paused(promote=True):     # the parser's ~30,000 objects live on
        parser = _unpickled(path) if path else None
        if parser is None:
            parser = _lark(_Lexer, "fast", transformer=_BUILDER)
            if path:
                _pickle(parser, path)
    return parser, _POSTLEX


# The fast parser is cached whole, pickled: loading it takes a third of the time that Lark
# takes to rebuild its tables from its own cache (about 8 ms against 25), which every
# `netspec check` pays. The file is in the user's own cache directory, as Lark's is, and is
# keyed by the grammar, this module's source, Lark's version and Python's.

# objects a parser refers to that must stay the very ones in this process: Lark compares
# parse actions by identity
_BY_NAME = {"builder": _BUILDER, "shift": lark.parsers.lalr_analysis.Shift,
            "reduce": lark.parsers.lalr_analysis.Reduce}
_NAME_OF = {id(obj): name for name, obj in _BY_NAME.items()}


class _Pickler(pickle.Pickler):
    """Pickles a parser; modules and the objects of ``_BY_NAME`` go by name."""

    def persistent_id(self, obj: Any) -> str | None:
        name = _NAME_OF.get(id(obj))
        if name is not None:
            return name
        if isinstance(obj, types.ModuleType):
            return "module:" + obj.__name__
        return None


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: str) -> Any:
        if pid.startswith("module:"):
            return sys.modules[pid[len("module:"):]]
        return _BY_NAME[pid]


def _unpickled(path: str) -> lark.Lark | None:
    try:
        with open(path, "rb") as f:
            parser = _Unpickler(f).load()
    except Exception:      # absent, unreadable, or from another version: build it afresh
        return None
    return parser if isinstance(parser, lark.Lark) else None


def _pickle(parser: lark.Lark, path: str) -> None:
    """Write the cache file whole or not at all: to a temporary file, then renamed."""
    folder = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".parser-", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            _Pickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(parser)
        os.replace(tmp, path)
    except Exception:      # a full disk or an unpicklable part: parse without the cache
        try:
            os.unlink(tmp)
        except OSError:
            pass


@lru_cache(maxsize=1)
def _reference_parser() -> lark.Lark:
    """The same parser with Lark's contextual lexer, for the errors."""
    return _lark("contextual", "contextual", transformer=_BUILDER, postlex=_POSTLEX)


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
_OPERATORS = {"'%'", "'*'", "'**'", "'+'", "'-'", "'/'", "'//'", "'@'", "'and'", "'or'",
              "a comparison"}
_POSTFIX = {"'('", "'.'", "'['"}     # a call, an attribute or an index
# what may begin an expression: listed in full, they would bury the one closer that may also come
_EXPRESSION_START = {"'('", "'-'", "'['", "'false'", "'none'", "'not'", "'true'", "a name",
                     "a number", "a string", "an integer"}


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


def _expected(exc: lark.exceptions.UnexpectedToken) -> set[str]:
    """The terminals that the parser, where it stopped, would take next.

    The state's row lists them, and also terminals on which it only reduces: LALR merges the
    look-aheads of states alike, so a row inside a call lists ']', '}' and ';' too, which the
    states reached by reducing then refuse. Each terminal of the row is fed to a copy of the
    parser, without the callbacks, and kept if it is shifted. (Where Lark's contextual lexer
    finds no terminal of the state, its error lists what that state's lexer reads instead: the
    newline, which the post-lexer always takes, but no keyword; the row lists them all.)"""
    state = exc.state
    try:
        row = state.parse_conf.states[state.position]
    except AttributeError:
        return set(exc.expected)
    conf = copy.copy(state.parse_conf)
    conf.callbacks = {}
    accepted = set()
    for name in row:
        if not name.isupper():
            continue
        trial = type(state)(conf, state.lexer, list(state.state_stack), list(state.value_stack))
        try:
            trial.feed_token(Token(name, ""), name == "$END")
        except lark.exceptions.UnexpectedInput:
            continue
        accepted.add(name)
    return accepted


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line"
    return f"'{tok.value}'"


_TOP_LEVEL = ("block", "import", "init")
# keywords that begin a statement, and so a statement written outside a block
_STATEMENT_KEYWORDS = {"INPUT", "LET", "CONST", "PARAM", "TIE", "RETURN", "EXPECT", "CONCAT",
                       "ADD", "REPEAT", "IF", "WHILE", "NOT", "TRUE", "FALSE", "NONE"}
_NAMING = {"INPUT", "LET", "CONST", "PARAM", "BLOCK"}   # keywords followed by a name
_NUMBER_BEFORE = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
_DOTTED_BEFORE = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+)*\.\Z")
_STATEMENT_START = re.compile(r"(?:\A|[{;])(?:\s|#[^\n]*)*\Z")
_REPEAT_BEFORE = re.compile(r"\brepeat\s+(\w+)\s*\Z")            # `repeat i` before `in`
_RANGE_AFTER = re.compile(r"\s+in\s+range\(\s*(\w+)\s*\)")        # ` in range(3)`
_FOR_BEFORE = re.compile(r"(?:\A|[{;\n])[ \t]*for[ \t]+\Z")       # `for` before `i in ...`
_NAME_BEFORE = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\Z")               # `layer` before `{i}:`
_PATTERN_AFTER = re.compile(r"\{(\w+)\}(\w*)\s*:")                   # `{i}:` or `{i}_fc:`
_TUPLE_BEFORE = re.compile(r"(?:[=(,\[]|\A)\s*\(([^()\n]*)\Z")         # `=(3` before `, 3)`


def _is_keyword(tok: Any, parser: lark.Lark) -> bool:
    """Whether ``tok`` was read as a keyword ('repeat', 'if', ...)."""
    if tok.__class__ is not Token:
        return False
    try:
        pattern = parser.get_terminal(tok.type).pattern
    except KeyError:
        return False
    return isinstance(pattern, lark.lexer.PatternStr) and pattern.value.isalpha()


def _misread(exc: lark.exceptions.UnexpectedToken, file: str, text: str, parser: lark.Lark,
             expected: set[str], hint: str | None) -> Diagnostic | None:
    """A message for an error that the unexpected token alone does not explain: what the text
    around it shows was meant."""
    tok = exc.token
    before = text[:tok.start_pos]
    line = tok.line
    if tok.type == "NAME":                                    # `Linear(3x)`
        number = _NUMBER_BEFORE.search(before)
        if number:
            joined = (f"an exponent needs digits, as in '{number.group()}e3'"
                      if tok.value in ("e", "E") else
                      f"write '{number.group()} * {tok.value}' for a product")
            return Diagnostic("syntax error",
                              f"unexpected '{tok.value}' right after the number "
                              f"'{number.group()}'", _span(file, tok),
                              hint=f"{hint}; {joined}" if hint else joined)
    repeat = _REPEAT_BEFORE.search(before)
    if repeat and tok.value == "in":                          # `repeat i in 3 { ... }`
        brace = text.find("{", tok.end_pos)
        count = text[tok.end_pos:brace if brace >= 0 else None].strip().split("\n")[0] or "3"
        return Diagnostic("syntax error", f"unexpected {_token_text(tok)}", _span(file, tok),
                          hint=f"the count comes first and the index after 'as': "
                               f"`repeat {count} as {repeat.group(1)} {{ ... }}`")
    if repeat and tok.type == "NAME":                         # `repeat 3 times { ... }`
        return Diagnostic("syntax error", f"unexpected {_token_text(tok)}", _span(file, tok),
                          hint=f"write `repeat {repeat.group(1)} {{ ... }}`, or `repeat "
                               f"{repeat.group(1)} as i {{ ... }}` to name the index")
    if tok.type == "NAME" and _FOR_BEFORE.search(before):    # `for i in range(3) { ... }`
        start = before.rfind("for")
        column = tok.column - (tok.start_pos - start)
        bound = _RANGE_AFTER.match(text, tok.end_pos)
        count = bound.group(1) if bound else "3"
        return Diagnostic("syntax error", "netspec has no 'for'",
                          Span(file, line, column, line, column + 3),
                          hint=f"repeat a body with `repeat {count} as {tok.value} {{ ... }}`")
    opened = _TUPLE_BEFORE.search(before) if tok.value == "," else None
    close = text.find(")", tok.end_pos) if opened else -1
    if opened and close >= 0 and "\n" not in text[tok.end_pos:close]:   # kernel_size=(3, 3)
        items = ", ".join(part.strip() for part in
                          (opened.group(1) + "," + text[tok.end_pos:close]).split(","))
        return Diagnostic("syntax error", "netspec has no tuples", _span(file, tok),
                          hint=f"write a list: [{items}]")
    name = _NAME_BEFORE.search(before) if tok.value == "{" else None
    pattern = _PATTERN_AFTER.match(text, tok.start_pos) if name else None
    if pattern:                                               # `layer{i}: Linear(8)` in a repeat
        label = f"{name.group(1)}{{i}}{pattern.group(2)}"      # a pattern's index is i
        return Diagnostic("syntax error", f"a step's name cannot hold {{{pattern.group(1)}}}",
                          _span(file, tok),
                          hint=f"name each copy of a repeat with a pattern: `repeat n as "
                               f"\"{label}\" {{ ... }}`")
    if tok.type in ("INT", "FLOAT"):                          # `Dropout(0.1.5)`
        dotted = _DOTTED_BEFORE.search(before)
        if dotted:
            end = re.compile(r"[0-9.]*").match(text, tok.end_pos).end()
            literal = text[dotted.start():end].rstrip(".")
            column = tok.column - (tok.start_pos - dotted.start())
            return Diagnostic("syntax error", f"malformed number '{literal}'",
                              Span(file, line, column, line, column + len(literal)),
                              hint="a number has at most one decimal point, as in 0.15")
    if tok.type == "COMP_OP" and tok.value.startswith(">") and before.endswith("-"):
        span = Span(file, line, tok.column - 1, line, tok.column + 1)   # '->' read as '-' '>'
        if _STATEMENT_START.search(before[:-1]):
            return Diagnostic("syntax error", "a chain cannot start with '->'", span,
                              hint="remove it: the first layer of a chain takes its input "
                                   "without '->'")
        if before[:-1].rstrip().endswith("->"):
            return Diagnostic("syntax error", "'->' twice in a row", span,
                              hint="remove one of them")
        return Diagnostic("syntax error", "unexpected '->'", span,
                          hint="'->' comes after a whole layer, as in `Linear(10) -> ReLU()`")
    if tok.type in ("COLON", "EQUAL"):                        # `repeat: Linear(10)`
        stack = getattr(exc.state, "value_stack", None)
        previous = stack[-1] if stack else None
        if (_is_keyword(previous, parser) and previous.type not in _NAMING
                and previous.end_pos <= tok.start_pos):
            return Diagnostic("syntax error",
                              f"'{previous.value}' is a keyword and cannot be used as a name",
                              _span(file, previous),
                              hint=f"choose another name, such as '{previous.value}_'")
    if tok.type == "ELSE":
        return Diagnostic("syntax error", "'else' without a matching 'if'", _span(file, tok),
                          hint="'else' follows the body of an 'if': "
                               "`if cond { ... } else { ... }`")
    if "BLOCK" in expected and (tok.type == "NAME" or tok.type in _STATEMENT_KEYWORDS):
        meant = difflib.get_close_matches(tok.value, _TOP_LEVEL, n=1, cutoff=0.75)
        if tok.type == "NAME" and meant:
            return Diagnostic("syntax error", f"unexpected {_token_text(tok)}", _span(file, tok),
                              hint=f"did you mean '{meant[0]}'?")
        return Diagnostic("syntax error", f"unexpected {_token_text(tok)} outside a block",
                          _span(file, tok),
                          hint="statements go inside a block, as in `block Net { ... }`; only "
                               "'block', 'import' and 'init' may appear at the top level")
    if tok.type == "NAME" and {"_ARROW", "SEMICOLON"} <= expected and hint:
        return Diagnostic("syntax error", f"unexpected {_token_text(tok)}", _span(file, tok),
                          hint=f"{hint}; write '->' between two layers to chain them")
    return None


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
    names = _expected(exc)
    expected = {_describe(t, parser) for t in names if not t.startswith("__")}
    if postlex.open and postlex.open[-1].type in ("LPAR", "LSQB"):
        expected.discard("a new line")
    if _OPERATORS <= expected:          # after an operand, which anything may follow
        expected = (expected - _OPERATORS - _POSTFIX) | {"an operator"}
        if expected & _STRUCTURAL and tok.type not in ("$END",):
            expected &= _STRUCTURAL  # "expected ',' or ')'" says more than every operator
    elif _EXPRESSION_START <= expected:     # where an operand may start: after '[', ',', '='
        expected = (expected - _EXPRESSION_START) | {"an expression"}
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
    opener = postlex.open[-1] if postlex.open else None
    if not (opener is not None and opener.type in _INLINE and tok.line > opener.line):
        misread = _misread(exc, file, text, parser, names, hint)   # else: "never closed", below
        if misread is not None:
            return misread
    if tok.type in ("INT", "FLOAT") and exc.state is not None and "NAME" in exc.expected:
        return Diagnostic("syntax error", f"unexpected number {_token_text(tok)}", span, hint=hint)
    notes: tuple[str, ...] = ()
    if opener is not None and opener.type in _INLINE and tok.line > opener.line:
        closer = ")" if opener.type == "LPAR" else "]"
        notes = (f"the '{opener.value}' at {file}:{opener.line}:{opener.column} is still open",)
        hint = f"the '{opener.value}' on line {opener.line} is never closed: add '{closer}'"
    if tok.type == "DOT" and text[tok.end_pos:tok.end_pos + 1].isdigit():
        hint = "write numbers with a leading digit: 0.5"
    return Diagnostic("syntax error", f"unexpected {_token_text(tok)}", span, hint=hint,
                      notes=notes)


def parse(text: str, file: str = "<string>") -> ast.SpecFile:
    """Parse one ``.net`` source text into a ``SpecFile``; syntax errors raise ``SpecError``."""
    parser = _parser()[0]
    depth = sys.getrecursionlimit()
    sys.setrecursionlimit(max(depth, _RECURSION))   # `a ** b ** ...` nests as it is read
    # many small objects, alive until the AST is built, and the AST lives on: promoted
    try:
        with paused(promote=True):
            try:
                return _parse_with(parser, text, file)
            except _TooMany as exc:     # the parse so far was good: no need to parse it again
                raise _too_many(exc, SourceMap({file: text})) from None
            except (lark.exceptions.UnexpectedInput, _Unlexable, _Unparsable, _TooDeep, SpecError,
                    RecursionError):
                # the text has an error: parse it again with Lark's own loop and lexer, which
                # read the same tokens up to the error and report the error as Lark finds it
                return _located(_reference_parser(), text, file)
    finally:
        sys.setrecursionlimit(depth)


def _parse_with(parser: lark.Lark, text: str, file: str) -> ast.SpecFile:
    _POSTLEX.text = text
    _BUILDER.reset(file, text)
    if isinstance(parser.parser.lexer, _Lexer):
        return _drive(parser, text)
    return parser.parse(text)           # the reference parser: Lark's loop and Lark's lexer


def _drive(parser: lark.Lark, text: str) -> ast.SpecFile:
    """Lark's LALR loop (``ParserState.feed_token``) over netspec's lexer, on Lark's own tables.

    Lark's loop hashes the rule of every reduction (``Rule.__hash__``, in Python) to find its
    callback and compares it with the end state (``Rule.__eq__``): about a sixth of parsing.
    Here each reduction is found by the rule's id. A token the table does not take raises
    ``_Unparsable``; ``parse`` then parses again with Lark's own loop, which reports the error.
    """
    table = parser.parser.parser.parser.parse_table
    states = table.states
    reductions = _reductions(parser)
    end_state = table.end_states["start"]
    state_stack = [table.start_states["start"]]
    value_stack: list[Any] = []
    conf = lark.parsers.lalr_parser_state.ParseConf(table, {}, "start")
    parser_state = lark.parsers.lalr_parser_state.ParserState(conf, None, state_stack, value_stack)
    shift = lark.parsers.lalr_analysis.Shift
    push_state, push_value = state_stack.append, value_stack.append
    end = Token("$END", "")
    try:
        for token in itertools.chain(parser.parser.lexer.lex(_Text(text), parser_state), (end,)):
            kind = token.type
            while True:
                action, arg = states[state_stack[-1]][kind]
                if action is shift:
                    push_state(arg)
                    push_value(token)
                    break
                size, callback, origin = reductions[id(arg)]
                if size:
                    children = value_stack[-size:]
                    del state_stack[-size:]
                    del value_stack[-size:]
                else:
                    children = []
                push_state(states[state_stack[-1]][origin][1])
                push_value(callback(children))
                if token is end and state_stack[-1] == end_state:
                    return value_stack[-1]
    except KeyError:                             # no action for this token in this state
        pass
    raise _Unparsable()


class _Text:
    """What ``_Lexer.lex`` reads of Lark's lexer state: the text."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


@lru_cache(maxsize=4)
def _reductions(parser: lark.Lark) -> dict[int, tuple[int, Any, str]]:
    """For each rule of the parser's table, by the rule's id: the number of values it takes,
    its callback and the name of the symbol it makes."""
    inner = parser.parser.parser.parser
    return {id(rule): (len(rule.expansion), callback, rule.origin.name)
            for rule, callback in inner.callbacks.items()}


def _too_many(exc: _TooMany, sources: SourceMap) -> LimitError:
    limit = current_limits().max_nodes
    return LimitError([Diagnostic("limit error", f"this file has more than {limit:,} statements",
                                  exc.span, hint="raise Limits.max_nodes if this is intended")],
                      sources)


def _located(parser: lark.Lark, text: str, file: str) -> ast.SpecFile:
    """Parse ``text``, turning every error into a located ``SpecError``."""
    sources = SourceMap({file: text})
    try:
        return _parse_with(parser, text, file)
    except lark.exceptions.UnexpectedInput as exc:
        raise SpecError([_syntax_diagnostic(exc, file, text, parser, _POSTLEX)],
                        sources) from None
    except _TooDeep as exc:
        raise LimitError([Diagnostic("limit error", "brackets nest too deeply",
                                     _span(file, exc.tok))], sources) from None
    except _TooMany as exc:
        raise _too_many(exc, sources) from None
    except SpecError as exc:      # from the AST builder: a bad string escape, a chained comparison
        raise SpecError(exc.diagnostics, sources) from None
    except RecursionError:
        raise LimitError([Diagnostic("limit error", "this spec nests too deeply to compile",
                                     Span(file, 1, 1, 1, 2),
                                     hint="split long expressions into named values")],
                         sources) from None
