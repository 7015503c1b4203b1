"""One sweep split over workers: the GPUs of a node (``torchrun`` / ``accelerate launch``),
several nodes, or the jobs of a Slurm array (``--shard K/N``).

The sweep's measurement groups are dealt to N workers by a fixed rule (the costliest first,
each to the least loaded worker), so every worker started with the same settings computes
the same split on its own: workers never talk to each other and never wait for each other.
Worker K writes ``OUT/shards/K-of-N/``; resume, compare, plot and report read every folder
of OUT as one result set, so a rerun with the same or another N redoes nothing and loses
nothing. Rank, world size and the local GPU come from torch.distributed when a process group
is open, else from the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``: torch.distributed's ``env://`` contract, which torchrun and accelerate
both follow). evalkit opens no process group, so a 10-hour sweep hits no collective timeout.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError

SHARDS = "shards"  # OUT/shards/K-of-N


@dataclass(frozen=True)
class Shard:
    index: int  # K, from 0
    count: int  # N
    local_rank: int | None = None  # the worker's GPU on its node (set by a launcher)
    local_count: int = 1  # workers on this node
    launcher: str = ""  # "torchrun", "accelerate" or "" (--shard)

    def __post_init__(self):
        if self.count < 1:
            raise EvalkitError(f"--shard {self.index}/{self.count}: N must be at least 1", "e.g. --shard 0/4")
        if not 0 <= self.index < self.count:
            raise EvalkitError(
                f"--shard {self.index}/{self.count}: K must be from 0 to N-1",
                "e.g. --shard 0/4 to --shard 3/4; Slurm: --shard $SLURM_ARRAY_TASK_ID/N",
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def folder(self) -> str:
        return f"{self.index}-of-{self.count}"


def parse_shard(text: str) -> Shard:
    """``K/N`` (K from 0, as Slurm's ``--array=0-(N-1)`` numbers its jobs)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise EvalkitError(f"--shard {text!r} is not K/N", "e.g. --shard 0/4 for the first of 4 workers")
    return Shard(int(m.group(1)), int(m.group(2)))


def from_launcher(env=None) -> Shard | None:
    """This worker's place among several, as torch.distributed or the launcher says; None when
    the process runs alone (no launcher, or a world of one)."""
    env = os.environ if env is None else env
    dist = sys.modules.get("torch.distributed")  # only asked when someone opened a group already
    if dist is not None and dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        try:
            rank, world = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
        except ValueError:
            raise EvalkitError(
                f"RANK={env.get('RANK')!r} / WORLD_SIZE={env.get('WORLD_SIZE')!r} are not numbers",
                "start evalkit with torchrun or accelerate launch, or unset them",
            ) from None
    if world <= 1:
        return None
    launcher = "accelerate" if any(k.startswith("ACCELERATE_") for k in env) else "torchrun"
    return Shard(
        rank,
        world,
        local_rank=int(env.get("LOCAL_RANK", rank)),
        local_count=int(env.get("LOCAL_WORLD_SIZE", world)),
        launcher=launcher,
    )


def choose(given: str | None, env=None) -> Shard | None:
    """``--shard`` if given, else the launcher's; both at once is a mistake unless they agree."""
    launched = from_launcher(env)
    if given is None:
        return launched
    shard = parse_shard(given)
    if launched is not None and (launched.index, launched.count) != (shard.index, shard.count):
        raise EvalkitError(
            f"--shard {shard} under a launcher that made this worker {launched}",
            "give --shard without torchrun / accelerate launch, or leave it out under them",
        )
    return launched or shard


def worker_device(device: str, shard: Shard | None, cuda_count: int) -> str:
    """The device of this worker: the launcher's local GPU when it started several per node."""
    if shard is None or shard.local_rank is None or shard.local_count <= 1 or device not in ("auto", "cuda"):
        return device
    if cuda_count == 0:
        return "cpu" if device == "auto" else device  # CPU workers (gloo): nothing to pick
    if shard.local_count > cuda_count:
        raise EvalkitError(
            f"{shard.local_count} workers on this node but {cuda_count} GPU(s)",
            f"launch at most {cuda_count} per node (--nproc-per-node {cuda_count})",
        )
    return f"cuda:{shard.local_rank}"


def folder(out: Path, shard: Shard | None) -> Path:
    """Where this worker writes: OUT itself when alone, OUT/shards/K-of-N otherwise."""
    return out if shard is None else out / SHARDS / shard.folder


def result_folders(out: Path) -> list[Path]:
    """OUT and every shard folder under it (whether or not it holds results yet)."""
    shards = out / SHARDS
    return [out] + (sorted(p for p in shards.iterdir() if p.is_dir()) if shards.is_dir() else [])


def sibling(path: Path, out: Path, shard: Shard | None) -> bool:
    """Whether ``path`` is the folder of another worker of this same launch (same N)."""
    return shard is not None and path.parent == out / SHARDS and path.name.endswith(f"-of-{shard.count}")


def assign(costs: list[float], count: int) -> list[int]:
    """The worker of each group: costliest first, each to the least loaded worker (ties: the
    lower index). A pure function of the costs' order and values, so every worker agrees."""
    owner, loads = [0] * len(costs), [0.0] * count
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        w = min(range(count), key=lambda w: (loads[w], w))
        owner[i] = w
        loads[w] += costs[i]
    return owner


def group_cost(lengths: list[int]) -> float:
    """Tokens a group's forwards read: its cells' lengths, where cells of several lengths that
    share one forward (prefix mode) count as their longest."""
    distinct = len(set(lengths))
    return max(lengths) * len(lengths) / distinct
