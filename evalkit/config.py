"""A run as a value: :class:`RunConfig` describes a sweep and validates itself on construction.

The CLI only builds this value and calls :func:`evalkit.sweep.run`; scripts do the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from evalkit.errors import EvalkitError
from evalkit.loading import check_adapter, check_quantize
from evalkit.method import MAX_FACTOR, default_methods, parse_call, with_followers
from evalkit.registry import METHODS, OPTIONS, SINKS, TASKS
from evalkit.schema import FACTORS
from evalkit.shards import Shard
from evalkit.task import default_tasks, options_of

DEMO_LENGTHS = (4096, 12288)
MAX_SAMPLES = 100_000  # trials per depth / documents per length
ANSWER_ROOM = 256  # positions past the longest length for decoded answers (models with a fixed maximum)


def ignored_options(tasks, given) -> list[str]:
    """The options given that none of ``tasks`` reads (a note, not an error: shared scripts)."""
    read = options_of(tasks)
    return [OPTIONS.get(n).flag_name for n in given if n in OPTIONS and n not in read]


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; validated on construction. ``options`` holds the task
    options given (by name, e.g. ``{"depths": (0, 0.5, 1)}``); the selected tasks' other
    options take their defaults, and an option none of them reads is left out (see
    :func:`ignored_options`)."""

    model: str | None = None
    methods: tuple[str, ...] = field(default_factory=default_methods)  # texts: "ntk:alpha=2", "self-extend:window=512"
    lengths: tuple[int, ...] = DEMO_LENGTHS
    tasks: tuple[str, ...] = field(default_factory=default_tasks)
    samples: int = 1
    scale: float | None = None  # shorthand for params scale (and alpha, unless given)
    alpha: float | None = None
    params: dict = field(default_factory=dict)  # method parameters for every selected method that declares them
    rope_reset: bool = False
    adapter: str | None = None  # a PEFT adapter folder, merged into the model
    quantize: str | None = None  # 4bit / 8bit (bitsandbytes, GPU)
    trained_len: int | None = None
    options: dict = field(default_factory=dict)
    out: str | None = None  # None: runs/<model> (git-ignored; see default_out)
    shard: Shard | None = None  # this worker's part of the sweep (--shard K/N or a launcher)
    max_memory: dict | None = None  # {0: "70GiB", "cpu": "200GiB"}: one copy over several GPUs
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    trust_remote_code: bool = False
    force: bool = False
    prefix: bool = True
    sinks: tuple[str, ...] = ()  # extra row sinks (evalkit.sinks: jsonl, ...) beside results.csv

    def __post_init__(self):
        for name, v in self.factors().items():
            if v is not None and not (math.isfinite(v) and 1 <= v <= MAX_FACTOR):
                raise EvalkitError(
                    f"--{name} must be a finite number from 1 to {MAX_FACTOR:g}, got {v}",
                    "omit it for the default (length / trained)",
                )
        object.__setattr__(self, "methods", tuple(dict.fromkeys(c.text for c in self._calls())))
        for name in ("lengths", "tasks"):  # each value once, in the order given
            object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))
        for t in self.tasks:
            TASKS.get(t)
        object.__setattr__(self, "sinks", tuple(dict.fromkeys(self.sinks)))
        for name in self.sinks:
            SINKS.get(name)
        if not self.methods or not self.lengths or not self.tasks:
            raise EvalkitError("nothing to run", "give at least one --method, --len and --task")
        object.__setattr__(self, "options", self._task_options())
        bad = [n for n in self.lengths if n <= 0]
        if bad:
            raise EvalkitError(f"length must be a positive number of tokens, got {bad[0]}", "e.g. --len 8192")
        for t in self.tasks:
            need = TASKS.get(t).min_length
            if min(self.lengths) < need:
                raise EvalkitError(
                    f"task {t} needs lengths of at least {need} tokens, got {min(self.lengths)}", "e.g. --len 8192"
                )
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise EvalkitError(f"--samples must be between 1 and {MAX_SAMPLES}, got {self.samples}", "e.g. --samples 5")
        check_quantize(self.quantize)
        check_adapter(self.adapter)
        if self.trained_len is not None and self.trained_len <= 0:
            raise EvalkitError("--trained-len must be positive", "e.g. --trained-len 4096")
        if self.shard is not None and not isinstance(self.shard, Shard):
            raise EvalkitError(f"shard must be an evalkit.shards.Shard, got {self.shard!r}", "parse_shard('0/4')")
        if self.max_memory and self.shard is not None and self.shard.local_count > 1:
            raise EvalkitError(
                f"--max-memory spreads one model over a node's GPUs, but {self.shard.local_count} "
                "workers were started on this node",
                "start one worker per node: --nproc-per-node 1",
            )

    def factors(self) -> dict:
        """The factors given as shorthands (``--scale``, ``--alpha``), by name."""
        METHODS.names()  # the factors are declared by the methods
        return {name: getattr(self, name, None) for name in FACTORS}

    def sweep_params(self) -> dict:
        """Parameters given for every method (``--param``; ``--scale`` also sets alpha unless given)."""
        given = dict(self.params)
        for name, v in self.factors().items():
            if v is not None and name in given:
                raise EvalkitError(f"--{name} and --param {name} are both given", "give it once")
        for name, v in with_followers(self.factors()).items():
            given.setdefault(name, v)
        return given

    def _calls(self) -> list:
        """Each method text parsed, with the sweep-wide parameters it declares added."""
        known = {p.name for m in METHODS.values() for p in m.params}
        unknown = sorted(set(self.params) - known)
        if unknown:
            raise EvalkitError(
                f"--param {unknown[0]}: no method has such a parameter",
                f"method parameters: {', '.join(sorted(known))} (evalkit methods)",
            )
        return [parse_call(text).with_defaults(self.sweep_params()) for text in self.methods]

    @property
    def calls(self) -> list:
        return [parse_call(text) for text in self.methods]

    def unused_params(self) -> list[str]:
        """``--param`` (or --scale / --alpha) names none of the selected methods declares (a note)."""
        declared = {p.name for c in self.calls for p in c.method.params}
        given = list(self.params) + [n for n, v in self.factors().items() if v is not None]
        return [n for n in dict.fromkeys(given) if n not in declared]

    def _task_options(self) -> dict:
        """Every option of the selected tasks: given (validated) or its default."""
        declared = options_of(self.tasks)
        given = {name: OPTIONS.get(name).validate(value) for name, value in self.options.items()}  # read or not
        return {name: given[name] if name in given else o.default for name, o in declared.items()}

    def opt(self, name: str):
        """A task option's value (given or default)."""
        return self.options[name]
