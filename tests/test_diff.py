"""``netspec.diff``: layers added, removed and changed between two specs, with shape and
parameter-count deltas, rendered as text, markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import netspec
from netspec.diff import MISSING, diff_specs, module_table

SPECS = Path(__file__).resolve().parent.parent / "specs"

OLD = """
block Net {
    input x: [N, 16]
    fc1: Linear(120)
    act: ReLU()
    fc2: Linear(84)
    drop: Dropout(0.5)
    head: Linear(10)
}
"""

NEW = """
block Net {
    input x: [N, 16]
    fc1: Linear(100)
    act: Tanh()
    fc2: Linear(84)
    head: Linear(12)
    extra: Linear(12, bias=false)
}
"""


def linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


@pytest.fixture(scope="module")
def diff():
    return diff_specs(netspec.analyze(OLD), netspec.analyze(NEW), labels=("old.net", "new.net"))


def test_added_removed_changed(diff) -> None:
    assert [m.path for m in diff.added] == ["extra"]
    assert diff.added[0].type == "Linear" and diff.added[0].params == linear(12, 12, False)
    assert [m.path for m in diff.removed] == ["drop"]
    assert diff.removed[0].type == "Dropout" and diff.removed[0].params == 0
    changed = {c.path: c for c in diff.changed}
    assert set(changed) == {"", "fc1", "act", "fc2", "head"}


def test_argument_changes_name_the_argument(diff) -> None:
    changed = {c.path: c for c in diff.changed}
    assert changed["fc1"].args == {"out_features": (120, 100)}
    assert changed["fc2"].args == {"in_features": (120, 100)}       # an inferred size, too
    assert changed["head"].args == {"out_features": (10, 12)}
    assert "out_features: 120 -> 100" in changed["fc1"].details()


def test_type_change(diff) -> None:
    act = next(c for c in diff.changed if c.path == "act")
    assert act.type_changed and (act.old.type, act.new.type) == ("ReLU", "Tanh")
    assert "type: ReLU -> Tanh" in act.details()


def test_output_shape_and_parameter_deltas(diff) -> None:
    changed = {c.path: c for c in diff.changed}
    assert changed["fc1"].output_changed
    assert "output: [N, 120] -> [N, 100]" in changed["fc1"].details()
    assert not changed["fc2"].output_changed                          # still [N, 84]
    assert changed["fc1"].params_delta == linear(16, 100) - linear(16, 120)
    assert changed["fc2"].params_delta == linear(100, 84) - linear(120, 84)
    assert changed["head"].params_delta == linear(84, 12) - linear(84, 10)
    old_total = linear(16, 120) + linear(120, 84) + linear(84, 10)
    new_total = linear(16, 100) + linear(100, 84) + linear(84, 12) + linear(12, 12, False)
    assert (diff.old.params, diff.new.params) == (old_total, new_total)
    assert diff.params_delta == new_total - old_total
    assert changed[""].params_delta == new_total - old_total
    # the static counts are those of a real build
    assert new_total == sum(p.numel() for p in netspec.build(NEW).parameters())
    assert [str(d) for d in diff.old.output] == ["N", "10"]
    assert [str(d) for d in diff.new.output] == ["N", "12"]


def test_text(diff) -> None:
    text = diff.render("text")
    assert text.startswith("--- old.net: Net [N, 16] -> [N, 10], 13,054 parameters\n"
                           "+++ new.net: Net [N, 16] -> [N, 12], 11,348 parameters\n")
    for line in ("output: [N, 10] -> [N, 12]",
                 "parameters: 13,054 -> 11,348 (-1,706)",
                 "modules: 1 added, 1 removed, 5 changed",
                 "  + extra    Linear  [N, 12]  (+144 parameters)",
                 "  - drop     Dropout  [N, 84]  (0 parameters)",
                 "  ~ fc1      Linear",
                 "      out_features: 120 -> 100",
                 "      parameters: 2,040 -> 1,700 (-340)",
                 "  ~ act      Tanh",
                 "      type: ReLU -> Tanh"):
        assert line in text.splitlines(), line
    assert "\x1b" not in text          # no colour


def test_markdown(diff) -> None:
    md = diff.render("markdown")
    assert "| change | path | type | details | parameters |" in md
    assert "| added | `extra` | Linear | output `[N, 12]` | +144 |" in md
    assert "| removed | `drop` | Dropout | output `[N, 84]` | 0 |" in md
    assert "| changed | `act` | ReLU -> Tanh |" in md
    assert "`out_features: 120 -> 100`" in md


def test_json(diff) -> None:
    data = json.loads(diff.render("json"))
    assert data["old"]["spec"] == "old.net" and data["new"]["params"] == 11348
    assert data["params_delta"] == -1706 and data["identical"] is False
    assert [m["path"] for m in data["added"]] == ["extra"]
    assert data["added"][0]["args"] == {"in_features": 12, "out_features": 12, "bias": False}
    fc1 = next(c for c in data["changed"] if c["path"] == "fc1")
    assert fc1["args"] == {"out_features": [120, 100]}
    assert (fc1["old_output"], fc1["new_output"]) == ("[N, 120]", "[N, 100]")
    assert fc1["params_delta"] == -340


def test_unknown_format(diff) -> None:
    with pytest.raises(ValueError, match="markdown"):
        diff.render("html")


def test_identical_specs() -> None:
    a = netspec.analyze(SPECS / "lenet5.net")
    b = netspec.analyze(SPECS / "lenet5.net")
    result = diff_specs(a, b)
    assert result.identical and not result.changed and result.params_delta == 0
    assert result.render().endswith("no differences\n")
    assert "specs/lenet5.net (a)" in result.render()
    assert "No differences." in result.render("markdown")
    assert json.loads(result.render("json"))["identical"] is True


def test_block_arguments_and_tensor_shapes() -> None:
    spec = (SPECS / "my_linear.net").read_text()
    a = netspec.analyze(spec, block="MyLinear", input=[2, 64], units=8)
    b = netspec.analyze(spec, block="MyLinear", input=[2, 64], units=4)
    result = diff_specs(a, b)
    root = next(c for c in result.changed if c.path == "")
    assert root.args["units"] == (8, 4)
    details = root.details()
    assert "param weight: [64, 8] -> [64, 4]" in details
    assert "param bias: [8] -> [4]" in details
    assert "parameters: 520 -> 260 (-260)" in details


def test_input_shape_delta() -> None:
    spec = "block Net { Linear(4) }"
    result = diff_specs(netspec.analyze(spec, input=[2, 8]), netspec.analyze(spec, input=[2, 16]))
    assert "input: [2, 8] -> [2, 16]" in result.render()
    assert next(c for c in result.changed if c.path == "0").args == {"in_features": (8, 16)}


def test_shared_parameters_are_counted_once() -> None:
    table = module_table(netspec.analyze(SPECS / "tied.net"))
    model = netspec.build(SPECS / "tied.net")
    unique = {id(p): p for p in model.parameters()}
    assert table[""].params == sum(p.numel() for p in unique.values())


def test_added_argument_shows_absent() -> None:
    a = netspec.analyze("block A { input x: [N, 4]\n Linear(2) }")
    b = netspec.analyze("block A { input x: [N, 4]\n ReLU() }")
    change = next(c for c in diff_specs(a, b).changed if c.path == "0")
    assert change.args["out_features"] == (2, MISSING)
    assert "out_features: 2 -> (absent)" in change.details()


@pytest.mark.parametrize("flag, same, different, error", [
    ([], 0, 0, 1),                    # by default a difference is not a failure
    (["--exit-code"], 0, 1, 2),       # as diff(1): 1 if they differ, 2 on an error
])
def test_exit_status(tmp_path, capsys, flag, same, different, error) -> None:
    from netspec.cli import run

    (tmp_path / "old.net").write_text(OLD)
    (tmp_path / "new.net").write_text(NEW)
    spec = str(SPECS / "lenet5.net")
    assert run(["diff", spec, spec, *flag]) == same
    assert run(["diff", str(tmp_path / "old.net"), str(tmp_path / "new.net"), *flag]) == \
        different
    assert run(["diff", spec, str(tmp_path / "missing.net"), *flag]) == error
    err = capsys.readouterr().err
    assert "no such spec file" in err and "Traceback" not in err
