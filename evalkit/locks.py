"""One writer per results folder: an OS lock (flock) held for the whole run, and a check that no
run is writing a folder (docs/reliability.md)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from evalkit.errors import EvalkitError

LOCK = ".evalkit.lock"


class FolderLock:
    """An exclusive OS lock (flock) on ``OUT/.evalkit.lock`` for the duration of a run, so two
    runs can never write one folder at once; the second stops with one line naming the first.
    The lock file stays (removing it would let a third run lock a new file meanwhile).
    ``wait``: seconds to retry first (another worker's :func:`check_idle` holds it for an instant)."""

    def __init__(self, out: Path, wait: float = 2.0):
        import fcntl

        out.mkdir(parents=True, exist_ok=True)
        self.f = open(out / LOCK, "a+")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                self.f.seek(0)
                holder = self.f.read().strip() or "another process"
                self.f.close()
                raise EvalkitError(
                    f"{out} is being written by another evalkit run ({holder})",
                    "wait for it to finish, or give another --out",
                ) from None
        self.f.seek(0)
        self.f.truncate()
        self.f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.f.flush()

    def release(self) -> None:
        if not self.f.closed:
            self.f.close()  # closing releases the flock


def check_idle(folder: Path) -> None:
    """Refuse (one line) when a run is writing ``folder``: a shared lock taken and dropped at
    once, so any number of workers may check one folder together."""
    import fcntl

    if not (folder / LOCK).is_file():
        return
    with open(folder / LOCK) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = f.read().strip() or "another process"
            raise EvalkitError(
                f"{folder} is being written by another evalkit run ({holder})",
                "let it finish first: workers of one sweep must share its --shard N / launcher",
            ) from None
