"""Planning a sweep: its cells, grouped into the units one forward (or one carried KV cache)
measures, with the identifying fields of each cell's row.

Whether cells may share work is decided here, per method, and handed to each task's
``group`` as a :class:`~evalkit.task.Sharing` value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evalkit import forward
from evalkit.family import adapter_for as find_adapter
from evalkit.method import format_params
from evalkit.registry import TASKS
from evalkit.schema import FACTORS
from evalkit.shards import Shard, assign, group_cost
from evalkit.task import Sharing


@dataclass
class Group:
    method: object  # a MethodCall
    task: object
    cells: list
    keys: list[dict]  # the identifying fields of each cell's row


def prefix_mode(cfg, call, model=None) -> bool:
    """One forward serves every length when position i's output cannot depend on the length:
    a static method none of whose parameters is derived from the length, on a checkpoint whose
    own RoPE is length-independent too (not ``dynamic`` or ``longrope`` as shipped)."""
    shipped_ok = model is None or find_adapter(model).length_independent(model, cfg.rope_reset)
    return cfg.prefix and call.length_independent and shipped_ok


def reuse_mode(cfg, call, ctx) -> str:
    """How far retrieval trials of one method may start from another trial's KV cache: "lengths"
    (across lengths: the method and the checkpoint are length-independent), "length" (within one
    length: a static method whose factor follows the length), or "" (each trial prefilled whole:
    a dynamic method, a checkpoint with length-dependent RoPE, --no-prefix, or a cache that
    cannot be cut back exactly: sliding windows, remote code)."""
    if not (
        cfg.prefix
        and call.method.static
        and find_adapter(ctx.model).length_independent(ctx.model, cfg.rope_reset)
        and ctx.cached("croppable-cache", lambda: _croppable(ctx))
    ):
        return ""
    return "lengths" if call.length_independent else "length"


def _croppable(ctx) -> bool:
    """Whether this model's KV cache can be cut back exactly (a two-token forward, unpatched)."""
    import torch

    _, cache = forward.next_token_logits(ctx.model, torch.tensor([[1, 1]], device=ctx.input_device))
    return forward.croppable(cache)


def cell_fields(cfg, spec, call, cell, rope_scaling: str = "default") -> dict:
    """The identifying fields of a cell's row (the resume key): the common ones, then the task's
    (cell fields such as depth, the seed, or its options). The factor columns (scale, alpha) hold
    the values used when the method has them; ``params`` every other value fixed for the whole
    sweep (given or constant, as ``k=v,k=v``) and the given factors."""
    values = call.resolve(spec.trained_len, cell.length)
    fields = dict(
        model=spec.name,
        source=spec.source,
        method=call.name,
        **{f: values.get(f) for f in FACTORS},
        params=format_params(call.method, call.fixed()),
        rope_scaling=rope_scaling,
        adapter=str(Path(cfg.adapter).expanduser().resolve()) if cfg.adapter else "",
        quantize=cfg.quantize or "",
        trained_len=spec.trained_len,
        task=cell.task,
        length=cell.length,
        depth=cell.depth,
        sample=cell.sample,
        seed=cfg.seed,
    )
    for f in TASKS.get(cell.task).identity:
        if f not in fields:
            fields[f] = cfg.opt(f)
    return fields


def rope_scaling_label(cfg, model) -> str:
    """What a row records of the checkpoint's own RoPE: "default" (plain), its shipped scaling
    ("llama3", "yarn", ...), or "removed:TYPE" under --rope-reset."""
    shipped = find_adapter(model).shipped_type(model)
    return f"removed:{shipped}" if cfg.rope_reset and shipped != "default" else shipped


def plan(cfg, spec, ctx) -> list[Group]:
    groups = []
    shipped = rope_scaling_label(cfg, ctx.model)
    for task_name in cfg.tasks:
        task = TASKS.get(task_name)
        cells = ctx.cached(("cells", task_name), lambda task=task: task.cells(ctx, sorted(cfg.lengths)))
        for call in cfg.calls:
            by_group: dict = {}
            sharing = Sharing(prefix=prefix_mode(cfg, call, ctx.model), kv=reuse_mode(cfg, call, ctx))
            for cell in cells:
                by_group.setdefault(task.group(ctx, cell, sharing), []).append(cell)
            for members in by_group.values():
                groups.append(Group(call, task, members, [cell_fields(cfg, spec, call, c, shipped) for c in members]))
    order = {c: i for i, c in enumerate(cfg.calls)}
    groups.sort(key=lambda g: (order[g.method], max(c.length for c in g.cells)))
    return groups


def mine(groups: list[Group], shard: Shard) -> list[Group]:
    """The groups worker K of N measures (see :func:`evalkit.shards.assign`)."""
    owners = assign([group_cost([c.length for c in g.cells]) for g in groups], shard.count)
    return [g for g, owner in zip(groups, owners) if owner == shard.index]
