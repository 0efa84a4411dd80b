"""Pseudo-slides composed of real labelled H&E tiles, with exact tile-level ground truth.

Each slide is a grid of tiles from a labelled patch dataset laid out on white glass and written as a
pyramidal JPEG TIFF with an mpp tag, so the whole pipeline (tile → features → heads) runs on it.
Negative slides hold only benign tiles; positive slides hold one or two contiguous tumour regions
covering a set fraction of the grid, the rest benign. Train and test slides draw tiles from disjoint
source groups, so no source photo is on both sides.

The data folder has the layout of ../shared/data/labeled/lc25000_lung: ``groups.csv`` with
``file,label,source_group_id`` (file relative to the folder). Outputs in ``out_dir``::

    slides/<slide_id>.tiff      the pseudo-slides (tiles of ``tile_px`` at ``mpp``, one tile of margin)
    labels.csv                  slide_id, patient_id, label (tumour | normal), split (train | test), path
    ground_truth.csv            slide_id, row, col, x, y (level-0 top-left), tumour (0/1), class, source file, group
    pseudo_slides.json          the parameters and which source groups went to each side
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import atomic_file
from .errors import ConfigError
from .io.tiff_writer import write_pyramidal_tiff

BENIGN = ("lung_n",)
TUMOUR = ("lung_aca", "lung_scc")


@dataclass(frozen=True)
class PseudoSlideSpec:
    """How many slides of what kind: grid sides in ``grid`` (inclusive range), tumour cells as a
    fraction of the grid in ``tumour_fraction``; ``test_groups`` is the share of each class's source
    groups reserved for test slides."""

    n_train: int = 40
    n_test: int = 40
    grid: tuple[int, int] = (12, 24)
    tumour_fraction: tuple[float, float] = (0.05, 0.30)
    positive_share: float = 0.5
    max_regions: int = 2
    test_groups: float = 0.4
    tile_px: int = 224
    mpp: float = 0.5
    margin_tiles: int = 1
    quality: int = 90
    seed: int = 0
    benign: tuple[str, ...] = BENIGN
    tumour: tuple[str, ...] = TUMOUR


@dataclass
class PseudoSlide:
    slide_id: str
    patient_id: str
    label: str  # "tumour" | "normal"
    split: str  # "train" | "test"
    path: Path
    shape: tuple[int, int]  # grid rows, cols
    tumour: np.ndarray = field(repr=False)  # (rows, cols) bool
    classes: list[str] = field(default_factory=list)


def compose_pseudo_slides(
    data_dir: str | Path, out_dir: str | Path, spec: PseudoSlideSpec | None = None, overwrite: bool = False
) -> list[PseudoSlide]:
    """Write the pseudo-slides, labels and ground truth (see the module docstring); the same spec gives
    the same slides. Slides already on disk are kept unless ``overwrite``."""
    import cv2

    from .tiling.images import load_square

    spec = spec or PseudoSlideSpec()
    data, out = Path(data_dir), Path(out_dir)
    pools, sides = _source_pools(data, spec)
    rng = np.random.default_rng(spec.seed)
    slides_dir = out / "slides"
    slides_dir.mkdir(parents=True, exist_ok=True)
    slides: list[PseudoSlide] = []
    gt_rows: list[list[object]] = []
    cache: dict[Path, np.ndarray] = {}
    for split, count in (("train", spec.n_train), ("test", spec.n_test)):
        n_pos = int(round(count * spec.positive_share))
        labels = ["tumour"] * n_pos + ["normal"] * (count - n_pos)
        rng.shuffle(labels)
        for k, label in enumerate(labels):
            slide_id = f"{split}_{k:03d}"
            rows, cols = (int(v) for v in rng.integers(spec.grid[0], spec.grid[1] + 1, size=2))
            tumour, region_class = (
                _tumour_cells(rng, rows, cols, spec)
                if label == "tumour"
                else (np.zeros((rows, cols), bool), np.full((rows, cols), "", object))
            )
            classes = np.where(tumour, region_class, "").astype(object)
            picks: list[list[tuple[str, int]]] = [[("", 0)] * cols for _ in range(rows)]
            for r in range(rows):
                for c in range(cols):
                    cls = str(classes[r, c]) or str(rng.choice(spec.benign))
                    classes[r, c] = cls
                    picks[r][c] = (cls, int(rng.integers(len(pools[split][cls]))))
            turns = rng.integers(8, size=(rows, cols))  # a random flip/rotation per placed tile
            path = slides_dir / f"{slide_id}.tiff"
            m, t = spec.margin_tiles, spec.tile_px
            if overwrite or not path.exists():
                image = np.full(((rows + 2 * m) * t, (cols + 2 * m) * t, 3), 255, np.uint8)
                for r in range(rows):
                    for c in range(cols):
                        cls, j = picks[r][c]
                        file = pools[split][cls][j][0]
                        if file not in cache:
                            cache[file] = load_square(file, t, cv2)
                        tile = _dihedral(cache[file], int(turns[r, c]))
                        image[(r + m) * t : (r + m + 1) * t, (c + m) * t : (c + m + 1) * t] = tile
                write_pyramidal_tiff(path, image, spec.mpp, quality=spec.quality, min_level_side=512)
            for r in range(rows):
                for c in range(cols):
                    cls, j = picks[r][c]
                    file, group = pools[split][cls][j]
                    gt_rows.append(
                        [
                            slide_id,
                            r,
                            c,
                            (c + m) * t,
                            (r + m) * t,
                            int(tumour[r, c]),
                            cls,
                            str(file.relative_to(data)),
                            group,
                        ]
                    )
            slides.append(
                PseudoSlide(
                    slide_id,
                    f"patient_{slide_id}",
                    label,
                    split,
                    path,
                    (rows, cols),
                    tumour,
                    sorted(set(str(v) for v in classes[tumour])),
                )
            )
    _write_tables(out, slides, gt_rows, spec, sides)
    return slides


def read_ground_truth(path: str | Path) -> dict[str, dict[tuple[int, int], int]]:
    """ground_truth.csv as {slide_id: {(x, y): tumour}} (level-0 top-left of each cell)."""
    truth: dict[str, dict[tuple[int, int], int]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            truth.setdefault(row["slide_id"], {})[(int(row["x"]), int(row["y"]))] = int(row["tumour"])
    return truth


def _source_pools(data: Path, spec: PseudoSlideSpec) -> tuple[dict[str, dict[str, list[tuple[Path, str]]]], dict]:
    """Per side and class, the (file, group) pairs to draw from; groups split per class, disjoint."""
    groups_csv = data / "groups.csv"
    if not groups_csv.exists():
        raise ConfigError(
            "no groups.csv (file,label,source_group_id) here",
            path=data,
            fix="point --data to a folder laid out like shared/data/labeled/lc25000_lung",
        )
    by_class: dict[str, dict[str, list[Path]]] = {}
    with open(groups_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            by_class.setdefault(row["label"], {}).setdefault(row["source_group_id"], []).append(data / row["file"])
    needed = set(spec.benign) | set(spec.tumour)
    missing = sorted(needed - set(by_class))
    if missing:
        raise ConfigError(
            f"no tiles of class {', '.join(missing)} in groups.csv",
            path=groups_csv,
            fix=f"the classes there are {', '.join(sorted(by_class))}",
        )
    pools: dict[str, dict[str, list[tuple[Path, str]]]] = {"train": {}, "test": {}}
    sides: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for cls in sorted(needed):
        groups = sorted(by_class[cls], key=lambda g: (len(g), g))
        np.random.default_rng([spec.seed, sorted(needed).index(cls)]).shuffle(groups)
        n_test = max(1, int(round(len(groups) * spec.test_groups)))
        if n_test >= len(groups):
            raise ConfigError(f"class {cls} has {len(groups)} source groups, too few to split", path=groups_csv)
        for side, chosen in (("test", groups[:n_test]), ("train", groups[n_test:])):
            pools[side][cls] = [(f, g) for g in sorted(chosen) for f in sorted(by_class[cls][g])]
            sides[side][cls] = sorted(chosen)
    return pools, sides


def _tumour_cells(
    rng: np.random.Generator, rows: int, cols: int, spec: PseudoSlideSpec
) -> tuple[np.ndarray, np.ndarray]:
    """One or two contiguous regions grown cell by cell from random seeds, covering a fraction of the grid
    drawn from ``spec.tumour_fraction``; each region has one tumour class."""
    total = rows * cols
    target = max(1, int(round(rng.uniform(*spec.tumour_fraction) * total)))
    n_regions = 1 if target < 4 else int(rng.integers(1, spec.max_regions + 1))
    mask = np.zeros((rows, cols), bool)
    cls = np.full((rows, cols), "", object)
    sizes = [target // n_regions + (1 if i < target % n_regions else 0) for i in range(n_regions)]
    for size in sizes:
        region_class = str(rng.choice(spec.tumour))
        free = np.argwhere(~mask)
        seed = tuple(free[rng.integers(len(free))])
        grown = {seed}
        frontier = [seed]
        while len(grown) < size and frontier:
            r, c = frontier[int(rng.integers(len(frontier)))]
            options = [
                (r + dr, c + dc)
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
                if 0 <= r + dr < rows
                and 0 <= c + dc < cols
                and not mask[r + dr, c + dc]
                and (r + dr, c + dc) not in grown
            ]
            if not options:
                frontier.remove((r, c))
                continue
            cell = options[int(rng.integers(len(options)))]
            grown.add(cell)
            frontier.append(cell)
        for cell in grown:
            mask[cell] = True
            cls[cell] = region_class
    return mask, cls


def _dihedral(tile: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square tile."""
    out = np.rot90(tile, k % 4)
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


def _write_tables(
    out: Path, slides: list[PseudoSlide], gt_rows: list[list[object]], spec: PseudoSlideSpec, sides: dict
) -> None:
    with atomic_file(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "patient_id", "label", "split", "path"])
        for s in slides:
            w.writerow([s.slide_id, s.patient_id, s.label, s.split, f"slides/{s.path.name}"])
    with atomic_file(out / "ground_truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "row", "col", "x", "y", "tumour", "class", "source_file", "source_group"])
        w.writerows(gt_rows)
    meta = {
        "spec": asdict(spec),
        "source_groups": sides,
        "slides": [
            {
                "slide_id": s.slide_id,
                "label": s.label,
                "split": s.split,
                "grid": list(s.shape),
                "tumour_cells": int(s.tumour.sum()),
                "tumour_fraction": round(float(s.tumour.mean()), 4),
                "tumour_classes": s.classes,
            }
            for s in slides
        ],
    }
    with atomic_file(out / "pseudo_slides.json", "w") as fh:
        json.dump(meta, fh, indent=1)
