"""The documentation is tested: every example in docs/language.md (and README.md) does what it says.

* A ```netspec block is a complete spec: it must build with ``netspec.build(source)`` and run
  a forward pass on a random tensor of its input shape (symbolic dims become 2).
* A ```netspec block followed directly by a ```text block that starts with ``Name(`` on a line
  of its own: the text is ``print(model)``. Followed directly by a ```python block that starts
  with ``def forward(``: the python is ``type(model).code``.
* A ```netspec-error block must fail, and the ```text block right after it is the exact error
  output (``SpecError.render()``, file name ``<string>``).
* The function and layer lists of the language reference match the registries.

Comment lines in an example steer how it is built, as in tests/errors:
``# input: [2, 3, 8, 8]`` passes ``input=``, ``# block: Name`` picks the block, and
``# input values: integers below 100`` feeds integer ids (for an ``Embedding``) instead of floats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import netspec
from netspec.dims import Sym
from netspec.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = ROOT / "docs" / "language.md"
DOCS = [LANGUAGE, ROOT / "README.md"]

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file."""

    file: str
    lang: str
    body: str
    line: int          # line of the opening fence
    start: int         # offset of the opening fence
    end: int           # offset just after the closing fence
    body_start: int
    body_end: int

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def fenced_blocks(text: str, file: str = "") -> list[Block]:
    return [Block(file, m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, m.start(),
                  m.end(), m.start(2), m.end(2)) for m in _FENCE.finditer(text)]


def adjacent(text: str, first: Block, second: Block) -> bool:
    """Whether only blank space separates two blocks."""
    return not text[first.end:second.start].strip()


def _all_blocks() -> list[tuple[Block, Block | None, str]]:
    """Every block of the docs with the block right after it (if adjacent) and the file text."""
    found = []
    for doc in DOCS:
        if not doc.is_file():
            continue
        text = doc.read_text()
        blocks = fenced_blocks(text, doc.name)
        for i, block in enumerate(blocks):
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            if following is not None and not adjacent(text, block, following):
                following = None
            found.append((block, following, text))
    return found


BLOCKS = _all_blocks()
EXAMPLES = [(b, f) for b, f, _ in BLOCKS if b.lang == "netspec"]
FAILURES = [(b, f) for b, f, _ in BLOCKS if b.lang == "netspec-error"]


def _directives(source: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*# (input|block|input values): (.+?)\s*$", source, flags=re.M))


def _build_options(source: str) -> dict[str, str]:
    options = _directives(source)
    return {k: options[k] for k in ("input", "block") if k in options}


def build_example(source: str) -> torch.nn.Module:
    return netspec.build(source, **_build_options(source))


def error_output(source: str) -> str:
    try:
        netspec.build(source, **_build_options(source))
    except SpecError as exc:
        return exc.render()
    return "(no error)"


def _random_input(model: torch.nn.Module, source: str) -> torch.Tensor:
    shape = tuple(2 if isinstance(d, Sym) else d for d in model._netspec.ir.in_shape)
    ids = re.fullmatch(r"integers below (\d+)", _directives(source).get("input values", ""))
    if ids:
        return torch.randint(0, int(ids.group(1)), shape)
    return torch.randn(shape)


@pytest.mark.parametrize("block,following", EXAMPLES, ids=[b.id for b, _ in EXAMPLES])
def test_example_builds_and_runs(block: Block, following: Block | None) -> None:
    torch.manual_seed(0)
    model = build_example(block.body)
    model.eval()
    with torch.no_grad():
        model(_random_input(model, block.body))
    if following is None:
        return
    shown = following.body.rstrip("\n")
    if following.lang == "text" and re.match(r"[A-Za-z_]\w*\(\n", shown + "\n"):
        assert str(model) == shown, "print(model) differs from the docs"
    if following.lang == "python" and shown.startswith("def forward("):
        assert type(model).code.rstrip("\n") == shown, "type(model).code differs from the docs"


@pytest.mark.parametrize("block,following", FAILURES, ids=[b.id for b, _ in FAILURES])
def test_error_example_fails_exactly(block: Block, following: Block | None) -> None:
    assert following is not None and following.lang == "text", \
        "a netspec-error block must be followed by a text block with the exact error"
    assert error_output(block.body) == following.body.rstrip("\n")


def test_the_docs_have_examples() -> None:
    assert LANGUAGE.is_file()
    assert len(EXAMPLES) >= 20 and len(FAILURES) >= 3


def _listed(section: str, pattern: str) -> set[str]:
    """The names matching ``pattern`` between ``<!-- section -->`` and ``<!-- /section -->``."""
    text = LANGUAGE.read_text()
    match = re.search(rf"<!-- {section} -->(.*?)<!-- /{section} -->", text, flags=re.S)
    assert match, f"docs/language.md has no {section} list"
    return set(re.findall(pattern, match.group(1)))


_SIGNATURE = r"`([a-z_][a-z0-9_]*)\("     # `relu(x)`
_LAYER = r"`([A-Z][A-Za-z0-9]*)`"          # `Conv2d`


def test_function_list_matches_the_registry() -> None:
    from netspec.functions import FUNCTION_NAMES

    assert _listed("functions", _SIGNATURE) == set(FUNCTION_NAMES)


def test_layer_lists_match_the_registry() -> None:
    from netspec.layers import LAYER_NAMES
    from netspec.registry import LAYERS

    assert _listed("layers-with-rules", _LAYER) == set(LAYERS)
    assert _listed("layers-by-torch", _LAYER) == set(LAYER_NAMES) - set(LAYERS)
