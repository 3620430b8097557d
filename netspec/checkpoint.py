"""Checkpoints: one safetensors file with the weights and the spec that rebuilds the model.

Layout: the tensors of ``state_dict()`` (a tensor shared by several names is stored once, the
other names recorded as aliases) and string metadata:

``format``              ``"netspec"``
``netspec.version``     the version that wrote the file
``netspec.spec``        JSON: ``root``, ``files`` (every source file), ``block``, ``args``, ``input``
``netspec.spec_sha256`` sha256 of the ``netspec.spec`` text
``netspec.aliases``     JSON: ``{name: stored name}`` for tied tensors
``netspec.crc32``       CRC-32 of every stored tensor's bytes, in name order

Writing is atomic (a temporary file in the same directory, flushed, fsynced, renamed). Reading
never executes code from the file: the spec is parsed by netspec's own grammar.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.errors import CheckpointError, NetspecError

MAX_HEADER = 64 * 1024 * 1024   # a larger declared header is damage, not a model


@dataclass
class LoadReport:
    """How a checkpoint's tensors matched the model they were loaded into."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = []
        if self.missing:
            lines.append("missing from the checkpoint: " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("not in the model: " + ", ".join(self.unexpected))
        for name, stored, wanted in self.mismatched:
            lines.append(f"shape mismatch for {name}: the checkpoint has {list(stored)}, "
                         f"the model wants {list(wanted)}")
        return "\n".join(lines) or "all tensors matched"


# ---- writing ----------------------------------------------------------------------------------

def spec_record(analysis) -> dict[str, Any]:
    """What a checkpoint needs to rebuild a model: every source file and how it was built."""
    return {"root": analysis.program.root, "files": analysis.program.texts(),
            "block": analysis.block, "args": analysis.args,
            "input": list(analysis.input_shape) if analysis.input_shape is not None else None}


def _crc(tensors: dict) -> str:
    crc = 0
    for name in sorted(tensors):
        crc = zlib.crc32(_bytes(tensors[name]), crc)
    return f"{crc:08x}"


def _bytes(tensor) -> memoryview:
    import torch

    flat = tensor.detach().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _storage_key(tensor) -> tuple:
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tensor.stride(), tensor.dtype)


def checkpoint_bytes(model, analysis=None) -> bytes:
    """The bytes of a checkpoint for ``model`` (built by netspec)."""
    from safetensors.torch import save

    import netspec

    analysis = analysis or getattr(model, "_netspec", None)
    if analysis is None:
        raise CheckpointError("this model was not built by netspec, so there is no spec to save "
                              "with it; build it with netspec.build(...)")
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
    spec = json.dumps(spec_record(analysis), sort_keys=True)
    metadata = {
        "format": "netspec", "netspec.version": netspec.__version__, "netspec.spec": spec,
        "netspec.spec_sha256": hashlib.sha256(spec.encode()).hexdigest(),
        "netspec.aliases": json.dumps(aliases, sort_keys=True), "netspec.crc32": _crc(tensors),
    }
    return save(tensors, metadata=metadata)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either untouched or complete."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def save(model, path: str | Path) -> None:
    """Save a netspec-built model (weights, buffers and its spec) to ``path`` atomically."""
    atomic_write(path, checkpoint_bytes(model))


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
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {name}: {exc.strerror or exc}") from None
    metadata = _metadata(data, name)
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
        assert isinstance(spec, dict) and isinstance(spec.get("files"), dict)
        assert isinstance(spec.get("root"), str) and spec["root"] in spec["files"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in spec["files"].items())
        assert isinstance(spec.get("args", {}), dict) and isinstance(aliases, dict)
    except (ValueError, AssertionError):
        raise CheckpointError(f"{name}: the netspec metadata is malformed") from None
    try:
        from safetensors.torch import load

        tensors = load(data)
    except Exception as exc:   # safetensors' own errors: the file is damaged
        raise CheckpointError(f"{name} is damaged: {exc}") from None
    if _crc(tensors) != metadata.get("netspec.crc32"):
        raise CheckpointError(f"{name}: the tensor data does not match its checksum; "
                              "the file is damaged")
    if not all(isinstance(v, str) and v in tensors for v in aliases.values()):
        raise CheckpointError(f"{name}: the netspec metadata is malformed")
    return Checkpoint(name, tensors, aliases, spec, metadata)


def _metadata(data: bytes, name: str) -> dict[str, str]:
    if len(data) < 8:
        raise CheckpointError(f"{name} is not a safetensors file (too short)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER or size > len(data) - 8:
        raise CheckpointError(f"{name} is not a safetensors file, or is truncated "
                              f"(declared header of {size} bytes)")
    try:
        header = json.loads(data[8:8 + size])
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{name} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} is not a safetensors file (unreadable header)")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{name}: the safetensors metadata is malformed")
    return metadata


def load(path: str | Path, spec: str | Path | None = None, *, strict: bool = True,
         device: Any = None, block: str | None = None):
    """Rebuild the model saved in ``path`` and load its weights.

    With ``spec``, the weights go into that (edited) spec instead of the embedded one; ``strict``
    then demands every name and shape to match (``CheckpointError`` lists what does not), and
    ``strict=False`` loads what matches, initialises the rest, and warns with a ``LoadReport``.
    """
    from netspec.api import analyze, build_analysis
    from netspec.init import _reapply_ties
    from netspec.program import load as load_program

    ckpt = read_checkpoint(path)
    record = ckpt.spec
    args = record.get("args") or {}
    if spec is None:
        program = load_program(record["root"], sources=record["files"])
        block = block or record.get("block")
    else:
        program = load_program(spec)
    analysis = analyze(program, block, record.get("input"), **args)
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
        usable = {k: v for k, v in state.items() if k in wanted and v.shape == wanted[k].shape}
        model.load_state_dict(usable, strict=False)
        warnings.warn(f"loaded {ckpt.path} partially:\n{report}", stacklevel=2)
    object.__setattr__(model, "_netspec_load_report", report)
    return model


def _compare(wanted: dict, stored: dict) -> LoadReport:
    report = LoadReport()
    for name, tensor in wanted.items():
        if name not in stored:
            report.missing.append(name)
        elif tuple(stored[name].shape) != tuple(tensor.shape):
            report.mismatched.append((name, tuple(stored[name].shape), tuple(tensor.shape)))
    report.unexpected = [name for name in stored if name not in wanted]
    return report


__all__ = ["Checkpoint", "CheckpointError", "LoadReport", "NetspecError", "atomic_write",
           "load", "read_checkpoint", "save"]
