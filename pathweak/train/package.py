"""Packaged models: a trained head as ``model.safetensors`` (its weights) + ``model.json`` (everything
needed to rebuild and use it: head name and options, feature dim, task, label map, target scale,
encoder id, training record). A training run folder holds one per (seed, fold) under ``models/``;
:func:`load_models` opens either a single model folder or all the models of a run (an ensemble)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._provenance import json_value
from ..errors import ConfigError
from ..heads import MILHead, create_head
from ..store import build as lifecycle
from .infer import BagPrediction, predict_bag

FORMAT = "pathweak-mil-model/1"


@dataclass
class PackagedModel:
    """A head rebuilt from its package, with what it was trained for."""

    head: MILHead
    meta: dict[str, Any]
    path: Path

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def classes(self) -> list[str] | None:
        return self.meta.get("classes")

    @property
    def target_scale(self) -> tuple[float, float] | None:
        s = self.meta.get("target_scale")
        return None if s is None else (float(s["mean"]), float(s["std"]))

    @property
    def encoder_id(self) -> str:
        return str(self.meta["encoder"]["encoder_id"])

    @property
    def model_id(self) -> str:
        return str(self.meta["model_id"])

    def to(self, device: torch.device | str) -> PackagedModel:
        self.head.to(device)
        return self

    def predict(self, x: torch.Tensor, grid: torch.Tensor | None = None) -> BagPrediction:
        return predict_bag(self.head, x, grid, self.task, self.target_scale)


def save_model(
    folder: str | Path,
    head: MILHead,
    *,
    task: str,
    classes: list[str] | None,
    encoder: dict[str, Any],
    target_scale: tuple[float, float] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/model.json`` (the folder appears atomically)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    tmp = lifecycle.begin(folder)
    try:
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / "model.safetensors"))
        digest = hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()
        meta = {
            "format": FORMAT,
            "model_id": f"{head.name}-{digest[:10]}",
            "head": head.name,
            "head_options": head.options,
            "feature_dim": head.in_dim,
            "n_outputs": head.n_outputs,
            "task": task,
            "classes": classes,
            "label_map": None if classes is None else {c: i for i, c in enumerate(classes)},
            "positive_class": classes[-1] if classes is not None and len(classes) == 2 else None,
            "target_scale": None if target_scale is None else {"mean": target_scale[0], "std": target_scale[1]},
            "encoder": {k: encoder.get(k) for k in ("encoder_id", "name", "embed_dim", "img_size", "weights_hash")},
            "weights_sha256": digest,
            "training": training or {},
        }
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=json_value))
        lifecycle.commit(tmp, folder, marker="model.json", what="a model")
    except BaseException:
        lifecycle.discard(tmp)
        raise
    return folder


def load_model(folder: str | Path, device: torch.device | str = "cpu") -> PackagedModel:
    """Rebuild a packaged model; a missing or foreign package is a clear error."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if folder.name == "model.json":
        folder = folder.parent
    meta_path, weights = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise ConfigError(
            "not a packaged model (model.json and model.safetensors expected)",
            path=folder,
            fix="pass a model folder written by `pathweak train` (OUT/models/<seed_fold>) or the run folder",
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ConfigError(
            f"model format {meta.get('format')!r} is not {FORMAT}",
            path=meta_path,
            fix="re-train the model with this version of pathweak",
        )
    head = create_head(meta["head"], int(meta["feature_dim"]), int(meta["n_outputs"]), **meta.get("head_options", {}))
    head.load_state_dict(load_file(str(weights)))
    return PackagedModel(head.to(device).eval(), meta, folder)


def run_ensemble(path: str | Path) -> dict[str, Any]:
    """A training run's ``ensemble`` record (run.json: members, excluded degenerate models, the rule and
    warnings; see train/degenerate.py); empty for a single model or a run written before it existed."""
    run = Path(path) / "run.json"
    try:
        return dict(json.loads(run.read_text()).get("ensemble") or {})
    except (OSError, ValueError):
        return {}


def load_models(path: str | Path, device: torch.device | str = "cpu") -> list[PackagedModel]:
    """One packaged model, or the models of a training run (``<run>/models/*/``) for an ensemble: all of
    them but those its run.json excludes as degenerate (:func:`run_ensemble`)."""
    path = Path(path)
    if (path / "model.json").exists() or path.name == "model.json":
        return [load_model(path, device)]
    excluded = set(run_ensemble(path).get("excluded", []))
    folders = sorted(p.parent for p in path.glob("models/*/model.json") if p.parent.name not in excluded)
    if not folders:
        raise ConfigError(
            "no packaged model here",
            path=path,
            fix="pass a training run folder (from `pathweak train`) or one of its models/<seed_fold> folders",
        )
    models = [load_model(f, device) for f in folders]
    keys = {(m.task, tuple(m.classes or []), m.encoder_id, m.head.in_dim) for m in models}
    if len(keys) > 1:
        raise ConfigError(
            "the models in this run disagree on task, classes, encoder or feature size",
            path=path,
            fix="pass a single model folder",
        )
    return models
