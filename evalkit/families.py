"""The one table of model families: which checkpoints evalkit patches and how (litgpt's
``config.py`` style: one entry per family, the upstream code it was checked against beside it).

``model_types``: config.json ``model_type`` values; ``encoding``: rope | alibi; ``adapter``:
the installer (``patches/rope_models.py``, ``patches/alibi_models.py``); ``when``: a condition
on the config (Falcon: alibi or not); ``length_fields``: where the config states its trained
length. A family that an existing installer fits is one more line here.
"""

from __future__ import annotations

from evalkit.family import Family, register

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
    Family(
        "falcon-alibi",
        ("falcon",),
        "alibi",
        "falcon-alibi",
        _HF.format("falcon") + " build_alibi_tensor",
        when=lambda c: bool(c.get("alibi")),
        length_fields=("max_position_embeddings",),
    ),
    Family("bloom", ("bloom",), "alibi", "bloom", _HF.format("bloom"), length_fields=("seq_length",)),
    Family("mpt", ("mpt",), "alibi", "mpt", _HF.format("mpt"), length_fields=("max_seq_len",)),
    Family(
        "baichuan-rope",
        ("baichuan",),
        "rope",
        "baichuan-rope",
        "baichuan-inc Baichuan-7B / Baichuan2-7B-Base modeling_baichuan.py",
        length_fields=("max_position_embeddings", "model_max_length"),
    ),
    Family(
        "baichuan-alibi",
        ("baichuan",),
        "alibi",
        "baichuan-alibi",
        "baichuan-inc Baichuan-13B-Base / Baichuan2-13B-Base modeling_baichuan.py",
        length_fields=("model_max_length", "max_position_embeddings"),
    ),
]:
    register(_f)
