"""Shared helpers of the benchmarks: paths, environment facts, timing, generated specs, tables."""

from __future__ import annotations

import datetime
import gc
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SPECS = ROOT / "specs"
BENCH_SPECS = BENCH / "specs"

for extra in (ROOT, ROOT / "tests", BENCH):      # netspec, tests/twins.py, bench modules
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


# ---- environment -------------------------------------------------------------------------------

def environment() -> dict[str, str]:
    """Facts recorded at the top of RESULTS.md."""
    import torch

    import netspec

    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "netspec": netspec.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu count": str(os.cpu_count()),
        "torch default threads": str(torch.get_num_threads()),
        "load average at start (1, 5, 15 min)": load,
        "calibration at start: 2,000,000 Python additions": machine_speed(),
    }


def machine_speed() -> str:
    """A fixed piece of pure-Python work (2,000,000 additions), median of 5: how fast this
    machine is running now, to compare RESULTS.md files from different runs by. Every
    absolute time in a run scales roughly with it; the ratios against hand-written PyTorch
    measured in the same process do not."""
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        times.append(time.perf_counter() - t0)
    return f"{median(times) * 1000:.0f} ms"


def load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# ---- timing -------------------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def interleaved(fns: dict[str, Callable[[], Any]], *, budget_s: float, target_s: float,
                min_rounds: int, max_rounds: int, seed: int = 0, warmup: int = 3,
                cpu_clock: Callable[[], float] = time.process_time,
                ) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Time every function in rounds, in a shuffled order each round.

    Each round runs every function ``inner`` times back to back and records the mean time of
    one call, by the wall clock and by ``cpu_clock`` (``time.thread_time`` when torch runs on
    one thread: it does not count time the process spends preempted by other processes).
    ``inner`` is chosen so that one measurement takes about ``target_s``; the number of rounds
    fits ``budget_s`` (between ``min_rounds`` and ``max_rounds``, but no more rounds start
    after three times the planned time once three are done). The garbage collector runs once
    before the rounds and is off during them (a collection in between would evict the caches
    of the function that happens to run next), and a live block of random size is allocated
    before each measurement so that allocation addresses differ from round to round.

    Returns (wall samples, CPU samples, inner), samples per function.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    single = {}
    for name, fn in fns.items():
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        single[name] = best
    slowest = max(single.values())
    inner = max(1, round(target_s / max(slowest, 1e-9)))
    per_round = sum(single.values()) * inner
    rounds = int(min(max_rounds, max(min_rounds, budget_s / max(per_round, 1e-9))))
    deadline = 3 * max(budget_s, rounds * per_round)
    rng = random.Random(seed)
    names = list(fns)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    perf = time.perf_counter
    started = time.perf_counter()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            # a busy machine can make calls far slower than the warm-up said: stop at 3x the
            # planned time once three rounds are in
            if r >= 3 and time.perf_counter() - started > deadline:
                break
            rng.shuffle(names)
            for name in names:
                fn = fns[name]
                # a live block of random size moves where this measurement's tensors are
                # allocated, so that no function keeps one lucky or unlucky memory layout
                pad = bytearray(rng.randrange(1, 1 << 17))
                c0, t0 = cpu_clock(), perf()
                for _ in range(inner):
                    fn()
                t1, c1 = perf(), cpu_clock()
                del pad
                wall[name].append((t1 - t0) / inner)
                cpu[name].append((c1 - c0) / inner)
    finally:
        gc.enable()
    return wall, cpu, inner


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def run_child(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python bench/_child.py ARGS`` from the repository root."""
    return subprocess.run([sys.executable, str(BENCH / "_child.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# ---- generated specs ---------------------------------------------------------------------------

def stack_spec(layers: int = 200, width: int = 64) -> str:
    """``repeat layers { Linear(width); ReLU() }`` on [N, width]."""
    return (f"# {layers} x (Linear({width}), ReLU()), generated by bench/common.py\n"
            f"block Stack{layers} {{\n    input x: [N, {width}]\n"
            f"    repeat {layers} {{ Linear({width}); ReLU() }}\n}}\n")


def chain_spec(layers: int, kind: str = "sequential", width: int = 16) -> str:
    """A chain of ``layers`` steps, written out one per line (no ``repeat``).

    ``sequential``: Linear(width) and ReLU() alternate, so the block is an nn.Sequential;
    ``dataflow``: Linear(width) and the function relu(x) alternate, so the block gets a
    generated forward of one line per step.
    """
    act = "ReLU()" if kind == "sequential" else "relu(x)"
    lines = [f"# {layers} steps, {kind}, generated by bench/common.py",
             f"block Chain{layers} {{", f"    input x: [N, {width}]"]
    for i in range(layers):
        lines.append(f"    Linear({width})" if i % 2 == 0 else f"    {act}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dense_spec(lines: int = 10_000) -> str:
    """About ``lines`` statements of ~16 tokens each, in one block (valid netspec)."""
    body = []
    forms = (
        "    x = relu(x * 0.5 + x) - tanh(x / 2.0)",
        "    x = sigmoid(x - 1.0) * maximum(x, 0.25)",
        "    x = clamp(x * 2.0 - 0.5, min=-1.0, max=1.0)",
        "    x = where(x > 0.0, x, x * 0.01) + abs(x)",
    )
    for i in range(lines):
        body.append(forms[i % len(forms)])
    return ("# dense expression statements, generated by bench/common.py\n"
            "block Dense {\n    input x: [N, 16]\n" + "\n".join(body) + "\n}\n")


# ---- tables -------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one of l/r per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


def fmt_time(seconds: float) -> str:
    if seconds != seconds:      # NaN
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def bold(text: str, over: bool) -> str:
    """``text``, in bold when it misses its target (RESULTS.md's header says so of bold)."""
    return f"**{text}**" if over else text


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"
