"""Binding call arguments to a parameter list, and validating their values with pydantic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Sequence

from netspec.dims import Sym
from netspec.errors import Diagnostic, Span, did_you_mean
from netspec.registry import Param


@dataclass(frozen=True)
class Arg:
    """An evaluated argument and where it was written."""

    value: Any
    span: Span


def bind(params: Sequence[Param], positional: Sequence[Param], args: Sequence[Arg],
         keywords: Sequence[tuple[str, Arg, Span]], *, callee: str, call_span: Span,
         diagnostics: list[Diagnostic]) -> dict[str, Arg]:
    """Match positional and keyword arguments to ``params``; problems go to ``diagnostics``.

    ``positional`` is the subset of ``params`` that may be given by position (in order); a
    parameter named ``*name`` takes every remaining positional argument as a tuple.
    """
    bound: dict[str, Arg] = {}
    taken = 0                                   # positional parameters filled so far
    for i, arg in enumerate(args):
        if taken == len(positional):
            diagnostics.append(Diagnostic(
                "argument error", f"{callee} takes {len(positional)} positional argument"
                f"{'' if len(positional) == 1 else 's'}, but {len(args)} were given", arg.span,
                hint=_positional_hint(positional, params)))
            break
        slot = positional[taken]
        if slot.name.startswith("*"):
            rest = args[i:]
            bound[slot.name[1:]] = Arg(tuple(a.value for a in rest), _join(rest))
            break
        taken += 1
        bound[slot.name] = arg
    for slot in positional[taken:]:
        if slot.name.startswith("*") and slot.name[1:] not in bound:
            bound[slot.name[1:]] = Arg((), call_span)      # a variadic given nothing
    unknown = False
    names = [p.name.lstrip("*") for p in params] if keywords else []
    for name, arg, name_span in keywords:
        if name not in names or name.startswith("*"):
            unknown = True
            hint = did_you_mean(name, [n for n in names if n not in bound])
            diagnostics.append(Diagnostic("argument error",
                                          f"{callee} has no argument '{name}'", name_span,
                                          hint=hint or _keywords_hint(names)))
        elif name in bound:
            diagnostics.append(Diagnostic("argument error",
                                          f"{callee} got argument '{name}' twice", name_span))
        else:
            bound[name] = arg
    for p in positional if not unknown else ():   # a misspelt keyword explains a missing one
        key = p.name.lstrip("*")
        if key not in bound and p.required and not p.name.startswith("*"):
            # a function's callee is "softmax()": its tensors come first, then what it lacks
            hint = (f"write {callee[:-2]}(..., {key}=...)" if callee.endswith("()") else
                    f"write {callee}({_signature(positional)})")
            diagnostics.append(Diagnostic("argument error",
                                          f"{callee} is missing its argument '{key}'", call_span,
                                          hint=hint))
    return bound


def _join(args: Sequence[Arg]) -> Span:
    first, last = args[0].span, args[-1].span
    return Span(first.file, first.line, first.column, last.end_line, last.end_column)


def _signature(params: Sequence[Param]) -> str:
    return ", ".join(p.name if p.required else f"{p.name}={_show(p.default)}" for p in params)


def _positional_hint(positional: Sequence[Param], params: Sequence[Param]) -> str:
    hint = f"its positional arguments are ({_signature(positional)})" if positional else \
        "pass arguments by name"
    named = [p.name for p in params if p.keyword_only]
    if named:
        hint += f"; {', '.join(named)} {'is' if len(named) == 1 else 'are'} keyword-only: " \
                f"write {named[0]}=..."
    return hint


def _keywords_hint(names: Sequence[str]) -> str:
    return "its arguments are: " + ", ".join(names) if names else "it takes no arguments"


def spec_literal(value: Any) -> str:
    """A compile-time value as it would be written in a spec: true, none, "text", [3, 3]."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "none"
    if value is ...:
        return "..."
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(spec_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {spec_literal(v)}" for k, v in value.items()) + "}"
    return str(value)


_show = spec_literal


@lru_cache(maxsize=None)
def _adapter(annotation: Any):
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)


def _valid(annotation: Any, value: Any) -> Any:
    """``value`` validated strictly against ``annotation``; raises ValidationError."""
    if type(value) in _SCALARS:         # memoised: a spec repeats the same few sizes
        return _valid_scalar(annotation, type(value), value)
    return _adapter(annotation).validate_python(value, strict=True)


_SCALARS = frozenset({int, float, bool, str, type(None)})


@lru_cache(maxsize=4096)
def _valid_scalar(annotation: Any, kind: type, value: Any) -> Any:
    # ``kind`` keeps 1, 1.0 and True apart, which compare (and hash) equal
    return _adapter(annotation).validate_python(value, strict=True)


def has_symbols(value: Any) -> bool:
    if isinstance(value, Sym):
        return True
    if isinstance(value, (tuple, list)):
        return any(has_symbols(v) for v in value)
    return False


def validate(params: Sequence[Param], bound: dict[str, Arg], *, callee: str,
             diagnostics: list[Diagnostic]) -> dict[str, Any]:
    """Check each value against its parameter's type; return every argument, defaults applied.

    Values that still hold unbound dim symbols are passed through unchecked. Valid arguments
    that are all plain scalars are memoised: a deep model repeats a few configurations.
    """
    key = memo_key(params, ((k, a.value) for k, a in bound.items()))
    if key is not None and key in _VALIDATED:
        return dict(_VALIDATED[key][1])
    return _validate_and_keep(key, params, bound, callee=callee, diagnostics=diagnostics)


def validate_values(params: Sequence[Param], values: dict[str, Any], spans: dict[str, Span],
                    span: Span, *, callee: str, diagnostics: list[Diagnostic]) -> dict[str, Any]:
    """``validate`` for evaluated values with their spans (``span`` for those without one)."""
    key = memo_key(params, values.items())
    if key is not None and key in _VALIDATED:      # the usual case: no Args to build
        return dict(_VALIDATED[key][1])
    bound = {k: Arg(v, spans.get(k, span)) for k, v in values.items()}
    return _validate_and_keep(key, params, bound, callee=callee, diagnostics=diagnostics)


def _validate_and_keep(key: tuple | None, params: Sequence[Param], bound: dict[str, Arg], *,
                       callee: str, diagnostics: list[Diagnostic]) -> dict[str, Any]:
    """``_validate``, keeping valid arguments under their memo key (if they have one)."""
    errors_before = len(diagnostics)
    values = _validate(params, bound, callee=callee, diagnostics=diagnostics)
    if key is not None and len(diagnostics) == errors_before:
        if len(_VALIDATED) >= _MEMO_SIZE:
            _VALIDATED.clear()
        _VALIDATED[key] = (params, dict(values))
    return values


# (id of the parameter list, then name, type, value of each argument) -> (the parameter list,
# the valid arguments); an entry keeps its parameter list alive, so its id is not reused
_VALIDATED: dict[tuple, tuple[Sequence[Param], dict[str, Any]]] = {}
_MEMO_SIZE = 4096


def memo_key(params: Sequence[Param], values: Iterable[tuple[str, Any]]) -> tuple | None:
    """The memo key of a call whose values are all plain scalars (the types keep 1, 1.0 and
    True apart, which compare equal); None otherwise."""
    key: list[Any] = [id(params)]
    for name, value in values:
        if value.__class__ not in _SCALARS:
            return None
        key += (name, value.__class__, value)
    return tuple(key)


def _validate(params: Sequence[Param], bound: dict[str, Arg], *, callee: str,
              diagnostics: list[Diagnostic]) -> dict[str, Any]:
    """``validate`` without the memo."""
    values: dict[str, Any] = {}
    for p in params:
        key = p.name.lstrip("*")
        if key not in bound:
            if not p.required:
                values[key] = p.default
            continue
        arg = bound[key]
        if has_symbols(arg.value) or p.type is Any:
            values[key] = arg.value
            continue
        try:
            values[key] = _valid(p.type, arg.value)
        except Exception as exc:     # pydantic's ValidationError, imported only when needed
            if not _is_validation_error(exc):
                raise
            diagnostics.append(Diagnostic("argument error",
                                          f"{callee}: {key}={_show(arg.value)} is not valid: "
                                          f"{_reason(exc)}", arg.span,
                                          hint=f"{key} takes {describe_type(p.type)}"))
    return values


def _is_validation_error(exc: Exception) -> bool:
    from pydantic import ValidationError

    return isinstance(exc, ValidationError)


def _reason(exc) -> str:
    errors = exc.errors()
    best = next((e for e in errors if e["type"] not in ("int_type", "tuple_type", "literal_error",
                                                         "bool_type", "float_type", "string_type")),
                errors[0])
    return best["msg"][0].lower() + best["msg"][1:]


def describe_type(annotation: Any) -> str:
    """A readable type: "an int > 0 or a list of 2 ints > 0"."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = []
        metas = list(args[1:])
        while metas:
            meta = metas.pop(0)
            metas.extend(getattr(meta, "metadata", None) or ())   # pydantic's FieldInfo
            for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
                bound = getattr(meta, attr, None)
                if bound is not None and not callable(bound):
                    bounds.append(f"{sym} {bound}")
        base = describe_type(args[0])
        return f"{base} {' and '.join(dict.fromkeys(bounds))}".strip()
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(dict.fromkeys(describe_type(a) for a in args))
    if origin is typing.Literal:
        return " or ".join(_show(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(describe_type(args[0]))}"
        kinds = list(dict.fromkeys(describe_type(a) for a in args))
        if len(kinds) == 1:
            return f"a list of {len(args)} {_plural(kinds[0])}"
        return "a list [" + ", ".join(describe_type(a) for a in args) + "]"
    names = {int: "an int", float: "a number", bool: "true or false", str: "a string",
             type(None): "none"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            word, _, rest = text[len(article):].partition(" ")
            return f"{word}s {rest}".strip()
    return text
