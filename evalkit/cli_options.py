"""Parsing what the command line gives: lists, lengths, parameters and the tasks' own options."""

from __future__ import annotations

import functools
import inspect
import math
from typing import List, Optional

import typer

from evalkit.errors import EvalkitError
from evalkit.registry import OPTIONS


def split_list(values: Optional[List[str]], cast=str, what="value", option: str = "") -> tuple | None:
    """Repeated options and comma lists alike: --len 4096,8192 --len 16384. None when the
    option was not given; an option given with nothing in it is a mistake, not the default."""
    if not values:
        return None
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                try:
                    out.append(cast(part.strip()))
                except (ValueError, OverflowError):
                    raise EvalkitError(f"bad {what} {part.strip()!r}", f"expected {cast.__name__}") from None
    if not out:
        raise EvalkitError(f"{option or what} was given an empty list", "give at least one value, or leave it out")
    return tuple(out)


def param_values(values: Optional[List[str]]) -> dict:
    """--param window=512,group=4 --param k=2 -> {"window": "512", ...} (checked by each method)."""
    out: dict = {}
    for item in split_list(values, what="parameter", option="--param") or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise EvalkitError(f"--param {item!r} is not key=value", "e.g. --param window=1024,group=8")
        if key.strip() in out:
            raise EvalkitError(f"--param {key.strip()} is given twice", "give it once")
        out[key.strip()] = value.strip()
    return out


def parse_length(text: str) -> int:
    """4096, 4k, 16K, 128k -> tokens (a whole, finite number)."""
    t = text.strip().lower()
    number = float(t[:-1]) * 1024 if t.endswith("k") else float(t)
    if not math.isfinite(number) or number != int(number):
        raise ValueError(text)
    return int(number)


parse_length.__name__ = "a whole token count such as 8192 or 8k"


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_finite.__name__ = "a finite number"


def task_values(given: dict) -> dict:
    """The task options given on the command line, parsed (one line for a bad value)."""
    values = {}
    for name, raw in given.items():
        o = OPTIONS.get(name)
        if o.flag:
            if raw:
                values[name] = True
        elif o.many:
            if raw:
                values[name] = split_list(raw, o.parse, f"{o.flag_name} value", o.flag_name)
        elif raw is not None:
            try:
                values[name] = o.parse(raw)
            except EvalkitError:
                raise
            except (ValueError, OverflowError):
                raise EvalkitError(f"bad {o.flag_name} value {raw!r}", f"expected {o.parse.__name__}") from None
    return values


def with_task_options(fn):
    """Give ``fn`` (the run command) one command-line option per registered task option: they
    are added to its signature, which typer reads, and handed to it as ``task_options``."""
    sig = inspect.signature(fn)
    own = [p for name, p in sig.parameters.items() if name != "task_options"]
    extra, annotations = [], {k: v for k, v in fn.__annotations__.items() if k != "task_options"}
    for name, o in OPTIONS.items():
        if name in sig.parameters:
            raise ValueError(f"task option {name!r} clashes with an option of evalkit run")
        kind = "bool" if o.flag else "Optional[List[str]]" if o.many else "Optional[str]"
        metavar = None if o.flag else o.metavar or name.upper() + (",..." if o.many else "")
        default = typer.Option(False if o.flag else None, o.flag_name, help=o.help, metavar=metavar, show_default=False)
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind))
        annotations[name] = kind

    @functools.wraps(fn)
    def wrapper(**kwargs):
        return fn(task_options={name: kwargs.pop(name) for name in OPTIONS if name in kwargs}, **kwargs)

    wrapper.__signature__ = sig.replace(
        parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra
    )
    wrapper.__annotations__ = annotations
    return wrapper


class RunOptions:
    """The options of ``evalkit run``, one attribute each (they keep its signature readable)."""

    model = typer.Option(
        None,
        metavar="NAME|DIR",
        help="Alias (evalkit models), Hugging Face id or local checkpoint folder. Default: the embedded smollm2-135m.",
    )
    method = typer.Option(
        None,
        "--method",
        "-m",
        metavar="METHOD[:K=V],...",
        help="Scaling method(s), comma list or "
        "repeated, each with its parameters: ntk:alpha=2, "
        "self-extend:window=512,group=4 (evalkit methods). Default: none,ntk.",
    )
    length = typer.Option(
        None,
        "--len",
        "-l",
        metavar="N,...",
        help="Context length(s) in the model's tokens (8192 or 8k), comma list or repeated. Default: 4096,12288.",
    )
    task = typer.Option(
        None,
        "--task",
        "-t",
        metavar="TASK,...",
        help="Task(s), comma list or repeated (evalkit tasks). Default: ppl,passkey.",
    )
    samples = typer.Option(1, metavar="N", help="Trials per depth (retrieval tasks) / documents per length (ppl).")
    scale = typer.Option(
        None,
        metavar="S",
        help="Fixed scale s for pi/yarn/alibi-pi. Default: length / trained length, per length (never below 1).",
    )
    alpha = typer.Option(None, metavar="A", help="Fixed alpha for ntk/dynamic-ntk/ntk-alibi. Default: the scale.")
    param = typer.Option(
        None,
        "--param",
        "-p",
        metavar="K=V,...",
        help="Method parameter(s) k=v for every method that has them, comma list or repeated: --param window=512.",
    )
    rope_reset = typer.Option(
        False,
        "--rope-reset",
        help="Remove the RoPE scaling a checkpoint ships "
        "(llama3, yarn, longrope, ...): plain RoPE over its pretraining length.",
    )
    trained_len = typer.Option(
        None, metavar="TOKENS", help="Override the trained context length (tokens) read from the registry / config."
    )
    adapter = typer.Option(None, metavar="DIR", help="A PEFT adapter folder (LoRA, ...), merged into the model.")
    quantize = typer.Option(None, metavar="4bit|8bit", help="4bit or 8bit weights through bitsandbytes (CUDA only).")
    out = typer.Option(
        None,
        metavar="DIR",
        help="Folder for results.csv, positions.csv and figures/. Default: runs/MODEL (git-ignored).",
    )
    shard = typer.Option(
        None,
        metavar="K/N",
        help="Run worker K's part (from 0) of the sweep split "
        "over N workers, e.g. a Slurm array: --shard $SLURM_ARRAY_TASK_ID/8. "
        "Under torchrun / accelerate launch the launcher's rank is used.",
    )
    max_memory = typer.Option(
        None,
        metavar="DEV=SIZE,...",
        help="Spread one model over several GPUs within these budgets (accelerate): 0=70GiB,1=70GiB.",
    )
    device = typer.Option("auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (auto: GPU if there is one).")
    dtype = typer.Option("auto", metavar="DTYPE", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")
    seed = typer.Option(
        0, metavar="N", help="Seed of the retrieval tasks' keys and needles; part of each cell's identity."
    )
    trust_remote_code = typer.Option(
        False, "--trust-remote-code", help="Allow checkpoints that ship their own Python code (Baichuan)."
    )
    force = typer.Option(False, "--force", help="Redo cells already in the results (their old rows are replaced).")
    no_prefix = typer.Option(
        False, "--no-prefix", help="Separate forwards per length even where one forward serves all."
    )
    sink = typer.Option(
        None,
        "--sink",
        metavar="SINK,...",
        help="Also write every row to these sinks (`evalkit sinks` lists them); results.csv is always written.",
    )


def given_options(given: dict, skip: set[str]) -> list[str]:
    """The options of ``evalkit run`` that ``given`` (its arguments) sets away from their defaults,
    as tokens to type again, but for those named in ``skip``: a hint built from them keeps
    every setting of the run (task options included)."""
    import shlex

    def tokens(flag: str, value, default) -> list[str]:
        if value is None or value == default or value == []:
            return []
        if isinstance(value, bool):
            return [flag] if value else []
        return [
            t for v in (value if isinstance(value, (list, tuple)) else [value]) for t in (flag, shlex.quote(str(v)))
        ]

    out: list[str] = []
    for name, value in given.items():
        option = getattr(RunOptions, name, None)
        if name in skip or option is None:
            continue
        flag = next((d for d in option.param_decls if d.startswith("--")), "--" + name.replace("_", "-"))
        out += tokens(flag, value, option.default)
    for name, value in (given.get("task_options") or {}).items():
        out += tokens(OPTIONS.get(name).flag_name, value, None)
    return out
