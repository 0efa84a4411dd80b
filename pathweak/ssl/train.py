"""``pretrain``: self-supervised pretraining on TileStores, with resume and label-free checkpoint
selection by RankMe; writes ``encoder.safetensors`` + ``encoder.json`` for ``pathweak:<dir>``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .. import _provenance
from .._atomic import sweep_partials
from .._lightning import epoch_lines, quiet_lightning
from ..errors import ConfigError
from ..progress import log_line, show_progress
from .config import SSLConfig


@dataclass
class PretrainResult:
    out_dir: str
    encoder_dir: str
    steps: int
    epochs: int
    seconds: float
    best_checkpoint: str | None
    rankme: list[dict[str, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    schedule: dict[str, float] = field(default_factory=dict)  # where the LR and momentum schedules ended
    ranks_agree: bool | None = None  # DDP: every rank ended with the same weights and schedule (None: one process)


def pretrain(
    stores: Sequence[str | Path], out_dir: str | Path, cfg: SSLConfig, *, resume: bool = True, progress: bool = True
) -> PretrainResult:
    """Pretrain ``cfg.arch`` with ``cfg.method`` on the tiles of ``stores``; write the encoder to ``out_dir``.

    Re-running with ``resume`` continues from ``out_dir/checkpoints/last.ckpt``. Checkpoints are ranked
    by RankMe on held-out tiles, and the best one is exported. ``cfg.devices`` > 1 (or "auto"/"all" with
    several GPUs): Lightning DDP, one spawned process per device (pathweak/ddp.py; gloo on a CPU).
    """
    import functools

    from .. import devices
    from ..ddp import in_rank, run_ranks

    ddp = cfg.strategy in ("auto", "ddp")
    world = devices.count_devices("all" if str(cfg.devices) == "auto" else cfg.devices) if ddp else 1
    if world > 1 and not in_rank():
        return run_ranks(
            functools.partial(pretrain, resume=resume, progress=progress),
            (stores, out_dir, cfg),
            devices.device_list(world, "auto"),
        )
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from ..encoders.base import IMAGENET_MEAN, IMAGENET_STD
    from .data import TileIndex, split_holdout
    from .data3d import datasets
    from .mixed import MixedPlain, MixedViews, mixed_loaders, with_store_kinds
    from .module import SSLModule

    norm = (IMAGENET_MEAN, IMAGENET_STD)  # the 2D tiles' input normalisation
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep_partials(out)  # a killed run's encoder.safetensors leftover
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    index = TileIndex(stores)
    cfg = with_store_kinds(index, cfg)  # mae on 2D and 3D stores: one ViT for both (ssl/mixed.py)
    limit = f", at most {cfg.max_minutes:g} min" if cfg.max_minutes else ""
    log_line(f"pretrain {cfg.method}: {index.total} tiles of {len(stores)} stores, {cfg.max_epochs} epochs{limit}")
    train_idx, hold_idx = split_holdout(index.total, cfg.rankme_samples, cfg.seed)
    per_epoch = cfg.samples_per_epoch or len(train_idx)
    device = devices.parse_device("auto")  # the accelerator Lightning picks ("auto"): a rank's own GPU in DDP
    if cfg.unified:  # batches of 2D tiles and of 3D patches
        views, held_out = MixedViews(index, cfg, train_idx, *norm), MixedPlain(index, cfg, hold_idx, *norm)
        train_loader, hold_loader = mixed_loaders(views, held_out, cfg, per_epoch, device.type == "cuda")
    else:
        views, held_out = datasets(index, cfg, train_idx, hold_idx, *norm)
        train_loader, hold_loader = _loaders(views, held_out, cfg, per_epoch, device.type == "cuda")
    module = SSLModule(cfg, init_state=_initial_weights(cfg))  # steps: the trainer's count, per rank
    ckpt_dir = out / "checkpoints"
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        monitor="rankme",
        mode="max",
        save_top_k=1,
        filename="best-{epoch}-{rankme:.2f}",
    )
    # last.ckpt after every epoch, for --resume (Lightning's save_last only copies when the best one changes)
    last_ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False)
    with quiet_lightning():
        trainer = L.Trainer(
            **_hardware(cfg, ddp),
            use_distributed_sampler=False,  # EpochSampler shards the epoch; RankMe sees every held-out tile
            precision=devices.precision(cfg.precision, device),  # type: ignore[arg-type]  # Lightning types it as Literal names and checks the string itself
            max_epochs=cfg.max_epochs,
            max_steps=cfg.max_steps,
            max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
            callbacks=[best, last_ckpt, *epoch_lines(f"pretrain {cfg.method}")],
            logger=CSVLogger(out, name="logs"),
            default_root_dir=out,
            gradient_clip_val=cfg.grad_clip,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            enable_progress_bar=show_progress(progress),  # never into a log file
            enable_model_summary=False,
        )
        last = ckpt_dir / "last.ckpt"
        trainer.fit(module, train_loader, hold_loader, ckpt_path=str(last) if resume and last.exists() else None)
    best_path = (best.best_model_path or None) if cfg.select == "rankme" else None
    if best_path:
        state = torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    if trainer.is_global_zero:
        export_encoder(module, out, cfg, index, trainer, time.perf_counter() - started, best_path)
    return PretrainResult(
        out_dir=str(out),
        encoder_dir=str(out),
        steps=int(trainer.global_step),
        epochs=int(trainer.current_epoch),
        seconds=time.perf_counter() - started,
        best_checkpoint=best_path,
        rankme=list(module.rankme_history),
        losses=_losses(out),
        schedule=dict(module.schedule_state),
        ranks_agree=module.ranks_agree,
    )


def _loaders(views: Any, held_out: Any, cfg: SSLConfig, per_epoch: int, pin: bool) -> tuple[Any, Any]:
    """(training loader, held-out loader) of views of one kind."""
    from torch.utils.data import DataLoader

    from .data import EpochSampler

    train = DataLoader(
        views,
        batch_size=cfg.batch_size,
        sampler=EpochSampler(len(views), per_epoch, cfg.seed),  # each DDP rank takes its share of the epoch
        num_workers=cfg.num_workers,
        drop_last=True,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=pin,
    )
    hold = DataLoader(  # not sharded: every rank's RankMe is over all held-out tiles
        held_out,
        batch_size=64,
        num_workers=min(cfg.num_workers, 1),
    )
    return train, hold


def _hardware(cfg: SSLConfig, ddp: bool) -> dict[str, Any]:
    """Trainer accelerator/devices/strategy: DDP inside a rank of :func:`pretrain`'s processes, one device
    otherwise, or the strategy the config names (e.g. fsdp) as given."""
    from ..ddp import in_rank, rank_trainer_options

    if in_rank():
        return rank_trainer_options(find_unused_parameters=False)
    if not ddp:
        return {"accelerator": "auto", "devices": cfg.devices, "strategy": cfg.strategy}
    return {"accelerator": "auto", "devices": 1, "strategy": "auto"}


def export_encoder(
    module: Any, out: Path, cfg: SSLConfig, index: Any, trainer: Any, seconds: float, best_path: str | None
) -> None:
    """Write encoder.safetensors (LoRA merged) and encoder.json, each atomically."""
    import copy

    from safetensors.torch import save_file

    from .._atomic import atomic_file, atomic_path
    from ..encoders.base import IMAGENET_MEAN, IMAGENET_STD
    from .lora import merge_lora
    from .module import backbone_kwargs, merge_export_fields

    encoder: Any = merge_lora(copy.deepcopy(module.encoder)).cpu()  # a timm ViT or ViT3D (num_features)
    state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    with atomic_path(out / "encoder.safetensors") as tmp:
        save_file(state, str(tmp))
    config = {
        "format": "pathweak-encoder/1",
        "run_name": out.name,
        "timm_model": cfg.timm_model,
        "timm_kwargs": backbone_kwargs(cfg),
        "arch": cfg.arch,
        "embed_dim": int(encoder.num_features),
        "img_size": cfg.img_size,
        "patch_size": 16,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "training": {
            "method": cfg.method,
            "config": asdict(cfg),
            "stores": [
                {"path": str(p.resolve()), "cache_key": k} for p, k in zip(index.paths, index.cache_keys, strict=False)
            ],
            "tiles": index.total,
            "steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch),
            "seconds": round(seconds, 1),
            "best_checkpoint": best_path,
            "selected_by": "rankme (max, held-out tiles)" if best_path else "last (the final weights)",
            "rankme": module.rankme_history,
            "schedule": module.schedule_state,
            "processes": int(trainer.world_size),
            "ranks_agree": module.ranks_agree,
            "adapted": module.adapt_stats,
            "versions": _provenance.versions("torch", "timm", "lightning"),
        },
    }
    merge_export_fields(config, module, cfg)  # 3D ViT (mae3d), teacher (distill)
    with atomic_file(out / "encoder.json") as fh:
        fh.write(json.dumps(config, indent=2, default=str))


def _initial_weights(cfg: SSLConfig) -> dict[str, Any] | None:
    """Starting weights for ExPLoRA-style adaptation (a pathweak encoder folder or a state-dict file)."""
    if not cfg.adapt_from:
        return None
    from ..encoders import load_state_dict_file

    src = Path(cfg.adapt_from)
    if src.is_dir():
        meta = json.loads((src / "encoder.json").read_text()) if (src / "encoder.json").exists() else {}
        if meta and meta.get("timm_model") != cfg.timm_model:
            raise ConfigError(
                f"the encoder to adapt is a {meta.get('timm_model')}, not {cfg.timm_model}",
                path=src,
                fix=f"pass --arch {meta.get('arch', '...')} (and the same --depth/--img-size)",
            )
        src = src / "encoder.safetensors"
    return load_state_dict_file(src)


def _losses(out: Path) -> list[float]:
    """Per-step training losses from the CSV log (latest version)."""
    import csv

    logs = sorted((out / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not logs:
        return []
    with open(logs[-1]) as fh:
        return [float(r["train_loss_step"]) for r in csv.DictReader(fh) if r.get("train_loss_step")]
