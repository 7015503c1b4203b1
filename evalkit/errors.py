"""The one exception type for user mistakes.

The CLI prints an ``EvalkitError`` as one line (message and hint) and exits with
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EvalkitError(ValueError):
    """A mistake the user can fix; ``hint`` says how."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
