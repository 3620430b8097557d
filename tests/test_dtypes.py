"""Dtype kinds in shape inference, checked against real torch.

Every function with a dtype rule is run by torch on bool, int and float tensors: where netspec
refuses an operand kind, torch must refuse it too, and where netspec accepts it, netspec's kind
must be the kind of torch's result. Every table layer is run the same way on each of its shape
cases. Whole specs are built and run: a spec netspec refuses fails
in torch when its steps are run by hand, and a spec netspec accepts runs.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from test_layers import SHAPE_CASES, inputs, stated_and_inferred, validated

import netspec
from netspec.errors import SpecError
from netspec.functions import DTYPE_RULES, KIND_MAKERS
from netspec.registry import FUNCTIONS, LAYERS, ShapeRuleError

KINDS = {"bool": torch.tensor([[True, False, True]]),
         "int": torch.tensor([[1, 0, 2]]),
         "float": torch.tensor([[0.5, -1.0, 2.0]])}


def _kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    return "float" if t.dtype.is_floating_point else "int"


# how torch runs each function with a rule, on tensors of one shape; factories take no tensor
TORCH = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "floordiv": lambda a, b: a // b, "remainder": lambda a, b: a % b,
    "pow": lambda a, b: a ** b, "maximum": torch.maximum, "minimum": torch.minimum,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "cat": lambda a, b: torch.cat((a, b)), "stack": lambda a, b: torch.stack((a, b)),
    "where": lambda a, b: torch.where(a > 0, a, b),
    "logical_not": torch.logical_not, "all": torch.all, "any": torch.any,
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp, "log": torch.log,
    "log1p": torch.log1p, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "sin": torch.sin,
    "cos": torch.cos, "reciprocal": torch.reciprocal,
    "flatten": torch.flatten, "reshape": lambda x: x.reshape(-1), "view": lambda x: x.view(-1),
    "transpose": lambda x: x.transpose(0, 1), "permute": lambda x: x.permute(1, 0),
    "select": lambda x: x.select(0, -1), "narrow": lambda x: x.narrow(0, 0, 1),
    "getitem": lambda x: x[-1],
    "unsqueeze": lambda x: x.unsqueeze(0), "squeeze": torch.squeeze,
    "expand": lambda x: x.expand(2, 3), "t": torch.t, "contiguous": lambda x: x.contiguous(),
    "amax": torch.amax, "amin": torch.amin, "max": torch.max, "min": torch.min,
    "sum": torch.sum, "prod": torch.prod, "mean": torch.mean, "neg": lambda x: -x,
    "relu": torch.relu,
}
FACTORIES = {
    "rand": ({}, lambda: torch.rand(2)), "randn": ({}, lambda: torch.randn(2)),
    "zeros": ({}, lambda: torch.zeros(2)), "ones": ({}, lambda: torch.ones(2)),
    "eye": ({}, lambda: torch.eye(2)), "linspace": ({}, lambda: torch.linspace(0, 1, 3)),
    "randint": ({}, lambda: torch.randint(0, 3, (2,))),
    "arange": ({"start": 0, "end": 4, "step": 1}, lambda: torch.arange(0, 4, 1)),
    "full": ({"value": 0.5}, lambda: torch.full((2,), 0.5)),
}


def _operands(name: str, kind: str) -> list[tuple[tuple[str, ...], tuple[torch.Tensor, ...]]]:
    """Operand kind tuples to try: every pair for binary functions, one tensor otherwise."""
    fn = TORCH[name]
    arity = fn.__code__.co_argcount if hasattr(fn, "__code__") else 1
    if name in ("maximum", "minimum"):
        arity = 2
    if arity == 1:
        return [((kind,), (KINDS[kind],))]
    return [((kind, other), (KINDS[kind], KINDS[other])) for other in KINDS]


# functions run as netspec emits them: (static arguments, operand shapes) per case
EMITTED: dict[str, list[tuple[dict, tuple]]] = {
    **{name: [({}, ((2, 4),))] for name in (
        "abs", "ceil", "floor", "sign", "square", "mish", "relu6", "selu", "silu", "gelu",
        "elu", "leaky_relu", "softplus", "hardtanh", "normalize", "norm", "std", "var")},
    "round": [({}, ((2, 4),)), ({"decimals": 1}, ((2, 4),))],
    "clamp": [({"min": 0}, ((2, 4),)), ({"max": 1}, ((2, 4),)), ({"min": 0.5}, ((2, 4),)),
              ({"min": 0, "max": 2.5}, ((2, 4),))],
    "softmax": [({"dim": 1}, ((2, 4),))], "log_softmax": [({"dim": 1}, ((2, 4),))],
    "logsumexp": [({"dim": 1}, ((2, 4),))],
    "matmul": [({}, ((2, 4), (4, 3)))], "mm": [({}, ((2, 4), (4, 3)))],
    "pad": [({"pad": (1, 1)}, ((2, 4),)), ({"pad": (1, 1), "value": 1.5}, ((2, 4),))],
    **{f"{kind}_pool{n}d": [({"kernel_size": 2}, ((1, 2) + (4,) * n,))]
       for kind in ("max", "avg") for n in (1, 2)},
    **{f"adaptive_{kind}_pool{n}d": [({"output_size": 2}, ((1, 2) + (4,) * n,))]
       for kind in ("max", "avg") for n in (1, 2)},
}


def test_every_function_has_a_rule() -> None:
    assert set(DTYPE_RULES) == set(FUNCTIONS)


def test_every_rule_is_checked_against_torch() -> None:
    assert set(DTYPE_RULES) == set(TORCH) | set(FACTORIES) | set(EMITTED)
    assert not set(TORCH) & set(EMITTED)


def _tensor(kind: str, shape: tuple) -> torch.Tensor:
    x = torch.randn(shape) * 3
    return {"bool": x > 0, "int": x.long(), "float": x}[kind]


def _torch_kind(run) -> str | None:
    """The kind of what ``run()`` returns, or None where torch refuses its input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _kind(run())
    except (RuntimeError, NotImplementedError, ValueError):
        return None


@pytest.mark.parametrize("name", sorted(EMITTED))
def test_emitted_function_matches_torch(name: str) -> None:
    """The code netspec emits, run on every kind (every pair for two tensors): torch refuses
    exactly where the rule does, and otherwise gives the rule's kind."""
    fn = FUNCTIONS[name]
    for static, shapes in EMITTED[name]:
        names = [f"t{i}" for i in range(len(shapes))]
        source = fn.emit(*names, **{k: repr(v) for k, v in static.items()})
        values = {p.name: p.default for p in fn.static_params} | static
        for kinds in itertools.product(KINDS, repeat=len(shapes)):
            env = {"torch": torch, "F": F} | {n: _tensor(k, s)
                                              for n, k, s in zip(names, kinds, shapes)}
            try:
                predicted = DTYPE_RULES[name](kinds, **values)
            except ShapeRuleError:
                predicted = None
            assert predicted == _torch_kind(lambda: eval(source, env)), (source, kinds)


@pytest.mark.parametrize("name", sorted(EMITTED))
def test_unknown_operand_of_emitted_function(name: str) -> None:
    fn = FUNCTIONS[name]
    static, shapes = EMITTED[name][0]
    values = {p.name: p.default for p in fn.static_params} | static
    made = DTYPE_RULES[name]((None,) * len(shapes), **values)
    assert (made is not None) == (name in KIND_MAKERS), name


@pytest.mark.parametrize("name,stated,shape", SHAPE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SHAPE_CASES)])
def test_layer_kinds_match_torch(name: str, stated: dict, shape: tuple) -> None:
    """The real module on a bool, an int and a float tensor: torch refuses exactly the kinds
    the layer's rule leaves out, and otherwise gives the kind the rule says."""
    args = validated(name, stated_and_inferred(name, stated, shape))
    takes = LAYERS[name].kinds(args)
    for kind in KINDS:
        module = getattr(torch.nn, name)(**args)
        xs = [_tensor(kind, s) for s in inputs(shape)]      # one per tensor of forward
        if name == "Embedding" and kind == "int":
            xs = [torch.randint(0, args["num_embeddings"], shape)]
        index = LAYERS[name].output_index
        got = _torch_kind(lambda: module(*xs) if index is None else module(*xs)[index])
        assert takes.get(kind) == got, (name, kind)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name", sorted(TORCH))
def test_function_rule_matches_torch(name: str, kind: str) -> None:
    for kinds, tensors in _operands(name, kind):
        if name == "where":
            kinds = ("bool", *kinds)
        try:
            predicted = DTYPE_RULES[name](kinds)
        except ShapeRuleError:
            with pytest.raises((RuntimeError, NotImplementedError)):
                TORCH[name](*tensors)
            continue
        try:
            actual = TORCH[name](*tensors)
        except (RuntimeError, NotImplementedError):
            continue        # netspec may leave refusing to torch; it must never refuse more
        assert predicted == _kind(actual), (name, kinds)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_factory_rule_matches_torch(name: str) -> None:
    static, make = FACTORIES[name]
    assert DTYPE_RULES[name]((), **static) == _kind(make())


@pytest.mark.parametrize("value,kind", [(True, "bool"), (3, "int"), (0.5, "float")])
def test_full_takes_the_kind_of_its_value(value: object, kind: str) -> None:
    assert DTYPE_RULES["full"]((), value=value) == kind == _kind(torch.full((2,), value))


def test_unknown_input_is_never_refused() -> None:
    """The input may hold indices or floats, so no rule refuses an unknown kind; and only the
    rules in KIND_MAKERS (which shape inference does not skip) make a known kind of it."""
    for name, rule in DTYPE_RULES.items():
        if name in TORCH:
            arity = len(_operands(name, "float")[0][0]) + (name == "where")
            made = rule((None,) * arity)
            assert (made is not None) == (name in KIND_MAKERS), name


def _spec(body: str, width: int = 6) -> str:
    return f"block Net {{\n    input x: [N, {width}]\n" + \
        "".join(f"    {line}\n" for line in body.splitlines()) + "}\n"


# (spec body, the same computation in torch on an input x of shape [2, 6])
REFUSED = {
    "x > 0\nLinear(4)": lambda x: torch.nn.Linear(6, 4)(x > 0),
    "x <= 1\nLayerNorm()": lambda x: torch.nn.LayerNorm(6)(x <= 1),
    "y = x > 0\nz = y + y\nz -> Linear(4)": lambda x: torch.nn.Linear(6, 4)((x > 0) + (x > 0)),
    "(x > 0) + 1\nLinear(4)": lambda x: torch.nn.Linear(6, 4)((x > 0) + 1),
    "relu(x != 0)": lambda x: torch.relu(x != 0),
    "-(x > 0)": lambda x: -(x > 0),
    "(x > 0) - (x < 0)": lambda x: (x > 0) - (x < 0),
    "mean(x > 0)": lambda x: torch.mean(x > 0),
    "mean(sum(x > 0, dim=1))": lambda x: torch.mean(torch.sum(x > 0, dim=1)),
    "const r = arange(6)\nr + x > 0\nLinear(4)": lambda x: torch.nn.Linear(6, 4)(x > 0),

    "x * 1.0\nEmbedding(10, 3)": lambda x: torch.nn.Embedding(10, 3)(x * 1.0),
    "unsqueeze(sum(x > 0, dim=1), 1)\nLinear(4)":
        lambda x: torch.nn.Linear(1, 4)(torch.sum(x > 0, dim=1).unsqueeze(1)),
    "reshape(x > 0, -1, 2, 3)\nConv1d(4, 3)":
        lambda x: torch.nn.Conv1d(2, 4, 3)((x > 0).reshape(-1, 2, 3)),
    "where(x > 0, x > 1, x < 2)\nLinear(4)":
        lambda x: torch.nn.Linear(6, 4)(torch.where(x > 0, x > 1, x < 2)),
    "x > 0\nReLU()": lambda x: torch.nn.ReLU()(x > 0),
    "x > 0\nSoftmax(dim=1)": lambda x: torch.nn.Softmax(dim=1)(x > 0),
    "x > 0\nDropout(0.2)": lambda x: torch.nn.Dropout(0.2)(x > 0),
    "x > 0\nFlatten()\nLinear(4)": lambda x: torch.nn.Linear(6, 4)((x > 0).flatten(1)),
    "sum(x > 0, dim=1, keepdim=true)\nMaxPool1d(1)":
        lambda x: torch.nn.MaxPool1d(1)(torch.sum(x > 0, dim=1, keepdim=True)),
    "sum(x > 0, dim=1, keepdim=true)\nReLU()\nLinear(4)":
        lambda x: torch.nn.Linear(1, 4)(torch.relu(torch.sum(x > 0, dim=1, keepdim=True))),
    "softmax(x > 0, dim=1)": lambda x: F.softmax(x > 0, dim=1),
    "abs(x > 0)": lambda x: torch.abs(x > 0),
    "(x > 0) @ transpose(x, 0, 1)": lambda x: (x > 0) @ x.t(),
    "softmax(x, dim=1)\nEmbedding(10, 3)":
        lambda x: torch.nn.Embedding(10, 3)(F.softmax(x, dim=1)),
    "clamp(x > 0, min=0)\nLinear(4)":
        lambda x: torch.nn.Linear(6, 4)(torch.clamp(x > 0, min=0)),
}
ACCEPTED = [
    "(x > 0) * 1.0\nLinear(4)",
    "where(x > 0, x, 0.1 * x)\nLinear(4)",
    "where(x > 0, 1.0, 0)\nLinear(4)",
    "sigmoid(x > 0)\nLinear(4)",
    "(x > 0) / 2\nLinear(4)",
    "const r = arange(6)\nr + x * 0\nLinear(4)",
    "const r = randint(0, 5, 6)\nr + 0 * r\nLinear(4)",      # stored in the float dtype
    "const r = rand(6) > 0.5\nx * r\nLinear(4)",
    "const r = full(6, value=true)\nr + 0 * x\nLinear(4)",
    "y = x > 0\nz = y + y\nz * 1.0",
    "sum(x > 0) + 1",
    "relu(sum(x > 0, dim=1))",
    "x > 0\nFlatten()",
    "x > 0\nIdentity()",
    "(x > 0) + (x < 0)",
    "logical_not(x > 0)",
    "x > 0\nZeroPad1d(1)\nlogical_not(x)",
    "x > 0\nDropout(0.0)\nlogical_not(x)",
    "x > 0\nSigmoid()\nLinear(4)",
    "sum(x > 0, dim=1, keepdim=true)\nAvgPool1d(1)\nEmbedding(10, 3)",
    "square(x > 0)\nReLU()",
    "clamp(x > 0, min=0.5)\nLinear(4)",
    "logsumexp(x > 0, dim=1)",
    "sign(x > 0)\nlogical_not(x)",
    "sum(x > 0, dim=1, keepdim=true) @ sum(x > 0, dim=0, keepdim=true)",
]


@pytest.mark.parametrize("body", list(REFUSED))
def test_refused_spec_fails_in_torch(body: str) -> None:
    with pytest.raises(SpecError) as info:
        netspec.build(_spec(body))
    assert all(d.kind == "type error" for d in info.value.diagnostics)
    with pytest.raises((RuntimeError, NotImplementedError)):
        REFUSED[body](torch.randn(2, 6))


@pytest.mark.parametrize("body", ACCEPTED)
def test_accepted_spec_runs(body: str) -> None:
    model = netspec.build(_spec(body))
    model(torch.randn(2, 6))


def test_embedding_takes_integer_indices() -> None:
    model = netspec.build(_spec("sum(x > 0, dim=1, keepdim=true)\nEmbedding(10, 3)"))
    assert tuple(model(torch.randn(2, 6)).shape) == (2, 1, 3)


def test_embedding_of_the_input_is_unchanged() -> None:
    model = netspec.build("block Net {\n    input x: [N, 5]\n    Embedding(10, 3)\n}\n")
    assert tuple(model(torch.randint(0, 10, (2, 5))).shape) == (2, 5, 3)


def test_error_is_located_at_the_layer_with_its_origin() -> None:
    (d,) = netspec.check(_spec("mask = x > 0\nmask -> Linear(4)"))
    assert (d.span.line, d.span.column) == (4, 13)
    assert d.notes == ("the step on line 3 gives a bool tensor",)
    assert "* 1.0" in d.hint


def test_kind_flows_through_a_nested_block() -> None:
    text = ("block Inner {\n    input x: [N, 6]\n    x > 0\n}\n"
            "block Net {\n    input x: [N, 6]\n    Inner()\n    Linear(4)\n}\n")
    (d,) = netspec.check(text, block="Net")
    assert d.message.startswith("Linear needs a floating-point input")
    with pytest.raises(RuntimeError):
        torch.nn.Linear(6, 4)(torch.randn(2, 6) > 0)


def test_functional_matches_torch_for_relu_of_int() -> None:
    """relu is refused for bool only: torch takes an int tensor."""
    assert F.relu(KINDS["int"]).dtype == torch.int64
    netspec.build(_spec("relu(sum(x > 0, dim=1))"))(torch.randn(2, 6))


def test_a_python_layer_decides_its_own_dtypes(tmp_path, monkeypatch) -> None:
    """A user's layer with parameters may take indices: netspec leaves it to its code."""
    (tmp_path / "lookup.py").write_text(
        "import torch\n\n\nclass Lookup(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.table = torch.nn.Parameter(torch.randn(10, 3))\n\n"
        "    def forward(self, x):\n        return self.table[x]\n")
    spec = tmp_path / "net.net"
    spec.write_text('import python "lookup"\n\nblock Net {\n    input x: [N, 6]\n'
                    '    sum(x > 0, dim=1)\n    Lookup()\n}\n')
    monkeypatch.chdir(tmp_path)
    model = netspec.build(spec)
    assert tuple(model(torch.randn(2, 6)).shape) == (2, 3)
