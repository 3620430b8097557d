"""Init policies: which rule initialises each parameter, and materialising a model once.

A rule selects parameters by layer type and parameter name (``Linear.weight``, ``Conv2d``), by
a glob over the parameter path relative to the block that declares it (``"features.*.weight"``),
or both (``Linear.weight in "head.*"``). Rules apply in order and the last matching rule wins:
file-level rules first, then each enclosing block's from the outermost to the innermost, so
the most specific block has the last word. A rule that matches nothing is an error.

A model is built on the ``meta`` device and then materialised: every tensor is allocated
on its device and initialised exactly once, by its rule or by its layer's own default
(``reset_parameters``), or, for ``const``/``param`` tensors, by their spec expression.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Callable, Literal, NamedTuple

from pydantic import Field

from netspec.errors import Diagnostic, SpecError, Span, did_you_mean
from netspec.gc_pause import gc_paused
from netspec.ir import has_init_rules
from netspec.progress import progress
from netspec.registry import Param

_NONLINEARITY = Literal["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                        "conv_transpose2d", "conv_transpose3d", "sigmoid", "tanh", "relu",
                        "leaky_relu", "selu"]
_MODE = Literal["fan_in", "fan_out"]
_STD = Annotated[float, Field(ge=0)]                 # torch refuses a negative std
_FRACTION = Annotated[float, Field(ge=0, le=1)]


@dataclass(frozen=True)
class InitFn:
    """A ``torch.nn.init`` function as spelt in a spec: ``kaiming_normal(mode="fan_out")``."""

    name: str
    params: tuple[Param, ...]
    generator: bool = True        # takes generator=
    # what torch would refuse in the arguments together, as (message, hint), or None
    check: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None


def _bounds_in_order(name: str) -> Callable[[dict[str, Any]], tuple[str, str] | None]:
    """``a`` at most ``b``, for an initialiser that draws from [a, b]."""
    def check(kwargs: dict[str, Any]) -> tuple[str, str] | None:
        if kwargs["a"] > kwargs["b"]:
            return (f"{name}() draws from [a, b], but a={kwargs['a']:g} is above "
                    f"b={kwargs['b']:g}", "swap them")
        return None
    return check


INITS: dict[str, InitFn] = {f.name: f for f in (
    InitFn("uniform", (Param("a", float, 0.0), Param("b", float, 1.0)),
           check=_bounds_in_order("uniform")),
    InitFn("normal", (Param("mean", float, 0.0), Param("std", _STD, 1.0))),
    InitFn("constant", (Param("val", float),), generator=False),
    InitFn("ones", (), generator=False),
    InitFn("zeros", (), generator=False),
    InitFn("eye", (), generator=False),
    InitFn("dirac", (Param("groups", Annotated[int, Field(ge=1)], 1),), generator=False),
    InitFn("xavier_uniform", (Param("gain", float, 1.0),)),
    InitFn("xavier_normal", (Param("gain", float, 1.0),)),
    InitFn("kaiming_uniform", (Param("a", float, 0.0), Param("mode", _MODE, "fan_in"),
                               Param("nonlinearity", _NONLINEARITY, "leaky_relu"))),
    InitFn("kaiming_normal", (Param("a", float, 0.0), Param("mode", _MODE, "fan_in"),
                              Param("nonlinearity", _NONLINEARITY, "leaky_relu"))),
    InitFn("trunc_normal", (Param("mean", float, 0.0), Param("std", _STD, 1.0),
                            Param("a", float, -2.0), Param("b", float, 2.0)),
           check=_bounds_in_order("trunc_normal")),
    InitFn("orthogonal", (Param("gain", float, 1.0),)),
    InitFn("sparse", (Param("sparsity", _FRACTION), Param("std", _STD, 0.01))),
    InitFn("default", (), generator=False),
)}


@dataclass
class InitRuleIR:
    """One elaborated rule: a selector and the steps that produce the tensor's values."""

    layer_type: str | None            # "Linear"
    param: str | None                 # "weight"
    pattern: str | None               # glob over the relative parameter path
    steps: list[tuple]                # ("init", name, kwargs) | ("expr", Fragment)
    text: str                         # the rule as written, for summaries
    span: Span
    matched: int = field(default=0, compare=False)

    @property
    def starts_with_default(self) -> bool:
        return bool(self.steps) and self.steps[0][:2] == ("init", "default")

    def matches(self, relative_path: str, owner_type: str, name: str) -> bool:
        if self.layer_type is not None and owner_type != self.layer_type:
            return False
        if self.param is not None and name != self.param:
            return False
        return self.pattern is None or fnmatch.fnmatchcase(relative_path, self.pattern)


@dataclass(slots=True)
class Assignment:
    """The rule chosen for one parameter (``rule`` None: the layer's own default init)."""

    path: str
    layer: str
    rule: InitRuleIR | None


class ModuleSite(NamedTuple):
    """One module as ``named_modules()`` of the model yields it, with its own parameters.

    Rules are matched against these records, so a model built with torch and the tensor
    tables of an IR (``netspec.tensors``) are planned by the same code. A named tuple: one is
    made for every module of a model, and a frozen dataclass costs four times as much to make.
    """

    path: str
    layer: str                              # the module's class name: "Linear", a block's name
    ir: Any                                 # its ModuleIR; None for a ParameterList and such
    params: tuple[tuple[str, Any], ...]     # (name, tensor) in registration order


def init_plan(model) -> dict[int, Assignment]:
    """For every parameter of a built model (by ``id``): the rule that initialises it."""
    sites = [ModuleSite(path, type(module).__name__, module.__dict__.get("_netspec_ir"),
                        tuple(own_tensors(module._parameters)))
             for path, module in model.named_modules()]
    return plan_sites(sites, getattr(getattr(model, "_netspec", None), "sources", None))


def plan_sites(sites: list[ModuleSite], sources: Any = None) -> dict[int, Assignment]:
    """For every parameter (by ``id``) of the modules ``sites``: the rule that initialises it.

    ``sites`` come in ``named_modules()`` order: a parameter belongs to the first module that
    holds it (a shared module or a tie reaches it again later), and rules apply outer first.
    """
    scopes = []  # (prefix, rules) in the order rules are applied: outer blocks first
    for site in sites:
        rules = getattr(site.ir, "init_rules", None) if site.ir is not None else None
        if rules:
            scopes.append((site.path, rules))
            for rule in rules:
                rule.matched = 0
    plan: dict[int, Assignment] = {}
    owners: dict[int, tuple[str, str, str]] = {}     # id -> (module path, class name, name)
    for site in sites:
        for name, p in site.params:
            owners.setdefault(id(p), (site.path, site.layer, name))
    for pid, (mpath, layer, name) in owners.items():
        full = f"{mpath}.{name}" if mpath else name
        chosen = None
        for prefix, rules in scopes:
            if prefix and not (full.startswith(prefix + ".")):
                continue
            relative = full[len(prefix) + 1:] if prefix else full
            for rule in rules:
                if rule.matches(relative, layer, name):
                    rule.matched += 1
                    chosen = rule
        plan[pid] = Assignment(full, layer, chosen)
    unused = [rule for _, rules in scopes for rule in rules if rule.matched == 0]
    if unused:
        raise SpecError([Diagnostic("init error", "this init rule matches no parameter",
                                    r.span, hint=_unused_hint(r, owners)) for r in unused],
                        sources)
    return plan


def _unused_hint(rule: InitRuleIR, owners: dict[int, tuple[str, str, str]]) -> str:
    types = sorted({f"{layer}.{n}" for _, layer, n in owners.values()})
    listed = "parameters here: " + ", ".join(types[:12]) + (" ..." if len(types) > 12 else "")
    if rule.layer_type is not None and rule.param is not None:      # Linear.weigth
        close = did_you_mean(f"{rule.layer_type}.{rule.param}", types)
        if close is not None:
            return f"{close} ({listed})"
    return listed


@gc_paused
def materialize(model, device: Any = None, seed: int | None = None):
    """Allocate every tensor of a meta-device ``model`` on ``device`` and initialise it once."""
    import torch

    device = torch.device(device if device is not None else "cpu")
    root = model.__dict__.get("_netspec_ir")
    # without rules, every tensor takes its layer's default and no rule can match nothing
    rules = root is None or has_init_rules(root)
    if device.type == "meta":
        if rules:
            init_plan(model)   # rules that match nothing are errors on any device
        return model
    size = _check_size(model)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            _to_empty(model, device)
        except RuntimeError as exc:    # the allocator's refusal: not enough memory
            from netspec.errors import LimitError

            raise LimitError([Diagnostic("limit error", f"cannot allocate the model on "
                                         f"{device}: {str(exc).splitlines()[0]}",
                                         hint="build with device=\"meta\" to inspect it "
                                         "without memory")]) from None
        plan = init_plan(model) if rules else {}   # after to_empty: new parameters
        modules = list(_unique_modules(model))     # listed before any module is initialised
        with torch.no_grad(), progress("initialising", size, _own_bytes) as advance:
            for module, how in modules:
                if how == "whole":
                    _init_from_constructor(module, device, recurse=True)
                _init_module(module, plan, device, by_default=how == "own")
                advance(module)
    return model


def _to_empty(model, device) -> None:
    """``model.to_empty(device=device)``, several times faster.

    ``to_empty`` calls ``torch.empty_like`` on each meta tensor, whose meta kernel is written
    in Python (about 70 µs a tensor). A dense tensor's new storage needs only its sizes,
    strides and dtype, which ``empty_strided`` takes directly (a few µs).

    ``to_empty`` runs ``Module._apply``, which for a meta tensor moving to another device
    comes down to a new ``Parameter`` for each parameter and a new tensor for each buffer; its
    general case (``.data`` swaps, gradients, ``swap_tensors``) costs three times as much, a
    module at a time. So that is done here directly, with a parameter held by several
    modules (a tie, a shared module) made once. A module whose class has its own ``_apply``
    (an RNN re-flattens its weights in it) runs that, as does everything when torch is set to
    swap tensors on conversion; ``_apply`` makes a parameter anew for each module holding it,
    so the spec's ties are then made again.
    """
    import torch

    def empty(t):
        if t.is_contiguous():
            return torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=device)
        return torch.empty_like(t, device=device)

    if torch.__future__.get_swap_module_params_on_conversion():
        model._apply(empty)
        _reapply_ties(model)
        return
    plain = torch.nn.Module._apply
    parameter = torch.nn.Parameter
    made: dict[int, Any] = {}              # id of a meta parameter -> its new parameter
    applied = False
    for module in model.modules():
        if type(module)._apply is not plain:
            module._apply(empty, recurse=False)
            applied = True
            continue
        params = module._parameters
        for name, p in params.items():     # replacing values, not keys: iteration is safe
            if p is not None:
                new = made.get(id(p))
                if new is None:
                    new = made[id(p)] = parameter(empty(p), p.requires_grad)
                params[name] = new
        buffers = module._buffers
        for name, b in buffers.items():
            if b is not None:
                buffers[name] = empty(b)
    if applied:
        _reapply_ties(model)


def _check_size(model) -> int:
    """Refuse, before allocating, a model larger than ``Limits.max_elements``; the bytes its
    tensors will take."""
    from netspec.errors import LimitError
    from netspec.limits import current

    # each tensor once, read from the modules' dicts: torch's generators cost more than this
    tensors = {id(t): t for module in model.modules()
               for own in (module._parameters, module._buffers)
               for t in own.values() if t is not None}
    total = sum(t.numel() for t in tensors.values())
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    limit = current().max_elements
    if total > limit:
        raise LimitError([Diagnostic("limit error", f"this model has {total:,} parameter and "
                                     f"buffer values ({size / 1e9:,.1f} GB); the limit is "
                                     f"{limit:,}", hint="raise Limits.max_elements, or build "
                                     "with device=\"meta\" to inspect it without memory")])
    return size


def own_tensors(tensors: dict[str, Any]) -> list[tuple[str, Any]]:
    """A module's own ``_parameters`` or ``_buffers`` as ``named_parameters(recurse=False)``
    gives them: unset ones left out, each tensor once. Read from the dict directly: torch's
    generators cost about 5 µs a call, several calls a module."""
    if not tensors:          # activations and containers hold no tensors of their own
        return []
    seen: set[int] = set()
    out = []
    for name, t in tensors.items():
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            out.append((name, t))
    return out


def _own_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for tensors in (module._parameters, module._buffers)
               for _, t in own_tensors(tensors))


def _unique_modules(model):
    """Every module once, with how it is initialised, in the order torch's constructors
    initialise them: a block before its children, as netspec builds them, but a layer's own
    submodules before the layer, whose constructor builds them and then resets its own tensors
    (MultiheadAttention: ``out_proj``, then ``_reset_parameters``, which also zeroes
    ``out_proj.bias``).

    ``how`` is "own" (defaults, then rules), or, for a layer whose reset re-initialises its
    submodules (``Transformer``: one encoder layer deep-copied, then xavier for every matrix),
    "whole" for the layer, constructed for real before its submodules, which then take only
    their rules ("rules")."""
    seen: set[int] = set()

    def visit(module, in_layer: bool, in_whole: bool):
        if id(module) in seen:
            return
        seen.add(id(module))
        ir = module.__dict__.get("_netspec_ir")
        is_layer = ir is not None and ir.kind == "layer"
        whole = is_layer and not in_whole and _resets_its_submodules(module)
        if whole:
            yield module, "whole"
        in_layer = in_layer or is_layer
        if not in_layer:
            yield module, "own"
        for child in module._modules.values():
            if child is not None:
                yield from visit(child, in_layer, in_whole or whole)
        if in_layer and not whole:
            yield module, "rules" if in_whole else "own"

    yield from visit(model, False, False)


def _resets_its_submodules(module) -> bool:
    """A layer with submodules and no tensors of its own whose reset method can only concern
    its submodules (``Transformer._reset_parameters``)."""
    return bool(module._modules) and not own_tensors(module._parameters) and \
        not own_tensors(module._buffers) and any(
            callable(getattr(type(module), name, None))
            for name in ("reset_parameters", "_reset_parameters"))


def _init_module(module, plan: dict[int, Assignment], device, by_default: bool = True) -> None:
    """A module's own tensors: its defaults (``by_default``; not where a constructor made them
    already), then its rules."""
    own = own_tensors(module._parameters)
    buffers = own_tensors(module._buffers)
    if not own and not buffers:
        return
    needs_default = by_default and (bool(buffers) or any(
        plan.get(id(p)) is None or plan[id(p)].rule is None
        or plan[id(p)].rule.starts_with_default for _, p in own))
    if needs_default:
        makers = getattr(module, "_netspec_makers", None)
        defaults = _defaults().get(type(module).__name__)
        if makers is not None:
            for name, make in makers.items():
                target = module._parameters.get(name)
                if target is None:
                    target = module._buffers[name]
                elif _ruled(plan, target):
                    continue
                target.copy_(make(device))
        elif defaults is not None and all(name in defaults for name, _ in own):
            for name, p in own:          # per parameter: a ruled one is initialised once
                if not _ruled(plan, p):
                    defaults[name](module, p)
            if buffers:
                module.reset_running_stats()
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()
        elif hasattr(module, "_reset_parameters"):
            module._reset_parameters()
        else:
            _init_from_constructor(module, device)
    for _, p in own:
        assignment = plan.get(id(p))
        if assignment is not None and assignment.rule is not None:
            apply_rule(assignment.rule, p, assignment.path)


def _init_from_constructor(module, device, recurse: bool = False) -> None:
    """A layer with no reset method (a user's own), or one whose constructor initialises its
    submodules too (``recurse``): its constructor is its initialisation."""
    import torch

    ir = getattr(module, "_netspec_ir", None)
    if ir is None or ir.kind != "layer" or ir.resolved_args is None:
        return
    cls = ir.layer.cls or getattr(torch.nn, ir.cls_name)
    with torch.device(device), warnings.catch_warnings():
        warnings.simplefilter("ignore")     # what it warns of, the build already did
        fresh = cls(**ir.resolved_args)
    made = dict(fresh.named_parameters(recurse=recurse))
    made.update(fresh.named_buffers(recurse=recurse))
    for name, tensor in list(module.named_parameters(recurse=recurse)) + \
            list(module.named_buffers(recurse=recurse)):
        if name in made:
            tensor.copy_(made[name])


def _ruled(plan: dict[int, Assignment], tensor) -> bool:
    """Whether a rule (other than one starting with ``default()``) initialises ``tensor``."""
    assignment = plan.get(id(tensor))
    return assignment is not None and assignment.rule is not None and \
        not assignment.rule.starts_with_default


@lru_cache(maxsize=1)
def _defaults() -> dict[str, dict[str, Any]]:
    """PyTorch's own initialisation, per parameter, for the common layers.

    ``reset_parameters`` initialises all of a layer's parameters at once; doing it per
    parameter lets a layer whose weight has a rule keep its bias default without the weight
    being initialised twice.
    """
    import torch

    init = torch.nn.init

    def kaiming(module, t):
        init.kaiming_uniform_(t, a=math.sqrt(5))

    def fan_in_bias(module, t):
        fan_in, _ = init._calculate_fan_in_and_fan_out(module.weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(t, -bound, bound)

    def ones(module, t):
        init.ones_(t)

    def zeros(module, t):
        init.zeros_(t)

    def embedding(module, t):
        init.normal_(t)
        if module.padding_idx is not None:
            t[module.padding_idx].fill_(0)

    affine = {"weight": kaiming, "bias": fan_in_bias}
    norm = {"weight": ones, "bias": zeros}
    table: dict[str, dict[str, Any]] = {"Linear": affine, "Embedding": {"weight": embedding},
                                        "LayerNorm": norm, "GroupNorm": norm, "RMSNorm": norm}
    for n in (1, 2, 3):
        table[f"Conv{n}d"] = table[f"ConvTranspose{n}d"] = affine
        table[f"BatchNorm{n}d"] = table[f"InstanceNorm{n}d"] = norm
    return table


def apply_rule(rule: InitRuleIR, tensor, path: str) -> None:
    """Run a rule's steps on ``tensor`` in place (a leading ``default()`` already ran)."""
    import torch

    steps = rule.steps[1:] if rule.starts_with_default else rule.steps
    try:
        for step in steps:
            if step[0] == "init":
                _, name, kwargs = step
                getattr(torch.nn.init, name + "_")(tensor, **kwargs)
            else:
                tensor.copy_(_compiled(step[1])(tensor))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise SpecError([Diagnostic("init error", f"cannot initialise {path} "
                                    f"{list(tensor.shape)} this way: {exc}", rule.span)]) from None


_functions: dict[int, Any] = {}


def _compiled(fragment) -> Any:
    """The Python function of an init expression such as ``x * (abs(x) >= 5)``."""
    key = id(fragment)
    if key not in _functions:
        import torch

        from netspec.codegen import expression_function
        from netspec.ir import ModuleIR

        namespace: dict[str, Any] = {"torch": torch, "F": torch.nn.functional}
        exec(expression_function(fragment, ModuleIR("block", "init", None)), namespace)
        _functions[key] = (fragment, namespace["apply"])   # keeps the fragment alive
    return _functions[key][1]


def _reapply_ties(model) -> None:
    for module, _ in _unique_modules(model):
        ir = getattr(module, "_netspec_ir", None)
        for tie in getattr(ir, "ties", None) or ():
            owner = module.get_submodule(".".join(tie.target[:-1]))
            setattr(owner, tie.target[-1], module.get_parameter(".".join(tie.source)))


def describe_plan(model) -> list[tuple[str, str, str]]:
    """(parameter path, layer, rule text or "default") for ``summary --init``."""
    return describe(init_plan(model))


def describe(plan: dict[int, Assignment]) -> list[tuple[str, str, str]]:
    """(parameter path, layer, rule text or "default") per entry of a plan, in its order."""
    return [(a.path, a.layer, a.rule.text if a.rule is not None else "default")
            for a in plan.values()]
