"""``TrainConfig``: every setting of a MIL training run (CLI options map onto its fields)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

TASKS = ("auto", "binary", "multiclass", "regression", "survival", "proportion")
SURVIVAL_LOSSES = ("cox", "discrete")
LABEL_AUGMENTATIONS = ("rotation",)  # kinds of views label augmentation trains over (features/views.py)
CONTRADICTIONS = ("slide", "tile", "error")  # which label wins where a corrected tile contradicts its slide
SURVIVAL_BAGS = 16  # bags per step of the Cox loss when --bags-per-step is left at 1


@dataclass(frozen=True)
class TrainConfig:
    """How to train a head on a cohort's features.

    Splits: ``folds``-fold cross-validation grouped by patient and stratified by label, unless the
    labels file has a ``split`` column (train / val / test). Each fold's validation set is carved from
    its training patients (``val_fraction``) when not given. Every (seed, fold) trains from scratch with
    AdamW, stops early when the validation loss has not improved for ``patience`` epochs (after
    ``min_epochs``) and keeps the weights of the best validation epoch.

    Survival (``task="survival"``): ``survival_loss`` "cox" (partial likelihood over the bags of a step;
    a step then holds ``SURVIVAL_BAGS`` bags unless ``bags_per_step`` > 1) or "discrete" (time-binned
    likelihood with ``survival_bins`` bins); ``eval_times`` are the times of the time-dependent AUC
    (default: the quartiles of the event times). Proportion (``task="proportion"``): the label is a share
    in [0, 1] tied to the mean per-tile probability (see :mod:`pathweak.train.proportion`).

    ``label_augmentation="rotation"``: self-supervised label augmentation over the rotation views of features
    extracted with ``--rotations`` (classification only; heads/sla.py, train/label_augmentation.py).

    ``init``: start the head from pretrained weights instead of a random initialisation: a FEATHER model
    (``feather-conch-v1.5``, ``feather-uni2-h``, ``feather-uni``: MIL-Lab's pretrained ABMIL) for ``abmil``,
    whose sizes (hidden 512, attention 384) then become the head's defaults; ``init_weights`` is its file or
    hub snapshot folder (default: the local Hugging Face cache).

    Instance labels (a reviewer's per-tile corrections, docs/review.md): a tile takes a correction's class
    when at least ``instance_overlap`` of its area lies inside the correction; the corrected tiles of a
    training bag add ``instance_weight`` x their per-tile cross-entropy to the bag's loss; a corrected
    tile that contradicts its slide's label is decided by ``contradictions`` (slide, tile or error).
    """

    head: str = "abmil"
    head_options: dict[str, Any] = field(default_factory=dict)
    task: str = "auto"
    classes: tuple[str, ...] | None = None
    folds: int = 5
    val_fraction: float = 0.2
    seeds: tuple[int, ...] = (0,)
    split_seed: int = 0
    max_epochs: int = 50
    min_epochs: int = 5
    patience: int = 10
    lr: float = 2e-4
    weight_decay: float = 1e-4
    bags_per_step: int = 1
    balance: bool = True
    bootstrap: int = 1000
    precision: str = "auto"
    device: str = "auto"
    dtype: str = "float16"
    stream: bool | str = "auto"
    devices: str | int = 1  # >1 or "all": Lightning DDP, one process per device (pathweak/ddp.py)
    survival_loss: str = "cox"
    survival_bins: int = 4
    eval_times: tuple[float, ...] | None = None
    label_augmentation: str | None = None  # "rotation": joint (class x rotation) labels (heads/sla.py)
    init: str | None = None
    init_weights: str | None = None
    instance_weight: float = 1.0
    instance_overlap: float = 0.5
    contradictions: str = "slide"

    @property
    def step_bags(self) -> int:
        """Bags per optimiser step: ``bags_per_step``, or ``SURVIVAL_BAGS`` for the Cox loss left at 1."""
        if self.task == "survival" and self.survival_loss == "cox" and self.bags_per_step == 1:
            return SURVIVAL_BAGS
        return self.bags_per_step

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}", fix=f"use one of {', '.join(TASKS)}")
        if self.folds < 2:
            raise ConfigError(
                f"cross-validation needs at least 2 folds, got {self.folds}", fix="pass --folds 3 or more"
            )
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val fraction must be in (0, 1), got {self.val_fraction}")
        if not self.seeds:
            raise ConfigError("no seeds given", fix="pass e.g. --seed 0 --seed 1 --seed 2")
        if self.max_epochs < 1 or self.min_epochs < 0 or self.patience < 1 or self.bags_per_step < 1:
            raise ConfigError("epochs, patience and bags per step must be positive")
        if self.lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if self.survival_loss not in SURVIVAL_LOSSES:
            raise ConfigError(f"unknown survival loss {self.survival_loss!r}", fix="use cox or discrete")
        if self.survival_bins < 2:
            raise ConfigError(
                f"the discrete-time survival loss needs at least 2 time bins, got {self.survival_bins}",
                fix="pass e.g. --survival-bins 4",
            )
        if self.label_augmentation is not None:
            if self.label_augmentation not in LABEL_AUGMENTATIONS:
                raise ConfigError(
                    f"unknown label augmentation {self.label_augmentation!r}",
                    fix=f"use {' or '.join(LABEL_AUGMENTATIONS)} (or leave it out)",
                )
            if self.task in ("regression", "survival", "proportion"):
                raise ConfigError(
                    f"label augmentation trains on joint (class x view) labels; a {self.task} task has no classes",
                    fix="drop --label-augmentation, or train a classification task",
                )
        if self.instance_weight < 0 or not 0 < self.instance_overlap <= 1:
            raise ConfigError(
                f"instance weight must be >= 0 and instance overlap in (0, 1], got {self.instance_weight} and "
                f"{self.instance_overlap}",
                fix="e.g. --instance-weight 1 --instance-overlap 0.5",
            )
        if self.contradictions not in CONTRADICTIONS:
            raise ConfigError(
                f"unknown contradictions rule {self.contradictions!r}", fix=f"use one of {', '.join(CONTRADICTIONS)}"
            )
        if self.eval_times is not None:
            times = tuple(float(t) for t in self.eval_times)
            if not times or any(t <= 0 for t in times):
                raise ConfigError(
                    f"evaluation times must be positive, got {self.eval_times}",
                    fix="e.g. --eval-time 12 --eval-time 24",
                )
            object.__setattr__(self, "eval_times", times)
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.init is not None:
            from ..heads.feather import ATTN_DIM, HIDDEN, get_feather

            get_feather(self.init)  # a clear error for an unknown name
            if self.head != "abmil":
                raise ConfigError(f"--init {self.init} is an ABMIL", fix="pass --head abmil with it")
            sizes = {"hidden": HIDDEN, "attn_dim": ATTN_DIM, **self.head_options}
            object.__setattr__(self, "head_options", sizes)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))


@dataclass(frozen=True)
class FinetuneConfig:
    """How the encoder is fine-tuned with the INS head (``pathweak train --finetune-encoder``)."""

    encoder: str  # pathweak:<dir> or timm:<model> (what a pathweak:<dir> encoder folder can rebuild)
    weights: str | None = None  # timm:<model>: a state-dict file
    encoder_lr: float = 1e-4
    frozen_blocks: int = 0  # leading transformer blocks kept fixed (with the patch embedding when > 0)
    epochs: int = 3  # encoder epochs (each: embed, head pass, encoder pass)
    tile_batch: int = 32  # tiles per encoder step
    warmup_epochs: int = 5  # head passes on the first features before the first encoder update
    samples_per_epoch: int | None = None  # tiles per encoder epoch (default: every training tile once)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.encoder_lr <= 0 or self.epochs < 1 or self.tile_batch < 2 or self.warmup_epochs < 0:
            raise ConfigError(
                "fine-tuning needs a positive --encoder-lr, --encoder-epochs >= 1 and --tile-batch >= 2",
                fix="e.g. --encoder-lr 1e-4 --encoder-epochs 3 --tile-batch 32",
            )
        if self.frozen_blocks < 0 or (self.samples_per_epoch is not None and self.samples_per_epoch < 1):
            raise ConfigError("--frozen-blocks and the tiles per epoch cannot be negative")
