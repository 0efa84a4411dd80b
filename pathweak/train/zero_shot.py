"""``zero_shot``: tiles and slides scored against class prompts with a multimodal model's text tower, written
as results stores (docs/results_format.md), so heatmaps and QuPath exports work unchanged.

Classes come from a prompts YAML (class -> names, and templates with ``CLASSNAME``); each class's text
embedding is the normalised mean over its names and templates (CONCH's ``zero_shot_classifier``). Tiles:
their FeatureStore features projected (``proj_contrast``) and normalised; ``prob_<class>`` is the softmax of
the cosine similarities times the model's temperature. Slides: the mean of each class's ``topk`` highest
tile logits, then the softmax (CONCH's MI-Zero top-k pooling). Results go to
``<out>/results/zero-shot-<model>-<prompts digest>/<slide>.zarr`` and ``predictions.csv`` beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..store.features import FeatureStore, find_feature_stores
from .predict import _write_table, default_root
from .run import safe_name


@dataclass
class ZeroShotResult:
    slide_id: str
    feature_store: str
    results: str
    slide_scores: dict[str, float]
    predicted: str


def class_embeddings(model: Any, classes: dict[str, list[str]], templates: list[str]) -> Any:
    """(D, C): each class's normalised mean text embedding over its names and the templates."""
    import torch

    columns = []
    for names in classes.values():
        texts = [t.replace("CLASSNAME", n) for n in names for t in templates]
        columns.append(torch.nn.functional.normalize(model.encode(texts).mean(0), dim=0))
    return torch.stack(columns, dim=1)


def zero_shot(
    features: list[str | Path],
    prompts: str | Path,
    out_dir: str | Path | None = None,
    *,
    model: str = "conch",
    weights: str | Path | None = None,
    tokenizer: str | Path | None = None,
    topk: int = 50,
    device: str = "auto",
) -> list[ZeroShotResult]:
    """Score every FeatureStore of ``features`` against the classes of ``prompts`` (see the module docstring)."""
    import torch

    from ..devices import parse_device
    from ..encoders.text import load_text_model, prompts_digest, read_prompts
    from ..store.results import write_results

    if topk < 1:
        raise ConfigError(f"--topk must be at least 1, got {topk}")
    classes, templates = read_prompts(prompts)
    stores = [FeatureStore.open(p) for p in find_feature_stores(list(features))]
    text = load_text_model(model, weights, tokenizer)
    for fs in stores:
        preset = (fs.attrs.get("encoder") or {}).get("extra", {}).get("preset")
        if preset != text.tower.image_preset or fs.embed_dim != text.proj_contrast.shape[0]:
            raise ConfigError(
                f"zero-shot with {model} scores features of --encoder {text.tower.image_preset}, and these are "
                f"{preset or fs.encoder_id}'s ({fs.embed_dim} dimensions)",
                path=fs.path,
                fix=f"extract features with --encoder {text.tower.image_preset}",
            )
    dev = parse_device(device)
    text.net.to(dev)
    weights_matrix = class_embeddings(text, classes, templates)
    proj, scale = text.proj_contrast.to(dev), float(text.logit_scale.exp())
    name = f"zero-shot-{model}-{prompts_digest(classes, templates)}"
    names = [safe_name(c) for c in classes]
    rows: dict[Path, list[dict[str, Any]]] = {}
    out = []
    for fs in stores:
        x = torch.from_numpy(np.asarray(fs.features, np.float32)).to(dev)
        with torch.no_grad():
            sims = torch.nn.functional.normalize(x @ proj, dim=-1) @ weights_matrix
        logits = (scale * sims).cpu()
        tile_probs = torch.softmax(logits, dim=1).numpy()
        k = min(topk, len(logits))
        slide_probs = (
            torch.softmax(logits.topk(k, dim=0).values.mean(0), dim=0).numpy()
            if len(logits)
            else np.full(len(names), np.nan)
        )
        slide_scores = {f"prob_{n}": float(p) for n, p in zip(names, slide_probs, strict=True)}
        predicted = list(classes)[int(np.nanargmax(slide_probs))] if len(logits) else ""
        root = Path(out_dir) if out_dir is not None else default_root(fs.path)
        path = root / "results" / name / f"{fs.slide_id}.zarr"
        scores = {f"prob_{n}": tile_probs[:, j] for j, n in enumerate(names)}
        scores |= {f"similarity_{n}": sims[:, j].cpu().numpy() for j, n in enumerate(names)}
        attrs = {
            "model": {
                "model_id": name,
                "zero_shot": model,
                "classes": list(classes),
                "prompts": {"classes": classes, "templates": templates},
                "weights": str(text.weights.file),
                "tokenizer": str(text.tokenizer_file),
                "topk": topk,
                "encoder_id": fs.encoder_id,
            },  # fmt: skip
            "feature_store": str(fs.path.resolve()),
            "slide_scores": slide_scores,
            "predicted": predicted,
        }
        tile_store = (fs.attrs.get("tile_store") or {}).get("path")
        write_results(path, fs.coords, scores, tile_store=tile_store or "", slide_id=fs.slide_id, attrs=attrs)
        rows.setdefault(root, []).append(
            {"slide_id": fs.slide_id, "model": name, **slide_scores, "predicted": predicted}
        )
        out.append(ZeroShotResult(fs.slide_id, str(fs.path), str(path), slide_scores, predicted))
    for root, table in rows.items():
        _write_table(root / "results" / name / "predictions.csv", table)
    return out
