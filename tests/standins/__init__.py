"""Tiny Baichuan checkpoints laid out as on the hub, built from remote-code templates.

Each release folder here (``baichuan-7b/``, ``baichuan2-7b/``, ``baichuan-13b/``,
``baichuan2-13b/``) holds stand-in ``configuration_baichuan.py``,
``modeling_baichuan.py`` and ``tokenization_baichuan.py`` written for evalkit's
tests. They are not Baichuan's code; they mirror the facts of the real files
that matter to evalkit (see docs/models.md, "Baichuan"). :func:`make_checkpoint`
turns a template folder into a checkpoint (config.json with ``auto_map``,
random weights, a SentencePiece ``tokenizer.model``) that transformers loads
with ``trust_remote_code=True``, exactly as it would load the real one.

Set ``EVALKIT_BAICHUAN_TEMPLATES`` to a folder with the same four sub-folders
holding the real upstream files to run the same tests on Baichuan's own code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
RELEASES = ("baichuan-7b", "baichuan2-7b", "baichuan-13b", "baichuan2-13b")
ALIBI_RELEASES = ("baichuan-13b", "baichuan2-13b")

# Mixed prose for the SentencePiece model: English, Chinese, digits, punctuation.
CORPUS = """\
The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.
The pass key is 12345. Remember it. 12345 is the pass key. What is the pass key?
There is an important info hidden inside a lot of irrelevant text. Find it and memorize them.
百川大模型是一个开源的中英双语语言模型。今天的天气很好，我们去公园散步吧。
上下文长度外推是长文本评测的重要问题。位置编码决定了模型如何理解顺序。
Numbers 0 1 2 3 4 5 6 7 8 9 10 42 2048 4096 8192 and dates like 2023-09-06.
"""


def template_root() -> Path:
    return Path(os.environ.get("EVALKIT_BAICHUAN_TEMPLATES") or HERE)


def _class_name(path: Path, pattern: str, prefer: str = "") -> str:
    """The class defined in ``path`` whose name matches ``pattern`` (``prefer`` if it is one of them)."""
    found = re.findall(rf"^class ({pattern})\(", path.read_text(encoding="utf-8"), re.M)
    if not found:
        raise RuntimeError(f"no class matching {pattern} in {path}")
    return prefer if prefer in found else found[-1]


def train_tokenizer(out: Path, vocab_size: int = 600) -> Path:
    """A tiny SentencePiece model (BPE, byte fallback) trained on :data:`CORPUS`."""
    import sentencepiece as spm

    corpus = out / "corpus.txt"
    corpus.write_text(CORPUS * 4, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
    )
    corpus.unlink()
    (out / "tokenizer.vocab").unlink()
    return out / "tokenizer.model"


def config_fields(release: str, vocab_size: int) -> dict:
    """Tiny dimensions; the length fields each release's config class has."""
    heads = 5 if release in ALIBI_RELEASES else 4  # 5: a non-power-of-two ALiBi head count, like 13B's 40
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=16 * heads,
        num_attention_heads=heads,
        num_hidden_layers=2,
        intermediate_size=96,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    if release != "baichuan-7b":
        fields["model_max_length"] = 64
    if release not in ALIBI_RELEASES:
        fields["max_position_embeddings"] = 64
    return fields


def make_checkpoint(release: str, out: Path, seed: int = 0, root: Path | None = None) -> Path:
    """Write a tiny random-init checkpoint of ``release`` to ``out`` and return ``out``."""
    import sentencepiece as spm
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from evalkit.remote_code import without_missing_imports

    base = root or template_root()
    src = base / release
    out.mkdir(parents=True, exist_ok=True)
    shared = sorted(HERE.glob("*.py")) if base == HERE else []  # the stand-ins' shared parts and tokenizer
    for f in [*shared, *src.glob("*.py")]:
        if f.name != "__init__.py":
            shutil.copy(f, out / f.name)
    if (src / "tokenizer.model").is_file():
        shutil.copy(src / "tokenizer.model", out / "tokenizer.model")
    else:
        train_tokenizer(out)
    vocab = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size()
    config_class = _class_name(out / "configuration_baichuan.py", r"\w+Config")
    model_class = _class_name(out / "modeling_baichuan.py", r"\w+ForCausalLM")
    tokenizer_class = _class_name(
        out / "tokenization_baichuan.py", r"\w+Tokenizer", prefer=model_class.split("For")[0] + "Tokenizer"
    )  # BaiChuan / Baichuan
    config = dict(
        config_fields(release, vocab),
        model_type="baichuan",
        architectures=[model_class],
        auto_map={
            "AutoConfig": f"configuration_baichuan.{config_class}",
            "AutoModelForCausalLM": f"modeling_baichuan.{model_class}",
        },
    )
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "auto_map": {"AutoTokenizer": [f"tokenization_baichuan.{tokenizer_class}", None]},
                "tokenizer_class": tokenizer_class,
                "add_bos_token": release == "baichuan-7b",
                "add_eos_token": False,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<unk>",
                "clean_up_tokenization_spaces": False,
                "model_max_length": 64,
            },
            indent=2,
        )
    )

    cfg = AutoConfig.from_pretrained(out, trust_remote_code=True)
    # Baichuan-7B's code imports xformers
    model = without_missing_imports(lambda: AutoModelForCausalLM.from_config(cfg, trust_remote_code=True))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norm weights
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(out)
    return out
