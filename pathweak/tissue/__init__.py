"""Tissue detection on a low-resolution thumbnail, or a region of interest from QuPath GeoJSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import TissueSpec, as_dict
from ..errors import MissingMppError
from ..io.base import LevelReader, Slide
from .mask import TissueMask, clean_mask, mask_to_polygons, rasterize_polygons
from .methods import TISSUE_METHODS, pen_mask
from .models import ARTIFACT_METHODS  # registers the tissue models (no torch until one runs)

__all__ = [
    "ARTIFACT_METHODS",
    "TISSUE_METHODS",
    "TissueMask",
    "detect_tissue",
    "mask_to_polygons",
    "pen_mask",
    "rasterize_polygons",
    "roi_mask",
    "segment_tissue",
    "thumbnail_downsample",
]


def detect_tissue(rgb: np.ndarray, spec: TissueSpec | None = None, px_um: float = 8.0) -> np.ndarray:
    """Boolean tissue mask of an RGB image whose pixels are ``px_um`` microns wide: the spec's pixel
    classifier followed by the shared clean-up (closing, small objects, holes)."""
    spec = spec or TissueSpec()
    raw = TISSUE_METHODS.get(spec.method)(rgb, spec)
    return clean_mask(raw, px_um, spec.closing_um, spec.min_area_um2, spec.max_hole_area_um2)


def thumbnail_downsample(slide: Slide, spec: TissueSpec) -> float:
    """Level-0 pixels per mask pixel: ``spec.thumbnail_mpp`` but never more than ``max_thumbnail_side``
    pixels along the longer side, and never finer than level 0."""
    w0, h0 = slide.dimensions
    ds = max(w0, h0) / spec.max_thumbnail_side
    if slide.mpp is not None:
        ds = max(ds, spec.thumbnail_mpp / max(slide.mpp))
    return max(ds, 1.0)


def segment_tissue(
    slide: Slide,
    spec: TissueSpec | None = None,
    roi: str | Path | None = None,
    roi_classes: list[str] | None = None,
    reader: LevelReader | None = None,
) -> TissueMask:
    """Find tissue on a thumbnail of ``slide`` (never loading level 0 whole).

    With ``roi`` (a QuPath GeoJSON file), its annotations are the region of interest instead of the
    detected tissue; ``roi_classes`` keeps only annotations of those classifications. ``reader`` reads
    the thumbnail's pyramid level instead of the backend (the tiler passes its direct TIFF tile reader).
    """
    spec = spec or TissueSpec()
    if slide.mpp is None:
        raise MissingMppError(
            "the slide records no resolution (microns per pixel)",
            path=slide.path,
            fix="pass --mpp (e.g. --mpp 0.25 for a 40x scan, 0.5 for 20x)",
        )
    ds = thumbnail_downsample(slide, spec)
    thumb = slide.read_downsampled(ds, reader=reader)
    w0, h0 = slide.dimensions
    downsample = (w0 / thumb.shape[1], h0 / thumb.shape[0])
    px_um = max(slide.mpp) * max(downsample)
    detector = TISSUE_METHODS.get(spec.method)
    if roi is not None:
        mask = roi_mask(roi, thumb.shape[:2], downsample, roi_classes, slide.dimensions)
        params: dict = {"roi": str(roi), "roi_classes": roi_classes}
        method = "roi"
    elif getattr(detector, "reads_slide", False):  # a tissue model: reads the slide at its own resolution
        raw, _ = detector.segment(slide, spec, thumb.shape[:2], downsample, reader)  # type: ignore[attr-defined]
        mask = clean_mask(raw, px_um, spec.closing_um, spec.min_area_um2, spec.max_hole_area_um2)
        params, method = as_dict(spec), spec.method
    else:
        mask = detect_tissue(thumb, spec, px_um=px_um)
        params, method = as_dict(spec), spec.method
    artifacts = None
    if spec.params.get("artifacts"):  # an artefact model: its classes above 1 leave the mask
        keep, classes = ARTIFACT_METHODS.get(str(spec.params["artifacts"])).segment(
            slide, spec, thumb.shape[:2], downsample, reader, key="artifact_weights"
        )
        artifacts = np.where(mask & ~keep, classes, 0).astype(np.uint8)
        mask = mask & keep
        params = {**params, "artifacts_removed": _fractions(artifacts, str(spec.params["artifacts"]))}
    return TissueMask(
        mask=mask, downsample=downsample, method=method, params=params, thumbnail=thumb, artifacts=artifacts
    )


def _fractions(artifacts: np.ndarray, name: str) -> dict[str, float]:
    """Fraction of the mask grid removed per artefact class (named as the model names them)."""
    classes = ARTIFACT_METHODS.get(name).model.classes
    return {classes[c]: float((artifacts == c).mean()) for c in np.unique(artifacts) if c}


def roi_mask(
    path: str | Path,
    shape: tuple[int, int],
    downsample: tuple[float, float],
    classes: list[str] | None = None,
    slide_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Rasterise the annotation polygons of a QuPath GeoJSON file (level-0 pixels) into a mask. Annotations
    that miss the slide (``slide_size``, default the mask's extent) are an error naming the file, their
    bounds and the slide's size (:func:`pathweak.io.qupath_geojson.annotations_on_slide`)."""
    from ..io.qupath_geojson import annotations_on_slide

    size = slide_size or (round(shape[1] * downsample[0]), round(shape[0] * downsample[1]))
    geoms = annotations_on_slide(path, (int(size[0]), int(size[1])), classes, "region-of-interest annotations")
    return rasterize_polygons(geoms, shape, downsample)
