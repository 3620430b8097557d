"""Checking without torch: ``netspec check`` and ``netspec summary`` on every spec, and a 70B model.

Every command runs in a process of its own (``_child.py measure``), so its wall time includes
starting Python and importing netspec, and its peak RSS is that process's alone; each is run
three times and the median run reported. A second
child (``_child.py probe``) calls ``netspec.check`` and the summary in-process to time them
without the start-up, and says whether ``torch`` was imported by each.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from common import BENCH_SPECS, ROOT, SPECS, fmt_bytes, fmt_time, load_average, run_child, \
    table, verdict

LLAMA = BENCH_SPECS / "llama70b.net"
TARGET_CHECK_S = 1.0
TARGET_SPEC_S = 0.5
TARGET_SPEC_MIB = 100


def _netspec_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("netspec")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("netspec")
    return [found] if found else [sys.executable, "-m", "netspec"]


def _json(proc) -> dict:
    if proc.returncode != 0:
        raise RuntimeError(f"child failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure(args: list[str], runs: int = 1) -> dict:
    """The run with the median wall time of ``runs`` runs of a command."""
    results = sorted((_json(run_child(["measure", "--", *args])) for _ in range(runs)),
                     key=lambda r: r["wall"])
    return results[len(results) // 2]


def _compile_bytecode() -> None:
    """Write netspec's .pyc files, as installing a wheel does.

    With PYTHONDONTWRITEBYTECODE set (or a read-only checkout) every command would otherwise
    compile netspec's sources again, about 0.15 s here, which an installed netspec never does.
    """
    import compileall

    import netspec

    compileall.compile_dir(Path(netspec.__file__).parent, quiet=1)


def run(quick: bool, log=print) -> dict:
    specs = sorted(SPECS.glob("*.net")) + sorted(BENCH_SPECS.glob("*.net"))
    if quick:
        specs = [SPECS / "mlp.net", SPECS / "resnet.net", BENCH_SPECS / "resnet50.net", LLAMA]
    cli = _netspec_cmd()
    runs = 1 if quick else 3          # each command's median
    _compile_bytecode()
    rows = []
    for spec in specs:
        rel = str(spec.relative_to(ROOT))
        check = _measure([*cli, "check", rel], runs)
        summary = _measure([*cli, "summary", rel], runs)
        probe = _json(run_child(["probe", rel]))
        rows.append({"spec": rel, "check": check, "summary": summary, "probe": probe})
        log(f"  check: {rel}: check {check['wall']:.2f}s, summary {summary['wall']:.2f}s, "
            f"torch after check: {probe['torch_after_check']}")
    # the Llama-style 70B spec: check a few times (median), build on meta, count
    llama_check = _measure([*cli, "check", str(LLAMA.relative_to(ROOT))], runs)
    meta = _json(run_child(["meta-build", str(LLAMA.relative_to(ROOT))]))
    baseline = _measure([sys.executable, "-c", "import netspec"])
    log(f"  check: llama70b check {llama_check['wall']:.2f}s, meta build {meta['first_s']:.2f}s")
    return {"rows": rows, "llama_check": llama_check, "llama_probe": next(
        (r["probe"] for r in rows if r["spec"].endswith("llama70b.net")), None),
        "meta": meta, "import_only": baseline, "load_after": load_average()}


def report(data: dict) -> str:
    body = []
    for r in data["rows"]:
        c, s, p = r["check"], r["summary"], r["probe"]
        body.append([
            f"`{r['spec']}`", "ok" if c["rc"] == 0 else f"exit {c['rc']}", fmt_time(c["wall"]),
            fmt_bytes(c["maxrss"]), fmt_time(p["check_s"]),
            "yes" if p["torch_after_check"] else "no", fmt_time(s["wall"]),
            fmt_bytes(s["maxrss"]), fmt_time(p["summary_s"]),
            "yes" if p["torch_after_summary"] else "no", f"{p['params']:,}"])
    out = [table(["spec", "check", "`netspec check` wall", "peak RSS", "netspec.check in-process",
                  "torch imported by check", "`netspec summary` wall", "peak RSS",
                  "summary in-process", "torch imported by summary", "parameters"], body,
                 "llrrrlrrrlr")]
    imp = data["import_only"]
    out.append(f"For scale: `python -c \"import netspec\"` takes {fmt_time(imp['wall'])} wall "
               f"and {fmt_bytes(imp['maxrss'])} peak RSS.")
    seeds = [r for r in data["rows"] if r["spec"].startswith("specs/")]
    if seeds:
        commands = [(r["spec"], what, r[what]) for r in seeds for what in ("check", "summary")]
        slowest = max(commands, key=lambda c: c[2]["wall"])
        biggest = max(commands, key=lambda c: c[2]["maxrss"])
        torch_free = not any(r["probe"]["torch_after_check"] or r["probe"]["torch_after_summary"]
                             for r in data["rows"])
        out.append(
            f"Targets for every spec in `specs/`: `netspec check` and `netspec summary` < "
            f"{TARGET_SPEC_S} s wall: {verdict(slowest[2]['wall'] < TARGET_SPEC_S)} (slowest "
            f"{fmt_time(slowest[2]['wall'])}, `netspec {slowest[1]} {slowest[0]}`); < "
            f"{TARGET_SPEC_MIB} MiB peak RSS: "
            f"{verdict(biggest[2]['maxrss'] < TARGET_SPEC_MIB * 2 ** 20)} (largest "
            f"{fmt_bytes(biggest[2]['maxrss'])}); without importing torch: "
            f"{verdict(torch_free)}.")
    lc, m, lp = data["llama_check"], data["meta"], data["llama_probe"]
    in_process = f"; `netspec.check` in-process {fmt_time(lp['check_s'])}" if lp else ""
    growth = m["peak_after"] - m["peak_before"]
    out.append(
        "#### Llama-style 70B (`bench/specs/llama70b.net`)\n\n" + table(
            ["measure", "value"], [
                ["`netspec check` wall (median of runs), exit status",
                 f"{fmt_time(lc['wall'])}, {lc['rc']}"],
                ["`netspec check` peak RSS", fmt_bytes(lc["maxrss"])],
                ["`netspec.build(..., device=\"meta\")`, first in the process",
                 fmt_time(m["first_s"])],
                ["the same, second build", fmt_time(m["second_s"])],
                ["import torch + netspec", fmt_time(m["import_s"])],
                ["RSS before / after the first build",
                 f"{fmt_bytes(m['rss_before'])} / {fmt_bytes(m['rss_after'])}"],
                ["peak RSS growth during the first build (imports included)",
                 fmt_bytes(growth)],
                ["peak RSS growth during the second build",
                 fmt_bytes(m["peak_end"] - m["peak_after"])],
                ["all parameters on meta", "yes" if m["meta"] else "**no**"],
                ["parameters", f"{m['params']:,} ({m['params'] / 1e9:.2f} B)"],
            ]) +
        f"\n\nTarget `netspec check` < {TARGET_CHECK_S:.0f} s: "
        f"{verdict(lc['wall'] < TARGET_CHECK_S)} (wall time of the command, Python start-up "
        f"and imports included{in_process}). Load average after this section: "
        f"{data['load_after']}.")
    return "\n\n".join(out)
