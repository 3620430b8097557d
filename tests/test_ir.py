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
    add_node(ir.graph, "late_0", {"op": "call_function", "target": "relu",
                                  "args": (Ref("nowhere"),), "kwargs": {}, "span": None})
    with pytest.raises(LintError, match="before it is defined"):
        lint(ir)


def test_a_second_output_is_caught():
    ir = analysed()
    out = list(ir.graph.nodes)[-1]
    add_node(ir.graph, "output_9", {"op": "output", "target": None, "args": (Ref(out),),
                                    "kwargs": {}, "span": None})
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


def test_add_node_builds_what_networkx_own_calls_build():
    """``add_node`` writes the graph's adjacency dicts directly; the result must be the graph
    that ``DiGraph.add_node``/``add_edge`` make, with each edge's data shared both ways."""
    import networkx as nx

    from netspec.ir import new_graph

    ours, theirs = new_graph(), nx.DiGraph()
    nodes = [("a", "placeholder", ()), ("b", "call_function", (Ref("a"), 2.0)),
             ("c", "call_function", (Ref("a"), [Ref("b"), Ref("a")])),
             ("d", "output", (Ref("c"), Ref("outer")))]     # "outer": of an enclosing graph
    for nid, op, args in nodes:
        kwargs = {"k": Ref("b")} if nid == "d" else {}
        add_node(ours, nid, {"op": op, "target": None, "args": args, "kwargs": kwargs,
                             "span": None})
        theirs.add_node(nid, op=op, target=None, args=args, kwargs=kwargs, span=None)
        for ref in [a for a in args if isinstance(a, Ref)] + \
                [x for a in args if isinstance(a, list) for x in a] + \
                ([Ref("b")] if nid == "d" else []):
            if ref.node in theirs:
                theirs.add_edge(ref.node, nid)
    assert nx.utils.graphs_equal(ours, theirs)
    assert list(ours.edges) == list(theirs.edges)
    assert all(ours.succ[u][v] is ours.pred[v][u] for u, v in ours.edges)
    assert list(nx.topological_sort(ours)) == ["a", "b", "c", "d"]


def test_nodes_without_keyword_arguments_share_one_empty_dict_that_refuses_items():
    """Most nodes have no keyword arguments; they share one empty dict rather than each
    making one, so a pass that wrote into it would change every node: it refuses."""
    ir = analysed()
    empty = [d["kwargs"] for _, d in ir.graph.nodes(data=True) if not d["kwargs"]]
    assert len(empty) == ir.graph.number_of_nodes()
    assert all(k is empty[0] for k in empty)
    with pytest.raises(TypeError, match="shared empty dict"):
        empty[0]["dim"] = 1
    assert empty[0] == {} and dict(empty[0]) == {}


def test_walk_yields_parents_first_and_a_shared_module_once():
    ir = netspec.analyze("""
block Inner {
    input x: [N, 4]
    Linear(4)
}
block Outer {
    input x: [N, 4]
    let shared = Linear(4)
    a: Inner
    shared
    b: { shared; ReLU }
}
""").ir
    assert [path for path, _ in ir.walk()] == ["", "shared", "a", "b", "a.0", "b.1"]
