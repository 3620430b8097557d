"""Loading a spec: the root file and, transitively, every file it imports, parsed once each."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from netspec import ast
from netspec.errors import Collector, Diagnostic, LimitError, SourceMap, SpecError, Span
from netspec.limits import current as current_limits
from netspec.parse import parse


@dataclass
class Program:
    """Every parsed file of a spec, and its blocks by name (later definitions win)."""

    root: str                                   # display name of the root file
    files: dict[str, ast.SpecFile] = field(default_factory=dict)
    blocks: dict[str, ast.BlockDef] = field(default_factory=dict)
    sources: SourceMap = field(default_factory=SourceMap)
    trusted: bool = True            # may import Python (False for a checkpoint's spec)
    embedded: bool = False          # a checkpoint's spec, checked when it was compiled
    python: list[tuple[ast.Import, str]] = field(default_factory=list)  # (import, folder)

    @property
    def root_blocks(self) -> tuple[ast.BlockDef, ...]:
        return self.files[self.root].blocks

    def texts(self) -> dict[str, str]:
        """The source of every file, by display name (what a checkpoint embeds)."""
        return dict(self.sources.texts)


def spec_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files named, with each folder replaced by the ``*.net`` files under it (sorted)."""
    found: list[Path] = []
    for path in map(Path, paths):
        found.extend(sorted(path.rglob("*.net")) if path.is_dir() else [path])
    return list(dict.fromkeys(found))


def looks_like_source(spec: str) -> bool:
    return "\n" in spec or "{" in spec or not spec.strip().endswith(".net")


def load(spec: str | Path, *, sources: dict[str, str] | None = None,
         trusted: bool | None = None) -> Program:
    """Parse ``spec`` (a path, or source text) and its imports into a ``Program``.

    ``sources`` maps file names to texts to use instead of the file system (a checkpoint's
    embedded spec); imports are then resolved inside that map only, and the program may not
    import Python unless ``trusted``.
    """
    if sources is not None:
        root = str(spec)
        program = Program(root, trusted=bool(trusted))
        _load_file(program, root, None, sources, [])
        return program
    if isinstance(spec, Path) or not looks_like_source(spec):
        path = Path(spec)
        root = _display(path)
        program = Program(root)
        if path.is_dir():
            raise SpecError([Diagnostic("file error", f"{root} is a folder, not a spec file",
                                        hint="name a .net file in it")])
        if not path.is_file():
            raise SpecError([Diagnostic("file error", f"no such spec file: {root}")])
        _load_file(program, root, path, None, [])
        return program
    program = Program("<string>")
    _load_file(program, "<string>", None, None, [], text=str(spec))
    return program


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _load_file(program: Program, name: str, path: Path | None, sources: dict[str, str] | None,
               stack: list[str], importer: Span | None = None, text: str | None = None) -> None:
    """Parse one file and, depth first, its imports (source text imports from the cwd)."""
    if name in program.files:
        return
    if text is not None:
        sources = {name: text}
        imports_from = None
    else:
        imports_from = sources
    limit = current_limits().max_file_bytes
    size = len(sources[name].encode()) if sources is not None else path.stat().st_size
    if size > limit:
        raise LimitError([Diagnostic("limit error", f"{name} is {size:,} bytes; the limit for a "
                                     f"spec file is {limit:,}", importer,
                                     hint="raise Limits.max_file_bytes if this is intended")],
                         program.sources)
    if sources is not None:
        text = sources[name]
    else:
        assert path is not None
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError([Diagnostic("file error", f"{name} is not UTF-8 text ({exc.reason})",
                                        importer)], program.sources) from None
    program.sources.texts[name] = text
    tree = parse(text, name)
    program.files[name] = tree
    errors = Collector(program.sources)
    sources = imports_from
    for imp in tree.imports:
        if imp.python:
            folder = str(path.parent) if path is not None else str(Path.cwd())
            program.python.append((imp, folder))
            continue
        target_name, target_path = _resolve(name, path, imp.path, sources)
        if target_name in stack + [name]:
            cycle = " -> ".join(stack[stack.index(target_name):] + [name, target_name]) \
                if target_name in stack else f"{name} -> {name}"
            errors.add(Diagnostic("import error", f"import cycle: {cycle}", imp.span,
                                  hint="move the shared blocks into a file both can import"))
            continue
        exists = target_name in sources if sources is not None else target_path.is_file()
        if not exists:
            errors.add(Diagnostic("import error", f"cannot find '{imp.path}'", imp.span,
                                  hint="imports are relative to the importing file"))
            continue
        try:
            _load_file(program, target_name, target_path, sources, stack + [name], imp.span)
        except SpecError as exc:
            errors.absorb(exc)
    errors.check()
    for block in tree.blocks:
        program.blocks[block.name] = block


def _resolve(importer: str, importer_path: Path | None, target: str,
             sources: dict[str, str] | None) -> tuple[str, Path | None]:
    if sources is not None:
        base = Path(importer).parent
        return str(Path(base, target)) if str(base) != "." else target, None
    base = importer_path.parent if importer_path is not None else Path.cwd()
    path = (base / target)
    return _display(path), path
