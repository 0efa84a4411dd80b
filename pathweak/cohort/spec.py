"""Cohort specs: a YAML file naming a manifest CSV, an output folder and the settings of every stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import StoreSpec, TileOptions, TileSpec, TissueSpec, VolumeSpec, check_keys, from_dict, load_yaml
from ..errors import ConfigError
from .manifest import Slide, read_manifest

STAGES = ("tile", "pretrain", "extract", "train", "predict", "heatmaps")


@dataclass(frozen=True)
class CohortSpec:
    """Everything ``pathweak cohort run`` needs. Paths in the YAML are relative to the YAML's folder."""

    name: str
    manifest: Path
    out: Path
    slides: tuple[Slide, ...]
    tile: TileSpec = field(default_factory=TileSpec)
    tile_options: TileOptions = field(default_factory=TileOptions)  # the reader, mpp and ROI classes of every slide
    tissue: TissueSpec = field(default_factory=TissueSpec)
    store: StoreSpec = field(default_factory=StoreSpec)
    volume: VolumeSpec = field(default_factory=VolumeSpec)  # how volumes (NIfTI, NRRD, ...) in the manifest are tiled
    pretrain: dict[str, Any] | None = None  # SSLConfig fields (+ "tiny": true); None: use `encoder`
    encoder: str | None = None
    weights: str | None = None
    extract: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    heatmaps: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> CohortSpec:
        """Read a cohort YAML; relative paths in it are relative to its folder."""
        path = Path(path)
        return cls.from_dict(load_yaml(path), path.parent, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path, path: Path | None = None) -> CohortSpec:
        """A spec from its YAML's contents; relative paths are relative to ``base``; ``path`` names the
        source in errors."""
        base = Path(base)
        path = Path(path) if path is not None else base / "<cohort spec>"
        known = {
            "name",
            "manifest",
            "out",
            "tile",
            "tile_options",
            "tissue",
            "store",
            "volume",
            "pretrain",
            "encoder",
            "weights",
            "extract",
            "train",
            "heatmaps",
            "executor",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown cohort key(s): {', '.join(unknown)}", path=path, fix=f"known keys: {', '.join(sorted(known))}"
            )
        for key in ("manifest", "out"):
            if key not in data:
                raise ConfigError(f"the cohort spec has no '{key}'", path=path, fix=f"add '{key}: ...' to the YAML")
        manifest = (base / data["manifest"]).resolve()
        encoder = data.get("encoder")
        if not data.get("pretrain") and not encoder:
            raise ConfigError(
                "the cohort spec names neither 'pretrain' nor 'encoder'",
                path=path,
                fix="add a 'pretrain:' section, or 'encoder: timm:...' with 'weights:'",
            )
        if encoder and encoder.startswith("pathweak:") and not Path(encoder[9:]).is_absolute():
            encoder = "pathweak:" + str((base / encoder[9:]).resolve())
        weights = data.get("weights")
        if weights and weights != "random" and not str(weights).startswith("random:"):
            weights = str((base / weights).resolve())
        train = dict(data.get("train") or {})
        if train.get("instance_labels"):  # a reviewer's corrections (docs/review.md), relative to the YAML
            train["instance_labels"] = str((base / str(train["instance_labels"])).resolve())
        spec = cls(
            name=str(data.get("name", path.stem)),
            manifest=manifest,
            out=(base / data["out"]).resolve(),
            slides=tuple(read_manifest(manifest)),
            tile=from_dict(TileSpec, dict(data.get("tile") or {}), path),
            tile_options=cohort_tile_options(dict(data.get("tile_options") or {}), path),
            tissue=from_dict(TissueSpec, dict(data.get("tissue") or {}), path),
            store=from_dict(StoreSpec, dict(data.get("store") or {}), path),
            volume=from_dict(VolumeSpec, dict(data.get("volume") or {}), path),
            pretrain=dict(data["pretrain"]) if data.get("pretrain") else None,
            encoder=encoder,
            weights=weights,
            extract=dict(data.get("extract") or {}),
            train=train,
            heatmaps=dict(data.get("heatmaps") or {}),
            executor=dict(data.get("executor") or {}),
            source=path.resolve() if path.exists() else None,
        )
        # bad training or heatmap settings fail now, not after hours of tiling
        if train_config(spec).task == "survival" and not any(sl.time and sl.event for sl in spec.slides):
            raise ConfigError(
                "train: {task: survival} needs each labelled slide's time and event",
                path=manifest,
                fix="add 'time' and 'event' columns to the manifest (event 1 = event, 0 = censored)",
            )
        heatmap_settings(spec)
        return spec

    @property
    def encoder_name(self) -> str:
        """The encoder features are extracted with: the spec's, or this cohort's pretrained one."""
        return self.encoder or f"pathweak:{self.out / 'encoder'}"


def train_config(spec: CohortSpec) -> Any:
    """The spec's ``train:`` section as a TrainConfig: TrainConfig's defaults, except 3 folds instead of 5
    (cohort specs are first written for small cohorts, with too few patients per class for 5 folds;
    docs/cohorts.md "Defaults")."""
    from ..train.config import TrainConfig

    values = {"folds": 3, **spec.train}
    values.pop("instance_labels", None)  # the corrections' path: the train stage reads it (instance_labels_path)
    for key in ("seeds", "classes"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return from_dict(TrainConfig, values, spec.source)


def instance_labels_path(spec: CohortSpec) -> Path | None:
    """The spec's ``train: {instance_labels: PATH}``: a pathologist's corrections to train on beside the slide
    labels (docs/review.md), or None."""
    value = spec.train.get("instance_labels")
    return Path(value) if value else None


def pretrain_config(spec: CohortSpec) -> Any:
    """The spec's ``pretrain:`` section as an SSLConfig (``tiny: true`` starts from ``SSLConfig.tiny()``)."""
    from ..ssl.config import SSLConfig

    values = dict(spec.pretrain or {})
    tiny = bool(values.pop("tiny", False))
    for key in ("global_scale", "local_scale", "mae_scale"):
        if key in values:
            values[key] = tuple(values[key])
    check_keys(SSLConfig, values, spec.source)
    return SSLConfig.tiny(**values) if tiny else SSLConfig(**values)


# TileOptions fields a cohort sets elsewhere: its executor runs the slides, a rerun tiles what changed, and
# each slide's ROI is in its manifest row
_NOT_COHORT_OPTIONS = {
    "workers": "set 'executor: {workers: N}' (slides run in parallel, one worker each)",
    "force": "a rerun re-tiles every slide whose file or settings changed; delete a store under <out>/tiles to redo it",
    "roi": "give each slide's QuPath GeoJSON in the manifest's 'roi' column",
}


def cohort_tile_options(data: dict[str, Any], path: Path) -> TileOptions:
    """The spec's ``tile_options:`` section (``backend``, ``mpp``, ``roi_classes``, ``fast_read``,
    ``encode_threads``); a manifest row's ``mpp`` replaces ``mpp`` for its slide."""
    for name, fix in _NOT_COHORT_OPTIONS.items():
        if name in data:
            raise ConfigError(f"tile_options: {name} is not a cohort setting", path=path, fix=fix)
    return from_dict(TileOptions, data, path)


def check_spec(spec: CohortSpec, stages: tuple[str, ...] | list[str] = STAGES) -> None:
    """What the stages in ``stages`` would refuse only after the slides are tiled and embedded, checked
    before any work: rotation views and label augmentation together, the pretraining settings, the encoder's
    name and weights (extract), the head's name and options and the manifest's labels against the task and
    folds (train). Each is one error naming the spec or the manifest (docs/input_checks.md)."""
    _check_views(spec)
    if spec.pretrain and ("pretrain" in stages or "extract" in stages):
        pretrain_config(spec)
    if "extract" in stages and not (spec.pretrain and not spec.encoder):  # a pretrained encoder does not exist yet
        from ..encoders import check_encoder

        _in_spec(lambda: check_encoder(spec.encoder_name, spec.weights), spec, "encoder")
    if "train" in stages:
        cfg = train_config(spec)
        _in_spec(lambda: _check_head(cfg), spec, "train")
        _check_manifest_labels(spec, cfg)
        corrections = instance_labels_path(spec)
        if corrections is not None:
            from ..heatmap.review_files import correction_files
            from ..train.instance_labels import check_instance_label_options

            _in_spec(lambda: check_instance_label_options(cfg), spec, "train")
            correction_files(corrections)  # there, and holding correction files


def _check_views(spec: CohortSpec) -> None:
    """``extract: {rotations: R}`` and ``train: {label_augmentation: rotation}`` go together: the head reads
    rotation views only with label augmentation, which needs them (docs/cohorts.md)."""
    from ..features.views import check_rotations

    rotations = spec.extract.get("rotations", 1)
    if not isinstance(rotations, int) or isinstance(rotations, bool):
        raise ConfigError(f"extract: rotations must be 2 or 4, got {rotations!r}", path=spec.source)
    _in_spec(lambda: check_rotations(rotations), spec, "extract")
    augmentation = spec.train.get("label_augmentation")
    if (rotations > 1) != (augmentation is not None):
        raise ConfigError(
            "extract: rotations and train: label_augmentation go together (the head trains on the rotation views "
            "with label augmentation only)",
            path=spec.source,
            fix="set both (extract: {rotations: 4} and train: {label_augmentation: rotation}) or neither",
        )


def _in_spec(check: Any, spec: CohortSpec, key: str) -> None:
    """Run ``check``; a ConfigError without a file of its own names the spec and its key."""
    try:
        check()
    except ConfigError as exc:
        if exc.path is not None:
            raise
        raise ConfigError(f"{key}: {exc.problem}", path=spec.source, fix=exc.fix) from None


def _check_head(cfg: Any) -> None:
    from ..heads import create_head
    from ..train.fit import check_head_task

    views = {"label_augmentation": {"kind": cfg.label_augmentation, "views": 4}} if cfg.label_augmentation else {}
    check_head_task(create_head(cfg.head, 8, 2, **cfg.head_options, **views), cfg.head, cfg.task)


def _check_manifest_labels(spec: CohortSpec, cfg: Any) -> None:
    """The manifest's labelled slides read as the train stage reads them (errors name the manifest's rows),
    and split into the spec's folds."""
    import pandas as pd

    from ..train.labels import frame_labels
    from ..train.splits import make_folds

    every = {s.slide_id: s.path for s in spec.slides}
    header, labelled, rows = label_rows(list(spec.slides), every, survival=cfg.task == "survival")
    if not labelled:
        return  # the train stage says so, after tiling: slides may be labelled for prediction only
    line = {s.slide_id: i for i, s in enumerate(spec.slides)}  # index 0 is the manifest's row 2
    frame = pd.DataFrame(rows, columns=header, index=[line[s.slide_id] for s in labelled])
    make_folds(
        frame_labels(frame, spec.manifest, None, cfg.task, cfg.classes), cfg.folds, cfg.split_seed, cfg.val_fraction
    )


HEATMAP_FORMATS_DEFAULT = ("png", "geojson")


def heatmap_settings(spec: CohortSpec) -> tuple[list[str], Any]:
    """The spec's ``heatmaps:`` section: export formats (default png and QuPath GeoJSON) and ExportOptions."""
    from ..heatmap.export import FORMATS, ExportOptions

    values = dict(spec.heatmaps)
    formats = list(values.pop("formats", HEATMAP_FORMATS_DEFAULT))
    allowed = (*FORMATS, "nifti")  # nifti: the heatmaps of a cohort of volumes
    bad = [f for f in formats if f not in allowed]
    if bad:
        raise ConfigError(
            f"unknown heatmap format(s) {', '.join(map(str, bad))}",
            path=spec.source,
            fix=f"use some of {', '.join(allowed)}",
        )
    if "regions" in values:
        raise ConfigError(
            "heatmaps: regions is not available in cohort specs",
            path=spec.source,
            fix="run `pathweak heatmap --region ...` on the results stores",
        )
    if isinstance(values.get("scores"), list):
        values["scores"] = tuple(values["scores"])
    return formats, from_dict(ExportOptions, values, spec.source)


def label_rows(
    slides: list[Slide], features: dict[str, Path], survival: bool
) -> tuple[list[str], list[Slide], list[list[str]]]:
    """The labels.csv the train stage writes: its header, the labelled slides that have features, and
    their rows (label, or time and event for survival; split when any slide has one)."""
    targets = ["time", "event"] if survival else ["label"]
    labelled = [s for s in slides if s.slide_id in features and all(getattr(s, t) for t in targets)]
    split = any(s.split for s in labelled)
    header = ["slide_id", "patient_id", *targets, *(["split"] if split else [])]
    rows = [
        [s.slide_id, s.patient_id, *(str(getattr(s, t)) for t in targets), *([s.split or ""] if split else [])]
        for s in labelled
    ]
    return header, labelled, rows
