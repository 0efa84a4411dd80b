"""``pathweak encoders info`` of a family name: what an encoder is and which stores it embeds (``inputs``:
``rgb`` tiles of slides, images and slice patches, ``volume`` 3D patches, or both for the unified 2D/3D
ViT of ``pretrain --method mae`` on both kinds). A ``pathweak:<dir>`` encoder is read from its encoder.json
without building it; the other families build the network (torch) to report its record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError

INPUTS = {"rgb": ["rgb"], "volume": ["volume"], "rgb+volume": ["rgb", "volume"]}


def family_info(name: str, weights: str | Path | None = None) -> dict[str, Any]:
    """The record of a ``family:model`` encoder: its name, input kinds (``inputs``), input sizes, mean/std,
    embedding size and, for a ``pathweak:<dir>`` encoder, how it was trained (encoder.json's ``training``)."""
    from . import _split_name, check_encoder

    family, rest = _split_name(name)
    if family is None:
        raise ConfigError(f"{name!r} is a preset, not a family:model name", fix=f"run `pathweak encoders info {name}`")
    check_encoder(name, weights)
    if family == "pathweak":
        return _pathweak_record(Path(rest), name)
    from . import create_encoder

    info = create_encoder(name, weights).info
    return {**info.as_dict(), "inputs": INPUTS.get(info.input, [info.input])}


def _pathweak_record(folder: Path, name: str) -> dict[str, Any]:
    try:
        cfg = json.loads((folder / "encoder.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"encoder.json cannot be read ({exc})", path=folder / "encoder.json") from None
    kind = str(cfg.get("input") or "rgb")
    training = dict(cfg.get("training") or {})
    summary = {
        k: training[k] for k in ("method", "tiles", "steps", "epochs", "seconds", "selected_by") if k in training
    }
    if "stores" in training:
        summary["stores"] = len(training["stores"])
    record: dict[str, Any] = {
        "name": name,
        "inputs": INPUTS.get(kind, [kind]),
        "embed_dim": cfg.get("embed_dim"),
        "arch": cfg.get("arch"),
        "timm_model": cfg.get("timm_model"),
        "img_size": cfg.get("img_size"),
        "mean": cfg.get("mean"),
        "std": cfg.get("std"),
        "training": summary,
    }
    if kind == "rgb+volume":  # the 3D branch of the unified ViT: cube side, token cube, 3D normalisation
        record["volume"] = cfg.get("volume")
    elif kind == "volume":
        record["volume"] = {"img_size": cfg.get("img_size"), "patch_size": cfg.get("patch_size")}
    for key in ("finetuned_from", "distilled_from"):
        if key in cfg:
            record[key] = cfg[key]
    return record
