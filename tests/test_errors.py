"""Golden tests: each ``tests/errors/NAME.net`` must fail with exactly ``NAME.err``.

Adding a case is adding two files. A first line ``# input: [2, 3, 8, 8]`` or
``# block: Name`` sets how the case is checked. Regenerate a golden file only after reading
the new message: ``NETSPEC_BLESS=1 pytest tests/test_errors.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import netspec
from netspec.errors import SpecError

ERRORS = Path(__file__).parent / "errors"
CASES = sorted(ERRORS.glob("*.net"))


def _directives(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# (input|block): (.+)$", text, flags=re.M))


def render_case(case: Path) -> str:
    options = _directives(case.read_text())
    try:
        netspec.analyze(case.name, block=options.get("block"), input=options.get("input"))
    except SpecError as exc:
        return exc.render() + "\n"
    return "(no error)\n"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_error_message_is_exact(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(case.parent)
    actual = render_case(case)
    golden = case.with_suffix(".err")
    if os.environ.get("NETSPEC_BLESS"):
        golden.write_text(actual)
    assert actual == golden.read_text()


def test_every_case_has_a_golden_file() -> None:
    assert CASES, "no error cases found"
    missing = [c.name for c in CASES if not c.with_suffix(".err").is_file()]
    assert not missing


def test_cli_reports_errors_without_traceback(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from netspec.cli import app

    monkeypatch.chdir(ERRORS)
    with pytest.raises(SystemExit) as exit_info:
        app(["check", "several_errors.net"], prog_name="netspec")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err == (ERRORS / "several_errors.err").read_text() + "3 errors\n"
