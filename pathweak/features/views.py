"""Rotation views of tiles as one FeatureStore (``pathweak extract --rotations R``): each row holds the
tile's embedding under rotations by 0, 360/R, ... degrees side by side, ``R * D`` wide, view 0 (the tile as
it is) first. The FeatureStore records ``views`` ({kind, count, angles, dim}) and its encoder id is the
encoder's plus ``-rot<R>``, so rotation features never mix with plain ones. Heads train on them with label
augmentation (``pathweak train --label-augmentation rotation``, heads/sla.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from .wrapped import WrappedEncoder

if TYPE_CHECKING:
    from ..protocols import ModuleEncoder

ROTATIONS = (2, 4)  # views per tile --rotations takes (90-degree steps: the rotations of a square tile)


def views_record(rotations: int, dim: int) -> dict[str, Any]:
    """The ``views`` record of rotation features (FeatureStore attrs, the encoder record's extras)."""
    return {
        "kind": "rotation",
        "count": rotations,
        "angles": [k * 360 // rotations for k in range(rotations)],
        "dim": dim,
    }


def check_rotations(rotations: int, tokens: int = 0) -> None:
    """1 (no views), 2 or 4; not with token rows (a rotated tile's tokens lie in other cells)."""
    if rotations != 1 and rotations not in ROTATIONS:
        raise ConfigError(f"--rotations takes 2 or 4 (or 1: none), got {rotations}", fix="pass --rotations 4")
    if rotations > 1 and tokens:
        raise ConfigError(
            "--rotations and --tokens do not combine: a rotated tile's patch tokens lie in other cells of the grid",
            fix="extract token rows and rotation views separately",
        )


class RotatedViews(WrappedEncoder):
    """An encoder whose ``embed`` gives each tile's embeddings under ``rotations`` rotations side by side."""

    def __init__(self, encoder: ModuleEncoder, rotations: int):
        check_rotations(rotations)
        self.encoder, self.rotations = encoder, rotations
        base = encoder.info
        self.info = replace(
            base,
            encoder_id=f"{base.encoder_id}-rot{rotations}",
            embed_dim=base.embed_dim * rotations,
            extra={**base.extra, "views": views_record(rotations, base.embed_dim)},
        )

    def check_tiles(self, is_3d: bool, tile_shape: tuple[int, ...], where: str) -> None:
        if is_3d:
            raise ConfigError(
                "rotation views are of 2D tiles and this store holds 3D patches",
                path=where,
                fix="extract volume patches without --rotations",
            )
        self.encoder.check_tiles(is_3d, tile_shape, where)

    @torch.no_grad()
    def embed(self, tiles: torch.Tensor) -> torch.Tensor:
        """Rows (B, R * D) float32 of uint8 tiles (B, H, W, 3): view k is the tile rotated k x 360/R degrees
        counter-clockwise (``torch.rot90`` on the pixel axes)."""
        step = 4 // self.rotations
        return torch.cat(
            [self.encoder.embed(torch.rot90(tiles, k * step, dims=(1, 2))) for k in range(self.rotations)], 1
        )


def feature_views(encoder: dict[str, Any]) -> dict[str, Any] | None:
    """The ``views`` record of features from their encoder record (a FeatureStore's or bank's ``encoder``)."""
    views = (encoder.get("extra") or {}).get("views")
    return dict(views) if views else None
