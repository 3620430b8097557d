"""Symbolic dimensions: a dim is an ``int`` or a ``Sym`` (an integer polynomial over symbols).

Shape rules are written once with ordinary arithmetic and work for both: ``(h + 2 * p - k) // s + 1``
gives an ``int`` for concrete sizes and a ``Sym`` such as ``(H + 1)//2`` for symbolic ones.
Products of symbols stay exact (``N * 400``), which is all flattening and reshaping need; anything
that is not a polynomial (a floor division that does not divide evenly) becomes an opaque atom.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Union

Dim = Union[int, "Sym"]
Shape = tuple  # tuple[Dim, ...]

_INSTANCE = re.compile(r"@\d+")  # symbols are unique per block instance: "C@12" shows as "C"

# A monomial is a sorted tuple of atom names; () is the constant term.
_Terms = dict[tuple[str, ...], int]


class Sym:
    """A symbolic dimension: ``sum(coeff * product(atoms))`` over a canonical set of terms."""

    __slots__ = ("terms", "_hash", "_text")

    def __init__(self, terms: _Terms):
        self.terms = {m: c for m, c in terms.items() if c != 0}
        self._hash: int | None = None      # computed when first hashed
        self._text: str | None = None      # str(self), computed once: shapes print often

    @staticmethod
    def _of(terms: _Terms) -> "Sym":
        """A Sym of terms already free of zero coefficients (no copy)."""
        sym = Sym.__new__(Sym)
        sym.terms, sym._hash, sym._text = terms, None, None
        return sym

    @staticmethod
    def symbol(name: str) -> "Sym":
        return Sym({(name,): 1})

    def atom(self) -> str | None:
        """The name of this dim when it is one bare symbol (``N``); None for an expression of
        symbols (``2*N``, ``N*C``)."""
        if len(self.terms) != 1:
            return None
        (mono, coeff), = self.terms.items()
        return mono[0] if coeff == 1 and len(mono) == 1 else None

    # -- arithmetic -----------------------------------------------------------------------------
    def __add__(self, other: Dim) -> Dim:
        terms = dict(self.terms)
        if other.__class__ is int:          # a constant: only the constant term changes
            constant = terms.get((), 0) + other
            if constant:
                terms[()] = constant
            else:
                terms.pop((), None)
            return Sym._of(terms)            # a symbolic term remains: it is still a Sym
        for m, c in _as_terms(other).items():
            terms[m] = terms.get(m, 0) + c
        return _normal(terms)

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return _normal({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Dim) -> Dim:
        return self + (-other)

    def __rsub__(self, other: Dim) -> Dim:
        return (-self) + other

    def __mul__(self, other: Dim) -> Dim:
        if other.__class__ is int:          # a constant scales every coefficient
            return Sym._of({m: c * other for m, c in self.terms.items()}) if other else 0
        terms: _Terms = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in _as_terms(other).items():
                m = tuple(sorted(m1 + m2))
                terms[m] = terms.get(m, 0) + c1 * c2
        return _normal(terms)

    __rmul__ = __mul__

    def __floordiv__(self, other: Dim) -> Dim:
        if isinstance(other, int):
            if other == 1:
                return self
            if other != 0:
                return _floordiv_int(self.terms, other)
        elif isinstance(other, Sym) and other == self:
            return 1
        elif isinstance(other, Sym) and len(other.terms) == 1:
            # N*400 // N -> 400: divide every term by a single monomial when it divides evenly
            (dm, dc), = other.terms.items()
            out: _Terms = {}
            for m, c in self.terms.items():
                rest = list(m)
                for a in dm:
                    if a not in rest:
                        break
                    rest.remove(a)
                else:
                    if c % dc == 0:
                        out[tuple(rest)] = c // dc
                        continue
                break
            else:
                return _normal(out)
        return Sym.deferred("//", self, other)

    def __rfloordiv__(self, other: Dim) -> Dim:
        return Sym.deferred("//", other, self)

    def __mod__(self, other: Dim) -> Dim:
        if isinstance(other, int) and other != 0:
            # (c*k + r) % c == r % c: every coefficient counts only up to a multiple of c
            rest = {m: c % other for m, c in self.terms.items() if c % other}
            if not rest or set(rest) == {()}:
                return rest.get((), 0) % other
            if rest != self.terms:
                return Sym._of(rest) % other
        return Sym.deferred("%", self, other)

    def __rmod__(self, other: Dim) -> Dim:
        return Sym.deferred("%", other, self)

    @staticmethod
    def deferred(op: str, left: Dim, right: Dim) -> "Sym":
        """An opaque atom for ``left op right`` that substitution can evaluate later."""
        name = f"({_raw(left)}){op}({_raw(right)})"
        _DEFERRED[name] = (op, left, right)
        return Sym.symbol(name)

    # -- comparison -----------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sym):
            return self.terms == other.terms
        return False

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self.terms.items()))
        return self._hash

    @property
    def atoms(self) -> set[str]:
        return {a for m in self.terms for a in m}

    def substitute(self, values: dict[str, Dim]) -> Dim:
        """Replace atoms by the sizes ``values`` gives (re-evaluating deferred divisions);
        ``self`` itself when no atom has a size there."""
        if not any(a in values or a in _DEFERRED for m in self.terms for a in m):
            return self
        kept: _Terms = {}                    # the terms no atom of which is replaced
        total: Dim = 0
        for m, c in self.terms.items():
            if not any(a in values or a in _DEFERRED for a in m):
                kept[m] = c
                continue
            term: Dim = c
            for a in m:
                term = term * _substitute_atom(a, values)
            total = total + term
        return total + _normal(kept) if kept else total

    def __str__(self) -> str:
        if self._text is None:
            self._text = self._display()
        return self._text

    def _display(self) -> str:
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda mc: (-len(mc[0]), mc[0])):
            names = [_atom_display(a) for a in m]
            if len(m) > 1 or c != 1:      # 4*(H//4) and -(H//2): 4*H//4 would read as H
                names = [f"({n})" if a in _DEFERRED else n for a, n in zip(m, names)]
            if not m:
                parts.append(str(c))
            elif c == 1:
                parts.append("*".join(names))
            elif c == -1:
                parts.append("-" + "*".join(names))
            else:
                parts.append(f"{c}*" + "*".join(names))
        text = " + ".join(parts).replace("+ -", "- ")
        return text or "0"

    def __repr__(self) -> str:
        return f"Sym({self})"

    def source(self, names: dict[str, str]) -> str:
        """Python source computing this dim, given a source text for each atom."""
        parts = []
        for m, c in self.terms.items():
            factors = [_atom_source(a, names) for a in m]
            if c != 1 or not factors:
                factors.insert(0, str(c))
            parts.append(" * ".join(factors))
        return " + ".join(parts)


_DEFERRED: dict[str, tuple[str, Dim, Dim]] = {}


def _floordiv_int(terms: _Terms, divisor: int) -> Dim:
    """``sum(terms) // divisor`` in its simplest exact form, for integer sizes.

    Identities that keep shapes readable, and equal sizes equal: ``(c*k + r)//c == k + r//c``
    takes the terms that divide evenly out of the floor (MaxPool2d(2)'s ``(H - 2)//2 + 1`` is
    ``H//2``) and leaves a constant in ``0..c-1`` inside (``(H - 1)//2 + 1`` is
    ``(H + 1)//2``); ``(g*r)//(g*c) == r//c`` cancels a common factor; and
    ``(x//a + k)//b == (x + a*k)//(a*b)`` for positive ``a`` and ``b`` merges nested floors
    (two poolings give ``H//4``).
    """
    whole: _Terms = {}
    rest: _Terms = {}
    for m, c in terms.items():
        if c % divisor:
            rest[m] = c
        else:
            whole[m] = c // divisor
    quotient = _normal(whole)
    if not rest:
        return quotient
    if set(rest) == {()}:
        return quotient + rest[()] // divisor
    g = math.gcd(divisor, *rest.values())
    if g > 1:
        rest = {m: c // g for m, c in rest.items()}
        divisor //= g
    if divisor > 0 and () in rest:
        # the constant inside the floor is kept in 0..divisor-1, the rest moves out: one form
        # for equal sizes, so (H - 1)//2 + 1 (a stride-2 conv) and (H + 1)//2 are one dim
        carry, rest[()] = divmod(rest[()], divisor)
        quotient = quotient + carry
        if not rest[()]:
            del rest[()]
    symbolic = [(m, c) for m, c in rest.items() if m]
    if divisor > 0 and len(symbolic) == 1:
        (m, c), = symbolic
        inner = _DEFERRED.get(m[0]) if c == 1 and len(m) == 1 else None
        if inner is not None and inner[0] == "//" and isinstance(inner[2], int) and inner[2] > 0:
            # (x//a + k)//b == (x + a*k)//(a*b): one floor for a chain of poolings
            return quotient + (inner[1] + inner[2] * rest.get((), 0)) // (inner[2] * divisor)
    return quotient + Sym.deferred("//", Sym._of(rest), divisor)


def _raw(d: Dim) -> str:
    """A dim's identity text, instance suffixes included (``C@12``)."""
    if isinstance(d, Sym):
        return " + ".join(f"{c}*" + "*".join(m) for m, c in sorted(d.terms.items()))
    return str(d)


def _substitute_atom(atom: str, values: dict[str, Dim]) -> Dim:
    if atom in values:
        return values[atom]
    if atom in _DEFERRED:
        op, left, right = _DEFERRED[atom]
        left, right = substitute(left, values), substitute(right, values)
        return left // right if op == "//" else left % right
    return Sym.symbol(atom)


def _atom_display(atom: str) -> str:
    if atom in _DEFERRED:
        op, left, right = _DEFERRED[atom]
        bare = not isinstance(left, Sym) or left.atom() is not None
        return f"{left if bare else f'({left})'}{op}{_paren(right)}"
    return symbol_name(atom)


def _atom_source(atom: str, names: dict[str, str]) -> str:
    if atom in names:
        return names[atom]
    if atom in _DEFERRED:
        op, left, right = _DEFERRED[atom]
        sides = [d.source(names) if isinstance(d, Sym) else str(d) for d in (left, right)]
        return f"(({sides[0]}) {op} ({sides[1]}))"
    raise ValueError(f"the size {symbol_name(atom)} cannot be computed at run time")


def _as_terms(d: Dim) -> _Terms:
    if isinstance(d, Sym):
        return d.terms
    return {(): int(d)}


def _normal(terms: _Terms) -> Dim:
    terms = {m: c for m, c in terms.items() if c != 0}
    if not terms:
        return 0
    if len(terms) == 1 and () in terms:
        return terms[()]
    return Sym._of(terms)


def _paren(d: Dim) -> str:
    text = str(d)
    return f"({text})" if isinstance(d, Sym) and len(d.terms) > 1 else text


def symbols(d: Dim) -> set[str]:
    """The named symbols a dim depends on, inside floor divisions too (``{"H"}`` for
    ``2*(H//4)``), with their instance tags."""
    if not isinstance(d, Sym):
        return set()
    out: set[str] = set()
    for atom in d.atoms:
        if atom in _DEFERRED:
            _, left, right = _DEFERRED[atom]
            out |= symbols(left) | symbols(right)
        else:
            out.add(atom)
    return out


def symbol_name(atom: str) -> str:
    """A symbol as the spec writes it: ``C@12`` is ``C``."""
    return _INSTANCE.sub("", atom)


def substitute(d: Dim, values: dict[str, Dim]) -> Dim:
    return d.substitute(values) if isinstance(d, Sym) else d


def counterexample(a: Dim, b: Dim, tries: int = 4096) -> dict[str, int] | None:
    """Small positive sizes of the symbols for which ``a`` and ``b`` differ (the first in
    order, smallest sizes first), or None if none of about ``tries`` assignments shows it."""
    names = sorted(symbols(a) | symbols(b))
    if not names or len(names) > 4:
        return None
    top = max(2, round(tries ** (1 / len(names))))
    for sizes in itertools.product(range(1, top + 1), repeat=len(names)):
        values = dict(zip(names, sizes))
        if _differ(a, b, values):
            return values
    return None


def _differ(a: Dim, b: Dim, values: dict[str, Dim]) -> bool:
    """Whether ``a`` and ``b`` differ at these sizes; False where either divides by zero
    there (``(H*W)//(W - 1)`` at W = 1), sizes no input can have."""
    try:
        return substitute(a, values) != substitute(b, values)
    except ZeroDivisionError:
        return False


def equal_residues(a: Dim, b: Dim, name: str, span: int = 128) -> tuple[int, list[int]] | None:
    """Where ``a`` and ``b``, in one symbol ``name``, are equal, when that follows the symbol's
    remainder: ``(4, [0, 1])`` for ``2*(H//4)`` and ``H//2`` (equal when ``H % 4`` is 0 or
    1). The smallest period up to 16 that sizes 1..``span`` show; None if there is none."""
    equal = [not _differ(a, b, {name: v}) for v in range(1, span + 1)]
    for period in range(2, 17):
        if all(equal[i] == equal[i - period] for i in range(period, span)):
            return period, sorted({(i + 1) % period for i in range(period) if equal[i]})
    return None


def is_static(d: Dim) -> bool:
    return isinstance(d, int)


def fmt_dim(d: Dim) -> str:
    return str(d)


def fmt_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def numel(shape: Shape) -> Dim:
    total: Dim = 1
    for d in shape:
        total = d * total
    return total


# -- equality of sizes in shape rules -------------------------------------------------------------

_SYMBOL = re.compile(r"[A-Za-z_]\w*(@\d+)?")  # a named symbol, maybe tagged with its instance


def known_equal(a: Dim, b: Dim) -> bool | None:
    """True/False when decidable, None when unknown.

    Decidable: the difference is a constant, or a polynomial in named symbols (sizes, so
    positive) whose coefficients all have one sign (``400*N`` vs ``300*N``).
    """
    diff = a - b
    if isinstance(diff, int):
        return diff == 0
    named = all(_SYMBOL.fullmatch(atom) for atom in diff.atoms)
    return False if named and len({c > 0 for c in diff.terms.values()}) == 1 else None


# Equalities of dims that a shape rule could neither prove nor refuse (``2*(H//4)`` against
# ``H//2``, which holds only for some H): the rule goes on as if they held, and infer_shapes
# moves them onto the node (its ``assumes``) for ``netspec check`` to report.
ASSUMED: list[tuple[Dim, Dim]] = []


def agree(a: Dim, b: Dim) -> bool:
    """Whether two sizes a rule needs equal may be: False when they are known to differ. One
    neither proved nor refuted is taken on trust and noted in ``ASSUMED``."""
    if a is b or a == b:
        return True
    known = known_equal(a, b)
    if known is None:
        ASSUMED.append((a, b))
    return known is not False


def shapes_agree(a: Shape, b: Shape) -> bool:
    """Whether two shapes may be equal: the same rank, and each pair of sizes may (``agree``,
    in order, stopping at the first pair known to differ)."""
    return len(a) == len(b) and all(agree(x, y) for x, y in zip(a, b))


def unify(a: Dim, b: Dim) -> Dim:
    """Merge two dims that agree: keep the concrete one, else the first."""
    return b if isinstance(b, int) and not isinstance(a, int) else a
