"""What a model family is (:class:`Family`) and the questions every part of evalkit asks of it.

Model resolution (:func:`evalkit.models.spec_from_config`: a config.json -> encoding
and trained length) and patch installation (:func:`adapter_for`: a loaded model ->
its installer) both read the one family table (``evalkit/families.py``), so the two
cannot disagree: a model type is accepted exactly when a family with an installer
claims it.

Trained length of a checkpoint that ships a RoPE scaling (``rope_lengths``): the
length that scaling was made for, max(max_position_embeddings,
original_max_position_embeddings × factor) (Llama-3.1: 131072; Qwen2.5 with YaRN
factor 4 over 32768: 131072). With ``--rope-reset``, the pretraining length
``original_max_position_embeddings`` (or max_position_embeddings / factor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evalkit.errors import EvalkitError
from evalkit.registry import FAMILIES, INSTALLERS


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json model_type values
    encoding: str  # rope | alibi
    adapter: str  # installer name in patches.rope_models / patches.alibi_models
    checked: str  # the upstream code the installer was verified against
    when: Callable[[dict], bool] | None = None  # a condition on the config (Falcon: alibi or not)
    length_fields: tuple[str, ...] = ("max_position_embeddings",)


def register(family: Family) -> Family:
    return FAMILIES.add(family.name, family)


def families_for(model_type: str, config: dict | None = None) -> list[Family]:
    """The families claiming ``model_type`` (and, given a config, whose condition holds)."""
    return [
        f
        for f in FAMILIES.values()
        if model_type in f.model_types and (config is None or f.when is None or f.when(config))
    ]


def supported_types() -> str:
    return ", ".join(sorted({t for f in FAMILIES.values() for t in f.model_types}))


def config_dict(config) -> dict:
    """A transformers config as a plain dict (both lines: rope_parameters or rope_scaling)."""
    return config if isinstance(config, dict) else config.to_dict()


def family_of(model) -> Family:
    """The family of a loaded model: its model type's entries, the one whose installer
    recognises the model's layout (Baichuan's RoPE and ALiBi releases share a model type)."""
    config = config_dict(model.config)
    model_type = config.get("model_type", "")
    candidates = families_for(model_type, config)
    for family in candidates:
        if INSTALLERS.get(family.adapter).matches(model):
            return family
    if candidates:
        raise EvalkitError(
            f"this {model_type} model ({type(model).__name__}) is not laid out as evalkit's "
            f"{candidates[0].name} installer expects",
            f"checked against {candidates[0].checked}",
        )
    raise EvalkitError(
        f"evalkit cannot patch a {type(model).__name__} (model type {model_type!r})",
        f"supported model types: {supported_types()}",
    )


def adapter_for(model):
    return INSTALLERS.get(family_of(model).adapter)


# --- lengths ---


def rope_scaling(config: dict) -> dict | None:
    """The RoPE scaling a config ships (``rope_parameters`` in transformers 5, ``rope_scaling``
    in 4.x), or None for plain RoPE."""
    for key in ("rope_parameters", "rope_scaling"):
        params = config.get(key)
        if isinstance(params, dict) and isinstance(params.get("full_attention"), dict):  # per layer type (Gemma 3)
            params = params["full_attention"]
        if isinstance(params, dict):
            kind = params.get("rope_type", params.get("type", "default"))
            if kind not in (None, "default"):
                return params
    return None


def stated_length(config: dict, family: Family | None = None) -> int | None:
    fields = (
        family.length_fields if family else ("max_position_embeddings", "model_max_length", "max_seq_len", "seq_length")
    )
    for name in fields:
        value = config.get(name)
        if value is not None:
            return value
    return None


def rope_lengths(config: dict, max_pos: int) -> tuple[int, int]:
    """(the length a shipped RoPE scaling was made for, the pretraining length under it); both
    ``max_pos`` for plain RoPE and for ``dynamic`` (which has no fixed target)."""
    sc = rope_scaling(config)
    if not sc:
        return max_pos, max_pos
    kind = sc.get("rope_type", sc.get("type"))
    factor = sc.get("factor")
    original = sc.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
    if kind == "dynamic":
        return max_pos, max_pos
    if original:
        return (max(max_pos, int(original * factor)) if factor else max_pos), int(original)
    if factor:
        return max_pos, max(1, int(round(max_pos / factor)))
    return max_pos, max_pos
