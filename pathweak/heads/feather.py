"""FEATHER (MIL-Lab's ABMIL pretrained on 108-way PC-108 classification of 24K slides) as pathweak's own
``abmil`` head: the records of the released models, and their hub state-dict layout mapped key by key onto
:class:`~pathweak.heads.pooling.ABMIL` (pure: no files read here; ``pathweak.features.slide_embed`` finds and
reads the weights).

MIL-Lab's network: ``patch_embed`` = Linear(in, 512) + ReLU, gated attention ``attention_a`` (Linear + Tanh),
``attention_b`` (Linear + Sigmoid), ``attention_c`` (Linear 384 -> 1), softmax over the instances, the
attention-weighted sum of the embedded instances is the 512-d slide feature. pathweak's ABMIL has the same
parts under other names (``fc``, ``attention.v``, ``attention.u``, ``attention.w``), with hidden 512 and
attention 384. The released models have no classifier; pathweak's starts random.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

PREFIX = "model."  # transformers' ABMILModel holds the network as ``self.model``
KEY_MAP = {
    "patch_embed.0.": "fc.0.",
    "global_attn.attention_a.0.": "attention.v.0.",
    "global_attn.attention_b.0.": "attention.u.0.",
    "global_attn.attention_c.": "attention.w.",
    "classifier.": "classifier.",
}
HIDDEN, ATTN_DIM, DROPOUT = 512, 384, 0.25


@dataclass(frozen=True)
class Feather:
    """One released FEATHER model: the patch encoder it was trained on and where its weights live."""

    name: str
    title: str
    encoder: str  # the pathweak preset whose features it takes
    in_dim: int
    repo: str
    repo_aliases: tuple[str, ...] = ()
    files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    repo_type: str = "model"
    gated: bool = True
    licence: str = "CC-BY-NC-ND-4.0"
    get: str = ""

    @property
    def download(self) -> str:
        return f"huggingface-cli download {self.repo}"


def _feather(name: str, encoder: str, in_dim: int, tag: str) -> Feather:
    repo = f"MahmoodLab/abmil.base.{tag}.pc108-24k"
    return Feather(
        name,
        f"FEATHER-24K ({encoder} features)",
        encoder,
        in_dim,
        repo,
        repo_aliases=(f"mahmoodlab/abmil.base.{tag}.pc108-24k",),
    )


FEATHERS = {
    f.name: f
    for f in (
        _feather("feather-conch-v1.5", "conch-v1.5", 768, "conch_v15"),
        _feather("feather-uni2-h", "uni2-h", 1536, "uni_v2"),
        _feather("feather-uni", "uni", 1024, "uni"),
    )
}


def get_feather(name: str) -> Feather:
    if name not in FEATHERS:
        raise ConfigError(f"unknown FEATHER model {name!r}", fix=f"choose one of: {', '.join(FEATHERS)}")
    return FEATHERS[name]


def feather_head(feather: Feather, n_outputs: int = 1) -> Any:
    """pathweak's ABMIL in FEATHER's shape (hidden 512, attention 384, dropout 0.25) for ``n_outputs``."""
    from .base import create_head

    return create_head("abmil", feather.in_dim, n_outputs, hidden=HIDDEN, attn_dim=ATTN_DIM, dropout=DROPOUT)


def check_config(config: dict[str, Any] | None, feather: Feather, where: str | None = None) -> None:
    """The hub ``config.json`` must describe this architecture (gated, one fc layer, the same sizes)."""
    if not config:
        return
    want = {"gate": True, "num_fc_layers": 1, "embed_dim": HIDDEN, "attn_dim": ATTN_DIM, "in_dim": feather.in_dim}
    bad = {k: config[k] for k, v in want.items() if k in config and config[k] != v}
    if bad:
        raise ConfigError(
            f"the hub config describes another ABMIL ({bad}; {feather.name} is {want})",
            path=where,
            fix=f"pass the weights of {feather.repo}",
        )


def to_abmil(state: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """FEATHER's hub keys (``model.`` prefix optional) renamed to pathweak's ABMIL, one by one; a key that maps
    to nothing is an error naming it."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        bare = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        match = next((k for k in KEY_MAP if bare.startswith(k)), None)
        if match is None:
            raise ConfigError(
                f"the weights hold {key!r}, which is not part of FEATHER's ABMIL",
                path=where,
                fix="pass a FEATHER checkpoint (MahmoodLab/abmil.base.*.pc108-24k)",
            )
        out[KEY_MAP[match] + bare[len(match) :]] = value
    return out


#: Slide encoders the peer toolkits offer that pathweak does not build, with why (docs/encoders.md).
UNSUPPORTED_SLIDE: dict[str, dict[str, str]] = {
    "titan": {
        "repo": "MahmoodLab/TITAN",
        "why": "transformers remote code (trust_remote_code); its CONCH v1.5 tile tower is the conch-v1.5 preset",
    },
    "prism": {
        "repo": "paige-ai/Prism",
        "why": "transformers remote code (a Perceiver with a BioGPT decoder; pins environs, sacremoses, transformers 4.42)",
    },
    "chief": {
        "repo": "(GitHub hms-dbmi/CHIEF; weights from its Google Drive)",
        "why": "the model class comes from a clone of the CHIEF repository (`models.CHIEF`), not from a package registry",
    },
    "gigapath-slide": {
        "repo": "prov-gigapath/prov-gigapath (slide_encoder.pth)",
        "why": "the `gigapath` package from GitHub (a LongNet on torchscale and fairscale, flash_attn 2.5.8)",
    },
    "madeleine": {
        "repo": "MahmoodLab/madeleine",
        "why": "the `madeleine` package from GitHub (mahmoodlab/MADELEINE)",
    },
    "threads": {"repo": "MahmoodLab/THREADS", "why": "not released as code (TRIDENT's loader says 'coming soon')"},
    "care": {"repo": "Zipper-1/CARE", "why": "transformers remote code (trust_remote_code)"},
}


def markdown_table() -> str:
    """The slide-encoder table of docs/encoders.md, in the form of the patch-encoder presets' table."""
    lines = [
        "| method | model | architecture | embedding (dim) | input features | licence | gated | weights (hub repo: files) |",
        "|---" * 8 + "|",
        "| `mean` | mean of the tile features | none | the mean tile feature (D) | any FeatureStore | - | no | none |",
    ]
    for f in FEATHERS.values():
        repo = f"`{f.repo}`: " + ", ".join(f"`{x}`" for x in f.files) + " (+ `config.json`)"
        repo += " (also found as " + ", ".join(f"`{a}`" for a in f.repo_aliases) + ")"
        lines.append(
            f"| `{f.name}` | {f.title} | pathweak `abmil` (hidden {HIDDEN}, attention {ATTN_DIM}, gated) | "
            f"attention-pooled slide feature ({HIDDEN}) | `{f.encoder}` ({f.in_dim}) | {f.licence} | "
            f"{'yes' if f.gated else 'no'} | {repo} |"
        )
    lines += [
        "",
        "#### Slide encoders not supported",
        "",
        "| model | hub repo | why |",
        "|---|---|---|",
        *(f"| {n} | `{u['repo']}` | {u['why']} |" for n, u in UNSUPPORTED_SLIDE.items()),
    ]
    return "\n".join(lines)
