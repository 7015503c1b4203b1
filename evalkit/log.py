"""evalkit's messages go through :mod:`logging` (logger ``evalkit``): one line each, on stderr.

The CLI calls :func:`setup` with ``-v`` / ``--quiet``: INFO by default (what a run does
and notes), DEBUG with ``-v``, WARNING with ``--quiet``. A library user configures the
``evalkit`` logger as any other (evalkit adds no handler unless :func:`setup` is called).
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("evalkit")


class _Stderr(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (so a redirected or captured stderr gets it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 (logging must never stop a run)
            self.handleError(record)


def setup(verbose: int = 0, quiet: bool = False) -> None:
    """Show evalkit's messages on stderr at the level the flags ask for."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
