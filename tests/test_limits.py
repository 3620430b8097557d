"""Resource limits: every limit in ``netspec.limits`` refuses a spec with a ``LimitError`` (a
``SpecError``), quickly and before anything large is allocated.

Timings are taken after torch and the grammar are loaded (see ``warm``); memory is measured as
the growth of the process's peak RSS, which stays flat when nothing large was allocated.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import netspec
from netspec import limits
from netspec.errors import LimitError, SpecError
from netspec.limits import Limits

MB = 1024 * 1024
SMALL = """\
block Small {
    input x: [N, 8]
    Linear(8); ReLU()
    Linear(8); ReLU()
    Linear(8); ReLU()
    Linear(8); ReLU()
    Linear(2)
}
"""   # 9 module steps: 12 graph nodes and instances


@pytest.fixture(scope="module", autouse=True)
def warm() -> None:
    """Load torch, the grammar and the layer tables before anything is timed."""
    netspec.build(SMALL)


def _peak_rss() -> int:
    """The peak resident set size of this process, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class Measured:
    seconds: float = 0.0
    rss_growth: int = 0
    error: LimitError | None = None


def refused(spec, *, expect=LimitError, **kwargs) -> Measured:
    """Build ``spec`` expecting ``expect``; how long it took and how much the peak RSS grew."""
    out = Measured()
    before = _peak_rss()
    start = time.perf_counter()
    with pytest.raises(expect) as info:
        netspec.build(spec, **kwargs)
    out.seconds = time.perf_counter() - start
    out.rss_growth = _peak_rss() - before
    out.error = info.value
    assert isinstance(out.error, SpecError)
    assert all(d.kind == "limit error" for d in out.error.diagnostics), str(out.error)
    return out


# ---- max_nodes ---------------------------------------------------------------------------------

def test_repeat_a_billion_times_is_refused_at_once() -> None:
    m = refused("block Net {\n    input x: [N, 4]\n    repeat 1000000000 { Linear(4) }\n}\n")
    assert m.seconds < 0.5
    assert m.rss_growth < 100 * MB
    assert "repeat 1,000,000,000" in str(m.error)
    assert m.error.diagnostics[0].span.line == 3


def test_nested_repeats_over_the_node_limit_are_refused_quickly() -> None:
    m = refused("block Net {\n    input x: [N, 4]\n"
                "    repeat 1000 { repeat 1000 { repeat 1000 { ReLU() } } }\n}\n")
    assert m.seconds < 2.0
    assert m.rss_growth < 100 * MB
    assert "50,000 nodes" in str(m.error)


def test_repeated_blocks_over_the_node_limit_are_refused_quickly() -> None:
    spec = ("block Leaf { Linear(4); ReLU() }\n"
            "block Mid { repeat 1000 { Leaf } }\n"
            "block Net {\n    input x: [N, 4]\n    repeat 1000 { Mid }\n}\n")
    m = refused(spec)
    assert m.seconds < 2.0
    assert m.rss_growth < 100 * MB


def test_max_nodes_is_configurable_per_call() -> None:
    netspec.build(SMALL)                                   # fine with the defaults
    m = refused(SMALL, limits=Limits(max_nodes=10))
    assert "more than 10 nodes" in str(m.error)
    assert netspec.check(SMALL, limits=Limits(max_nodes=10))
    assert netspec.check(SMALL) == []


def test_statements_over_max_nodes_are_refused_while_parsing() -> None:
    spec = "block Net {\n    input x: [N, 4]\n    ReLU()\n    ReLU()\n    ReLU()\n}\n"
    netspec.build(spec, limits=Limits(max_nodes=10))
    m = refused(spec, limits=Limits(max_nodes=3))
    assert "this file has more than 3 statements" in str(m.error)
    assert m.error.diagnostics[0].span.line == 5          # the first statement over the limit


def test_limits_using_is_a_context_manager() -> None:
    default = limits.current()
    with limits.using(Limits(max_nodes=10)) as active:
        assert active.max_nodes == 10 and limits.current() is active
        refused(SMALL)
        with limits.using(None) as inner:                  # None keeps the limits in force
            assert inner is active
        with limits.using(active.but(max_nodes=1_000_000)):
            netspec.build(SMALL)                           # an inner override
        assert limits.current() is active                  # restored after the inner block
    assert limits.current() == default
    netspec.build(SMALL)


def test_limits_are_restored_after_an_error() -> None:
    default = limits.current()
    with pytest.raises(LimitError):
        with limits.using(Limits(max_nodes=10)):
            netspec.build(SMALL)
    assert limits.current() == default


def test_limits_but_replaces_one_field() -> None:
    base = Limits()
    changed = base.but(max_depth=3)
    assert changed.max_depth == 3 and changed.max_nodes == base.max_nodes


# ---- max_elements: parameters and buffers -----------------------------------------------------

BIG = "block Big {\n    input x: [N, 100000]\n    Linear(1000000)\n}\n"   # 1e11 weights: 400 GB


def test_a_400_gb_model_is_refused_in_milliseconds_without_allocating() -> None:
    m = refused(BIG)
    assert m.seconds < 0.25, m.seconds
    assert m.rss_growth < 100 * MB, m.rss_growth
    assert "400.0 GB" in str(m.error)


def test_a_400_gb_model_can_be_built_on_meta() -> None:
    before = _peak_rss()
    model = netspec.build(BIG, device="meta")
    assert _peak_rss() - before < 100 * MB
    assert next(model.parameters()).device.type == "meta"


def test_max_elements_is_configurable() -> None:
    netspec.build(SMALL)
    m = refused(SMALL, limits=Limits(max_elements=100))
    assert "the limit is 100" in str(m.error)


def test_a_large_const_is_refused_before_allocating() -> None:
    spec = "block Net {\n    input x: [N, 4]\n    const w = rand(200000, 200000)\n    x * 1\n}\n"
    m = refused(spec)
    assert m.seconds < 0.25 and m.rss_growth < 100 * MB


# ---- max_file_bytes ----------------------------------------------------------------------------

def test_a_spec_file_over_max_file_bytes_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.net"
    with open(path, "wb") as f:              # a sparse 8 GiB file: refused by its size alone
        f.truncate(8 * 1024 * MB)
    m = refused(path)
    assert m.seconds < 0.1 and m.rss_growth < 100 * MB
    assert "the limit for a spec file is 1,048,576" in str(m.error)


def test_source_text_over_max_file_bytes_is_refused() -> None:
    text = SMALL + "# padding\n" * (MB // 10 + 1)
    m = refused(text)
    assert m.seconds < 0.5


def test_max_file_bytes_applies_to_imported_files(tmp_path: Path) -> None:
    (tmp_path / "lib.net").write_text("block Lib { ReLU() }\n" + "# padding\n" * 200)
    main = tmp_path / "main.net"
    main.write_text('import "lib.net"\nblock Net {\n    input x: [N, 4]\n    Lib\n}\n')
    netspec.build(main)
    m = refused(main, expect=SpecError, limits=Limits(max_file_bytes=1000))  # see the bug below
    assert "lib.net" in str(m.error)
    assert m.error.diagnostics[0].span.line == 1           # located at the import


# ---- max_depth: brackets and block nesting -----------------------------------------------------

def test_deep_brackets_are_refused() -> None:
    spec = "block Net {\n    input x: [N, 4]\n    x + " + "(" * 300 + "1" + ")" * 300 + "\n}\n"
    m = refused(spec)
    assert m.seconds < 0.5
    assert "brackets nest too deeply" in str(m.error)
    assert m.error.diagnostics[0].span.line == 3


def test_deep_braces_are_refused() -> None:
    spec = "block Net {\n    input x: [N, 4]\n    " + "{ " * 300 + "ReLU()" + " }" * 300 + "\n}\n"
    m = refused(spec)
    assert m.seconds < 0.5


def test_bracket_depth_follows_max_depth() -> None:
    spec = "block Net {\n    input x: [N, 4]\n    x + " + "(" * 20 + "1" + ")" * 20 + "\n}\n"
    netspec.build(spec)
    refused(spec, limits=Limits(max_depth=4))


def test_blocks_nested_deeper_than_max_depth_are_refused() -> None:
    blocks = "".join(f"block B{i} {{ B{i + 1} }}\n" for i in range(70)) + "block B70 { ReLU() }\n"
    spec = blocks + "block Net {\n    input x: [N, 4]\n    B0\n}\n"
    m = refused(spec)
    assert m.seconds < 1.0
    assert "blocks nest deeper than 64" in str(m.error)
    netspec.build(spec, limits=Limits(max_depth=100))


def test_long_unary_chains_build_or_are_refused_never_crash() -> None:
    spec = "block Net {\n    input x: [N, 4]\n    " + "-" * 5000 + "x\n}\n"
    try:
        model = netspec.build(spec)
    except LimitError:
        return
    x = torch.rand(2, 4)
    assert torch.equal(model(x), x)          # an even number of negations


# ---- max_dim -----------------------------------------------------------------------------------

def test_a_dimension_over_max_dim_is_refused() -> None:
    spec = "block Net {\n    input x: [N, 4]\n    Linear(2000000000000)\n}\n"
    m = refused(spec, expect=SpecError)
    assert "over the limit of 1,099,511,627,776" in str(m.error)
    assert m.seconds < 0.25


def test_an_input_dimension_over_max_dim_is_refused() -> None:
    refused("block Net {\n    input x: [N, D]\n    ReLU()\n}\n", expect=SpecError,
            input=[2, 2 ** 41])


def test_max_dim_is_configurable() -> None:
    spec = "block Net {\n    input x: [N, 4]\n    Linear(100)\n}\n"
    netspec.build(spec)
    refused(spec, expect=SpecError, limits=Limits(max_dim=50))


# ---- known bugs --------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["max_dim-argument", "max_dim-input", "imported-file"])
def test_bug_limit_violations_raise_limit_error(case: str, tmp_path: Path) -> None:
    if case == "max_dim-argument":
        spec, kw = "block Net {\n    input x: [N, 4]\n    Linear(2000000000000)\n}\n", {}
    elif case == "max_dim-input":
        spec, kw = "block Net {\n    input x: [N, 2000000000000]\n    ReLU()\n}\n", {}
    else:
        (tmp_path / "lib.net").write_text("block Lib { ReLU() }\n" + "# padding\n" * 200)
        spec = tmp_path / "main.net"
        spec.write_text('import "lib.net"\nblock Net {\n    input x: [N, 4]\n    Lib\n}\n')
        kw = {"limits": Limits(max_file_bytes=1000)}
    with pytest.raises(LimitError):
        netspec.build(spec, **kw)


class _Slow(Exception):
    pass


def _alarm(seconds: float):
    def on_alarm(signum, frame):
        raise _Slow()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
@pytest.mark.parametrize("lines", [200_000, 60_000])
def test_compile_time_is_bounded_by_the_limits(lines: int) -> None:
    """A spec over the limits is refused before its cost grows: by its size (200,000 lines are
    1.4 MB), or by its statements while it is parsed (60,000 lines are within 1 MiB)."""
    spec = "block Net {\n    input x: [N, 4]\n" + "    ReLU()\n" * lines + "}\n"
    slow = False
    refusal = None
    try:
        _alarm(3)
        try:
            netspec.build(spec)
        except LimitError as exc:
            refusal = exc
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Slow:
        slow = True
    assert not slow, "neither built nor refused within 3 s"
    assert refusal is not None and refusal.diagnostics[0].kind == "limit error", refusal


def test_bug_long_flat_expression() -> None:
    spec = "block Net {\n    input x: [N, 4]\n    x" + " + x" * 500 + "\n}\n"
    try:
        netspec.build(spec)
    except LimitError as exc:
        assert exc.diagnostics[0].span.line == 3, str(exc)


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS")
def test_bug_allocation_failure_is_a_netspec_error() -> None:
    script = textwrap.dedent("""
        import resource, netspec
        netspec.build("block W {\\n    input x: [N, 2]\\n    Linear(2)\\n}\\n")
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024 ** 3, resource.RLIM_INFINITY))
        spec = "block Big {\\n    input x: [N, 4]\\n    const w = rand(40000, 40000)\\n    x * 1\\n}\\n"
        try:
            netspec.build(spec)           # 1.6e9 elements: 6.4 GB, under max_elements
        except netspec.NetspecError:
            print("netspec-error")
        except Exception as exc:
            print("other", type(exc).__name__)
    """)
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=root, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
    assert result.stdout.strip() == "netspec-error", result.stdout + result.stderr[-2000:]
