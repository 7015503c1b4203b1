"""Stand-in for Baichuan2-7B's ``configuration_baichuan.py`` (evalkit tests; not Baichuan's code).
As upstream: ``BaichuanConfig`` with both ``max_position_embeddings`` and ``model_max_length``."""

from .baichuan_common import BaichuanConfigBase


class BaichuanConfig(BaichuanConfigBase):
    def __init__(self, max_position_embeddings=4096, model_max_length=4096, z_loss_weight=0, **kwargs):
        self.max_position_embeddings, self.model_max_length = max_position_embeddings, model_max_length
        self.z_loss_weight = z_loss_weight
        super().__init__(**kwargs)
