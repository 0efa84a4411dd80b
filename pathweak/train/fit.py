"""``fit_head``: train one head on one fold of a cohort held in a FeatureBank (one seed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError
from ..heads import MILHead, create_head
from ..protocols import ResidentBagSource
from .config import TrainConfig
from .labels import LabelTable
from .splits import Fold

if TYPE_CHECKING:
    from ..protocols import Advance, BagSource


@dataclass
class FitResult:
    """A trained head (weights of its best validation epoch) and how training went."""

    head: MILHead
    seed: int
    fold: int
    best_epoch: int
    epochs: int
    best_val_loss: float
    target_scale: tuple[float, float] | None
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    time_bins: list[float] | None = None  # survival, discrete-time loss: inner bin edges


def check_head_task(head: MILHead, name: str, task: str) -> None:
    """Heads that learn from class pseudo-labels (INS) train classification tasks only."""
    if task in ("survival", "proportion") and head.tracks_instances:
        raise ConfigError(
            f"the {name} head learns from class pseudo-labels: it cannot train a {task} task",
            fix="use a slide-level head (abmil, mean, max, clam_sb, clam_mb, transmil, dsmil, wsseg)",
        )


def fit_head(
    bank: BagSource,
    table: LabelTable,
    fold: Fold,
    cfg: TrainConfig,
    seed: int,
    *,
    log_dir: Path | None = None,
    advance: Advance | None = None,
) -> FitResult:
    """Train ``cfg.head`` on ``fold.train`` with early stopping on ``fold.val``; bank row i is table row i.
    With ``cfg.devices`` > 1: Lightning DDP, one process per device (pathweak/ddp.py)."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from .. import devices
    from .._lightning import quiet_lightning
    from ..ddp import trainer_options
    from .module import EpochProgress, KeepBest, MILModule, bag_loader

    if devices.count_devices(getattr(cfg, "devices", 1)) > 1:
        return fit_distributed(bank, table, [(seed, fold)], cfg, log_dir=log_dir, advance=advance)[0]

    started = time.perf_counter()
    L.seed_everything(seed, workers=False, verbose=False)
    edges = survival_edges(table, fold.train, cfg)
    targets, scale = training_targets(table, fold.train, edges)
    weights = class_weights(table, fold.train) if cfg.balance and table.classes is not None else None
    head = create_head(cfg.head, bank.embed_dim, head_outputs(table, cfg), **cfg.head_options)
    if cfg.init is not None:  # pretrained weights (FEATHER) instead of the random start
        from ..features.slide_embed import init_head

        init_head(head, cfg.init, cfg.init_weights)
    check_head_task(head, cfg.head, table.task)
    module = MILModule(head, table.task, weights, cfg.lr, cfg.weight_decay, cfg.survival_loss, cfg.instance_weight)
    keep = KeepBest(min(cfg.min_epochs, cfg.max_epochs), cfg.patience)  # keeps the best epoch and stops early
    callbacks: list[Any] = [keep]
    if advance is not None:
        callbacks.append(EpochProgress(advance))
    logger: Any = (
        CSVLogger(str(log_dir.parent), name=log_dir.name, version=f"seed{seed}_fold{fold.index}") if log_dir else False
    )
    with quiet_lightning():
        trainer = L.Trainer(
            **trainer_options(bank.device),
            precision=devices.precision(cfg.precision, bank.device),  # type: ignore[arg-type]  # Lightning types it as Literal names and checks the string itself
            max_epochs=cfg.max_epochs,
            min_epochs=cfg.min_epochs,
            callbacks=callbacks,
            logger=logger,
            enable_checkpointing=False,
            enable_progress_bar=False,  # its epochs advance pathweak's own bar (progress_bar: terminals only)
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            default_root_dir=str(log_dir) if log_dir else None,
        )
        trainer.fit(
            module,
            bag_loader(
                bank,
                fold.train,
                targets,
                cfg.step_bags,
                shuffle=True,
                seed=seed,
                boxes=head.takes_box,
                instance=table.instance_labels,
            ),
            bag_loader(bank, fold.val, targets, cfg.step_bags, boxes=head.takes_box),
        )
    keep.restore(module)
    epochs = int(trainer.current_epoch)
    if advance is not None and epochs < cfg.max_epochs:
        advance(cfg.max_epochs - epochs)  # early stop: skip the bar to this fit's end
    head = module.head.to(bank.device).eval()
    return FitResult(
        head,
        seed,
        fold.index,
        keep.epoch,
        epochs,
        keep.best,
        scale,
        time.perf_counter() - started,
        module.history,
        None if edges is None else [float(e) for e in edges],
    )


def head_outputs(table: LabelTable, cfg: TrainConfig) -> int:
    """Outputs of the head: the classes; one per time bin for discrete-time survival; else 1."""
    if table.task == "survival" and cfg.survival_loss == "discrete":
        return cfg.survival_bins
    return table.n_outputs


def survival_edges(table: LabelTable, train_rows: np.ndarray, cfg: TrainConfig) -> np.ndarray | None:
    """Inner time-bin edges of the discrete-time loss, from the training rows (None otherwise)."""
    if table.task != "survival" or cfg.survival_loss != "discrete":
        return None
    from .survival import time_bins

    times, events = table.survival_columns()
    return time_bins(times[train_rows], events[train_rows], cfg.survival_bins)


def training_targets(
    table: LabelTable, train_rows: np.ndarray, edges: np.ndarray | None = None
) -> tuple[torch.Tensor, tuple[float, float] | None]:
    """Targets of every row as a tensor: class indices; (time, event, time bin) rows for survival; the
    share for proportion; or the regression target standardised with the training rows' mean and standard
    deviation (returned as the scale to undo it)."""
    if table.task == "survival":
        from .survival import bin_index

        times, events = table.survival_columns()
        bins = bin_index(times, edges) if edges is not None else np.zeros(len(table))
        rows = np.column_stack([times, events, bins]).astype(np.float32)
        return torch.as_tensor(rows), None
    if table.task == "proportion":
        return torch.as_tensor(table.targets, dtype=torch.float32), None
    if table.classes is not None:
        return torch.as_tensor(table.targets, dtype=torch.long), None
    t = table.targets[train_rows]
    mean, std = float(t.mean()), float(t.std()) or 1.0
    return torch.as_tensor((table.targets - mean) / std, dtype=torch.float32), (mean, std)


def class_weights(table: LabelTable, train_rows: np.ndarray) -> torch.Tensor:
    """Inverse class frequencies of the training rows (mean 1), so every class weighs the same."""
    counts = np.bincount(table.targets[train_rows], minlength=table.n_outputs).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (table.n_outputs * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(w, dtype=torch.float32)


def fit_all(
    bank: BagSource,
    table: LabelTable,
    jobs: list[tuple[int, Fold]],
    cfg: TrainConfig,
    *,
    log_dir: Path | None = None,
    advance: Advance | None = None,
    done: Callable[[FitResult], None] | None = None,
) -> list[FitResult]:
    """:func:`fit_head` for every (seed, fold) of ``jobs``, in order: in this process, or with ``cfg.devices``
    > 1 in one process world for all of them (started once per run, not once per fold). ``done`` is called
    with each FitResult as it is ready (in this process: as each fold ends)."""
    from ..devices import count_devices

    def each(fit: FitResult) -> FitResult:
        if done is not None:
            done(fit)
        return fit

    if count_devices(cfg.devices) > 1:
        return [each(f) for f in fit_distributed(bank, table, jobs, cfg, log_dir=log_dir, advance=advance)]
    return [each(fit_head(bank, table, fold, cfg, seed, log_dir=log_dir, advance=advance)) for seed, fold in jobs]


def fit_distributed(
    bank: BagSource,
    table: LabelTable,
    jobs: list[tuple[int, Fold]],
    cfg: TrainConfig,
    *,
    log_dir: Path | None = None,
    advance: Advance | None = None,
) -> list[FitResult]:
    """:func:`fit_head` of each (seed, fold) in ``jobs`` with DDP over ``cfg.devices`` processes, all in one
    process world; the same FitResults. Ranks get the bank through CPU shared memory and each copies it
    once to its own GPU after taking it (pathweak/ddp.py), so no rank opens a context on another's GPU."""
    import copy

    from ..ddp import run_ranks
    from ..devices import count_devices, device_list

    world = count_devices(cfg.devices)
    if not bank.resident or not isinstance(bank, ResidentBagSource):
        raise ConfigError(
            "training on several devices needs the cohort resident in memory (not streamed)",
            fix="pass --devices 1, or --stream no with a cohort that fits",
        )
    outputs = head_outputs(table, cfg)
    if create_head(cfg.head, bank.embed_dim, outputs, **cfg.head_options).tracks_instances:
        raise ConfigError(
            f"head {cfg.head} keeps per-tile state across epochs and trains on one device", fix="pass --devices 1"
        )
    if table.task == "survival" and cfg.survival_loss == "cox":
        raise ConfigError(
            "the Cox loss ranks the bags of one step against each other, and each device would see only its own bags",
            fix="pass --devices 1, or --survival-loss discrete for several devices",
        )
    devs = device_list(world, cfg.device if cfg.device != "auto" else bank.device.type)
    portable = bank if bank.device.type == "cpu" else copy.copy(bank).to("cpu")  # the caller's bank stays put
    on_message = None if advance is None else (lambda n: advance(n))
    outs = run_ranks(_fit_rank, (portable, table, jobs, cfg, log_dir), devs, on_message)
    fits = []
    for out in outs:
        head = create_head(cfg.head, bank.embed_dim, outputs, **cfg.head_options)
        head.load_state_dict(out.pop("state"))
        fits.append(FitResult(head.to(bank.device).eval(), **out))
    return fits


def _fit_rank(
    bank: ResidentBagSource,
    table: LabelTable,
    jobs: list[tuple[int, Fold]],
    cfg: TrainConfig,
    log_dir: Path | None,
) -> list[dict[str, Any]]:
    """Inside a rank: every (seed, fold) in turn; rank 0 reports epochs to the parent's progress bar."""
    import torch

    from ..ddp import _RANK, send

    if _RANK["device"].startswith("cuda"):
        bank.to(torch.device(_RANK["device"]))  # once per rank; a step then moves nothing
    outs = []
    for seed, fold in jobs:
        fit = fit_head(bank, table, fold, replace(cfg, devices=1), seed, log_dir=log_dir, advance=_RemoteAdvance(send))
        state = {k: v.detach().cpu() for k, v in fit.head.state_dict().items()}
        fields = {
            k: getattr(fit, k)
            for k in (
                "seed",
                "fold",
                "best_epoch",
                "epochs",
                "best_val_loss",
                "target_scale",
                "seconds",
                "history",
                "time_bins",
            )
        }
        outs.append({"state": state, **fields})
    return outs


class _RemoteAdvance:
    """An Advance that hands the epochs to the parent process (pathweak/ddp.py ``send``)."""

    def __init__(self, send: Any):
        self.send = send

    def __call__(self, n: int = 1, description: str | None = None, total: int | None = None) -> None:
        self.send(int(n))
