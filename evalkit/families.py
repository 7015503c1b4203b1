"""The one table of model families: what a checkpoint is and how evalkit patches it.

Model resolution (:func:`evalkit.models.spec_from_config`: a config.json -> encoding
and trained length) and patch installation (:func:`adapter_for`: a loaded model ->
its installer) both read :data:`FAMILIES`, so the two cannot disagree: a model type
is accepted exactly when a family with an installer claims it. Each entry names the
upstream code it was checked against (README, "Families").

Trained length of a checkpoint that ships a RoPE scaling (``rope_lengths``): the
length that scaling was made for, max(max_position_embeddings,
original_max_position_embeddings × factor) (Llama-3.1: 131072; Qwen2.5 with YaRN
factor 4 over 32768: 131072). With ``--rope-reset``, the pretraining length
``original_max_position_embeddings`` (or max_position_embeddings / factor).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from evalkit.errors import EvalkitError
from evalkit.registry import Registry


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json model_type values
    encoding: str  # rope | alibi
    adapter: str  # installer name in patches.rope_models / patches.alibi_models
    checked: str  # the upstream code the installer was verified against
    when: Callable[[dict], bool] | None = None  # a condition on the config (Falcon: alibi or not)
    length_fields: tuple[str, ...] = ("max_position_embeddings",)


FAMILIES: Registry[Family] = Registry("family")
_HF = "transformers modeling_{}.py"
for _f in [
    Family("llama", ("llama",), "rope", "hf-rope", _HF.format("llama")),
    Family("mistral", ("mistral",), "rope", "hf-rope", _HF.format("mistral")),
    Family("qwen2", ("qwen2",), "rope", "hf-rope", _HF.format("qwen2")),
    Family("qwen3", ("qwen3",), "rope", "hf-rope", _HF.format("qwen3") + " (q_norm: logn after it)"),
    Family("gemma", ("gemma",), "rope", "hf-rope", _HF.format("gemma")),
    Family("gemma2", ("gemma2",), "rope", "hf-rope", _HF.format("gemma2") + " (one rotary for all layers)"),
    Family("gemma3", ("gemma3_text",), "rope", "hf-rope", _HF.format("gemma3") + " (full-attention layers scaled)"),
    Family("phi3", ("phi3",), "rope", "hf-rope", _HF.format("phi3") + " (fused qkv_proj, partial rotary)"),
    Family("phi", ("phi",), "rope", "hf-rope", _HF.format("phi") + " (Phi-2: partial rotary)"),
    Family("gpt-neox", ("gpt_neox",), "rope", "hf-rope", _HF.format("gpt_neox") + " (rotary_pct)"),
    Family("falcon", ("falcon",), "rope", "hf-rope", _HF.format("falcon"), when=lambda c: not c.get("alibi")),
    Family("falcon-alibi", ("falcon",), "alibi", "falcon-alibi", _HF.format("falcon") + " build_alibi_tensor",
           when=lambda c: bool(c.get("alibi")), length_fields=("max_position_embeddings",)),
    Family("bloom", ("bloom",), "alibi", "bloom", _HF.format("bloom"), length_fields=("seq_length",)),
    Family("mpt", ("mpt",), "alibi", "mpt", _HF.format("mpt"), length_fields=("max_seq_len",)),
    Family("baichuan-rope", ("baichuan",), "rope", "baichuan-rope",
           "baichuan-inc Baichuan-7B / Baichuan2-7B-Base modeling_baichuan.py",
           length_fields=("max_position_embeddings", "model_max_length")),
    Family("baichuan-alibi", ("baichuan",), "alibi", "baichuan-alibi",
           "baichuan-inc Baichuan-13B-Base / Baichuan2-13B-Base modeling_baichuan.py",
           length_fields=("model_max_length", "max_position_embeddings")),
]:
    FAMILIES.add(_f.name, _f)


def families_for(model_type: str, config: dict | None = None) -> list[Family]:
    """The families claiming ``model_type`` (and, given a config, whose condition holds)."""
    return [f for f in FAMILIES.values() if model_type in f.model_types
            and (config is None or f.when is None or f.when(config))]


def supported_types() -> str:
    return ", ".join(sorted({t for f in FAMILIES.values() for t in f.model_types}))


def _adapters() -> dict:
    from evalkit.patches import alibi_models, rope_models

    return {a.name: a for a in (*rope_models.ADAPTERS, *alibi_models.ADAPTERS)}


def config_dict(config) -> dict:
    """A transformers config as a plain dict (both lines: rope_parameters or rope_scaling)."""
    return config if isinstance(config, dict) else config.to_dict()


def family_of(model) -> Family:
    """The family of a loaded model: its model type's entries, the one whose installer
    recognises the model's layout (Baichuan's RoPE and ALiBi releases share a model type)."""
    config = config_dict(model.config)
    model_type = config.get("model_type", "")
    candidates = families_for(model_type, config)
    adapters = _adapters()
    for family in candidates:
        if adapters[family.adapter].matches(model):
            return family
    if candidates:
        raise EvalkitError(f"this {model_type} model ({type(model).__name__}) is not laid out as evalkit's "
                           f"{candidates[0].name} installer expects", f"checked against {candidates[0].checked}")
    raise EvalkitError(f"evalkit cannot patch a {type(model).__name__} (model type {model_type!r})",
                       f"supported model types: {supported_types()}")


def adapter_for(model):
    return _adapters()[family_of(model).adapter]


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
    fields = family.length_fields if family else ("max_position_embeddings", "model_max_length", "max_seq_len",
                                                  "seq_length")
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
