"""Stand-in for Baichuan's ``tokenization_baichuan.py`` (evalkit tests; not Baichuan's code).

As upstream (Baichuan-7B's ``BaiChuanTokenizer``, Baichuan2's ``BaichuanTokenizer``): a
slow tokenizer over a SentencePiece ``tokenizer.model`` whose ``__init__`` calls the base
class's before loading the SentencePiece model, while the base class reads
``vocab_size`` (from that model): construction fails on transformers 4.57 and 5.x.
"""

import os
import shutil

import sentencepiece as spm
from transformers import AddedToken, PreTrainedTokenizer


class BaichuanTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token=None,
        sp_model_kwargs=None,
        add_bos_token=True,
        add_eos_token=False,
        **kwargs,
    ):
        self.sp_model_kwargs = sp_model_kwargs or {}
        tokens = {
            name: AddedToken(t, lstrip=False, rstrip=False) if isinstance(t, str) else t
            for name, t in dict(
                bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token
            ).items()
        }
        super().__init__(add_bos_token=add_bos_token, add_eos_token=add_eos_token, **tokens, **kwargs)
        self.vocab_file, self.add_bos_token, self.add_eos_token = vocab_file, add_bos_token, add_eos_token
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.Load(vocab_file)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        vocab = {self.convert_ids_to_tokens(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.IdToPiece(index)

    def convert_tokens_to_string(self, tokens):
        out, pieces = "", []
        for token in tokens:
            if token in self.all_special_tokens:
                out += self.sp_model.decode(pieces) + token
                pieces = []
            else:
                pieces.append(token)
        return out + self.sp_model.decode(pieces)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + token_ids_0 + eos
        return out if token_ids_1 is None else out + bos + token_ids_1 + eos

    def save_vocabulary(self, save_directory, filename_prefix=None):
        out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model")
        if os.path.abspath(self.vocab_file) != os.path.abspath(out):
            shutil.copyfile(self.vocab_file, out)
        return (out,)


class BaiChuanTokenizer(BaichuanTokenizer):
    """Baichuan-7B's spelling of the same class."""
