"""Self-supervised label augmentation in training: the features must hold the views it trains over, and
features that hold views need it (a head would otherwise read R views side by side as one feature). The
head is then wrapped by :class:`~pathweak.heads.sla.LabelAugmented` through its ``label_augmentation``
option, so packaged models rebuild it from model.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..features.views import feature_views
from .config import TrainConfig


def augmentation_options(
    cfg: TrainConfig, encoder: dict[str, Any], n_classes: int | None, where: Path | str
) -> dict[str, Any]:
    """The head options ``cfg.label_augmentation`` adds for features of ``encoder`` (their encoder record),
    or a clear error naming ``where`` (the features) when the two do not fit."""
    views = feature_views(encoder)
    if cfg.label_augmentation is None:
        if views:
            raise ConfigError(
                f"these features hold {views['count']} {views['kind']} views of each tile side by side "
                "(`extract --rotations`); a head without label augmentation would read them as one feature",
                path=where,
                fix=f"train with --label-augmentation {views['kind']}, or on features extracted without --rotations",
            )
        return {}
    if not views or views.get("kind") != cfg.label_augmentation:
        raise ConfigError(
            f"--label-augmentation {cfg.label_augmentation} needs features of each {cfg.label_augmentation} of a tile",
            path=where,
            fix="extract them with `pathweak extract --rotations 4` and train on that features/<encoder_id>-rot4/ folder",
        )
    if not n_classes:
        raise ConfigError(
            "label augmentation trains on joint (class x view) labels; these labels are not classes",
            path=where,
            fix="train a classification task, or drop --label-augmentation",
        )
    return {"label_augmentation": {"kind": views["kind"], "views": int(views["count"])}}


def with_label_augmentation(cfg: TrainConfig, bank: Any, classes: list[str] | None) -> TrainConfig:
    """``cfg`` with the head options of its label augmentation over ``bank``'s features (checked)."""
    from dataclasses import replace

    paths = getattr(bank, "paths", None)
    where = Path(paths[0]).parent if paths else "the features"
    options = augmentation_options(cfg, bank.encoder, len(classes) if classes else None, where)
    if not options:
        return cfg
    return replace(cfg, head_options={**cfg.head_options, **options})
