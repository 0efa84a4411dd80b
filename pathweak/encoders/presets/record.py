"""The record of one encoder preset (``Preset``) and the normalisation constants the presets share.

The presets themselves are in :mod:`.catalog`; :mod:`pathweak.encoders.presets` is the registry built from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ...hub import hub_cli

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HOPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))
LUNIT = ((0.70322989, 0.53606487, 0.66096631), (0.21716536, 0.26081574, 0.20723464))

EMBEDDINGS = {
    "cls": "the class token after the final norm",
    "cls+mean": "the class token and the mean of the patch tokens (registers excluded), concatenated",
    "mean": "global average of the final feature map (after the final norm)",
    "attn_pool": "CONCH's attentional pooler (one learned query) followed by its LayerNorm",
}


@dataclass(frozen=True)
class Preset:
    """One named encoder: how to build it, feed it, read its embedding, and find its weights."""

    name: str
    title: str
    kind: str  # builder: "timm" (a timm ViT), "conch" (timm trunk + attentional pooler), "swin" (CTransPath), "hf" (transformers)
    arch: str  # timm model name, or the transformers model class
    embed_dim: int
    embedding: str  # a key of EMBEDDINGS
    kwargs: dict[str, Any] = field(
        default_factory=dict
    )  # constructor arguments (timm) / config (hf) / pooler (conch: "pool")
    img_size: int = 224
    mpp: float = 0.5  # µm/px the model expects its tiles at
    patch_px: int = 224  # tile side the toolkits cut at that resolution (resized to img_size)
    mean: tuple[float, ...] = IMAGENET[0]
    std: tuple[float, ...] = IMAGENET[1]
    interpolation: str = "bilinear"  # of the resize to img_size
    crop_pct: float = 1.0  # < 1: resize to img_size / crop_pct, then centre-crop img_size
    precision: str = "bf16"  # autocast dtype on CUDA ("fp32": none); the CPU runs float32
    licence: str = ""
    gated: bool = False
    repo: str | None = None  # Hugging Face repo id
    repo_aliases: tuple[str, ...] = ()  # other spellings the toolkits use (an offline cache is keyed by the id typed)
    repo_type: str = "model"
    files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")  # weight files, in order of preference
    key_prefix: str = ""  # keep only hub keys under this prefix (stripped), e.g. CONCH's "visual."
    ignore_keys: tuple[str, ...] = ()  # prefixes of hub keys that are not part of the image encoder
    strip_prefixes: tuple[str, ...] = ()  # wrapper prefixes removed from every key when all keys carry them
    params_m: int = 0  # parameters, millions (approximate)
    get: str = ""  # how to get the weights when not from the hub
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def download(self) -> str:
        """The command that puts the weights into the local Hugging Face cache."""
        if not self.repo:
            return self.get
        extra = " --repo-type dataset" if self.repo_type == "dataset" else ""
        files = " " + " ".join(self.files) if self.repo_type == "dataset" else ""
        return f"{hub_cli()} download {self.repo}{files}{extra}"


SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}
VIT_G_DINOV2 = {"img_size": 224, "init_values": 1e-5}
