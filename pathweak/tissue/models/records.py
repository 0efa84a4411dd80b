"""The records of the deep-learning tissue and artefact models: how each is built, fed and read, and where its
weights live (facts from TRIDENT's ``trident/segmentation_models/load.py``; docs/tissue.md). No torch here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REPO = "MahmoodLab/hest-tissue-seg"  # all three checkpoints are files of this hub repo


@dataclass(frozen=True)
class TissueModel:
    """One segmentation model: its network, input, resolution, output rule and weights."""

    name: str
    title: str
    role: str  # "tissue" (a tissue mask) or "artifacts" (classes removed from the tissue mask)
    network: str  # what builds it (docs)
    classes: tuple[str, ...]  # output channel names, in order
    mpp: float  # µm/px the model reads its input at
    input_px: int = 512  # side of the square tiles it is run on
    precision: str = "fp16"  # autocast dtype on CUDA ("fp32": none); the CPU runs float32
    jpeg_quality: int | None = None  # re-encode each input tile as JPEG at this quality first (GrandQC)
    rule: str = ""  # how the output becomes a mask (docs)
    threshold: float = 0.5
    files: tuple[str, ...] = ()
    repo: str | None = REPO
    repo_aliases: tuple[str, ...] = ()
    repo_type: str = "model"
    gated: bool = False
    licence: str = ""
    key_rule: str = ""  # how the checkpoint's keys become the network's (docs)
    params_m: float = 0.0
    get: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def download(self) -> str:
        return f"huggingface-cli download {self.repo} {' '.join(self.files)}"


ALL = (
    TissueModel(
        "hest",
        "HEST tissue segmentation (DeepLabV3-ResNet50)",
        "tissue",
        "torchvision `deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=2)` (no auxiliary head)",
        ("background", "tissue"),
        mpp=1.0,
        precision="fp16",
        rule="softmax channel 1 > threshold (0.5) is tissue",
        files=("deeplabv3_seg_v4.ckpt",),
        licence="not verified (HEST-1k: CC-BY-NC-SA-4.0)",
        key_rule="a Lightning checkpoint: `state_dict`, the `model.` prefix stripped, `aux_classifier` keys dropped",
        params_m=39.6,
        notes="10x (about 1 µm/px) as TRIDENT runs it",
    ),
    TissueModel(
        "grandqc",
        "GrandQC tissue detection (Unet++ on EfficientNet-B0)",
        "tissue",
        'segmentation-models-pytorch `UnetPlusPlus(encoder_name="timm-efficientnet-b0", encoder_weights=None, classes=2)`',
        ("tissue", "background"),
        mpp=10.0,
        precision="fp16",
        jpeg_quality=80,
        rule="arg-max class 0 with a probability of at least the threshold (0.5) is tissue",
        files=("Tissue_Detection_MPP10.pth",),
        licence="not verified (GrandQC)",
        key_rule="a plain state dict, keys as the network's",
        params_m=6.6,
        notes="1x (about 10 µm/px); each tile JPEG-recompressed at quality 80 before it is normalised, as GrandQC trained",
    ),
    TissueModel(
        "grandqc-artifacts",
        "GrandQC artefact segmentation (Unet on EfficientNet-B0)",
        "artifacts",
        'segmentation-models-pytorch `Unet(encoder_name="timm-efficientnet-b0", encoder_weights=None, classes=8)`',
        (
            "unused",
            "normal tissue",
            "fold",
            "dark spot & foreign object",
            "pen marking",
            "edge & air bubble",
            "out of focus",
            "background",
        ),
        mpp=1.0,
        precision="fp32",
        rule="arg-max class above 1 (fold, dark spot, pen, edge/air bubble, out of focus, background) is removed",
        files=("GrandQC_MPP1_state_dict.pth",),
        licence="not verified (GrandQC)",
        key_rule="a plain state dict, keys as the network's",
        params_m=6.3,
        notes="10x (about 1 µm/px); `--artifacts grandqc`",
    ),
)

TISSUE_MODELS = {m.name: m for m in ALL if m.role == "tissue"}
ARTIFACT_MODELS = {"grandqc": next(m for m in ALL if m.role == "artifacts")}  # `--artifacts grandqc`


def markdown_table() -> str:
    """The models table of docs/tissue.md, in the form of the encoder presets' table."""
    header = (
        "| method | model | network | classes | input | µm/px | precision (CUDA) | output rule | licence | gated | "
        "weights (hub repo: files) | checkpoint keys |"
    )
    lines = [header, "|---" * 12 + "|"]
    for name, m in [*TISSUE_MODELS.items(), *ARTIFACT_MODELS.items()]:
        method = f"`--tissue {name}`" if m.role == "tissue" else f"`--artifacts {name}`"
        lines.append(
            f"| {method} | {m.title} | {m.network} | {len(m.classes)}: {', '.join(m.classes)} | {m.input_px} px | "
            f"{m.mpp:g} | {m.precision} | {m.rule} | {m.licence} | {'yes' if m.gated else 'no'} | "
            f"`{m.repo}`: {', '.join(f'`{f}`' for f in m.files)} | {m.key_rule} |"
        )
    lines += ["", "### Download commands", "", "```", *dict.fromkeys(m.download for m in ALL), "```"]
    return "\n".join(lines)
