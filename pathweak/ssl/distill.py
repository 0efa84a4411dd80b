"""``distill``: train a small ViT student to reproduce a teacher encoder on TileStores' tiles (the
objective and the teacher are in :mod:`pathweak.ssl.distiller`; the training run is ``pretrain``'s)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .distiller import load_teacher


def distill(
    stores: list[str | Path], out_dir: str | Path, cfg: Any, *, resume: bool = True, progress: bool = True
) -> Any:
    """Distil ``cfg.teacher`` into a ``cfg.arch`` student on the tiles of ``stores``; writes a
    ``pathweak:`` encoder to ``out_dir`` (see :func:`pathweak.ssl.train.pretrain`)."""
    from .train import pretrain

    size = load_teacher(cfg).info.img_size  # checked here, built again (once) by the module
    cfg = replace(cfg, method="distill", teacher_img_size=size)
    return pretrain(stores, out_dir, cfg, resume=resume, progress=progress)
