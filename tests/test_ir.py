"""``lint`` accepts every elaborated and shaped spec, and catches each broken invariant."""

from __future__ import annotations

import pytest

import netspec
from netspec.ir import LintError, Ref, add_node, lint

SPEC = """
block Res {
    input x: [N, 8]
    y = Linear(8)
    return relu(x + y)
}
"""


def analysed():
    return netspec.analyze(SPEC).ir


def test_a_shaped_spec_lints():
    lint(analysed(), shaped=True)


def test_unshaped_nodes_are_caught_after_shapes():
    ir = analysed()
    first = next(iter(ir.graph.nodes))
    del ir.graph.nodes[first]["shape"]
    with pytest.raises(LintError, match="has no shape"):
        lint(ir, shaped=True)


def test_an_edge_against_the_node_order_is_caught():
    ir = analysed()
    nodes = list(ir.graph.nodes)
    ir.graph.add_edge(nodes[-1], nodes[1])          # output -> an earlier step: a cycle
    with pytest.raises(LintError, match="backwards"):
        lint(ir)


def test_a_use_before_definition_is_caught():
    ir = analysed()
    add_node(ir.graph, "late_0", "call_function", target="relu", args=(Ref("nowhere"),))
    with pytest.raises(LintError, match="before it is defined"):
        lint(ir)


def test_a_second_output_is_caught():
    ir = analysed()
    out = list(ir.graph.nodes)[-1]
    add_node(ir.graph, "output_9", "output", args=(Ref(out),))
    with pytest.raises(LintError, match="exactly one placeholder and one output"):
        lint(ir)


def test_an_unknown_child_and_op_are_caught():
    ir = analysed()
    node = next(n for n, d in ir.graph.nodes(data=True) if d["op"] == "call_module")
    ir.graph.nodes[node]["target"] = "ghost"
    with pytest.raises(LintError, match="unknown child 'ghost'"):
        lint(ir)
    ir.graph.nodes[node]["op"] = "teleport"
    with pytest.raises(LintError, match="unknown op 'teleport'"):
        lint(ir)
