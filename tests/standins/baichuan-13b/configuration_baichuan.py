"""Stand-in for Baichuan-13B's ``configuration_baichuan.py`` (evalkit tests; not Baichuan's code).
As upstream: ``BaichuanConfig`` whose only length field is ``model_max_length``."""

from .baichuan_common import BaichuanConfigBase


class BaichuanConfig(BaichuanConfigBase):
    def __init__(self, model_max_length=4096, **kwargs):
        self.model_max_length = model_max_length
        super().__init__(**kwargs)
