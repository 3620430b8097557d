"""The language server: ``netspec lsp`` speaks LSP over stdio, so editors show what ``check`` finds.

On every open, change and save the document's own text is checked (its imports are read from
disk, relative to the document) and every diagnostic ``netspec check`` would print is published;
they are cleared once the text is sound. Hover shows the inferred shape of a step or value, a
layer with its resolved arguments, or a block's signature; go to definition jumps from a block
used as a step or call to its ``block Name`` (in imported files too), and from a named value,
``let``, ``const``, ``param``, block argument or dim symbol to where it is defined.
Completion offers a layer's, function's or block's arguments not yet given inside its call, and
elsewhere the keywords, layers, functions, blocks and the names a block has defined so far;
signature help shows the call's parameters, the one at the cursor marked; the outline lists the
blocks and what each defines; formatting lays the document out as ``netspec fmt`` does.

The analysis (``analyse_document``, ``hover_text``, ``definition``, ``completions``,
``signature_help``, ``outline``, ``formatted``) works on plain values and 1-based spans; only
``create_server`` and ``serve`` need pygls (``pip install 'netspec[lsp]'``).
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from netspec import ast
from netspec.dims import fmt_shape
from netspec.elaborate import RUNNING
from netspec.errors import Diagnostic, LimitError, NetspecError, SpecError, Span
from netspec.functions import lookup_function
from netspec.ir import ModuleIR, class_name, graph_nodes
from netspec.limits import current as current_limits

logger = logging.getLogger("netspec.lsp")

__all__ = ["Completion", "Document", "Signature", "Symbol", "analyse_document", "completions",
           "create_server", "definition", "describe_module", "display_name", "formatted",
           "from_client", "hover_text", "import_span", "message_of", "outline", "serve",
           "signature", "signature_help", "to_client"]


# ---- loading a document -----------------------------------------------------------------------

class _Sources(dict):
    """The texts ``load`` reads: the document's own, and every other file from disk on demand.

    ``program.load(..., sources=...)`` resolves imports inside this map only, so looking a name
    up here reads the file it names (relative to the working directory, as display names are).
    """

    def __init__(self, root: str, text: str, cwd: Path):
        super().__init__({root: text})
        self.cwd = cwd
        self.paths: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.cwd / path

    def __contains__(self, name: object) -> bool:
        if dict.__contains__(self, name):
            return True
        return isinstance(name, str) and self.path(name).is_file()

    def __getitem__(self, name: str) -> str:
        if not dict.__contains__(self, name):
            path = self.path(name)
            limit = current_limits().max_file_bytes
            try:
                size = path.stat().st_size
                if size > limit:
                    raise LimitError([Diagnostic(
                        "limit error", f"{name} is {size:,} bytes; the limit for a spec file is "
                        f"{limit:,}", hint="raise Limits.max_file_bytes if this is intended")])
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise SpecError([Diagnostic("file error",
                                            f"{name} is not UTF-8 text ({exc.reason})")]) from None
            except OSError as exc:
                raise SpecError([Diagnostic("file error", f"cannot read {name}: "
                                            f"{exc.strerror or exc}")]) from None
            self.paths[name] = path
            dict.__setitem__(self, name, text)
        return dict.__getitem__(self, name)


def display_name(path: Path, cwd: Path) -> str:
    """How ``netspec check`` names ``path`` in its messages: relative to ``cwd`` when inside it."""
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except (ValueError, OSError):
        return str(path)


def _import_name(importer: str, target: str) -> str:
    """The display name an ``import`` of ``target`` in ``importer`` gets (as ``load`` names it)."""
    base = Path(importer).parent
    return str(Path(base, target)) if str(base) != "." else target


@dataclass
class Document:
    """One analysed text: what ``check`` reports about it and what hover and definition need."""

    name: str                                   # the document's display name, as in messages
    text: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)       # every file read, by name
    paths: dict[str, Path] = field(default_factory=dict)      # their paths on disk
    files: dict[str, ast.SpecFile] = field(default_factory=dict)
    blocks: dict[str, ast.BlockDef] = field(default_factory=dict)
    program: Any = None                         # the loaded Program, if loading succeeded
    ir: ModuleIR | None = None                  # the entry block, shaped as far as it goes
    _extra: dict[str, ModuleIR | None] = field(default_factory=dict)

    @property
    def tree(self) -> ast.SpecFile | None:
        return self.files.get(self.name)


def analyse_document(text: str, path: Path | None = None, *, cwd: Path | None = None,
                     ) -> Document:
    """Check ``text`` as the content of ``path`` (imports read from disk next to it).

    ``diagnostics`` are exactly those of ``netspec check PATH`` had the file held ``text``.
    """
    from netspec.api import analyze, check_init_rules
    from netspec.parse import parse
    from netspec.program import load

    cwd = cwd or Path.cwd()
    name = display_name(path, cwd) if path is not None else "<buffer>"
    sources = _Sources(name, text, cwd)
    doc = Document(name, text)
    if path is not None:
        doc.paths[name] = path
    try:
        try:
            program = load(name, sources=sources)
        except RecursionError:
            raise SpecError([Diagnostic("limit error", "imports nest too deeply to load",
                                        hint="is there an import cycle through '..'?")]) from None
    except SpecError as exc:
        doc.diagnostics = list(exc.diagnostics)
        _collect(doc, sources)
        try:                       # the document alone still serves definitions and hover
            tree = parse(text, name)
        except (SpecError, RecursionError):
            return doc
        doc.files.setdefault(name, tree)
        for block in tree.blocks:
            doc.blocks[block.name] = block
        return doc
    doc.program = program
    doc.files = dict(program.files)
    doc.blocks = dict(program.blocks)
    _collect(doc, sources)
    try:
        analysis = analyze(program)
        doc.ir = analysis.ir
        check_init_rules(analysis)          # as `netspec check` does: rules that match nothing
        doc.diagnostics = analysis.notes    # notes, which the editor shows as information
    except SpecError as exc:
        doc.diagnostics = list(exc.diagnostics)
        if doc.ir is None:
            doc.ir = _partial_ir(program, None)
    return doc


def _collect(doc: Document, sources: _Sources) -> None:
    doc.texts = dict(dict.items(sources))
    doc.paths.update(sources.paths)


def _partial_ir(program: Any, block: str | None) -> ModuleIR | None:
    """Elaborate and shape ``block`` as far as it goes: shapes before an error are still set."""
    from netspec.elaborate import elaborate
    from netspec.shapes import infer_shapes

    try:
        ir = elaborate(program, block, {})
    except (SpecError, RecursionError):
        return None
    try:
        infer_shapes(ir, None, program.sources)
    except (SpecError, RecursionError):
        pass
    return ir


# ---- diagnostics ------------------------------------------------------------------------------

def message_of(d: Diagnostic) -> str:
    """A diagnostic's text as an editor shows it: ``kind: message``, then notes and the hint."""
    lines = [f"{d.kind}: {d.message}"]
    lines.extend(d.notes)
    if d.hint:
        lines.append(f"hint: {d.hint}")
    return "\n".join(lines)


def import_span(doc: Document, file: str) -> Span | None:
    """The ``import`` line of the document through which ``file`` is (transitively) loaded."""
    from netspec.parse import parse

    tree = doc.tree
    if tree is None:
        return None
    trees = dict(doc.files)

    def imports(name: str) -> list[str]:
        if name not in trees and name in doc.texts:
            try:
                trees[name] = parse(doc.texts[name], name)
            except (SpecError, RecursionError):
                return []
        found = trees.get(name)
        return [_import_name(name, i.path) for i in found.imports] if found else []

    for imp in tree.imports:
        start = _import_name(doc.name, imp.path)
        seen, todo = {doc.name}, [start]
        while todo:
            name = todo.pop()
            if name == file:
                return imp.span
            if name in seen:
                continue
            seen.add(name)
            todo.extend(imports(name))
    return None


# ---- walking the syntax tree and the IR -------------------------------------------------------

def _walk(root: Any) -> Iterator[tuple[Any, ast.BlockDef | None]]:
    """Every syntax node under ``root`` (iteratively: specs may nest deeply), with its block."""
    stack: list[tuple[Any, ast.BlockDef | None]] = [(root, None)]
    while stack:
        node, block = stack.pop()
        if isinstance(node, ast.BlockDef):
            block = node
        yield node, block
        stack.extend((child, block) for child in reversed(list(ast.children(node))))


def _contains(span: Span | None, line: int, column: int) -> bool:
    return span is not None and (span.line, span.column) <= (line, column) < \
        (span.end_line, span.end_column)


def _within(inner: Span, outer: Span) -> bool:
    return inner.file == outer.file and (outer.line, outer.column) <= (inner.line, inner.column) \
        and (inner.end_line, inner.end_column) <= (outer.end_line, outer.end_column)


@dataclass(frozen=True)
class _Ident:
    """An identifier in the document: what it is (``kind``), its text and span, its block."""

    kind: str         # "name" "block" "assign" "let" "const" "param" "input" "dim" "arg" "import"
    word: str
    span: Span
    block: ast.BlockDef | None
    node: Any = None


def _idents(root: Any) -> list[_Ident]:
    out: list[_Ident] = []
    for node, block in _walk(root):
        if isinstance(node, ast.Name):
            out.append(_Ident("name", node.id, node.span, block, node))
        elif isinstance(node, ast.BlockDef):
            out.append(_Ident("block", node.name, node.name_span, node, node))
            out.extend(_Ident("arg", p.name, p.span.head(len(p.name)), node, p)
                       for p in node.params)
        elif isinstance(node, (ast.Assign, ast.Let, ast.ConstDecl, ast.ParamDecl)):
            kind = {ast.Assign: "assign", ast.Let: "let", ast.ConstDecl: "const",
                    ast.ParamDecl: "param"}[type(node)]
            out.append(_Ident(kind, node.name, node.name_span, block, node))
        elif isinstance(node, ast.InputDecl):
            out.append(_Ident("input", node.name, node.name_span, block, node))
        elif isinstance(node, ast.Import):
            out.append(_Ident("import", node.path, node.span, block, node))
    return out


def _definitions(block: ast.BlockDef) -> list[_Ident]:
    """What a block defines, in source order: arguments, input and dims, values, lets, tensors."""
    params = {p.name for p in block.params}
    defs = [i for i in _idents(block) if i.kind not in ("name", "block", "import")]
    for node, _ in _walk(block.body):
        if isinstance(node, ast.InputDecl):
            defs.extend(_Ident("dim", d.id, d.span, block, d) for d in node.dims
                        if isinstance(d, ast.Name) and d.id not in params)
    return sorted(defs, key=lambda i: (i.span.line, i.span.column))


def _ident_at(doc: Document, line: int, column: int) -> _Ident | None:
    tree = doc.tree
    if tree is None:
        return None
    found = [i for i in _idents(tree) if _contains(i.span, line, column)]
    if not found:
        return None
    return min(found, key=lambda i: _size(i.span))


def _size(span: Span) -> tuple[int, int]:
    return (span.end_line - span.line,
            span.end_column - span.column if span.end_line == span.line else span.end_column)


def _resolve(doc: Document, ident: _Ident) -> _Ident | ast.BlockDef | None:
    """What an identifier refers to: a definition in its block, or a block."""
    if ident.kind == "block":
        return ident.node
    if ident.kind != "name":
        return ident
    if ident.block is not None:
        defs = [d for d in _definitions(ident.block) if d.word == ident.word]
        if defs:
            before = [d for d in defs if (d.span.line, d.span.column) <= (ident.span.line,
                                                                          ident.span.column)]
            return before[-1] if before else defs[0]
    return doc.blocks.get(ident.word)


@dataclass(frozen=True)
class _Node:
    path: str          # the dotted path of the module whose graph holds the node
    mod: ModuleIR
    graph: Any
    data: dict


def _nodes(ir: ModuleIR) -> Iterator[_Node]:
    for path, mod in ir.walk():
        for graph, data in graph_nodes(mod):
            yield _Node(path, mod, graph, data)


def _irs(doc: Document, block: ast.BlockDef | None) -> list[ModuleIR]:
    """The shaped IRs that instantiate ``block``: the entry's, else ``block`` on its own."""
    irs = [doc.ir] if doc.ir is not None else []
    if block is None or doc.program is None:
        return irs
    if any(_instances(ir, block) for ir in irs):
        return irs
    if block.name not in doc._extra:
        doc._extra[block.name] = None
        if doc.program.blocks.get(block.name) is block:
            try:
                doc._extra[block.name] = _partial_ir(doc.program, block.name)
            except Exception:           # hover must never fail: this IR is a bonus
                logger.exception("analysing block %s failed", block.name)
    extra = doc._extra[block.name]
    return irs + ([extra] if extra is not None else [])


def _instances(ir: ModuleIR, block: ast.BlockDef) -> list[tuple[str, ModuleIR]]:
    return [(path, mod) for path, mod in ir.walk()
            if mod.kind == "block" and mod.cls_name == block.name and mod.span == block.span]


# ---- hover ------------------------------------------------------------------------------------

def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _shape(shape: Any) -> str:
    return "?" if shape is None else fmt_shape(shape)


def describe_module(mod: ModuleIR) -> str:
    """``Linear(in_features=784, out_features=256)``: a layer with the arguments it is built with
    (those written and those inferred), or a block with its arguments."""
    if mod.kind == "layer" and mod.layer is not None:
        values = mod.resolved_args if mod.resolved_args is not None else mod.args
        shown = set(mod.args) | {s.param for s in mod.layer.in_sizes}
        args = [f"{p.name}={_show(values[p.name])}" for p in mod.layer.params
                if p.name.lstrip("*") in shown and p.name.lstrip("*") in values]
        return f"{mod.cls_name}({', '.join(args)})"
    if mod.block_args:
        args = ", ".join(f"{k}={_show(v)}" for k, v in mod.block_args.items())
        return f"{class_name(mod)}({args})"
    return class_name(mod)


def _inputs(node: _Node) -> list[Any]:
    from netspec.ir import Ref

    return [node.graph.nodes[a.node].get("shape") for a in node.data["args"]
            if isinstance(a, Ref) and a.node in node.graph]


def _describe_node(node: _Node) -> tuple[str, str]:
    """(what the node is, its shapes) for one graph node."""
    data = node.data
    op = data["op"]
    out = _shape(data.get("shape"))
    ins = ", ".join(_shape(s) for s in _inputs(node))
    flow = f"{ins} -> {out}" if ins else out        # a factory, arange(T): no input
    if op == "call_module":
        child = node.mod.children.get(data["target"])
        what = describe_module(child) if child is not None else str(data["target"])
        label = data.get("label")
        if label is None and not str(data["target"]).isdigit():
            label = data["target"]          # a shared module, used by its `let` name
        return (f"{label}: {what}" if label else what), flow
    if op == "call_function":
        kwargs = data.get("static", data.get("kwargs")) or {}
        fn = lookup_function(data["target"])
        if fn is not None and fn.label is not None:      # as written: [:, -1]
            return fn.label(**kwargs), flow
        args = ", ".join(f"{k}={_show(v)}" for k, v in kwargs.items())
        return f"{data['target']}({args})", flow
    if op == "get_attr":
        decl = node.mod.tensors.get(data["target"])
        kind = "param" if decl is not None and decl.trainable else "const"
        key = data.get("key")
        return f"{kind} {data['target']}" + (f"[{_show(key)}]" if key else ""), out
    if op == "placeholder":
        return f"input {data.get('name')}", out
    if op == "loop":
        return "while", flow
    return op, out


def _render(items: list[tuple[str, str, str]]) -> str:
    """Markdown for (instance path, description, shapes) of one span in every instance."""
    distinct = list(dict.fromkeys((what, shapes) for _, what, shapes in items))
    if len(distinct) == 1:
        what, shapes = distinct[0]
        return f"```netspec\n{what}\n```\n`{shapes}`" if what else f"`{shapes}`"
    lines = []
    for path, what, shapes in list(dict.fromkeys(items))[:12]:
        lines.append(f"- `{path}`: `{what}` `{shapes}`" if what else f"- `{path}`: `{shapes}`")
    if len(items) > 12:
        lines.append(f"- ... {len(items) - 12} more")
    return "\n".join(lines)


def _where(node: _Node) -> str:
    return node.path or node.mod.cls_name


def _step_hover(doc: Document, line: int, column: int, block: ast.BlockDef | None) -> str | None:
    """The graph node whose span is the smallest one around the position, in every instance."""
    best: list[_Node] = []
    best_key: tuple | None = None
    for ir in _irs(doc, block):
        for node in _nodes(ir):
            span = node.data.get("span")
            op = node.data["op"]
            if span is None or span.file != doc.name or not _contains(span, line, column):
                continue
            if op in ("output", "branch") or (op == "placeholder" and span != node.mod.input_span):
                continue
            key = (_size(span), op == "placeholder", span.line, span.column)
            if best_key is None or key < best_key:
                best, best_key = [node], key
            elif key == best_key:
                best.append(node)
    if not best:
        return None
    return _render([(_where(n),) + _describe_node(n) for n in best])


def _value_hover(doc: Document, target: _Ident) -> str | None:
    """The shape of a named value (or the input) in every instance of its block."""
    block = target.block
    if block is None:
        return None
    items = []
    for ir in _irs(doc, block):
        for node in _nodes(ir):
            span, data = node.data.get("span"), node.data
            if span is None or not _within(span, block.span) or data.get("name") != target.word:
                continue
            if target.kind == "input":
                if data["op"] != "placeholder" or span != node.mod.input_span:
                    continue
            elif data["op"] in ("output", "placeholder"):
                continue
            items.append((_where(node), "", _shape(data.get("shape"))))
    if not items:
        return None
    return f"```netspec\n{target.word}\n```\n" + _render(items)


def _instance_hover(doc: Document, target: _Ident) -> str | None:
    """A ``let`` module or a block argument, as built in every instance of its block."""
    block = target.block
    if block is None:
        return None
    items = []
    for ir in _irs(doc, block):
        for path, mod in _instances(ir, block):
            where = path or mod.cls_name
            if target.kind == "let" and target.word in mod.children:
                child = mod.children[target.word]
                items.append((where, f"let {target.word} = {describe_module(child)}",
                              f"{_shape(child.in_shape)} -> {_shape(child.out_shape)}"))
            elif target.kind == "arg" and target.word in mod.block_args:
                items.append((where, "", f"{target.word} = {_show(mod.block_args[target.word])}"))
    return _render(items) if items else None


def signature(doc: Document, block: ast.BlockDef) -> str:
    """``block Stage(channels: int, blocks: int = 2)`` and its ``input`` line, if declared."""
    text = doc.texts.get(block.span.file, "")
    params = []
    for p in block.params:
        default = f" = {_source(text, p.default.span)}" if p.default is not None else ""
        params.append(f"{p.name}: {p.type}{default}")
    lines = [f"block {block.name}" + (f"({', '.join(params)})" if params else "")]
    stmts = block.body.stmts
    if stmts and isinstance(stmts[0], ast.InputDecl):
        lines.append(f"    {_source(text, stmts[0].span)}")
    where = "" if block.span.file == doc.name else f"\n\ndefined in `{block.span.file}`"
    return "```netspec\n" + "\n".join(lines) + "\n```" + where


def _source(text: str, span: Span) -> str:
    lines = text.split("\n")[span.line - 1:span.end_line]
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0][span.column - 1:span.end_column - 1].strip()
    lines[0] = lines[0][span.column - 1:]
    lines[-1] = lines[-1][:span.end_column - 1]
    return " ".join(line.strip() for line in lines)


def hover_text(doc: Document, line: int, column: int) -> str | None:
    """Markdown for the position ``line:column`` (1-based, in characters), or None."""
    ident = _ident_at(doc, line, column)
    block = ident.block if ident is not None else _block_at(doc, line, column)
    target = _resolve(doc, ident) if ident is not None else None
    parts: list[str] = []
    if isinstance(target, ast.BlockDef):
        parts.append(signature(doc, target))
        if ident is not None and ident.kind == "block":
            return parts[0]
    elif isinstance(target, _Ident):
        if target.kind == "input" or (target.kind == "assign" and target.word != RUNNING):
            text = _value_hover(doc, target)
            if text is not None:
                return text
        elif target.kind in ("let", "arg"):
            text = _instance_hover(doc, target)
            if text is not None:
                return text
    step = _step_hover(doc, line, column, block)
    if step is not None:
        parts.append(step)
    return "\n\n---\n\n".join(parts) if parts else None


def _block_at(doc: Document, line: int, column: int) -> ast.BlockDef | None:
    tree = doc.tree
    if tree is None:
        return None
    return next((b for b in tree.blocks if _contains(b.span, line, column)), None)


# ---- definition -------------------------------------------------------------------------------

def definition(doc: Document, line: int, column: int) -> Span | None:
    """Where the name at ``line:column`` is defined (a span in some file the document loads)."""
    ident = _ident_at(doc, line, column)
    if ident is None:
        return None
    if ident.kind == "import":
        name = _import_name(doc.name, ident.word)
        return Span(name, 1, 1, 1, 1) if name in doc.texts or name in doc.paths else None
    target = _resolve(doc, ident)
    if isinstance(target, ast.BlockDef):
        return target.name_span
    if isinstance(target, _Ident):
        return target.span
    return None


# ---- outline ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Symbol:
    """An entry of the document's outline: a block, with the names it defines under it."""

    name: str
    kind: str                  # "block", or a definition's: "arg" "input" "dim" "assign" "let"...
    span: Span                 # the whole definition
    name_span: Span            # its name
    detail: str = ""
    children: tuple["Symbol", ...] = ()


_WHAT = {"arg": "argument", "input": "input", "dim": "dim symbol", "assign": "value",
         "let": "let module", "const": "const tensor", "param": "param tensor"}


def outline(doc: Document) -> list[Symbol]:
    """The blocks of the document's own text, each with its arguments, input, dim symbols,
    named values, ``let`` modules and tensors in source order; empty while the text does not
    parse."""
    tree = doc.tree
    if tree is None:
        return []
    blocks = []
    for block in tree.blocks:
        names = [Symbol(d.word, d.kind, getattr(d.node, "span", d.span), d.span, _WHAT[d.kind])
                 for d in _definitions(block) if d.kind in _WHAT]
        header = signature(doc, block).split("\n")[1]          # block Name(args)
        blocks.append(Symbol(block.name, "block", block.span, block.name_span, header,
                             tuple(names)))
    return blocks


# ---- formatting -------------------------------------------------------------------------------

def formatted(doc: Document) -> str | None:
    """The document's text in ``netspec fmt``'s layout; None if the text does not parse (the
    diagnostics say why) or is already laid out so."""
    from netspec.fmt import format_source

    try:
        text = format_source(doc.text, doc.name)
    except NetspecError:
        return None
    return text if text != doc.text else None


# ---- completion -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Completion:
    """One thing that may be written at the cursor: its text, what it is, and a line about it."""

    label: str
    kind: str                  # "keyword" | "layer" | "function" | "block" | "value" | "argument"
    detail: str = ""


_TOP_KEYWORDS = ("block", "import", "init")
_BODY_KEYWORDS = ("input", "let", "const", "param", "tie", "repeat", "concat", "add", "if",
                  "else", "while", "return", "expect", "init", "as", "in", "true", "false", "none")
_DEFINED = (re.compile(r"^[ \t]*(?:let|const|param)[ \t]+(\w+)", re.M),      # let attn = ...
            re.compile(r"^[ \t]*(\w+)[ \t]*=(?!=)", re.M),                   # y = ...
            re.compile(r"\brepeat\b[^{\n]*\bas[ \t]+(\w+)"))                # repeat n as k
_INPUT = re.compile(r"^[ \t]*input[ \t]+(\w+)[ \t]*:[ \t]*\[([^\]]*)\]", re.M)
_BLOCK = re.compile(r"^[ \t]*block[ \t]+(\w+)[ \t]*(?:\(([^)]*)\))?", re.M)
_CALLED = re.compile(r"(\w+)\s*$")                  # the name before a "(": Linear(
_BLOCK_PARAM = re.compile(r"\s*(\w+)\s*:\s*(\w+)\s*(?:=\s*(.*?))?\s*$", re.S)
_KEYWORD_ARG = re.compile(r"\s*(\w+)\s*=(?!=)")      # an argument given by name: bias=


def _before(doc: Document, line: int, column: int) -> str | None:
    """The document's text before ``line:column``; None for a position outside it."""
    lines = doc.text.split("\n")
    if not 0 < line <= len(lines):
        return None
    return "\n".join(lines[:line - 1] + [lines[line - 1][:column - 1]])


def _scan(before: str) -> tuple[list[int], list[tuple[str, int]]] | None:
    """Where the text before the cursor leaves it: None inside a comment or a string; else the
    offsets of the ``{`` still open, and of the ``(`` and ``[`` still open, each with the name
    called (``""`` for a bracket)."""
    braces: list[int] = []
    calls: list[tuple[str, int]] = []
    i, n = 0, len(before)
    while i < n:
        ch = before[i]
        if ch == "#":
            end = before.find("\n", i)
            if end < 0:
                return None
            i = end
        elif ch == '"':
            j = i + 1
            while j < n and before[j] not in '"\n':
                j += 2 if before[j] == "\\" else 1
            if j >= n:
                return None
            i = j
        elif ch == "{":
            braces.append(i)
        elif ch == "}" and braces:
            braces.pop()
        elif ch in "([":
            called = _CALLED.search(before, max(0, i - 200), i) if ch == "(" else None
            calls.append((called.group(1) if called else "", i))
        elif ch in ")]" and calls:
            calls.pop()
        i += 1
    return braces, calls


def completions(doc: Document, line: int, column: int) -> list[Completion]:
    """What may be written at ``line:column`` (1-based, in characters): the keywords that start a
    file at its top level; in a block, the keywords of a statement, the layers, functions and
    blocks there are, and the names the block has defined so far; inside ``Linear(``, also the
    arguments of the layer, function or block called that are not given yet. Nothing in a
    comment or a string. Worked out from the text alone, so it works while the text is broken."""
    from netspec.functions import FUNCTION_NAMES
    from netspec.layers import LAYER_NAMES, LAYERS

    before = _before(doc, line, column)
    scanned = _scan(before) if before is not None else None
    if scanned is None:
        return []
    braces, calls = scanned
    if not braces:
        return [Completion(k, "keyword") for k in _TOP_KEYWORDS]
    blocks = _blocks(doc)
    out: list[Completion] = []
    if calls:                               # Linear(|, cat(a, |: the arguments not given yet
        name, start = calls[-1]
        written = _top_level_items(before[start + 1:])[:-1]    # the last is being typed
        named = [_KEYWORD_ARG.match(item) for item in written]
        given = {m.group(1) for m in named if m}
        positional = next((i for i, m in enumerate(named) if m), len(written))
        out += [Completion(f"{arg}=", "argument", kind if default is None else
                           f"{kind}, read off the input" if default == "inferred" else
                           f"{kind}, default {default}")
                for i, (arg, kind, default) in enumerate(_arguments(name, blocks))
                if arg not in given and i >= positional]
    else:
        out += [Completion(k, "keyword") for k in _BODY_KEYWORDS]
    body = before[braces[0]:]
    header = _BLOCK.match(before[:braces[0]].rsplit("\n", 1)[-1])    # block Name(...) {
    names = {arg: "block argument" for arg, _, _ in _arguments(header.group(1), blocks)} \
        if header else {}
    for value, dims in _INPUT.findall(body):
        names[value] = "the block's input"
        names.update((d, "dim symbol") for d in re.findall(r"[A-Za-z_]\w*", dims))
    for pattern in _DEFINED:
        names.update((m, "defined above") for m in pattern.findall(body) if m not in names)
    keywords = set(_TOP_KEYWORDS + _BODY_KEYWORDS)
    out += [Completion(v, "value", what) for v, what in names.items() if v not in keywords]
    out += [Completion(b, "block", f"block {b}" + (f"({', '.join(p.strip() for p in params)})"
                                                   if params else ""))
            for b, params in blocks.items()]
    out += [Completion(name, "layer", LAYERS[name].doc if name in LAYERS else f"torch.nn.{name}")
            for name in LAYER_NAMES if name not in blocks]
    out += [Completion(name, "function", (lookup_function(name).doc or ""))
            for name in FUNCTION_NAMES]
    return out


def _top_level_items(text: str) -> list[str]:
    """``256, bias=f(a, b), `` -> ``["256", " bias=f(a, b)", " "]``: split at the commas outside
    brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


def _blocks(doc: Document) -> dict[str, list[str]]:
    """Every block of the document and of the files it imports, with its parameters as written
    (``["width: int", "depth: int = 2"]``), read off the text, which may not parse yet."""
    found: dict[str, list[str]] = {}
    for text in [*(t for name, t in doc.texts.items() if name != doc.name), doc.text]:
        for name, params in _BLOCK.findall(text):
            found[name] = [p for p in _top_level_items(params) if p.strip()]
    return found


def _arguments(callee: str, blocks: dict[str, list[str]]) -> list[tuple[str, str, str | None]]:
    """The arguments ``callee`` takes, in the order a call gives them by position, each with its
    type and its default (None if it has none; "inferred" for a size read off the input) as a
    spec writes them: a block's parameters, a layer's (those it reads off its input last), a
    function's static ones."""
    from netspec.args import describe_type, spec_literal
    from netspec.layers import LAYERS, lookup_layer

    if callee in blocks:
        return [m.groups() for p in blocks[callee] if (m := _BLOCK_PARAM.match(p))]
    # a layer outside netspec's table is read off torch.nn: not worth importing torch for
    layer = LAYERS.get(callee) or (lookup_layer(callee) if "torch" in sys.modules else None)
    fn = lookup_function(callee) if layer is None else None
    params = () if layer is None and fn is None else fn.static_params if fn is not None else \
        layer.positional + tuple(p for p in layer.params if p not in layer.positional)
    inferred = {size.param for size in layer.in_sizes} if layer is not None else set()
    return [(p.name, describe_type(p.type), "inferred" if p.name in inferred else
             None if p.required else spec_literal(p.default))
            for p in params if p.name not in ("device", "dtype")]


@dataclass(frozen=True)
class Signature:
    """The call around the cursor: ``Conv2d(out_channels, kernel_size, stride=1, ...)``, its
    parameters as that label writes them, and the one the cursor is at (None: none of them)."""

    label: str
    parameters: tuple[str, ...]
    active: int | None


def signature_help(doc: Document, line: int, column: int) -> Signature | None:
    """The signature of the layer, function or block whose call holds ``line:column``."""
    call = _call_at(doc, line, column)
    if call is None:
        return None
    name, written, typing = call
    arguments = _arguments(name, _blocks(doc))
    if not arguments:
        return None
    parameters = tuple(a if default is None else f"{a}={default}" for a, _, default in arguments)
    names = [a for a, _, _ in arguments]
    keyword = _KEYWORD_ARG.match(typing)
    if keyword:
        active = names.index(keyword.group(1)) if keyword.group(1) in names else None
    elif any(_KEYWORD_ARG.match(item) for item in written):
        active = None                        # a positional argument after a keyword one
    else:
        active = len(written) if len(written) < len(names) else None
    return Signature(f"{name}({', '.join(parameters)})", parameters, active)


def _call_at(doc: Document, line: int, column: int) -> tuple[str, list[str], str] | None:
    """The innermost call open at ``line:column``: the name called, the arguments written
    before the cursor, and the one being typed; None outside calls, comments and strings."""
    before = _before(doc, line, column)
    scanned = _scan(before) if before is not None else None
    if scanned is None or not scanned[1] or not scanned[1][-1][0]:
        return None
    name, start = scanned[1][-1]
    *written, typing = _top_level_items(before[start + 1:])
    return name, written, typing


# ---- positions --------------------------------------------------------------------------------

def _units(text: str, encoding: str) -> int:
    """The length of ``text`` in the client's position units."""
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    if encoding == "utf-32":
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def to_client(text: str, line: int, column: int, encoding: str = "utf-16") -> tuple[int, int]:
    """A 1-based line and character column of ``text`` -> an LSP (line, character) pair."""
    lines = text.split("\n")
    index = min(max(line - 1, 0), len(lines) - 1)
    if line - 1 >= len(lines):
        return index, _units(lines[index], encoding)
    return index, _units(lines[index][:max(column - 1, 0)], encoding)


def from_client(text: str, line: int, character: int, encoding: str = "utf-16") -> tuple[int, int]:
    """An LSP (line, character) pair -> a 1-based line and character column of ``text``."""
    lines = text.split("\n")
    content = lines[line] if 0 <= line < len(lines) else ""
    units = column = 0
    for char in content:
        if units >= character:
            break
        units += _units(char, encoding)
        column += 1
    return line + 1, column + 1


# ---- the server -------------------------------------------------------------------------------

def create_server():
    """A pygls ``LanguageServer`` with netspec's features registered (not yet started)."""
    try:
        from lsprotocol import types
        from pygls import uris
        from pygls.lsp.server import LanguageServer
    except ImportError:
        raise NetspecError("the language server needs pygls: pip install 'netspec[lsp]'") from None

    from netspec import __version__

    class NetspecServer(LanguageServer):
        def __init__(self) -> None:
            super().__init__("netspec", __version__,
                             text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
            self.analyses: dict[str, Document] = {}

        @property
        def encoding(self) -> str:
            value = self.workspace.position_encoding or "utf-16"
            return str(getattr(value, "value", value))

        def document(self, uri: str, fresh: bool = False) -> Document:
            """The analysis of the document's current text (cached until the text changes)."""
            text = self.workspace.get_text_document(uri).source
            doc = self.analyses.get(uri)
            if fresh or doc is None or doc.text != text:
                path = uris.to_fs_path(uri)
                doc = analyse_document(text, Path(path) if path else None)
                self.analyses[uri] = doc
            return doc

        def uri_of(self, doc: Document, uri: str, file: str) -> str | None:
            if file == doc.name:
                return uri
            path = doc.paths.get(file)
            return uris.from_fs_path(str(path.absolute())) if path is not None else None

        def range_of(self, doc: Document, span: Span) -> Any:
            text = doc.texts.get(span.file, doc.text if span.file == doc.name else "")
            start = to_client(text, span.line, span.column, self.encoding)
            end = to_client(text, span.end_line, span.end_column, self.encoding)
            return types.Range(types.Position(*start), types.Position(*end))

        def lsp_diagnostics(self, doc: Document, uri: str) -> list:
            out = []
            for d in doc.diagnostics:
                related = None
                message = message_of(d)
                span = d.span
                if span is None or span.file != doc.name:
                    if span is not None:
                        message = f"{span}: {message}"
                        target = self.uri_of(doc, uri, span.file)
                        if target is not None:
                            related = [types.DiagnosticRelatedInformation(
                                types.Location(target, self.range_of(doc, span)), message_of(d))]
                    span = import_span(doc, span.file) if span is not None else None
                if span is not None:
                    where = self.range_of(doc, span)
                else:
                    first = doc.text.split("\n")[0]
                    where = types.Range(types.Position(0, 0),
                                        types.Position(0, _units(first, self.encoding)))
                severity = (types.DiagnosticSeverity.Information if d.kind == "note" else
                            types.DiagnosticSeverity.Error)
                out.append(types.Diagnostic(where, message, severity,
                                            source="netspec", related_information=related))
            return out

        def refresh(self, uri: str) -> None:
            try:
                version = self.workspace.get_text_document(uri).version
                doc = self.document(uri, fresh=True)     # imports may have changed on disk
                diagnostics = self.lsp_diagnostics(doc, uri)
            except Exception as exc:        # a bug in netspec must not take the editor down
                logger.exception("checking %s failed", uri)
                self.window_log_message(types.LogMessageParams(
                    types.MessageType.Error, f"netspec: checking {uri} failed: {exc!r}"))
                return
            self.text_document_publish_diagnostics(
                types.PublishDiagnosticsParams(uri, diagnostics, version=version))

        def position(self, doc: Document, position: Any) -> tuple[int, int]:
            return from_client(doc.text, position.line, position.character, self.encoding)

        def at_position(self, params: Any, ask: Callable[..., Any], what: str) -> tuple[Any, Any]:
            """The request's document and ``ask(doc, line, column)`` at its position; (None,
            None), logged, if that fails: a bug in netspec must not take the editor down."""
            try:
                doc = self.document(params.text_document.uri)
                return doc, ask(doc, *self.position(doc, params.position))
            except Exception:
                logger.exception("%s failed", what)
                return None, None

    server = NetspecServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: NetspecServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: NetspecServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: NetspecServer, params: types.DidSaveTextDocumentParams) -> None:
        saved = params.text_document.uri
        ls.refresh(saved)
        for uri in list(ls.analyses):      # a saved file may be imported by the others
            if uri != saved:
                ls.refresh(uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: NetspecServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.analyses.pop(uri, None)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri, []))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: NetspecServer, params: types.HoverParams) -> types.Hover | None:
        _, text = ls.at_position(params, hover_text, "hover")
        if text is None:
            return None
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text))

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def goto_definition(ls: NetspecServer, params: types.DefinitionParams,
                        ) -> types.Location | None:
        doc, span = ls.at_position(params, definition, "definition")
        if span is None:
            return None
        target = ls.uri_of(doc, params.text_document.uri, span.file)
        if target is None:
            return None
        return types.Location(target, ls.range_of(doc, span))

    kinds = {"keyword": types.CompletionItemKind.Keyword, "layer": types.CompletionItemKind.Class,
             "function": types.CompletionItemKind.Function,
             "block": types.CompletionItemKind.Module, "value": types.CompletionItemKind.Variable,
             "argument": types.CompletionItemKind.Property}

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=["(", ","]))
    def complete(ls: NetspecServer, params: types.CompletionParams) -> types.CompletionList:
        _, found = ls.at_position(params, completions, "completion")
        # in the order given: a call's arguments in positional order, then the block's names...
        return types.CompletionList(False, [
            types.CompletionItem(c.label, kind=kinds[c.kind], detail=c.detail or None,
                                 sort_text=f"{i:05d}")
            for i, c in enumerate(found or [])])

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    def format_document(ls: NetspecServer, params: types.DocumentFormattingParams) -> list:
        try:
            doc = ls.document(params.text_document.uri)
            text = formatted(doc)
        except Exception:
            logger.exception("formatting failed")
            return []
        if text is None:
            return []
        last = doc.text.split("\n")
        end = types.Position(len(last) - 1, _units(last[-1], ls.encoding))
        return [types.TextEdit(types.Range(types.Position(0, 0), end), text)]   # all of it

    symbol_kinds = {"block": types.SymbolKind.Class, "arg": types.SymbolKind.TypeParameter,
                    "input": types.SymbolKind.Variable, "dim": types.SymbolKind.Constant,
                    "assign": types.SymbolKind.Variable, "let": types.SymbolKind.Field,
                    "const": types.SymbolKind.Constant, "param": types.SymbolKind.Property}

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def document_symbols(ls: NetspecServer, params: types.DocumentSymbolParams) -> list:
        try:
            doc = ls.document(params.text_document.uri)

            def convert(sym: Symbol) -> types.DocumentSymbol:
                return types.DocumentSymbol(
                    sym.name, symbol_kinds[sym.kind], ls.range_of(doc, sym.span),
                    ls.range_of(doc, sym.name_span), detail=sym.detail or None,
                    children=[convert(c) for c in sym.children] or None)
            return [convert(b) for b in outline(doc)]
        except Exception:
            logger.exception("outline failed")
            return []

    @server.feature(types.TEXT_DOCUMENT_SIGNATURE_HELP,
                    types.SignatureHelpOptions(trigger_characters=["(", ","]))
    def help_signature(ls: NetspecServer, params: types.SignatureHelpParams,
                       ) -> types.SignatureHelp | None:
        _, found = ls.at_position(params, signature_help, "signature help")
        if found is None:
            return None
        return types.SignatureHelp(
            [types.SignatureInformation(found.label, parameters=[
                types.ParameterInformation(p) for p in found.parameters])],
            active_signature=0, active_parameter=found.active)

    return server


def serve() -> None:
    """Run the language server over stdio until the client says ``exit``."""
    server = create_server()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr          # a stray print must not corrupt the protocol stream
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                            format="netspec lsp: %(levelname)s %(message)s")
    server.start_io(stdin, stdout)
