"""A slow tokenizer over a SentencePiece ``tokenizer.model``, for checkpoints whose own class fails.

Baichuan's ``BaichuanTokenizer`` / ``BaiChuanTokenizer`` (and LLaMA-1's slow tokenizer)
are thin wrappers of one SentencePiece model: text is split on the special tokens,
each piece is encoded by SentencePiece, BOS / EOS are added as the tokenizer
config says. This class does the same, but loads the SentencePiece model before
the transformers base class asks for the vocabulary size, which Baichuan's own
class does not (it fails to construct under transformers 4.57 and 5.x).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers import AddedToken, PreTrainedTokenizer

SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")


def _token(value):
    """A special token as tokenizer_config.json writes it: a string, or a dict with ``content``."""
    if isinstance(value, dict):
        return AddedToken(
            value["content"],
            lstrip=value.get("lstrip", False),
            rstrip=value.get("rstrip", False),
            normalized=value.get("normalized", True),
            single_word=value.get("single_word", False),
        )
    return value


class SentencePieceTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token=None,
        add_bos_token=True,
        add_eos_token=False,
        sp_model_kwargs=None,
        **kwargs,
    ):
        import sentencepiece as spm

        self.vocab_file, self.add_bos_token, self.add_eos_token = str(vocab_file), add_bos_token, add_eos_token
        self.sp_model_kwargs = sp_model_kwargs or {}
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.Load(self.vocab_file)  # before the base class reads vocab_size
        super().__init__(
            bos_token=_token(bos_token),
            eos_token=_token(eos_token),
            unk_token=_token(unk_token),
            pad_token=_token(pad_token),
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            sp_model_kwargs=self.sp_model_kwargs,
            **kwargs,
        )

    @classmethod
    def from_files(
        cls, vocab_file: Path, tokenizer_config_json: Path | None = None, special_tokens_map_json: Path | None = None
    ) -> SentencePieceTokenizer:
        """Settings from the checkpoint's tokenizer_config.json, special tokens also from
        special_tokens_map.json (which wins, as in transformers)."""
        config = json.loads(tokenizer_config_json.read_text()) if tokenizer_config_json else {}
        special = json.loads(special_tokens_map_json.read_text()) if special_tokens_map_json else {}
        kwargs = {
            k: v
            for k, v in config.items()
            if k
            in (
                *SPECIAL,
                "add_bos_token",
                "add_eos_token",
                "sp_model_kwargs",
                "model_max_length",
                "clean_up_tokenization_spaces",
            )
        }
        kwargs.update({k: v for k, v in special.items() if k in SPECIAL})
        return cls(vocab_file, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict:
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens) -> str:
        """SentencePiece decodes runs of ordinary pieces; special tokens are kept as written."""
        out, run = "", []
        for token in tokens:
            if token in self.all_special_tokens:
                out += self.sp_model.decode(run) + token
                run = []
            else:
                run.append(token)
        return out + self.sp_model.decode(run)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        ids = bos + token_ids_0 + eos
        return ids if token_ids_1 is None else ids + bos + token_ids_1 + eos

    def save_vocabulary(self, save_directory, filename_prefix=None):
        out = Path(save_directory) / f"{filename_prefix + '-' if filename_prefix else ''}tokenizer.model"
        if Path(self.vocab_file).resolve() != out.resolve():
            shutil.copyfile(self.vocab_file, out)
        return (str(out),)
