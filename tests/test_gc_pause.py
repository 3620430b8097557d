"""The collector pause around stages: off inside, restored after, and what a stage made promoted
to the oldest generation only when the stage returns."""

from __future__ import annotations

import gc

import pytest

import netspec
from netspec.gc_pause import gc_paused, paused, promote_all


def _generation_of(obj: object) -> int | None:
    for generation in range(3):
        if any(o is obj for o in gc.get_objects(generation=generation)):
            return generation
    return None


def test_paused_turns_the_collector_off_and_the_outermost_pause_restores_it():
    assert gc.isenabled()
    with paused():
        assert not gc.isenabled()
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()        # the inner pause leaves it to the outer one
    assert gc.isenabled()


def test_a_stage_that_returns_has_its_output_promoted():
    @gc_paused
    def stage() -> list:
        return [[] for _ in range(3)]

    gc.collect()
    made = stage()
    assert gc.isenabled()
    assert all(_generation_of(item) == 2 for item in made)


def test_a_stage_that_raises_leaves_what_it_made_young():
    kept: list = []

    @gc_paused
    def stage() -> None:
        kept.append([])
        raise ValueError("bad spec")

    gc.collect()
    with pytest.raises(ValueError):
        stage()
    assert gc.isenabled()
    assert _generation_of(kept[0]) != 2       # young (a collection since may have aged it once)


def test_promote_all_leaves_objects_frozen_by_someone_else_alone():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        promote_all()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_the_cli_run_in_a_process_that_goes_on_leaves_nothing_frozen(capsys):
    """``netspec.cli.run`` freezes what exists while a command runs; an embedder's process goes
    on afterwards, so the objects go back to the collector, and its own freeze stays as it was."""
    from netspec.cli import run

    assert gc.get_freeze_count() == 0
    assert run(["--version"]) == 0
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert run(["--version"]) == 0
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    assert capsys.readouterr().out == f"netspec {netspec.__version__}\n" * 2
