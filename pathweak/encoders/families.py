"""The encoder families: ``timm:<model>``, ``torchvision:resnet50_trunc``, ``monai:resnet10|18|34|50``
(3D volume patches) and ``pathweak:<dir>`` (an encoder written by ``pathweak pretrain``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._registry import Registry
from ..errors import ConfigError
from .weights import encoder_id as _encoder_id
from .weights import jsonable as _jsonable

if TYPE_CHECKING:
    from torch import nn

    from .base import Encoder
from .weights import load_state_dict_file, seeded
from .weights import random_seed as _random_seed
from .weights import weights_hash as _weights_hash

Loader = Callable[[str, "str | None", dict[str, Any]], "Encoder"]
Check = Callable[[str, "str | None"], None]
ENCODERS: Registry[Loader] = Registry("encoder family")
# what each family's loader refuses before it builds anything: the model name and the weights (a cohort
# spec is checked with these before any slide is tiled; :func:`pathweak.encoders.check_encoder`)
CHECKS: Registry[Check] = Registry("encoder family")


@CHECKS.register("timm")
def _timm_check(model: str, weights: str | None) -> None:
    import timm

    if weights is None:
        raise ConfigError(
            f"timm:{model} needs local weights; nothing is downloaded at run time",
            fix="pass --weights FILE (a .safetensors/.pth/.bin state dict, e.g. a UNI or Virchow checkpoint), "
            "or --weights random for an untrained baseline",
        )
    if model not in timm.list_models():
        raise ConfigError(f"timm has no model {model!r}", fix="see timm.list_models() for the names")
    _check_file(weights)


@ENCODERS.register("timm")
def _timm(model: str, weights: str | None, kwargs: dict[str, Any]) -> Encoder:
    import timm

    from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderInfo  # torch: imported when an encoder is built

    _timm_check(model, weights)
    assert weights is not None  # the check refuses None
    kwargs = {**kwargs}
    img_size = int(kwargs.pop("img_size", 0) or 0)
    if img_size:
        kwargs["img_size"] = img_size
    seed = _random_seed(weights)
    net: Any  # a timm model: num_features and pretrained_cfg are beyond nn.Module's typing
    with seeded(seed):
        net = timm.create_model(model, pretrained=False, num_classes=0, **kwargs)
    if seed is None:
        _load_weights(net, weights, f"timm:{model}")
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = img_size or int((cfg.get("input_size") or (3, 224, 224))[-1])
    info = EncoderInfo(
        name=f"timm:{model}",
        encoder_id=_encoder_id("timm", model, weights, kwargs),
        embed_dim=int(net.num_features),
        img_size=size,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        weights=weights,
        weights_hash=_weights_hash(weights),
        extra={"timm_kwargs": _jsonable(kwargs)},
    )
    return Encoder(net, info)


@CHECKS.register("torchvision")
def _torchvision_check(model: str, weights: str | None) -> None:
    if model != "resnet50_trunc":
        raise ConfigError(f"unknown torchvision encoder {model!r}", fix="use torchvision:resnet50_trunc")
    if weights is None:
        raise ConfigError(
            "torchvision:resnet50_trunc needs the ImageNet ResNet-50 weights; nothing is downloaded at run time",
            fix="download https://download.pytorch.org/models/resnet50-11ad3fa6.pth and pass --weights FILE",
        )
    _check_file(weights)


@ENCODERS.register("torchvision")
def _torchvision(model: str, weights: str | None, kwargs: dict[str, Any]) -> Encoder:
    from torch import nn

    from .base import Encoder, EncoderInfo  # torch: imported when an encoder is built

    _torchvision_check(model, weights)
    assert weights is not None  # the check refuses None
    from torchvision.models import resnet50

    seed = _random_seed(weights)
    with seeded(seed):
        net = resnet50()
    if seed is None:
        _load_weights(net, weights, "torchvision:resnet50_trunc")
    # CLAM's truncated ResNet-50: up to layer3, global average pooling -> 1024 features
    trunk = nn.Sequential(
        net.conv1,
        net.bn1,
        net.relu,
        net.maxpool,
        net.layer1,
        net.layer2,
        net.layer3,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
    )
    info = EncoderInfo(
        name="torchvision:resnet50_trunc",
        encoder_id=_encoder_id("torchvision", "resnet50_trunc", weights),
        embed_dim=1024,
        img_size=int(kwargs.get("img_size", 224)),
        weights=weights,
        weights_hash=_weights_hash(weights),
    )
    return Encoder(trunk, info)


MONAI_RESNETS = ("resnet10", "resnet18", "resnet34", "resnet50")
VOLUME_MEAN, VOLUME_STD = (0.5,), (0.25,)  # of the 0..1 voxels of a volume store (intensities windowed to uint8)


@CHECKS.register("monai")
def _monai_check(model: str, weights: str | None) -> None:
    if model not in MONAI_RESNETS:
        raise ConfigError(
            f"unknown monai encoder {model!r}", fix=f"use one of {', '.join('monai:' + m for m in MONAI_RESNETS)}"
        )
    if weights is None:
        raise ConfigError(
            f"monai:{model} needs weights; nothing is downloaded at run time",
            fix="pass --weights FILE (a MedicalNet or MONAI 3D ResNet state dict, e.g. resnet_18_23dataset.pth) "
            "or --weights random for an untrained baseline",
        )
    _check_file(weights)


@ENCODERS.register("monai")
def _monai(model: str, weights: str | None, kwargs: dict[str, Any]) -> Encoder:
    """A MONAI 3D ResNet (one input channel, MedicalNet's layer names, global average pooling) for the
    (D, H, W) patches of volumes tiled with ``--mode 3d``. ``img_size`` (default 64) is the cube side
    patches are resized to; other kwargs go to MONAI's constructor (e.g. ``shortcut_type``)."""
    from monai.networks import nets

    from .base import Encoder, EncoderInfo  # torch: imported when an encoder is built

    _monai_check(model, weights)
    assert weights is not None  # the check refuses None
    options = dict(kwargs)
    size = int(options.pop("img_size", 64))
    seed = _random_seed(weights)
    with seeded(seed):
        net = getattr(nets, model)(spatial_dims=3, n_input_channels=1, feed_forward=False, **options)
    if seed is None:
        _load_weights(net, weights, f"monai:{model}")
    embed_dim = 2048 if model == "resnet50" else 512
    info = EncoderInfo(
        name=f"monai:{model}",
        encoder_id=_encoder_id("monai", model, weights, kwargs),
        embed_dim=embed_dim,
        img_size=size,
        mean=VOLUME_MEAN,
        std=VOLUME_STD,
        precision="bf16",
        weights=weights,
        weights_hash=_weights_hash(weights),
        extra={"monai_kwargs": _jsonable(options), "cpu_batch": 8},
        input="volume",
    )
    return Encoder(net, info)


@CHECKS.register("pathweak")
def _pathweak_check(directory: str, weights: str | None) -> None:
    folder = Path(directory)
    weights_path = Path(weights) if weights else folder / "encoder.safetensors"
    if not (folder / "encoder.json").exists() or not weights_path.exists():
        raise ConfigError(
            "not a pathweak encoder folder (encoder.json and encoder.safetensors expected)",
            path=folder,
            fix="point to the output folder of `pathweak pretrain`",
        )


@ENCODERS.register("pathweak")
def _pathweak(directory: str, weights: str | None, kwargs: dict[str, Any]) -> Encoder:
    """An encoder written by ``pathweak pretrain`` (encoder.json + encoder.safetensors)."""
    import timm

    from .base import Encoder, EncoderInfo  # torch: imported when an encoder is built
    from .unified import UNIFIED_INPUT, build_unified, unified_branch

    _pathweak_check(directory, weights)
    folder = Path(directory)
    config_path = folder / "encoder.json"
    weights_path = Path(weights) if weights else folder / "encoder.safetensors"
    cfg = json.loads(config_path.read_text())
    volume = cfg.get("input") == "volume"  # a 3D ViT of `pathweak pretrain --method mae3d`
    unified = cfg.get("input") == UNIFIED_INPUT  # one ViT for 2D and 3D stores (mae on both kinds at once)
    net: nn.Module
    if volume:
        from .vit3d import build_vit3d

        net = build_vit3d(cfg["vit3d"])
    elif unified:
        net = build_unified(cfg["timm_model"], cfg.get("timm_kwargs", {}), unified_branch(cfg["volume"]))
    else:
        net = timm.create_model(cfg["timm_model"], pretrained=False, num_classes=0, **cfg.get("timm_kwargs", {}))
    _load_weights(net, str(weights_path), f"pathweak:{folder}")
    info = EncoderInfo(
        name=f"pathweak:{folder}",
        encoder_id=_encoder_id("pathweak", cfg.get("run_name") or folder.name, str(weights_path)),
        embed_dim=int(cfg["embed_dim"]),
        img_size=int(cfg["img_size"]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        weights=str(weights_path),
        weights_hash=_weights_hash(str(weights_path)),
        extra={
            "pretrain": cfg.get("training", {}),
            **({"cpu_batch": 8} if volume else {}),
            **({"volume": cfg["volume"]} if unified else {}),
        },
        input=str(cfg.get("input") or "rgb"),
    )
    return Encoder(net, info)


def _check_file(weights: str) -> None:
    """A weights path (not ``random[:seed]``) must be a file."""
    if _random_seed(weights) is None and not Path(weights).is_file():
        raise ConfigError("weights file not found", path=weights, fix="check the --weights path")


def _load_weights(net: Any, weights: str, what: str) -> None:
    """Lenient load of a family's weights: classifier heads dropped, every network key required."""
    state = load_state_dict_file(weights)
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc."))}
    missing = [k for k in own if k not in state and not k.startswith(("head.", "fc."))]
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or wrong:
        detail = f"{len(missing)} missing (e.g. {missing[:2]})" if missing else f"shape mismatch for {wrong[:2]}"
        raise ConfigError(
            f"the weights do not fit {what}: {detail}",
            path=weights,
            fix="use the architecture the checkpoint was trained with (and its kwargs, e.g. img_size)",
        )
    net.load_state_dict(state, strict=False)
