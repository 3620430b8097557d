"""Compile time by stage, its growth with the size of a spec, parsing speed, and ResNet-50.

Stages, as netspec.build runs them:

* parse     ``netspec.program.load(text)`` (Lark LALR parser, AST with positions)
* elaborate ``netspec.elaborate.elaborate(program)`` and the IR ``lint`` that
            ``netspec.analyze`` runs after it
* shapes    ``netspec.shapes.infer_shapes(ir, None, sources)`` (ends with its own ``lint``)
* codegen   ``netspec.codegen.forward_source`` for every block with a generated forward, and
            Python's ``compile`` of that source (also reported on its own)
* build     ``netspec.builder.build_module(ir, device="meta")`` minus its code generation:
            module construction on the meta device, the init plan
* init      ``netspec.init.materialize(model, "cpu")``: allocation and initialisation

The builder caches generated classes by their source; the cache is emptied before every
measurement so that code generation and ``compile`` are always counted.
"""

from __future__ import annotations

import gc
import random
import time
from typing import Any

from common import (BENCH_SPECS, bold, chain_spec, dense_spec, fmt_time, load_average, median,
                    table, verdict)

STAGES = ("parse", "elaborate", "shapes", "codegen", "build", "init")
CORE = ("elaborate", "shapes", "codegen")        # the stages the per-1,000-nodes target covers
TARGET_LINES_PER_S = 10_000
TARGET_MS_PER_1000 = 20.0
TARGET_GROWTH = 11.0
TARGET_RESNET = 1.10


def _fresh_caches() -> None:
    import netspec.builder

    cache = getattr(netspec.builder, "_classes", None)   # generated classes by source
    if cache is not None:
        cache.clear()
    gc.collect()


def stages(text_or_path: Any) -> tuple[dict[str, float], Any]:
    """Run the stages once; seconds per stage, and the model."""
    from netspec.builder import build_module
    from netspec.codegen import forward_source
    from netspec.elaborate import elaborate
    from netspec.gc_pause import gc_paused
    from netspec.init import materialize
    from netspec.ir import is_sequential, lint
    from netspec.limits import Limits, using
    from netspec.program import load
    from netspec.shapes import infer_shapes

    @gc_paused          # as the builder runs it
    def codegen(ir) -> float:
        """Generate every forward and compile it; the seconds spent in Python's ``compile``."""
        spent = 0.0
        for _, mod in ir.walk():
            if mod.kind == "block" and not is_sequential(mod):
                source = forward_source(mod)
                t = time.perf_counter()
                compile(source, "<netspec>", "exec")
                spent += time.perf_counter() - t
        return spent

    _fresh_caches()
    times: dict[str, float] = {}
    with using(Limits(max_nodes=5_000_000, max_file_bytes=64 * 1024 * 1024)):
        t0 = time.perf_counter()
        program = load(text_or_path)
        t1 = time.perf_counter()
        ir = elaborate(program)
        lint(ir)                       # netspec.analyze runs it between the two stages
        t2 = time.perf_counter()
        infer_shapes(ir, None, program.sources)
        t3 = time.perf_counter()
        pycompile = codegen(ir)
        t4 = time.perf_counter()
        model = build_module(ir, device="meta")
        t5 = time.perf_counter()
        materialize(model, "cpu")
        t6 = time.perf_counter()
    times.update(parse=t1 - t0, elaborate=t2 - t1, shapes=t3 - t2, codegen=t4 - t3,
                 build=max(t5 - t4 - (t4 - t3), 0.0), init=t6 - t5, pycompile=pycompile)
    times["nodes"] = graph_nodes(ir)
    return times, model


def hand_chain(layers: int) -> float:
    """Seconds to construct the hand-written twin of the sequential chain on the CPU: the
    reference for build + init, with the collector paused as netspec's stages run."""
    import handwritten

    gc.collect()
    from netspec.gc_pause import paused

    with paused(promote=True):      # as netspec's stages run
        t0 = time.perf_counter()
        model = handwritten.chain(layers)
        seconds = time.perf_counter() - t0
    del model
    return seconds


def graph_nodes(ir) -> int:
    """Graph nodes in the IR tree (one per step, plus each graph's placeholder and output)."""
    total = 0
    for _, mod in ir.walk():
        if mod.graph is not None:
            total += mod.graph.number_of_nodes()
    return total


def _median_stages(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: median([r[k] for r in runs]) for k in runs[0]}


def run(quick: bool, log=print) -> dict:
    sizes = [10, 100, 1_000, 10_000] + ([] if quick else [100_000])
    rounds = {10: 7, 100: 7, 1_000: 7, 10_000: 1 if quick else 5, 100_000: 5}
    families = {"sequential": sizes,
                "dataflow": [s for s in sizes if s <= 10_000]}
    stages(chain_spec(10))      # warm: grammar construction, imports
    # The sizes are interleaved: each round runs them in a freshly shuffled order, and a size
    # with fewer rounds is spread over the section. A machine that speeds up or slows down
    # over the minutes a section takes then moves every size alike, and the growth ratios
    # compare like with like.
    rng = random.Random(0)
    jobs = [(family, n) for family, fam_sizes in families.items() for n in fam_sizes]
    texts = {job: chain_spec(job[1], job[0]) for job in jobs}
    jobs += [("hand-written", n) for n in families["sequential"]]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {job: [] for job in jobs}
    total_rounds = max(rounds[n] for _, n in jobs)
    plan = {n: {i * total_rounds // k for i in range(k)} for n, k in rounds.items()}
    for r in range(total_rounds):
        order = [job for job in jobs if r in plan[job[1]]]
        rng.shuffle(order)
        for job in order:
            if job[0] == "hand-written":
                runs[job].append({"total": hand_chain(job[1])})
                continue
            times, model = stages(texts[job])
            del model
            runs[job].append(times)
        log(f"  compile: chains, round {r + 1} ({len(order)} sizes)")
    hand = {n: median([t["total"] for t in runs["hand-written", n]])
            for n in families["sequential"]}
    growth: dict[str, list[dict]] = {family: [] for family in families}
    for family, n in jobs:
        if family == "hand-written":
            continue
        row = _median_stages(runs[family, n])
        row.update(layers=n, lines=texts[family, n].count("\n"), rounds=rounds[n])
        growth[family].append(row)
        log(f"  compile: {family} {n:,} layers: " + ", ".join(
            f"{k} {row[k]:.3f}s" for k in STAGES))
    # parsing speed on a dense spec
    import netspec.parse
    from netspec.program import load

    text = dense_spec(10_000)
    parser, _ = netspec.parse._parser()
    tokens = sum(1 for _ in parser.lex(text))
    lines = 10_000
    parse_runs = []
    for _ in range(1 if quick else 3):
        gc.collect()
        t0 = time.perf_counter()
        load(text)
        parse_runs.append(time.perf_counter() - t0)
    parse_s = median(parse_runs)
    log(f"  compile: dense parse {lines / parse_s:,.0f} lines/s")
    resnet = resnet50(quick, log)
    return {"growth": growth, "hand": hand, "dense": {"lines": lines, "tokens": tokens, "seconds": parse_s,
                                         "rounds": len(parse_runs)},
            "resnet": resnet, "load_after": load_average()}


def resnet50(quick: bool, log=print) -> dict:
    """netspec's ResNet-50 (parse..init) against the hand-written constructor, interleaved."""
    import torch

    import handwritten

    path = BENCH_SPECS / "resnet50.net"
    rounds = 3 if quick else 15
    ours_runs, hand_runs, build_runs = [], [], []
    rng = random.Random(0)
    stages(path)                # warm
    handwritten.resnet50()
    for _ in range(rounds):
        order = ["ours", "hand", "build"]
        rng.shuffle(order)
        for what in order:
            gc.collect()
            if what == "ours":
                times, model = stages(path)
                ours_runs.append(times)
            elif what == "hand":
                t0 = time.perf_counter()
                model = handwritten.resnet50()
                hand_runs.append(time.perf_counter() - t0)
            else:
                import netspec

                _fresh_caches()
                t0 = time.perf_counter()
                model = netspec.build(path)
                build_runs.append(time.perf_counter() - t0)
            del model
    ours = _median_stages(ours_runs)
    total = sum(ours[k] for k in STAGES)
    hand = median(hand_runs)
    log(f"  compile: ResNet-50 netspec {total:.3f}s, hand-written {hand:.3f}s")
    # the two models are the same: parameter count and state_dict layout
    import netspec

    ours_model = netspec.build(path, device="meta")
    hand_model = handwritten.resnet50()
    same = [(k, tuple(v.shape)) for k, v in ours_model.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in hand_model.state_dict().items()]
    params = sum(p.numel() for p in hand_model.parameters())
    return {"stages": ours, "total": total, "hand": hand, "api": median(build_runs),
            "rounds": rounds, "same_layout": same, "params": params,
            "threads": torch.get_num_threads()}


def report(data: dict) -> str:
    out = []
    per_1000_all = []
    growth_all = []
    for family, rows in data["growth"].items():
        body = []
        prev = None
        for r in rows:
            core = sum(r[k] for k in CORE)
            per_1000 = core / r["nodes"] * 1000 * 1000     # ms per 1,000 nodes
            compiled = r["pycompile"] / r["nodes"] * 1000 * 1000
            per_1000_all.append((family, r["layers"], per_1000, compiled))
            total = sum(r[k] for k in STAGES)
            grow = ""
            if prev is not None:
                g = total / (sum(prev[k] for k in STAGES))
                growth_all.append((family, prev["layers"], r["layers"], g))
                grow = bold(f"{g:.1f}x", g > TARGET_GROWTH)
            body.append([f"{r['layers']:,}", f"{r['nodes']:,}"] +
                        [fmt_time(r[k]) for k in STAGES] +
                        [fmt_time(total), f"{per_1000:.1f} ms", f"{compiled:.1f} ms", grow,
                         f"{r['layers'] / r['parse']:,.0f}", r["rounds"]])
            prev = r
        what = ("Linear(16) and ReLU() alternating: an nn.Sequential, no generated code"
                if family == "sequential" else
                "Linear(16) and relu(x) alternating: a generated forward of one line per step")
        out.append(f"#### Chains, {family}: {what}\n\n" + table(
            ["layers", "graph nodes"] + list(STAGES) +
            ["total", "elaborate+shapes+codegen per 1,000 nodes", "of which Python's compile",
             "growth of total vs 10x fewer", "parse lines/s", "rounds"], body))
        stage_growth = []
        for a, b in zip(rows, rows[1:]):
            stage_growth.append([f"{a['layers']:,} -> {b['layers']:,}"] + [
                f"{b[k] / a[k]:.1f}x" if a[k] > 0 else "n/a" for k in STAGES])
        out.append(f"Growth by stage ({family}; time ratio for 10x the layers):\n\n" + table(
            ["layers"] + list(STAGES), stage_growth))
    hand = sorted(data.get("hand", {}).items())
    hand_rows, hand_growth = [], []
    for i, (n, seconds) in enumerate(hand):
        g = seconds / hand[i - 1][1] if i else None
        if g is not None:
            hand_growth.append(g)
        hand_rows.append([f"{n:,}", fmt_time(seconds), f"{g:.1f}x" if g else ""])
    if hand_rows:
        out.append("Reference: the hand-written twin of the sequential chain "
                   "(`handwritten.chain`: `nn.Sequential` of `nn.Linear(16, 16)` and `nn.ReLU()`), "
                   "constructed on the CPU, interleaved with the chains above. It does the work of "
                   "netspec's build and init stages, so its growth is torch's own:\n\n" + table(
                       ["layers", "construction", "growth vs 10x fewer"], hand_rows))
    d = data["dense"]
    lines_per_s = d["lines"] / d["seconds"]
    out.append(f"#### Parsing a dense spec\n\n{d['lines']:,} statement lines, {d['tokens']:,} "
               f"tokens ({d['tokens'] / d['lines']:.1f} a line), parsed with positions by "
               f"`netspec.program.load` in {fmt_time(d['seconds'])} (median of {d['rounds']}): "
               f"{bold(f'{lines_per_s:,.0f} lines/s', lines_per_s < TARGET_LINES_PER_S)}, "
               f"{d['tokens'] / d['seconds']:,.0f} tokens/s. "
               f"Target >= {TARGET_LINES_PER_S:,} lines/s: "
               f"{verdict(lines_per_s >= TARGET_LINES_PER_S)}.")
    r = data["resnet"]
    s = r["stages"]
    ratio = r["total"] / r["hand"]
    out.append("#### ResNet-50 (bench/specs/resnet50.net, input [N, 3, 224, 224])\n\n" + table(
        [""] + list(STAGES) + ["total"],
        [["netspec, by stage"] + [fmt_time(s[k]) for k in STAGES] + [fmt_time(r["total"])],
         ["netspec.build(path), end to end"] + [""] * len(STAGES) + [fmt_time(r["api"])],
         ["hand-written constructor (bench/handwritten.py)"] + [""] * len(STAGES) +
         [fmt_time(r["hand"])]]) +
        f"\n\n{r['params']:,} parameters; same state_dict names and shapes as the hand-written "
        f"model: {'yes' if r['same_layout'] else '**no**'}. Medians of {r['rounds']} "
        f"interleaved rounds, {r['threads']} torch thread(s). netspec (parse..init) / "
        f"hand-written = {bold(f'{ratio:.2f}x', ratio > TARGET_RESNET)}; "
        f"target <= {TARGET_RESNET}: "
        f"{verdict(ratio <= TARGET_RESNET)}.")
    # per 1,000 nodes is a rate at scale: below 1,000 layers the fixed cost of a spec dominates
    big = [t for t in per_1000_all if t[1] >= 1000] or per_1000_all
    worst_big = max(big, key=lambda t: t[2])
    worst_small = max(per_1000_all, key=lambda t: t[2])
    worst_growth = max(growth_all, key=lambda t: t[3])
    out.append(
        f"Targets: elaborate+shapes+codegen <= {TARGET_MS_PER_1000:.0f} ms per 1,000 nodes: "
        f"{verdict(worst_big[2] <= TARGET_MS_PER_1000)} (worst from 1,000 layers up "
        f"{worst_big[2]:.1f} ms, {worst_big[0]} at {worst_big[1]:,} layers, of which "
        f"{worst_big[3]:.1f} ms is Python's `compile` of the generated forward and "
        f"{worst_big[2] - worst_big[3]:.1f} ms netspec's own work; smaller specs, where "
        f"the fixed cost of a spec dominates, up to {worst_small[2]:.1f} ms); "
        f"growth <= {TARGET_GROWTH:.0f}x for 10x the layers: "
        f"{verdict(worst_growth[3] <= TARGET_GROWTH)} (worst {worst_growth[3]:.1f}x, "
        f"{worst_growth[0]} {worst_growth[1]:,} -> {worst_growth[2]:,}"
        + (f"; the hand-written twin's construction: worst {max(hand_growth):.1f}x" if hand_growth
           else "") + "). "
        f"Load average after this section: {data['load_after']}.")
    return "\n\n".join(out)
