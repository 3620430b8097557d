"""The tutorial is executable: docs/tutorial.md runs from top to bottom and prints what it shows.

The code blocks of the tutorial run in order, as the cells of one notebook, with the repository
root as the working directory:

* ```python blocks run in one shared namespace. Line numbers in their tracebacks are lines of
  docs/tutorial.md.
* ```sh blocks hold ``netspec ...`` commands (one a line, ``#`` comments allowed); each runs
  through the command line's entry point in this process (starting a Python for each would
  cost seconds). They must exit 0, unless the ```text block after them shows an error
  (``file:line:col: ... error: ...``): the last command must then exit 1.
* A ```text block right after a python or sh block (only blank space between them) is the
  output of that block, exactly: its stdout (python) or its stdout and stderr (sh). A python
  block that prints must be followed by one; a sh block may go without (tables whose layout
  is not the point).
* ```netspec blocks are complete specs and must build. Comment lines steer them:
  ``# file: NAME.net`` on the first line writes the spec to NAME.net before the blocks after it
  run (the tutorial's Python and commands use it by that name); ``# specs/NAME.net`` on the first
  line says the block shows that file of specs/, and it must build the same model (same
  ``print(model)``, generated code and seeded ``state_dict``); ``# block: Name`` and
  ``# input: [...]`` are passed to ``netspec.build``.
* ```netspec-error blocks are specs with a mistake in them: they must fail with a SpecError
  (a ``# file:`` line writes them to disk like a netspec block, for a later ``netspec check``).

Files the tutorial creates in the repository root (and names in its text) are removed afterwards.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import re
import shlex
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import netspec
from netspec.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
SHOWN = "docs/tutorial.md"        # how the file is named in messages and tracebacks

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_ERROR_OUTPUT = re.compile(r"^(\S+:\d+:\d+: [a-z ]*error: |error: )", re.M)
_FILE = re.compile(r"\A\s*# file: (\S+)\s*$", re.M)
_SPEC_FILE = re.compile(r"\A\s*# (specs/\S+\.net)\s*$", re.M)
_DIRECTIVE = re.compile(r"^\s*# (input|block): (.+?)\s*$", re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block of the tutorial."""

    number: int        # 1-based, in the order of the file
    lang: str
    body: str
    line: int          # line of the opening fence
    start: int         # offset of the opening fence
    end: int           # offset just after the closing fence

    @property
    def body_line(self) -> int:
        return self.line + 1

    @property
    def where(self) -> str:
        return f"{SHOWN} block {self.number} ({self.lang}, line {self.line})"


def tutorial_blocks(text: str) -> list[Block]:
    return [Block(i, m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, m.start(),
                  m.end()) for i, m in enumerate(_FENCE.finditer(text), start=1)]


def output_block(text: str, blocks: list[Block], index: int) -> Block | None:
    """The ```text block right after ``blocks[index]`` (only blank space between), if any."""
    if index + 1 < len(blocks):
        following = blocks[index + 1]
        if following.lang == "text" and not text[blocks[index].end:following.start].strip():
            return following
    return None


TEXT = TUTORIAL.read_text(encoding="utf-8") if TUTORIAL.is_file() else ""
BLOCKS = tutorial_blocks(TEXT)


# -- running the blocks -----------------------------------------------------------------------

class BlockFailed(Exception):
    """A block did not do what the tutorial says; the message says where and why."""


def run_python(block: Block, namespace: dict) -> str:
    """Execute a python block in ``namespace``; its stdout."""
    source = "\n" * (block.body_line - 1) + block.body   # tracebacks give tutorial lines
    out = io.StringIO()
    try:
        code = compile(source, SHOWN, "exec")
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == SHOWN]
        line = frames[-1].lineno if frames else getattr(exc, "lineno", None) or block.body_line
        shown = TEXT.splitlines()[line - 1].strip() if 0 < line <= TEXT.count("\n") + 1 else ""
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise BlockFailed(f"{block.where} failed at {SHOWN}:{line}: {shown}\n"
                          f"{type(exc).__name__}: {exc}\n\nits output so far:\n"
                          f"{out.getvalue()}\n{detail}") from None
    return out.getvalue()


def _plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's output as when it goes to a file: no colours, 80 columns."""
    for name in ("FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "25")


def run_netspec(words: list[str]) -> tuple[int, str]:
    """``netspec WORDS...`` in this process: its exit status and its stdout and stderr."""
    from netspec.cli import app

    out = io.StringIO()
    code: int = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            app(args=words, prog_name="netspec")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue()


def run_sh(block: Block, expect_error: bool) -> str:
    """Run the ``netspec`` commands of a sh block; their stdout and stderr, in order."""
    commands = []
    for offset, line in enumerate(block.body.splitlines()):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] != "netspec":
            raise BlockFailed(f"{block.where}: line {block.body_line + offset} is not a "
                              f"netspec command: {line.strip()!r}")
        commands.append((block.body_line + offset, words))
    if not commands:
        raise BlockFailed(f"{block.where} holds no command")
    output = []
    for k, (line, words) in enumerate(commands):
        code, printed = run_netspec(words[1:])
        output.append(printed)
        wanted = 1 if expect_error and k == len(commands) - 1 else 0
        if code != wanted:
            raise BlockFailed(f"{block.where}: `{' '.join(words)}` ({SHOWN}:{line}) exited "
                              f"with {code}, expected {wanted}; it printed:\n{printed}")
    return "".join(output)


def _options(source: str) -> dict[str, str]:
    return dict(_DIRECTIVE.findall(source))


def run_spec(block: Block, written: list[Path]) -> None:
    """Build a netspec block (or, for netspec-error, see it fail); write it if it names a file."""
    body = block.body
    target = _FILE.match(body)
    spec: str | Path = body
    if target:
        path = ROOT / target.group(1)
        if path.resolve().parent != ROOT.resolve() or path.suffix != ".net":
            raise BlockFailed(f"{block.where}: `# file:` must name a .net file in the "
                              f"working directory, not {target.group(1)!r}")
        if path in written:
            pass                          # the tutorial writes its own file again
        elif path.exists() and path.read_text(encoding="utf-8") != body:
            raise BlockFailed(f"{block.where} would overwrite {target.group(1)}, which is not "
                              f"the tutorial's: move it away to run the tutorial")
        else:
            written.append(path)
        path.write_text(body, encoding="utf-8")
        spec = Path(target.group(1))      # built as a file, so its imports resolve from there
    options = _options(body)
    try:
        model = netspec.build(spec, seed=0, **options)
    except SpecError as exc:
        if block.lang == "netspec-error":
            return
        raise BlockFailed(f"{block.where} does not build:\n{exc.render()}") from None
    if block.lang == "netspec-error":
        raise BlockFailed(f"{block.where} is a netspec-error block, but it builds")
    shown = _SPEC_FILE.match(body)
    if shown:
        _same_model(block, model, shown.group(1), options)


def _same_model(block: Block, model: torch.nn.Module, file: str, options: dict) -> None:
    """The spec shown in the tutorial builds the same model as the file it says it shows."""
    if not (ROOT / file).is_file():
        raise BlockFailed(f"{block.where} shows {file}, which does not exist")
    options = {"block": type(model).__name__, **options}
    reference = netspec.build(file, seed=0, **options)
    problems = []
    if str(model) != str(reference):
        problems.append("print(model) differs")
    if getattr(type(model), "code", None) != getattr(type(reference), "code", None):
        problems.append("the generated forward differs")
    mine, theirs = model.state_dict(), reference.state_dict()
    if list(mine) != list(theirs):
        problems.append(f"state_dict keys differ: {list(mine)} != {list(theirs)}")
    elif not all(torch.equal(mine[k], theirs[k]) for k in mine):
        problems.append("the seeded weights differ")
    if problems:
        raise BlockFailed(f"{block.where} is not what {file} builds: " + "; ".join(problems))


def compare(block: Block, shown: Block, actual: str) -> None:
    if actual == shown.body:
        return
    diff = "".join(difflib.unified_diff(shown.body.splitlines(keepends=True),
                                        actual.splitlines(keepends=True),
                                        f"{SHOWN}:{shown.body_line} (shown)", "actual output"))
    raise BlockFailed(f"{block.where}: the output differs from the text block at "
                      f"{SHOWN}:{shown.line}\n{diff or repr(actual)}")


@contextlib.contextmanager
def tutorial_files():
    """Remove afterwards the files the tutorial created in the root (those its text names)."""
    before = set(os.listdir(ROOT))
    written: list[Path] = []
    try:
        yield written
    finally:
        for name in set(os.listdir(ROOT)) - before:
            path = ROOT / name
            if path.is_file() and re.search(rf"(?<![\w./-]){re.escape(name)}(?![\w-])", TEXT):
                path.unlink()
        for path in written:
            path.unlink(missing_ok=True)


# -- the tests --------------------------------------------------------------------------------

def test_the_tutorial_runs_in_order_and_prints_what_it_shows(monkeypatch) -> None:
    assert BLOCKS, f"{SHOWN} has no code blocks"
    monkeypatch.chdir(ROOT)
    _plain_output(monkeypatch)
    namespace: dict = {"__name__": "__tutorial__"}
    rng = torch.random.get_rng_state()
    failure = None
    block: Block | None = None
    try:
        with tutorial_files() as written:
            for index, block in enumerate(BLOCKS):
                shown = output_block(TEXT, BLOCKS, index)
                if block.lang == "python":
                    actual = run_python(block, namespace)
                elif block.lang == "sh":
                    expect_error = bool(shown and _ERROR_OUTPUT.search(shown.body))
                    actual = run_sh(block, expect_error)
                elif block.lang in ("netspec", "netspec-error"):
                    run_spec(block, written)
                    continue
                else:
                    continue
                if shown is not None:
                    compare(block, shown, actual)
                elif block.lang == "python" and actual:
                    raise BlockFailed(f"{block.where} prints output that the tutorial does "
                                      f"not show (add a text block after it):\n{actual}")
    except BlockFailed as exc:
        failure = str(exc)
    except Exception as exc:                 # netspec itself broke on a spec or a command
        where = block.where if block is not None else SHOWN
        failure = (f"{where} raised {type(exc).__name__}: {exc}\n"
                   + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    finally:
        torch.random.set_rng_state(rng)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def test_every_output_follows_the_block_that_prints_it() -> None:
    """A text block stands right after a python or sh block; there is nothing else to check it."""
    known = {"python", "sh", "netspec", "netspec-error", "text"}
    for index, block in enumerate(BLOCKS):
        assert block.lang in known, f"{block.where}: unknown block language {block.lang!r}"
        if block.lang == "text":
            before = BLOCKS[index - 1] if index else None
            assert before is not None and before.lang in ("python", "sh") \
                and output_block(TEXT, BLOCKS, index - 1) is block, \
                f"{block.where} does not directly follow a python or sh block"
            assert block.body.strip(), f"{block.where} is empty"
