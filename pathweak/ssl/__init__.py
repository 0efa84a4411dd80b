"""Self-supervised pretraining of ViT encoders (DINO, MAE; MAE3D for volume patches) on TileStores, and
distillation of an encoder into a small ViT. Every name is imported on first use: ``SSLConfig``
(:mod:`.config`) needs no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .config import ARCHS, SSLConfig
    from .distill import distill
    from .rankme import rankme
    from .train import PretrainResult, pretrain

_EXPORTS = {
    "ARCHS": "config",
    "SSLConfig": "config",
    "distill": "distill",
    "rankme": "rankme",
    "PretrainResult": "train",
    "pretrain": "train",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
