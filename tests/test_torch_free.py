"""``netspec check`` and ``netspec summary`` without torch, and the tables that make it possible.

Every spec in ``specs/`` is checked and summarised (every format, ``--init``) by the command
line entry point in a fresh interpreter, which must end without torch imported. Init rules are
matched statically with the same results and errors as on a built model; a layer without a
tensor table falls back to a meta-device build with the same output; and the tensor tables
agree with torch's real layers, parameter by parameter and buffer by buffer.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import netspec
from netspec.api import build_analysis, check_init_rules
from netspec.layers import layer_schema
from netspec.registry import LAYERS
from netspec.summary import init_rows, render_summary, summarize
from netspec.tensors import Unknown, static_model, static_tensors
from test_summary import TIE          # a tied language model: embed.weight shared with head

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted((ROOT / "specs").glob("*.net"))
BENCH_FILES = sorted((ROOT / "bench" / "specs").glob("*.net"))
USER_LAYERS = ROOT / "tests" / "data" / "user_layers" / "net.net"

COMMANDS = [
    ["check"],
    ["summary"],
    ["summary", "--init"],
    ["summary", "--depth", "1"],
    ["summary", "--format", "markdown"],
    ["summary", "--format", "json"],
    ["summary", "--format", "markdown", "--init"],
    ["summary", "--format", "json", "--init"],
]

# runs each command through the entry point, then says whether torch has been imported
RUNNER = r"""
import contextlib, io, json, sys
from netspec.cli import run
spec, commands = sys.argv[1], json.loads(sys.argv[2])
report = []
for command in commands:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run([command[0], spec, *command[1:]])
    report.append({"command": command, "code": code, "torch": "torch" in sys.modules,
                   "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(report))
"""


def run_commands(spec: Path, commands: list[list[str]] = COMMANDS) -> list[dict]:
    """Each command's exit code, output, and whether torch was imported by the time it ended."""
    env = {**os.environ, "COLUMNS": "200"}       # wide enough that rich wraps no cell
    result = subprocess.run([sys.executable, "-c", RUNNER, str(spec), json.dumps(commands)],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# specs with init rules: matched without torch
RULES = """
init { "*.bias": zeros() }

block Head {
    Linear(32); ReLU(); Linear(10)
    init { Linear.weight: normal(std=0.01) }
}

block Net {
    input x: [N, 3, 8, 8]
    conv: Conv2d(4, 3, padding=1)
    bn: BatchNorm2d()
    flatten(x, 1)
    body: Linear(64, in_features=256)
    head: Head
    init {
        Conv2d.weight: kaiming_normal(mode="fan_out", nonlinearity="relu")
        Linear.weight in "head.*": constant(val=42)
    }
}
"""

BAD_RULE = """
block Net {
    input x: [N, 4]
    Linear(8)
    init {
        Linear.weight: zeros()
        Conv2d.weight: zeros()
    }
}
"""


@pytest.mark.parametrize("spec", SPEC_FILES + BENCH_FILES, ids=lambda p: p.stem)
def test_check_and_summary_do_not_import_torch(spec):
    for run in run_commands(spec):
        assert run["code"] == 0, (run["command"], run["err"])
        assert not run["torch"], f"{' '.join(run['command'])} {spec.name} imported torch"


def test_init_rules_are_matched_without_torch(tmp_path):
    spec = tmp_path / "rules.net"
    spec.write_text(RULES)
    runs = run_commands(spec, [["check"], ["summary", "--init"]])
    assert [(r["code"], r["torch"]) for r in runs] == [(0, False), (0, False)]
    init = runs[1]["out"]
    assert "Linear.weight: normal(std=0.01)" in init and "kaiming_normal" in init


def test_a_rule_matching_nothing_is_reported_without_torch(tmp_path):
    spec = tmp_path / "bad.net"
    spec.write_text(BAD_RULE)
    runs = run_commands(spec, [["check"], ["summary"], ["summary", "--init"]])
    for run in runs:
        assert run["code"] == 1 and not run["torch"], run
        assert ":7:9: init error: this init rule matches no parameter" in run["err"]
        assert "hint: parameters here: Linear.bias, Linear.weight" in run["err"]


# ---- static init rule matching gives the built model's results and errors ---------------------

TIE_REVERSED = TIE.replace("tie head.weight = embed.weight", "tie embed.weight = head.weight")

# a ParameterDict holds a plain dict's entries in sorted key order; a nested block with a
# tensor gets a generated class, "Block"
CONTAINERS = """
block D {
    input x: [N, 4]
    const c = rand(3)
    param params = dict(zeta=randn(4, 4), alpha=randn(4, 2), mid=randn(4, 1))
    param items = [randn(4), randn(2)]
    const consts = dict(b=ones(2), a=ones(3))
    param w = randn(4, 4)
    inner: { param v = randn(4, 4); x @ v }
    mm(x, params["zeta"]) @ w
}
"""

RULE_CASES = {
    "rules": RULES,
    "bad_rule": BAD_RULE,
    # a tied weight belongs to the module that comes first: here embed, so `Linear` matches nothing
    "tie_first_owner": TIE[:-1] + "    init { Embedding.weight: zeros(); Linear: ones() }\n}",
    "tie_reversed": TIE_REVERSED[:-1] + "    init { Linear: ones() }\n}",
    # the module at positions 2 and 4 is one module, reached at 2 only
    "shared_module_at_its_first_use": (ROOT / "specs" / "tied.net").read_text().rstrip()[:-1]
    + '    init { Linear.weight in "2.*": ones() }\n}\n',
    "shared_module_not_again": (ROOT / "specs" / "tied.net").read_text().rstrip()[:-1]
    + '    init { Linear.weight in "4.*": zeros() }\n}\n',
    "let_block": """
        block Inner { Linear(4); ReLU(); init { Linear.bias: zeros() } }
        block Outer {
            input x: [N, 4]
            let b = Inner
            b
            mid: Linear(4)
            b
            init { "*.weight": ones(); "mid.*": zeros() }
        }""",
    "containers_and_block_types": CONTAINERS[:-2]
    + '    init { "params.alpha": zeros(); "items.1": ones(); D.w: zeros(); "inner.v": eye() }\n}\n',
    "block_param_tied_to_a_layer": """
        block T {
            input x: [N, 4]
            param w = randn(4, 4)
            y = x @ w -> fc: Linear(4, bias=false)
            tie w = fc.weight
            init { T.w: zeros(); Linear: ones() }
            return y
        }""",
    "file_rule_matching_nothing": 'init { "nothing.*": zeros() }\n' + BAD_RULE.replace(
        "        Conv2d.weight: zeros()\n", ""),
    "inner_rule_cannot_see_outer": """
        block Inner { Linear(8); init { Conv2d.weight: zeros() } }
        block Outer {
            input x: [N, 3, 4, 4]
            Conv2d(2, 1)
            flatten(x, 1)
            Inner
        }""",
}


def outcome(action) -> object:
    """What ``action()`` returns, or the diagnostics (kind, message, place, hint) it raises."""
    try:
        return action()
    except netspec.SpecError as exc:
        return [(d.kind, d.message, d.span, d.hint) for d in exc.diagnostics]


@pytest.mark.parametrize("name", RULE_CASES)
def test_static_rule_matching_equals_the_built_model(name):
    analysis = netspec.analyze(textwrap.dedent(RULE_CASES[name]))
    static_model(analysis.ir)        # no fallback: every layer has a table
    assert outcome(lambda: check_init_rules(analysis)) == \
        outcome(lambda: build_analysis(analysis, device="meta") and None)
    assert outcome(lambda: init_rows(analysis)) == outcome(lambda: init_rows(analysis, build=True))
    assert outcome(lambda: summarize(analysis)) == outcome(lambda: summarize(analysis, build=True))


def test_static_init_rows_name_the_first_owner_of_a_shared_weight():
    analysis = netspec.analyze(RULE_CASES["shared_module_at_its_first_use"])
    rows = {path: rule for path, _, rule in init_rows(analysis)}
    assert "4.weight" not in rows
    assert rows["2.weight"] == 'Linear.weight in "2.*": ones()'
    with pytest.raises(netspec.SpecError, match="matches no parameter"):
        check_init_rules(netspec.analyze(RULE_CASES["shared_module_not_again"]))


# ---- a layer without a table falls back to a meta-device build --------------------------------

# EmbeddingBag: a torch.nn layer with no netspec table
FALLBACK = """
block F {
    input x: [N, 6]
    enc: EmbeddingBag(10, 8)
    norm: LayerNorm()
    Linear(3)
}
"""

# the transformer layers have tables: checked, summarised and planned without torch
TRANSFORMER_LAYERS = """
block T {
    input x: [N, 5, 8]
    enc: TransformerEncoderLayer(nhead=2, dim_feedforward=16, batch_first=true)
    let dec = TransformerDecoderLayer(nhead=2, dim_feedforward=16, batch_first=true)
    let whole = Transformer(nhead=2, num_encoder_layers=1, num_decoder_layers=2,
                            dim_feedforward=16, batch_first=true)
    memory = x -> Linear(8)
    y = dec(x, memory)
    whole(memory, y)
    Linear(3)
    init { MultiheadAttention.in_proj_weight: zeros() }
}
"""


def test_the_transformer_layers_need_no_torch(tmp_path):
    analysis = netspec.analyze(TRANSFORMER_LAYERS)
    data = summarize(analysis)
    assert data == summarize(analysis, build=True)
    model = netspec.build(TRANSFORMER_LAYERS, seed=0)
    assert data["totals"]["params"] == sum(p.numel() for p in model.parameters())
    assert data["totals"]["macs_complete"]
    assert init_rows(analysis) == init_rows(analysis, build=True)
    spec = tmp_path / "transformer_layers.net"
    spec.write_text(TRANSFORMER_LAYERS)
    runs = run_commands(spec, [["check"], ["summary", "--format", "json"], ["summary", "--init"]])
    assert [(r["code"], r["torch"]) for r in runs] == [(0, False)] * 3, runs
    assert json.loads(runs[1]["out"]) == {**data, "spec": str(spec)}
    assert "dec.multihead_attn.in_proj_weight" in runs[2]["out"]


def test_a_layer_without_a_table_falls_back_to_a_build(tmp_path):
    analysis = netspec.analyze(FALLBACK)
    with pytest.raises(Unknown):
        static_model(analysis.ir)
    data = summarize(analysis)
    assert data == summarize(analysis, build=True)
    model = netspec.build(FALLBACK, seed=0)
    assert data["totals"]["params"] == sum(p.numel() for p in model.parameters())
    assert data["totals"]["buffers"] == sum(b.numel() for b in model.buffers())
    enc = next(r for r in data["rows"] if r["path"] == "enc")
    assert enc["trainable"] == sum(p.numel() for p in model.enc.parameters()) > 0
    spec = tmp_path / "fallback.net"
    spec.write_text(FALLBACK)
    runs = run_commands(spec, [["check"], ["summary", "--format", "json"], ["summary"]])
    assert [r["code"] for r in runs] == [0, 0, 0]
    assert json.loads(runs[1]["out"]) == {**data, "spec": str(spec)}
    assert f"{data['totals']['params']:,} parameters" in runs[2]["out"]


def test_init_rules_with_a_layer_without_a_table_fall_back():
    rule = "EmbeddingBag.weight: zeros()"
    analysis = netspec.analyze(FALLBACK[:-2] + f"    init {{ {rule}; \"*.bias\": zeros() }}\n}}\n")
    check_init_rules(analysis)
    assert ("enc.weight", "EmbeddingBag", rule) in init_rows(analysis)
    bad = FALLBACK[:-2] + "    init { EmbeddingBag.bias: zeros() }\n}\n"
    diagnostics = netspec.check(bad)
    assert [(d.kind, d.message) for d in diagnostics] == \
        [("init error", "this init rule matches no parameter")]
    assert "EmbeddingBag.weight" in diagnostics[0].hint


def test_user_layers_fall_back_to_a_build():
    analysis = netspec.analyze(USER_LAYERS)
    with pytest.raises(Unknown):
        static_model(analysis.ir)
    data = summarize(analysis)
    model = netspec.build(USER_LAYERS, seed=0)
    assert data["totals"]["params"] == sum(p.numel() for p in model.parameters())
    assert render_summary(analysis, fmt="markdown").count("MyDense") == 1


# ---- static_tensors is the built model's state_dict ---------------------------------------------

STATE_CASES = SPEC_FILES + BENCH_FILES + [TIE, TIE_REVERSED, CONTAINERS]


@pytest.mark.parametrize("spec", STATE_CASES,
                         ids=[getattr(s, "stem", f"source{i}") for i, s in enumerate(STATE_CASES)])
def test_static_tensors_are_the_state_dict(spec):
    analysis = netspec.analyze(spec)
    infos = static_tensors(analysis.ir)
    state = build_analysis(analysis, device="meta").state_dict(keep_vars=True)
    keys: dict[int, list[str]] = {}        # each tensor's keys, in state_dict order
    for key, tensor in state.items():
        keys.setdefault(id(tensor), []).append(key)
    assert [[info.path, *info.aliases] for info in infos] == list(keys.values())
    for info in infos:
        tensor = state[info.path]
        assert info.shape == tuple(tensor.shape), info.path
        assert (info.kind == "param") == isinstance(tensor, torch.nn.Parameter), info.path


# ---- the tensor tables agree with torch's layers -------------------------------------------------

REQUIRED = {
    "in_features": 6, "out_features": 4, "num_embeddings": 10, "embedding_dim": 3, "dim": 1,
    "unflattened_size": (2, 3), "normalized_shape": 5, "num_groups": 2, "num_channels": 4,
    "size": 2, "threshold": 0.1, "value": 0.0, "in_channels": 4, "out_channels": 6,
    "kernel_size": 3, "num_features": 4, "norm_type": 2.0, "output_size": 2,
    "upscale_factor": 2, "downscale_factor": 2, "groups": 2, "padding": 1, "input_size": 6,
    "hidden_size": 4, "embed_dim": 8, "num_heads": 2, "in1_features": 3, "in2_features": 5,
    "d_model": 8, "nhead": 2,
}

# argument sets beyond the defaults and each flag flipped
_STACKED = [dict(num_layers=3, bidirectional=True), dict(num_layers=2, bias=False)]
EXTRA = {
    **{f"Conv{n}d": [dict(groups=2, kernel_size=(3,) * n), dict(kernel_size=(1,) * (n - 1) + (5,))]
       for n in (1, 2, 3)},
    **{f"ConvTranspose{n}d": [dict(groups=2, kernel_size=(2,) * n, bias=False)]
       for n in (1, 2, 3)},
    "LayerNorm": [dict(normalized_shape=(2, 3)), dict(normalized_shape=(4,), bias=False)],
    "MultiheadAttention": [dict(kdim=6, vdim=4), dict(kdim=8, vdim=8, add_bias_kv=True),
                           dict(kdim=6, bias=False)],
    "RMSNorm": [dict(normalized_shape=(2, 3))],
    "Transformer": [dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                         dim_feedforward=6), dict(d_model=4, nhead=1, num_encoder_layers=1,
                                                  num_decoder_layers=1, bias=False)],
    **dict.fromkeys(("TransformerEncoderLayer", "TransformerDecoderLayer"),
                    [dict(dim_feedforward=6, bias=False), dict(norm_first=True,
                                                                activation="gelu")]),
    "GroupNorm": [dict(num_groups=3, num_channels=6, affine=False)],
    "PReLU": [dict(num_parameters=7)],
    "Embedding": [dict(padding_idx=0, num_embeddings=4, embedding_dim=9)],
    "RNN": _STACKED, "GRU": _STACKED,
    "LSTM": _STACKED + [dict(num_layers=2, proj_size=3), dict(proj_size=2, bidirectional=True)],
    **{f"{kind}{n}d": [dict(affine=True, track_running_stats=True),
                       dict(affine=False, track_running_stats=True, bias=False)]
       for kind in ("BatchNorm", "InstanceNorm") for n in (1, 2, 3)},
}


def arg_sets(name: str) -> list[dict]:
    """Validated arguments: the required ones, each flag flipped, and the layer's extra sets.

    Empty for a layer with a required argument this file has no value for.
    """
    layer = LAYERS[name]
    if any(p.required and p.name not in REQUIRED for p in layer.params):
        return []
    base = {p.name: REQUIRED[p.name] for p in layer.params if p.required}
    stated = [base] + [{**base, p.name: not p.default} for p in layer.params
                       if isinstance(p.default, bool)]
    stated += [{**base, **extra} for extra in EXTRA.get(name, [])]
    schema = layer_schema(layer)
    return [schema(**args).model_dump() for args in stated]


CASES = [(name, args) for name in sorted(LAYERS) for args in arg_sets(name)]


@pytest.mark.parametrize("name,args", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_tensor_table_is_the_real_layer(name, args):
    """Names in registration order, shapes, kinds and counts equal those of the torch module."""
    cls = getattr(torch.nn, name)
    assert cls.__name__ == name        # the static tree names a layer's module by the spec name
    with torch.device("meta"):
        module = cls(**args)
    real = [(n, tuple(t.shape), "param") for n, t in module.named_parameters()]
    real += [(n, tuple(t.shape), "buffer") for n, t in module.named_buffers()]
    table = [(n, tuple(shape), kind) for n, (shape, kind) in LAYERS[name].tensors(args).items()]
    assert sorted(table, key=lambda t: t[2] != "param") == table   # parameters come first
    assert table == real
    assert sum(t.numel() for t in module.parameters()) + sum(t.numel() for t in module.buffers()) \
        == sum(math.prod(shape) for _, shape, _ in table)


def test_every_table_layer_has_argument_sets():
    assert {name for name, _ in CASES} == set(LAYERS)


def test_ties_are_checked_without_torch(tmp_path):
    spec = tmp_path / "tie.net"
    spec.write_text(TIE)
    bad = tmp_path / "bad_tie.net"                      # [50, 16] tied to [16, 50]
    bad.write_text(TIE.replace("head: Linear(vocab, bias=false)", "head: Linear(dim, bias=false)"))
    assert [(r["code"], r["torch"]) for r in run_commands(spec, [["check"]])] == [(0, False)]
    (run,) = run_commands(bad, [["check"]])
    assert run["code"] == 1 and not run["torch"] and "tie" in run["err"], run


def test_version_is_printed_without_torch():
    probe = ("import contextlib, io, json, sys\nfrom netspec.cli import run\nout = io.StringIO()\n"
             "with contextlib.redirect_stdout(out):\n    code = run(['--version'])\n"
             "print(json.dumps([code, out.getvalue(), 'torch' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [0, f"netspec {netspec.__version__}\n", False]


def test_editor_completion_does_not_import_torch():
    pytest.importorskip("pygls")
    probe = textwrap.dedent("""
        import json, sys
        from netspec.lsp import analyse_document, completions
        text = "block A {\\n    input x: [N, 4]\\n    EmbeddingBag(\\n"
        found = completions(analyse_document(text), 4, 1)
        print(json.dumps([len(found), "torch" in sys.modules]))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    count, torch_imported = json.loads(result.stdout)
    assert count > 100 and not torch_imported
