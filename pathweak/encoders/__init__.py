"""Encoders: ``create_encoder(name, weights=None)`` for a named preset (``uni2-h``, ``virchow2``, ``conch``,
... see ``pathweak encoders list``) or a family ``pathweak:<dir>``, ``timm:<model>``,
``torchvision:resnet50_trunc`` and, for 3D volume patches, ``monai:resnet10|18|34|50``. Nothing is
downloaded: presets find their weights from ``--weights FILE|DIR`` or the local Hugging Face cache, and
missing weights are one clear error saying how to get them. ``weights="random"`` (or ``random:<seed>``)
asks explicitly for a random initialisation (baselines, benchmarks).

Modules: ``presets`` (the registry of records), ``resolve`` (finding weights offline), ``build``
(architectures and hub key layouts), ``modules`` (the non-timm parts), ``families``, ``weights``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .._lazy import lazy_getattr
from ..errors import ConfigError
from .presets import PRESETS, UNSUPPORTED, Preset, get_preset

if TYPE_CHECKING:
    from .base import Encoder, EncoderInfo
    from .families import ENCODERS
    from .weights import load_state_dict_file

# the torch-importing names, loaded on first use: the presets, their rows and the weights lookup
# (`pathweak encoders list`, a missing-weights check) need no torch
__getattr__ = lazy_getattr(
    __name__, {"Encoder": "base", "EncoderInfo": "base", "ENCODERS": "families", "load_state_dict_file": "weights"}
)


FAMILIES = [
    {"name": "pathweak:<dir>", "weights": "the pretrain output dir (encoder.safetensors + encoder.json)"},
    {"name": "timm:<model name>", "weights": "--weights FILE (.safetensors/.pth/.bin) or --weights random"},
    {"name": "torchvision:resnet50_trunc", "weights": "--weights resnet50 ImageNet file (e.g. resnet50-11ad3fa6.pth)"},
    {
        "name": "monai:resnet10|18|34|50",
        "weights": "3D patches of volumes (--mode 3d): --weights MedicalNet/MONAI state dict or random",
    },
]


def create_encoder(name: str, weights: str | Path | None = None, **kwargs: Any) -> Encoder:
    """An :class:`Encoder` by name (see ``pathweak encoders list``), in eval mode on the CPU."""
    family, rest = _split_name(name)
    if family is None:
        from .build import create_preset

        return create_preset(name, weights, **kwargs)
    from .families import ENCODERS

    encoder = ENCODERS.get(family)(rest, None if weights is None else str(weights), kwargs)
    return encoder.eval()


def check_encoder(name: str, weights: str | Path | None = None) -> None:
    """What :func:`create_encoder` would refuse, found without building the network: an unknown preset,
    family or model name, and weights that are not on this machine (a preset's are looked up offline, a
    family's file must exist). A cohort spec is checked with it before any slide is tiled."""
    family, rest = _split_name(name)
    text = None if weights is None else str(weights)
    if family is None:
        from .resolve import resolve  # a preset: looked up without torch
        from .weights import random_seed

        preset = get_preset(name)
        if random_seed(text) is None:
            resolve(preset, weights)
        return
    from .families import CHECKS, ENCODERS

    ENCODERS.get(family)
    CHECKS.get(family)(rest, text)


def _split_name(name: str) -> tuple[str | None, str]:
    """(family, model) of ``family:model``, (None, name) of a preset; an error for neither."""
    family, sep, rest = name.partition(":")
    if not sep:
        if name.lower() in PRESETS or name.lower() in UNSUPPORTED:
            return None, name
        raise ConfigError(
            f"encoder name {name!r} is neither a preset nor of the form family:name",
            fix=f"use a preset ({', '.join(PRESETS)}), pathweak:<pretrain output dir>, timm:<model name> or torchvision:resnet50_trunc",
        )
    if not rest:
        raise ConfigError(
            f"encoder name {name!r} is not of the form family:name",
            fix="use pathweak:<pretrain output dir>, timm:<model name> or torchvision:resnet50_trunc",
        )
    return family, rest


def paired_weights(n: int, weights: str | Path | Sequence[str | Path | None] | None) -> list[str | Path | None]:
    """One weights entry per encoder: ``weights`` given once per encoder (in order), or once for all."""
    if isinstance(weights, (list, tuple)):
        listed: list[str | Path | None] = list(weights)
    else:
        listed = [cast("str | Path | None", weights)] * n
    if len(listed) == 1:
        listed = listed * n
    if len(listed) != n:
        raise ConfigError(
            f"{len(listed)} --weights for {n} encoders",
            fix="give --weights once per --encoder, in the same order, or once for all",
        )
    return listed


def check_weights(names: Sequence[object], weights: str | Path | Sequence[str | Path | None] | None = None) -> None:
    """Fail fast, before torch is imported: every preset among ``names`` finds its weights on this machine
    (the same lookup and error as :func:`create_encoder`); other names are checked when they are created."""
    for name, w in zip(names, paired_weights(len(names), weights), strict=True):
        if isinstance(name, str) and (name.lower() in PRESETS or name.lower() in UNSUPPORTED):
            check_encoder(name, w)


def preset_rows(weights: dict[str, str | Path] | None = None) -> list[dict[str, Any]]:
    """One row per preset (dim, input, resolution, licence, where its weights are found here, download
    command), then the unsupported models with why; what ``pathweak encoders list`` prints."""
    from .resolve import locate

    rows: list[dict[str, Any]] = []
    for p in PRESETS.values():
        found, _ = locate(p, (weights or {}).get(p.name))
        rows.append(
            {
                "name": p.name,
                "title": p.title,
                "supported": True,
                "dim": p.embed_dim,
                "embedding": p.embedding,
                "input": p.img_size,
                "mpp": p.mpp,
                "patch_px": p.patch_px,
                "precision": p.precision,
                "licence": p.licence,
                "gated": p.gated,
                "repo": p.repo,
                "found": str(found.file) if found else None,
                "download": p.download,
            }
        )
    for name, u in UNSUPPORTED.items():
        rows.append({"name": name, "title": name, "supported": False, "repo": u["repo"], "why": u["why"]})
    return rows


def preset_info(name: str, weights: str | Path | None = None) -> dict[str, Any]:
    """The full record of a preset, with where its weights were looked for and found."""
    from .resolve import locate

    preset = get_preset(name)
    found, looked = locate(preset, weights)
    return {
        **preset.as_dict(),
        "download": preset.download,
        "found": str(found.file) if found else None,
        "hub_config": str(found.config) if found and found.config else None,
        "looked": looked,
    }


def list_encoders() -> list[dict[str, str]]:
    """Families and named presets with how to get their weights (name + one line each)."""
    rows = list(FAMILIES)
    rows += [{"name": k, "weights": f"{p.repo or 'not on the hub'}; {p.download}"} for k, p in PRESETS.items()]
    return rows


__all__ = [
    "ENCODERS",
    "PRESETS",
    "UNSUPPORTED",
    "Encoder",
    "EncoderInfo",
    "Preset",
    "check_encoder",
    "check_weights",
    "create_encoder",
    "list_encoders",
    "load_state_dict_file",
    "paired_weights",
    "preset_info",
    "preset_rows",
]
