"""The ``evalkit`` command line. It only builds values (RunConfig, ...) and calls the runner.

User mistakes (EvalkitError) print one line and exit with code 2. Messages go through
:mod:`evalkit.log` (``-v`` / ``--quiet``). The command-line parsing helpers are in
:mod:`evalkit.cli_options`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import List, Optional

import typer

from evalkit import catalog, log
from evalkit.cli_options import (
    RunOptions,
    given_options,
    param_values,
    parse_length,
    split_list,
    task_values,
    with_task_options,
)
from evalkit.compare import frame_of, load_results, render_tables
from evalkit.config import DEMO_LENGTHS, RunConfig, ignored_options
from evalkit.errors import EvalkitError
from evalkit.loading import parse_max_memory
from evalkit.method import default_methods, split_method_list
from evalkit.models import all_models
from evalkit.progress import reporter
from evalkit.registry import METHODS, OPTIONS, SINKS
from evalkit.results import read_rows, row_keys
from evalkit.schema import RESULTS
from evalkit.shards import choose, result_folders, worker_device
from evalkit.sweep import run as run_sweep
from evalkit.task import default_tasks
from evalkit.version import __version__

logger = logging.getLogger(__name__)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Context-length extrapolation evaluation: RoPE/ALiBi scaling methods × perplexity and retrieval tasks.",
)


def _version(value: bool):
    if value:
        typer.echo(f"evalkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print evalkit's version and exit."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More messages (debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr."),
):
    """Context-length extrapolation evaluation: RoPE/ALiBi scaling methods × perplexity and retrieval tasks."""
    log.setup(verbose, quiet)


def fail(message: str, code: int = 2):
    typer.echo(f"evalkit: error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn):
    """One line and exit code 2 for an EvalkitError; a hint to resume on Ctrl-C."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
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


@app.command()
@user_errors
@with_task_options
def run(
    model: Optional[str] = RunOptions.model,
    method: Optional[List[str]] = RunOptions.method,
    length: Optional[List[str]] = RunOptions.length,
    task: Optional[List[str]] = RunOptions.task,
    samples: int = RunOptions.samples,
    scale: Optional[float] = RunOptions.scale,
    alpha: Optional[float] = RunOptions.alpha,
    param: Optional[List[str]] = RunOptions.param,
    rope_reset: bool = RunOptions.rope_reset,
    trained_len: Optional[int] = RunOptions.trained_len,
    adapter: Optional[str] = RunOptions.adapter,
    quantize: Optional[str] = RunOptions.quantize,
    out: Optional[Path] = RunOptions.out,
    shard: Optional[str] = RunOptions.shard,
    max_memory: Optional[str] = RunOptions.max_memory,
    device: str = RunOptions.device,
    dtype: str = RunOptions.dtype,
    seed: int = RunOptions.seed,
    trust_remote_code: bool = RunOptions.trust_remote_code,
    force: bool = RunOptions.force,
    sink: Optional[List[str]] = RunOptions.sink,
    no_prefix: bool = RunOptions.no_prefix,
    task_options: Optional[dict] = None,
):
    """Sweep methods × lengths × tasks on one model; rows go to OUT/results.csv as each cell finishes.

    A re-run with the same settings skips cells already recorded. The task options below
    (--depths, --data, --haystack, ...) are declared by the tasks: `evalkit tasks` says which.
    """
    given = dict(locals())
    cfg = _run_config(**given)
    summary = run_sweep(cfg, progress=reporter(logger.info, cfg.shard))
    _summarise(summary, cfg, given)


def _run_config(
    method, length, task, task_options, param, shard, out, max_memory, device, no_prefix, sink, **fields
) -> RunConfig:
    """The RunConfig the command line describes, with a note for each value given twice or not read."""
    if method is not None and not split_method_list(method):
        raise EvalkitError("--method was given an empty list", "give at least one value, or leave it out")
    lists = dict(
        methods=tuple(split_method_list(method or [])) or None,
        lengths=split_list(length, parse_length, "length", "--len"),
        tasks=split_list(task, what="task", option="--task"),
    )
    options = task_values(task_options or {})
    for option, values in [("--method", lists["methods"]), ("--len", lists["lengths"]), ("--task", lists["tasks"])] + [
        (OPTIONS.get(n).flag_name, v) for n, v in options.items() if isinstance(v, tuple)
    ]:
        if values and len(set(values)) < len(values):
            logger.info(f"evalkit: {option} lists a value more than once; each runs once")
    worker = choose(shard)
    cfg = RunConfig(
        methods=lists["methods"] or default_methods(),
        lengths=lists["lengths"] or DEMO_LENGTHS,
        tasks=lists["tasks"] or default_tasks(),
        params=param_values(param),
        options=options,
        out=str(out) if out else None,
        shard=worker,
        max_memory=parse_max_memory(max_memory) if max_memory else None,
        device=worker_device(device, worker, _cuda_count(device)),
        prefix=not no_prefix,
        sinks=split_list(sink, what="sink", option="--sink") or (),
        **fields,
    )
    for name in cfg.unused_params():
        logger.info(
            f"evalkit: {name} (--param / --{name}) is not a parameter of the methods run "
            f"({', '.join(cfg.methods)}); ignored"
        )
    for flag in ignored_options(cfg.tasks, options):
        logger.info(
            f"evalkit: {flag} is not read by the tasks run ({', '.join(cfg.tasks)}); ignored (see evalkit tasks)"
        )
    return cfg


def _summarise(summary, cfg, given: dict) -> None:
    """What was written, this run's cells as tables, and what to do next."""
    logger.info(
        f"{summary.written} row(s) written to {summary.results}"
        + (f", {summary.skipped_done} cell(s) already there" if summary.skipped_done else "")
        + (f", {summary.oom} out of memory" if summary.oom else "")
    )
    ours = [
        dict(r, _file=str(f / RESULTS))
        for f in result_folders(summary.out)
        for r in read_rows(f / RESULTS)
        if any(k in summary.keys for k in row_keys(r))
    ]
    typer.echo(render_tables(frame_of(ours), fmt="table"))  # this run's cells only
    _next_steps(summary, cfg, given)


def _cuda_count(device: str) -> int:
    if device not in ("auto", "cuda"):
        return 0
    import torch

    return torch.cuda.device_count()


def _next_steps(summary, cfg, given: dict) -> None:
    """Figures of the whole result set (a lone run), where everything is, and what to try next."""
    from evalkit.plots import plot_all  # lazy: matplotlib

    out, worker = summary.out, cfg.shard
    model = f" --model {cfg.model}" if cfg.model else ""
    ran = {c.name for c in cfg.calls}
    more = next((m.name for m in METHODS.values() if m.name not in ran and m.params and m.static), None)
    if worker is not None:
        logger.info(
            f"evalkit: worker {worker} is done; once every worker is: evalkit compare {out} --ci, "
            f"evalkit plot {out} --out {out / 'figures'}, evalkit report {out} --out {out / 'report.html'}"
        )
        return
    try:
        figures = sorted(plot_all([out], out / "figures"))
    except Exception as e:  # noqa: BLE001 (the sweep is done and recorded: a figure must not fail it)
        figures = []
        logger.info(
            f"evalkit: no figures drawn ({e if isinstance(e, EvalkitError) else f'{type(e).__name__}: {e}'}); "
            f"the results are complete, try evalkit plot {out}"
        )
    logger.info(
        f"\nresults: {summary.results}"
        + (f"\nfigures: {out / 'figures'}/ ({', '.join(f.name for f in figures)})" if figures else "")
    )
    kept = " ".join(given_options(given, {"model", "method", "length", "task", "out", "force", "shard"}))
    again = (
        (
            f"  evalkit run{model} --method {','.join(cfg.methods + ((more,) if more else ()))} "
            f"--len {','.join(map(str, cfg.lengths))} --task {','.join(cfg.tasks)}{' ' + kept if kept else ''} "
            f"--out {out}   # one more method: the cells above are kept\n"
        )
        if more
        else ""
    )
    logger.info(
        "next:\n"
        f"  evalkit compare {out} --ci                 # tables with 95% intervals\n"
        f"  evalkit report {out} --out {out / 'report.html'}   # one page: setup, tables, figures\n"
        + again
        + "  evalkit methods; evalkit tasks; evalkit models   # what else there is"
    )


_LIST_FORMAT = typer.Option("table", "--format", "-f", metavar="FORMAT", help="table or markdown.")


def _listing(fmt: str, *tables) -> None:
    if fmt not in ("table", "markdown"):
        raise EvalkitError(f"--format {fmt}: unknown", "use table or markdown")
    typer.echo("\n\n".join(catalog.render(*t, fmt=fmt) for t in tables))


@app.command()
@user_errors
def models(fmt: str = _LIST_FORMAT):
    """List model aliases (built in and from ./evalkit.toml), then the model families evalkit patches."""
    rows = [
        (s.name, s.family, s.encoding, str(s.trained_len), "yes" if s.remote_code else "", s.source)
        for s in all_models().values()
    ]
    _listing(fmt, (catalog.models_table()[0], rows), catalog.families_table())


@app.command()
@user_errors
def methods(fmt: str = _LIST_FORMAT):
    """List scaling methods: encoding, parameters (default), length-independence and formula."""
    _listing(fmt, catalog.methods_table())


@app.command()
@user_errors
def tasks(fmt: str = _LIST_FORMAT):
    """List tasks, what each measures, and the `evalkit run` options each reads."""
    _listing(fmt, catalog.tasks_table())


@app.command()
@user_errors
def sinks(fmt: str = _LIST_FORMAT):
    """List row sinks (`evalkit run --sink NAME`): where rows go besides results.csv."""
    _listing(
        fmt,
        (
            ["sink", "what it writes"],
            [(n, (k.__doc__ or "").strip().splitlines()[0] if k.__doc__ else k.__module__) for n, k in SINKS.items()],
        ),
    )


@app.command()
@user_errors
def compare(
    paths: List[Path] = typer.Argument(..., metavar="RESULTS", help="Result CSV files or folders of them."),
    metric: Optional[List[str]] = typer.Option(
        None,
        metavar="METRIC,...",
        help="Metric(s), as `evalkit tasks` lists them. Default: each task's main metric present.",
    ),
    model: Optional[List[str]] = typer.Option(
        None, metavar="MODEL,...", help="Only these models (as in the model column)."
    ),
    method: Optional[List[str]] = typer.Option(
        None, "--method", "-m", metavar="METHOD,...", help="Only these methods."
    ),
    seed: Optional[int] = typer.Option(None, metavar="N", help="Only rows of this seed."),
    baseline: Optional[str] = typer.Option(
        None,
        metavar="METHOD",
        help="Show ratios (ppl) or differences in percentage points (accuracies) against this method.",
    ),
    per_depth: bool = typer.Option(False, help="Retrieval accuracy per needle depth."),
    ci: bool = typer.Option(
        False,
        "--ci",
        help="Show 95% intervals: Wilson for accuracy, a seeded bootstrap "
        "over trials for fractions recalled and over documents for perplexity.",
    ),
    fmt: str = typer.Option("table", "--format", "-f", metavar="FORMAT", help="table, markdown, csv, latex or html."),
):
    """Pivot tables from results: methods as rows, context lengths (tokens) as columns."""
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
    paths: List[Path] = typer.Argument(
        ..., metavar="RESULTS", help="Result CSV files or folders of them (positions.csv beside)."
    ),
    out: Optional[Path] = typer.Option(
        None, metavar="DIR", help="Folder for the figures. Default: figures/ beside the first results."
    ),
    fmt: str = typer.Option("png", "--format", "-f", metavar="FORMAT", help="png, pdf or svg."),
):
    """Figures from results: each task's metric vs length, depth × length heatmaps, loss by position."""
    from evalkit.plots import plot_all  # lazy: matplotlib

    if out is None:  # beside the results (as `evalkit run` writes them), not the working directory
        first = paths[0]
        out = (first if first.is_dir() else first.parent) / "figures"
    for path in plot_all(paths, out, fmt):
        typer.echo(str(path))


@app.command()
@user_errors
def report(
    paths: List[Path] = typer.Argument(
        ..., help="Result CSV files or folders of them (positions.csv and notes.txt beside)."
    ),
    out: Path = typer.Option(
        ..., metavar="FILE", help="The report file: .html / .htm or .md (the suffix chooses the format)."
    ),
    title: Optional[str] = typer.Option(None, metavar="TEXT", help="Title. Default: evalkit report: MODELS."),
):
    """One self-contained report (HTML or Markdown): what was run, tables with 95% intervals, cost, figures, notes."""
    from evalkit.report import write_report  # lazy: matplotlib

    typer.echo(str(write_report(paths, out, title)))


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
