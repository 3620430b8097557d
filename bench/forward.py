"""Forward (and forward+backward) time of netspec models against hand-written twins.

For each model, the hand-written twin is built first and its weights are loaded into the
netspec model, so both compute the same thing (checked before timing). The two, and the naive
graph interpreter where the spec has dataflow blocks, are timed interleaved in one process in
a shuffled order each round (``common.interleaved``); the result is the median of the rounds'
ratios.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from common import (BENCH_SPECS, SPECS, bold, fmt_time, interleaved, load_average, median,
                    quartiles, stack_spec, table, verdict)

TARGET = 1.02


@dataclass
class Model:
    name: str
    spec: Any                          # a path or source text
    twin: Callable[[], nn.Module]
    shape: Callable[[int], tuple]
    big_batch: int = 64


def models() -> list[Model]:
    import handwritten
    import twins

    return [
        Model("MLP 784-256-10", SPECS / "mlp.net", twins.MLP, lambda b: (b, 784)),
        Model("LeNet", SPECS / "lenet.net", twins.lenet, lambda b: (b, 1, 28, 28)),
        Model("Tied (shared Linear)", SPECS / "tied.net", twins.tied, lambda b: (b, 20)),
        Model("Stack 200 x (Linear(64), ReLU)", stack_spec(200, 64), handwritten.stack,
              lambda b: (b, 64)),
        Model("Residual MLP, 8 dataflow blocks", BENCH_SPECS / "residual.net",
              handwritten.residual_mlp, lambda b: (b, 64)),
        # batch 8, not 64: one forward+backward of ResNet-18 at batch 64 takes seconds here
        Model("ResNet-18 (3x64x64 input)", SPECS / "resnet.net", twins.resnet18,
              lambda b: (b, 3, 64, 64), big_batch=8),
    ]


def prepare(m: Model) -> tuple[nn.Module, nn.Module, Any, nn.Module]:
    """(twin, netspec model with the twin's weights, interpreter or None, a second twin).

    All in eval mode and with the same weights. The second twin is the A/A control: the
    hand-written model timed against itself shows how much two identical models differ here.
    """
    import netspec
    import twins
    from interp import GraphInterpreter, has_dataflow

    torch.manual_seed(0)
    twin = twins.randomize_batchnorm(m.twin())   # statistics that are not 0/1, as in the tests
    ours = netspec.build(m.spec)
    ours.load_state_dict(twin.state_dict())
    twin.eval()
    ours.eval()
    interp = GraphInterpreter(ours) if has_dataflow(ours) else None
    control = m.twin()
    control.load_state_dict(twin.state_dict())
    control.eval()
    x = torch.randn(m.shape(2), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = twin(x.clone())
        got = ours(x.clone())
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), m.name
        if interp is not None:
            assert torch.allclose(interp(x.clone()), want, rtol=1e-5, atol=1e-6), m.name
    return twin, ours, interp, control


def run(quick: bool, log=print) -> dict:
    default_threads = torch.get_num_threads()
    budget = 0.8 if quick else 2.0
    target = 0.002 if quick else 0.003
    # at least 30 rounds: with two threads on two cores one round of ResNet-18 can take twice
    # as long as the next, and its forward+backward at batch 8, timed in the 7 rounds its
    # budget allowed, read 1.034 where 40 rounds read 1.005-1.015
    rounds = (5, 15) if quick else (30, 60)
    prepared = []
    for m in models():
        prepared.append((m, *prepare(m)))
    results = []
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for m, twin, ours, interp, control in prepared:
            for batch in (1, m.big_batch):
                x = torch.randn(m.shape(batch), generator=torch.Generator().manual_seed(2))
                for mode in ("no_grad", "grad"):
                    fns = _functions(mode, x, twin, ours, interp, control)
                    clock = time.thread_time if threads == 1 else time.process_time
                    with torch.no_grad() if mode == "no_grad" else torch.enable_grad():
                        wall, cpu, inner = interleaved(fns, budget_s=budget, target_s=target,
                                                       min_rounds=rounds[0],
                                                       max_rounds=rounds[1], cpu_clock=clock)
                    row = _summarise(m.name, threads, batch, mode, wall, cpu, inner)
                    results.append(row)
                    log(f"  forward: {threads} thread(s), {m.name}, batch {batch}, {mode}: "
                        f"{row['ratio']:.3f} wall, {row['cpu_ratio']:.3f} CPU "
                        f"({row['rounds']} rounds)")
    torch.set_num_threads(default_threads)
    return {"rows": results, "threads": sorted({1, default_threads}),
            "load_after": load_average()}


def _functions(mode: str, x, twin, ours, interp, control) -> dict[str, Callable[[], Any]]:
    def forward(model):
        return lambda: model(x)

    def backward(model):
        return lambda: model(x).sum().backward()

    make = forward if mode == "no_grad" else backward
    fns = {"hand": make(twin), "netspec": make(ours), "control": make(control)}
    if interp is not None:
        fns["interp"] = make(interp)
    return fns


def _paired(samples: dict[str, list[float]], name: str) -> list[float]:
    """``name``'s time over the hand-written model's, round by round."""
    return [t / h for t, h in zip(samples[name], samples["hand"])]


def _summarise(name, threads, batch, mode, wall, cpu, inner) -> dict:
    # A ratio is the median of the rounds' own ratios: within a round the models run next to
    # each other, so a machine that changes speed between rounds moves both. The ratio of the
    # two medians is shown too; with two threads it can land the two medians on different
    # speeds of the machine (1.025 where the rounds' ratios had quartiles 0.98-1.01).
    hand, ours = median(wall["hand"]), median(wall["netspec"])
    paired = _paired(wall, "netspec")
    row = {"model": name, "threads": threads, "batch": batch, "mode": mode,
           "hand": hand, "netspec": ours, "ratio": median(paired),
           "paired_iqr": quartiles(paired), "of_medians": ours / hand,
           "cpu_ratio": median(_paired(cpu, "netspec")),
           "control": median(_paired(wall, "control")),
           "cpu_control": median(_paired(cpu, "control")),
           "rounds": len(wall["hand"]), "inner": inner, "interp": None, "interp_cpu": None}
    if "interp" in wall:
        row["interp"] = median(_paired(wall, "interp"))
        row["interp_cpu"] = median(_paired(cpu, "interp"))
    return row


def _ratio(value: float) -> str:
    return bold(f"{value:.3f}", value > TARGET)


def report(data: dict) -> str:
    out = []
    for threads in data["threads"]:
        rows = [r for r in data["rows"] if r["threads"] == threads]
        body = []
        for r in rows:
            q1, q3 = r["paired_iqr"]
            interp = "n/a" if r["interp"] is None else \
                f"{r['interp']:.2f} / {r['interp_cpu']:.2f}"
            body.append([
                r["model"], r["batch"], "forward, no_grad" if r["mode"] == "no_grad"
                else "forward+backward", fmt_time(r["hand"]), fmt_time(r["netspec"]),
                _ratio(r["ratio"]), f"{q1:.2f}–{q3:.2f}", f"{r['of_medians']:.3f}",
                _ratio(r["cpu_ratio"]),
                f"{r['control']:.3f} / {r['cpu_control']:.3f}", interp,
                f"{r['rounds']}x{r['inner']}"])
        clock = "thread" if threads == 1 else "process"
        out.append(f"#### torch.set_num_threads({threads})\n\n" + table(
            ["model", "batch", "what", "hand-written", "netspec", "netspec / hand (wall)",
             "per-round wall ratio IQR", "ratio of the medians", f"netspec / hand ({clock} CPU)",
             "A/A: hand / hand (wall / CPU)", "interpreter / hand (wall / CPU)",
             "rounds x calls"],
            body, "lrlrrrrrrrrr"))
    rows = data["rows"]
    over = [r for r in rows if r["ratio"] > TARGET]
    over_cpu = [r for r in rows if r["cpu_ratio"] > TARGET]
    worst = max(rows, key=lambda r: r["ratio"])
    worst_cpu = max(rows, key=lambda r: r["cpu_ratio"])
    out.append(
        f"Target netspec / hand-written <= {TARGET}: by the wall clock {verdict(not over)} "
        f"({len(over)} of {len(rows)} rows over; worst {worst['ratio']:.3f}: {worst['model']}, "
        f"batch {worst['batch']}, {worst['mode']}, {worst['threads']} thread(s)); by CPU time "
        f"{verdict(not over_cpu)} ({len(over_cpu)} of {len(rows)} over; worst "
        f"{worst_cpu['cpu_ratio']:.3f}: {worst_cpu['model']}, batch {worst_cpu['batch']}, "
        f"{worst_cpu['mode']}, {worst_cpu['threads']} thread(s)). The A/A control (the "
        f"hand-written model against a second copy of itself) ranges from "
        f"{min(r['control'] for r in rows):.3f} to {max(r['control'] for r in rows):.3f} by "
        f"the wall clock and from {min(r['cpu_control'] for r in rows):.3f} to "
        f"{max(r['cpu_control'] for r in rows):.3f} by CPU time: differences of that size are "
        f"noise. "
        f"Load average after this section: {data['load_after']}.")
    return "\n\n".join(out)
