"""Heads: pure torch modules mapping a bag of tile features to slide logits, per-tile scores and
attention, in one registry (``create_head("abmil", in_dim, n_outputs)``; ``pathweak heads list``).

Registered: ``mean`` and ``max`` pooling baselines, ``abmil``, ``clam_sb``, ``clam_mb``, ``transmil``,
``dsmil``, and the instance-level heads ``ins`` (prototype pseudo-labels) and ``wsseg`` (weakly
supervised segmentation on the tile grid). A new head subclasses :class:`MILHead`, registers itself with
``@register_head(name)``, returns a :class:`HeadOutput` and (when it has extra loss terms) overrides
:meth:`MILHead.loss`; training, prediction and the benchmarks then take it by name. A built-in head is
also declared in :data:`.registry.BUILT_IN`, so its name is known before torch is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr
from .registry import HEADS, create_head, head_info, register_head

if TYPE_CHECKING:
    from .base import HeadOutput, MILHead

_EXPORTS = {"HeadOutput": "base", "MILHead": "base"}

__all__ = ["HEADS", "HeadOutput", "MILHead", "create_head", "head_info", "register_head"]
__getattr__ = lazy_getattr(__name__, _EXPORTS)
