"""Building a preset: its architecture (random-initialised under a local seed, or on the meta device),
its hub checkpoint mapped onto it and loaded strictly, wrapped as an :class:`Encoder`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Encoder, EncoderInfo
from .presets import EMBEDDINGS, Preset, get_preset
from .resolve import Located, resolve
from .weights import (
    encoder_id,
    jsonable,
    load_strict,
    random_seed,
    read_checkpoint,
    seeded,
    weights_hash,
)

HF_HINT = 'this preset runs on transformers: pip install "pathweak[hf]" (or pip install transformers)'


def build_network(
    preset: Preset, overrides: dict[str, Any] | None = None, hub_config: dict[str, Any] | None = None
) -> Any:
    """The preset's network (the ``backbone`` of its Encoder) with fresh parameters. Build it under
    ``torch.device("meta")`` to check shapes without allocating."""
    overrides = dict(overrides or {})
    rule = overrides.pop("embedding", preset.embedding)
    if rule not in EMBEDDINGS:
        raise ConfigError(f"unknown embedding rule {rule!r}", fix=f"use one of {', '.join(EMBEDDINGS)}")
    if preset.kind == "hf":
        return _hf_network(preset, rule, hub_config)
    import timm

    from .modules import ConchVision, ConvStem, ViTEmbedder

    kwargs = {**preset.kwargs, **overrides}
    pool = kwargs.pop("pool", None)
    if hub_config:  # the hub's model_args fill what the preset does not set (timm's own precedence)
        for key, value in (hub_config.get("model_args") or {}).items():
            kwargs.setdefault(key, value)
    kwargs = {k: _code_value(v) for k, v in kwargs.items()}
    kwargs.update(num_classes=0)
    if preset.kind == "swin":
        return timm.create_model(preset.arch, pretrained=False, embed_layer=ConvStem, **kwargs)
    kwargs.setdefault("global_pool", "token")
    trunk = timm.create_model(preset.arch, pretrained=False, **kwargs)
    if preset.kind == "conch":
        return ConchVision(trunk, **pool)
    if rule not in ("cls", "cls+mean"):
        raise ConfigError(f"embedding {rule!r} does not apply to {preset.name}", fix="use cls or cls+mean")
    return ViTEmbedder(trunk, rule)


def hub_state_dict(preset: Preset, state: dict[str, Any], net: Any, path: str | Path) -> dict[str, Any]:
    """The hub checkpoint's tensors renamed to the network's keys (prefix selection, wrapper prefixes,
    CTransPath's old-timm Swin layout), the keys of other towers (e.g. CONCH's text side) dropped."""
    if preset.key_prefix:
        own = {k[len(preset.key_prefix) :]: v for k, v in state.items() if k.startswith(preset.key_prefix)}
        if not own:
            raise ConfigError(
                f"the weights hold no {preset.key_prefix}* keys, so they are not {preset.title} weights",
                path=path,
                fix=f"pass the {preset.repo or preset.name} checkpoint ({', '.join(preset.files)})",
            )
        state = own
    for prefix in preset.strip_prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(preset.ignore_keys)} if preset.ignore_keys else state
    if preset.kind == "swin":
        from timm.models.swin_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, net)
    return state


def target_module(preset: Preset, net: Any) -> Any:
    """The module whose state dict the hub checkpoint is (inside the backbone wrapper)."""
    if preset.kind == "hf":
        return net.model
    if preset.kind == "timm":
        return net.trunk
    return net


def create_preset(name: str, weights: str | Path | None = None, **overrides: Any) -> Encoder:
    """The encoder of preset ``name``: weights from ``weights`` (a file, a hub snapshot folder,
    ``random[:seed]``) or else the local Hugging Face cache; nothing is downloaded. ``embedding="cls"``
    (or ``"cls+mean"``) overrides a ViT preset's embedding rule; other keywords go to the constructor."""
    preset = get_preset(name)
    text = None if weights is None else str(weights)
    seed = random_seed(text)
    located: Located | None = None if seed is not None else resolve(preset, weights)
    config_path = located.config if located is not None else None
    hub_config = _read_json(config_path) if config_path else None
    if hub_config is not None and config_path is not None:
        _check_hub_config(preset, hub_config, config_path)
    net = _empty_network(preset, overrides, hub_config) if located is not None else None
    if net is None:
        with seeded(seed if seed is not None else 0):
            net = build_network(preset, overrides, hub_config)
    if located is not None:
        module = target_module(preset, net)
        state = hub_state_dict(preset, read_checkpoint(located.file), module, located.file)
        load_strict(module, state, f"{preset.name} ({preset.title})", located.file)
    tag = text if seed is not None else str(located.file)  # type: ignore[union-attr]
    rule = overrides.get("embedding", preset.embedding)
    dim = preset.embed_dim if rule == preset.embedding else _dim_of(preset, rule)
    extras = {k: v for k, v in overrides.items() if k != "embedding"}
    info = EncoderInfo(
        name=preset.name,
        encoder_id=encoder_id("", preset.name, tag, {**jsonable(extras), "embedding": rule} if overrides else None),
        embed_dim=dim,
        img_size=int(overrides.get("img_size", preset.img_size)),
        mean=preset.mean,
        std=preset.std,
        precision=preset.precision,
        weights=tag,
        weights_hash=weights_hash(tag),
        interpolation=preset.interpolation,
        crop_pct=preset.crop_pct,
        extra={
            "preset": preset.name,
            "embedding": rule,
            "mpp": preset.mpp,
            "patch_px": preset.patch_px,
            "licence": preset.licence,
            "repo": preset.repo,
            "weights_source": located.source if located else "random",
            "kwargs": jsonable(extras),
        },
    )
    return Encoder(net, info).eval()


def _empty_network(preset: Preset, overrides: dict[str, Any], hub_config: dict[str, Any] | None) -> Any:
    """The network with uninitialised parameters (built on the meta device, then allocated), when every
    tensor it holds is in its state dict, so that loading the checkpoint fills it all: skips a random
    initialisation that the weights overwrite anyway (tens of seconds for a ViT-g on a CPU). None when the
    network has non-persistent buffers (e.g. Swin's relative position index), which only init computes."""
    import torch

    with torch.device("meta"):
        net = build_network(preset, overrides, hub_config)
    saved = set(net.state_dict())
    if any(name not in saved for name, _ in net.named_buffers()):
        return None
    return net.to_empty(device="cpu")


def _dim_of(preset: Preset, rule: str) -> int:
    if rule == "cls" and preset.embedding == "cls+mean":
        return preset.embed_dim // 2
    if rule == "cls+mean" and preset.embedding == "cls":
        return preset.embed_dim * 2
    return preset.embed_dim


def _code_value(value: Any) -> Any:
    if value == "SwiGLUPacked":
        from timm.layers import SwiGLUPacked

        return SwiGLUPacked
    if value == "SiLU":
        from torch import nn

        return nn.SiLU
    return value


def _hf_network(preset: Preset, rule: str, hub_config: dict[str, Any] | None) -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            f"{preset.name} needs the transformers package, which is not installed", fix=HF_HINT
        ) from None
    from .modules import HFEmbedder

    cls = getattr(transformers, preset.arch)
    values = dict(hub_config) if hub_config else dict(preset.kwargs)
    values.pop("model_type", None)
    config = cls.config_class(**values)
    extra = {"add_pooling_layer": False} if preset.arch == "ViTModel" else {}
    return HFEmbedder(cls(config, **extra), rule, 1 + int(getattr(config, "num_register_tokens", 0) or 0))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the hub config ({exc})", path=path, fix="re-download the snapshot") from None


def _check_hub_config(preset: Preset, cfg: dict[str, Any], path: Path) -> None:
    """The hub config must describe this preset's architecture (else the weights are another model's)."""
    if preset.kind == "hf":
        want = {k: preset.kwargs[k] for k in ("model_type", "hidden_size", "num_hidden_layers", "patch_size")}
        got = {k: cfg.get(k) for k in want}
    elif "architecture" in cfg:
        want, got = {"architecture": preset.arch}, {"architecture": cfg["architecture"]}
    else:
        return
    bad = {k: got[k] for k in want if got[k] is not None and got[k] != want[k]}
    if bad:
        raise ConfigError(
            f"the hub config describes another model ({bad}; {preset.name} is {want})",
            path=path,
            fix=f"pass the weights of {preset.repo or preset.name}, or the preset these weights belong to",
        )
