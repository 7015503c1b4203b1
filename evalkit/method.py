"""Methods: what a scaling method declares (:class:`Method`, its :class:`Param` s) and how a
method text such as ``ntk:alpha=2`` or ``self-extend:window=512,group=4`` becomes a checked
:class:`MethodCall`.

The built-in methods are in ``patches/methods.py``; a method owns its formula or attention
hook, its parameters (types, defaults, bounds), whether it is length-independent, and its
summary and source. Nothing else branches on a method's name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import sha256
from evalkit.registry import METHODS
from evalkit.schema import FACTORS, add_factor, fmt  # values as rows write them, so keys read back compare equal

MAX_FACTOR = 1e6  # beyond this the formulas overflow float64 (NTK: b·α^(d/(d-2)))


def _number(x) -> str:
    """A bound or value as a user would type it: 16777216, not 1.67772e+07."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


@dataclass(frozen=True)
class Param:
    """One parameter of a method. ``default`` is a constant; ``derive`` (instead) computes it
    per sequence length from the trained length L, the length n and the values resolved so far.
    Values are numbers checked against ``low``/``high`` (inclusive), or for ``kind=str`` the text
    that ``load`` turns into what the formula reads (e.g. a file of factors)."""

    name: str
    help: str
    kind: type = float
    default: object = None
    derive: Callable[[dict, int, int], object] | None = None
    low: float | None = None
    high: float | None = None
    load: Callable[[str], object] | None = None
    derived_text: str = "derived"  # how a derived default reads in listings
    per_length: bool = True  # ``derive`` reads the sequence length (False: the trained length only)
    below_trained: bool = False  # the value must be below the trained length (DCA's chunk)
    column: bool = False  # a factor: recorded in a column of its own (scale, alpha) rather than in params
    follows: str | None = None  # a factor that takes the value given for this other factor (alpha: scale)

    def parse(self, text, method: str):
        """The value of ``text`` (or of a number given in Python), checked; a one-line error otherwise."""
        where = f"{method}:{self.name}"
        if self.kind is str:
            value = str(text)
            if self.load:
                self.load(value)  # refuse an unreadable file now, not after the model loaded
            return value
        try:
            value = (
                self.kind(text)
                if not isinstance(text, str)
                else self.kind(float(text) if self.kind is int and "." in text else text)
            )
        except (TypeError, ValueError, OverflowError):
            raise EvalkitError(
                f"{where} must be a{'n integer' if self.kind is int else ' number'}, got {text!r}",
                self.example(method),
            ) from None
        if self.kind is float and not math.isfinite(value):
            raise EvalkitError(f"{where} must be a finite number, got {text}", "omit it for the default")
        if self.kind is int and float(text) != value:
            raise EvalkitError(f"{where} must be a whole number, got {text}", self.example(method))
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise EvalkitError(
                f"{where} must be between {_number(self.low)} and {_number(self.high)}, got {_number(value)}",
                self.example(method),
            )
        return value

    def example(self, method: str) -> str:
        """A hint with a value the method accepts: its default, or for a derived one, to omit it."""
        if self.derive:
            return f"omit it for its default ({self.derived_text})"
        value = self.default if self.default is not None else self.low if self.low is not None else 1
        return f"e.g. {method}:{self.name}={_number(value)}" + (" (its default)" if self.default is not None else "")

    @property
    def shown_default(self) -> str:
        return (
            self.derived_text
            if self.derive
            else (
                "required"
                if self.default is None
                else fmt(self.default)  # as rows write it
                if isinstance(self.default, float)
                else str(self.default)
            )
        )


@dataclass(frozen=True)
class Method:
    """A scaling method. Exactly one of ``rope`` (a formula of :mod:`rope`: (dim, base, trained_len,
    seq_len, **params) -> (inv_freq or None for "unchanged", attention factor)), ``slopes`` (base
    ALiBi slopes, params -> slopes) or ``attention`` (a :class:`attention.TwoRegion` builder) is set,
    except for ``none``. ``static``: position i's output does not depend on the sequence length
    (given the parameters). ``logn``: the queries are scaled by max(1, ln n / ln L) too."""

    name: str
    encoding: str  # "rope", "alibi" or "any"
    summary: str
    source: str
    params: tuple[Param, ...] = ()
    static: bool = True
    rope: Callable | None = None
    slopes: Callable | None = None
    attention: Callable | None = None
    logn: bool = False
    check: Callable[[dict], str | None] | None = None  # values -> what is inconsistent among them, or None
    default: bool = False  # run when no method is named (``none`` and ``ntk``: the baseline and the classic fix)

    @property
    def changes(self) -> bool:
        """Whether it changes the model at all (``none`` does not)."""
        return any(x is not None for x in (self.rope, self.slopes, self.attention)) or self.logn

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise EvalkitError(
            f"method {self.name} has no parameter {name!r}",
            f"its parameters: {', '.join(p.name for p in self.params) or 'none'}",
        )


def register(method: Method) -> Method:
    """Add a method to the registry (its factor parameters become result columns)."""
    for p in method.params:
        if p.column:
            add_factor(p.name)
    return METHODS.add(method.name, method)


def factor_params() -> list[Param]:
    """The factors: parameters recorded in columns of their own (``--scale``, ``--alpha``)."""
    found: dict = {}
    for m in METHODS.values():
        for p in m.params:
            if p.column:
                found.setdefault(p.name, p)
    return list(found.values())


def with_followers(factors: dict) -> dict:
    """Factors given as shorthands, with each factor that follows a given one filled in
    (``--scale 4`` also sets alpha = 4 unless alpha is given)."""
    out = {k: v for k, v in factors.items() if v is not None}
    for p in factor_params():
        if p.follows in out and p.name not in out:
            out[p.name] = out[p.follows]
    return out


def default_methods() -> tuple[str, ...]:
    """The methods a sweep runs when none is named."""
    return tuple(n for n, m in METHODS.items() if m.default)


def methods_for(encoding: str) -> list[str]:
    return [n for n, m in METHODS.items() if m.encoding in (encoding, "any")]


@dataclass(frozen=True)
class MethodCall:
    """A method with the parameters given for it (``ntk:alpha=2``). ``given`` holds parsed values
    in the method's declared order; the others take their default or derived values."""

    method: Method
    given: tuple[tuple[str, object], ...] = ()

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def text(self) -> str:
        """Canonical form, also what ``parse_call`` reads back: ``name`` or ``name:k=v,k=v``."""
        return self.name + (":" + ",".join(f"{k}={fmt(v)}" for k, v in self.given) if self.given else "")

    def with_defaults(self, given: dict) -> MethodCall:
        """This call plus the sweep-wide values in ``given`` for parameters it declares and was not given."""
        mine = dict(self.given)
        declared = {p.name for p in self.method.params}
        mine.update({k: v for k, v in given.items() if k in declared and k not in mine})
        return make_call(self.method, mine)

    def resolve(self, trained_len: int, length: int) -> dict:
        """Every parameter's value for sequences of ``length`` tokens."""
        values, given = {}, dict(self.given)
        for p in self.method.params:
            if p.name in given:
                values[p.name] = given[p.name]
            elif p.derive is not None:
                values[p.name] = p.derive(values, trained_len, length)
            elif p.default is None:
                raise EvalkitError(
                    f"method {self.name} needs its parameter {p.name}",
                    f"e.g. --method {self.name}:{p.name}=… ({p.help})",
                )
            else:
                values[p.name] = p.default
        for p in self.method.params:
            if p.below_trained and values[p.name] >= trained_len:
                raise EvalkitError(
                    f"{self.text}: {p.name} = {values[p.name]} must be below the trained length {trained_len}",
                    f"e.g. --method {self.name}:{p.name}={p.derive({}, trained_len, trained_len) if p.derive else trained_len // 2}"
                    f", its default ({p.derived_text if p.derive else p.shown_default})",
                )
        problem = self.method.check(values) if self.method.check else None
        if problem:
            raise EvalkitError(f"{self.text}: {problem}", f"see evalkit methods for {self.name}'s parameters")
        return values

    @property
    def length_independent(self) -> bool:
        """Position i's output is the same at every sequence length: a static method none of whose
        parameters is derived from the length."""
        given = dict(self.given)
        return self.method.static and all(
            p.derive is None or p.name in given or not p.per_length for p in self.method.params
        )

    def fixed(self) -> dict:
        """The values that are the same at every length (given or constant); derived ones are left out."""
        given = dict(self.given)
        return {p.name: given.get(p.name, p.default) for p in self.method.params if p.name in given or p.derive is None}


def format_params(method: Method, values: dict) -> str:
    """``k=v,k=v`` in the method's declared order (a row's ``params`` column)."""
    return ",".join(f"{p.name}={fmt(values[p.name])}" for p in method.params if p.name in values)


@functools.lru_cache(maxsize=256)  # row keys and labels ask for it once per row
def _file_digest(path: str) -> str | None:
    try:
        return sha256(Path(path).expanduser())[:12]
    except OSError:
        return None


def _read_params(method: str, text: str) -> dict | None:
    """A row's ``params`` as {name: value} with the constants the row leaves out filled in (a row
    written before a parameter existed used its default); None when it cannot be read (a method or
    parameter this evalkit does not know)."""
    if method not in METHODS:
        return None
    m = METHODS.get(method)
    try:
        given = {
            k: m.param(k).parse(v, method)
            for k, v in (item.split("=", 1) for item in filter(None, (text or "").split(",")))
        }
    except (EvalkitError, ValueError):
        return None
    return {**{p.name: p.default for p in m.params if p.derive is None and p.default is not None}, **given}


def normalise_params(method: str, text: str) -> str:
    """A row's ``params`` in the form that identifies it (resume keys, duplicates): constants the
    row leaves out filled in, and a file parameter by its content (sha256), not its path."""
    values = _read_params(method, text)
    if values is None:
        return text or ""
    m = METHODS.get(method)
    for p in m.params:
        if p.load and p.name in values:
            values[p.name] = "sha256:" + (_file_digest(values[p.name]) or f"unreadable:{values[p.name]}")
    return format_params(m, values)


def params_label(method: str, text: str) -> str:
    """The parameters worth naming in a label: those that differ from the method's constant
    defaults (``ntk alpha=2``, ``self-extend window=512``; plain ``yarn`` for the defaults)."""
    values = _read_params(method, text)
    if values is None:
        return text or ""
    m = METHODS.get(method)

    def shown(p) -> str:
        v = values[p.name]
        if not p.load:
            return fmt(v)
        return f"{Path(v).name}@{(_file_digest(v) or '?')[:8]}"  # two files of one name stay apart

    differs = [p for p in m.params if p.name in values and fmt(values[p.name]) != fmt(p.default)]  # as rows write them
    return " ".join(f"{p.name}={shown(p)}" for p in differs)


def make_call(method: Method | str, given: dict) -> MethodCall:
    m = METHODS.get(method) if isinstance(method, str) else method
    parsed = {}
    for k, v in given.items():
        parsed[k] = m.param(k).parse(v, m.name)
    return MethodCall(m, tuple((p.name, parsed[p.name]) for p in m.params if p.name in parsed))


def parse_call(text: str | MethodCall) -> MethodCall:
    """``name`` or ``name:k=v,k=v`` -> a checked MethodCall."""
    if isinstance(text, MethodCall):
        return text
    name, _, rest = str(text).strip().partition(":")
    given = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise EvalkitError(
                f"method parameter {item!r} of {name} is not key=value",
                "e.g. --method ntk:alpha=2 or self-extend:window=1024,group=8",
            )
        if key.strip() in given:
            raise EvalkitError(f"parameter {key.strip()} of {name} is given twice", "give it once")
        given[key.strip()] = value.strip()
    return make_call(name.strip(), given)


def split_method_list(items) -> list[str]:
    """``--method`` values -> method texts: items are split on commas, and an item ``k=v`` without a
    method name continues the parameters of the method before it (``self-extend:window=512,group=4``)."""
    out: list[str] = []
    for item in items:
        for part in (p.strip() for p in str(item).split(",")):
            if not part:
                continue
            if "=" in part.split(":", 1)[0]:  # k=v (a value may hold a colon: a path)
                if not out:
                    raise EvalkitError(
                        f"--method {part}: a parameter needs a method before it", "e.g. --method ntk:alpha=2"
                    )
                out[-1] += ("," if ":" in out[-1] else ":") + part
            else:
                out.append(part)
    return out


def check_applicable(method: str | MethodCall, encoding: str) -> Method:
    """The method, or a one-line error naming the methods that do apply."""
    m = parse_call(method).method
    if m.encoding not in (encoding, "any"):
        raise EvalkitError(
            f"method {m.name!r} is for {m.encoding} models, this model uses {encoding}",
            f"methods for {encoding}: {', '.join(methods_for(encoding))}",
        )
    return m


@dataclass(frozen=True)
class Resolved:
    """What ``patched`` applied: the call, the trained length, and every parameter's value."""

    call: MethodCall
    trained_len: int
    values: dict = field(default_factory=dict)

    def __getattr__(self, name):
        values = self.__dict__["values"]
        if name in values:
            return values[name]
        if name in FACTORS:  # a method without that factor (as evalkit 0.2 read it: unused)
            return None
        raise AttributeError(name)
