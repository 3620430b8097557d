"""Checkpoints: one safetensors file with the weights and the spec that rebuilds the model.

Layout: a standard safetensors file. The tensors of ``state_dict()`` (a tensor shared by several
names is stored once, the other names recorded as aliases) and string metadata:

``format``              ``"netspec"``
``netspec.version``     the version that wrote the file
``netspec.spec``        JSON: ``root``, ``files`` (every source file), ``block``, ``args``, ``input``
``netspec.spec_sha256`` sha256 of the ``netspec.spec`` text
``netspec.aliases``     JSON: ``{name: stored name}`` for tied tensors
``netspec.crc32``       CRC-32 of the tensor data, in file order
``netspec.layout_sha256`` sha256 of every tensor's name, dtype, shape and offsets

Writing is atomic (a temporary file in the same directory, flushed, fsynced, renamed) and
streams each tensor's bytes from its own storage; reading allocates each tensor once and fills
it by several concurrent ``preadv``. Reading never executes code from the file: the spec is
parsed by netspec's own grammar, and every header field is validated before it is used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import queue
import struct
import tempfile
import threading
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from netspec.errors import CheckpointError, NetspecError
from netspec.progress import progress

MAX_HEADER = 64 * 1024 * 1024   # a larger declared header is damage, not a model
_CRC_SLOT = "00000000"   # the CRC's place in the header, filled in after the data is written
_PIECE = 8 * 1024 * 1024   # bytes read at a time
# pieces read at once: on a virtual disk, 400 MB read by one sequential reader took 380-870 ms
# (median 780 over 8 cold reads), by four concurrent preadv readers 230-420 ms (median 250);
# from the page cache four took 129 ms against 157 for one (two cores copying)
_READERS = 4
# where tensor data starts in a file: on a page boundary, a read into a (page-aligned) tensor
# copies whole pages; read_checkpoint of 400 MB from the page cache took 169-172 ms with the
# data at offset 1,536 and 148-150 ms at offset 4,096
_ALIGN = 4096
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
           "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
           "BOOL": "bool"}


@dataclass
class LoadReport:
    """How a checkpoint's tensors matched the model they were loaded into."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    retyped: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.retyped)

    def __str__(self) -> str:
        lines = []
        if self.missing:
            lines.append("missing from the checkpoint: " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("not in the model: " + ", ".join(self.unexpected))
        for name, stored, wanted in self.mismatched:
            lines.append(f"shape mismatch for {name}: the checkpoint has {list(stored)}, "
                         f"the model wants {list(wanted)}")
        for name, stored, wanted in self.retyped:
            lines.append(f"dtype mismatch for {name}: the checkpoint has {stored}, "
                         f"the model wants {wanted}")
        return "\n".join(lines) or "all tensors matched"


# ---- writing ----------------------------------------------------------------------------------

def spec_record(analysis) -> dict[str, Any]:
    """What a checkpoint needs to rebuild a model: every source file and how it was built.

    File names are relative to the root file's folder, so no path of the machine that wrote
    the checkpoint is recorded, and imports resolve among the embedded files alone.
    """
    program = analysis.program
    base = os.path.dirname(program.root)
    files = {os.path.relpath(name, base) if name != "<string>" else name: text
             for name, text in program.texts().items()}
    root = os.path.relpath(program.root, base) if program.root != "<string>" else program.root
    return {"root": root, "files": files, "block": analysis.block, "args": analysis.args,
            "input": list(analysis.input_shape) if analysis.input_shape is not None else None}


def _bytes(tensor) -> memoryview:
    """The raw bytes of a contiguous CPU tensor, without a copy."""
    import torch

    flat = tensor.reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(bytearray())


def _storage_key(tensor) -> tuple:
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tensor.stride(), tensor.dtype)


def _collect(model, analysis) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors to store (a tied tensor once) and the aliases of the others."""
    tensors: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in model.state_dict(keep_vars=False).items():
        if tensor.device.type == "meta":
            raise CheckpointError(f"{name} is on the meta device; materialize the model first")
        key = _storage_key(tensor)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().to("cpu").contiguous()
    return tensors, aliases


def _entries(tensors: dict[str, Any]) -> dict[str, Any]:
    """The header entry of each tensor, laid out in order."""
    names = {v: k for k, v in _DTYPES.items()}
    entries: dict[str, Any] = {}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        entries[name] = {"dtype": names[str(tensor.dtype).removeprefix("torch.")],
                         "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    return entries


def _layout_digest(entries: dict[str, Any]) -> str:
    """sha256 over every tensor's name, dtype, shape and offsets: guards the header itself."""
    rows = sorted([name, e["dtype"], e["shape"], e["data_offsets"]] for name, e in entries.items())
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def _header(tensors: dict[str, Any], metadata: dict[str, str]) -> bytes:
    """The safetensors header: its 8-byte length, then JSON padded with spaces so that the
    tensor data starts at a multiple of ``_ALIGN``."""
    entries = _entries(tensors)
    metadata = dict(metadata, **{"netspec.layout_sha256": _layout_digest(entries)})
    text = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % _ALIGN)
    return struct.pack("<Q", len(text)) + text


def save(model, path: str | Path) -> None:
    """Save a netspec-built model (weights, buffers and its spec) to ``path`` atomically."""
    import netspec

    analysis = getattr(model, "_netspec", None)
    if analysis is None:
        raise CheckpointError("this model was not built by netspec, so there is no spec to save "
                              "with it; build it with netspec.build(...)")
    tensors, aliases = _collect(model, analysis)
    spec = json.dumps(spec_record(analysis), sort_keys=True)
    metadata = {
        "format": "netspec", "netspec.version": netspec.__version__, "netspec.spec": spec,
        "netspec.spec_sha256": hashlib.sha256(spec.encode()).hexdigest(),
        "netspec.aliases": json.dumps(aliases, sort_keys=True), "netspec.crc32": _CRC_SLOT,
    }
    header = _header(tensors, metadata)
    # quotes inside JSON strings are escaped, so this key-value text occurs exactly once
    key = f'"netspec.crc32":"{_CRC_SLOT}"'.encode()
    slot = header.index(key) + len(key) - len(_CRC_SLOT) - 1
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_file(path) as f, progress(f"writing {Path(path).name}", total) as advance:
        f.write(header)
        with _Crc32() as crc:
            for tensor in tensors.values():
                view = _bytes(tensor)
                crc.add(view)
                advance(f.write(view))
        f.seek(slot)
        f.write(f"{crc.value:08x}".encode())


class _Crc32:
    """The CRC-32 of the pieces given to ``add``, in order, worked out on a thread of its own
    while the caller writes the next piece: ``zlib.crc32`` and file I/O both release the GIL.
    ``value`` is set on leaving the ``with``."""

    def __enter__(self) -> "_Crc32":
        self.value = 0
        self._pieces: queue.SimpleQueue = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._result = self._pool.submit(self._run)
        return self

    def add(self, piece: memoryview) -> None:
        self._pieces.put(piece)

    def _run(self) -> int:
        crc = 0
        while (piece := self._pieces.get()) is not None:
            crc = zlib.crc32(piece, crc)
        return crc

    def __exit__(self, *exc: Any) -> None:
        self._pieces.put(None)
        self.value = self._result.result()
        self._pool.shutdown()


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Any]:
    """A binary file that replaces ``path`` only once it is completely written and synced."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)    # mkstemp's 0600 would differ from an ordinary file
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either untouched or complete."""
    with atomic_file(path) as f:
        f.write(data)


# ---- reading ----------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """A verified checkpoint: its tensors, aliases and spec record."""

    path: str
    tensors: dict[str, Any]
    aliases: dict[str, str]
    spec: dict[str, Any]
    metadata: dict[str, str]

    def state_dict(self) -> dict[str, Any]:
        state = dict(self.tensors)
        for name, stored in self.aliases.items():
            state[name] = self.tensors[stored]
        return state


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint; any damage raises ``CheckpointError``."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header, data_start = _read_header(f, size, name)
            metadata = header.pop("__metadata__", None) or {}
            if not isinstance(metadata, dict) or not all(
                    isinstance(v, str) for v in metadata.values()):
                raise CheckpointError(f"{name}: the safetensors metadata is malformed")
            spec, aliases = _verify_metadata(metadata, name)
            try:
                digest = _layout_digest(header)
            except (TypeError, KeyError, AttributeError):
                digest = None
            if digest != metadata.get("netspec.layout_sha256"):
                raise CheckpointError(f"{name}: the tensor layout does not match its sha256; "
                                      "the header was modified or damaged")
            layout = _layout(header, size - data_start, name)
            with progress(f"reading {Path(name).name}", size - data_start) as advance:
                tensors, crc = _read_tensors(f, layout, data_start, name, advance)
    except OSError as exc:
        raise CheckpointError(f"cannot read {name}: {exc.strerror or exc}") from None
    if f"{crc:08x}" != metadata.get("netspec.crc32"):
        raise CheckpointError(f"{name}: the tensor data does not match its checksum; "
                              "the file is damaged")
    if not all(isinstance(v, str) and v in tensors for v in aliases.values()):
        raise CheckpointError(f"{name}: the netspec metadata is malformed")
    return Checkpoint(name, tensors, aliases, spec, metadata)


def _read_tensors(f, layout: list[tuple], data_start: int, name: str,
                  advance) -> tuple[dict[str, Any], int]:
    """A fresh tensor for each ``layout`` entry, filled from ``f``, and the CRC-32 of all their
    bytes in file order.

    ``_READERS`` threads read ``_PIECE``-sized pieces at once, straight into the tensors'
    storage, and each works out its piece's CRC while the piece is still in the CPU's cache;
    this thread combines those in file order. ``preadv`` and ``zlib.crc32`` release the GIL.
    """
    tensors, pieces = _pieces(layout, data_start)

    def read(piece: tuple[memoryview, int]) -> tuple[int, int]:
        view, offset = piece
        _fill(f, view, offset, name)
        return zlib.crc32(view), len(view)

    crc = 0
    pool = ThreadPoolExecutor(max_workers=_READERS)
    try:
        for piece_crc, size in pool.map(read, pieces):
            crc = crc32_combine(crc, piece_crc, size)
            advance(size)
    finally:    # after a failed read or an interrupt, the pieces not yet started are dropped
        pool.shutdown(cancel_futures=True)
    return tensors, crc


def _pieces(layout: list[tuple], data_start: int
            ) -> tuple[dict[str, Any], list[tuple[memoryview, int]]]:
    """A fresh tensor for each ``layout`` entry, and the pieces that fill them: views of at most
    ``_PIECE`` bytes of their storage, each with its offset in the file."""
    tensors, pieces = {}, []
    for key, dtype, shape, begin, end in layout:
        tensors[key] = tensor = _empty(dtype, shape)
        view = _bytes(tensor)
        pieces += [(view[start:start + _PIECE], data_start + begin + start)
                   for start in range(0, end - begin, _PIECE)]
    return tensors, pieces


def _fill(f, view: memoryview, offset: int, name: str) -> None:
    """Read ``view``'s bytes from ``f`` at ``offset``, however many reads that takes."""
    done = 0
    while done < len(view):
        count = _pread(f, view[done:], offset + done)
        if not count:
            raise CheckpointError(f"{name} is truncated")
        done += count


# CRC-32's polynomial with its bits reversed, as zlib computes it: bit 31 holds the
# coefficient of x^0 and bit 0 that of x^31
_CRC_POLY = 0xEDB88320


def _gf2_times(a: int, b: int) -> int:
    """``a * b`` modulo CRC-32's polynomial, both in that bit-reversed form."""
    product = 0
    for bit in range(31, -1, -1):        # a's terms from x^0 up; b runs through b * x^k
        if a >> bit & 1:
            product ^= b
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return product


@functools.lru_cache(maxsize=64)
def _x_to_8n(n: int) -> int:
    """``x^(8n)`` modulo CRC-32's polynomial: appending ``n`` bytes multiplies a CRC by it."""
    result, power = 1 << 31, 1 << 23            # x^0, and x^8
    while n:
        if n & 1:
            result = _gf2_times(result, power)
        power = _gf2_times(power, power)
        n >>= 1
    return result


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc1`` of ``a``, and ``crc2`` of ``b``, ``length2`` bytes
    long: zlib's ``crc32_combine``, which Python's ``zlib`` does not offer. The CRC is linear
    over GF(2): ``a``'s part of the whole is ``crc1`` shifted past ``length2`` bytes, that is
    times ``x^(8 * length2)``, and ``b``'s part is ``crc2`` (the inversions zlib applies at the
    start and the end of each CRC cancel between the two)."""
    return _gf2_times(_x_to_8n(length2), crc1) ^ crc2


def _preadv(f, view: memoryview, offset: int) -> int:
    return os.preadv(f.fileno(), [view], offset)


_SEEK_LOCK = threading.Lock()


def _seek_readinto(f, view: memoryview, offset: int) -> int:
    """``_preadv`` where the platform has none (Windows): one reader at a time."""
    with _SEEK_LOCK:
        f.seek(offset)
        return f.readinto(view)


_pread = _preadv if hasattr(os, "preadv") else _seek_readinto


def _read_header(f, size: int, name: str) -> tuple[dict, int]:
    if size < 8:
        raise CheckpointError(f"{name} is not a safetensors file (too short)")
    start = f.read(8)
    (length,) = struct.unpack("<Q", start)
    if length > MAX_HEADER or length > size - 8:
        if all(32 <= b < 127 or b in b"\t\r\n" for b in start):   # "block A {", "# MLP"
            raise CheckpointError(f"{name} is text, not a safetensors file: a spec is read by "
                                  f"`netspec check` or `summary`, or netspec.build()")
        raise CheckpointError(f"{name} is not a safetensors file, or is truncated "
                              f"(declared header of {length} bytes)")
    try:
        header = json.loads(f.read(length))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{name} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} is not a safetensors file (unreadable header)")
    return header, 8 + length


def _verify_metadata(metadata: dict[str, str], name: str) -> tuple[dict, dict]:
    if metadata.get("format") != "netspec" or "netspec.spec" not in metadata:
        raise CheckpointError(f"{name} is a safetensors file without netspec metadata; "
                              "netspec.load needs a file written by netspec")
    spec_text = metadata["netspec.spec"]
    if hashlib.sha256(spec_text.encode()).hexdigest() != metadata.get("netspec.spec_sha256"):
        raise CheckpointError(f"{name}: the embedded spec does not match its sha256; "
                              "the file was modified or damaged")
    try:
        spec = json.loads(spec_text)
        aliases = json.loads(metadata.get("netspec.aliases", "{}"))
        _require(isinstance(spec, dict) and isinstance(spec.get("files"), dict))
        _require(isinstance(spec.get("root"), str) and spec["root"] in spec["files"])
        _require(all(isinstance(k, str) and isinstance(v, str) for k, v in spec["files"].items()))
        _require(isinstance(spec.get("args") or {}, dict) and isinstance(aliases, dict))
        _require(spec.get("block") is None or isinstance(spec["block"], str))
        _require(spec.get("input") is None or isinstance(spec["input"], list))
    except (ValueError, RecursionError):
        raise CheckpointError(f"{name}: the netspec metadata is malformed") from None
    return spec, aliases


def _layout(header: dict, data_size: int, name: str) -> list[tuple]:
    """Validated (name, dtype, shape, begin, end) in file order, covering the data exactly."""
    import torch

    entries = []
    for key, entry in header.items():
        try:
            dtype = getattr(torch, _DTYPES[entry["dtype"]])
            shape = tuple(entry["shape"])
            begin, end = entry["data_offsets"]
            _require(all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                         for d in shape))
            _require(isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end)
            numel = 1
            for d in shape:
                numel *= d
            _require(numel * torch.empty((), dtype=dtype).element_size() == end - begin)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{name} is damaged: bad header entry for {key!r}") from None
        entries.append((key, dtype, shape, begin, end))
    entries.sort(key=lambda e: e[3])
    position = 0
    for key, _, _, begin, end in entries:
        if begin != position:
            raise CheckpointError(f"{name} is damaged: tensor data overlaps or has gaps")
        position = end
    if position != data_size:
        raise CheckpointError(f"{name} is damaged or truncated: the header describes "
                              f"{position:,} bytes of data, the file holds {data_size:,}")
    return entries


def _require(condition: bool) -> None:
    """A header check that, unlike ``assert``, also holds under ``python -O``."""
    if not condition:
        raise ValueError("malformed")


def _empty(dtype, shape):
    import torch

    return torch.empty(shape, dtype=dtype)


def load(path: str | Path, spec: str | Path | None = None, *, strict: bool = True,
         device: Any = None, block: str | None = None, trust: bool = False):
    """Rebuild the model saved in ``path`` and load its weights.

    With ``spec``, the weights go into that (edited) spec instead of the embedded one; ``strict``
    then demands every name and shape to match (``CheckpointError`` lists what does not), and
    ``strict=False`` loads what matches, initialises the rest, and warns with a ``LoadReport``.
    A spec from a checkpoint may import Python layers only when ``trust=True``.
    """
    from netspec.api import analyze, build_analysis, check_device
    from netspec.init import _reapply_ties
    from netspec.program import load as load_program

    if device is not None:
        check_device(device)

    ckpt = read_checkpoint(path)
    record = ckpt.spec
    args = record.get("args") or {}
    if spec is None:
        program = embedded_program(record, trust)
        block = block or record.get("block")
    else:
        program = load_program(spec)
    analysis = analyze(program, block, record.get("input"), args=args, free_dims=True)
    state = ckpt.state_dict()
    meta_model = build_analysis(analysis, device="meta")
    report = _compare(meta_model.state_dict(), state)
    if report.clean:
        meta_model.load_state_dict(state, strict=True, assign=True)
        _reapply_ties(meta_model)
        model = meta_model.to(device) if device is not None else meta_model
        _reapply_ties(model)
    elif strict:
        raise CheckpointError(f"{ckpt.path} does not fit the spec:\n{report}")
    else:
        model = build_analysis(analysis, device=device)
        wanted = model.state_dict()
        usable = {k: v for k, v in state.items() if k in wanted and v.shape == wanted[k].shape
                  and (v.dtype == wanted[k].dtype or v.is_floating_point() ==
                       wanted[k].is_floating_point())}
        model.load_state_dict(usable, strict=False)
        warnings.warn(f"loaded {ckpt.path} partially:\n{report}", stacklevel=2)
    object.__setattr__(model, "_netspec_load_report", report)
    return model


def embedded_program(record: dict[str, Any], trust: bool):
    """The ``Program`` of a checkpoint's spec record; Python imports only with ``trust``."""
    from netspec.program import load as load_program

    program = load_program(record["root"], sources=record["files"], trusted=trust)
    program.embedded = True
    return program


def _compare(wanted: dict, stored: dict) -> LoadReport:
    report = LoadReport()
    for name, tensor in wanted.items():
        if name not in stored:
            report.missing.append(name)
        elif tuple(stored[name].shape) != tuple(tensor.shape):
            report.mismatched.append((name, tuple(stored[name].shape), tuple(tensor.shape)))
        elif stored[name].dtype != tensor.dtype and not (
                stored[name].is_floating_point() and tensor.is_floating_point()):
            report.retyped.append((name, str(stored[name].dtype).removeprefix("torch."),
                                   str(tensor.dtype).removeprefix("torch.")))
    report.unexpected = [name for name in stored if name not in wanted]
    return report



__all__ = ["Checkpoint", "CheckpointError", "LoadReport", "NetspecError", "atomic_file",
           "atomic_write", "load", "read_checkpoint", "save"]
