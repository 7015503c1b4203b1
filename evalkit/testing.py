"""Tiny random-init checkpoints for tests and smoke runs (no download).

``save_tiny_llama(folder)`` writes a 2-layer LLaMA with a byte-level BPE
tokenizer trained here on the passkey filler and some standard-library text, so
the whole CLI can run end to end in seconds: ``evalkit run --model FOLDER``.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.tasks import passkey
from evalkit.tasks.data import stdlib_documents


def save_tiny_llama(folder: Path, trained_len: int = 256, seed: int = 0) -> Path:
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = Path(folder)
    docs = stdlib_documents()
    corpus = [
        passkey.INSTRUCTION,
        passkey.FILLER,
        passkey.NEEDLE.format(key=12345),
        passkey.QUESTION,
        next(docs).text[:20000],
        "0123456789",
    ]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=512, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    major = int(transformers.__version__.split(".")[0])
    rope = (
        {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}} if major >= 5 else {"rope_theta": 10000.0}
    )
    config = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=trained_len,
        bos_token_id=0,
        eos_token_id=1,
        **rope,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
