"""The one sweep loop: model × method × task × length × depth × sample.

It owns ordering (methods, then tasks, then groups by length), seeding, resume
(cells already in ``results.csv`` are skipped), OOM handling and the progress
bar. Tasks only turn settings into cells and measure groups of cells.
"""
from __future__ import annotations

import dataclasses
import functools
import datetime as dt
import gc
import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import evalkit
from evalkit.errors import EvalkitError
from evalkit.results import (PROFILE, PROFILE_COLUMNS, PROFILE_REQUIRED, RESULTS, CsvAppender, FolderLock, check_idle,
                             drop_everywhere, read_profile, read_rows, recorded, result_columns, row_key, tidy)
from evalkit.shards import Shard, assign, group_cost, result_folders, sibling
from evalkit.shards import folder as shard_folder


@functools.cache
def code_commit() -> str:
    """The git commit of the evalkit code running, when it runs from a checkout ("" otherwise):
    ``<sha>``, or ``<sha>+dirty`` when evalkit's own files differ from that commit, so two rows
    with the same ``evalkit_version`` still tell which code made them."""
    import subprocess

    root = Path(evalkit.__file__).resolve().parent.parent

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


def ignored_options(tasks, given) -> list[str]:
    """The options given that none of ``tasks`` reads (a note, not an error: shared scripts)."""
    from evalkit.tasks import OPTIONS, options_of

    read = options_of(tasks)
    return [OPTIONS.get(n).flag_name for n in given if n in OPTIONS and n not in read]


def default_tasks() -> tuple[str, ...]:
    from evalkit.tasks import default_tasks as registered

    return registered()


DEMO_LENGTHS = (4096, 12288)
MAX_SAMPLES = 100_000  # trials per depth / documents per length
ANSWER_ROOM = 256  # positions past the longest length for decoded answers (models with a fixed maximum)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; validated on construction. ``options`` holds the task
    options given (by name, e.g. ``{"depths": (0, 0.5, 1)}``); the selected tasks' other
    options take their defaults, and an option none of them reads is left out (see
    :func:`ignored_options`)."""

    model: str | None = None
    methods: tuple[str, ...] = ("none",)  # method texts: "ntk", "ntk:alpha=2", "self-extend:window=512,group=4"
    lengths: tuple[int, ...] = DEMO_LENGTHS
    tasks: tuple[str, ...] = field(default_factory=lambda: default_tasks())
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

    def __post_init__(self):
        from evalkit.patches import MAX_FACTOR
        from evalkit.tasks import TASKS

        for name in ("scale", "alpha"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and 1 <= v <= MAX_FACTOR):
                raise EvalkitError(f"--{name} must be a finite number from 1 to {MAX_FACTOR:g}, got {v}",
                                   "omit it for the default (length / trained)")
        object.__setattr__(self, "methods", tuple(dict.fromkeys(c.text for c in self._calls())))
        for name in ("lengths", "tasks"):  # each value once, in the order given
            object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))
        for t in self.tasks:
            TASKS.get(t)
        if not self.methods or not self.lengths or not self.tasks:
            raise EvalkitError("nothing to run", "give at least one --method, --len and --task")
        object.__setattr__(self, "options", self._task_options())
        bad = [n for n in self.lengths if n <= 0]
        if bad:
            raise EvalkitError(f"length must be a positive number of tokens, got {bad[0]}", "e.g. --len 8192")
        for t in self.tasks:
            need = TASKS.get(t).min_length
            if min(self.lengths) < need:
                raise EvalkitError(f"task {t} needs lengths of at least {need} tokens, got {min(self.lengths)}",
                                   "e.g. --len 8192")
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise EvalkitError(f"--samples must be between 1 and {MAX_SAMPLES}, got {self.samples}", "e.g. --samples 5")
        if self.quantize is not None and self.quantize not in ("4bit", "8bit"):
            raise EvalkitError(f"--quantize {self.quantize}: unknown", "use 4bit or 8bit")
        if self.adapter is not None and not (Path(self.adapter).expanduser() / "adapter_config.json").is_file():
            raise EvalkitError(f"--adapter {self.adapter}: no adapter_config.json there",
                               "give the folder a PEFT adapter was saved to (save_pretrained)")
        if self.trained_len is not None and self.trained_len <= 0:
            raise EvalkitError("--trained-len must be positive", "e.g. --trained-len 4096")
        if self.shard is not None and not isinstance(self.shard, Shard):
            raise EvalkitError(f"shard must be an evalkit.shards.Shard, got {self.shard!r}", "parse_shard('0/4')")
        if self.max_memory and self.shard is not None and self.shard.local_count > 1:
            raise EvalkitError(f"--max-memory spreads one model over a node's GPUs, but {self.shard.local_count} "
                               "workers were started on this node", "start one worker per node: --nproc-per-node 1")

    def sweep_params(self) -> dict:
        """Parameters given for every method (``--param``; ``--scale`` also sets alpha unless given)."""
        given = dict(self.params)
        for name in ("scale", "alpha"):
            if getattr(self, name) is not None and name in given:
                raise EvalkitError(f"--{name} and --param {name} are both given", "give it once")
        if self.scale is not None:
            given.setdefault("scale", self.scale)
            given.setdefault("alpha", self.alpha if self.alpha is not None else self.scale)
        if self.alpha is not None:
            given.setdefault("alpha", self.alpha)
        return given

    def _calls(self) -> list:
        """Each method text parsed, with the sweep-wide parameters it declares added."""
        from evalkit.patches import METHODS, parse_call

        known = {p.name for m in METHODS.values() for p in m.params}
        unknown = sorted(set(self.params) - known)
        if unknown:
            raise EvalkitError(f"--param {unknown[0]}: no method has such a parameter",
                               f"method parameters: {', '.join(sorted(known))} (evalkit methods)")
        return [parse_call(text).with_defaults(self.sweep_params()) for text in self.methods]

    @property
    def calls(self) -> list:
        from evalkit.patches import parse_call

        return [parse_call(text) for text in self.methods]

    def unused_params(self) -> list[str]:
        """``--param`` (or --scale / --alpha) names none of the selected methods declares (a note)."""
        declared = {p.name for c in self.calls for p in c.method.params}
        given = list(self.params) + [n for n in ("scale", "alpha") if getattr(self, n) is not None]
        return [n for n in dict.fromkeys(given) if n not in declared]

    def _task_options(self) -> dict:
        """Every option of the selected tasks: given (validated) or its default."""
        from evalkit.tasks import OPTIONS, options_of

        declared = options_of(self.tasks)
        given = {name: OPTIONS.get(name).validate(value) for name, value in self.options.items()}  # read or not
        return {name: given[name] if name in given else o.default for name, o in declared.items()}

    def opt(self, name: str):
        """A task option's value (given or default)."""
        return self.options[name]


class RunContext:
    """What tasks see: the settings, the loaded model, a per-run cache and notes."""

    def __init__(self, cfg: RunConfig, loaded, log):
        self.cfg, self.loaded, self.log = cfg, loaded, log
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.input_device = loaded.model.get_input_embeddings().weight.device
        self.notes: list[str] = []
        self.reuse = ""  # the method being planned: how far its trials may share a KV prefix (reuse_mode)
        self._cache: dict = {}

    def cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)
            self.log(message)


@dataclass
class Group:
    method: object  # a MethodCall
    task: object
    cells: list
    keys: list[dict]  # the identifying fields of each cell's row


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


def prefix_mode(cfg: RunConfig, call, model=None) -> bool:
    """One forward serves every length when position i's output cannot depend on the length:
    a static method none of whose parameters is derived from the length, on a checkpoint whose
    own RoPE is length-independent too (not ``dynamic`` or ``longrope`` as shipped)."""
    from evalkit.patches import find_adapter

    shipped_ok = model is None or find_adapter(model).length_independent(model, cfg.rope_reset)
    return cfg.prefix and call.length_independent and shipped_ok


def reuse_mode(cfg: RunConfig, call, ctx) -> str:
    """How far retrieval trials of one method may start from another trial's KV cache: "lengths"
    (across lengths: the method and the checkpoint are length-independent), "length" (within one
    length: a static method whose factor follows the length), or "" (each trial prefilled whole:
    a dynamic method, a checkpoint with length-dependent RoPE, --no-prefix, or a cache that
    cannot be cut back exactly: sliding windows, remote code)."""
    from evalkit.patches import find_adapter

    if not (cfg.prefix and call.method.static and find_adapter(ctx.model).length_independent(ctx.model, cfg.rope_reset)
            and ctx.cached("croppable-cache", lambda: _croppable(ctx))):
        return ""
    return "lengths" if call.length_independent else "length"


def _croppable(ctx) -> bool:
    """Whether this model's KV cache can be cut back exactly (a two-token forward, unpatched)."""
    import torch

    from evalkit.forward import croppable, next_token_logits

    _, cache = next_token_logits(ctx.model, torch.tensor([[1, 1]], device=ctx.input_device))
    return croppable(cache)


def cell_fields(cfg, spec, call, cell, rope_scaling: str = "default") -> dict:
    """The identifying fields of a cell's row (the resume key): the common ones, then the task's
    (cell fields such as depth, the seed, or its options). ``scale`` and ``alpha`` hold the values
    used when the method has them; ``params`` every other value fixed for the whole sweep (given or
    constant, as ``k=v,k=v``) and the given scale/alpha."""
    from evalkit.patches import format_params
    from evalkit.tasks import TASKS

    values = call.resolve(spec.trained_len, cell.length)
    fields = dict(model=spec.name, source=spec.source, method=call.name, scale=values.get("scale"),
                  alpha=values.get("alpha"), params=format_params(call.method, call.fixed()),
                  rope_scaling=rope_scaling, adapter=str(Path(cfg.adapter).expanduser().resolve()) if cfg.adapter else "",
                  quantize=cfg.quantize or "",
                  trained_len=spec.trained_len, task=cell.task,
                  length=cell.length, depth=cell.depth, sample=cell.sample, seed=cfg.seed)
    for f in TASKS.get(cell.task).identity:
        if f not in fields:
            fields[f] = cfg.opt(f)
    return fields


def rope_scaling_label(cfg, model) -> str:
    """What a row records of the checkpoint's own RoPE: "default" (plain), its shipped scaling
    ("llama3", "yarn", ...), or "removed:TYPE" under --rope-reset."""
    from evalkit.patches import find_adapter

    shipped = find_adapter(model).shipped_type(model)
    return f"removed:{shipped}" if cfg.rope_reset and shipped != "default" else shipped


def plan(cfg, spec, ctx) -> list[Group]:
    from evalkit.tasks import TASKS

    groups = []
    shipped = rope_scaling_label(cfg, ctx.model)
    for task_name in cfg.tasks:
        task = TASKS.get(task_name)
        cells = ctx.cached(("cells", task_name), lambda: task.cells(ctx, sorted(cfg.lengths)))
        for call in cfg.calls:
            by_group: dict = {}
            one_forward = prefix_mode(cfg, call, ctx.model)
            ctx.reuse = reuse_mode(cfg, call, ctx)  # read by tasks that can share a KV prefix
            for cell in cells:
                by_group.setdefault(task.group(ctx, cell, one_forward), []).append(cell)
            for members in by_group.values():
                groups.append(Group(call, task, members, [cell_fields(cfg, spec, call, c, shipped) for c in members]))
    order = {c: i for i, c in enumerate(cfg.calls)}
    groups.sort(key=lambda g: (order[g.method], max(c.length for c in g.cells)))
    return groups


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


def _is_oom(error: BaseException) -> bool:
    import torch

    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _gpus(device: str) -> list[int]:
    """The GPUs a run's model lives on: the one named, or all of them (``device_map="auto"``)."""
    import torch

    if not device.startswith("cuda"):
        return []
    return [int(device.split(":")[1])] if ":" in device else list(range(torch.cuda.device_count()))


def _peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return sum(torch.cuda.max_memory_allocated(i) for i in _gpus(device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        for i in _gpus(device):
            torch.cuda.reset_peak_memory_stats(i)


def measure_group(ctx, group: Group, spec, oom_at: dict):
    """Rows for one group as they are measured: batches of (cell index, row) pairs. A task's
    ``measure`` returns a list (one row per cell, in order: one batch) or yields (cell index,
    row) pairs one trial at a time (each its own batch, committed as it comes). Cells left when
    memory runs out get status oom; a group past a length that ran out gets status skipped."""
    import torch

    from evalkit.patches import patched

    cfg, device = ctx.cfg, ctx.loaded.device
    longest = max(c.length for c in group.cells)
    if group.method in oom_at and min(c.length for c in group.cells) >= oom_at[group.method]:
        yield [(i, dict(status="skipped", error=f"a length <= {oom_at[group.method]} ran out of memory"))
               for i in range(len(group.cells))]
        return
    _reset_peak(device)
    done: set = set()
    t0 = time.perf_counter()

    def stamped(batch):  # a task may set its own status (nan) on a row
        nonlocal t0
        seconds, t0 = (time.perf_counter() - t0) / len(batch), time.perf_counter()
        done.update(i for i, _ in batch)
        return [(i, {"status": "ok", "error": "", **r, "seconds": round(seconds, 3),
                     "peak_mem_mb": round(_peak_mb(device), 1)}) for i, r in batch]

    try:
        with patched(ctx.model, group.method, trained_len=spec.trained_len, target_len=longest,
                     rope_reset=cfg.rope_reset):
            measured = group.task.measure(ctx, group.cells)
            for batch in [list(enumerate(measured))] if isinstance(measured, list) else ([p] for p in measured):
                yield stamped(batch)
    except Exception as e:  # noqa: BLE001 (only memory errors are caught; others re-raise)
        if not _is_oom(e):
            raise
        oom_at[group.method] = min(oom_at.get(group.method, longest), longest)
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        left = [i for i in range(len(group.cells)) if i not in done]
        yield stamped([(i, dict(status="oom", error=error)) for i in left]) if left else []


def run(cfg: RunConfig, log=print, progress=None) -> Summary:
    """Run the sweep described by ``cfg``; returns what was written."""
    from evalkit.models import ensure_length, load_model, resolve_model
    from evalkit.patches import check_applicable, find_adapter, patched

    spec = resolve_model(cfg.model, cfg.trained_len)
    for call in cfg.calls:
        check_applicable(call, spec.encoding)
    out = Path(cfg.out) if cfg.out else default_out(spec)
    check_out(out)
    for each in result_folders(out):  # refuse foreign files before any work
        read_rows(each / RESULTS), read_profile(each / PROFILE)
    loaded = load_model(spec, cfg.device, cfg.dtype, cfg.trust_remote_code, log=log, adapter=cfg.adapter,
                        quantize=cfg.quantize, max_memory=cfg.max_memory)
    if cfg.shard is not None:
        log(f"evalkit: worker {cfg.shard} ({cfg.shard.launcher or '--shard'}) on {loaded.device}")
    if loaded.device.startswith("cuda:"):  # a launcher's worker: its own GPU is the current one
        import torch

        torch.cuda.set_device(loaded.device)
    if cfg.rope_reset and find_adapter(loaded.model).shipped_type(loaded.model) == "default":
        log(f"evalkit: --rope-reset: {spec.name} ships no RoPE scaling; nothing to remove")
    if cfg.rope_reset and not cfg.trained_len:  # the pretraining length under the removed scaling
        spec = dataclasses.replace(spec, trained_len=find_adapter(loaded.model).trained_len(loaded.model, True))
    ensure_length(loaded.model, max(cfg.lengths) + ANSWER_ROOM)
    ctx = RunContext(cfg, loaded, log)
    groups = plan(cfg, spec, ctx)
    for call in cfg.calls:  # a method the checkpoint refuses stops the run before anything is written
        with patched(loaded.model, call, trained_len=spec.trained_len, target_len=max(cfg.lengths),
                     rope_reset=cfg.rope_reset):
            pass
    if cfg.shard is not None:
        groups = mine(groups, cfg.shard)
    own = shard_folder(out, cfg.shard)
    lock = FolderLock(own)  # one writer per folder, from the first write to the end
    try:
        for other in result_folders(out):  # no other run on this result set, but this sweep's workers
            if other != own and not sibling(other, out, cfg.shard):
                check_idle(other)
        return _write_cells(cfg, spec, ctx, groups, out, own, log, progress)
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


def mine(groups: list[Group], shard: Shard) -> list[Group]:
    """The groups worker K of N measures (see :func:`evalkit.shards.assign`)."""
    owners = assign([group_cost([c.length for c in g.cells]) for g in groups], shard.count)
    return [g for g, owner in zip(groups, owners) if owner == shard.index]


def _keep_notes(folder: Path, notes: list[str]) -> None:
    """The run's notes (skipped documents, ...) appended to ``notes.txt`` for the report."""
    if notes:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        with open(folder / "notes.txt", "a", encoding="utf-8") as f:
            f.writelines(f"{now}\t{' '.join(n.split())}\n" for n in notes)


def _write_cells(cfg, spec, ctx, groups, out: Path, own: Path, log, progress) -> Summary:
    """Measure the cells not yet recorded anywhere in ``out``; their rows go to ``own``."""
    planned = [k for g in groups for k in g.keys]
    done = tidy(own, log)
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
    common = dict(device=loaded.device, dtype=loaded.dtype, evalkit_version=evalkit.__version__,
                  evalkit_commit=code_commit(),
                  source=spec.source, transformers_version=transformers.__version__,
                  torch_version=torch.__version__.split("+")[0])
    results = CsvAppender(own / RESULTS, result_columns())
    profile = CsvAppender(own / PROFILE, PROFILE_COLUMNS, PROFILE_REQUIRED)
    oom_at: dict = {}
    cost = {id(g): group_cost([c.length for c in g.cells]) for g in pending}
    advance = progress(sum(len(g.cells) for g in pending), sum(cost.values())) if progress \
        else (lambda n, desc, done_cost=0.0: None)
    try:
        for g in pending:
            advance(0, f"{g.method.text} {g.task.name} {max(c.length for c in g.cells)}")
            for batch in measure_group(ctx, g, spec, oom_at):
                if not batch:
                    continue
                now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
                rows = [dict(common, **g.keys[i], **row, prefix_mode=int(len(g.cells) > 1), created_at=now)
                        for i, row in batch]
                lengths = ",".join(str(n) for n in sorted({g.cells[i].length for i, _ in batch}))
                advance(0, f"{g.method.text} {g.task.name} {lengths}")  # what just finished
                profile.write([dict({k: r.get(k) for k in PROFILE_COLUMNS}, position_start=s, position_end=e, nll=v)
                               for r in rows for (s, e, v) in r.pop("_profile", [])])
                results.write(rows)
                summary.written += len(rows)
                summary.oom += sum(r["status"] == "oom" for r in rows)
                advance(len(rows), None, cost[id(g)] * len(rows) / len(g.cells))
    finally:
        results.close()
        profile.close()
