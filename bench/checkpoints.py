"""Checkpoint save and load of a ~400 MB model against what the disk allows.

The limit for saving is one ``write`` of the same bytes plus ``fsync``; for loading, reading
straight into the parameters' storage: each tensor of the file allocated with ``torch.empty``
and filled by one ``readinto`` (no checksum, no model). Loads run in fresh processes
(``_child.py``) so that the peak RSS beyond the process's baseline after its imports can be
read; each load is measured with the file evicted from the page cache (``posix_fadvise``
``DONTNEED`` after an ``fsync``: read from the disk) and with the file cached.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import (fmt_bytes, fmt_time, load_average, median, quartiles, run_child, table,
                    verdict)

SPEC = """# six Linear(4096): 6 x (4096 x 4096 + 4096) float32 values, about 403 MB
block Big {
    input x: [N, 4096]
    repeat 6 { Linear(4096) }
}
"""
TARGET_SPEED = 0.8
TARGET_RSS = 1.1
# Seconds of quiet before each read from the disk. Reads from this machine's (virtual) disk
# ran at about 1.5 GB/s or about 650 MB/s, and a read straight after another was the slower:
# without the pause, whichever command read second in a round was slower, whatever it was.
DISK_PAUSE = 2.0
# the loads measured in each round, each first in turn: netspec, the limit, and netspec's own
# reads without checksum or model (how much the rest of netspec.load costs)
LOADERS = ["load", "readinto", "preadv"]


def _evict(path: Path) -> bool:
    """Drop ``path`` from the page cache; False where the platform cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def _cache(path: Path) -> None:
    """Read ``path`` into the page cache through one small buffer.

    Not with ``read_bytes``: 400 MB allocated and freed in this process just before a load
    made the next process's first touch of 400 MB fresh memory slow here (a load or a readinto
    that ran first in a round took 200-370 ms against 165-175 ms after it), and the
    cached-load ratio swung between 0.57 and 0.98 from run to run.
    """
    buf = bytearray(8 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def _limit_write(path: Path, data: bytes) -> float:
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        f.write(data)
        os.fsync(f.fileno())
    return time.perf_counter() - t0


def _child(args: list[str]) -> dict:
    proc = run_child(args)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool, log=print, directory: str | None = None) -> dict:
    import netspec

    rounds = 2 if quick else 8     # one write or read can take three times another here
    tmp = Path(tempfile.mkdtemp(prefix="netspec-bench-", dir=directory))
    try:
        model = netspec.build(SPEC, seed=0)
        weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        ours_path, limit_path = tmp / "model.safetensors", tmp / "limit.bin"
        netspec.save(model, ours_path)
        data = ours_path.read_bytes()
        save_ours, save_limit = [], []
        for r in range(rounds):
            # each goes first in half the rounds: the second of two disk operations in a row
            # was often the slower here, whichever it was
            order = ["ours", "limit"] if r % 2 == 0 else ["limit", "ours"]
            for what in order:
                for p in (ours_path, limit_path):
                    if p.exists():
                        p.unlink()
                gc.collect()
                if what == "ours":
                    t0 = time.perf_counter()
                    netspec.save(model, ours_path)
                    save_ours.append(time.perf_counter() - t0)
                else:
                    save_limit.append(_limit_write(limit_path, data))
        if not ours_path.exists():
            netspec.save(model, ours_path)
        del model, data
        gc.collect()
        log(f"  checkpoints: save {median(save_ours):.2f}s, limit {median(save_limit):.2f}s")
        loads: dict[tuple[str, str], list[dict]] = {}
        evicted = True
        # twice the rounds from the disk: one read there took 340 ms and the next 720 ms, so
        # that with eight rounds the median of their ratios ranged from 0.78 to 1.28 over seven
        # runs of the same code
        for r in range(2 * rounds):
            for cache in ("cold", "warm") if r % 2 == 0 else ("cold",):
                turn = (r if cache == "cold" else r // 2) % len(LOADERS)   # the cache's round
                for what in LOADERS[turn:] + LOADERS[:turn]:
                    if cache == "cold":
                        evicted = _evict(ours_path) and evicted
                        time.sleep(DISK_PAUSE)
                    else:
                        _cache(ours_path)
                    loads.setdefault((what, cache), []).append(
                        _child([what, str(ours_path)]))
        save_rss = _child(["save", str(tmp / "rss.safetensors")])
        log("  checkpoints: load " + ", ".join(
            f"{k[0]} {k[1]} {median([r['seconds'] for r in v]):.2f}s" for k, v in loads.items()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"weights": weights, "save_ours": save_ours, "save_limit": save_limit, "loads": loads,
            "save_rss": save_rss, "evicted": evicted, "rounds": rounds, "cold_rounds": 2 * rounds,
            "load_after": load_average()}


def _paired(ours: list[float], limit: list[float]) -> tuple[float, float, float]:
    """netspec's speed over the limit's in each round (the two ran next to each other, so a
    disk that changes speed over the minutes moves both), then the median and quartiles."""
    ratios = [lim / o for o, lim in zip(ours, limit)]
    return (median(ratios), *quartiles(ratios))


def report(data: dict) -> str:
    weights = data["weights"]
    size = data["loads"][("load", "cold")][0]["size"]
    so, sl = median(data["save_ours"]), median(data["save_limit"])
    ratio, q1, q3 = _paired(data["save_ours"], data["save_limit"])
    rows = [["save: `netspec.save`", fmt_time(so), f"{size / so / 1e6:,.0f} MB/s",
             "write + fsync of the same bytes", fmt_time(sl), f"{size / sl / 1e6:,.0f} MB/s",
             f"{ratio:.2f} ({q1:.2f}–{q3:.2f})", ""]]
    verdicts = {"save": ratio >= TARGET_SPEED}
    extra_rss = {}
    for cache in ("cold", "warm"):
        lo = data["loads"][("load", cache)]
        li = data["loads"][("readinto", cache)]
        to, tl = median([r["seconds"] for r in lo]), median([r["seconds"] for r in li])
        ro = max(r["peak"] - r["baseline"] for r in lo)
        rl = max(r["peak"] - r["baseline"] for r in li)
        extra_rss[cache] = ro
        ratio, q1, q3 = _paired([r["seconds"] for r in lo], [r["seconds"] for r in li])
        verdicts[f"load {cache}"] = ratio >= TARGET_SPEED
        what = "from disk (evicted from the page cache)" if cache == "cold" else "cached"
        rows.append([f"load {what}: `netspec.load`", fmt_time(to), f"{size / to / 1e6:,.0f} MB/s",
                     "readinto straight into fresh tensors", fmt_time(tl),
                     f"{size / tl / 1e6:,.0f} MB/s", f"{ratio:.2f} ({q1:.2f}–{q3:.2f})",
                     f"{fmt_bytes(ro)} = {ro / weights:.2f}x the weights (limit: "
                     f"{rl / weights:.2f}x)"])
    own = []
    for cache in ("cold", "warm"):
        lo = [r["seconds"] for r in data["loads"][("load", cache)]]
        lp = [r["seconds"] for r in data["loads"][("preadv", cache)]]
        ratio, q1, q3 = _paired(lo, lp)
        own.append(f"{'from the disk' if cache == 'cold' else 'cached'} {fmt_time(median(lp))}, "
                   f"netspec {ratio:.2f}x of it ({q1:.2f}–{q3:.2f})")
    s = data["save_rss"]
    save_extra = s["peak"] - s["baseline"]
    out = [f"Model: 6 x Linear(4096), {weights / 1e6:,.1f} MB of float32 weights, a "
           f"{size / 1e6:,.1f} MB file, in a temporary directory. Times are medians of "
           f"{data['rounds']} rounds ({data['cold_rounds']} for loads from the disk), each "
           f"running netspec and the limits next to each other, each first in turn; the "
           f"ratio is the median of the rounds' ratios. Every load in a fresh process."
           + ("" if data["evicted"] else " (The page cache could not be dropped here: "
              "'cold' loads may have been cached.)"),
           table(["operation", "netspec", "netspec speed", "limit", "limit time", "limit speed",
                  "netspec speed / limit, median of the rounds (IQR)",
                  "peak RSS beyond the baseline"], rows, "lrrlrrrl"),
           "netspec reads a file in 8 MiB pieces, four at once (`preadv`), each reader "
           "checksumming its piece; the issue's limit is one `readinto` per tensor. The same "
           "reads as netspec's with no checksum and no model took: " + "; ".join(own) + ".",
           f"Peak RSS of `netspec.save` beyond the model itself: {fmt_bytes(save_extra)} = "
           f"{save_extra / weights:.2f}x the weights.",
           f"Targets: load >= {TARGET_SPEED}x the limit: cold {verdict(verdicts['load cold'])}, "
           f"warm {verdict(verdicts['load warm'])}; save >= {TARGET_SPEED}x: "
           f"{verdict(verdicts['save'])}; peak RSS during load <= {TARGET_RSS}x the weights: "
           f"{verdict(max(extra_rss.values()) <= TARGET_RSS * weights)} "
           f"(worst {max(extra_rss.values()) / weights:.2f}x). Load average after this section: "
           f"{data['load_after']}."]
    return "\n\n".join(out)
