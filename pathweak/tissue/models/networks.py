"""The networks of the tissue models (torch, torchvision, segmentation-models-pytorch: imported only when a
model runs), their checkpoints' keys mapped onto them, and loading (checked on the meta device first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ...hub import check_fits, load_strict, read_checkpoint
from .records import TissueModel

SMP_HINT = 'the GrandQC models need segmentation-models-pytorch: pip install "pathweak[tissue]" (or pip install segmentation-models-pytorch)'


def build_network(model: TissueModel) -> nn.Module:
    """The model's network with fresh parameters (build under ``torch.device("meta")`` to check shapes)."""
    if model.name == "hest":
        from torchvision.models.segmentation import deeplabv3_resnet50

        return deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=2)
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise ConfigError(
            f"{model.name} needs segmentation-models-pytorch, which is not installed", fix=SMP_HINT
        ) from None
    import warnings

    cls = smp.UnetPlusPlus if model.role == "tissue" else smp.Unet
    with warnings.catch_warnings():  # smp deprecates its "timm-" encoders; the GrandQC checkpoints use that one's keys
        warnings.simplefilter("ignore", DeprecationWarning)
        return cls(
            encoder_name="timm-efficientnet-b0", encoder_weights=None, classes=len(model.classes), activation=None
        )


def hub_state_dict(model: TissueModel, state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's tensors under the network's names: HEST's Lightning keys lose their ``model.``
    prefix and its auxiliary head; the GrandQC files are plain state dicts."""
    if model.name != "hest":
        return dict(state)
    return {k.removeprefix("model."): v for k, v in state.items() if "aux" not in k}


def check_on_meta(model: TissueModel, state: dict[str, Any], path: str | Path | None = None) -> None:
    """The mapped checkpoint fits the network, key by key and shape by shape, without allocating it."""
    with torch.device("meta"):
        net = build_network(model)
    check_fits(net.state_dict(), hub_state_dict(model, state), f"{model.name} ({model.title})", path, _fix(model))


def load_network(model: TissueModel, file: str | Path) -> nn.Module:
    """The network with the weights of ``file``, in eval mode: keys checked on the meta device, then the
    network allocated (no random initialisation) and loaded strictly. Only tensors are read from the file."""
    state = read_checkpoint(file)
    check_on_meta(model, state, file)
    with torch.device("meta"):
        net = build_network(model)
    net = net.to_empty(device="cpu")
    load_strict(net, hub_state_dict(model, state), f"{model.name} ({model.title})", file, _fix(model))
    return net.eval()


def _fix(model: TissueModel) -> str:
    return f"pass {', '.join(model.files)} of {model.repo} (see docs/tissue.md)"


def forward(model: TissueModel, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, C, H, W) float32 of normalised input ``x`` (B, 3, H, W)."""
    from ...devices import autocast

    with torch.no_grad(), autocast(x.device, model.precision):  # fp16 on CUDA where the model ran so
        out = net(x)
    logits = out["out"] if isinstance(out, dict) else out
    return torch.softmax(logits.float(), dim=1)
