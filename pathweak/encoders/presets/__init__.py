"""The preset registry: one small record per pathology foundation encoder (architecture, input,
resolution, normalisation, embedding rule, precision, licence and where its weights live).

Facts and the choices made where the toolkits (TRIDENT, slide2vec, STAMP, LazySlide) disagree are
documented in docs/encoders.md. Adding a model is adding one ``Preset`` to ``catalog.ALL``
(:mod:`.record` holds the record type). Code-only
constructor values are written by name (``"SwiGLUPacked"``, ``"SiLU"``) so every record stays JSON.
"""

from __future__ import annotations

from ...errors import ConfigError
from .catalog import ALL
from .record import CLIP, EMBEDDINGS, HALF, HOPTIMUS, IMAGENET, LUNIT, Preset

__all__ = ["EMBEDDINGS", "PRESETS", "UNSUPPORTED", "Preset", "get_preset", "markdown_table"]

PRESETS: dict[str, Preset] = {p.name: p for p in ALL}

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


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive), or a clear error listing them."""
    preset = PRESETS.get(name) or PRESETS.get(name.lower())
    if preset is None:
        if name.lower() in UNSUPPORTED:
            raise ConfigError(
                f"encoder {name!r} is not supported: {UNSUPPORTED[name.lower()]['why']}",
                fix="see `pathweak encoders list` for the presets",
            )
        raise ConfigError(f"unknown encoder preset {name!r}", fix=f"choose one of: {', '.join(PRESETS)}")
    return preset
