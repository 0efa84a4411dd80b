"""``train_end_to_end``: ``pathweak train --head ins --finetune-encoder ENCODER`` on TileStores.

1. the labels are read against the TileStores; they must hold a split column (train / val / test): each
   cross-validation fold would need an encoder of its own, and one encoder tuned on every slide would have
   seen the test slides' labels;
2. the encoder is fine-tuned with the INS head on the training slides' tiles (train/finetune.py); the
   validation and test slides are never seen;
3. it is written as a ``pathweak:<dir>`` encoder (``encoder_out``, default ``<out>-encoder``: encoder.safetensors +
   encoder.json recording what it was fine-tuned from, on which slides and labels, with which options and how
   each epoch went), and every labelled slide is embedded with it into ``<encoder_out>/features/<encoder_id>/``;
4. the INS head is trained on those features as ``pathweak train`` trains any head (early stopping on the
   validation slides, packaged model, predictions, run.json with a ``finetune`` record), so ``pathweak
   predict`` with the new encoder's features works unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import _provenance
from .._atomic import ensure_replaceable
from ..errors import ConfigError
from ..store import build as lifecycle
from .config import TrainConfig
from .finetune import FinetuneConfig, FinetuneResult, finetune_ins

ENCODER_FORMAT = "pathweak-encoder/1"


def train_end_to_end(
    stores: Sequence[str | Path],
    labels: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig,
    finetune: FinetuneConfig,
    *,
    encoder_out: str | Path | None = None,
    progress: bool = True,
) -> Any:
    """Fine-tune ``finetune.encoder`` with INS on the training slides of ``stores`` (TileStores), write it and
    its features, then train the INS head on them into ``out_dir``; returns the :class:`TrainRun` (its
    summary holds ``finetune``: the encoder written and the fine-tuning record)."""
    from .. import devices
    from ..features import extract_features
    from ..store.tiles import TileStore, find_tile_stores
    from .labels import read_labels
    from .run import train_cohort
    from .splits import make_folds

    out = Path(out_dir)
    target = Path(encoder_out) if encoder_out is not None else out.parent / f"{out.name}-encoder"
    _check(cfg, finetune, out, target)
    paths = find_tile_stores([str(p) for p in stores])
    ids = {}
    for p in paths:
        with TileStore.open(p) as s:
            ids[s.slide_id] = Path(p)
    table = read_labels(labels, list(ids), cfg.task, cfg.classes)
    if table.classes is None:
        raise ConfigError(
            "the INS head learns classes; these labels are not classes",
            path=table.path,
            fix="train a classification task (binary or multiclass)",
        )
    folds = make_folds(table, cfg.folds, cfg.split_seed, cfg.val_fraction)
    if len(folds) != 1:
        raise ConfigError(
            "fine-tuning the encoder needs a split column (train / val / test) in the labels: each cross-validation "
            "fold would need an encoder of its own, and one tuned on every slide would have seen the test slides",
            path=table.path,
            fix="add a split column (its train slides fine-tune the encoder; val and test slides are never seen)",
        )
    train_rows = [int(i) for i in folds[0].train]
    train_stores = [ids[table.slide_ids[i]] for i in train_rows]
    dev = devices.parse_device(cfg.device)
    result = finetune_ins(
        train_stores, [int(table.targets[i]) for i in train_rows], len(table.classes), finetune, cfg, dev,
        progress=progress,
    )  # fmt: skip
    record = {
        "finetuned_from": finetune.encoder,
        "labels": {"path": str(Path(table.path).resolve()), "sha256": _sha256(Path(table.path))},
        "train_slides": [table.slide_ids[i] for i in train_rows],
        "options": asdict(finetune),
        "head": cfg.head,
        "head_options": cfg.head_options,
        "history": result.history,
        "parameters": {"trained": result.trainable, "frozen": result.frozen},
        "seconds": round(result.seconds, 1),
        "cpu_seconds": round(result.cpu_seconds, 1),
        "run": str(out.resolve()),
    }
    save_encoder(result, finetune, target, record)
    name = f"pathweak:{target}"
    done = extract_features(
        [ids[s] for s in table.slide_ids], name, target, device=cfg.device, num_workers=0, progress=progress
    )
    failed = [r for r in done if r.status == "failed"]
    if failed:
        raise ConfigError(f"embedding with the fine-tuned encoder failed: {failed[0].error}", path=target)
    features = Path(str(done[0].store)).parent
    summary = {"finetune": {"encoder": name, "features": str(features), **record}}
    return train_cohort([features], labels, out, cfg, progress=progress, record=summary)


def _check(cfg: TrainConfig, finetune: FinetuneConfig, out: Path, target: Path) -> None:
    """What end-to-end training refuses before any work."""
    from ..encoders import check_encoder

    if finetune.encoder.partition(":")[0] not in ("pathweak", "timm"):
        raise ConfigError(
            f"{finetune.encoder} cannot be written back as a pathweak encoder (pathweak:<dir> and timm:<model> can)",
            fix="pass --finetune-encoder pathweak:DIR (from `pathweak pretrain` or `pathweak distill`) or timm:MODEL",
        )
    check_encoder(finetune.encoder, finetune.weights)
    if cfg.head != "ins":
        raise ConfigError(f"--finetune-encoder trains the INS head end to end, not {cfg.head}", fix="pass --head ins")
    if cfg.label_augmentation is not None:
        raise ConfigError(
            "--finetune-encoder and --label-augmentation do not combine",
            fix="fine-tune the encoder first, then extract --rotations 4 with it and train with label augmentation",
        )
    from ..devices import count_devices

    if count_devices(cfg.devices) > 1:
        raise ConfigError("--finetune-encoder trains on one device", fix="pass --devices 1")
    if target.resolve() == out.resolve():
        raise ConfigError("the encoder and the run need two folders", path=out, fix="pass another --encoder-out")
    ensure_replaceable(out, "run.json", "a training run")
    ensure_replaceable(target, "encoder.json", "an encoder")


def save_encoder(result: FinetuneResult, cfg: FinetuneConfig, folder: Path, record: dict[str, Any]) -> Path:
    """Write the fine-tuned encoder as a ``pathweak:<folder>`` encoder (the folder appears atomically)."""
    from safetensors.torch import save_file

    config = _source_config(result.encoder, cfg)
    config.update(
        format=ENCODER_FORMAT,
        run_name=folder.name,
        finetuned_from=cfg.encoder,
        training={"method": "ins-finetune", **record, "versions": _provenance.versions("torch", "timm")},
    )
    state = {k: v.detach().cpu().contiguous() for k, v in result.encoder.backbone.state_dict().items()}
    with lifecycle.building(folder, marker="encoder.json", what="an encoder") as tmp:
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / "encoder.safetensors"))
        (tmp / "encoder.json").write_text(json.dumps(config, indent=2, default=str))
    return folder


def _source_config(encoder: Any, cfg: FinetuneConfig) -> dict[str, Any]:
    """The encoder.json fields that rebuild the network: a pathweak encoder's own, or a timm model's."""
    family, _, rest = cfg.encoder.partition(":")
    info = encoder.info
    if family == "pathweak":
        config: dict[str, Any] = json.loads((Path(rest) / "encoder.json").read_text())
        return config
    if family == "timm":
        return {
            "timm_model": rest,
            "timm_kwargs": dict(info.extra.get("timm_kwargs", {})),
            "arch": None,
            "embed_dim": info.embed_dim,
            "img_size": info.img_size,
            "patch_size": 16,
            "mean": list(info.mean),
            "std": list(info.std),
        }
    raise ConfigError(f"{cfg.encoder} cannot be written back as a pathweak encoder", fix="see --finetune-encoder")


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
