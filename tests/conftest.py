"""Tiny random-init models of every supported family, built in milliseconds."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # for tests.standins
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HF5 = int(transformers.__version__.split(".")[0]) >= 5
VOCAB = 96


def llama_config(theta=10000.0, max_pos=64, rope=None, heads=4, hidden=64, cls=None, kv_heads=None, **kw):
    """A LlamaConfig (or ``cls``) with ``rope`` ({"rope_type": ..., ...}) in either transformers line;
    ``kv_heads`` < ``heads``: grouped-query attention."""
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_pos,
        **kw,
    )
    if HF5:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": theta, **(rope or {})}
    else:
        kw.update(rope_theta=theta, rope_scaling=rope)
    cfg = (cls or transformers.LlamaConfig)(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def tiny_llama(seed=0, **kw):
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(llama_config(**kw)).eval()


def tiny_mistral(seed=0, **kw):
    torch.manual_seed(seed)
    return transformers.MistralForCausalLM(llama_config(cls=transformers.MistralConfig, **kw)).eval()


def tiny_qwen2(seed=0, **kw):
    torch.manual_seed(seed)
    return transformers.Qwen2ForCausalLM(llama_config(cls=transformers.Qwen2Config, **kw)).eval()


def _tiny(cls_name, seed=0, **kw):
    torch.manual_seed(seed)
    config = llama_config(cls=getattr(transformers, f"{cls_name}Config"), **kw)
    return getattr(transformers, f"{cls_name}ForCausalLM")(config).eval()


tiny_qwen3 = functools.partial(_tiny, "Qwen3", head_dim=16)  # per-head q_norm / k_norm
tiny_gemma = functools.partial(_tiny, "Gemma", head_dim=16)
tiny_gemma2 = functools.partial(_tiny, "Gemma2", head_dim=16)  # logit softcapping, sliding layers
tiny_phi3 = functools.partial(_tiny, "Phi3", pad_token_id=0, eos_token_id=1, bos_token_id=1)  # fused qkv_proj
tiny_phi = functools.partial(_tiny, "Phi", partial_rotary_factor=0.5)  # Phi-2: half of each head rotates
tiny_gpt_neox = functools.partial(_tiny, "GPTNeoX", rotary_pct=0.5, partial_rotary_factor=0.5)  # per-head fused qkv
tiny_falcon = functools.partial(_tiny, "Falcon", new_decoder_architecture=False)


def tiny_gemma3(seed=0, theta=10000.0, max_pos=64, rope=None, **kw):
    """Gemma 3 text: a sliding layer (local base) and a full-attention layer (its own base and scaling)."""
    torch.manual_seed(seed)
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=16,
        max_position_embeddings=max_pos,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        **kw,
    )
    if HF5:
        kw["rope_parameters"] = {
            "full_attention": {"rope_type": "default", "rope_theta": theta, **(rope or {})},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        }
    else:
        kw.update(rope_theta=theta, rope_scaling=rope, rope_local_base_freq=10000.0)
    cfg = transformers.Gemma3TextConfig(**kw)
    cfg._attn_implementation = "eager"
    return transformers.Gemma3ForCausalLM(cfg).eval()


def tiny_falcon_alibi(heads=4, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.FalconConfig(
        vocab_size=VOCAB,
        hidden_size=16 * heads,
        num_hidden_layers=2,
        num_attention_heads=heads,
        alibi=True,
        new_decoder_architecture=False,
        max_position_embeddings=64,
    )
    cfg._attn_implementation = "eager"
    return transformers.FalconForCausalLM(cfg).eval()


def tiny_bloom(heads=4, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BloomConfig(vocab_size=VOCAB, hidden_size=16 * heads, n_layer=2, n_head=heads)
    return transformers.BloomForCausalLM(cfg).eval()


def tiny_mpt(heads=4, seed=0, max_seq_len=64):
    torch.manual_seed(seed)
    cfg = transformers.MptConfig(
        vocab_size=VOCAB, d_model=16 * heads, n_layers=2, n_heads=heads, max_seq_len=max_seq_len, expansion_ratio=2
    )
    return transformers.MptForCausalLM(cfg).eval()


@functools.cache
def baichuan_checkpoint(release: str) -> Path:
    """A tiny checkpoint of ``release`` from tests/standins (or $EVALKIT_BAICHUAN_TEMPLATES), made once."""
    from tests.standins import make_checkpoint

    folder = Path(tempfile.mkdtemp(prefix="evalkit-baichuan-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return make_checkpoint(release, folder / release)


def tiny_baichuan(release: str):
    """The checkpoint loaded as evalkit loads it (remote code, repairs after loading)."""
    from evalkit.loading import load_model
    from evalkit.models import spec_from_config

    spec = spec_from_config(release, str(baichuan_checkpoint(release)))
    return load_model(spec, device="cpu", dtype="float32", trust_remote_code=True).model


# one tiny model per family of evalkit.families (test_families checks that every family has one)
ROPE_MODELS = {
    "llama": tiny_llama,
    "mistral": tiny_mistral,
    "qwen2": tiny_qwen2,
    "qwen3": tiny_qwen3,
    "gemma": tiny_gemma,
    "gemma2": tiny_gemma2,
    "gemma3": tiny_gemma3,
    "phi3": tiny_phi3,
    "phi": tiny_phi,
    "gpt-neox": tiny_gpt_neox,
    "falcon": tiny_falcon,
    **{r: functools.partial(tiny_baichuan, r) for r in ("baichuan-7b", "baichuan2-7b")},
}
ALIBI_MODELS = {
    "bloom": tiny_bloom,
    "mpt": tiny_mpt,
    "falcon-alibi": tiny_falcon_alibi,
    **{r: functools.partial(tiny_baichuan, r) for r in ("baichuan-13b", "baichuan2-13b")},
}
# what a family's layout cannot take, refused with a one-line error (the test matrix checks the refusal)
ATTENTION_HOOK_REFUSED = {
    "gemma2",
    "gemma3",
    "phi3",
    "phi",
    "gpt-neox",
    "falcon",
    "baichuan-7b",
    "baichuan2-7b",
    "mistral",
}
LOGN_REFUSED = {"falcon"}


def rotary_half(model) -> int:
    """The number of rotary frequencies of a tiny RoPE model (d/2 of the rotary dimension)."""
    from evalkit.patches.rope_models import _hf_rotary_owner

    base = _hf_rotary_owner(model) or model.model
    rot = getattr(base, "rotary_emb", None) or base.layers[0].self_attn.rotary_emb
    return getattr(rot, "inv_freq", None).numel() if hasattr(rot, "inv_freq") else rot.full_attention_inv_freq.numel()


def method_params(method: str, model=None, s: float = 3.0, folder=None) -> dict:
    """Values for a method's parameters that make it act on the tiny models (trained length 16,
    inputs of 40-60 tokens): the scale / alpha factors, and small windows for the attention methods."""
    from evalkit.patches import METHODS

    names = {p.name for p in METHODS.get(method).params}
    given = {n: s for n in ("scale", "alpha") if n in names}
    given.update(
        {
            "self-extend": {"window": 4, "group": 2},
            "rerope": {"window": 4},
            "leaky-rerope": {"window": 4, "k": 2.0},
            "dca": {"chunk_size": 12, "local_window": 2},  # chunks of 10 tokens: several in 40
            "string": {"shift": 10, "window": 3},
            "lm-infinite": {"local_branch": 8, "global_branch": 2, "limit_distance": 8},
            "streaming-llm": {"start_size": 2, "recent_size": 6},
        }.get(method, {})
    )
    if "factors" in names:
        import json

        n = rotary_half(model) if model is not None else 8
        path = Path(folder or tempfile.mkdtemp(prefix="evalkit-factors-")) / f"factors-{n}.json"
        path.write_text(json.dumps([1.0 + 0.5 * i for i in range(n)]))
        given["factors"] = str(path)
    return given


def ids(length, seed=1, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


@torch.no_grad()
def logits(model, input_ids):
    return model(input_ids=input_ids).logits.float()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random-init LLaMA saved with a real (trained here) byte-level BPE tokenizer."""
    from evalkit.testing import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
