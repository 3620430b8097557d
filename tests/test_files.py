"""Spec files that cannot be read: a located ``file error``, exit status 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import netspec
from netspec.errors import SpecError


def _file_error(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        netspec.analyze(path)
    (d,) = info.value.diagnostics
    assert d.kind == "file error"
    return d.message


def test_a_missing_file(tmp_path: Path) -> None:
    assert _file_error(tmp_path / "nope.net") == f"no such spec file: {tmp_path / 'nope.net'}"


def test_a_folder(tmp_path: Path) -> None:
    assert _file_error(tmp_path) == f"{tmp_path} is a folder, not a spec file"


def test_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "binary.net"
    path.write_bytes(b"block A {\xff\xfe}")
    assert _file_error(path).startswith(f"{path} is not UTF-8 text")


@pytest.mark.parametrize("make", [
    lambda p: None, lambda p: p.mkdir(), lambda p: p.write_bytes(b"\x80\x81"),
])
def test_the_command_reports_it_without_a_traceback(tmp_path, capsys, monkeypatch, make) -> None:
    from netspec.cli import app

    path = tmp_path / "spec.net"
    make(path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        app(["check", "spec.net"], prog_name="netspec")
    out, err = capsys.readouterr()
    assert (info.value.code, out) == (1, "")
    assert err.startswith("file error: ") and "Traceback" not in err
