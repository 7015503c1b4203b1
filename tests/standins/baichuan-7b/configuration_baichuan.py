"""Stand-in for Baichuan-7B's ``configuration_baichuan.py`` (evalkit tests; not Baichuan's code).
As upstream: the class is spelled ``BaiChuanConfig`` and the length is ``max_position_embeddings``."""

from .baichuan_common import BaichuanConfigBase


class BaiChuanConfig(BaichuanConfigBase):
    def __init__(self, max_position_embeddings=4096, **kwargs):
        self.max_position_embeddings = max_position_embeddings
        super().__init__(**kwargs)
