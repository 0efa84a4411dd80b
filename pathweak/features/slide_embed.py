"""Slide embeddings (``pathweak embed-slides``): one vector per slide from its FeatureStore, written as a
FeatureStore of one row (header ``rows: "slide"``) at ``<out>/features/<encoder_id>-slide-<method>/<slide>.zarr``,
so that ``pathweak train`` reads each slide as a one-instance bag with no change.

Methods: ``mean`` (the mean tile feature) and FEATHER (``feather-conch-v1.5``, ``feather-uni2-h``,
``feather-uni``: the 512-d attention-pooled feature of MIL-Lab's pretrained ABMIL, loaded into pathweak's own
``abmil`` head by :mod:`pathweak.heads.feather`). FEATHER weights are found as every model's are
(:mod:`pathweak.hub`: a file, a hub snapshot folder, the local Hugging Face cache; never downloaded).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _provenance
from ..errors import ConfigError
from ..heads.feather import FEATHERS, HIDDEN, Feather, check_config, feather_head, get_feather, to_abmil
from ..hub import check_fits, read_checkpoint, resolve
from ..store import begin, commit, current_store, discard
from ..store.features import FeatureStore, create_feature_store, find_feature_stores

METHODS = ("mean", *FEATHERS)
FORMAT = 1


@dataclass
class SlideEmbedding:
    slide_id: str
    feature_store: str
    status: str  # "embedded" | "skipped"
    store: str
    dim: int
    warnings: list[str] = field(default_factory=list)


def load_feather(name: str, weights: str | Path | None = None, n_outputs: int = 1) -> tuple[Any, dict[str, Any]]:
    """(pathweak's ABMIL head holding FEATHER ``name``'s weights, a record of where they came from). Every
    tensor of the checkpoint maps onto the head and fills it, except the classifier, which the released models
    lack (it stays random; one of ``n_outputs`` classes in the checkpoint is loaded too)."""
    feather = get_feather(name)
    located = resolve(feather, weights)
    config = json.loads(located.config.read_text()) if located.config else None
    check_config(config, feather, str(located.config))
    state = to_abmil(read_checkpoint(located.file), str(located.file))
    head = feather_head(feather, n_outputs)
    own = head.state_dict()
    if any(k.startswith("classifier.") for k in state) and any(
        tuple(state[k].shape) != tuple(own[k].shape) for k in own if k.startswith("classifier.") and k in state
    ):
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}  # another number of classes
    expected = {k: v for k, v in own.items() if not k.startswith("classifier.") or k in state}
    check_fits(expected, state, f"{name} ({feather.title})", located.file, f"pass the weights of {feather.repo}")
    head.load_state_dict(state, strict=False)
    record = {"feather": name, "weights": str(located.file), "weights_hash": _provenance.content_hash(located.file)}
    return head.eval(), record


def init_head(head: Any, name: str, weights: str | Path | None = None) -> None:
    """Put FEATHER ``name``'s weights into ``head`` (an ``abmil`` of FEATHER's sizes), its classifier left as it is."""
    from ..heads.pooling import ABMIL

    feather = get_feather(name)
    if not isinstance(head, ABMIL) or head.in_dim != feather.in_dim or head.fc[0].out_features != HIDDEN:
        raise ConfigError(
            f"{name} initialises an abmil head of {feather.in_dim} inputs and hidden size {HIDDEN}, "
            f"not this {type(head).__name__} of {head.in_dim} inputs",
            fix=f"use --head abmil on {feather.encoder} features ({feather.in_dim} dimensions), without --head-opt hidden",
        )
    loaded, _ = load_feather(name, weights)
    state = {k: v for k, v in loaded.state_dict().items() if not k.startswith("classifier.")}
    head.load_state_dict(state, strict=False)


def check_encoder(fs: FeatureStore, feather: Feather) -> str | None:
    """Refuse features of another width or of another preset; a sentence when the preset is not recorded."""
    if fs.embed_dim != feather.in_dim:
        raise ConfigError(
            f"the features have {fs.embed_dim} dimensions and {feather.name} takes {feather.in_dim} ({feather.encoder})",
            path=fs.path,
            fix=f"extract features with --encoder {feather.encoder}",
        )
    preset = (fs.attrs.get("encoder") or {}).get("extra", {}).get("preset")
    if preset is not None and preset != feather.encoder:
        raise ConfigError(
            f"the features come from {preset} and {feather.name} was trained on {feather.encoder} features",
            path=fs.path,
            fix=f"extract features with --encoder {feather.encoder}",
        )
    if preset is None:
        return f"{fs.path}: the features' encoder is not a preset; {feather.name} expects {feather.encoder} features"
    return None


def embed_slides(
    features: list[str | Path],
    method: str,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
) -> list[SlideEmbedding]:
    """One embedding per FeatureStore in ``features`` by ``method`` (see the module docstring)."""
    import torch

    from ..devices import parse_device

    if method not in METHODS:
        raise ConfigError(f"unknown slide embedding {method!r}", fix=f"use one of {', '.join(METHODS)}")
    stores = [FeatureStore.open(p) for p in find_feature_stores(list(features))]
    dev = parse_device(device)
    head, record = load_feather(method, weights) if method != "mean" else (None, {})
    tag = method if head is None else f"{method}-{record['weights_hash'][:8]}"
    out = []
    for fs in stores:
        warning = check_encoder(fs, get_feather(method)) if head is not None else None
        final = Path(out_dir) / "features" / f"{fs.encoder_id}-slide-{tag}" / f"{fs.slide_id}.zarr"
        key = _provenance.cache_key(format=FORMAT, features=fs.attrs.get("cache_key"), method=method, **record)
        if current_store(final, key, force):
            dim = fs.embed_dim if head is None else HIDDEN
            out.append(SlideEmbedding(fs.slide_id, str(fs.path), "skipped", str(final), dim))
            continue
        x = torch.from_numpy(np.asarray(fs.features, np.float32))
        if head is None:
            vector = x.mean(0).numpy()
        else:
            with torch.no_grad():
                vector = head.to(dev).pool(x.to(dev))[0].float().cpu().numpy()
        _write(final, key, fs, vector, method, tag, record)
        out.append(
            SlideEmbedding(fs.slide_id, str(fs.path), "embedded", str(final), len(vector), [w for w in [warning] if w])
        )
    return out


def _write(
    final: Path, key: str, fs: FeatureStore, vector: np.ndarray, method: str, tag: str, record: dict[str, Any]
) -> None:
    coords = fs.coords
    corner = coords.min(0, keepdims=True) if len(coords) else np.zeros((1, coords.shape[1]), np.int64)
    source_encoder = dict(fs.attrs.get("encoder") or {})
    attrs = {
        "cache_key": key,
        "slide_id": fs.slide_id,
        "n_tiles": 1,
        "embed_dim": len(vector),
        "encoder": {
            **source_encoder,
            "encoder_id": f"{fs.encoder_id}-slide-{tag}",
            "embed_dim": len(vector),
            "name": f"{source_encoder.get('name', '?')} + {method}",
        },  # fmt: skip
        "slide_embedding": {
            "method": method,
            "tiles": len(fs),
            "source": str(fs.path),
            "source_cache_key": fs.attrs.get("cache_key"),
            **record,
        },
        "tile_store": fs.attrs.get("tile_store"),
        "geometry": fs.attrs.get("geometry"),
        "versions": _provenance.versions("torch", "zarr"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = begin(final)
    try:
        arr = create_feature_store(tmp, 1, len(vector), corner, attrs, source=fs.header.source)
        arr[...] = vector[None].astype(np.float16)
        commit(tmp, final, store=True)
    except BaseException:
        discard(tmp)
        raise
