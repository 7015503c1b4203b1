"""Progress of a sweep on standard error: a bar on a terminal, else (a batch job, CI, nohup,
several workers sharing one terminal) one plain line per finished group of cells.

Both take ``(cells, cost)`` to start and ``advance(cells_done, description, cost_done)`` calls;
cost is the tokens the forwards read (see :func:`evalkit.shards.group_cost`), so the time left
is estimated from the work left, not from the count of cells (a 16k cell costs four 4k ones).
"""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    """3725 -> "1h02m", 125 -> "2m05s", 7 -> "7s"."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def lines(write, prefix: str = "evalkit", clock=time.monotonic):
    """A progress factory printing ``prefix: 3/12 cells (25%) · ntk ppl 8192 · 2m05s elapsed ·
    eta 6m10s`` after each group; ``write`` takes one line."""

    def start(cells: int, cost: float):
        t0, state = clock(), dict(cells=0, cost=0.0, what="")

        def advance(n: int, description: str | None, cost_done: float = 0.0):
            if description:
                state["what"] = description
            if not n:
                return
            state["cells"] += n
            state["cost"] += cost_done
            elapsed = clock() - t0
            left = elapsed * (cost - state["cost"]) / state["cost"] if state["cost"] > 0 else 0.0
            eta = "done" if state["cells"] >= cells else f"eta {duration(left)}"
            write(
                f"{prefix}: {state['cells']}/{cells} cells ({100 * state['cells'] // max(cells, 1)}%) · "
                f"{state['what']} · {duration(elapsed)} elapsed · {eta}"
            )

        return advance

    return start


def bar(cells: int, cost: float):
    """A rich progress bar over cells (on a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    shown = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    shown.start()
    task = shown.add_task("cells", total=cells)

    def advance(n: int, description: str | None, cost_done: float = 0.0):
        if description:
            shown.update(task, description=description)
        shown.advance(task, n)
        if shown.finished:
            shown.stop()

    if cells == 0:
        shown.stop()
    return advance


def reporter(write, shard=None, stream=None):
    """The bar on a terminal for a lone run; plain lines otherwise (and for every worker of a
    split sweep, whose bars would overwrite each other in one terminal)."""
    stream = stream or sys.stderr
    if shard is None and stream.isatty():
        return bar
    return lines(write, "evalkit" if shard is None else f"evalkit [shard {shard}]")
