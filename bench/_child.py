"""Measurements that need a process of their own (peak RSS, what got imported).

``python bench/_child.py COMMAND ARGS``; each command prints one JSON object on its last line.

measure -- CMD...   run CMD; its wall time and peak RSS (getrusage(RUSAGE_CHILDREN).ru_maxrss,
                    which in this small process covers that one child only)
probe SPEC          time netspec.check and the summary rows in-process; was torch imported?
meta-build SPEC     netspec.build(SPEC, device="meta") twice: time, RSS growth, parameters
load PATH           netspec.load(PATH): time and peak RSS beyond the baseline after imports
readinto PATH       the reading limit: readinto straight into fresh tensors, same measurements
preadv PATH         netspec's own reads (pieces by concurrent preadv) without checksum or model
save PATH           build the checkpoint benchmark's model, then netspec.save(model, PATH)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def maxrss() -> int:
    """Peak RSS of this process so far, in bytes.

    ``VmHWM`` where /proc has it: on Linux a child's ``ru_maxrss`` starts at its parent's RSS
    at fork time (it survives ``exec``), so in a child of a large process it says nothing about
    the child. ``ru_maxrss`` (KiB on Linux) elsewhere.
    """
    hwm = _status("VmHWM")
    return hwm if hwm is not None else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    return _status("VmRSS") or 0


def emit(**values) -> None:
    print(json.dumps(values))


def measure(cmd: list[str]) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    emit(wall=wall, maxrss=rss, rc=proc.returncode,
         out=(proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""])


def probe(spec: str) -> None:
    t0 = time.perf_counter()
    import netspec
    t1 = time.perf_counter()
    problems = netspec.check(spec)
    t2 = time.perf_counter()
    torch_after_check = "torch" in sys.modules
    rss_check = maxrss()
    from netspec.api import analyze
    from netspec.summary import summary_rows

    t3 = time.perf_counter()
    rows = summary_rows(analyze(spec))
    t4 = time.perf_counter()
    emit(import_s=t1 - t0, check_s=t2 - t1, ok=not problems, torch_after_check=torch_after_check,
         rss_after_check=rss_check, summary_s=t4 - t3, torch_after_summary="torch" in sys.modules,
         params=rows[0]["params"], rss_after_summary=maxrss())


def meta_build(spec: str) -> None:
    t0 = time.perf_counter()
    import torch

    import netspec
    t1 = time.perf_counter()
    base = current_rss()
    base_peak = maxrss()
    t2 = time.perf_counter()
    model = netspec.build(spec, device="meta")
    t3 = time.perf_counter()
    first_rss, first_peak = current_rss(), maxrss()
    params = sum(p.numel() for p in model.parameters())
    meta = all(p.device.type == "meta" for p in model.parameters())
    del model
    t4 = time.perf_counter()
    model = netspec.build(spec, device="meta")
    t5 = time.perf_counter()
    emit(import_s=t1 - t0, first_s=t3 - t2, second_s=t5 - t4, params=params, meta=meta,
         rss_before=base, rss_after=first_rss, peak_before=base_peak, peak_after=first_peak,
         peak_end=maxrss(), torch=torch.__version__)


def load(path: str) -> None:
    import safetensors.torch  # noqa: F401  (imports are part of the baseline)
    import torch  # noqa: F401

    import netspec
    base = maxrss()
    t0 = time.perf_counter()
    model = netspec.load(path)
    seconds = time.perf_counter() - t0
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    emit(seconds=seconds, baseline=base, peak=maxrss(), weights=weights,
         size=os.path.getsize(path))


def readinto(path: str) -> None:
    """The reading limit, as the issue defines it: each tensor of the file allocated with
    ``torch.empty`` and filled by one ``readinto`` straight from the file, in the file's order;
    no checksum, no model. The header is read as netspec reads it."""
    import safetensors.torch  # noqa: F401  (the same imports as `load`, for the same baseline)
    import torch  # noqa: F401

    import netspec  # noqa: F401
    from netspec.checkpoint import _bytes, _empty, _layout, _read_header
    base = maxrss()
    t0 = time.perf_counter()
    size = os.path.getsize(path)
    tensors = []
    with open(path, "rb", buffering=0) as f:
        header, data_start = _read_header(f, size, path)
        header.pop("__metadata__", None)
        for _, dtype, shape, begin, end in _layout(header, size - data_start, path):
            tensor = _empty(dtype, shape)
            view = _bytes(tensor)
            done = 0
            while done < end - begin:
                n = f.readinto(view[done:])
                if not n:
                    raise SystemExit(f"{path} is truncated")
                done += n
            tensors.append(tensor)
    seconds = time.perf_counter() - t0
    emit(seconds=seconds, baseline=base, peak=maxrss(), size=size)


def preadv(path: str) -> None:
    """The reads `netspec.load` makes, and nothing else: the same tensors and pieces
    (``checkpoint._pieces``), filled by ``_READERS`` threads at once with ``checkpoint._fill``;
    no checksum, no model. What netspec's reading costs on top of its own strategy."""
    import safetensors.torch  # noqa: F401  (the same imports as `load`, for the same baseline)
    import torch  # noqa: F401

    import netspec  # noqa: F401
    from concurrent.futures import ThreadPoolExecutor

    from netspec import checkpoint
    base = maxrss()
    t0 = time.perf_counter()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header, data_start = checkpoint._read_header(f, size, path)
        header.pop("__metadata__", None)
        layout = checkpoint._layout(header, size - data_start, path)
        tensors, pieces = checkpoint._pieces(layout, data_start)   # freed after the timing
        with ThreadPoolExecutor(max_workers=checkpoint._READERS) as pool:
            for _ in pool.map(lambda piece: checkpoint._fill(f, *piece, path), pieces):
                pass
    seconds = time.perf_counter() - t0
    emit(seconds=seconds, baseline=base, peak=maxrss(), size=size)


def save(path: str) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import checkpoints

    import netspec
    model = netspec.build(checkpoints.SPEC, seed=0)
    base = maxrss()
    t0 = time.perf_counter()
    netspec.save(model, path)
    seconds = time.perf_counter() - t0
    emit(seconds=seconds, baseline=base, peak=maxrss(), size=os.path.getsize(path))


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "measure":
        measure(args[1:] if args and args[0] == "--" else args)
    elif command == "probe":
        probe(args[0])
    elif command == "meta-build":
        meta_build(args[0])
    elif command == "load":
        load(args[0])
    elif command == "readinto":
        readinto(args[0])
    elif command == "preadv":
        preadv(args[0])
    elif command == "save":
        save(args[0])
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
