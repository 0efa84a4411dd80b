"""Cohort specs: a YAML file naming a manifest CSV, an output folder and the settings of every stage."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import StoreSpec, TileSpec, TissueSpec, VolumeSpec, from_dict, load_yaml
from ..errors import ConfigError

MANIFEST_COLUMNS = ("path", "patient_id", "label")
SURVIVAL_COLUMNS = ("time", "event")  # instead of label, for train: {task: survival}
STAGES = ("tile", "pretrain", "extract", "train", "predict", "heatmaps")


@dataclass(frozen=True)
class Slide:
    """One manifest row."""

    slide_id: str
    path: Path
    patient_id: str
    label: str
    split: str | None = None
    time: str | None = None  # survival: follow-up time and event (1 event, 0 censored), as the manifest has them
    event: str | None = None


@dataclass(frozen=True)
class CohortSpec:
    """Everything ``pathweak cohort run`` needs. Paths in the YAML are relative to the YAML's folder."""

    name: str
    manifest: Path
    out: Path
    slides: tuple[Slide, ...]
    tile: TileSpec = field(default_factory=TileSpec)
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
        spec = cls(
            name=str(data.get("name", path.stem)),
            manifest=manifest,
            out=(base / data["out"]).resolve(),
            slides=tuple(read_manifest(manifest)),
            tile=from_dict(TileSpec, dict(data.get("tile") or {}), path),
            tissue=from_dict(TissueSpec, dict(data.get("tissue") or {}), path),
            store=from_dict(StoreSpec, dict(data.get("store") or {}), path),
            volume=from_dict(VolumeSpec, dict(data.get("volume") or {}), path),
            pretrain=dict(data["pretrain"]) if data.get("pretrain") else None,
            encoder=encoder,
            weights=weights,
            extract=dict(data.get("extract") or {}),
            train=dict(data.get("train") or {}),
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
    for key in ("seeds", "classes"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return from_dict(TrainConfig, values, spec.source)


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


def read_manifest(path: Path) -> list[Slide]:
    """Manifest rows (path, slide_id, patient_id, label, optional split; time and event instead of, or as
    well as, label for survival); slide paths relative to the CSV."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ConfigError("manifest not found", path=path, fix="check 'manifest:' in the cohort spec") from None
    if not rows:
        raise ConfigError("the manifest has no rows", path=path, fix="list one slide per row")
    survival = all(c in rows[0] for c in SURVIVAL_COLUMNS)
    missing = [c for c in MANIFEST_COLUMNS if c not in rows[0] and not (c == "label" and survival)]
    if missing:
        raise ConfigError(
            f"the manifest lacks column(s) {', '.join(missing)}",
            path=path,
            fix="columns: path, slide_id (optional), patient_id, label (or time and event for survival), split (optional)",
        )
    slides, seen = [], set()
    for i, row in enumerate(rows, start=2):
        slide_path = (path.parent / row["path"]).resolve()
        slide_id = (row.get("slide_id") or "").strip() or slide_path.stem
        if slide_id in seen:
            raise ConfigError(f"slide id {slide_id!r} appears twice (line {i})", path=path, fix="make slide ids unique")
        seen.add(slide_id)
        slides.append(
            Slide(
                slide_id,
                slide_path,
                str(row["patient_id"]).strip(),
                str(row.get("label") or "").strip(),
                (row.get("split") or "").strip() or None,
                (row.get("time") or "").strip() or None,
                (row.get("event") or "").strip() or None,
            )
        )
    return slides
