"""Run netspec's benchmarks and write bench/RESULTS.md (see bench/README.md).

    python bench/run.py            # everything, a few minutes
    python bench/run.py --quick    # fewer rounds and smaller sizes, for a smoke test
    python bench/run.py --only forward,compile
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (sets up sys.path for netspec, tests/twins.py and bench modules)

SECTIONS = {
    "forward": ("Forward overhead against hand-written PyTorch", "forward"),
    "compile": ("Compile time by stage", "compile_time"),
    "check": ("Checking without torch", "check"),
    "checkpoints": ("Checkpoints", "checkpoints"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds, sizes up to 10,000 layers, a few specs")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--output", default=None,
                        help="where to write the results (default: bench/RESULTS.md when every "
                             "section runs; with --only, nowhere: the results are printed)")
    parser.add_argument("--tmpdir", default=None,
                        help="directory for the checkpoint files (default: the system's)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")

    import importlib

    env = common.environment()
    started = time.perf_counter()
    parts = []
    for name in chosen:
        title, module_name = SECTIONS[name]
        print(f"[{name}] {title}", flush=True)
        module = importlib.import_module(module_name)
        t0 = time.perf_counter()
        kwargs = {"directory": args.tmpdir} if name == "checkpoints" else {}
        data = module.run(args.quick, log=lambda line: print(line, flush=True), **kwargs)
        seconds = time.perf_counter() - t0
        parts.append(f"## {title}\n\n{module.report(data)}\n\n*Section time: {seconds:.0f} s.*")
    total = time.perf_counter() - started
    env["load average at the end"] = common.load_average()
    env["calibration at the end"] = common.machine_speed()
    env["mode"] = "--quick" if args.quick else "full"
    env["sections"] = ", ".join(chosen)
    env["total time"] = f"{total:.0f} s"
    head = ["# netspec benchmark results", "",
            "Written by `python bench/run.py" + (" --quick" if args.quick else "") +
            (f" --only {args.only}" if args.only != ",".join(SECTIONS) else "") +
            "`; bench/README.md explains every table. Ratios over a target are in **bold**.",
            "", common.table(["environment", ""], [[k, v] for k, v in env.items()], "ll")]
    text = "\n".join(head) + "\n\n" + "\n\n".join(parts) + "\n"
    output = args.output or (str(common.BENCH / "RESULTS.md") if chosen == list(SECTIONS)
                             else None)
    if output:
        Path(output).write_text(text)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
