"""``netspec fmt``: one canonical layout for ``.net`` files.

``format_source(text)`` returns ``text`` laid out by these rules; it changes whitespace,
``;`` separators, trailing commas and empty ``()`` only, so the formatted spec parses to the
same syntax tree and builds the same model (``format_source`` checks this before returning).

Layout
  * Indentation is 4 spaces per ``{ }`` level; no tabs, no trailing spaces, and the file ends
    with exactly one newline (an empty file stays empty).
  * One statement per line: statements joined with ``;`` are split onto separate lines, and a
    trailing ``;`` is dropped. **Exception, one-line bodies**: a ``{ ... }`` body (a block,
    a nested sequence, ``concat``/``add`` branches, ``repeat``, ``if``/``else``, ``while``,
    ``init``) that is written on one line in the source stays on one line, as
    ``{ a; b }``, if it fits in 100 columns; otherwise it is expanded to one statement per
    line, and from then on it stays expanded. An empty body is ``{}``.
  * Spacing: one space around binary operators (``x @ w + 1``), ``->``, ``=`` in ``let``,
    ``const``, ``param``, ``tie``, assignments and block parameter defaults; one space after
    commas and after the ``:`` of ``name: Step``, ``input x: [...]``, ``p: int`` and init
    rules; none around ``=`` in keyword arguments (``Linear(10, bias=false)``), none inside
    brackets, none after a unary ``-``. ``else`` follows the ``}`` of its ``if`` on the same
    line (``} else {``).
  * Redundant parentheses are kept as written; empty parentheses after ``block Name`` and
    ``concat`` are dropped (they mean nothing).
  * Blank lines: exactly one between top-level items (imports that follow each other keep
    their own spacing); inside bodies, a run of blank lines becomes one, and blank lines
    right after ``{`` or before ``}`` are removed.
  * Long lines: a chain that does not fit in 100 columns is broken before every ``->``, the
    continuation lines indented one level deeper than the statement; a chain whose last step
    opens a ``{`` body stays on one line when only the body has to be expanded. A call,
    list or block header that still does not fit puts one argument per line, indented one
    level, with a trailing comma. Nothing else is broken; an overlong name or string stays.

Comments
  Every comment is kept, in order, with its text unchanged (trailing spaces removed).
  A comment on a line of its own stays on its own line, indented like the code that follows
  it (or like the body's statements, at the end of a body). A comment after code stays
  after the same code, two spaces after it; the trailing comments of consecutive lines
  with the same indentation are aligned to one column. A comment inside ``( )`` or ``[ ]``
  puts that call or list one argument per line; a comment between the links of a chain
  breaks the chain before every ``->``.

``format_file(path)`` formats a file in place (atomically) and says whether it changed;
``spec_files(paths)`` expands folders to the ``.net`` files under them.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import os
import re
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import lark
from lark import Token, Tree

from netspec.errors import Diagnostic, LimitError, SourceMap, Span
from netspec.program import spec_files

WIDTH = 100
INDENT = 4

__all__ = ["WIDTH", "format_source", "format_file", "is_formatted", "spec_files"]


# ---- the document algebra (after Wadler's "prettier printer") ---------------------------------

class _Mark:
    """A line-break or marker singleton."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


LINE = _Mark("LINE")            # a space, or a line break when its group is broken
SOFT = _Mark("SOFT")            # nothing, or a line break when its group is broken
NL = _Mark("NL")                # always a line break (none if the line is still empty)
BLANK = _Mark("BLANK")          # a blank line
BREAK_PARENT = _Mark("BREAK")   # every enclosing group (up to a barrier) must break


class Group:
    """Printed flat if it fits on the line, else broken. ``barrier``: an always-broken body
    whose inner line breaks do not force the enclosing groups to break."""

    __slots__ = ("doc", "broken", "barrier")

    def __init__(self, doc: Any, broken: bool = False, barrier: bool = False):
        self.doc, self.broken, self.barrier = doc, broken, barrier


class Nest:
    __slots__ = ("n", "doc")

    def __init__(self, n: int, doc: Any):
        self.n, self.doc = n, doc


class IfBreak:
    """``broken`` inside a broken group, ``flat`` inside a flat one."""

    __slots__ = ("broken", "flat")

    def __init__(self, broken: Any, flat: Any = ""):
        self.broken, self.flat = broken, flat


class LineSuffix:
    """A trailing comment: printed at the end of the line, just before the next line break."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _State:
    __slots__ = ("doc", "force", "has_break")

    def __init__(self, doc: Any, force: tuple[Group, ...] = ()):
        self.doc, self.force, self.has_break = doc, force, False


class Choice:
    """Layouts tried in order: the first whose first line fits is printed (the last if none)."""

    __slots__ = ("states",)

    def __init__(self, states: list[_State]):
        self.states = states


def _children(doc: Any) -> list:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, (Nest, Group)):
        return [doc.doc]
    if isinstance(doc, IfBreak):
        return [doc.broken, doc.flat]
    if isinstance(doc, Choice):
        return [state.doc for state in doc.states]
    return []


def _propagate(root: Any) -> None:
    """Mark every group that holds a BREAK_PARENT (not behind a barrier) as broken, and note
    which layouts of each Choice hold one. Iterative: documents nest as deep as specs do."""
    memo: dict[int, bool] = {}       # id(doc) -> holds a BREAK_PARENT that reaches its parent
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        doc, done = stack.pop()
        key = id(doc)
        if key in memo and not done:
            continue
        children = _children(doc)
        if not done:
            stack.append((doc, True))
            stack.extend((c, False) for c in children if id(c) not in memo)
            continue
        if doc is BREAK_PARENT:
            result = True
        elif isinstance(doc, Group):
            inner = memo[id(doc.doc)]
            if inner:
                doc.broken = True
            result = inner and not doc.barrier
        elif isinstance(doc, Choice):
            for state in doc.states:
                state.has_break = memo[id(state.doc)]
            result = any(state.has_break for state in doc.states)
        else:
            result = any(memo[id(c)] for c in children)
        memo[key] = result


_BREAK, _FLAT = 0, 1


@dataclasses.dataclass
class _OutLine:
    indent: int
    code: str
    comment: str | None = None


class _Printer:
    def __init__(self, width: int = WIDTH):
        self.width = width
        self.lines: list[_OutLine] = []
        self.parts: list[str] = []
        self.col = 0
        self.indent = 0
        self.suffixes: list[str] = []

    # output
    def _text(self, text: str) -> None:
        if not self.parts:
            text = text.lstrip(" ")
            if not text:
                return
            self.col = self.indent
        self.parts.append(text)
        self.col += len(text)

    def _newline(self, indent: int) -> None:
        if self.parts or self.suffixes:
            code = "".join(self.parts).rstrip()
            comment = " ".join(self.suffixes) if self.suffixes else None
            if not code and comment is not None:
                code, comment = comment, None
            self.lines.append(_OutLine(self.indent, code, comment))
            self.parts, self.suffixes = [], []
        self.indent = indent
        self.col = indent

    def _blank(self, indent: int) -> None:
        self._newline(indent)
        if self.lines and self.lines[-1].code:
            self.lines.append(_OutLine(0, ""))

    def _fits(self, nxt: list, rest: list, width: int, force: Iterable[Group] = ()) -> bool:
        forced = {id(g) for g in force}
        stack = list(nxt)
        rest_index = len(rest)
        at_start = not self.parts
        while True:
            if width < 0:
                return False
            if not stack:
                if rest_index == 0:
                    return True
                rest_index -= 1
                stack.append(rest[rest_index])
                continue
            indent, mode, doc = stack.pop()
            if isinstance(doc, str):
                if at_start:
                    doc = doc.lstrip(" ")
                if doc:
                    at_start = False
                width -= len(doc)
            elif isinstance(doc, list):
                stack.extend((indent, mode, d) for d in reversed(doc))
            elif isinstance(doc, Nest):
                stack.append((indent + doc.n, mode, doc.doc))
            elif isinstance(doc, Group):
                broken = doc.broken or id(doc) in forced
                stack.append((indent, _BREAK if broken else mode, doc.doc))
            elif isinstance(doc, Choice):
                state = doc.states[0] if mode == _FLAT else doc.states[-1]
                stack.append((indent, mode, state.doc))
            elif isinstance(doc, IfBreak):
                stack.append((indent, mode, doc.broken if mode == _BREAK else doc.flat))
            elif doc is LINE or doc is SOFT:
                if mode == _BREAK:
                    return True
                width -= 1 if doc is LINE else 0
            elif doc is NL or doc is BLANK:
                return True

    def print(self, doc: Any) -> list[_OutLine]:
        _propagate(doc)
        cmds: list = [(0, _BREAK, doc)]
        while cmds:
            indent, mode, doc = cmds.pop()
            if isinstance(doc, str):
                self._text(doc)
            elif isinstance(doc, list):
                cmds.extend((indent, mode, d) for d in reversed(doc))
            elif isinstance(doc, Nest):
                cmds.append((indent + doc.n, mode, doc.doc))
            elif isinstance(doc, Group):
                if doc.broken:
                    cmds.append((indent, _BREAK, doc.doc))
                elif mode == _FLAT:
                    cmds.append((indent, _FLAT, doc.doc))
                else:
                    flat = self._fits([(indent, _FLAT, doc.doc)], cmds, self.width - self._col())
                    cmds.append((indent, _FLAT if flat else _BREAK, doc.doc))
            elif isinstance(doc, Choice):
                if mode == _FLAT:
                    cmds.append((indent, _FLAT, doc.states[0].doc))
                    continue
                chosen = doc.states[-1]
                for state in doc.states[:-1]:
                    if not state.has_break and self._fits(
                            [(indent, _FLAT, state.doc)], cmds, self.width - self._col(),
                            state.force):
                        chosen = state
                        break
                for group in chosen.force:
                    group.broken = True
                cmds.append((indent, _BREAK, chosen.doc))
            elif isinstance(doc, IfBreak):
                cmds.append((indent, mode, doc.broken if mode == _BREAK else doc.flat))
            elif doc is LINE or doc is SOFT:
                if mode == _BREAK:
                    self._newline(indent)
                elif doc is LINE:
                    self._text(" ")
            elif doc is NL:
                self._newline(indent)
            elif doc is BLANK:
                self._blank(indent)
            elif isinstance(doc, LineSuffix):
                self.suffixes.append(doc.text)
        self._newline(0)
        return self.lines

    def _col(self) -> int:
        return self.col if self.parts else self.indent


def _render(lines: list[_OutLine]) -> str:
    """Join the printed lines, aligning trailing comments of consecutive same-indent lines."""
    while lines and not lines[-1].code:
        lines.pop()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.comment is None:
            out.append(" " * line.indent + line.code if line.code else "")
            i += 1
            continue
        j = i
        while (j < len(lines) and lines[j].comment is not None
               and lines[j].indent == line.indent):
            j += 1
        column = max(len(lines[k].code) for k in range(i, j)) + 2
        for k in range(i, j):
            code = " " * lines[k].indent + lines[k].code
            out.append(code.ljust(line.indent + column) + lines[k].comment)
        i = j
    return "\n".join(out) + "\n" if out else ""


# ---- parsing with comments ---------------------------------------------------------------------

@dataclasses.dataclass
class _Comment:
    pos: int
    line: int
    text: str
    own_line: bool     # nothing but whitespace before it on its line
    used: bool = False


class _CommentSink:
    def __init__(self) -> None:
        self.tokens: list[Token] = []

    def __call__(self, tok: Token) -> Token:
        self.tokens.append(tok)
        return tok


@lru_cache(maxsize=1)
def _cst_parser() -> tuple[lark.Lark, Any, _CommentSink]:
    """A parser for the same grammar that builds the concrete syntax tree and collects comments."""
    from netspec.parse import _lark, _PostLexer

    sink = _CommentSink()
    postlex = _PostLexer()
    parser = _lark("contextual", "fmt", propagate_positions=True, postlex=postlex,
                   lexer_callbacks={"COMMENT": sink})
    return parser, postlex, sink


def _start(node: Any) -> int:
    return node.start_pos if isinstance(node, Token) else node.meta.start_pos


def _end(node: Any) -> int:
    return node.end_pos if isinstance(node, Token) else node.meta.end_pos


def _start_line(node: Any) -> int:
    return node.line if isinstance(node, Token) else node.meta.line


def _end_line(node: Any) -> int:
    return node.end_line if isinstance(node, Token) else node.meta.end_line


def _present(children: Iterable[Any]) -> list[Any]:
    return [c for c in children if c is not None]


def _is(node: Any, *rules: str) -> bool:
    return isinstance(node, Tree) and node.data in rules


def _unroll(node: Tree) -> list[Any]:
    """The children of a left-recursive list (``stmts``, ``chain``, ``head``, ``items``, ``args``),
    in source order."""
    tails = []
    while node.children and _is(node.children[0], node.data):
        tails.append(node.children[1:])
        node = node.children[0]
    children = list(node.children)
    for tail in reversed(tails):
        children += tail
    return children


def _statements(tree: Tree) -> list[Any]:
    """The statements of a body, or the rules of an init section."""
    items: list[Any] = []
    for child in tree.children:
        if _is(child, "stmts"):
            items += [c for c in _unroll(child) if not _is(c, "sep")]
        elif _is(child, "init_rule"):
            items.append(child)
    return items


def _links(chain: Tree) -> list[tuple[Token | None, Any]]:
    """A chain's links: (label or None, step)."""
    links: list[tuple[Token | None, Any]] = []
    link: list[Any] = []
    for child in _unroll(chain) + [None]:
        if child is None or (isinstance(child, Token) and child.type == "_ARROW"):
            links.append((link[0], link[-1]) if len(link) > 1 else (None, link[0]))
            link = []
        else:
            link.append(child)
    return links


def _arguments(children: list[Any]) -> list[Any]:
    """The items between two brackets: ``[items or args] [the last item]``, commas dropped."""
    items: list[Any] = []
    for child in children:
        if _is(child, "items", "args"):
            items += [c for c in _unroll(child) if not isinstance(c, Token) or c.type != "COMMA"]
        else:
            items.append(child)
    return items


_BODY_LINKS = {"seq", "concat", "add", "repeat", "if_step", "while_step"}


class _Builder:
    """Turns the concrete syntax tree (plus comments) into a document."""

    def __init__(self, text: str, comments: list[_Comment]):
        self.text = text
        self.comments = comments               # in source order
        self.positions = [c.pos for c in comments]
        self.bodies: dict[int, Group] = {}     # id(body tree) -> its group (one-line bodies)

    # comments
    def _range(self, lo: int, hi: int) -> list[_Comment]:
        return self.comments[bisect.bisect_left(self.positions, lo):
                             bisect.bisect_left(self.positions, hi)]

    def take(self, lo: int, hi: int) -> list[_Comment]:
        """The comments in ``[lo, hi)`` not placed yet; they are placed by the caller."""
        found = [c for c in self._range(lo, hi) if not c.used]
        for c in found:
            c.used = True
        return found

    def has_comments(self, node: Tree) -> bool:
        return bool(self._range(_start(node), _end(node)))

    @staticmethod
    def gap(comments: list[_Comment]) -> list:
        """Comments between two tokens inside brackets, each ending its line."""
        doc: list = []
        for c in comments:
            doc += [NL, c.text, NL] if c.own_line else [LineSuffix(c.text), NL]
        if comments:
            doc.append(BREAK_PARENT)
        return doc

    def between(self, lo: int, hi: int) -> list:
        return self.gap(self.take(lo, hi))

    # top level
    def file(self, tree: Tree) -> Any:
        items = [c for c in tree.children if not _is(c, "sep")]
        return self.statements(items, 0, len(self.text), top=True)[0]

    def statements(self, items: list[Any], lo: int, hi: int, *, top: bool = False,
                   open_line: int | None = None) -> tuple[list, list[_Comment], list]:
        """Statements with the comments around them, one per line; also the comments on the
        line of ``{`` (for bodies) and each statement's own document."""
        after_open: list[_Comment] = []
        leading: list[list[_Comment]] = [[] for _ in range(len(items) + 1)]
        trailing: list[list[_Comment]] = [[] for _ in items]
        bounds = [lo] + [p for item in items for p in (_start(item), _end(item))] + [hi]
        for k in range(len(items) + 1):
            for c in self.take(bounds[2 * k], bounds[2 * k + 1]):
                if k > 0 and not c.own_line and c.line == _end_line(items[k - 1]):
                    trailing[k - 1].append(c)
                elif k == 0 and not c.own_line and c.line == open_line:
                    after_open.append(c)
                else:
                    leading[k].append(c)
        doc: list = []
        item_docs: list = []
        prev_line: int | None = None       # the last source line of the previous element
        prev_kind: str | None = None

        def separate(line: int, forced_blank: bool) -> None:
            if prev_line is None:
                if not top:
                    doc.append(NL)
                return
            doc.append(BLANK if forced_blank or line > prev_line + 1 else NL)

        for k in range(len(items) + 1):
            item = items[k] if k < len(items) else None
            kind = item.data if item is not None else None
            group_blank = (top and prev_kind is not None and item is not None
                           and not (prev_kind == kind == "import_stmt"))
            for i, c in enumerate(leading[k]):
                separate(c.line, group_blank and i == 0)
                doc.append(c.text)
                prev_line = c.line
            if item is None:
                break
            separate(_start_line(item), group_blank and not leading[k])
            item_docs.append(self.statement(item))
            doc.append(item_docs[-1])
            doc.extend(LineSuffix(c.text) for c in trailing[k])
            prev_line = _end_line(item)
            prev_kind = kind
        return doc, after_open, item_docs

    def body(self, tree: Tree, items: list[Any] | None = None) -> Any:
        """``{ statements }``: one line if written on one line and it fits, else expanded."""
        items = _statements(tree) if items is None else items
        lo, hi = _start(tree), _end(tree)
        one_line = tree.meta.line == tree.meta.end_line
        inner, after_open, item_docs = self.statements(items, lo + 1, hi - 1,
                                                       open_line=tree.meta.line)
        if not items and not inner and not after_open:
            return "{}"
        if one_line and not after_open:
            parts: list = []
            for i, item_doc in enumerate(item_docs):
                if i:
                    parts += [IfBreak("", ";"), LINE]
                parts.append(item_doc)
            group = Group(["{", Nest(INDENT, [LINE, parts]), LINE, "}"])
            self.bodies[id(tree)] = group
            return group
        suffix = [LineSuffix(c.text) for c in after_open]
        return Group(["{", suffix, Nest(INDENT, inner), NL, "}"], broken=True, barrier=True)

    # statements
    def statement(self, node: Tree) -> Any:
        kind = node.data
        ch = node.children
        if kind == "import_stmt":       # import [python] "path"
            words = _present(ch[1:])
            return ["import ", self.between(_end(ch[0]), _start(words[0])),
                    " ".join(str(w) for w in words)]
        if kind == "block_def":
            _, name, params, body = ch
            head: list = ["block ", str(name)]
            if params is not None:
                plist = _present(params.children)
                if plist or self.has_comments(params):
                    head.append(self.delimited(params, params, plist, self.block_param))
            return [head, " ", self.body(body)]
        if kind == "input_decl":
            return ["input ", str(ch[1]), ": ", self.expr(ch[3])]
        if kind in ("let_decl", "const_decl", "param_decl"):
            _, name, _, value = ch
            word = kind.split("_")[0]
            doc = self.link(*_links(value)[0]) if kind == "let_decl" else self.expr(value)
            return [word, " ", str(name), " = ", self.between(_end(name), _start(value)), doc]
        if kind == "tie_stmt":
            return ["tie ", self.path(ch[1]), " = ", self.path(ch[3])]
        if kind == "assign":
            return [str(ch[0]), " = ", self.between(_end(ch[0]), _start(ch[2])), self.chain(ch[2])]
        if kind == "return_stmt":
            return ["return ", self.chain(ch[1])]
        if kind == "expect_stmt":
            return ["expect ", self.expr(ch[1])]
        if kind == "step":
            return self.chain(ch[0])
        if kind == "init_section":
            return ["init ", self.body(node)]
        if kind == "init_rule":
            selector, within, chain = ch
            doc: list = [self.path(selector) if isinstance(selector, Tree) else str(selector)]
            if within is not None:
                doc += [" in ", str(within)]
            doc += [": ", self.between(_end(within or selector), _start(chain)), self.chain(chain)]
            return doc
        raise AssertionError(f"netspec.fmt: unknown statement {kind}")  # pragma: no cover

    def block_param(self, node: Tree) -> Any:
        name, type_, default = node.children
        doc: list = [str(name), ": ", self.between(_end(name), _start(type_)), str(type_)]
        if default is not None:
            doc += [" = ", self.between(_end(type_), _start(default)), self.expr(default)]
        return doc

    def path(self, node: Tree) -> str:
        return ".".join(str(t) for t in node.children)

    # chains and links
    def chain(self, node: Tree) -> Any:
        links = _links(node)
        docs = [self.link(*links[0])]
        gaps: list[list[_Comment]] = []
        for (_, prev), (label, step) in zip(links, links[1:]):
            gaps.append(self.take(_end(prev), _start(label or step)))
            docs.append(self.link(label, step))
        if len(links) == 1:
            return docs[0]
        broken: list = [docs[0]]
        for comments, doc in zip(gaps, docs[1:]):
            for c in comments:
                broken += [NL, c.text] if c.own_line else [LineSuffix(c.text)]
            broken += [NL, "-> ", doc]
        broken_state = _State([docs[0], Nest(INDENT, broken[1:])])
        if any(gaps):
            broken_state.doc.append(BREAK_PARENT)
            return Choice([broken_state])
        flat: list = [docs[0]]
        for doc in docs[1:]:
            flat += [" -> ", doc]
        states = [_State(flat)]
        last = self.first_body(links[-1][1])
        if last is not None:
            states.append(_State(flat, (last,)))
        states.append(broken_state)
        return Choice(states)

    def first_body(self, node: Any) -> Group | None:
        if not isinstance(node, Tree) or node.data not in _BODY_LINKS:
            return None
        body = next(c for c in node.children if isinstance(c, Tree) and c.data == "body")
        return self.bodies.get(id(body))

    def link(self, label: Token | None, step: Any) -> Any:
        doc = self.step(step)
        if label is None:
            return doc
        return [str(label), ": ", self.between(_end(label), _start(step)), doc]

    def step(self, node: Any) -> Any:
        kind = node.data
        ch = node.children
        if kind == "seq":
            return self.body(ch[0])
        if kind == "concat":                # concat [call_args] body
            _, args, body = ch
            doc: list = ["concat"]
            if args is not None:
                items = _arguments(args.children[1:-1])
                if items or self.has_comments(args):
                    doc.append(self.delimited(args.children[0], args.children[-1], items,
                                              self.argument))
            return doc + [" ", self.between(_end(args) if args is not None else _start(node),
                                            _start(body)), self.body(body)]
        if kind == "add":
            return ["add ", self.between(_start(node), _start(ch[1])), self.body(ch[1])]
        if kind == "repeat":                # repeat count [as name] body
            _, count, _, name, body = ch
            doc = ["repeat ", self.between(_start(node), _start(count)), self.expr(count)]
            if name is not None:
                doc += [" as ", self.between(_end(count), _start(name)), str(name)]
            return doc + [" ", self.between(_end(name or count), _start(body)), self.body(body)]
        if kind == "if_step":               # if cond body [else (body | if_step)]
            _, cond, then, _, orelse = ch
            doc = ["if ", self.between(_start(node), _start(cond)), self.expr(cond), " ",
                   self.between(_end(cond), _start(then)), self.body(then)]
            if orelse is not None:
                comments = self.take(_end(then), _start(orelse))
                if comments:
                    for c in comments:
                        doc += [NL, c.text] if c.own_line else [LineSuffix(c.text)]
                    doc += [NL, "else "]
                else:
                    doc.append(" else ")
                doc.append(self.body(orelse) if orelse.data == "body" else self.step(orelse))
            return doc
        if kind == "while_step":
            _, cond, body = ch
            return ["while ", self.between(_start(node), _start(cond)), self.expr(cond), " ",
                    self.between(_end(cond), _start(body)), self.body(body)]
        return self.expr(node)

    # expressions
    def delimited(self, first: Any, last: Any, items: list[Any], render) -> Any:
        """``( a, b )`` / ``[ a, b ]`` from the bracket ``first`` (or the node that starts with
        it) to ``last``: flat, or one item per line with a trailing comma."""
        open_, close = self.text[_start(first)], self.text[_end(last) - 1]
        open_line = _start_line(first)
        after_open: list[_Comment] = []
        parts: list = []
        bounds = [_start(first) + 1] + [p for it in items for p in (_start(it), _end(it))] \
            + [_end(last) - 1]
        pending: list[_Comment] = []       # trailing comments of the previous item
        claimed = False
        for k in range(len(items) + 1):
            leading = []
            for c in self.take(bounds[2 * k], bounds[2 * k + 1]):
                claimed = True
                if k == 0 and not c.own_line and c.line == open_line:
                    after_open.append(c)
                elif k > 0 and not c.own_line and c.line == _end_line(items[k - 1]):
                    pending.append(c)
                else:
                    leading.append(c)
            if k > 0:
                parts += [LineSuffix(c.text) for c in pending]
                parts.append("," if k < len(items) else IfBreak(","))
            pending = []
            if k < len(items):
                parts.append(LINE if k else SOFT)
            for c in leading:
                parts += [NL, c.text, NL]
            if k < len(items):
                parts.append(render(items[k]))
        doc: list = [open_, [LineSuffix(c.text) for c in after_open], Nest(INDENT, parts),
                     SOFT, close]
        if claimed:
            doc.append(BREAK_PARENT)
        return Group(doc)

    def argument(self, node: Any) -> Any:
        if isinstance(node, Tree) and node.data == "keyword":
            name, _, value = node.children
            return [str(name), "=", self.between(_end(name), _start(value)), self.expr(value)]
        return self.expr(node)

    def expr(self, node: Any) -> Any:
        if isinstance(node, Token):         # a name or a literal
            return str(node)
        kind = node.data
        ch = node.children
        if kind in ("expr", "flat"):        # operand | head operand | ternary
            return self.expr(ch[0]) if len(ch) == 1 else self.operation(_unroll(ch[0]) + ch[1:])
        if kind == "ternary":
            then, cond, orelse = ch
            return [self.expr(then), " if ", self.between(_end(then), _start(cond)),
                    self.expr(cond), " else ", self.between(_end(cond), _start(orelse)),
                    self.expr(orelse)]
        if kind == "paren":
            inner = ch[1]
            return ["(", self.between(_start(node) + 1, _start(inner)), self.expr(inner),
                    self.between(_end(inner), _end(node) - 1), ")"]
        if kind == "list_lit":
            return self.delimited(ch[0], ch[-1], _arguments(ch[1:-1]), self.expr)
        if kind == "call":                  # operand "(" arguments ")"
            func, lpar = ch[0], ch[1]
            return [self.expr(func), self.between(_end(func), _start(lpar)),
                    self.delimited(lpar, ch[-1], _arguments(ch[2:-1]), self.argument)]
        if kind == "index":                 # operand "[" (expr | subscripts) "]"
            value, lsqb, index, rsqb = ch
            if _is(index, "subscripts"):      # x[:, -1]: items as in a list
                items = [c for c in _unroll(index) if not isinstance(c, Token) or c.type != "COMMA"]
                return [self.expr(value), self.between(_end(value), _start(lsqb)),
                        self.delimited(lsqb, rsqb, items, self.expr)]
            return [self.expr(value), "[", self.between(_end(value), _start(index)),
                    self.expr(index), self.between(_end(index), _end(node) - 1), "]"]
        if kind == "slice":                 # [start] ":" [stop] [":" step], written tight
            doc: list = []
            for k, part in enumerate(ch):
                if k:
                    doc.append(self.between(_end(ch[k - 1]), _start(part)))
                doc.append(":" if isinstance(part, Token) and part.type == "COLON"
                           else self.expr(part))
            return doc
        if kind == "attr":                  # operand "." NAME
            value, _, name = ch
            return [self.expr(value), ".", self.between(_end(value), _start(name)), str(name)]
        raise AssertionError(f"netspec.fmt: unknown expression {kind}")  # pragma: no cover

    def operation(self, items: list[Any]) -> Any:
        """Operands, prefixes and binary operators in source order: one space around a binary
        operator, one after ``not``, none after a unary ``-``. The comments between an operand
        and the next go after the operator."""
        doc: list = []
        before: int | None = None           # where the text before the next operand ends
        operand = True                      # whether an operand (or a prefix) comes next
        for item in items:
            if not operand:                 # a binary operator
                doc += [" ", str(item), " "]
                operand = True
                continue
            if before is not None:
                doc.append(self.between(before, _start(item)))
            before = _end(item)
            if isinstance(item, Token) and item.type in ("NOT", "MINUS"):
                doc.append("not " if item.type == "NOT" else "-")
            else:
                doc.append(self.expr(item))
                operand = False
        return doc


# ---- the API -----------------------------------------------------------------------------------

def _comments(text: str, tokens: list[Token]) -> list[_Comment]:
    out = []
    for tok in tokens:
        line_start = text.rfind("\n", 0, tok.start_pos) + 1
        own = not text[line_start:tok.start_pos].strip()
        out.append(_Comment(tok.start_pos, tok.line, str(tok).rstrip(), own))
    return out


def _shape(node: Any) -> Any:
    """A syntax tree without its spans, for comparing two parses."""
    if isinstance(node, Span):
        return None
    if dataclasses.is_dataclass(node):
        return (type(node).__name__,) + tuple(
            _shape(getattr(node, f.name)) for f in dataclasses.fields(node)
            if f.name != "file" and not f.name.endswith("span"))
    if isinstance(node, tuple):
        return tuple(_shape(x) for x in node)
    return node


_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*')


def _comment_texts(text: str) -> list[str]:
    """The comments of a spec that parses, in order (strings skipped: they may hold ``#``)."""
    return [m.group().rstrip() for m in _STRING_OR_COMMENT.finditer(text)
            if m.group().startswith("#")]


def format_source(text: str, file: str = "<string>") -> str:
    """``text`` in the canonical layout (see the module docstring); raises ``SpecError`` with
    the parser's diagnostic if ``text`` does not parse."""
    from netspec.parse import parse

    original = parse(text, file)      # the diagnostic, if the text is not a spec
    try:
        return _format(text, file, original)
    except RecursionError:
        pass
    try:      # what the parser accepts nests deep enough to need more room than the default
        with _recursion_limit(20_000):
            return _format(text, file, original)
    except RecursionError:
        raise LimitError([Diagnostic("limit error", "this spec nests too deeply to format",
                                     Span(file, 1, 1, 1, 2),
                                     hint="split long expressions into named values")],
                         SourceMap({file: text})) from None


@contextlib.contextmanager
def _recursion_limit(limit: int):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _format(text: str, file: str, original: Any) -> str:
    from netspec.parse import parse

    parser, postlex, sink = _cst_parser()
    sink.tokens = []
    postlex.text = text
    tree = parser.parse(text)
    comments = _comments(text, sink.tokens)
    builder = _Builder(text, comments)
    result = _render(_Printer().print(builder.file(tree)))
    lost = [c.text for c in comments if not c.used]
    if lost:  # pragma: no cover - a formatter bug; never drop a comment
        raise RuntimeError(f"netspec.fmt: comments not placed: {lost}")
    again = parse(result, file)
    if _shape(again) != _shape(original) or \
            _comment_texts(result) != [c.text for c in comments]:  # pragma: no cover
        raise RuntimeError("netspec.fmt: formatting would change the spec; please report this "
                           "input")
    return result


def is_formatted(text: str, file: str = "<string>") -> bool:
    return format_source(text, file) == text


def format_file(path: str | os.PathLike, *, write: bool = True) -> bool:
    """Format one file; True if its text changes. With ``write``, the new text replaces the
    file atomically (a temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    formatted = format_source(text, str(path))
    if formatted == text:
        return False
    if write:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(formatted)
            try:
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            except OSError:  # pragma: no cover
                pass
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    return True
