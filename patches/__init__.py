"""Scaling methods: one registry of :class:`Method` objects, and ``patched`` to apply any
of them to a model.

    with evalkit.patched(model, "ntk", alpha=2.0, trained_len=4096):
        logits = model(ids).logits
    with evalkit.patched(model, "self-extend:window=512,group=4"):
        ...

A method owns everything about itself: its formula (RoPE frequencies, ALiBi slopes)
or attention hook, its parameters (types, defaults, bounds), whether it is
length-independent, and its summary and source. Nothing else branches on a
method's name. The maths is in :mod:`evalkit.patches.rope`,
:mod:`evalkit.patches.alibi` and :mod:`evalkit.patches.attention`; the installers in
:mod:`evalkit.patches.rope_models` and :mod:`evalkit.patches.alibi_models` put it into
each model family and restore the exact originals when the block exits.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from evalkit.errors import EvalkitError
from evalkit.registry import Registry
from evalkit.results import fmt  # values as rows write them, so keys read back compare equal

def _lazy(module: str, name: str) -> Callable:
    """``evalkit.patches.<module>.<name>``, imported when first called: the registry is read by
    listings and validation that should not wait for torch."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(f"evalkit.patches.{module}"), name)(*args, **kwargs)

    call.__name__ = name
    return call


MAX_FACTOR = 1e6  # beyond this the formulas overflow float64 (NTK: b·α^(d/(d-2)))


def _factor_file(text: str) -> tuple[float, ...]:
    """Per-dimension factors from a JSON file: a list of numbers, an object with ``long_factor``,
    or a checkpoint's config.json (``rope_scaling`` / ``rope_parameters`` holding ``long_factor``)."""
    path = Path(text).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EvalkitError(f"cannot read the factors file {text}: {e.strerror}",
                           "give a JSON list of factors, or a config.json with rope_scaling.long_factor") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalkitError(f"{text} is not valid JSON ({e})", "give a JSON list of per-dimension factors") from None
    if isinstance(data, dict):
        data = next((d for d in (data.get("rope_scaling"), data.get("rope_parameters"), data)
                     if isinstance(d, dict) and "long_factor" in d), {}).get("long_factor")
    if not isinstance(data, list) or not data or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in data):
        raise EvalkitError(f"{text} holds no list of positive factors",
                           "a JSON list, {\"long_factor\": [...]}, or a config.json with rope_scaling.long_factor")
    return tuple(float(v) for v in data)


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

    def parse(self, text, method: str):
        """The value of ``text`` (or of a number given in Python), checked; a one-line error otherwise."""
        where = f"{method}:{self.name}"
        if self.kind is str:
            value = str(text)
            if self.load:
                self.load(value)  # refuse an unreadable file now, not after the model loaded
            return value
        try:
            value = self.kind(text) if not isinstance(text, str) else self.kind(float(text) if self.kind is int
                                                                                 and "." in text else text)
        except (TypeError, ValueError, OverflowError):
            raise EvalkitError(f"{where} must be a{'n integer' if self.kind is int else ' number'}, got {text!r}",
                               f"e.g. {method}:{self.name}={self.example()}") from None
        if self.kind is float and not math.isfinite(value):
            raise EvalkitError(f"{where} must be a finite number, got {text}", "omit it for the default")
        if self.kind is int and float(text) != value:
            raise EvalkitError(f"{where} must be a whole number, got {text}", f"e.g. {self.example()}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise EvalkitError(f"{where} must be between {self.low:g} and {self.high:g}, got {value:g}", self.help)
        return value

    def example(self):
        return self.default if self.default is not None else (self.low if self.low is not None else 1)

    @property
    def shown_default(self) -> str:
        return self.derived_text if self.derive else ("required" if self.default is None else f"{self.default:g}"
                                              if isinstance(self.default, float) else str(self.default))


SCALE = Param("scale", "s = target / trained length (>= 1)", low=1, high=MAX_FACTOR,
              derive=lambda v, trained, n: max(1.0, n / trained), derived_text="length/L")
ALPHA = Param("alpha", "NTK factor alpha (>= 1); defaults to the scale", low=1, high=MAX_FACTOR,
              derive=lambda v, trained, n: v.get("scale", max(1.0, n / trained)), derived_text="scale")
BETA_FAST = Param("beta_fast", "YaRN: rotations within L above which a dimension is kept", default=32.0,
                  low=1e-3, high=1e6)
BETA_SLOW = Param("beta_slow", "YaRN: rotations within L below which a dimension is interpolated", default=1.0,
                  low=1e-3, high=1e6)


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

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise EvalkitError(f"method {self.name} has no parameter {name!r}",
                           f"its parameters: {', '.join(p.name for p in self.params) or 'none'}")


def _ramp(low: str, high: str) -> Callable[[dict], str | None]:
    """A check that parameter ``low`` stays below ``high`` (the two ends of a ramp)."""
    return lambda v: f"{low} must be below {high}" if v[low] >= v[high] else None


_YARN_RAMP = _ramp("beta_slow", "beta_fast")

METHODS: Registry[Method] = Registry("method")
for _m in [
    Method("none", "any", "no scaling: the checkpoint as shipped (plain extrapolation past its length)", "-"),
    Method("pi", "rope", "position interpolation: θ_i / s", "Chen et al. 2023, arXiv 2306.15595, eq. 4",
           (SCALE,), rope=_lazy("rope", "rope_pi")),
    Method("ntk", "rope", "NTK-aware base change: b · α^(d/(d-2))", "bloc97, r/LocalLLaMA 2023",
           (ALPHA,), rope=_lazy("rope", "rope_ntk")),
    Method("dynamic-ntk", "rope", "NTK base from the sequence length l > L: b · (α·l/L - (α-1))^(d/(d-2))",
           "emozilla 2023; transformers `dynamic`", (ALPHA,), static=False, rope=_lazy("rope", "rope_dynamic_ntk")),
    Method("yarn", "rope", "NTK-by-parts ramp + attention temperature 0.1 ln s + 1",
           "Peng et al. 2023, arXiv 2309.00071, eq. 17-22", (SCALE, BETA_FAST, BETA_SLOW), rope=_lazy("rope", "rope_yarn"),
           check=_YARN_RAMP),
    Method("ntk-by-parts", "rope", "YaRN's NTK-by-parts ramp without the temperature",
           "Peng et al. 2023, arXiv 2309.00071, sec. 3.2", (SCALE, BETA_FAST, BETA_SLOW),
           rope=_lazy("rope", "rope_ntk_by_parts"), check=_YARN_RAMP),
    Method("dynamic-yarn", "rope", "YaRN with s = l/L from the sequence length l > L",
           "jquesnelle/yarn LlamaDynamicYaRNScaledRotaryEmbedding", (BETA_FAST, BETA_SLOW), static=False,
           rope=_lazy("rope", "rope_dynamic_yarn"), check=_YARN_RAMP),
    Method("llama3", "rope", "Meta's frequency bands: θ_i kept (λ < L/high), θ_i/s (λ > L/low), blended between",
           "Llama 3.1; transformers `llama3`", (SCALE, Param("low_freq_factor", "wavelengths above L/low are "
                                                             "interpolated", default=1.0, low=1e-3, high=1e6),
                                               Param("high_freq_factor", "wavelengths below L/high are kept",
                                                     default=4.0, low=1e-3, high=1e6)),
           rope=_lazy("rope", "rope_llama3"), check=_ramp("low_freq_factor", "high_freq_factor")),
    Method("longrope", "rope", "per-dimension factors: θ_i / λ_i, cos/sin × sqrt(1 + ln s / ln L)",
           "Ding et al. 2024, arXiv 2402.13753; transformers `longrope`",
           (SCALE, Param("factors", "JSON file of the d/2 factors (a list, long_factor, or a config.json)",
                         kind=str, load=_factor_file)), rope=_lazy("rope", "rope_longrope")),
    Method("logn", "rope", "queries × max(1, ln n / ln L) past the trained length",
           "Chiang & Cholak 2022; Su 2023; Qwen use_logn_attn", rope=_lazy("rope", "rope_none"), logn=True),
    Method("self-extend", "rope", "neighbour attention within W, grouped positions ⌊p/G⌋ beyond, merged per query",
           "Jin et al. 2024, arXiv 2401.01325; datamllab/LongLM",
           (Param("window", "W: neighbour window in tokens", kind=int, default=1024, low=1, high=1 << 24),
            Param("group", "G: group size of the far positions", kind=int, default=8, low=1, high=1 << 20)),
           attention=_lazy("attention", "self_extend"),
           check=lambda v: "group must not exceed window (the regions would not meet)" if v["group"] > v["window"]
           else None),
    Method("rerope", "rope", "relative positions clipped at W (two QK products) + logn",
           "Su 2023, bojone/rerope", (Param("window", "W: window of exact positions", kind=int, default=512,
                                            low=1, high=1 << 24),),
           attention=_lazy("attention", "rerope"), logn=True),
    Method("leaky-rerope", "rope", "relative positions past W grow at 1/k: W + (i-j-W)/k, + logn",
           "Su 2023, bojone/rerope leaky_rerope_patch", (
               Param("window", "W: window of exact positions", kind=int, default=512, low=1, high=1 << 24),
               Param("k", "slope divisor beyond the window", default=16.0, low=1, high=1e6)),
           attention=_lazy("attention", "leaky_rerope"), logn=True),
    Method("ntk-alibi", "alibi", "per slope: m_h / α^((ln m_max - ln m_h)/(ln m_max - ln m_min))",
           "keezen/ntk_alibi (by slope value)", (ALPHA,),
           slopes=_lazy("alibi", "ntk_alibi")),
    Method("ntk-alibi-index", "alibi", "by head index: m_h / α^((h-1)/(H-1)) in head order",
           "keezen/ntk_alibi README", (ALPHA,),
           slopes=_lazy("alibi", "ntk_alibi_index")),
    Method("ntk-alibi-keezen", "alibi", "as keezen/ntk_alibi's code: first 2^⌊log2 H⌋ heads by index, extra heads "
           "unscaled", "keezen/ntk_alibi code", (ALPHA,),
           slopes=_lazy("alibi", "ntk_alibi_keezen")),
    Method("alibi-pi", "alibi", "ALiBi interpolation: every slope / s", "ALiBi analogue of PI", (SCALE,),
           slopes=_lazy("alibi", "alibi_interpolate")),
]:
    METHODS.add(_m.name, _m)


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

    def with_defaults(self, given: dict) -> "MethodCall":
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
                raise EvalkitError(f"method {self.name} needs its parameter {p.name}",
                                   f"e.g. --method {self.name}:{p.name}=… ({p.help})")
            else:
                values[p.name] = p.default
        problem = self.method.check(values) if self.method.check else None
        if problem:
            raise EvalkitError(f"{self.text}: {problem}", f"see evalkit methods for {self.name}'s parameters")
        return values

    @property
    def length_independent(self) -> bool:
        """Position i's output is the same at every sequence length: a static method none of whose
        parameters is derived from the length."""
        given = dict(self.given)
        return self.method.static and all(p.derive is None or p.name in given for p in self.method.params)

    def fixed(self) -> dict:
        """The values that are the same at every length (given or constant); derived ones are left out."""
        given = dict(self.given)
        return {p.name: given.get(p.name, p.default) for p in self.method.params
                if p.name in given or p.derive is None}


def format_params(method: Method, values: dict) -> str:
    """``k=v,k=v`` in the method's declared order (a row's ``params`` column)."""
    return ",".join(f"{p.name}={fmt(values[p.name])}" for p in method.params if p.name in values)


@functools.lru_cache(maxsize=256)  # row keys and labels ask for it once per row
def _file_digest(path: str) -> str | None:
    from evalkit.models import sha256

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
        given = {k: m.param(k).parse(v, method) for k, v in
                 (item.split("=", 1) for item in filter(None, (text or "").split(",")))}
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

    return " ".join(f"{p.name}={shown(p)}" for p in m.params if p.name in values and values[p.name] != p.default)


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
            raise EvalkitError(f"method parameter {item!r} of {name} is not key=value",
                               "e.g. --method ntk:alpha=2 or self-extend:window=1024,group=8")
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
                    raise EvalkitError(f"--method {part}: a parameter needs a method before it",
                                       "e.g. --method ntk:alpha=2")
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
        if name in ("scale", "alpha"):  # a method without that factor (as evalkit 0.2 read it: unused)
            return None
        raise AttributeError(name)


@contextlib.contextmanager
def patched(model, method: str | MethodCall, *, trained_len: int | None = None, target_len: int | None = None,
            rope_reset: bool = False, **params) -> Iterator[Resolved]:
    """Apply ``method`` (a name, ``name:k=v,…`` or a MethodCall) with ``params`` to ``model`` for the
    duration of the block; restore the originals exactly on exit (also on error). Derived parameters
    (``scale``) come from ``target_len`` / ``trained_len``. ``rope_reset``: evaluate a checkpoint that
    ships a RoPE scaling with that scaling removed. Yields the resolved parameters."""
    adapter = find_adapter(model)
    call = parse_call(method)
    params = {k: v for k, v in params.items() if v is not None}
    factors = {k: params.pop(k) for k in ("scale", "alpha") if k in params}  # as --scale / --alpha: where declared
    if "scale" in factors:
        factors.setdefault("alpha", factors["scale"])
    call = make_call(call.method, {**dict(call.given), **params}).with_defaults(factors)
    check_applicable(call, adapter.encoding)
    if trained_len is None:
        trained_len = adapter.trained_len(model, rope_reset)
    if trained_len <= 0:
        raise EvalkitError(f"trained length must be positive, got {trained_len}", "pass --trained-len")
    resolved = Resolved(call, int(trained_len), call.resolve(int(trained_len), target_len or int(trained_len)))
    with contextlib.ExitStack() as stack:
        if call.name != "none" or rope_reset:
            adapter.install(model, call.method, resolved, stack, rope_reset=rope_reset)
        yield resolved


def find_adapter(model):
    """The installer for this model: the family table's entry for its model type (see
    :mod:`evalkit.families`), checked against the model's own layout."""
    from evalkit.families import adapter_for

    return adapter_for(model)
