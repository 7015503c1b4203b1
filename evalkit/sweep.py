"""The one sweep loop: model × method × task × length × depth × sample.

It owns ordering (methods, then tasks, then groups by length: :mod:`evalkit.plan`),
seeding, resume (cells already in ``results.csv`` are skipped), OOM handling and the
progress bar. Tasks only turn settings into cells and measure groups of cells; rows
go to the tidy CSV (the record resume reads) and to any extra row sinks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import gc
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.config import ANSWER_ROOM, RunConfig
from evalkit.errors import EvalkitError
from evalkit.family import adapter_for as find_adapter
from evalkit.loading import ensure_length, load_model
from evalkit.locks import FolderLock, check_idle
from evalkit.memory import is_oom, peak_mb, reset_peak
from evalkit.method import check_applicable
from evalkit.models import resolve_model
from evalkit.patching import patched
from evalkit.plan import Group, mine, plan
from evalkit.registry import SINKS
from evalkit.results import (
    CsvAppender,
    drop_everywhere,
    read_profile,
    read_rows,
    recorded,
    row_key,
    tidy,
)
from evalkit.schema import PROFILE, RESULTS, SCHEMA_VERSION, profile_columns, profile_required, result_columns
from evalkit.shards import folder as shard_folder
from evalkit.shards import group_cost, result_folders, sibling
from evalkit.task import Measured
from evalkit.version import __version__

logger = logging.getLogger(__name__)


@functools.cache
def code_commit() -> str:
    """The git commit of the evalkit code running, when it runs from a checkout ("" otherwise):
    ``<sha>``, or ``<sha>+dirty`` when evalkit's own files differ from that commit, so two rows
    with the same ``evalkit_version`` still tell which code made them."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        if Path(git("rev-parse", "--show-toplevel") or "/nonexistent").resolve() != root:
            return ""  # installed from a wheel, or inside somebody else's repository
        sha = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "evalkit", "tasks", "patches")
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}+dirty" if sha and changed else sha


class RunContext:
    """What tasks see: the settings, the loaded model, a per-run cache and notes."""

    def __init__(self, cfg: RunConfig, loaded):
        self.cfg, self.loaded = cfg, loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.input_device = loaded.model.get_input_embeddings().weight.device
        self.notes: list[str] = []
        self._cache: dict = {}

    def cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)
            logger.info(message)


@dataclass
class Summary:
    out: Path | None = None  # the result set's folder
    written: int = 0
    skipped_done: int = 0
    oom: int = 0
    notes: list[str] = field(default_factory=list)
    results: Path | None = None
    model: str = ""
    keys: set = field(default_factory=set)  # identities of every cell this run covers (measured or resumed)


RUNS = Path("runs")


def default_out(spec) -> Path:
    """``runs/<model>`` when no --out is given: apart from tracked results, and git-ignored (a
    ``.gitignore`` of ``*`` in ``runs/``, as pytest does for its cache), wherever evalkit runs."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in spec.name).strip(".-") or "model"
    if not RUNS.exists():
        RUNS.mkdir(parents=True, exist_ok=True)  # several workers may get here at once
        try:
            with open(RUNS / ".gitignore", "x") as f:
                f.write("# made by evalkit: run outputs are not tracked\n*\n")
        except FileExistsError:
            pass
    return RUNS / name


def measure_group(ctx, group: Group, spec, oom_at: dict):
    """Rows for one group as they are measured: batches of (cell index, row, profile). A task's
    ``measure`` returns a list (one row or :class:`Measured` per cell, in order: one batch) or
    yields (cell index, row) pairs one trial at a time (each its own batch, committed as it
    comes). Cells left when memory runs out get status oom; a group past a length that ran out
    gets status skipped."""
    import torch

    cfg, device = ctx.cfg, ctx.loaded.device
    longest = max(c.length for c in group.cells)
    if group.method in oom_at and min(c.length for c in group.cells) >= oom_at[group.method]:
        yield [
            (i, dict(status="skipped", error=f"a length <= {oom_at[group.method]} ran out of memory"), [])
            for i in range(len(group.cells))
        ]
        return
    reset_peak(device)
    done: set = set()
    t0 = time.perf_counter()

    def stamped(batch):  # a task may set its own status (nan) and sharing on a row
        nonlocal t0
        seconds, t0 = (time.perf_counter() - t0) / len(batch), time.perf_counter()
        done.update(i for i, _ in batch)
        out = []
        for i, r in batch:
            m = r if isinstance(r, Measured) else Measured(r)
            out.append(
                (
                    i,
                    {
                        "status": "ok",
                        "error": "",
                        "shared": "none",
                        **m.row,
                        "seconds": round(seconds, 3),
                        "peak_mem_mb": round(peak_mb(device), 1),
                    },
                    m.profile,
                )
            )
        return out

    try:
        with patched(
            ctx.model, group.method, trained_len=spec.trained_len, target_len=longest, rope_reset=cfg.rope_reset
        ):
            measured = group.task.measure(ctx, group.cells)
            for batch in [list(enumerate(measured))] if isinstance(measured, list) else ([p] for p in measured):
                yield stamped(batch)
    except Exception as e:  # noqa: BLE001 (only memory errors are caught; others re-raise)
        if not is_oom(e):
            raise
        oom_at[group.method] = min(oom_at.get(group.method, longest), longest)
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        left = [i for i in range(len(group.cells)) if i not in done]
        yield stamped([(i, dict(status="oom", error=error)) for i in left]) if left else []


def run(cfg: RunConfig, progress=None) -> Summary:
    """Run the sweep described by ``cfg``; returns what was written."""
    spec = resolve_model(cfg.model, cfg.trained_len)
    for call in cfg.calls:
        check_applicable(call, spec.encoding)
    out = Path(cfg.out) if cfg.out else default_out(spec)
    check_out(out)
    for each in result_folders(out):  # refuse foreign files before any work
        read_rows(each / RESULTS), read_profile(each / PROFILE)
    loaded = load_model(
        spec,
        cfg.device,
        cfg.dtype,
        cfg.trust_remote_code,
        adapter=cfg.adapter,
        quantize=cfg.quantize,
        max_memory=cfg.max_memory,
    )
    if cfg.shard is not None:
        logger.info(f"evalkit: worker {cfg.shard} ({cfg.shard.launcher or '--shard'}) on {loaded.device}")
    if loaded.device.startswith("cuda:"):  # a launcher's worker: its own GPU is the current one
        import torch

        torch.cuda.set_device(loaded.device)
    if cfg.rope_reset and find_adapter(loaded.model).shipped_type(loaded.model) == "default":
        logger.info(f"evalkit: --rope-reset: {spec.name} ships no RoPE scaling; nothing to remove")
    if cfg.rope_reset and not cfg.trained_len:  # the pretraining length under the removed scaling
        spec = dataclasses.replace(spec, trained_len=find_adapter(loaded.model).trained_len(loaded.model, True))
    ensure_length(loaded.model, max(cfg.lengths) + ANSWER_ROOM)
    ctx = RunContext(cfg, loaded)
    groups = plan(cfg, spec, ctx)
    for call in cfg.calls:  # a method the checkpoint refuses stops the run before anything is written
        with patched(
            loaded.model, call, trained_len=spec.trained_len, target_len=max(cfg.lengths), rope_reset=cfg.rope_reset
        ):
            pass
    if cfg.shard is not None:
        groups = mine(groups, cfg.shard)
    own = shard_folder(out, cfg.shard)
    lock = FolderLock(own)  # one writer per folder, from the first write to the end
    try:
        for other in result_folders(out):  # no other run on this result set, but this sweep's workers
            if other != own and not sibling(other, out, cfg.shard):
                check_idle(other)
        return _write_cells(cfg, spec, ctx, groups, out, own, progress)
    finally:
        _keep_notes(own, ctx.notes)  # also when the run stops early: what planning noted stays
        lock.release()


def check_out(out: Path) -> None:
    """Refuse an --out that cannot hold the results before the model loads (minutes, for a
    large one): a file in its place or on its path, or a folder this user cannot write in."""
    if out.exists() and not out.is_dir():
        raise EvalkitError(f"--out {out} is a file", "give a folder for the CSV files")
    existing = out
    while not existing.exists():  # the nearest folder that is there: the run creates the rest
        existing = existing.parent
    if not existing.is_dir():
        raise EvalkitError(f"--out {out}: {existing} is a file", "give a folder for the CSV files")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EvalkitError(f"--out {out}: cannot write in {existing}", "check the path and its permissions")


def _keep_notes(folder: Path, notes: list[str]) -> None:
    """The run's notes (skipped documents, ...) appended to ``notes.txt`` for the report."""
    if notes:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with open(folder / "notes.txt", "a", encoding="utf-8") as f:
            f.writelines(f"{now}\t{' '.join(n.split())}\n" for n in notes)


def _write_cells(cfg, spec, ctx, groups, out: Path, own: Path, progress) -> Summary:
    """Measure the cells not yet recorded anywhere in ``out``; their rows go to ``own``."""
    planned = [k for g in groups for k in g.keys]
    done = tidy(own)
    for other in result_folders(out):
        if other != own:
            done |= recorded(other)
    if cfg.force:
        drop_everywhere(result_folders(out), own, planned)
        done = set()
    summary = Summary(out=out, results=own / RESULTS, model=spec.name, keys={row_key(k) for k in planned})
    pending = []
    for g in groups:
        keep = [i for i, k in enumerate(g.keys) if row_key(k) not in done]
        summary.skipped_done += len(g.cells) - len(keep)
        if keep:
            pending.append(Group(g.method, g.task, [g.cells[i] for i in keep], [g.keys[i] for i in keep]))
    if pending:
        _measure_all(ctx, spec, pending, own, summary, progress)
    summary.notes = ctx.notes
    return summary


def _measure_all(ctx, spec, pending: list[Group], own: Path, summary: Summary, progress) -> None:
    """Measure ``pending`` groups in order and append their rows to ``own``, each cell's profile
    rows before its results row (the results row commits the cell; see results.tidy)."""
    import torch
    import transformers

    loaded = ctx.loaded
    common = dict(
        device=loaded.device,
        dtype=loaded.dtype,
        evalkit_version=__version__,
        evalkit_commit=code_commit(),
        source=spec.source,
        transformers_version=transformers.__version__,
        torch_version=torch.__version__.split("+")[0],
    )
    results = CsvAppender(own / RESULTS, result_columns())
    profile = CsvAppender(own / PROFILE, profile_columns(), profile_required())
    sinks = [SINKS.get(name)(own) for name in ctx.cfg.sinks]  # extra copies of the rows (results.csv is the record)
    oom_at: dict = {}
    cost = {id(g): group_cost([c.length for c in g.cells]) for g in pending}
    advance = (
        progress(sum(len(g.cells) for g in pending), sum(cost.values()))
        if progress
        else (lambda n, desc, done_cost=0.0: None)
    )
    try:
        for g in pending:
            advance(0, f"{g.method.text} {g.task.name} {max(c.length for c in g.cells)}")
            for batch in measure_group(ctx, g, spec, oom_at):
                if not batch:
                    continue
                now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                rows = [
                    dict(common, **g.keys[i], **row, schema_version=SCHEMA_VERSION, created_at=now)
                    for i, row, _ in batch
                ]
                lengths = ",".join(str(n) for n in sorted({g.cells[i].length for i, _, _ in batch}))
                advance(0, f"{g.method.text} {g.task.name} {lengths}")  # what just finished
                columns = profile_columns()
                profile.write(
                    [
                        dict({k: r.get(k) for k in columns}, position_start=s, position_end=e, nll=v)
                        for r, (_, _, buckets) in zip(rows, batch)
                        for (s, e, v) in buckets
                    ]
                )
                results.write(rows)
                for sink in sinks:
                    sink.write(rows)
                summary.written += len(rows)
                summary.oom += sum(r["status"] == "oom" for r in rows)
                advance(len(rows), None, cost[id(g)] * len(rows) / len(g.cells))
    finally:
        for each in (results, profile, *sinks):
            each.close()
