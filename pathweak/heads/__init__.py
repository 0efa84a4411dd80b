"""Heads: pure torch modules mapping a bag of tile features to slide logits, per-tile scores and
attention, in one registry (``create_head("abmil", in_dim, n_outputs)``; ``pathweak heads list``).

Registered: ``mean`` and ``max`` pooling baselines, ``abmil``, ``clam_sb``, ``clam_mb``, ``transmil``,
``dsmil``, and the instance-level heads ``ins`` (prototype pseudo-labels) and ``wsseg`` (weakly
supervised segmentation on the tile grid). A new head subclasses :class:`MILHead`, registers itself with ``@register_head(name)`` in a
module imported here, returns a :class:`HeadOutput` and (when it has extra loss terms) overrides
:meth:`MILHead.loss`; training, prediction and the benchmarks then take it by name.
"""

from . import clam, dsmil, ins, pooling, sla, transmil, wsseg  # noqa: F401  (registration)
from .base import HEADS, HeadOutput, MILHead, create_head, head_info, register_head

__all__ = ["HEADS", "HeadOutput", "MILHead", "create_head", "head_info", "register_head"]
