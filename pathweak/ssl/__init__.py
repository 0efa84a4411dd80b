"""Self-supervised pretraining of ViT encoders (DINO, MAE; MAE3D for volume patches) on TileStores, and
distillation of an encoder into a small ViT."""

from .config import ARCHS, SSLConfig
from .distill import distill
from .rankme import rankme
from .train import PretrainResult, pretrain

__all__ = ["ARCHS", "PretrainResult", "SSLConfig", "distill", "pretrain", "rankme"]
