"""The preset registry: one small record per pathology foundation encoder (architecture, input,
resolution, normalisation, embedding rule, precision, licence and where its weights live).

Facts and the choices made where the toolkits (TRIDENT, slide2vec, STAMP, LazySlide) disagree are
documented in docs/encoders.md. Adding a model is adding one ``Preset`` to ``PRESETS``. Code-only
constructor values are written by name (``"SwiGLUPacked"``, ``"SiLU"``) so every record stays JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
        return f"huggingface-cli download {self.repo}{files}{extra}"


SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}
_VIT_G_DINOV2 = {"img_size": 224, "init_values": 1e-5}


def _p(*args: Any, **kwargs: Any) -> Preset:
    return Preset(*args, **kwargs)


_LIST = [
    _p(
        "uni",
        "UNI (ViT-L/16)",
        "timm",
        "vit_large_patch16_224",
        1024,
        "cls",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        licence="CC-BY-NC-ND-4.0",
        gated=True,
        repo="MahmoodLab/UNI",
        repo_aliases=("MahmoodLab/uni",),
        files=("pytorch_model.bin", "model.safetensors"),
        params_m=303,
    ),
    _p(
        "uni2-h",
        "UNI2-h (ViT-H/14, 8 registers, SwiGLU)",
        "timm",
        "vit_giant_patch14_224",
        1536,
        "cls",
        {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 5.33334,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **SWIGLU,
        },
        licence="CC-BY-NC-ND-4.0",
        gated=True,
        repo="MahmoodLab/UNI2-h",
        files=("pytorch_model.bin", "model.safetensors"),
        params_m=681,
    ),
    _p(
        "conch",
        "CONCH v1 vision tower (ViT-B/16 + attentional pooler)",
        "conch",
        "vit_base_patch16_224",
        512,
        "attn_pool",
        {
            "img_size": 448,
            "patch_size": 16,
            "dynamic_img_size": True,
            "pool": {"d_model": 512, "context_dim": 768, "n_head": 8, "proj": True},
        },
        img_size=448,
        patch_px=448,
        mean=CLIP[0],
        std=CLIP[1],
        interpolation="bicubic",
        precision="fp32",
        licence="CC-BY-NC-ND-4.0",
        gated=True,
        repo="MahmoodLab/CONCH",
        repo_aliases=("MahmoodLab/conch",),
        files=("pytorch_model.bin",),
        key_prefix="visual.",
        ignore_keys=("attn_pool_caption.", "ln_caption."),
        params_m=90,
        notes="the hub file is the whole CoCa model: only visual.trunk/attn_pool_contrast/ln_contrast/"
        "proj_contrast are read; the embedding is encode_image(proj_contrast=False, normalize=False)",
    ),
    _p(
        "conch-v1.5",
        "CONCH v1.5 vision tower (ViT-L/16 + attentional pooler)",
        "conch",
        "vit_large_patch16_224",
        768,
        "attn_pool",
        {
            "img_size": 448,
            "patch_size": 16,
            "init_values": 1.0,
            "dynamic_img_size": True,
            "pool": {"d_model": 768, "context_dim": 1024, "n_head": 8, "proj": False},
        },
        img_size=448,
        patch_px=448,
        licence="CC-BY-NC-ND-4.0",
        gated=True,
        repo="MahmoodLab/conchv1_5",
        files=("pytorch_model_vision.bin",),
        params_m=310,
        notes="built at 448 px directly (TRIDENT builds at 224 and re-interpolates); TITAN's copy is remote code",
    ),
    _p(
        "virchow",
        "Virchow (ViT-H/14, SwiGLU)",
        "timm",
        "vit_huge_patch14_224",
        2560,
        "cls+mean",
        {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "dynamic_img_size": True, **SWIGLU},
        interpolation="bicubic",
        licence="Apache-2.0",
        gated=True,
        repo="paige-ai/Virchow",
        files=("pytorch_model.bin", "model.safetensors"),
        params_m=632,
    ),
    _p(
        "virchow2",
        "Virchow2 (ViT-H/14, 4 registers, SwiGLU)",
        "timm",
        "vit_huge_patch14_224",
        2560,
        "cls+mean",
        {
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "reg_tokens": 4,
            "dynamic_img_size": True,
            **SWIGLU,
        },
        interpolation="bicubic",
        licence="CC-BY-NC-ND-4.0",
        gated=True,
        repo="paige-ai/Virchow2",
        files=("model.safetensors", "pytorch_model.bin"),
        params_m=632,
    ),
    _p(
        "h-optimus-0",
        "H-optimus-0 (ViT-g/14, 4 registers)",
        "timm",
        "vit_giant_patch14_reg4_dinov2",
        1536,
        "cls",
        {**_VIT_G_DINOV2, "dynamic_img_size": False},
        mean=HOPTIMUS[0],
        std=HOPTIMUS[1],
        interpolation="bicubic",
        licence="Apache-2.0",
        gated=False,
        repo="bioptimus/H-optimus-0",
        files=("pytorch_model.bin", "model.safetensors"),
        params_m=1134,
    ),
    _p(
        "h-optimus-1",
        "H-optimus-1 (ViT-g/14, 4 registers)",
        "timm",
        "vit_giant_patch14_reg4_dinov2",
        1536,
        "cls",
        {**_VIT_G_DINOV2, "dynamic_img_size": False},
        mean=HOPTIMUS[0],
        std=HOPTIMUS[1],
        interpolation="bicubic",
        licence="CC-BY-NC-ND-4.0",
        gated=True,
        repo="bioptimus/H-optimus-1",
        files=("pytorch_model.bin", "model.safetensors"),
        params_m=1134,
    ),
    _p(
        "h0-mini",
        "H0-mini (ViT-B/14, 4 registers, SwiGLU)",
        "timm",
        "vit_base_patch14_reg4_dinov2",
        1536,
        "cls+mean",
        {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.33334, "dynamic_img_size": False, **SWIGLU},
        mean=HOPTIMUS[0],
        std=HOPTIMUS[1],
        interpolation="bicubic",
        licence="CC-BY-NC-ND-4.0",
        gated=True,
        repo="bioptimus/H0-mini",
        files=("model.safetensors", "pytorch_model.bin"),
        params_m=86,
        notes="mlp_ratio from third-party code (unverified); a hub config.json's model_args fill what is not set here",
    ),
    _p(
        "phikon",
        "Phikon (ViT-B/16, iBOT)",
        "hf",
        "ViTModel",
        768,
        "cls",
        {
            "model_type": "vit",
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "patch_size": 16,
            "image_size": 224,
            "layer_norm_eps": 1e-12,
            "qkv_bias": True,
        },
        precision="fp32",
        licence="Owkin non-commercial",
        repo="owkin/phikon",
        files=("pytorch_model.bin", "model.safetensors"),
        ignore_keys=("pooler.",),
        strip_prefixes=("vit.",),
        params_m=86,
    ),
    _p(
        "phikon-v2",
        "Phikon-v2 (ViT-L/16, DINOv2)",
        "hf",
        "Dinov2Model",
        1024,
        "cls",
        {
            "model_type": "dinov2",
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "patch_size": 16,
            "image_size": 224,
            "mlp_ratio": 4,
            "layerscale_value": 1e-5,
            "use_swiglu_ffn": False,
            "layer_norm_eps": 1e-6,
        },
        precision="fp32",
        licence="Owkin non-commercial",
        repo="owkin/phikon-v2",
        files=("model.safetensors", "pytorch_model.bin"),
        strip_prefixes=("dinov2.",),
        params_m=303,
    ),
    _p(
        "gigapath",
        "Prov-GigaPath tile encoder (ViT-g, patch 16)",
        "timm",
        "vit_giant_patch14_dinov2",
        1536,
        "cls",
        {
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "dynamic_img_size": True,
        },
        patch_px=256,
        interpolation="bicubic",
        crop_pct=0.875,
        licence="Apache-2.0 with conditions (non-commercial)",
        gated=True,
        repo="prov-gigapath/prov-gigapath",
        files=("pytorch_model.bin", "model.safetensors"),
        params_m=1134,
        notes="256 px tiles at 0.5 µm/px, Resize(256)+CenterCrop(224): the centre 224 px at native resolution",
    ),
    _p(
        "ctranspath",
        "CTransPath (Swin-T + ConvStem), original TransPath weights",
        "swin",
        "swin_tiny_patch4_window7_224",
        768,
        "mean",
        {"img_size": 224},
        mpp=1.0,
        patch_px=256,
        precision="fp32",
        licence="GPL-3.0",
        files=("ctranspath.pth",),
        get="download ctranspath.pth from the authors (github.com/Xiyue-Wang/TransPath) and pass --weights FILE",
        params_m=28,
        notes="old-timm Swin keys are remapped (timm's swin checkpoint filter)",
    ),
    _p(
        "chief",
        "CHIEF patch encoder (CTransPath architecture, CHIEF weights)",
        "swin",
        "swin_tiny_patch4_window7_224",
        768,
        "mean",
        {"img_size": 224},
        mpp=1.0,
        patch_px=256,
        precision="fp32",
        licence="AGPL-3.0",
        gated=True,
        repo="MahmoodLab/hest-bench",
        repo_type="dataset",
        files=("fm_v1/ctranspath/CHIEF_CTransPath.pth",),
        params_m=28,
        notes="TRIDENT's copy in the hest-bench dataset repo; 10x (≈1 µm/px) as TRIDENT tiles it",
    ),
]
for _size, _patch, _dim, _m in (("small", 8, 384, 22), ("small", 16, 384, 22)):
    _LIST.append(
        _p(
            f"lunit-s{_patch}",
            f"Lunit DINO ViT-S/{_patch}",
            "timm",
            f"vit_{_size}_patch{_patch}_224",
            _dim,
            "cls",
            {"img_size": 224, "dynamic_img_size": True},
            mean=LUNIT[0],
            std=LUNIT[1],
            interpolation="bicubic",
            crop_pct=0.9,
            precision="fp32",
            licence="Lunit non-commercial",
            repo=f"1aurent/vit_{_size}_patch{_patch}_224.lunit_dino",
            files=("model.safetensors",),
            params_m=_m,
        )
    )
for _size, _patch, _dim, _m in (
    ("small", 8, 384, 22),
    ("small", 16, 384, 22),
    ("base", 8, 768, 86),
    ("base", 16, 768, 86),
):
    _LIST.append(
        _p(
            f"kaiko-{_size[0]}{_patch}",
            f"Kaiko ViT-{_size[0].upper()}/{_patch}",
            "timm",
            f"vit_{_size}_patch{_patch}_224",
            _dim,
            "cls",
            {"img_size": 224, "dynamic_img_size": True},
            mean=HALF[0],
            std=HALF[1],
            precision="fp32",
            licence="Kaiko non-commercial",
            repo=f"1aurent/vit_{_size}_patch{_patch}_224.kaiko_ai_towards_large_pathology_fms",
            files=("model.safetensors",),
            params_m=_m,
        )
    )
_LIST += [
    _p(
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
    _p(
        "gpfm",
        "GPFM (ViT-L/14, DINOv2)",
        "timm",
        "vit_large_patch14_dinov2",
        1024,
        "cls",
        {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True},
        interpolation="bicubic",
        licence="CC-BY-NC-ND-4.0 (LazySlide; slide2vec says MIT)",
        repo="majiabo/GPFM",
        files=("GPFM.pth",),
        strip_prefixes=("module.", "backbone."),
        params_m=304,
    ),
    _p(
        "midnight",
        "Midnight-12k (ViT-g/14, DINOv2)",
        "hf",
        "Dinov2Model",
        3072,
        "cls+mean",
        {
            "model_type": "dinov2",
            "hidden_size": 1536,
            "num_hidden_layers": 40,
            "num_attention_heads": 24,
            "patch_size": 14,
            "image_size": 224,
            "mlp_ratio": 4,
            "layerscale_value": 1e-5,
            "use_swiglu_ffn": True,
            "layer_norm_eps": 1e-6,
        },
        mean=HALF[0],
        std=HALF[1],
        licence="MIT",
        gated=True,
        repo="kaiko-ai/midnight",
        files=("model.safetensors", "pytorch_model.bin"),
        params_m=1137,
        notes="kaiko's recipe (CLS + mean patch tokens, 3072); TRIDENT's default is CLS only (1536)",
    ),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _LIST}

#: Models the peer toolkits offer that need code which is not on a package registry (or only the hub's
#: remote code, which pathweak never runs): listed by ``pathweak encoders list`` as not supported.
UNSUPPORTED: dict[str, dict[str, str]] = {
    "musk": {
        "repo": "xiangjx/musk",
        "why": "a BEiT3 multiway transformer from MUSK's own `musk` + `torchscale` code (GitHub), not a timm or transformers model",
    },
    "openmidnight": {
        "repo": "SophontAI/OpenMidnight",
        "why": "built with facebookresearch/dinov2 torch.hub code (fetched from GitHub at load time)",
    },
    "hibou-b": {
        "repo": "histai/hibou-b",
        "why": "published as transformers remote code (trust_remote_code: DINOv2 with registers and a fused SwiGLU); transformers' own classes do not build it, and pathweak runs no downloaded code",
    },
    "hibou-l": {"repo": "histai/hibou-L", "why": "as hibou-b"},
    "genbio-pathfm": {
        "repo": "genbio-ai/genbio-pathfm",
        "why": "a custom ViT (RoPE, 1-channel input per colour) from remote code / TRIDENT's own model code",
    },
    "keep": {
        "repo": "Astaxanthin/KEEP",
        "why": "transformers remote code (a CLIP-style vision tower with its own projection head)",
    },
    "titan": {
        "repo": "MahmoodLab/TITAN",
        "why": "a slide encoder (remote code); its CONCH v1.5 tile tower is the conch-v1.5 preset",
    },
}


def markdown_table() -> str:
    """The presets table of docs/encoders.md, generated from the records."""
    stats: dict[tuple[float, ...], str] = {
        IMAGENET[0]: "ImageNet",
        HALF[0]: "0.5/0.5",
        CLIP[0]: "OpenAI CLIP",
        HOPTIMUS[0]: "H-optimus",
        LUNIT[0]: "Lunit",
    }
    header = (
        "| preset | model | architecture | embedding (dim) | input | µm/px @ tile px | resize | mean/std | "
        "precision (CUDA) | licence | gated | weights (hub repo: files) |"
    )
    lines = [header, "|---" * 12 + "|"]
    for p in PRESETS.values():
        resize = p.interpolation + (f", crop {p.crop_pct:g}" if p.crop_pct < 1 else "")
        arch = ("transformers " if p.kind == "hf" else "timm ") + f"`{p.arch}`"
        arch += {"conch": " + attentional pooler", "swin": " + ConvStem"}.get(p.kind, "")
        if p.repo:
            repo = f"`{p.repo}`" + (" (dataset)" if p.repo_type == "dataset" else "") + ": "
            repo += ", ".join(f"`{f}`" for f in p.files)
        else:
            repo = "not on the hub: " + p.get
        if p.repo_aliases:
            repo += " (also found as " + ", ".join(f"`{a}`" for a in p.repo_aliases) + ")"
        lines.append(
            f"| `{p.name}` | {p.title} | {arch} | {p.embedding} ({p.embed_dim}) | {p.img_size} | "
            f"{p.mpp:g} @ {p.patch_px} | {resize} | {stats.get(p.mean, 'custom')} | {p.precision} | "
            f"{p.licence} | {'yes' if p.gated else 'no'} | {repo} |"
        )
    lines += [
        "",
        "### Download commands",
        "",
        "```",
        *(p.download for p in PRESETS.values() if p.repo),
        "```",
        "",
        "### Not supported",
        "",
        "| model | hub repo | why |",
        "|---|---|---|",
        *(f"| {n} | `{u['repo']}` | {u['why']} |" for n, u in UNSUPPORTED.items()),
    ]
    return "\n".join(lines)
