"""Diagnostics: one error family, one way to raise it, one renderer.

Every problem in a spec becomes a ``Diagnostic`` located by a ``Span``. Stages collect
diagnostics and raise them together as a ``SpecError`` so a user sees every independent
mistake at once. ``render`` formats them the same way everywhere (CLI, API, tests).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, NoReturn


@dataclass(frozen=True)
class Span:
    """A region of source text: 1-based line and column, end exclusive."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def head(self, length: int) -> "Span":
        """The first ``length`` columns of this span: the name of ``padding=1``."""
        return Span(self.file, self.line, self.column, self.line, self.column + length)


@dataclass(frozen=True)
class Diagnostic:
    """One located message: ``kind`` is "syntax error", "name error", "shape error", ..."""

    kind: str
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: tuple[str, ...] = ()


class NetspecError(Exception):
    """Base of every error netspec raises on purpose."""


class SpecError(NetspecError):
    """A spec (or the arguments it was built with) is wrong; carries one or more diagnostics."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: "SourceMap | None" = None):
        self.diagnostics = list(diagnostics)
        self.sources = sources or SourceMap()
        super().__init__(self.render())

    def render(self) -> str:
        return render(self.diagnostics, self.sources)


class CheckpointError(NetspecError):
    """A checkpoint file is damaged, foreign, or does not match its spec."""


class LimitError(SpecError):
    """A spec would exceed a configured resource limit."""


@dataclass
class SourceMap:
    """The text of every file a diagnostic may point into, by file name."""

    texts: dict[str, str] = field(default_factory=dict)

    def line(self, file: str, line: int) -> str | None:
        text = self.texts.get(file)
        if text is None:
            return None
        lines = text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else None


def fail(kind: str, message: str, span: Span | None = None, *, hint: str | None = None,
         notes: Iterable[str] = (), sources: SourceMap | None = None) -> NoReturn:
    """Raise a one-diagnostic ``SpecError``: the single way stages report a fatal problem."""
    raise SpecError([Diagnostic(kind, message, span, hint, tuple(notes))], sources)


class Collector:
    """Gathers independent diagnostics during a pass, then raises them together."""

    def __init__(self, sources: SourceMap | None = None):
        self.diagnostics: list[Diagnostic] = []
        self.sources = sources or SourceMap()

    def add(self, diagnostic: Diagnostic) -> None:
        if diagnostic not in self.diagnostics:
            self.diagnostics.append(diagnostic)

    def absorb(self, error: SpecError) -> None:
        for d in error.diagnostics:
            self.add(d)

    def check(self) -> None:
        if self.diagnostics:
            limited = any(d.kind == "limit error" for d in self.diagnostics)
            raise (LimitError if limited else SpecError)(self.diagnostics, self.sources)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, case-insensitively, if any is close."""
    candidates = list(dict.fromkeys(candidates))
    lowered: dict[str, str] = {}
    for c in candidates:          # earlier candidates win: callers list the likeliest first
        lowered.setdefault(c.lower(), c)
    if name.lower() in lowered and lowered[name.lower()] != name:
        return f"did you mean '{lowered[name.lower()]}'?"
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    return f"did you mean '{lowered[match[0]]}'?" if match else None


def render(diagnostics: Iterable[Diagnostic], sources: SourceMap | None = None) -> str:
    """Format diagnostics as ``file:line:col: kind: message``, the source line, a caret, hints."""
    sources = sources or SourceMap()
    blocks = []
    for d in diagnostics:
        if d.span is None:
            lines = [f"{d.kind}: {d.message}"]
        else:
            s = d.span
            lines = [f"{s}: {d.kind}: {d.message}"]
            text = sources.line(s.file, s.line)
            if text is not None:
                gutter = str(s.line)
                width = (s.end_column - s.column) if s.end_line == s.line else len(text) - s.column + 1
                width = max(1, width)
                lines.append(f"   {gutter} | {text.rstrip()}")
                lines.append(f"   {' ' * len(gutter)} | {' ' * (s.column - 1)}{'^' * width}")
        for note in d.notes:
            lines.append(f"   {note}")
        if d.hint:
            lines.append(f"   hint: {d.hint}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
