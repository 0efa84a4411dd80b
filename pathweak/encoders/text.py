"""Text towers for zero-shot scoring: the multimodal presets whose text side registry packages build.

CONCH v1 is the one: its text tower is CoCa's text transformer, which open_clip (``open-clip-torch``, a registry
package) provides as ``TextTransformer``; built with CONCH's published configuration (``conch_ViT-B-16.json``:
context 128, vocabulary 32007, width 768, 12 heads, 12 layers, a class token appended, output 512) it holds
exactly the ``text.*`` tensors of CONCH's ``pytorch_model.bin`` under the same names (checked on the meta
device before anything is allocated). Its tokeniser is a byte-level BPE file (``conch_byte_level_bpe_uncased.json``)
read by the ``tokenizers`` package, padded as CONCH pads (127 tokens, then one pad where the class token goes).
The image side of zero-shot is the FeatureStore of the ``conch`` preset: its features are the pooled, normed
query before ``proj_contrast``, which is applied here. Nothing is downloaded, no downloaded code runs.

The text towers that need downloaded code are listed in :data:`UNSUPPORTED_TEXT` with why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hub import Located, check_fits, load_strict, read_checkpoint, resolve

OPEN_CLIP_HINT = 'pip install "pathweak[zeroshot]" (or pip install open-clip-torch tokenizers)'
CONCH_TOKENIZER = "conch_byte_level_bpe_uncased.json"


@dataclass(frozen=True)
class TextTower:
    """A multimodal model's text side: how to build it and where its weights and tokeniser are."""

    name: str
    title: str
    image_preset: str  # the encoder preset whose features it scores
    config: dict[str, Any]  # open_clip TextTransformer arguments
    repo: str | None
    repo_aliases: tuple[str, ...] = ()
    files: tuple[str, ...] = ("pytorch_model.bin",)
    repo_type: str = "model"
    gated: bool = True
    licence: str = ""
    tokenizer_files: tuple[str, ...] = (CONCH_TOKENIZER, "tokenizer.json")
    context: int = 128
    pad_id: int = 0
    get: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def download(self) -> str:
        return f"huggingface-cli download {self.repo} {' '.join(self.files)}"


TEXT_TOWERS = {
    "conch": TextTower(
        "conch",
        "CONCH v1 text tower (CoCa text transformer, open_clip)",
        "conch",
        {
            "context_length": 127,
            "vocab_size": 32007,
            "width": 768,
            "heads": 12,
            "layers": 12,
            "output_dim": 512,
            "embed_cls": True,
            "pad_id": 0,
        },  # fmt: skip  (127 + the class token = CONCH's 128 positions)
        "MahmoodLab/CONCH",
        repo_aliases=("MahmoodLab/conch",),
        licence="CC-BY-NC-ND-4.0",
        get="the tokeniser file is in github.com/mahmoodlab/CONCH at conch/open_clip_custom/tokenizers/",
    )
}

#: Multimodal models whose text side pathweak does not build, with why.
UNSUPPORTED_TEXT: dict[str, str] = {
    "conch-v1.5": "its hub repo holds the vision tower only; the text side is TITAN's, built by TITAN's remote code (trust_remote_code)",
    "titan": "slide-level CoCa from transformers remote code (MahmoodLab/TITAN, trust_remote_code)",
    "musk": "BEiT3 multiway text side from the `musk` and `torchscale` GitHub packages (and its own tokenizer.spm)",
    "keep": "CLIP-style model published as transformers remote code (Astaxanthin/KEEP)",
    "prism": "a slide-report model (Perceiver + BioGPT) from paige-ai/Prism remote code",
}


def get_text_tower(name: str) -> TextTower:
    if name in TEXT_TOWERS:
        return TEXT_TOWERS[name]
    if name in UNSUPPORTED_TEXT:
        raise ConfigError(f"no text tower for {name}: {UNSUPPORTED_TEXT[name]}", fix="use --model conch")
    raise ConfigError(f"unknown text tower {name!r}", fix=f"choose one of: {', '.join(TEXT_TOWERS)}")


def build_tower(tower: TextTower) -> Any:
    """open_clip's TextTransformer in the tower's configuration (fresh parameters; build it under
    ``torch.device("meta")`` to check shapes)."""
    try:
        from open_clip.transformer import TextTransformer
    except ImportError:
        raise ConfigError(
            f"the {tower.name} text tower needs open-clip-torch, which is not installed", fix=OPEN_CLIP_HINT
        ) from None
    from torch import nn

    return TextTransformer(**tower.config, act_layer=nn.GELU, norm_layer=nn.LayerNorm)


def split_checkpoint(state: dict[str, Any], where: str | Path | None) -> tuple[dict[str, Any], Any, Any]:
    """(text tower tensors without their ``text.`` prefix, ``visual.proj_contrast``, ``logit_scale``) of a
    whole CoCa checkpoint (a ``module.`` wrapper prefix removed first)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    text = {k[len("text.") :]: v for k, v in state.items() if k.startswith("text.")}
    missing = [k for k in ("visual.proj_contrast", "logit_scale") if k not in state]
    if not text or missing:
        raise ConfigError(
            f"the weights hold no CONCH text tower ({'no text.* keys' if not text else 'no ' + ', '.join(missing)})",
            path=where,
            fix="pass CONCH's whole pytorch_model.bin (MahmoodLab/CONCH), not the vision tower alone",
        )
    return text, state["visual.proj_contrast"], state["logit_scale"]


def check_on_meta(tower: TextTower, text_state: dict[str, Any], where: str | Path | None = None) -> None:
    """The checkpoint's text tensors fit the tower key by key and shape by shape, nothing allocated."""
    import torch

    with torch.device("meta"):
        net = build_tower(tower)
    check_fits(
        net.state_dict(), text_state, f"{tower.name} ({tower.title})", where, f"pass the weights of {tower.repo}"
    )


@dataclass
class TextModel:
    """A loaded text tower with what zero-shot scoring needs beside it."""

    tower: TextTower
    net: Any
    proj_contrast: Any  # (D_image, D) applied to the image features
    logit_scale: Any  # log of the temperature's inverse
    tokenizer: Any
    weights: Located
    tokenizer_file: Path

    def encode(self, texts: list[str]) -> Any:
        """L2-normalised text embeddings (len(texts), D)."""
        import torch

        tokens = self.tokenizer(texts).to(next(self.net.parameters()).device)
        with torch.no_grad():
            return torch.nn.functional.normalize(self.net(tokens[:, :-1]).float(), dim=-1)


def load_text_model(name: str, weights: str | Path | None = None, tokenizer: str | Path | None = None) -> TextModel:
    """The text tower ``name`` with its weights (a file, a snapshot folder or the local Hugging Face cache) and
    tokeniser (``tokenizer``, else beside the weights)."""
    import torch

    tower = get_text_tower(name)
    located = resolve(tower, weights)
    text, proj, scale = split_checkpoint(read_checkpoint(located.file), located.file)
    check_on_meta(tower, text, located.file)
    with torch.device("meta"):
        net = build_tower(tower)
    net = net.to_empty(device="cpu")
    net.attn_mask = net.build_causal_mask()  # a non-persistent buffer: computed, not loaded
    load_strict(net, text, f"{tower.name} ({tower.title})", located.file)
    tok_file = find_tokenizer(tower, tokenizer, located.file)
    return TextModel(tower, net.eval(), proj.float(), scale.float(), BpeTokenizer(tok_file, tower), located, tok_file)


def find_tokenizer(tower: TextTower, given: str | Path | None, weights_file: Path) -> Path:
    """``given``, else a tokeniser file beside the weights; else one clear error saying where to get it."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise ConfigError("tokeniser file not found", path=path, fix="check the --tokenizer path")
        return path
    for name in tower.tokenizer_files:
        if (weights_file.parent / name).is_file():
            return weights_file.parent / name
    raise ConfigError(
        f"no tokeniser for {tower.name} beside its weights (looked for {', '.join(tower.tokenizer_files)})",
        path=weights_file.parent,
        fix=f"pass --tokenizer FILE ({tower.get})",
    )


class BpeTokenizer:
    """CONCH's tokenisation with the ``tokenizers`` package: the file's normaliser, byte-level BPE and
    ``<start_of_text> ... <end_of_text>`` template, truncated to ``context - 1`` tokens, padded with ``<pad>``
    to ``context - 1``, then one more ``<pad>`` where the class token goes (as CONCH's ``tokenize``)."""

    def __init__(self, path: Path, tower: TextTower):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError(
                "zero-shot tokenisers need the tokenizers package, which is not installed", fix=OPEN_CLIP_HINT
            ) from None

        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise ConfigError(
                f"cannot read the tokeniser ({exc})", path=path, fix="pass CONCH's tokeniser JSON"
            ) from None
        self.length, self.pad_id = tower.context - 1, tower.pad_id
        self.tok.enable_truncation(self.length)
        self.tok.enable_padding(
            length=self.length, pad_id=self.pad_id, pad_token=self.tok.id_to_token(self.pad_id) or "<pad>"
        )

    def __call__(self, texts: list[str]) -> Any:
        import torch

        ids = [e.ids for e in self.tok.encode_batch(list(texts))]
        out = torch.full((len(ids), self.length + 1), self.pad_id, dtype=torch.long)
        out[:, : self.length] = torch.tensor(ids, dtype=torch.long)
        return out


def read_prompts(path: str | Path) -> tuple[dict[str, list[str]], list[str]]:
    """``classes`` (class -> names) and ``templates`` (with ``CLASSNAME``) of a prompts YAML, checked."""
    from ..config import load_yaml

    data = load_yaml(path)  # a missing file, bad YAML, not a mapping: its clear errors
    raw, templates = data.get("classes"), data.get("templates", ["CLASSNAME."])
    classes: dict[str, list[str]] = {}
    if isinstance(raw, dict):
        classes = {str(c): [n] if isinstance(n, str) else n for c, n in raw.items()}
    ok = (
        len(classes) >= 2
        and all(isinstance(n, list) and n and all(isinstance(s, str) and s for s in n) for n in classes.values())
        and isinstance(templates, list)
        and bool(templates)
        and all(isinstance(t, str) and "CLASSNAME" in t for t in templates)
    )
    if not ok:
        raise ConfigError(
            "a prompts file needs `classes:` (at least two; each a name or a list of names) and optional "
            "`templates:` (strings containing CLASSNAME)",
            path=path,
            fix='e.g. classes: {tumor: ["adenocarcinoma"], normal: ["normal colon mucosa"]}, templates: ["an H&E image of CLASSNAME."]',
        )
    bad = [c for c in classes if "/" in c or not c.strip()]
    if bad:
        raise ConfigError(f"class names become score names and cannot contain '/': {bad}", path=path)
    return classes, [str(t) for t in templates]


def prompts_digest(classes: dict[str, list[str]], templates: list[str]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([classes, templates]).encode()).hexdigest()[:8]


def markdown_table() -> str:
    """The text-tower table of docs/encoders.md, in the form of the patch-encoder presets' table."""
    lines = [
        "| model | text tower | built by | context | embedding (dim) | image features | tokeniser | licence | gated | weights (hub repo: files) |",
        "|---" * 10 + "|",
    ]
    for t in TEXT_TOWERS.values():
        c = t.config
        lines.append(
            f"| `{t.name}` | {t.title} | open_clip `TextTransformer` (width {c['width']}, {c['layers']} layers, "
            f"{c['heads']} heads, class token) | {t.context} | class token, projected ({c['output_dim']}) | "
            f"`--encoder {t.image_preset}` + `visual.proj_contrast` | `{t.tokenizer_files[0]}` (tokenizers) | "
            f"{t.licence} | {'yes' if t.gated else 'no'} | `{t.repo}`: {', '.join(f'`{f}`' for f in t.files)} |"
        )
    lines += ["", "| model | why its text tower is not built |", "|---|---|"]
    lines += [f"| {n} | {why} |" for n, why in UNSUPPORTED_TEXT.items()]
    return "\n".join(lines)
