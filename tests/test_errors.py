"""Golden tests: each ``tests/errors/NAME.net`` must fail with exactly ``NAME.err``.

Adding a case is adding two files. Lines ``# input: [2, 3, 8, 8]``, ``# block: Name`` or
``# set: name=value`` (a block argument, as ``--set`` gives it) set how the case is checked. Regenerate a golden file only after reading
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


def _set_args(text: str) -> dict[str, object]:
    from netspec.api import parse_value

    return {k: parse_value(v) for k, v in re.findall(r"^# set: (\w+)=(.+)$", text, flags=re.M)}


def render_case(case: Path) -> str:
    text = case.read_text()
    options = _directives(text)
    try:
        netspec.analyze(case.name, block=options.get("block"), input=options.get("input"),
                        args=_set_args(text))
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


def test_cli_notes_the_values_of_set(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``--set`` prints exactly what the golden file of a ``# set:`` case holds."""
    from netspec.cli import app

    monkeypatch.chdir(ERRORS)
    with pytest.raises(SystemExit) as exit_info:
        app(["check", "set_shape_mismatch.net", "--set", "width=6", "--set", "heads=4"],
            prog_name="netspec")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (ERRORS / "set_shape_mismatch.err").read_text()


def test_cli_checks_several_specs_and_reports_each(monkeypatch: pytest.MonkeyPatch, capsys,
                                                   tmp_path) -> None:
    """``netspec check`` of files and folders checks every spec, prints each spec's errors as
    a check of that spec alone would, and exits 1 if any has errors."""
    from netspec.cli import app

    good = tmp_path / "good"
    good.mkdir()
    (good / "a.net").write_text("block A {\n    input x: [N, 4]\n    Linear(2)\n}\n")
    (good / "b.net").write_text("block B {\n    input x: [N, 3]\n    ReLU()\n}\n")
    monkeypatch.chdir(ERRORS)
    with pytest.raises(SystemExit) as exit_info:
        app(["check", str(good), "several_errors.net", "add_mismatch.net"], prog_name="netspec")
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"ok: {good / 'a.net'}: A [N, 4] -> [N, 2]",
                                f"ok: {good / 'b.net'}: B [N, 3] -> [N, 3]"]
    assert err == ((ERRORS / "several_errors.err").read_text() + "3 errors\n" +
                   (ERRORS / "add_mismatch.err").read_text() + "2 of 4 specs have errors\n")
    with pytest.raises(SystemExit) as exit_info:
        app(["check", str(good)], prog_name="netspec")
    assert exit_info.value.code == 0
    with pytest.raises(SystemExit) as exit_info:
        app(["check", str(tmp_path / "good" / "none")], prog_name="netspec")
    assert exit_info.value.code == 1
    assert "no such spec file" in capsys.readouterr().err
