"""The presets that come as a series of sizes of one model family: Lunit's and Kaiko's DINO ViTs (timm
conversions by 1aurent on the hub), one typed ``Preset`` per size."""

from __future__ import annotations

from .record import HALF, LUNIT, Preset


def _lunit(size: str, patch: int, dim: int, params_m: int) -> Preset:
    return Preset(
        f"lunit-s{patch}",
        f"Lunit DINO ViT-S/{patch}",
        "timm",
        f"vit_{size}_patch{patch}_224",
        dim,
        "cls",
        {"img_size": 224, "dynamic_img_size": True},
        mean=LUNIT[0],
        std=LUNIT[1],
        interpolation="bicubic",
        crop_pct=0.9,
        precision="fp32",
        licence="Lunit non-commercial",
        repo=f"1aurent/vit_{size}_patch{patch}_224.lunit_dino",
        files=("model.safetensors",),
        params_m=params_m,
    )


def _kaiko(size: str, patch: int, dim: int, params_m: int) -> Preset:
    return Preset(
        f"kaiko-{size[0]}{patch}",
        f"Kaiko ViT-{size[0].upper()}/{patch}",
        "timm",
        f"vit_{size}_patch{patch}_224",
        dim,
        "cls",
        {"img_size": 224, "dynamic_img_size": True},
        mean=HALF[0],
        std=HALF[1],
        precision="fp32",
        licence="Kaiko non-commercial",
        repo=f"1aurent/vit_{size}_patch{patch}_224.kaiko_ai_towards_large_pathology_fms",
        files=("model.safetensors",),
        params_m=params_m,
    )


LUNIT_DINO = [_lunit("small", 8, 384, 22), _lunit("small", 16, 384, 22)]

KAIKO = [
    _kaiko("small", 8, 384, 22),
    _kaiko("small", 16, 384, 22),
    _kaiko("base", 8, 768, 86),
    _kaiko("base", 16, 768, 86),
    Preset(
        "kaiko-l14",
        "Kaiko ViT-L/14 (4 registers)",
        "timm",
        "vit_large_patch14_reg4_dinov2",
        1024,
        "cls",
        {"img_size": 224, "dynamic_img_size": True},
        mean=HALF[0],
        std=HALF[1],
        precision="fp32",
        licence="Kaiko non-commercial",
        repo="1aurent/vit_large_patch14_reg4_224.kaiko_ai_towards_large_pathology_fms",
        repo_aliases=("1aurent/vit_large_patch14_reg4_dinov2.kaiko_ai_towards_large_pathology_fms",),
        files=("model.safetensors",),
        params_m=304,
        notes="built at 224 (TRIDENT builds at 518 and feeds 224); a pos_embed for another grid is resampled once",
    ),
]
