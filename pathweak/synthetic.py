"""A deterministic generator of a small synthetic H&E-like cohort (no download).

Each slide is a pyramidal JPEG TIFF at 0.5 um/px: pink stroma with purple nuclei on white glass;
"tumour" slides carry one or two regions of dense, large, dark nuclei whose outlines are known. The
cohort folder holds the slides, ``labels.csv`` (slide_id, patient_id, label, path) and, per tumour
slide, ``<slide_id>.tumour.geojson`` (QuPath annotations classified "Tumor", level-0 pixels). The same
seed gives the same pixels on every run.
"""

from __future__ import annotations

import csv
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io.tiff_writer import write_pyramidal_tiff
from .progress import log_line

SAMPLE_MPP = 0.5
STROMA = np.array([236, 160, 200], np.float32)
NUCLEUS = np.array([95, 55, 140], np.float32)
TUMOUR_NUCLEUS = np.array([70, 35, 115], np.float32)


@dataclass(frozen=True)
class SampleSlide:
    slide_id: str
    patient_id: str
    label: str  # "tumour" | "normal"
    path: Path
    tumour_regions: list[list[tuple[float, float]]]


def make_sample_cohort(
    out_dir: str | Path,
    n_slides: int = 16,
    size: tuple[int, int] = (3072, 2304),
    seed: int = 0,
    overwrite: bool = False,
) -> list[SampleSlide]:
    """Write ``n_slides`` synthetic slides (every other one with tumour) plus labels and ground truth.

    Patients hold one or two slides each. Existing files are kept unless ``overwrite``, so a second
    call is instant.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slides = []
    for i in range(n_slides):
        slide_id = f"sample_{i:02d}"
        patient_id = f"patient_{i // 2 if i < n_slides // 2 else i - n_slides // 4:02d}"
        label = "tumour" if i % 2 == 0 else "normal"
        path = out / f"{slide_id}.tiff"
        rng = np.random.default_rng([seed, i])
        tissue = _tissue_mask(rng, size)
        regions = _tumour_regions(rng, tissue) if label == "tumour" else []
        if overwrite or not path.exists():
            image = render_slide(rng, tissue, regions)
            write_pyramidal_tiff(path, image, SAMPLE_MPP, quality=90, min_level_side=512)
            log_line(f"sample data {slide_id}: written ({label}) -> {path}")
        if regions:
            _write_geojson(out / f"{slide_id}.tumour.geojson", regions)
        slides.append(SampleSlide(slide_id, patient_id, label, path, regions))
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide_id", "patient_id", "label", "path"])
        for s in slides:
            writer.writerow([s.slide_id, s.patient_id, s.label, s.path.name])
    return slides


def _tissue_mask(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A few smooth blobs covering roughly half of the slide, away from the edges."""
    import cv2

    w, h = size
    small: np.ndarray = rng.random((h // 64, w // 64)).astype(np.float32)
    small = cv2.GaussianBlur(small, (0, 0), 2.5)
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = np.minimum.reduce([xx, yy, w - xx, h - yy]) / (0.12 * min(w, h))
    field = field * np.clip(vignette, 0, 1)
    return field > np.quantile(field, 0.5)


def _tumour_regions(rng: np.random.Generator, tissue: np.ndarray) -> list[list[tuple[float, float]]]:
    """One or two irregular polygons inside the tissue (level-0 pixel coordinates)."""
    import cv2

    h, w = tissue.shape
    inner = cv2.erode(tissue.astype(np.uint8), np.ones((161, 161), np.uint8))
    ys, xs = np.nonzero(inner[::16, ::16])
    regions: list[list[tuple[float, float]]] = []
    for _ in range(int(rng.integers(1, 3))):
        k = int(rng.integers(len(xs)))
        cx, cy = xs[k] * 16.0, ys[k] * 16.0
        radius = rng.uniform(0.12, 0.17) * min(w, h)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 14))
        radii = radius * rng.uniform(0.7, 1.15, 14)
        pts = [
            (float(np.clip(cx + r * np.cos(a), 0, w - 1)), float(np.clip(cy + r * np.sin(a), 0, h - 1)))
            for a, r in zip(angles, radii, strict=False)
        ]
        regions.append(pts)
    return regions


def render_slide(rng: np.random.Generator, tissue: np.ndarray, regions: list[list[tuple[float, float]]]) -> np.ndarray:
    """Paint stroma, nuclei and tumour on white glass."""
    import cv2

    h, w = tissue.shape
    tumour = np.zeros((h, w), np.uint8)
    for pts in regions:
        cv2.fillPoly(tumour, [np.round(np.array(pts)).astype(np.int32)], 1)
    tumour = tumour.astype(bool) & tissue

    # stroma: pink, with fibre-like anisotropic texture
    noise = rng.random((h // 4, w // 4)).astype(np.float32)
    fibres = cv2.resize(cv2.GaussianBlur(noise, (0, 0), sigmaX=6, sigmaY=1), (w, h))
    shade = 0.85 + 0.3 * (fibres - fibres.mean()) / (fibres.std() + 1e-6) * 0.3
    img = np.full((h, w, 3), 245, np.float32)
    stroma = STROMA[None, None, :] * shade[..., None]
    img[tissue] = stroma[tissue]
    img[tumour] = 0.75 * stroma[tumour] + 0.25 * np.array([200, 140, 200], np.float32)

    canvas: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    _draw_nuclei(canvas, rng, tissue & ~tumour, density=1 / 900, radius=(2.5, 4.5), color=NUCLEUS)
    _draw_nuclei(canvas, rng, tumour, density=1 / 260, radius=(5.0, 8.5), color=TUMOUR_NUCLEUS)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.8)
    grain = rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    return np.clip(canvas.astype(np.float32) + grain, 0, 255).astype(np.uint8)


def _draw_nuclei(
    canvas: np.ndarray,
    rng: np.random.Generator,
    where: np.ndarray,
    density: float,
    radius: tuple[float, float],
    color: np.ndarray,
) -> None:
    import cv2

    ys, xs = np.nonzero(where[::4, ::4])
    n = int(where.sum() * density)
    if n == 0 or len(xs) == 0:
        return
    pick = rng.integers(len(xs), size=n)
    cx = xs[pick] * 4 + rng.integers(0, 4, n)
    cy = ys[pick] * 4 + rng.integers(0, 4, n)
    ra = rng.uniform(*radius, n)
    rb = ra * rng.uniform(0.6, 1.0, n)
    ang = rng.uniform(0, 180, n)
    tint = rng.normal(0, 12, (n, 3))
    for x, y, a, b, t, c in zip(cx, cy, ra, rb, ang, tint, strict=False):
        col = tuple(float(v) for v in np.clip(color + c, 0, 255))
        cv2.ellipse(canvas, (int(x), int(y)), (max(1, int(a)), max(1, int(b))), float(t), 0, 360, col, -1, cv2.LINE_AA)


def _write_geojson(path: Path, regions: list[list[tuple[float, float]]]) -> None:
    features = []
    for i, pts in enumerate(regions):
        ring = [list(p) for p in pts] + [list(pts[0])]
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pathweak-sample/{path.name}/{i}")),
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
            }
        )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
