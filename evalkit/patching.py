"""Applying a method to a loaded model, reversibly: :func:`patched`.

The model's family (:mod:`evalkit.family`) names the installer that puts the method into
it; the installer swaps modules and buffers inside an ExitStack, so leaving the block
restores the exact originals (bit-identical logits), also on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from evalkit.errors import EvalkitError
from evalkit.family import adapter_for
from evalkit.method import MethodCall, Resolved, check_applicable, make_call, parse_call, with_followers
from evalkit.schema import FACTORS


@contextlib.contextmanager
def patched(
    model,
    method: str | MethodCall,
    *,
    trained_len: int | None = None,
    target_len: int | None = None,
    rope_reset: bool = False,
    **params,
) -> Iterator[Resolved]:
    """Apply ``method`` (a name, ``name:k=v,…`` or a MethodCall) with ``params`` to ``model`` for the
    duration of the block; restore the originals exactly on exit (also on error). Derived parameters
    (``scale``) come from ``target_len`` / ``trained_len``. ``rope_reset``: evaluate a checkpoint that
    ships a RoPE scaling with that scaling removed. Yields the resolved parameters."""
    adapter = find_adapter(model)
    call = parse_call(method)
    params = {k: v for k, v in params.items() if v is not None}
    factors = with_followers({k: params.pop(k) for k in FACTORS if k in params})  # as --scale / --alpha
    call = make_call(call.method, {**dict(call.given), **params}).with_defaults(factors)
    check_applicable(call, adapter.encoding)
    if trained_len is None:
        trained_len = adapter.trained_len(model, rope_reset)
    if trained_len <= 0:
        raise EvalkitError(f"trained length must be positive, got {trained_len}", "pass --trained-len")
    resolved = Resolved(call, int(trained_len), call.resolve(int(trained_len), target_len or int(trained_len)))
    with contextlib.ExitStack() as stack:
        if call.method.changes or rope_reset:
            adapter.install(model, call.method, resolved, stack, rope_reset=rope_reset)
        yield resolved


def find_adapter(model):
    """The installer for this model: the family table's entry for its model type (see
    :mod:`evalkit.families`), checked against the model's own layout."""
    return adapter_for(model)
