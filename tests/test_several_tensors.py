"""Layers whose forward takes several tensors, called as a ``let`` on named values:
``attn(q, k, v)``. Each model is checked against the hand-written PyTorch it stands for: the
same state_dict keys, and the same outputs on the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netspec
from netspec.errors import SpecError

CROSS = """\
block Cross {
    input x: [N, 6, 16]
    keys = x -> Linear(8)            # keys and values of other widths: kdim 8, vdim 4
    values = x -> Linear(4)
    let attn = MultiheadAttention(2, batch_first=true)
    return attn(x, keys, values)
}"""


class CrossTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module("0", nn.Linear(16, 8))
        self.add_module("1", nn.Linear(16, 4))
        self.attn = nn.MultiheadAttention(16, 2, kdim=8, vdim=4, batch_first=True)

    def forward(self, x):
        mods = self._modules
        return self.attn(x, mods["0"](x), mods["1"](x))[0]


MASKED = """\
block Masked {
    input x: [N, 5, 8]
    const itself = eye(5) > 0.5                      # a query does not attend to itself
    let attn = MultiheadAttention(2, batch_first=true)
    padding = x[:, :, 0] > 1.5                       # nor to keys marked as padding
    return attn(x, x, x, attn_mask=itself, key_padding_mask=padding, need_weights=false)
}"""


class MaskedTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.register_buffer("itself", torch.eye(5) > 0.5)

    def forward(self, x):
        return self.attn(x, x, x, attn_mask=self.itself, key_padding_mask=x[:, :, 0] > 1.5,
                         need_weights=False)[0]


SEQUENCE_FIRST = """\
block SequenceFirst {
    input x: [T, N, 12]
    let attn = MultiheadAttention(3, dropout=0.0, add_bias_kv=true)
    x + attn(x, x, x)
}"""


class SequenceFirstTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(12, 3, add_bias_kv=True)

    def forward(self, x):
        return x + self.attn(x, x, x)[0]


PAIR = """\
block Pair {
    input x: [N, 6]
    a = x -> Linear(4)
    let both = Bilinear(3)
    return both(x, a)
}"""


class PairTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module("0", nn.Linear(6, 4))
        self.both = nn.Bilinear(6, 4, 3)

    def forward(self, x):
        return self.both(x, self._modules["0"](x))


DECODER = """\
block Decoder {
    input x: [N, 6, 32]
    memory = x -> Linear(32)
    const future = unsqueeze(arange(6), 0) > unsqueeze(arange(6), 1)
    let dec = TransformerDecoderLayer(nhead=4, dim_feedforward=64, batch_first=true)
    dec(x, memory, tgt_mask=future, tgt_is_causal=true)
}"""


class DecoderTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module("0", nn.Linear(32, 32))
        self.dec = nn.TransformerDecoderLayer(32, 4, dim_feedforward=64, batch_first=True)
        self.register_buffer("future", torch.arange(6).unsqueeze(0) > torch.arange(6).unsqueeze(1))

    def forward(self, x):
        memory = self._modules["0"](x)
        return self.dec(x, memory, tgt_mask=self.future, tgt_is_causal=True)


SHARED_ON_VALUES = """\
block SharedOnValues {
    input x: [N, 8]
    let proj = Linear(8)
    a = proj(x)
    b = relu(a) -> proj
    return proj(a) + b
}"""


class SharedOnValuesTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        a = self.proj(x)
        return self.proj(a) + self.proj(torch.relu(a))


SIAMESE = """\
block Siamese {
    input x: [N, 2, 12]                          # two items to compare, side by side
    let embed = { Linear(16); ReLU(); Linear(8) }
    let cos = CosineSimilarity(dim=1)             # shadows the function cos(x) here
    let dist = PairwiseDistance(keepdim=true)
    a = x[:, 0] -> embed
    b = x[:, 1] -> embed
    return cat(unsqueeze(cos(a, b), 1), dist(a, b), dim=1)
}"""


class SiameseTwin(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8))
        self.cos = nn.CosineSimilarity(dim=1)
        self.dist = nn.PairwiseDistance(keepdim=True)

    def forward(self, x):
        a, b = self.embed(x[:, 0]), self.embed(x[:, 1])
        return torch.cat([self.cos(a, b).unsqueeze(1), self.dist(a, b)], dim=1)


WHOLE_TRANSFORMER = """\
block Seq2Seq {
    input x: [N, 5, 8]
    let t = Transformer(nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                        dim_feedforward=16, batch_first=true)
    t(x, x)
}"""


class WholeTransformerTwin(nn.Module):
    """nn.Transformer clones one encoder layer and then xavier-initialises every matrix: built
    with a seed, netspec's model has its weights too."""

    def __init__(self):
        super().__init__()
        self.t = nn.Transformer(8, 2, 2, 1, 16, batch_first=True)

    def forward(self, x):
        return self.t(x, x)


CASES = [
    pytest.param(CROSS, CrossTwin, (3, 6, 16), id="cross-attention"),
    pytest.param(MASKED, MaskedTwin, (4, 5, 8), id="masks"),
    pytest.param(SEQUENCE_FIRST, SequenceFirstTwin, (7, 2, 12), id="sequence-first"),
    pytest.param(PAIR, PairTwin, (5, 6), id="bilinear"),
    pytest.param(DECODER, DecoderTwin, (2, 6, 32), id="decoder-layer"),
    pytest.param(SHARED_ON_VALUES, SharedOnValuesTwin, (3, 8), id="let-on-values"),
    pytest.param(SIAMESE, SiameseTwin, (4, 2, 12), id="siamese-similarity"),
    pytest.param(WHOLE_TRANSFORMER, WholeTransformerTwin, (3, 5, 8), id="transformer"),
]


@pytest.mark.parametrize("spec,twin,shape", CASES)
def test_same_model_as_the_hand_written_one(spec, twin, shape) -> None:
    """Same keys and counts; the same outputs on the twin's weights; a boolean mask stays
    boolean, as a buffer of the twin does."""
    torch.manual_seed(0)
    hand = twin().eval()
    model = netspec.build(spec).eval()
    assert list(model.state_dict()) == list(hand.state_dict())
    assert sum(p.numel() for p in model.parameters()) == \
        sum(p.numel() for p in hand.parameters())
    model.load_state_dict(hand.state_dict())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hand(x)
        assert not want.isnan().any()
        assert torch.equal(model(x), want)
    assert tuple(netspec.analyze(spec, input=list(shape)).output_shape) == tuple(want.shape)
    for name, buffer in hand.named_buffers():
        assert model.get_buffer(name).dtype == buffer.dtype, name


@pytest.mark.parametrize("spec,twin,shape", CASES)
def test_same_weights_under_the_same_seed(spec, twin, shape) -> None:
    """Built with a seed, the layers are initialised as their constructors would be."""
    model = netspec.build(spec, seed=11)
    torch.manual_seed(11)
    hand = twin()
    ours, theirs = model.state_dict(), hand.state_dict()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_cross_attention_infers_the_key_and_value_widths() -> None:
    model = netspec.build(CROSS)
    assert (model.attn.embed_dim, model.attn.kdim, model.attn.vdim) == (16, 8, 4)
    assert not model.attn._qkv_same_embed_dim


@pytest.mark.parametrize("spec, shape, written", [
    (MASKED, (2, 5, 8), ["nn.MultiheadAttention(8, 2, batch_first=True)",
                         "mods['attn']( x, x, x, attn_mask=self._buffers['itself'], "
                         "key_padding_mask=padding, need_weights=False, )[0]  # [N, 5, 8]"]),
    (CROSS, (2, 6, 16), ["nn.MultiheadAttention(16, 2, kdim=8, vdim=4, batch_first=True)"]),
], ids=["self-attention", "cross-attention"])
def test_standalone_source_calls_the_layer_as_written(spec, shape, written) -> None:
    """kdim and vdim are written only where they differ from embed_dim, as by hand."""
    from netspec.emit_python import python_source

    source = python_source(netspec.analyze(spec))
    for text in written:
        assert text in " ".join(source.split()).replace(" # [", "  # ["), source
    namespace: dict = {}
    exec(compile(source, "<emitted>", "exec"), namespace)
    emitted = namespace["build"]()
    model = netspec.build(spec)
    emitted.load_state_dict(model.state_dict())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(emitted.eval()(x), model.eval()(x))


def test_summary_counts_attention_macs() -> None:
    """q and output projections and the scores and weighted sum per query token, k and v
    projections per key token: for 6 tokens of 16 against 6 keys of 8 and values of 4."""
    from netspec.summary import summarize

    rows = {r["path"]: r for r in summarize(netspec.analyze(CROSS))["rows"]}
    assert rows["attn"]["macs"] == 6 * (2 * 16 * 16 + 2 * 6 * 16) + 6 * 16 * 8 + 6 * 16 * 4


def test_transformer_encoder_layer_initialises_as_torch_does() -> None:
    """Its attention's out_proj is built, then reset with the rest: out_proj.bias is zero."""
    spec = """block T {
    input x: [N, 5, 16]
    enc: TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=true)
}"""
    model = netspec.build(spec, seed=3)
    torch.manual_seed(3)
    twin = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    ours, theirs = model.enc.state_dict(), twin.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not ours["self_attn.out_proj.bias"].any()


@pytest.mark.parametrize("text, message", [
    ("let attn = MultiheadAttention(2)\n    attn(x, 3, x)",
     "attn() takes tensors, not 3"),
    ("let attn = MultiheadAttention(2)\n    attn(x, x, x, attn_mask=true)",
     "attn_mask takes a tensor, not true"),
    ("let attn = MultiheadAttention(2)\n    attn(x, x, x, need_weights=x)",
     "need_weights takes a value known at compile time, not a tensor"),
    ("let attn = MultiheadAttention(2)\n    a: attn(x, x, x)",
     "'attn' is a let module and keeps its name"),
    ("let b = { Linear(8) }\n    b(x, x)", "'b' is a block, which takes one tensor"),
    ("let attn = MultiheadAttention(2)\n    attn()",
     "MultiheadAttention takes 3 tensors (query, key, value), but a step passes it one"),
])
def test_a_call_of_a_let_refuses_what_it_cannot_pass(text: str, message: str) -> None:
    spec = f"block Net {{\n    input x: [N, 5, 8]\n    {text}\n}}"
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        netspec.analyze(spec)


CAUSAL = """\
block Gpt {
    input tokens: [N, T]
    let attn = MultiheadAttention(4, batch_first=true)
    h = tokens -> embed: Embedding(100, 32)
    positions = arange(T) -> pos: Embedding(64, 32)       # [T, 32]: one row per position
    x = h + positions
    future = unsqueeze(arange(T), 0) > unsqueeze(arange(T), 1)
    x = x + attn(x, x, x, attn_mask=future, is_causal=true, need_weights=false)
    head: Linear(100)
}"""


class CausalTwin(nn.Module):
    """Token and learned position embeddings, causal self-attention: the mask and the
    positions are made on each call, for the length of the input."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.embed = nn.Embedding(100, 32)
        self.pos = nn.Embedding(64, 32)
        self.head = nn.Linear(32, 100)

    def forward(self, tokens):
        t = tokens.shape[1]
        x = self.embed(tokens) + self.pos(torch.arange(t, device=tokens.device))
        future = torch.arange(t).unsqueeze(0) > torch.arange(t).unsqueeze(1)
        x = x + self.attn(x, x, x, attn_mask=future, is_causal=True, need_weights=False)[0]
        return self.head(x)


@pytest.mark.parametrize("length", [5, 9])
def test_tensors_sized_by_the_input_are_made_on_each_call(length: int) -> None:
    """``arange(T)`` in a step: positions and a causal mask for whatever length arrives."""
    torch.manual_seed(0)
    hand = CausalTwin().eval()
    model = netspec.build(CAUSAL).eval()
    assert list(model.state_dict()) == list(hand.state_dict())
    model.load_state_dict(hand.state_dict())
    tokens = torch.randint(0, 100, (3, length), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model(tokens), hand(tokens))
    assert "torch.arange(_T, device=tokens.device)" in type(model).code


def test_a_step_makes_only_tensors_sized_by_the_input() -> None:
    spec = "block A {\n    input x: [N, 4]\n    x + rand(4)\n}"
    with pytest.raises(SpecError, match=r"rand\(\) creates a tensor of a size known when the "
                                        r"model is built, so it belongs in a const or param"):
        netspec.analyze(spec)


@pytest.mark.parametrize("spec,shape", [(MASKED, (2, 5, 8)), (DECODER, (2, 6, 32))],
                         ids=["masks", "decoder-layer"])
def test_a_checkpoint_keeps_the_mask_boolean(tmp_path, spec: str, shape: tuple) -> None:
    model = netspec.build(spec, seed=1).eval()
    path = tmp_path / "model.safetensors"
    netspec.save(model, path)
    loaded = netspec.load(path).eval()
    assert [(n, b.dtype) for n, b in loaded.named_buffers()] == \
        [(n, b.dtype) for n, b in model.named_buffers()]
    assert all(b.dtype == torch.bool for _, b in loaded.named_buffers())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_summary_counts_transformer_layer_macs() -> None:
    """Checked against torch's own FLOP counter, which counts the projections and the
    feed-forward network; the scores and weighted sums (2 * length * d_model per query token)
    and the norms (d_model per token each) are added to it."""
    from torch.utils.flop_counter import FlopCounterMode

    from netspec.summary import summarize

    spec = """block T {
    input x: [3, 5, 8]
    enc: TransformerEncoderLayer(nhead=2, dim_feedforward=16, dropout=0.0, batch_first=true)
    let dec = TransformerDecoderLayer(nhead=2, dim_feedforward=16, dropout=0.0, batch_first=true)
    h = x -> Linear(8)
    memory = narrow(h, 1, 0, 3)
    dec(x, memory)
}"""
    rows = {r["path"]: r["macs"] for r in summarize(netspec.analyze(spec))["rows"]}
    model = netspec.build(spec, seed=0)
    x = torch.randn(3, 5, 8)
    memory = torch.narrow(getattr(model, "1")(x), 1, 0, 3)
    counted = {}
    for name, args in (("enc", (x,)), ("dec", (model.enc(x), memory))):
        with FlopCounterMode(display=False) as counter:
            getattr(model, name)(*args)
        counted[name] = counter.get_total_flops() // 2
    tokens = 3 * 5
    assert rows["enc"] == counted["enc"] + tokens * (2 * 5 * 8 + 2 * 8)
    assert rows["dec"] == counted["dec"] + tokens * (2 * (5 + 3) * 8 + 3 * 8)


ENCODER_STACK = """\
block Encoder {
    input x: [N, 6, 32]
    layers: { repeat 2 { TransformerEncoderLayer(nhead=4, dim_feedforward=64, batch_first=true) } }
    norm: LayerNorm()
}"""


def test_a_repeat_of_encoder_layers_is_torch_s_transformer_encoder() -> None:
    """What the TransformerEncoder error's hint says to write has nn.TransformerEncoder's
    keys and, on its weights, its outputs."""
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True)
    hand = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(32), enable_nested_tensor=False)
    model = netspec.build(ENCODER_STACK)
    assert list(model.state_dict()) == list(hand.state_dict())
    model.load_state_dict(hand.state_dict())
    x = torch.randn(3, 6, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), hand.eval()(x))
    with pytest.raises(SpecError, match="TransformerEncoder takes a module to copy"):
        netspec.analyze("block E {\n    input x: [N, 6, 32]\n    TransformerEncoder(num_layers=2)\n}")


def test_rules_apply_inside_a_layer_constructed_whole() -> None:
    """Transformer is constructed as torch would, then the spec's rules apply inside it: the
    ruled tensors take the rule, every other one torch's value under the same seed."""
    spec = WHOLE_TRANSFORMER.replace("    t(x, x)\n", "    t(x, x)\n    init { Linear.bias: "
                                     "zeros(); \"*.norm.weight\": constant(2.0) }\n")
    model = netspec.build(spec, seed=5)
    torch.manual_seed(5)
    hand = WholeTransformerTwin()
    ruled = 0
    for (name, ours), theirs in zip(model.t.named_parameters(), hand.t.parameters()):
        if name.endswith(("linear1.bias", "linear2.bias")):
            assert not ours.any(), name
            ruled += 1
        elif name.endswith(("encoder.norm.weight", "decoder.norm.weight")):
            assert (ours == 2.0).all(), name
            ruled += 1
        else:
            assert torch.equal(ours, theirs), name
    assert ruled == 2 * 3 + 2
