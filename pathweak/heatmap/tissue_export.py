"""A TileStore's tissue record as QuPath annotations: the tissue mask (of any method: Otsu, an ROI, HEST,
GrandQC) as ``Tissue`` polygons, and the regions an artefact model removed as polygons classified by artefact
class (``Fold``, ``Pen marking``...), in level-0 pixels (``pathweak export-tissue``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..store.tiles import TileStore
from .geojson import FeatureCollectionWriter, feature, uuid4_strings

TISSUE_COLOUR = (80, 160, 80)
ARTIFACT_COLOURS = [(200, 60, 60), (230, 150, 30), (40, 40, 40), (30, 90, 220), (150, 60, 200), (120, 120, 120)]


def tissue_geojson(store: str | Path, path: str | Path, seed: int | None = None) -> Path:
    """Write ``store``'s tissue mask (and artefact mask, when an artefact model ran) to ``path`` as classified
    QuPath annotations; the file appears atomically."""
    from ..tissue.mask import mask_to_polygons
    from ..tissue.models import ARTIFACT_METHODS

    rng = np.random.default_rng(seed) if seed is not None else None
    with TileStore.open(store) as ts:
        tissue = ts.attrs.get("tissue") or {}
        downsample = tuple(float(v) for v in tissue.get("mask_downsample", (1.0, 1.0)))
        layers = [("Tissue", TISSUE_COLOUR, ts.tissue_mask.astype(bool))]
        artifacts = ts.artifact_mask
        name = ((tissue.get("params") or {}).get("params") or {}).get("artifacts")
        if artifacts is not None and name in ARTIFACT_METHODS:
            classes = ARTIFACT_METHODS.get(str(name)).model.classes
            for c in (int(v) for v in np.unique(artifacts) if v):
                colour = ARTIFACT_COLOURS[(c - 2) % len(ARTIFACT_COLOURS)]
                layers.append((classes[c].capitalize(), colour, artifacts == c))
        with FeatureCollectionWriter(path) as out:
            for label, colour, mask in layers:
                polygons = mask_to_polygons(mask, (downsample[0], downsample[1]))
                ids = uuid4_strings(len(polygons), rng)
                out.write(
                    [
                        feature(
                            p,
                            "annotation",
                            id=i,
                            classification=(label, colour),
                            name=f"{label} ({tissue.get('method')})",
                        )
                        for p, i in zip(polygons, ids, strict=True)
                    ]
                )
    return Path(path)
