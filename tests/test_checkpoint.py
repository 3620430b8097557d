"""Checkpoints: one safetensors file holding the weights and the spec that rebuilds the model.

Every spec in specs/ survives a round trip (written by ``netspec.save`` and by
``netspec compile``) with identical tensors and bit-identical outputs; ties and constants
survive; an edited spec loads strictly or partially; every kind of damage is a
``CheckpointError`` (or, for a well-formed file whose spec has errors, a ``SpecError``); writing
is atomic; ``netspec inspect`` describes a file and reports a damaged one without a traceback.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import netspec
from netspec.dims import Sym

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SPEC_FILES = sorted(SPECS.glob("*.net"))
SEED = 1234


# ---- helpers ---------------------------------------------------------------------------------

def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    from netspec.cli import app

    monkeypatch.setenv("COLUMNS", "240")
    with pytest.raises(SystemExit) as info:
        app([str(a) for a in args], prog_name="netspec")
    out, err = capsys.readouterr()
    return info.value.code, out, err


def sample_input(model: nn.Module) -> torch.Tensor:
    """An input of the shape the spec declares, its symbols (N, ...) set to 2."""
    declared = model._netspec.ir.in_shape
    shape = tuple(2 if isinstance(d, Sym) else d for d in declared)
    return torch.randn(shape, generator=torch.Generator().manual_seed(7))


def assert_same_state(want: nn.Module, got: nn.Module) -> None:
    a, b = want.state_dict(), got.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


def assert_materialised(model: nn.Module) -> None:
    for t in list(model.parameters()) + list(model.buffers()):
        assert not t.is_meta and t.device.type == "cpu"


def file_keys(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def file_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def rewrite(src: Path, dst: Path, *, spec_text: str | None = None, rehash: bool = True,
            **metadata: str) -> Path:
    """A copy of checkpoint ``src`` with its metadata changed; the tensor entries, their order
    and the data bytes (so the checksum) are kept."""
    data = src.read_bytes()
    size = header_size(data)
    header = json.loads(data[8:8 + size])
    md = dict(header["__metadata__"])
    if spec_text is not None:
        md["netspec.spec"] = spec_text
        if rehash:
            md["netspec.spec_sha256"] = hashlib.sha256(spec_text.encode()).hexdigest()
    md.update(metadata)
    header["__metadata__"] = md
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    dst.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size:])
    return dst


def header_size(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


# ---- a round trip for every spec -------------------------------------------------------------

@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.name for p in SPEC_FILES])
def test_round_trip(path: Path, tmp_path, capsys, monkeypatch):
    model = netspec.build(path, seed=SEED)
    api_file = tmp_path / "api.safetensors"
    netspec.save(model, api_file)
    cli_file = tmp_path / "cli.safetensors"
    code, out, err = run_cli(["compile", path, "-o", cli_file, "--seed", SEED], capsys,
                             monkeypatch)
    assert code == 0, err
    assert "wrote" in out

    model.eval()
    x = sample_input(model)
    with torch.no_grad():
        want = model(x.clone())
    for file in (api_file, cli_file):
        stored = file_keys(file)
        aliases = json.loads(file_metadata(file)["netspec.aliases"])
        assert stored | set(aliases) == set(model.state_dict())
        assert not stored & set(aliases)
        # the tensor data starts on a page boundary, and the safetensors library reads it
        assert (8 + header_size(file.read_bytes()[:8])) % 4096 == 0
        with safe_open(str(file), "pt") as f:
            for key in stored:
                assert torch.equal(f.get_tensor(key), model.state_dict()[key]), key

        loaded = netspec.load(file)
        assert type(loaded).__name__ == type(model).__name__
        assert_materialised(loaded)
        assert_same_state(model, loaded)
        assert [n for n, _ in loaded.named_parameters()] == [
            n for n, _ in model.named_parameters()]
        assert [n for n, _ in loaded.named_buffers()] == [n for n, _ in model.named_buffers()]
        loaded.eval()
        with torch.no_grad():
            got = loaded(x.clone())
        assert got.shape == want.shape and torch.equal(got, want), file.name


def test_round_trip_with_block_args_and_input(tmp_path, capsys, monkeypatch):
    out_file = tmp_path / "my_linear.safetensors"
    code, _, err = run_cli(["compile", SPECS / "my_linear.net", "-o", out_file, "--block",
                            "MyLinear", "--set", "units=3", "--input", "[2, 5]", "--seed", "4"],
                           capsys, monkeypatch)
    assert code == 0, err
    want = netspec.build(SPECS / "my_linear.net", "MyLinear", input=[2, 5], seed=4, units=3)
    loaded = netspec.load(out_file)
    assert loaded.weight.shape == (5, 3)
    assert_same_state(want, loaded)
    record = json.loads(file_metadata(out_file)["netspec.spec"])
    assert record["block"] == "MyLinear" and record["args"] == {"units": 3}
    assert record["input"] == [2, 5]

    out_file = tmp_path / "dict.safetensors"
    code, _, err = run_cli(["compile", SPECS / "param_dict.net", "-o", out_file, "--set",
                            "choice=linear3", "--seed", "4"], capsys, monkeypatch)
    assert code == 0, err
    loaded = netspec.load(out_file)
    assert loaded(torch.randn(3, 4)).shape == (3, 2)


def test_the_spec_travels_inside_the_file(tmp_path):
    (tmp_path / "lib.net").write_text("# lib\nblock Head(k: int = 3) { Linear(16); ReLU(); "
                                      "Linear(k) }\n")
    (tmp_path / "main.net").write_text('# main\nimport "lib.net"\nblock Main {\n'
                                       "    input x: [N, 8]\n    body: Linear(16)\n"
                                       "    head: Head(k=4)\n}\n")
    model = netspec.build(tmp_path / "main.net", seed=0)
    file = tmp_path / "out" / "main.safetensors"
    file.parent.mkdir()
    netspec.save(model, file)
    record = json.loads(file_metadata(file)["netspec.spec"])
    assert len(record["files"]) == 2
    (tmp_path / "lib.net").unlink()
    (tmp_path / "main.net").write_text("this is no longer a spec")
    loaded = netspec.load(file)
    assert_same_state(model, loaded)


def test_load_to_a_device_and_train(tmp_path):
    model = netspec.build(SPECS / "mlp.net", seed=0)
    netspec.save(model, tmp_path / "m.safetensors")
    loaded = netspec.load(tmp_path / "m.safetensors", device="cpu")
    assert_materialised(loaded)
    assert all(p.requires_grad and isinstance(p, nn.Parameter) for p in loaded.parameters())
    loaded(torch.randn(3, 784)).sum().backward()
    assert loaded.hidden.weight.grad is not None


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_other_dtypes_round_trip(tmp_path, dtype):
    model = netspec.build(SPECS / "fixed_hidden_mlp.net", seed=0, dtype=dtype)
    netspec.save(model, tmp_path / "m.safetensors")
    loaded = netspec.load(tmp_path / "m.safetensors")
    assert loaded.linear.weight.dtype == getattr(torch, dtype)
    assert loaded.get_buffer("rand_weight").dtype == getattr(torch, dtype)
    assert_same_state(model, loaded)


def test_trained_model_round_trip(tmp_path):
    model = netspec.build(SPECS / "tied.net", seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(3, 20)).square().sum().backward()
    optimizer.step()
    with torch.no_grad():       # a non-contiguous parameter is stored by value
        model[0].weight.data = model[0].weight.data.t().contiguous().t()
    assert not model[0].weight.is_contiguous()
    netspec.save(model, tmp_path / "m.safetensors")
    loaded = netspec.load(tmp_path / "m.safetensors")
    assert_same_state(model, loaded)
    assert loaded[2] is loaded[4]


@pytest.mark.parametrize("decl", ["const e = zeros(0)", "param e = zeros(0)"])
def test_empty_tensor_round_trip(tmp_path, decl):
    model = netspec.build(f"block A {{ input x: [N, 4]; {decl}; Linear(2) }}", seed=0)
    assert model.state_dict()["e"].shape == (0,)
    netspec.save(model, tmp_path / "e.safetensors")
    assert "e" in file_keys(tmp_path / "e.safetensors")     # a valid safetensors file
    assert_same_state(model, netspec.load(tmp_path / "e.safetensors"))


# ---- ties and constants ----------------------------------------------------------------------

@pytest.mark.parametrize("block, uses", [("Tied", (2, 4)), ("TiedTwice", (0, 2))])
def test_shared_module_survives(block, uses, tmp_path):
    model = netspec.build(SPECS / "tied.net", block, seed=3)
    file = tmp_path / "tied.safetensors"
    netspec.save(model, file)
    a, b = uses
    assert f"{a}.weight" in file_keys(file) and f"{b}.weight" not in file_keys(file)
    loaded = netspec.load(file)
    assert loaded[a] is loaded[b]
    assert loaded[a].weight is loaded[b].weight
    assert len(list(loaded.parameters())) == len(list(model.parameters()))
    assert_same_state(model, loaded)
    # still one parameter when trained
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.1)
    x = torch.randn(3, loaded[0].in_features)
    loaded(x).square().sum().backward()
    optimizer.step()
    assert torch.equal(loaded[a].weight, loaded[b].weight)


TIE = """# two layers with one weight
block A {
    input x: [N, 4]
    a: Linear(4)
    b: Linear(4)
    tie b.weight = a.weight
}
"""


def test_tie_survives_and_is_stored_once(tmp_path):
    model = netspec.build(TIE, seed=5)
    assert model.a.weight is model.b.weight
    file = tmp_path / "tie.safetensors"
    netspec.save(model, file)
    assert file_keys(file) == {"a.weight", "a.bias", "b.bias"}
    assert json.loads(file_metadata(file)["netspec.aliases"]) == {"b.weight": "a.weight"}
    loaded = netspec.load(file)
    assert isinstance(loaded.a.weight, nn.Parameter)
    assert loaded.a.weight is loaded.b.weight
    assert loaded.a.bias is not loaded.b.bias
    assert_same_state(model, loaded)
    assert [n for n, _ in loaded.named_parameters()] == ["a.weight", "a.bias", "b.bias"]
    x = torch.randn(2, 4)
    assert torch.equal(loaded(x), model(x))


def test_constants_survive(tmp_path):
    model = netspec.build(SPECS / "fixed_hidden_mlp.net", seed=8)
    netspec.save(model, tmp_path / "f.safetensors")
    loaded = netspec.load(tmp_path / "f.safetensors")
    assert torch.equal(loaded.get_buffer("rand_weight"), model.get_buffer("rand_weight"))
    assert "rand_weight" in dict(loaded.named_buffers())
    assert "rand_weight" not in dict(loaded.named_parameters())
    assert not loaded.get_buffer("rand_weight").requires_grad
    assert_same_state(model, loaded)


# ---- loading into an edited spec -------------------------------------------------------------

BASE = """# three layers
block Net {
    input x: [N, 8]
    a: Linear(16)
    b: Linear(4)
    c: Linear(2)
}
"""
EDITED = BASE.replace("b: Linear(4)", "b: Linear(5)").replace("c: Linear(2)", "d: Linear(2)")


@pytest.fixture
def base_file(tmp_path) -> tuple[nn.Module, Path]:
    model = netspec.build(BASE, seed=9)
    file = tmp_path / "base.safetensors"
    netspec.save(model, file)
    return model, file


def test_edited_spec_strict_lists_every_difference(base_file, tmp_path):
    _, file = base_file
    edited = tmp_path / "edited.net"
    edited.write_text(EDITED)
    for spec in (edited, EDITED):
        with pytest.raises(netspec.CheckpointError) as info:
            netspec.load(file, spec=spec)
        message = str(info.value)
        lines = {line.split(": ", 1)[0]: set(line.split(": ", 1)[1].split(", "))
                 for line in message.splitlines()
                 if line.startswith(("missing from", "not in the model"))}
        assert lines == {"missing from the checkpoint": {"d.weight", "d.bias"},
                         "not in the model": {"c.weight", "c.bias"}}
        assert "shape mismatch for b.weight: the checkpoint has [4, 16], the model wants " \
               "[5, 16]" in message
        assert "shape mismatch for b.bias" in message
        assert "a.weight" not in message


def test_edited_spec_not_strict_loads_what_matches(base_file):
    model, file = base_file
    with pytest.warns(UserWarning, match="partially") as record:
        loaded = netspec.load(file, spec=EDITED, strict=False)
    text = str(record[0].message)
    assert "d.weight" in text and "c.weight" in text and "b.weight" in text
    report = loaded._netspec_load_report
    assert isinstance(report, netspec.LoadReport) and not report.clean
    assert set(report.missing) == {"d.weight", "d.bias"}
    assert set(report.unexpected) == {"c.weight", "c.bias"}
    assert {name for name, _, _ in report.mismatched} == {"b.weight", "b.bias"}
    assert_materialised(loaded)
    assert torch.equal(loaded.a.weight, model.a.weight)
    assert torch.equal(loaded.a.bias, model.a.bias)
    assert loaded.b.weight.shape == (5, 16) and loaded.d.weight.shape == (2, 5)
    assert loaded(torch.randn(3, 8)).shape == (3, 2)


def test_compatible_edit_loads_strictly(base_file):
    model, file = base_file
    edited = BASE.replace("b: Linear(4)", "b: Linear(4)\n    relu(x)")
    loaded = netspec.load(file, spec=edited)
    assert_same_state(model, loaded)
    x = torch.randn(3, 8)
    assert torch.equal(loaded(x), model.c(torch.relu(model.b(model.a(x)))))


def test_load_report_text():
    report = netspec.LoadReport()
    assert report.clean and str(report) == "all tensors matched"
    report = netspec.LoadReport(missing=["x"], mismatched=[("y", (1,), (2,))])
    assert not report.clean
    assert "missing from the checkpoint: x" in str(report)
    assert "shape mismatch for y: the checkpoint has [1], the model wants [2]" in str(report)


# ---- damaged files ---------------------------------------------------------------------------

SMALL = """# a small model with a tie and a constant
block Small {
    input x: [N, 4]
    a: Linear(4)
    b: Linear(4)
    c: Linear(3)
    tie b.weight = a.weight
    const k = rand(3)
    x + k
}
"""


@pytest.fixture
def small(tmp_path) -> tuple[nn.Module, bytes]:
    model = netspec.build(SMALL, seed=2)
    netspec.save(model, tmp_path / "small.safetensors")
    return model, (tmp_path / "small.safetensors").read_bytes()


@pytest.fixture
def mlp_file(tmp_path) -> Path:
    file = tmp_path / "mlp.safetensors"
    netspec.save(netspec.build(SPECS / "mlp.net", seed=1), file)
    return file


def load_bytes(data: bytes, path: Path):
    path.write_bytes(data)
    return netspec.load(path)


def test_truncated_files(mlp_file, tmp_path):
    data = mlp_file.read_bytes()
    for n in (0, 4, 8, 100, header_size(data) + 8, len(data) // 2, len(data) - 1):
        with pytest.raises(netspec.CheckpointError):
            load_bytes(data[:n], tmp_path / "cut.safetensors")


def test_truncated_at_many_lengths(small, tmp_path):
    _, data = small
    end = 8 + header_size(data)
    lengths = set(range(0, len(data), 3)) | set(range(end - 8, end + 9)) | {len(data) - 1}
    for n in sorted(lengths):
        with pytest.raises(netspec.CheckpointError):
            load_bytes(data[:n], tmp_path / "cut.safetensors")


def test_a_spec_given_as_a_checkpoint_is_named_as_text(tmp_path):
    with pytest.raises(netspec.CheckpointError, match=r"mlp.net is text, not a safetensors "
                       r"file: a spec is read by `netspec check` or `summary`"):
        netspec.load(SPECS / "mlp.net")
    binary = struct.pack("<Q", 2**62) + b"block A {}"    # an impossible header, not text
    with pytest.raises(netspec.CheckpointError, match=r"not a safetensors file, or is "
                       r"truncated \(declared header of 4611686018427387904 bytes\)"):
        load_bytes(binary, tmp_path / "binary.safetensors")


def test_trailing_bytes_are_damage(small, tmp_path):
    _, data = small
    with pytest.raises(netspec.CheckpointError):
        load_bytes(data + b"\0" * 8, tmp_path / "long.safetensors")


def test_flipped_header_bytes_are_detected_or_harmless(small, tmp_path):
    model, data = small
    size = header_size(data)
    harmless = detected = 0
    for pos in range(8 + size):
        for mask in (0x01, 0x20) if pos % 3 == 0 else (0x01,):
            damaged = bytearray(data)
            damaged[pos] ^= mask
            try:
                loaded = load_bytes(bytes(damaged), tmp_path / "flip.safetensors")
            except netspec.CheckpointError:
                detected += 1
                continue
            # a flip in an unchecked field (the version string) must change nothing
            assert_same_state(model, loaded)
            harmless += 1
    assert detected > 10 * harmless


def test_flipped_data_bytes_fail_the_checksum(small, tmp_path):
    _, data = small
    start = 8 + header_size(data)
    assert len(data) - start == 4 * (16 + 4 + 4 + 12 + 3 + 3)   # b.weight is stored once
    for pos in range(start, len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        with pytest.raises(netspec.CheckpointError, match="checksum"):
            load_bytes(bytes(damaged), tmp_path / "flip.safetensors")


def test_a_tensor_read_in_several_pieces(tmp_path, monkeypatch):
    """A tensor larger than the piece netspec reads at a time (shrunk here to 1 KiB) loads
    whole, and a flipped byte in any of its pieces, the last included, fails the checksum."""
    import netspec.checkpoint

    monkeypatch.setattr(netspec.checkpoint, "_PIECE", 1024)
    model = netspec.build("block A { input x: [N, 100]; Linear(30) }", seed=3)
    path = tmp_path / "a.safetensors"
    netspec.save(model, path)
    assert_same_state(model, netspec.load(path))
    data = path.read_bytes()
    start = 8 + header_size(data)
    assert len(data) - start == 4 * (100 * 30 + 30)       # the weight is 12 pieces
    for pos in (start, start + 1024, start + 5000, start + 4 * 3000 - 1, len(data) - 1):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        with pytest.raises(netspec.CheckpointError, match="checksum"):
            load_bytes(bytes(damaged), tmp_path / "flip.safetensors")
    with pytest.raises(netspec.CheckpointError, match="truncated"):
        load_bytes(data[:start + 2000], tmp_path / "cut.safetensors")


def _short_reads(read, most):
    """``read``, returning at most ``most`` bytes a call, as a read may."""
    def short(f, view, offset):
        return read(f, view[:most], offset)
    return short


@pytest.mark.parametrize("reader", ["_preadv", "_seek_readinto"])
def test_pieces_read_in_short_reads(tmp_path, monkeypatch, reader):
    """Pieces are read by ``preadv`` or, where a platform has none, by seek and ``readinto``
    under a lock; either way, reads that return fewer bytes than asked for are continued, and
    the tensors and the checksum come out the same."""
    import netspec.checkpoint as checkpoint

    if reader == "_preadv" and not hasattr(os, "preadv"):
        pytest.skip("no os.preadv here")
    monkeypatch.setattr(checkpoint, "_PIECE", 1024)
    model = netspec.build("block A { input x: [N, 100]; Linear(30); ReLU; Linear(7) }", seed=5)
    path = tmp_path / "a.safetensors"
    netspec.save(model, path)
    monkeypatch.setattr(checkpoint, "_pread", _short_reads(getattr(checkpoint, reader), 100))
    assert_same_state(model, netspec.load(path))


def test_a_file_that_shrinks_while_read_is_truncated(tmp_path, monkeypatch):
    """A read that finds no more bytes (the file was cut after its header was checked) raises
    ``CheckpointError``, not a short tensor."""
    import netspec.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "_PIECE", 1024)
    model = netspec.build("block A { input x: [N, 100]; Linear(30) }", seed=3)
    path = tmp_path / "a.safetensors"
    netspec.save(model, path)
    start = 8 + header_size(path.read_bytes())
    read = checkpoint._pread

    def cut(f, view, offset):     # the file as if it ended 5,000 bytes into the data
        return read(f, view[:max(0, start + 5000 - offset)], offset)

    monkeypatch.setattr(checkpoint, "_pread", cut)
    with pytest.raises(netspec.CheckpointError, match="truncated"):
        netspec.load(path)


@pytest.mark.parametrize("lengths", [(0, 0), (0, 5), (5, 0), (1, 1), (3, 4096), (4097, 3),
                                     (1000, 1 << 20), (7, 123_457)])
def test_crc32_combine_is_the_crc_of_the_concatenation(lengths):
    """The pieces' CRCs, read on several threads, are combined into the file's: the combined
    value must be zlib's CRC of the two pieces one after the other."""
    import zlib

    from netspec.checkpoint import crc32_combine

    rng = random.Random(sum(lengths))
    a, b = (rng.randbytes(n) for n in lengths)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_a_failed_read_stops_the_others(tmp_path, monkeypatch):
    """A read error raises ``CheckpointError`` naming the file and the error, and the pieces
    not yet started are not read."""
    import netspec.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "_PIECE", 1024)
    model = netspec.build("block A { input x: [N, 200]; Linear(100) }", seed=3)
    path = tmp_path / "a.safetensors"
    netspec.save(model, path)
    pieces = -(-4 * 200 * 100 // 1024) + 1       # the weight's pieces, then the bias
    read, offsets = checkpoint._pread, []

    def failing(f, view, offset):
        offsets.append(offset)
        if len(offsets) == 3:
            raise OSError(errno.EIO, "Input/output error")
        time.sleep(0.02)     # 80 pieces on four threads: 0.4 s, far longer than a failure takes
        return read(f, view, offset)

    monkeypatch.setattr(checkpoint, "_pread", failing)
    with pytest.raises(netspec.CheckpointError, match="cannot read .*a.safetensors: Input/output"):
        netspec.load(path)
    assert len(offsets) < pieces / 2


def test_a_checkpoint_loads_as_it_did_when_saved(tmp_path, monkeypatch):
    """A checkpoint whose embedded spec has a misspelt layer in code it does not build (saved
    before netspec checked such code) still loads and inspects; the same spec as a file does
    not check."""
    import netspec.elaborate
    from netspec.cli import app

    text = ("block A(deep: bool = false) {\n    input x: [N, 4]\n"
            "    if deep { Lineer(4) }\n    Linear(2)\n}\n")
    spec = tmp_path / "a.net"
    spec.write_text(text)
    with monkeypatch.context() as patched:      # the netspec of before
        patched.setattr(netspec.elaborate, "_unelaborated_names", lambda elab: [])
        model = netspec.build(spec, seed=1)
        netspec.save(model, tmp_path / "a.safetensors")
    assert [d.message for d in netspec.check(spec)] == ["unknown layer or block 'Lineer'"]
    assert_same_state(model, netspec.load(tmp_path / "a.safetensors"))
    with pytest.raises(SystemExit) as exit_info:
        app(["inspect", str(tmp_path / "a.safetensors")], prog_name="netspec")
    assert exit_info.value.code == 0


def test_flipped_spec_text_fails_the_hash(mlp_file, tmp_path):
    data = mlp_file.read_bytes()
    pos = data.index(b"Linear(256")
    damaged = data[:pos] + b"Linear(255" + data[pos + 10:]
    with pytest.raises(netspec.CheckpointError, match="sha256"):
        load_bytes(damaged, tmp_path / "spec.safetensors")


@pytest.mark.parametrize("tensor", ["a.weight", "k"])
def test_changed_dtype_is_damage(small, tmp_path, tensor):
    _, data = small
    size = header_size(data)
    header = json.loads(data[8:8 + size])
    assert header[tensor]["dtype"] == "F32"
    key = json.dumps(tensor).encode() + b':{"dtype":"F32"'
    pos = data.index(key) + len(key) - len('F32"')
    damaged = data[:pos] + b"I" + data[pos + 1:]       # one byte: F32 -> I32
    with pytest.raises(netspec.CheckpointError):
        load_bytes(damaged, tmp_path / "dtype.safetensors")


@pytest.mark.parametrize("declared", [2**63, 2**64 - 1, 64 * 1024 * 1024 + 1, "len-7"])
def test_huge_declared_header(mlp_file, tmp_path, declared):
    data = mlp_file.read_bytes()
    size = len(data) - 7 if declared == "len-7" else declared
    with pytest.raises(netspec.CheckpointError, match="header"):
        load_bytes(struct.pack("<Q", size) + data[8:], tmp_path / "huge.safetensors")


@pytest.mark.parametrize("content", [
    pytest.param(bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8,
                                     generator=torch.Generator().manual_seed(0)).tolist()),
                 id="random"),
    pytest.param(b"block Net {\n    input x: [N, 4]\n    Linear(2)\n}\n" * 20, id="text"),
    pytest.param(b"\x10\x00\x00\x00\x00\x00\x00\x00[1, 2, 3]       ", id="json-list"),
    pytest.param(b"\x08\x00\x00\x00\x00\x00\x00\x00\xff\xfe\xfd{}\x00\x00\x00", id="not-utf8"),
    pytest.param(b"PK\x03\x04" + b"\x00" * 60, id="zip"),
])
def test_not_safetensors_at_all(content, tmp_path):
    with pytest.raises(netspec.CheckpointError):
        load_bytes(content, tmp_path / "junk.safetensors")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(netspec.CheckpointError):
        netspec.load(tmp_path / "nothing.safetensors")
    with pytest.raises(netspec.CheckpointError):
        netspec.load(tmp_path)


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"netspec.spec": "{}"}])
def test_safetensors_without_netspec_metadata(tmp_path, metadata):
    file = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(file), metadata=metadata)
    with pytest.raises(netspec.CheckpointError, match="netspec metadata"):
        netspec.load(file)


@pytest.mark.parametrize("rehash", [True, False])
def test_invalid_spec_json(mlp_file, tmp_path, rehash):
    file = rewrite(mlp_file, tmp_path / "bad.safetensors", spec_text='{"root": "mlp.net", ',
                   rehash=rehash)
    with pytest.raises(netspec.CheckpointError):
        netspec.load(file)


def _record(file: Path) -> dict:
    return json.loads(file_metadata(file)["netspec.spec"])


@pytest.mark.parametrize("change", [
    pytest.param(lambda r: [], id="not-a-dict"),
    pytest.param(lambda r: {**r, "root": 5}, id="root-not-text"),
    pytest.param(lambda r: {**r, "root": "other.net"}, id="root-not-in-files"),
    pytest.param(lambda r: {**r, "files": ["x"]}, id="files-not-a-dict"),
    pytest.param(lambda r: {**r, "files": {r["root"]: 5}}, id="file-not-text"),
    pytest.param(lambda r: {**r, "args": [1]}, id="args-not-a-dict"),
    pytest.param(lambda r: {**r, "block": 5}, id="block-a-number"),
    pytest.param(lambda r: {**r, "block": ["MLP"]}, id="block-a-list"),
    pytest.param(lambda r: {**r, "input": "[2, 784]"}, id="input-text"),
])
def test_malformed_spec_record(mlp_file, tmp_path, change):
    text = json.dumps(change(_record(mlp_file)))
    with pytest.raises(netspec.CheckpointError, match="malformed"):
        netspec.load(rewrite(mlp_file, tmp_path / "bad.safetensors", spec_text=text))


@pytest.mark.parametrize("aliases", ["[1]", '{"x": 5}', '{"x": "nothing"}', "not json"])
def test_malformed_aliases(mlp_file, tmp_path, aliases):
    file = rewrite(mlp_file, tmp_path / "bad.safetensors", **{"netspec.aliases": aliases})
    with pytest.raises(netspec.CheckpointError, match="malformed"):
        netspec.load(file)


def test_wrong_checksum_text(mlp_file, tmp_path):
    file = rewrite(mlp_file, tmp_path / "bad.safetensors", **{"netspec.crc32": "00000000"})
    with pytest.raises(netspec.CheckpointError, match="checksum"):
        netspec.load(file)


def test_spec_hash_mismatch(mlp_file, tmp_path):
    record = _record(mlp_file)
    record["files"][record["root"]] = record["files"][record["root"]].replace(
        "Linear(256", "Linear(128")
    file = rewrite(mlp_file, tmp_path / "bad.safetensors", spec_text=json.dumps(record),
                   rehash=False)
    with pytest.raises(netspec.CheckpointError, match="sha256"):
        netspec.load(file)


@pytest.mark.parametrize("edit", [
    pytest.param(lambda t: t.replace("Linear(256", "Linaer(256"), id="unknown-layer"),
    pytest.param(lambda t: t.replace("in_features=784", "in_features=783"), id="shape-error"),
    pytest.param(lambda t: t.replace("block MLP", "blok MLP"), id="syntax-error"),
    pytest.param(lambda t: 'import "elsewhere.net"\n' + t, id="missing-import"),
])
def test_embedded_spec_with_errors_is_a_spec_error(mlp_file, tmp_path, edit):
    record = _record(mlp_file)
    text = record["files"][record["root"]]
    assert edit(text) != text
    record["files"][record["root"]] = edit(text)
    file = rewrite(mlp_file, tmp_path / "bad.safetensors", spec_text=json.dumps(record))
    with pytest.raises(netspec.SpecError):
        netspec.load(file)


def test_embedded_spec_that_no_longer_fits_the_weights(mlp_file, tmp_path):
    record = _record(mlp_file)
    record["args"] = {"classes": 5}
    file = rewrite(mlp_file, tmp_path / "bad.safetensors", spec_text=json.dumps(record))
    with pytest.raises(netspec.CheckpointError, match="output.weight"):
        netspec.load(file)


# ---- netspec inspect -------------------------------------------------------------------------

def test_inspect_prints_block_hash_and_summary(tmp_path, capsys, monkeypatch):
    model = netspec.build(SPECS / "tied.net", seed=0)
    file = tmp_path / "tied.safetensors"
    netspec.save(model, file)
    code, out, err = run_cli(["inspect", file], capsys, monkeypatch)
    assert code == 0, err
    metadata = file_metadata(file)
    digest = hashlib.sha256(metadata["netspec.spec"].encode()).hexdigest()
    assert metadata["netspec.spec_sha256"] == digest
    assert f"spec sha256: {digest}" in out
    assert "block Tied, args as declared, input as declared" in out
    assert "2 tied aliases" in out
    n_params = sum(p.numel() for p in model.parameters())
    assert f"{n_params:,}" in out                       # the summary's parameter count
    for layer in ("Linear", "ReLU"):
        assert layer in out
    assert "Traceback" not in out + err


def test_inspect_writes_the_build_arguments_as_a_spec_does(tmp_path, capsys, monkeypatch):
    file = tmp_path / "mlp.safetensors"
    netspec.save(netspec.build(SPECS / "mlp.net", args={"classes": 3}, input=[2, 784],
                               seed=0), file)
    code, out, err = run_cli(["inspect", file], capsys, monkeypatch)
    assert code == 0, err
    assert "args classes=3, input [2, 784]" in out


def test_inspect_prints_a_name_in_brackets_as_it_is(tmp_path, capsys, monkeypatch):
    """A file name that looks like rich markup (``[run]``) is printed, not taken for a style."""
    file = tmp_path / "[run].safetensors"
    netspec.save(netspec.build(SPECS / "tied.net", seed=0), file)
    monkeypatch.setenv("COLUMNS", "1000")          # a long temporary path stays on one line
    code, out, err = run_cli(["inspect", file], capsys, monkeypatch)
    assert code == 0, err
    assert out.splitlines()[0] == str(file)


def _damaged_files(mlp_file: Path, tmp_path: Path) -> dict[str, Path]:
    data = mlp_file.read_bytes()
    files = {}

    def put(name: str, content: bytes) -> None:
        files[name] = tmp_path / f"{name}.safetensors"
        files[name].write_bytes(content)

    put("empty", b"")
    put("truncated", data[: len(data) // 2])
    put("huge-header", struct.pack("<Q", 2**62) + data[8:])
    put("text", b"hello\n" * 100)
    pos = 8 + header_size(data) + 10
    put("flipped-data", data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:])
    record = _record(mlp_file)
    record["files"][record["root"]] = record["files"][record["root"]].replace("Linear(256",
                                                                              "Linaer(256")
    files["spec-errors"] = rewrite(mlp_file, tmp_path / "spec-errors.safetensors",
                                   spec_text=json.dumps(record))
    files["bad-hash"] = rewrite(mlp_file, tmp_path / "bad-hash.safetensors",
                                spec_text=json.dumps(record), rehash=False)
    files["missing"] = tmp_path / "missing.safetensors"
    return files


def test_inspect_damaged_files_fail_cleanly(mlp_file, tmp_path, capsys, monkeypatch):
    for name, file in _damaged_files(mlp_file, tmp_path).items():
        code, out, err = run_cli(["inspect", file], capsys, monkeypatch)
        assert code != 0, name
        assert err.strip(), name
        assert "Traceback" not in out + err, name
        if name != "spec-errors":
            assert err.startswith("error: ") and str(file) in err, name


def test_inspect_damaged_file_in_a_real_process(mlp_file, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(mlp_file.read_bytes()[:1000])
    result = subprocess.run([sys.executable, "-m", "netspec", "inspect", str(cut)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "cut.safetensors" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# ---- atomic writing --------------------------------------------------------------------------

@pytest.fixture
def existing(tmp_path) -> tuple[Path, bytes]:
    target = tmp_path / "out" / "model.safetensors"
    target.parent.mkdir()
    netspec.save(netspec.build(SPECS / "mysequential.net", seed=0), target)
    return target, target.read_bytes()


def assert_untouched(target: Path, before: bytes) -> None:
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_failed_fsync_leaves_the_old_file(existing, monkeypatch):
    target, before = existing

    def fail(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(netspec.CheckpointError, match="cannot write"):
        netspec.save(netspec.build(SPECS / "mlp.net", seed=1), target)
    assert_untouched(target, before)


def test_write_failing_halfway_leaves_the_old_file(existing, monkeypatch):
    target, before = existing
    real_fdopen = os.fdopen

    class HalfWriter:
        """A file whose write stores half the data, then finds the disk full."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data[: len(data) // 2]))
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()
            return False

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: HalfWriter(real_fdopen(fd, *a, **k)))
    with pytest.raises(netspec.CheckpointError, match="No space left"):
        netspec.save(netspec.build(SPECS / "mlp.net", seed=1), target)
    monkeypatch.undo()
    assert_untouched(target, before)


def test_interrupted_write_leaves_the_old_file(existing, monkeypatch):
    target, before = existing

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        netspec.save(netspec.build(SPECS / "mlp.net", seed=1), target)
    assert_untouched(target, before)


def test_successful_save_replaces_the_file(existing):
    target, before = existing
    model = netspec.build(SPECS / "mlp.net", seed=1)
    netspec.save(model, target)
    assert target.read_bytes() != before
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    assert_same_state(model, netspec.load(target))


def test_save_into_a_missing_directory(tmp_path):
    with pytest.raises(netspec.CheckpointError, match="cannot write"):
        netspec.save(netspec.build(SPECS / "mlp.net"), tmp_path / "no" / "such" / "m.safetensors")


def test_save_needs_a_materialised_netspec_model(tmp_path):
    with pytest.raises(netspec.CheckpointError, match="meta"):
        netspec.save(netspec.build(SPECS / "mlp.net", device="meta"), tmp_path / "m.safetensors")
    with pytest.raises(netspec.CheckpointError, match="not built by netspec"):
        netspec.save(nn.Linear(2, 2), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_compile_of_a_bad_spec_leaves_the_output(existing, tmp_path, capsys, monkeypatch):
    target, before = existing
    bad = tmp_path / "bad.net"
    bad.write_text("# broken\nblock Net {\n    input x: [N, 4]\n    Linaer(8)\n}\n")
    code, out, err = run_cli(["compile", bad, "-o", target, "--seed", "1"], capsys, monkeypatch)
    assert code == 1
    assert ":4:5:" in err and "Linaer" in err and "Traceback" not in err
    assert_untouched(target, before)


def test_compile_that_fails_to_write_leaves_the_output(existing, capsys, monkeypatch):
    target, before = existing

    def fail(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    code, out, err = run_cli(["compile", SPECS / "mlp.net", "-o", target], capsys, monkeypatch)
    assert code == 1
    assert err.startswith("error: cannot write") and "Traceback" not in err
    assert_untouched(target, before)
