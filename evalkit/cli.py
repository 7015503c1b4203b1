"""The ``evalkit`` command line. It only builds values (RunConfig, ...) and calls the runner.

User mistakes (EvalkitError) print one line and exit with code 2.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Context-length extrapolation evaluation: RoPE/ALiBi scaling methods × perplexity and retrieval tasks.")


def _version(value: bool):
    if value:
        from evalkit import __version__

        typer.echo(f"evalkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print evalkit's version and exit.")):
    """Context-length extrapolation evaluation: RoPE/ALiBi scaling methods × perplexity and retrieval tasks."""


def fail(message: str, code: int = 2):
    typer.echo(f"evalkit: error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn):
    """One line and exit code 2 for an EvalkitError; a hint to resume on Ctrl-C."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from evalkit.errors import EvalkitError

        try:
            return fn(*args, **kwargs)
        except EvalkitError as e:
            fail(str(e))
        except OSError as e:  # a path that cannot be read or written: the user's to fix
            if e.filename is None:
                raise
            fail(f"cannot use {e.filename}: {e.strerror or type(e).__name__} (check the path and its permissions)")
        except KeyboardInterrupt:
            fail("interrupted: the rows written so far are kept; run the same command again to resume", 130)

    return wrapper


def split_list(values: Optional[List[str]], cast=str, what="value", option: str = "") -> tuple | None:
    """Repeated options and comma lists alike: --len 4096,8192 --len 16384. None when the
    option was not given; an option given with nothing in it is a mistake, not the default."""
    from evalkit.errors import EvalkitError

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
    from evalkit.errors import EvalkitError

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


def _dedupe_note(log, option: str, given: tuple | None) -> None:
    if given and len(set(given)) < len(given):
        log(f"evalkit: {option} lists a value more than once; each runs once")


def task_values(given: dict) -> dict:
    """The task options given on the command line, parsed (one line for a bad value)."""
    from evalkit.errors import EvalkitError
    from evalkit.tasks import OPTIONS

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
    import inspect

    from evalkit.tasks import OPTIONS

    sig = inspect.signature(fn)
    own = [p for name, p in sig.parameters.items() if name != "task_options"]
    extra, annotations = [], {k: v for k, v in fn.__annotations__.items() if k != "task_options"}
    for name, o in OPTIONS.items():
        if name in sig.parameters:
            raise ValueError(f"task option {name!r} clashes with an option of evalkit run")
        kind = "bool" if o.flag else "Optional[List[str]]" if o.many else "Optional[str]"
        metavar = None if o.flag else o.metavar or name.upper() + (",..." if o.many else "")
        default = typer.Option(False if o.flag else None, o.flag_name, help=o.help, metavar=metavar,
                               show_default=False)
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind))
        annotations[name] = kind

    @functools.wraps(fn)
    def wrapper(**kwargs):
        return fn(task_options={name: kwargs.pop(name) for name in OPTIONS if name in kwargs}, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
                                        + extra)
    wrapper.__annotations__ = annotations
    return wrapper


@app.command()
@user_errors
@with_task_options
def run(
    model: Optional[str] = typer.Option(None, metavar="NAME|DIR", help="Alias (evalkit models), Hugging Face id or local checkpoint "
                                                   "folder. Default: the embedded smollm2-135m."),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m", metavar="METHOD[:K=V],...",
                                               help="Scaling method(s), comma list or "
                                               "repeated, each with its parameters: ntk:alpha=2, "
                                               "self-extend:window=512,group=4 (evalkit methods). Default: none,ntk."),
    length: Optional[List[str]] = typer.Option(None, "--len", "-l", metavar="N,...",
                                               help="Context length(s) in the model's tokens "
                                               "(8192 or 8k), comma list or repeated. Default: 4096,12288."),
    task: Optional[List[str]] = typer.Option(None, "--task", "-t", metavar="TASK,...", help="Task(s), comma list or repeated "
                                             "(evalkit tasks). Default: ppl,passkey."),
    samples: int = typer.Option(1, metavar="N", help="Trials per depth (retrieval tasks) / documents per length (ppl)."),
    scale: Optional[float] = typer.Option(None, metavar="S", help="Fixed scale s for pi/yarn/alibi-pi. Default: length / "
                                          "trained length, per length (never below 1)."),
    alpha: Optional[float] = typer.Option(None, metavar="A", help="Fixed alpha for ntk/dynamic-ntk/ntk-alibi. Default: the scale."),
    param: Optional[List[str]] = typer.Option(None, "--param", "-p", metavar="K=V,...",
                                              help="Method parameter(s) k=v for every "
                                              "method that has them, comma list or repeated: --param window=512."),
    rope_reset: bool = typer.Option(False, "--rope-reset", help="Remove the RoPE scaling a checkpoint ships "
                                    "(llama3, yarn, longrope, ...): plain RoPE over its pretraining length."),
    trained_len: Optional[int] = typer.Option(None, metavar="TOKENS", help="Override the trained context length (tokens) read "
                                              "from the registry / config."),
    adapter: Optional[str] = typer.Option(None, metavar="DIR", help="A PEFT adapter folder (LoRA, ...), merged into the model."),
    quantize: Optional[str] = typer.Option(None, metavar="4bit|8bit", help="4bit or 8bit weights through bitsandbytes (CUDA only)."),
    out: Optional[Path] = typer.Option(None, metavar="DIR", help="Folder for results.csv, positions.csv and figures/. "
                                       "Default: runs/MODEL (git-ignored)."),
    shard: Optional[str] = typer.Option(None, metavar="K/N", help="Run worker K's part (from 0) of the sweep split "
                                        "over N workers, e.g. a Slurm array: --shard $SLURM_ARRAY_TASK_ID/8. "
                                        "Under torchrun / accelerate launch the launcher's rank is used."),
    max_memory: Optional[str] = typer.Option(None, metavar="DEV=SIZE,...", help="Spread one model over "
                                             "several GPUs within these budgets (accelerate): 0=70GiB,1=70GiB."),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (auto: GPU if there is one)."),
    dtype: str = typer.Option("auto", metavar="DTYPE", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the retrieval tasks' keys and needles; part of each cell's identity."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Allow checkpoints that ship their own Python code (Baichuan)."),
    force: bool = typer.Option(False, "--force", help="Redo cells already in the results (their old rows are "
                               "replaced)."),
    no_prefix: bool = typer.Option(False, "--no-prefix", help="Separate forwards per length even where one forward "
                                   "serves all."),
    task_options: Optional[dict] = None,
):
    """Sweep methods × lengths × tasks on one model; rows go to OUT/results.csv as each cell finishes.

    A re-run with the same settings skips cells already recorded. The task options below
    (--depths, --data, --haystack, ...) are declared by the tasks: `evalkit tasks` says which.
    """
    from evalkit.sweep import DEMO_LENGTHS, RunConfig, default_tasks, ignored_options, run as run_sweep
    from evalkit.tasks import OPTIONS

    from evalkit.errors import EvalkitError
    from evalkit.patches import split_method_list

    if method is not None and not split_method_list(method):
        raise EvalkitError("--method was given an empty list", "give at least one value, or leave it out")
    lists = dict(methods=tuple(split_method_list(method or [])) or None,
                 lengths=split_list(length, parse_length, "length", "--len"),
                 tasks=split_list(task, what="task", option="--task"))
    options = task_values(task_options or {})
    log = functools.partial(typer.echo, err=True)
    for option, values in [("--method", lists["methods"]), ("--len", lists["lengths"]), ("--task", lists["tasks"])] \
            + [(OPTIONS.get(n).flag_name, v) for n, v in options.items() if isinstance(v, tuple)]:
        _dedupe_note(log, option, values)
    from evalkit.models import parse_max_memory
    from evalkit.progress import reporter
    from evalkit.shards import choose, worker_device

    worker = choose(shard)
    cfg = RunConfig(
        model=model, methods=lists["methods"] or ("none", "ntk"), lengths=lists["lengths"] or DEMO_LENGTHS,
        tasks=lists["tasks"] or default_tasks(), samples=samples, scale=scale, alpha=alpha, trained_len=trained_len,
        params=param_values(param), rope_reset=rope_reset, adapter=adapter, quantize=quantize, options=options,
        out=str(out) if out else None, shard=worker, max_memory=parse_max_memory(max_memory) if max_memory else None,
        device=worker_device(device, worker, _cuda_count(device)), dtype=dtype, seed=seed,
        trust_remote_code=trust_remote_code, force=force, prefix=not no_prefix)
    for name in cfg.unused_params():
        log(f"evalkit: {name} (--param / --{name}) is not a parameter of the methods run ({', '.join(cfg.methods)}); "
            "ignored")
    for flag in ignored_options(cfg.tasks, options):
        log(f"evalkit: {flag} is not read by the tasks run ({', '.join(cfg.tasks)}); ignored (see evalkit tasks)")
    summary = run_sweep(cfg, log=log, progress=reporter(log, worker))
    log(f"{summary.written} row(s) written to {summary.results}"
        + (f", {summary.skipped_done} cell(s) already there" if summary.skipped_done else "")
        + (f", {summary.oom} out of memory" if summary.oom else ""))
    from evalkit.compare import frame_of, render_tables
    from evalkit.results import RESULTS, read_rows, row_keys
    from evalkit.shards import result_folders

    ours = [dict(r, _file=str(f / RESULTS)) for f in result_folders(summary.out) for r in read_rows(f / RESULTS)
            if any(k in summary.keys for k in row_keys(r))]
    typer.echo(render_tables(frame_of(ours), fmt="table"))  # this run's cells only
    _next_steps(summary, cfg, log)


def _cuda_count(device: str) -> int:
    if device not in ("auto", "cuda"):
        return 0
    import torch

    return torch.cuda.device_count()


def _next_steps(summary, cfg, log) -> None:
    """Figures of the whole result set (a lone run), where everything is, and what to try next."""
    out, worker = summary.out, cfg.shard
    model = f" --model {cfg.model}" if cfg.model else ""
    ran = {c.name for c in cfg.calls}
    more = next((m for m in ("yarn", "ntk", "self-extend", "pi") if m not in ran), "pi:scale=4")
    if worker is not None:
        log(f"evalkit: worker {worker} is done; once every worker is: evalkit compare {out} --ci, "
            f"evalkit plot {out} --out {out / 'figures'}, evalkit report {out} --out {out / 'report.html'}")
        return
    from evalkit.errors import EvalkitError
    from evalkit.plots import plot_all

    try:
        figures = sorted(plot_all([out], out / "figures"))
    except Exception as e:  # noqa: BLE001 (the sweep is done and recorded: a figure must not fail it)
        figures = []
        log(f"evalkit: no figures drawn ({e if isinstance(e, EvalkitError) else f'{type(e).__name__}: {e}'}); "
            f"the results are complete, try evalkit plot {out}")
    log(f"\nresults: {summary.results}"
        + (f"\nfigures: {out / 'figures'}/ ({', '.join(f.name for f in figures)})" if figures else ""))
    log("next:\n"
        f"  evalkit compare {out} --ci                 # tables with 95% intervals\n"
        f"  evalkit report {out} --out {out / 'report.html'}   # one page: setup, tables, figures\n"
        f"  evalkit run{model} --method {','.join(cfg.methods + (more,))} --len {','.join(map(str, cfg.lengths))} "
        f"--out {out}   # one more method: the cells above are kept\n"
        "  evalkit methods; evalkit tasks; evalkit models   # what else there is")


@app.command()
@user_errors
def models():
    """List model aliases (built in and from ./evalkit.toml), then the model families evalkit patches."""
    from evalkit.families import FAMILIES
    from evalkit.models import all_models

    rows = [(s.name, s.family, s.encoding, str(s.trained_len), "yes" if s.remote_code else "", s.source)
            for s in all_models().values()]
    _table(["alias", "family", "encoding", "trained", "remote code", "source"], rows)
    typer.echo("")
    _table(["family", "model_type", "encoding", "installer", "checked against"],
           [(f.name, ",".join(f.model_types), f.encoding, f.adapter, f.checked) for f in FAMILIES.values()])


@app.command()
@user_errors
def methods():
    """List scaling methods: encoding, parameters (default), length-independence and formula."""
    from evalkit.patches import METHODS

    def independent(m) -> str:
        if not m.static:
            return "no"
        derived = [p.name for p in m.params if p.derive]
        return f"if {','.join(derived)} given" if derived else "yes"

    _table(["method", "encoding", "parameters (default)", "length-independent", "what it does"],
           [(m.name, m.encoding, " ".join(f"{p.name}={p.shown_default}" for p in m.params) or "-", independent(m),
             m.summary) for m in METHODS.values()])


@app.command()
@user_errors
def tasks():
    """List tasks, what each measures, and the `evalkit run` options each reads."""
    from evalkit.tasks import TASKS

    _table(["task", "default", "metrics", "options", "what it measures"],
           [(n, "yes" if t.default else "", ",".join(m.name for m in t.metrics),
             " ".join(o.flag_name for o in t.options) or "-", t.summary) for n, t in TASKS.items()])


@app.command()
@user_errors
def compare(
    paths: List[Path] = typer.Argument(..., metavar="RESULTS", help="Result CSV files or folders of them."),
    metric: Optional[List[str]] = typer.Option(None, metavar="METRIC,...", help="Metric(s), as `evalkit tasks` lists them. Default: each task's main metric present."),
    model: Optional[List[str]] = typer.Option(None, metavar="MODEL,...", help="Only these models (as in the model "
                                              "column)."),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m", metavar="METHOD,...", help="Only these methods."),
    seed: Optional[int] = typer.Option(None, metavar="N", help="Only rows of this seed."),
    baseline: Optional[str] = typer.Option(None, metavar="METHOD", help="Show ratios (ppl) or differences in "
                                           "percentage points (accuracies) against this method."),
    per_depth: bool = typer.Option(False, help="Retrieval accuracy per needle depth."),
    ci: bool = typer.Option(False, "--ci", help="Show 95% intervals: Wilson for accuracy, a seeded bootstrap "
                            "over trials for fractions recalled and over documents for perplexity."),
    fmt: str = typer.Option("table", "--format", "-f", metavar="FORMAT", help="table, markdown, csv, latex or html."),
):
    """Pivot tables from results: methods as rows, context lengths (tokens) as columns."""
    from evalkit.compare import load_results, render_tables

    df = load_results(paths)
    for col, keep in (("model", split_list(model)), ("method", split_list(method))):
        if keep:
            missing = set(keep) - set(df[col])
            if missing:
                fail(f"no rows for {col} {', '.join(sorted(missing))} (have: {', '.join(sorted(set(df[col])))})")
            df = df[df[col].isin(keep)]
    if seed is not None:
        df = df[df["seed"] == seed]
    typer.echo(render_tables(df, fmt, split_list(metric) or None, baseline, per_depth, ci))


@app.command()
@user_errors
def plot(
    paths: List[Path] = typer.Argument(..., metavar="RESULTS", help="Result CSV files or folders of them "
                                       "(positions.csv beside)."),
    out: Path = typer.Option(Path("figures"), metavar="DIR", help="Folder for the figures."),
    fmt: str = typer.Option("png", "--format", "-f", metavar="FORMAT", help="png, pdf or svg."),
):
    """Figures from results: each task's metric vs length, depth × length heatmaps, loss by position."""
    from evalkit.plots import plot_all

    for path in plot_all(paths, out, fmt):
        typer.echo(str(path))


@app.command()
@user_errors
def report(
    paths: List[Path] = typer.Argument(..., help="Result CSV files or folders of them (positions.csv and notes.txt "
                                       "beside)."),
    out: Path = typer.Option(..., metavar="FILE", help="The report file: .html / .htm or .md (the suffix chooses "
                             "the format)."),
    title: Optional[str] = typer.Option(None, metavar="TEXT", help="Title. Default: evalkit report: MODELS."),
):
    """One self-contained report (HTML or Markdown): what was run, tables with 95% intervals, cost, figures, notes."""
    from evalkit.report import write_report

    typer.echo(str(write_report(paths, out, title)))


def _table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        typer.echo("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())


def main(argv: Optional[List[str]] = None):
    """The ``evalkit`` command: click's own usage errors (an unknown command, an option without
    its value) become one ``evalkit: error:`` line with exit code 2, like evalkit's. (Typer may
    vendor its own click, so its exceptions are recognised by class name.)"""
    try:
        code = app(args=argv, prog_name="evalkit", standalone_mode=False)
    except Exception as e:  # noqa: BLE001 (re-raised unless it is one of click's control exceptions)
        kinds = {k.__name__ for k in type(e).__mro__}
        if "UsageError" in kinds:
            command = getattr(getattr(e, "ctx", None), "command_path", "evalkit")
            typer.echo(f"evalkit: error: {e.format_message()} (see {command} --help)", err=True)
            raise SystemExit(2) from None
        if "Exit" in kinds:
            raise SystemExit(e.exit_code) from None
        if "Abort" in kinds:
            typer.echo("evalkit: error: aborted", err=True)
            raise SystemExit(130) from None
        raise
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
