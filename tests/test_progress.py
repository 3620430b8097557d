"""Progress bars: shown for long work on a terminal, silent when output is not a terminal."""

from __future__ import annotations

import pytest

import netspec
from netspec import progress as progress_module

SPEC = "block A { input x: [N, 512]; Linear(512); ReLU(); Linear(512) }"


def test_quiet_when_not_a_terminal(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "THRESHOLD", 0)      # even tiny work would show a bar
    monkeypatch.delenv("NETSPEC_PROGRESS", raising=False)
    model = netspec.build(SPEC, seed=0)
    netspec.save(model, tmp_path / "m.safetensors")
    netspec.load(tmp_path / "m.safetensors")
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


@pytest.mark.parametrize("what", ["initialising", "writing m.safetensors", "reading m.safetensors"])
def test_bar_on_a_terminal(tmp_path, capfd, monkeypatch, what) -> None:
    monkeypatch.setenv("NETSPEC_PROGRESS", "always")          # as if stderr were a terminal
    model = netspec.build(SPEC, seed=0)
    netspec.save(model, tmp_path / "m.safetensors")
    netspec.load(tmp_path / "m.safetensors")
    assert what in capfd.readouterr().err


def test_small_work_shows_no_bar_even_on_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("NETSPEC_PROGRESS", raising=False)
    assert not progress_module._wanted(1024)
    assert progress_module._wanted(progress_module.THRESHOLD)
