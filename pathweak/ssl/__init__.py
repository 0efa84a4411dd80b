"""Self-supervised pretraining of ViT encoders (DINO, MAE) on TileStores."""

from .config import ARCHS, SSLConfig
from .rankme import rankme
from .train import PretrainResult, pretrain

__all__ = ["ARCHS", "PretrainResult", "SSLConfig", "pretrain", "rankme"]
