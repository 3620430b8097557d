"""The layer table against real torch: signatures, output shapes, errors, symbols, the fallback."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import warnings
from collections import Counter

import pytest
import torch
from pydantic import ValidationError

from netspec.dims import Sym
from netspec.layers import LAYER_NAMES, layer_from_class, layer_schema, lookup_layer
from netspec.registry import LAYERS, REQUIRED, ShapeRuleError

N, C, H, W = (Sym.symbol(s) for s in "NCHW")


def torch_params(cls: type) -> tuple[list[tuple[str, object]], bool]:
    """(name, default) per constructor argument, minus device/dtype/private ones; factory flag."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    factory = any(p.name in ("device", "dtype") for p in params)
    kept = [(p.name, REQUIRED if p.default is p.empty else p.default) for p in params
            if p.name not in ("device", "dtype") and not p.name.startswith("_")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return kept, factory


def typed(default: object) -> tuple[type, object]:
    """Compare defaults by type as well as value (1 != 1.0 != True here)."""
    return type(default), default


def documented_params(cls: type) -> tuple[list[tuple[str, object]], bool]:
    """As ``torch_params`` for RNN, LSTM and GRU, whose ``__init__`` takes ``*args, **kwargs``:
    the arguments their docstring documents (``__init__(input_size,hidden_size,...)``)."""
    line = inspect.getdoc(cls).splitlines()[0]
    assert line.startswith("__init__(") and line.endswith(")"), line
    (fn,) = ast.parse(f"def f({line[len('__init__('):-1]}): pass").body
    names = [a.arg for a in fn.args.args]
    defaults = [REQUIRED] * (len(names) - len(fn.args.defaults)) + \
        [ast.literal_eval(d) for d in fn.args.defaults]
    documented = dict(zip(names, defaults))
    factory = "device" in documented and "dtype" in documented
    return [(n, d) for n, d in documented.items() if n not in ("device", "dtype")], factory


def expected_params(cls: type) -> tuple[list[tuple[str, object]], bool]:
    if issubclass(cls, torch.nn.RNNBase):
        return documented_params(cls)
    return torch_params(cls)


def by_name(default: object) -> object:
    """A function default (the transformer layers' ``activation=F.relu``) by its name: netspec
    writes it as the string torch also takes (``activation="relu"``)."""
    return default.__name__ if inspect.isfunction(default) else default


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_params_match_torch_signature(name):
    layer = LAYERS[name]
    expected, factory = expected_params(getattr(torch.nn, name))
    assert [(p.name, typed(p.default)) for p in layer.params] == \
        [(n, typed(by_name(d))) for n, d in expected]
    assert layer.factory_kwargs == factory


@pytest.mark.parametrize("name", ["TransformerEncoderLayer", "TransformerDecoderLayer"])
def test_an_activation_named_by_a_string_is_torch_s_default(name):
    """activation="relu" builds the same layer as torch's default F.relu (the fast path's
    flag included), so netspec's string default stands for it."""
    torch.manual_seed(0)
    default = getattr(torch.nn, name)(8, 2, 16).eval()
    torch.manual_seed(0)
    named = getattr(torch.nn, name)(8, 2, 16, activation="relu").eval()
    assert named.activation is default.activation is torch.nn.functional.relu
    assert getattr(named, "activation_relu_or_gelu", 1) == \
        getattr(default, "activation_relu_or_gelu", 1) == 1      # the encoder's fast path
    xs = [torch.randn(5, 3, 8) for _ in LAYERS[name].inputs]
    with torch.no_grad():
        assert torch.equal(named(*xs), default(*xs))


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_documented_recurrent_arguments_are_rnn_base_arguments(name):
    """The documented defaults are RNNBase's (RNN adds nonlinearity, only LSTM has proj_size),
    and torch reads positional arguments in the documented order."""
    documented, factory = documented_params(getattr(torch.nn, name))
    base, base_factory = torch_params(torch.nn.RNNBase)
    base = dict(base[1:])                                    # without mode
    assert factory == base_factory
    for arg, default in documented:
        if arg != "nonlinearity":
            assert typed(base.pop(arg)) == typed(default), arg
    assert list(base) == ([] if name == "LSTM" else ["proj_size"])
    values = {"input_size": 3, "hidden_size": 7, "num_layers": 2, "nonlinearity": "relu",
              "bias": False, "batch_first": True, "dropout": 0.5, "bidirectional": True,
              "proj_size": 2}
    positional = [values[p.name] for p in LAYERS[name].params]
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = getattr(torch.nn, name)(*positional)
    for p, value in zip(LAYERS[name].params, positional):
        assert getattr(module, p.name) == value, p.name
    if name == "RNN":
        assert module.mode == "RNN_RELU"


# -- output shapes against real modules ------------------------------------------------------------

# (layer, stated arguments, input shape); inferred sizes are filled in from in_sizes.
SHAPE_CASES = [
    ("Linear", dict(out_features=4), (2, 8)),
    ("Linear", dict(out_features=3, bias=False), (2, 5, 7)),
    ("Linear", dict(in_features=6, out_features=2), (6,)),
    ("Identity", {}, (2, 3)),
    ("Identity", {}, (4,)),
    ("Embedding", dict(num_embeddings=10, embedding_dim=4), (2, 5)),
    ("Embedding", dict(num_embeddings=7, embedding_dim=3, padding_idx=-1), (6,)),
    ("Flatten", {}, (2, 3, 4, 5)),
    ("Flatten", dict(start_dim=0, end_dim=1), (2, 3, 4)),
    ("Flatten", dict(start_dim=-2), (2, 3, 4)),
    ("Unflatten", dict(dim=1, unflattened_size=(3, 4)), (2, 12)),
    ("Unflatten", dict(dim=-1, unflattened_size=[2, -1]), (2, 3, 10)),
    ("Conv1d", dict(out_channels=4, kernel_size=3), (2, 3, 10)),
    ("Conv1d", dict(out_channels=6, kernel_size=3, stride=2, padding=1, groups=3), (3, 9)),
    ("Conv1d", dict(out_channels=2, kernel_size=4, padding="same", dilation=2), (1, 2, 9)),
    ("Conv2d", dict(out_channels=4, kernel_size=3), (2, 3, 8, 8)),
    ("Conv2d", dict(out_channels=4, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)), (3, 7, 9)),
    ("Conv2d", dict(out_channels=2, kernel_size=3, padding="valid", dilation=(2, 1)), (1, 1, 9, 6)),
    ("Conv2d", dict(out_channels=2, kernel_size=3, padding=1, padding_mode="reflect"),
     (1, 2, 5, 5)),
    ("Conv3d", dict(out_channels=2, kernel_size=2), (1, 3, 4, 5, 6)),
    ("Conv3d", dict(out_channels=4, kernel_size=(1, 3, 3), padding="same", groups=2), (2, 4, 4, 4)),
    ("Conv1d", dict(out_channels=2, kernel_size=4, padding="same", padding_mode="circular"),
     (1, 1, 2)),
    ("ConvTranspose1d", dict(out_channels=3, kernel_size=3, stride=2), (2, 4, 5)),
    ("ConvTranspose1d", dict(out_channels=2, kernel_size=4, stride=3, padding=1, output_padding=2),
     (4, 6)),
    ("ConvTranspose2d", dict(out_channels=3, kernel_size=4, stride=2, padding=1), (2, 4, 5, 6)),
    ("ConvTranspose2d", dict(out_channels=4, kernel_size=3, dilation=2, output_padding=1, groups=2),
     (2, 3, 3)),
    ("ConvTranspose3d", dict(out_channels=2, kernel_size=2, stride=2), (1, 3, 2, 3, 4)),
    ("ConvTranspose3d", dict(out_channels=1, kernel_size=(1, 2, 3), padding=(0, 1, 1)),
     (2, 3, 4, 5)),
    ("BatchNorm1d", {}, (4, 3)),
    ("BatchNorm1d", dict(affine=False, momentum=None), (2, 3, 5)),
    ("BatchNorm2d", {}, (2, 3, 4, 4)),
    ("BatchNorm2d", dict(eps=1e-3, track_running_stats=False), (3, 2, 1, 2)),
    ("BatchNorm3d", {}, (2, 3, 2, 2, 2)),
    ("BatchNorm3d", dict(bias=False), (2, 1, 1, 2, 3)),
    ("InstanceNorm1d", {}, (2, 3, 5)),
    ("InstanceNorm1d", dict(affine=True), (3, 4)),
    ("InstanceNorm2d", {}, (2, 3, 4, 4)),
    ("InstanceNorm2d", dict(track_running_stats=True), (3, 2, 5)),
    ("InstanceNorm3d", {}, (1, 2, 2, 3, 4)),
    ("InstanceNorm3d", dict(affine=True), (2, 2, 2, 2)),
    ("LayerNorm", {}, (2, 5, 8)),
    ("LayerNorm", dict(normalized_shape=(5, 8), elementwise_affine=False), (2, 5, 8)),
    ("LayerNorm", dict(normalized_shape=6), (6,)),
    ("RMSNorm", {}, (2, 7)),
    ("RMSNorm", dict(normalized_shape=[3, 4], eps=1e-6), (2, 3, 4)),
    ("GroupNorm", dict(num_groups=2), (2, 4, 3, 3)),
    ("GroupNorm", dict(num_groups=3, affine=False), (2, 6)),
    ("GroupNorm", dict(num_groups=1, eps=1e-3), (3, 2, 5)),
    ("LocalResponseNorm", dict(size=2), (2, 4, 5)),
    ("LocalResponseNorm", dict(size=3, alpha=1e-3, k=2.0), (1, 5, 3, 3)),
    ("Dropout", {}, (2, 3)),
    ("Dropout", dict(p=0.2), (5,)),
    ("Dropout1d", dict(p=0.1), (2, 3, 4)),
    ("Dropout1d", {}, (3, 4)),
    ("Dropout2d", {}, (2, 3, 4, 4)),
    ("Dropout2d", dict(p=0.0), (3, 4, 4)),
    ("Dropout3d", {}, (2, 3, 2, 2, 2)),
    ("Dropout3d", {}, (3, 2, 2, 2)),
    ("AlphaDropout", {}, (2, 3)),
    ("AlphaDropout", dict(p=0.3), (2, 3, 4)),
    ("FeatureAlphaDropout", {}, (2, 3, 4)),
    ("FeatureAlphaDropout", dict(p=0.1), (2, 3)),
    ("ReLU", {}, (2, 3)),
    ("ReLU", dict(inplace=True), (4,)),
    ("ReLU6", {}, (2, 3, 4)),
    ("ReLU6", {}, ()),
    ("LeakyReLU", dict(negative_slope=0.2), (2, 3)),
    ("LeakyReLU", {}, (1, 2, 3, 4)),
    ("PReLU", {}, (2, 3)),
    ("PReLU", dict(num_parameters=3), (2, 3, 4)),
    ("PReLU", dict(num_parameters=1, init=0.1), (5,)),
    ("ELU", dict(alpha=0.5), (2, 3)),
    ("ELU", {}, (3,)),
    ("SELU", {}, (2, 3)),
    ("SELU", {}, (2, 3, 4)),
    ("CELU", dict(alpha=2.0), (2, 3)),
    ("CELU", {}, (4,)),
    ("GELU", {}, (2, 3)),
    ("GELU", dict(approximate="tanh"), (2, 3, 4)),
    ("SiLU", {}, (2, 3)),
    ("SiLU", {}, (5,)),
    ("Mish", {}, (2, 3)),
    ("Mish", {}, (1, 2, 3)),
    ("Sigmoid", {}, (2, 3)),
    ("Sigmoid", {}, ()),
    ("Tanh", {}, (2, 3)),
    ("Tanh", {}, (3, 1, 2)),
    ("Hardtanh", {}, (2, 3)),
    ("Hardtanh", dict(min_val=-2.0, max_val=2.0), (4,)),
    ("Hardsigmoid", {}, (2, 3)),
    ("Hardsigmoid", {}, (2,)),
    ("Hardswish", {}, (2, 3)),
    ("Hardswish", {}, (2, 3, 4)),
    ("Softplus", dict(beta=2.0), (2, 3)),
    ("Softplus", {}, (3,)),
    ("Softsign", {}, (2, 3)),
    ("Softsign", {}, (3, 2)),
    ("Softshrink", dict(lambd=0.1), (2, 3)),
    ("Softshrink", {}, (4,)),
    ("Hardshrink", {}, (2, 3)),
    ("Hardshrink", dict(lambd=1.0), (1, 4)),
    ("Tanhshrink", {}, (2, 3)),
    ("Tanhshrink", {}, (5,)),
    ("Threshold", dict(threshold=0.1, value=20.0), (2, 3)),
    ("Threshold", dict(threshold=0, value=-1), (4,)),
    ("LogSigmoid", {}, (2, 3)),
    ("LogSigmoid", {}, (2, 3, 4)),
    ("RReLU", {}, (2, 3)),
    ("RReLU", dict(lower=0.1, upper=0.2), (4,)),
    ("Softmax", dict(dim=1), (2, 3)),
    ("Softmax", dict(dim=-1), (2, 3, 4)),
    ("LogSoftmax", dict(dim=0), (5,)),
    ("LogSoftmax", dict(dim=1), (2, 3)),
    ("Softmin", dict(dim=-1), (2, 3)),
    ("Softmin", dict(dim=2), (2, 3, 4)),
    ("Softmax2d", {}, (2, 3, 4, 4)),
    ("Softmax2d", {}, (3, 4, 4)),
    ("GLU", {}, (2, 6)),
    ("GLU", dict(dim=1), (2, 4, 3)),
    ("MaxPool1d", dict(kernel_size=2), (2, 3, 8)),
    ("MaxPool1d", dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True), (3, 10)),
    ("MaxPool2d", dict(kernel_size=2), (2, 3, 8, 8)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, ceil_mode=True), (1, 2, 8, 9)),
    ("MaxPool2d", dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)), (2, 5, 7)),
    ("MaxPool2d", dict(kernel_size=2, stride=3, padding=1, ceil_mode=True), (1, 1, 6, 7)),
    ("MaxPool3d", dict(kernel_size=2), (1, 2, 4, 4, 4)),
    ("MaxPool3d", dict(kernel_size=(1, 2, 3), stride=1, dilation=(1, 2, 1)), (2, 3, 5, 6)),
    # ceil_mode keeps a window that starts inside the input though the kernel is larger
    ("MaxPool1d", dict(kernel_size=4, stride=3, ceil_mode=True), (2, 1, 3)),
    ("MaxPool2d", dict(kernel_size=3, padding=1, dilation=2), (1, 1, 3, 5)),
    ("AvgPool1d", dict(kernel_size=3), (2, 3, 9)),
    ("AvgPool1d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (3, 8)),
    ("AvgPool2d", dict(kernel_size=2), (2, 3, 8, 8)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False,
                       divisor_override=2), (3, 7, 6)),
    ("AvgPool2d", dict(kernel_size=(2, 3), ceil_mode=True), (1, 1, 5, 7)),
    ("AvgPool3d", dict(kernel_size=2), (1, 2, 4, 4, 4)),
    ("AvgPool3d", dict(kernel_size=3, stride=2, padding=1), (2, 5, 6, 7)),
    ("AvgPool2d", dict(kernel_size=(4, 2), ceil_mode=True), (1, 3, 2)),
    ("LPPool1d", dict(norm_type=2.0, kernel_size=3), (2, 3, 7)),
    ("LPPool1d", dict(norm_type=1, kernel_size=2, stride=3, ceil_mode=True), (3, 8)),
    ("LPPool2d", dict(norm_type=2.0, kernel_size=2), (2, 3, 6, 6)),
    ("LPPool2d", dict(norm_type=3.0, kernel_size=(2, 3), stride=1), (3, 4, 5)),
    ("LPPool3d", dict(norm_type=2.0, kernel_size=2), (1, 2, 4, 4, 4)),
    ("LPPool3d", dict(norm_type=2.0, kernel_size=(1, 2, 2), stride=(1, 1, 2)), (2, 3, 4, 5)),
    ("AdaptiveAvgPool1d", dict(output_size=4), (2, 3, 9)),
    ("AdaptiveAvgPool1d", dict(output_size=(1,)), (3, 5)),
    ("AdaptiveAvgPool2d", dict(output_size=1), (2, 3, 7, 5)),
    ("AdaptiveAvgPool2d", dict(output_size=(None, 3)), (3, 6, 7)),
    ("AdaptiveAvgPool3d", dict(output_size=2), (1, 2, 4, 5, 6)),
    ("AdaptiveAvgPool3d", dict(output_size=(1, None, 2)), (2, 3, 4, 5)),
    ("AdaptiveMaxPool1d", dict(output_size=3), (2, 3, 9)),
    ("AdaptiveMaxPool1d", dict(output_size=2), (3, 5)),
    ("AdaptiveMaxPool2d", dict(output_size=(2, 3)), (2, 3, 7, 5)),
    ("AdaptiveMaxPool2d", dict(output_size=(None, 1)), (3, 6, 7)),
    ("AdaptiveMaxPool3d", dict(output_size=1), (1, 2, 4, 5, 6)),
    ("AdaptiveMaxPool3d", dict(output_size=(2, 2, None)), (2, 3, 4, 5)),
    ("Upsample", dict(scale_factor=2), (2, 3, 4, 5)),
    ("Upsample", dict(size=(5, 7), mode="bilinear", align_corners=True), (1, 2, 3, 3)),
    ("Upsample", dict(scale_factor=1.5, mode="linear"), (1, 2, 5)),
    ("Upsample", dict(scale_factor=(2, 1, 0.5), mode="trilinear"), (1, 1, 2, 3, 4)),
    ("UpsamplingNearest2d", dict(scale_factor=2), (2, 3, 4, 5)),
    ("UpsamplingNearest2d", dict(size=(3, 8)), (1, 2, 2, 2)),
    ("UpsamplingBilinear2d", dict(scale_factor=3), (1, 2, 2, 3)),
    ("UpsamplingBilinear2d", dict(size=5), (2, 1, 3, 3)),
    ("PixelShuffle", dict(upscale_factor=2), (2, 8, 3, 4)),
    ("PixelShuffle", dict(upscale_factor=3), (9, 2, 2)),
    ("PixelUnshuffle", dict(downscale_factor=2), (2, 3, 4, 6)),
    ("PixelUnshuffle", dict(downscale_factor=3), (1, 3, 3)),
    ("ChannelShuffle", dict(groups=2), (2, 4, 3, 3)),
    ("ChannelShuffle", dict(groups=3), (1, 6, 2)),
    ("ZeroPad1d", dict(padding=2), (2, 3, 5)),
    ("ZeroPad1d", dict(padding=(1, -2)), (4, 6)),
    ("ZeroPad1d", dict(padding=(2, -3)), (2, 3)),
    ("ZeroPad2d", dict(padding=1), (2, 3, 4, 5)),
    ("ZeroPad2d", dict(padding=(1, 2, 0, 3)), (3, 4)),
    ("ZeroPad3d", dict(padding=1), (1, 2, 3, 4, 5)),
    ("ZeroPad3d", dict(padding=(1, 0, 2, 0, 0, 3)), (2, 3, 4, 5)),
    ("ConstantPad1d", dict(padding=2, value=1.5), (2, 3, 5)),
    ("ConstantPad1d", dict(padding=(0, 3), value=0), (5,)),
    ("ConstantPad2d", dict(padding=(1, 1, 2, 0), value=-1.0), (2, 3, 4, 5)),
    ("ConstantPad2d", dict(padding=1, value=2), (3, 4)),
    ("ConstantPad3d", dict(padding=1, value=0.0), (1, 2, 3, 4)),
    ("ConstantPad3d", dict(padding=(0, 1, 0, 1, 2, 2), value=1.0), (1, 1, 2, 3, 4)),
    ("ReflectionPad1d", dict(padding=2), (2, 3, 5)),
    ("ReflectionPad1d", dict(padding=(1, 3)), (3, 4)),
    ("ReflectionPad1d", dict(padding=(-1, 2)), (2, 3, 4)),
    ("ReflectionPad2d", dict(padding=(-1, -2, 1, 1)), (1, 3, 3)),  # an empty width is allowed
    ("ReflectionPad2d", dict(padding=1), (2, 3, 4, 5)),
    ("ReflectionPad2d", dict(padding=(2, 0, 1, 3)), (3, 4, 5)),
    ("ReflectionPad3d", dict(padding=1), (1, 2, 3, 4, 5)),
    ("ReflectionPad3d", dict(padding=(1, 0, 2, 1, 0, 1)), (2, 2, 3, 4)),
    ("ReplicationPad1d", dict(padding=3), (2, 3, 2)),
    ("ReplicationPad1d", dict(padding=(0, 2)), (3, 4)),
    ("ReplicationPad1d", dict(padding=(-2, 1)), (3, 4)),
    ("ReplicationPad2d", dict(padding=2), (2, 3, 2, 2)),
    ("ReplicationPad2d", dict(padding=(1, 2, 3, 4)), (3, 4, 5)),
    ("ReplicationPad3d", dict(padding=1), (1, 2, 3, 4, 5)),
    ("ReplicationPad3d", dict(padding=(2, 0, 0, 1, 1, 1)), (2, 2, 3, 4)),
    ("CircularPad1d", dict(padding=2), (2, 3, 5)),
    ("CircularPad1d", dict(padding=(3, 1)), (3, 3)),
    ("CircularPad1d", dict(padding=(-1, 3)), (1, 1, 4)),  # wraps the 3 elements the crop leaves
    ("CircularPad2d", dict(padding=1), (2, 3, 4, 5)),
    ("CircularPad2d", dict(padding=(1, 0, 2, 2)), (3, 4, 5)),
    ("CircularPad3d", dict(padding=1), (1, 2, 3, 4, 5)),
    ("CircularPad3d", dict(padding=(0, 1, 1, 0, 2, 2)), (2, 2, 3, 4)),
    ("RNN", dict(hidden_size=6), (5, 2, 4)),
    ("RNN", dict(hidden_size=3, num_layers=2, nonlinearity="relu", bias=False, batch_first=True,
                 bidirectional=True), (2, 5, 4)),
    ("RNN", dict(hidden_size=4, batch_first=True), (5, 3)),   # unbatched: batch_first unused
    ("LSTM", dict(hidden_size=6), (5, 2, 4)),
    ("LSTM", dict(hidden_size=6, num_layers=3, batch_first=True, dropout=0.25,
                  bidirectional=True, proj_size=2), (2, 5, 4)),
    ("LSTM", dict(hidden_size=5, bias=False, proj_size=3), (7, 4)),
    ("LSTM", dict(hidden_size=4, num_layers=2, bidirectional=True), (1, 0, 3)),  # no batch
    ("GRU", dict(hidden_size=6, batch_first=True), (2, 5, 4)),
    ("GRU", dict(hidden_size=3, num_layers=2, bias=False, bidirectional=True), (5, 4)),
    ("RNNCell", dict(hidden_size=6), (2, 4)),
    ("RNNCell", dict(hidden_size=3, bias=False, nonlinearity="relu"), (4,)),
    ("LSTMCell", dict(hidden_size=6), (2, 4)),
    ("LSTMCell", dict(hidden_size=3, bias=False), (4,)),
    ("GRUCell", dict(hidden_size=6), (3, 4)),
    ("GRUCell", dict(hidden_size=2, bias=False), (5,)),
    # layers of several tensors: a list of shapes, one per tensor of ``forward``
    ("MultiheadAttention", dict(num_heads=2), [(5, 2, 8), (7, 2, 8), (7, 2, 8)]),
    ("MultiheadAttention", dict(num_heads=4, batch_first=True), [(2, 5, 8), (2, 7, 6), (2, 7, 4)]),
    ("MultiheadAttention", dict(num_heads=1, bias=False, add_bias_kv=True, add_zero_attn=True),
     [(5, 8), (3, 8), (3, 8)]),
    ("Bilinear", dict(out_features=5), [(3, 4), (3, 6)]),
    ("Bilinear", dict(out_features=2, bias=False), [(2, 3, 4), (2, 3, 5)]),
    ("Unfold", dict(kernel_size=2), (2, 3, 4, 5)),
    ("Unfold", dict(kernel_size=(2, 3), dilation=2, padding=1, stride=(2, 1)), (3, 6, 7)),
    ("Fold", dict(output_size=(4, 5), kernel_size=2), (2, 12, 12)),
    ("Fold", dict(output_size=6, kernel_size=3, padding=1, stride=2), (18, 9)),
    ("CosineSimilarity", {}, [(3, 5), (3, 5)]),
    ("CosineSimilarity", dict(dim=-1), [(2, 1, 4), (3, 4)]),
    ("CosineSimilarity", dict(dim=0), [(6,), (6,)]),
    ("PairwiseDistance", {}, [(3, 5), (3, 5)]),
    ("PairwiseDistance", dict(p=1.0, keepdim=True), [(2, 3, 4), (4,)]),
    ("PairwiseDistance", {}, [(5,), (5,)]),
    ("Transformer", dict(nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                         dim_feedforward=16), [(5, 3, 8), (4, 3, 8)]),
    ("Transformer", dict(nhead=4, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=8,
                         batch_first=True, bias=False, norm_first=True), [(3, 5, 8), (3, 2, 8)]),
    ("Transformer", dict(nhead=1, num_encoder_layers=1, num_decoder_layers=1,
                         dim_feedforward=4), [(6, 4), (2, 4)]),
    ("TransformerEncoderLayer", dict(nhead=2, dim_feedforward=16), (5, 3, 8)),
    ("TransformerEncoderLayer", dict(nhead=4, dim_feedforward=8, batch_first=True,
                                     norm_first=True, bias=False, activation="gelu"), (3, 5, 8)),
    ("TransformerEncoderLayer", dict(nhead=1, dim_feedforward=4), (6, 4)),
    ("TransformerDecoderLayer", dict(nhead=2, dim_feedforward=16), [(5, 3, 8), (7, 3, 8)]),
    ("TransformerDecoderLayer", dict(nhead=4, dim_feedforward=8, batch_first=True, bias=False),
     [(3, 5, 8), (3, 2, 8)]),
    ("TransformerDecoderLayer", dict(nhead=2, dim_feedforward=4, norm_first=True),
     [(6, 4), (2, 4)]),
]


def inputs(shape: tuple | list) -> list[tuple]:
    """The input shapes of a case: one, or a list of one per tensor of the layer's forward."""
    return shape if isinstance(shape, list) else [shape]


def stated_and_inferred(name: str, stated: dict, shape: tuple) -> dict:
    """The stated arguments plus the ones the layer infers from the input."""
    args = dict(stated)
    for size in LAYERS[name].in_sizes:
        if size.param not in args:
            args[size.param] = size.infer(inputs(shape)[size.input])
    return args


def validated(name: str, args: dict) -> dict:
    """Every argument after pydantic validation, defaults applied."""
    model = layer_schema(LAYERS[name])(**args)
    return {field: getattr(model, field) for field in type(model).model_fields}


def run_torch(name: str, args: dict, shape: tuple) -> tuple:
    """The real module's output shape on a random tensor."""
    module = getattr(torch.nn, name)(**args)
    if name == "Embedding":
        xs = [torch.randint(0, args["num_embeddings"], shape)]
    else:
        xs = [torch.randn(s) for s in inputs(shape)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = module(*xs)
    if LAYERS[name].output_index is not None:   # (output, h_n) and such: a step passes one on
        assert isinstance(y, tuple)
        y = y[LAYERS[name].output_index]
    return tuple(y.shape)


def test_every_layer_has_shape_cases():
    counts = Counter(name for name, _, _ in SHAPE_CASES)
    assert {name for name in LAYERS if counts[name] < 2} == set()


@pytest.mark.parametrize("name,stated,shape", SHAPE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SHAPE_CASES)])
def test_shape_rule_matches_torch(name, stated, shape):
    args = validated(name, stated_and_inferred(name, stated, shape))
    assert LAYERS[name].shape(args, *inputs(shape)) == run_torch(name, args, shape)


@pytest.mark.parametrize("name,stated,shape", SHAPE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SHAPE_CASES)])
def test_tensor_rule_matches_torch(name, stated, shape):
    """The parameters and buffers a layer owns, known without torch, equal the real ones."""
    args = validated(name, stated_and_inferred(name, stated, shape))
    module = getattr(torch.nn, name)(**args)
    real = {n: (tuple(t.shape), "param") for n, t in module.named_parameters()}
    real.update({n: (tuple(t.shape), "buffer") for n, t in module.named_buffers()
                 if t is not None})
    assert LAYERS[name].tensors(args) == real


# -- errors: the rule refuses what torch refuses ---------------------------------------------------

# (layer, stated arguments, input shape, the argument blamed or None)
ERROR_CASES = [
    ("Conv2d", dict(out_channels=4, kernel_size=3), (2, 784), None),
    ("Conv2d", dict(out_channels=4, kernel_size=5), (1, 3, 3, 8), "kernel_size"),
    ("Conv2d", dict(out_channels=4, kernel_size=3, dilation=3), (1, 3, 6, 8), "kernel_size"),
    ("Conv2d", dict(in_channels=4, out_channels=4, kernel_size=1), (1, 3, 8, 8), "in_channels"),
    ("Conv2d", dict(out_channels=4, kernel_size=3, groups=2), (1, 3, 8, 8), "groups"),
    ("Conv2d", dict(out_channels=4, kernel_size=3, stride=2, padding="same"), (1, 4, 8, 8),
     "padding"),
    ("Conv1d", dict(out_channels=2, kernel_size=3, padding=4, padding_mode="reflect"), (1, 2, 4),
     "padding"),
    ("ConvTranspose2d", dict(out_channels=2, kernel_size=3, output_padding=1), (1, 2, 4, 4),
     "output_padding"),
    ("ConvTranspose1d", dict(out_channels=2, kernel_size=1, padding=2), (1, 2, 3), "padding"),
    ("Linear", dict(in_features=10, out_features=2), (4, 784), "in_features"),
    ("Linear", dict(in_features=10, out_features=2), (), None),
    ("BatchNorm2d", {}, (2, 3, 4), None),
    ("BatchNorm1d", dict(num_features=4), (2, 3), "num_features"),
    ("InstanceNorm2d", {}, (2, 3, 1, 1), None),
    ("InstanceNorm2d", dict(num_features=4, affine=True), (2, 3, 4, 4), "num_features"),
    ("LayerNorm", dict(normalized_shape=10), (2, 20), "normalized_shape"),
    ("LayerNorm", dict(normalized_shape=(2, 3, 4)), (3, 4), "normalized_shape"),
    ("GroupNorm", dict(num_groups=3), (2, 4, 5), "num_groups"),
    ("GroupNorm", dict(num_groups=2, num_channels=6), (2, 4, 5), "num_channels"),
    ("LocalResponseNorm", dict(size=2), (2, 3), None),
    ("Dropout1d", {}, (2, 3, 4, 5), None),
    ("PReLU", dict(num_parameters=3), (2, 4), "num_parameters"),
    ("Hardtanh", dict(min_val=1.0, max_val=0.0), (2, 3), "max_val"),
    ("Softmax", dict(dim=2), (2, 3), "dim"),
    ("GLU", {}, (2, 5), "dim"),
    ("Flatten", dict(start_dim=2, end_dim=1), (2, 3, 4), "start_dim"),
    ("Unflatten", dict(dim=1, unflattened_size=(3, 5)), (2, 12), "unflattened_size"),
    ("Unflatten", dict(dim=1, unflattened_size=(5, -1)), (2, 12), "unflattened_size"),
    ("MaxPool2d", dict(kernel_size=3), (1, 1, 2, 5), "kernel_size"),
    ("MaxPool2d", dict(kernel_size=2, padding=2), (1, 1, 8, 8), "padding"),
    ("MaxPool2d", dict(kernel_size=2, return_indices=True), (1, 1, 8, 8), "return_indices"),
    ("AvgPool1d", dict(kernel_size=4), (1, 2, 3), "kernel_size"),
    ("AvgPool3d", dict(kernel_size=2), (2, 2), None),
    ("AdaptiveAvgPool2d", dict(output_size=2), (8, 8), None),
    ("Upsample", dict(scale_factor=2, mode="bilinear"), (1, 2, 3), "mode"),
    ("Upsample", dict(size=4, scale_factor=2.0), (1, 2, 3), "size"),
    ("Upsample", dict(size=(4, 4)), (1, 2, 3), "size"),
    ("Upsample", dict(scale_factor=2, align_corners=True), (1, 2, 3), "align_corners"),
    ("PixelShuffle", dict(upscale_factor=2), (1, 6, 4, 4), "upscale_factor"),
    ("PixelUnshuffle", dict(downscale_factor=2), (1, 2, 4, 5), "downscale_factor"),
    ("ChannelShuffle", dict(groups=4), (1, 6, 2, 2), "groups"),
    ("ReflectionPad2d", dict(padding=3), (1, 1, 3, 5), "padding"),
    ("CircularPad1d", dict(padding=4), (1, 1, 3), "padding"),
    ("ReplicationPad1d", dict(padding=1), (1, 2, 3, 4), None),
    ("ZeroPad1d", dict(padding=-3), (2, 5), "padding"),
    ("ZeroPad1d", dict(padding=(1, -2)), (2, 1), "padding"),
    ("ReflectionPad1d", dict(padding=-1), (1, 2), "padding"),
    ("ReflectionPad2d", dict(padding=(-2, -1, 0, -3)), (1, 3, 3), "padding"),
    ("ReplicationPad1d", dict(padding=(-2, -1)), (1, 1, 3), "padding"),
    ("CircularPad3d", dict(padding=(0, 0, 0, 0, -1, 2)), (1, 2, 1, 1), "padding"),
    ("Conv1d", dict(out_channels=2, kernel_size=2, padding="same", padding_mode="reflect"),
     (2, 1, 1), "padding"),
    ("Conv1d", dict(out_channels=2, kernel_size=6, padding="same", padding_mode="circular"),
     (2, 1, 2), "padding"),
    ("MaxPool1d", dict(kernel_size=2, padding=2, dilation=3), (2, 1, 8), "padding"),
    ("MaxPool2d", dict(kernel_size=3, padding=2, dilation=2), (1, 1, 9, 9), "padding"),
    ("MaxPool1d", dict(kernel_size=6, stride=3, ceil_mode=True), (1, 1, 3), "kernel_size"),
    ("AvgPool3d", dict(kernel_size=2, padding=1), (1, 1, 1, 1, 1), "kernel_size"),
    ("LPPool3d", dict(norm_type=2.0, kernel_size=(1, 2, 2), ceil_mode=True), (1, 2, 1, 3),
     "kernel_size"),
    ("Embedding", dict(num_embeddings=5, embedding_dim=2, padding_idx=5), (3,), "padding_idx"),
    ("LSTM", dict(hidden_size=4, proj_size=4), (5, 2, 3), "proj_size"),
    ("LSTM", dict(hidden_size=4, proj_size=6), (5, 3), "proj_size"),
    ("GRU", dict(input_size=5, hidden_size=4), (5, 2, 3), "input_size"),
    ("RNN", dict(hidden_size=4), (2, 3, 5, 3), None),
    ("RNN", dict(hidden_size=4), (3,), None),
    ("LSTM", dict(hidden_size=4, batch_first=True), (2, 0, 3), None),
    ("GRU", dict(hidden_size=4), (0, 2, 3), None),
    ("LSTM", dict(hidden_size=4, batch_first=True), (0, 3), None),   # unbatched: dim 0 is time
    ("GRUCell", dict(hidden_size=4), (2, 3, 4), None),
    ("LSTMCell", dict(input_size=3, hidden_size=4), (2, 5), "input_size"),
    ("RNNCell", dict(input_size=3, hidden_size=4), (5,), "input_size"),
    ("MultiheadAttention", dict(num_heads=3), [(5, 2, 8), (5, 2, 8), (5, 2, 8)], "num_heads"),
    ("MultiheadAttention", dict(num_heads=2), [(5, 2, 8), (7, 2, 8), (6, 2, 8)], None),
    ("MultiheadAttention", dict(num_heads=2, batch_first=True), [(2, 5, 8), (3, 7, 8), (3, 7, 8)],
     None),
    ("MultiheadAttention", dict(num_heads=2), [(5, 2, 8), (7, 8), (7, 8)], None),
    ("MultiheadAttention", dict(num_heads=2), [(1, 5, 2, 8), (7, 2, 8), (7, 2, 8)], None),
    ("Bilinear", dict(out_features=5), [(3, 4), (2, 6)], None),
    ("Unfold", dict(kernel_size=5), (1, 2, 4, 8), "kernel_size"),
    ("Unfold", dict(kernel_size=2), (2, 4, 4, 4, 4), None),
    ("Fold", dict(output_size=(4, 5), kernel_size=2), (2, 10, 12), "kernel_size"),
    ("Fold", dict(output_size=(4, 5), kernel_size=2), (2, 12, 11), "output_size"),
    ("CosineSimilarity", {}, [(3, 5), (2, 5)], None),
    ("CosineSimilarity", dict(dim=2), [(3, 5), (3, 5)], "dim"),
    ("PairwiseDistance", {}, [(3, 5), (3, 4)], None),
    ("Transformer", dict(nhead=3, num_encoder_layers=1, num_decoder_layers=1), [(5, 2, 8), (4, 2, 8)],
     "nhead"),
    ("Transformer", dict(num_encoder_layers=1, num_decoder_layers=1), [(5, 2, 8), (4, 3, 8)], None),
    ("Transformer", dict(num_encoder_layers=1, num_decoder_layers=1), [(5, 2, 8), (4, 2, 6)], None),
    ("Transformer", dict(num_encoder_layers=1, num_decoder_layers=1), [(5, 2, 8), (4, 8)], None),
    ("TransformerEncoderLayer", dict(nhead=3), (5, 2, 8), "nhead"),
    ("TransformerEncoderLayer", dict(nhead=2), (1, 5, 2, 8), None),
    ("TransformerDecoderLayer", dict(nhead=2), [(5, 2, 8), (7, 2, 6)], None),
    ("TransformerDecoderLayer", dict(nhead=2), [(5, 2, 8), (7, 3, 8)], None),
    ("TransformerDecoderLayer", dict(nhead=2, batch_first=True), [(2, 5, 8), (3, 7, 8)], None),
    ("TransformerDecoderLayer", dict(nhead=2), [(5, 2, 8), (7, 8)], None),
]


def torch_fails(name: str, args: dict, shape: tuple) -> bool:
    try:
        run_torch(name, args, shape)
    except Exception:
        return True
    return False


@pytest.mark.parametrize("name,stated,shape,arg", ERROR_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(ERROR_CASES)])
def test_shape_rule_refuses_what_torch_refuses(name, stated, shape, arg):
    with pytest.raises(ShapeRuleError) as info:
        args = validated(name, stated_and_inferred(name, stated, shape))
        LAYERS[name].shape(args, *inputs(shape))
    assert info.value.arg == arg
    assert info.value.message and "\n" not in info.value.message
    assert torch_fails(name, validated(name, torch_args(name, stated, shape)), shape)


def torch_args(name: str, stated: dict, shape: tuple) -> dict:
    """Arguments for the real module where the rule refused the input: inferred sizes are read
    off the input where possible, else set to 3."""
    args = dict(stated)
    for size in LAYERS[name].in_sizes:
        if size.param not in args:
            try:
                args[size.param] = size.infer(inputs(shape)[size.input])
            except ShapeRuleError:
                args[size.param] = 3
    return args


def test_rank_message_names_layout_and_shape():
    with pytest.raises(ShapeRuleError) as info:
        LAYERS["Conv2d"].in_sizes[0].infer((N, 784))
    assert info.value.message == ("Conv2d expects a 3-D or 4-D input [N, C, H, W], "
                                  "got the 2-D input [N, 784]")


def test_kernel_message():
    args = validated("Conv2d", dict(in_channels=1, out_channels=1, kernel_size=5))
    with pytest.raises(ShapeRuleError) as info:
        LAYERS["Conv2d"].shape(args, (N, 1, 3, 8))
    assert info.value.message == "kernel_size=5 is larger than the input height 3"


def test_pool_padding_is_compared_with_the_undilated_kernel():
    args = validated("MaxPool2d", dict(kernel_size=3, padding=2, dilation=2))
    with pytest.raises(ShapeRuleError) as info:
        LAYERS["MaxPool2d"].shape(args, (N, 1, 9, 9))
    assert info.value.message == "padding=2 must be at most half of kernel_size=3"
    assert info.value.hint == ("a padding of 2 needs a kernel size of at least 4; dilation does "
                               "not count, only kernel_size itself")


def test_ceil_mode_kernel_message_says_how_far_a_window_may_overhang():
    args = validated("MaxPool1d", dict(kernel_size=6, stride=3, ceil_mode=True))
    with pytest.raises(ShapeRuleError) as info:
        LAYERS["MaxPool1d"].shape(args, (N, 1, 3))
    assert info.value.message == "kernel_size=6 is larger than the input length 3, even with " \
                                 "ceil_mode=true"
    assert info.value.hint == "with ceil_mode=true the last window may overhang the end of the " \
                              "input by at most stride - 1 = 2"


@pytest.mark.parametrize("stated,shape", [
    (dict(kernel_size=2, padding=(1, 0), dilation=2), (2, 2, 1, 6)),   # taps rows -1 and 1
    (dict(kernel_size=2, stride=1, padding=1, dilation=3), (1, 1, 2, 2)),  # taps -1 and 2
])
def test_dilated_max_pool_window_of_padding_only_is_refused(stated, shape):
    # torch returns -inf for such a window and can corrupt its heap, so it is not run here
    args = validated("MaxPool2d", stated)
    with pytest.raises(ShapeRuleError) as info:
        LAYERS["MaxPool2d"].shape(args, shape)
    assert "holds only padding" in info.value.message
    assert info.value.arg == "padding"


def test_dilated_max_pool_window_holding_an_input_element_is_kept():
    args = validated("MaxPool1d", dict(kernel_size=2, stride=1, padding=1, dilation=2))
    assert LAYERS["MaxPool1d"].shape(args, (1, 1, 2)) == (1, 1, 2)  # taps (-1, 1) and (0, 2)


@pytest.mark.parametrize("padding,shape", [
    ((-3, 1), (1, 1, 3)),   # nothing is left to wrap: torch returns uninitialised memory
    ((-1, 3), (1, 2, 3)),   # wraps twice: torch refuses when the channels are 1, else computes it
])
def test_circular_padding_wraps_at_most_what_the_crop_leaves(padding, shape):
    args = validated("CircularPad1d", dict(padding=padding))
    with pytest.raises(ShapeRuleError) as info:
        LAYERS["CircularPad1d"].shape(args, shape)
    assert "to copy from" in info.value.message


def test_infer_refuses_a_symbolic_channel_dim():
    with pytest.raises(ShapeRuleError) as info:
        LAYERS["Conv2d"].in_sizes[0].infer((N, C, 8, 8))
    assert info.value.message == ("cannot infer in_channels: the input's channel dim is the "
                                  "symbol C; state in_channels= or give a concrete input shape")
    assert info.value.arg == "in_channels"


# (layer, arguments, an input torch would be given)
INVALID_ARGS = [
    ("Conv2d", dict(in_channels=3, out_channels=4, kernel_size=-1), (1, 3, 8, 8)),
    ("Conv2d", dict(in_channels=3, out_channels=4, kernel_size=3, stride=0), (1, 3, 8, 8)),
    ("Conv1d", dict(in_channels=3, out_channels=4, kernel_size=3, padding="full"), (1, 3, 8)),
    ("Conv2d", dict(in_channels=3, out_channels=4, kernel_size=(3, 3, 3)), (1, 3, 8, 8)),
    ("Dropout", dict(p=2.0), (2, 3)),
    ("Dropout", dict(p=-0.5), (2, 3)),
    ("MaxPool2d", dict(kernel_size=0), (1, 1, 4, 4)),
    ("MaxPool1d", dict(kernel_size=2, stride=0), (1, 1, 4)),
    ("AvgPool2d", dict(kernel_size=2, divisor_override=0), (1, 1, 4, 4)),
    ("LPPool1d", dict(norm_type=2.0, kernel_size=[3]), (2, 2, 8)),  # multiplies by kernel_size
    ("Linear", dict(in_features=3, out_features=-2), (2, 3)),
    ("ConvTranspose2d", dict(in_channels=2, out_channels=2, kernel_size=3,
                             padding_mode="reflect"), (1, 2, 4, 4)),
    ("GELU", dict(approximate="fast"), (2, 3)),
    ("PixelShuffle", dict(upscale_factor=0), (1, 4, 2, 2)),
    ("Softshrink", dict(lambd=-1.0), (2, 3)),
    ("Upsample", dict(scale_factor=2, mode="cubic"), (1, 2, 3, 3)),
    ("Linear", dict(in_features=3, out_features=2, bogus=1), (2, 3)),
    ("RNN", dict(input_size=3, hidden_size=4, nonlinearity="sigmoid"), (5, 3)),
    ("RNNCell", dict(input_size=3, hidden_size=4, nonlinearity="sigmoid"), (2, 3)),
    ("LSTM", dict(input_size=3, hidden_size=4, dropout=1.5), (5, 3)),
    ("GRU", dict(input_size=3, hidden_size=4, dropout=-0.1), (5, 3)),
    ("GRU", dict(input_size=3, hidden_size=4, proj_size=2), (5, 3)),
    ("RNN", dict(input_size=3, hidden_size=4, proj_size=2), (5, 3)),
    ("LSTM", dict(input_size=3, hidden_size=4, proj_size=-1), (5, 3)),
    ("LSTM", dict(input_size=3, hidden_size=0), (5, 3)),
    ("GRU", dict(input_size=3, hidden_size=4, num_layers=0), (5, 3)),
    ("LSTM", dict(input_size=3, hidden_size=4, bias=1), (5, 3)),
    ("GRUCell", dict(input_size=3, hidden_size=-4), (2, 3)),
]


@pytest.mark.parametrize("name,args,shape", INVALID_ARGS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(INVALID_ARGS)])
def test_validation_rejects_what_torch_rejects(name, args, shape):
    with pytest.raises(ValidationError):
        layer_schema(LAYERS[name])(**args)
    assert torch_fails(name, args, shape)


def test_validation_rejects_wrong_types():
    schema = layer_schema(LAYERS["Conv2d"])
    for bad in (dict(kernel_size=3.0), dict(kernel_size="3"), dict(bias=1), dict(groups=True)):
        with pytest.raises(ValidationError):
            schema(in_channels=1, out_channels=1, **{"kernel_size": 3, **bad})


# -- symbolic dims ---------------------------------------------------------------------------------


def evaluate(d, **values):
    """A dim with its symbols replaced by sizes; opaque atoms such as ``(H - 1)//2`` are
    Python expressions, so the printed form evaluates exactly."""
    return eval(str(d), {"__builtins__": {}}, values) if isinstance(d, Sym) else d


def test_linear_keeps_a_symbolic_batch():
    args = validated("Linear", dict(in_features=784, out_features=256))
    assert LAYERS["Linear"].shape(args, (N, 784)) == (N, 256)


@pytest.mark.parametrize("stated", [
    dict(out_channels=8, kernel_size=3),
    dict(out_channels=8, kernel_size=5, stride=2, padding=2),
    dict(out_channels=8, kernel_size=3, stride=3, dilation=2),
    dict(out_channels=8, kernel_size=3, padding="same"),
])
def test_conv2d_symbolic_height_substitutes_to_torch(stated):
    args = validated("Conv2d", dict(in_channels=3, **stated))
    out = LAYERS["Conv2d"].shape(args, (N, 3, H, W))
    assert out[0] == N and out[1] == 8
    assert isinstance(out[2], Sym) and "H" in str(out[2]) and "W" not in str(out[2])
    for h, w in ((17, 20), (32, 9)):
        real = run_torch("Conv2d", args, (2, 3, h, w))
        assert (evaluate(out[2], H=h), evaluate(out[3], W=w)) == real[2:]


@pytest.mark.parametrize("name,stated", [
    ("MaxPool2d", dict(kernel_size=2)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=3, stride=1, padding=1)),
    ("ConvTranspose2d", dict(in_channels=3, out_channels=2, kernel_size=4, stride=2, padding=1)),
    ("Upsample", dict(scale_factor=2)),
    ("ZeroPad2d", dict(padding=(1, 2, 3, 4))),
])
def test_symbolic_spatial_dims_flow_through(name, stated):
    args = validated(name, stated)
    out = LAYERS[name].shape(args, (N, 3, H, W))
    assert out[0] == N
    for h, w in ((16, 11), (9, 24)):
        real = run_torch(name, args, (2, 3, h, w))
        assert tuple(evaluate(d, H=h, W=w) for d in out[1:]) == real[1:]


def test_symbolic_flatten_is_exact():
    out = LAYERS["Flatten"].shape(validated("Flatten", {}), (N, 16, 5, 5))
    assert out == (N, 400)
    out = LAYERS["Unflatten"].shape(validated("Unflatten", dict(dim=1, unflattened_size=(-1, 4))),
                                    (N, H * 4))
    assert out == (N, H, 4)


# -- the introspection fallback --------------------------------------------------------------------


def test_lookup_prefers_the_table():
    assert lookup_layer("Conv2d") is LAYERS["Conv2d"]


class _Mixer(torch.nn.Module):
    """A layer without a table: attention over the last dim, then a projection."""

    def __init__(self, d_model, nhead, hidden=8, *, device=None, dtype=None):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(d_model, nhead, batch_first=True)
        self.proj = torch.nn.Linear(d_model, hidden)

    def forward(self, x):
        return self.proj(self.attn(x, x, x)[0])


def test_fallback_reads_the_signature_and_infers_the_input_size():
    layer = layer_from_class(_Mixer)
    expected, factory = torch_params(_Mixer)
    assert [(p.name, p.default) for p in layer.params] == expected
    assert layer.factory_kwargs == factory
    (size,) = layer.in_sizes
    assert size.param == "d_model" and size.infer((N, H, 16)) == 16
    args = {p.name: p.default for p in layer.params} | dict(d_model=16, nhead=2)
    assert layer.shape(args, (N, H, 16)) == (N, H, 8)
    real = _Mixer(16, 2)(torch.randn(3, 5, 16))
    assert layer.shape(args, (3, 5, 16)) == tuple(real.shape)
    with pytest.raises(ShapeRuleError):
        layer.shape(args, (N, H, 17))
    with pytest.raises(ShapeRuleError):
        size.infer((N, C))


class _Pair(torch.nn.Module):
    def forward(self, x):
        return x, x


def test_fallback_refuses_a_layer_that_returns_a_tuple():
    """The next step would get the tuple; a layer with a table entry says which element it
    passes on (output_index), a fallback layer cannot."""
    layer = layer_from_class(_Pair)
    with pytest.raises(ShapeRuleError, match="returns a tuple of 2, not one tensor"):
        layer.shape({}, (N, 3))


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"])
def test_recurrent_layers_are_table_layers_that_say_what_a_step_passes_on(name):
    assert lookup_layer(name) is LAYERS[name] and LAYERS[name].cls is None
    tuple_result = name in ("RNN", "LSTM", "GRU", "LSTMCell")
    assert LAYERS[name].output_index == (0 if tuple_result else None)


def test_fallback_marks_dims_that_depend_on_symbols_as_opaque():
    layer = lookup_layer("Unfold")
    args = {p.name: p.default for p in layer.params} | dict(kernel_size=2)
    out = layer.shape(args, (N, 3, H, 8))
    assert out[:2] == (N, 12) and isinstance(out[2], Sym) and out[2] not in (N, H)
    concrete = layer.shape(args, (2, 3, 5, 8))
    assert concrete == tuple(torch.nn.Unfold(2)(torch.randn(2, 3, 5, 8)).shape)


def test_fallback_is_cached():
    assert lookup_layer("EmbeddingBag") is lookup_layer("EmbeddingBag")


@pytest.mark.parametrize("name", ["Nope", "Sequential", "ModuleList", "Module", "MSELoss",
                                  "LazyLinear", "functional", "_ConvNd", "not a name"])
def test_fallback_refuses_non_layers(name):
    assert lookup_layer(name) is None


# -- names and imports -----------------------------------------------------------------------------


def test_layer_names_are_torch_layers():
    for name in LAYER_NAMES:
        cls = getattr(torch.nn, name)
        assert issubclass(cls, torch.nn.Module) and cls is not torch.nn.Module, name
        assert not issubclass(cls, torch.nn.modules.loss._Loss), name
        assert not name.startswith("Lazy") and name not in ("Sequential", "ModuleList"), name
    assert len(set(LAYER_NAMES)) == len(LAYER_NAMES)
    assert set(LAYER_NAMES) <= set(dir(torch.nn))


def test_fallback_accepts_every_named_layer():
    assert [name for name in LAYER_NAMES if lookup_layer(name) is None] == []


def test_table_entries_are_named_layers():
    assert set(LAYERS) <= set(LAYER_NAMES)


def test_import_does_not_import_torch():
    code = "import sys, netspec.layers; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(n for n in LAYERS if LAYERS[n].submodules))
def test_submodules_are_the_real_layer_s(name):
    """The submodules a table lists (for the static tree, and init rules by class) are the
    real layer's, with their classes, in its order."""
    for case, stated, shape in SHAPE_CASES:
        if case == name:
            args = validated(name, stated_and_inferred(name, stated, shape))
            module = getattr(torch.nn, name)(**args)
            assert list(LAYERS[name].parts(args)) == \
                [(path, type(m).__name__) for path, m in module.named_modules() if path]
