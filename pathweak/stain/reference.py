"""The normalisation target: a :class:`StainReference` holds one :class:`SlideStain` per method, fitted from a
user's tile or image, or from a sample of a cohort's tiles, and is saved as JSON (``ref.json``)::

    {"pathweak_stain_reference": 1,
     "source": {"kind": "images" | "tiles", "inputs": [...], "tiles": N, "pixels": N, "seed": 0},
     "methods": {"macenko": {"matrix": [[H], [E]], "max_c": [h, e], ...},
                 "vahadane": {...}, "reinhard": {"means": [L, a, b], "stds": [L, a, b], ...}}}

A reference given as an image file (PNG, JPEG, TIFF) is fitted from that image when it is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .estimate import METHODS, SlideStain, estimate

FORMAT = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class StainReference:
    """Targets by method, and where they were fitted from."""

    targets: dict[str, SlideStain]
    source: dict[str, Any] = field(default_factory=dict)

    def target(self, method: str, where: str | Path | None = None) -> SlideStain:
        if method not in METHODS:
            raise ConfigError(f"unknown stain normalisation {method!r}", fix=f"use one of {', '.join(METHODS)}")
        if method not in self.targets:
            raise ConfigError(
                f"the stain reference has no {method} target (it holds {', '.join(self.targets) or 'none'})",
                path=where,
                fix=f"fit it with `pathweak stain fit ... --method {method}`",
            )
        return self.targets[method]

    def as_dict(self) -> dict[str, Any]:
        return {
            "pathweak_stain_reference": FORMAT,
            "source": self.source,
            "methods": {m: t.as_dict() for m, t in self.targets.items()},
        }

    def digest(self, method: str | None = None) -> str:
        """Short content hash of the targets (of one method when given): what a FeatureStore's key records."""
        methods = self.as_dict()["methods"]
        body = methods if method is None else methods.get(method)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    def save(self, path: str | Path) -> Path:
        from .._atomic import atomic_file

        path = Path(path)
        with atomic_file(path, "w") as f:
            f.write(json.dumps(self.as_dict(), indent=2) + "\n")
        return path


def fit_reference(
    pixels: np.ndarray, methods: tuple[str, ...] = METHODS, source: dict[str, Any] | None = None, seed: int = 0
) -> StainReference:
    """Every method's target fitted on ``pixels`` (uint8 RGB: an image, a stack of tiles or a pixel list)."""
    where = ", ".join(map(str, (source or {}).get("inputs", []))) or None
    targets = {m: estimate(pixels, m, where=where, seed=seed) for m in methods}
    return StainReference(targets, {**(source or {}), "pixels": int(np.asarray(pixels).size // 3), "seed": seed})


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image file (alpha dropped), or a clear error."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ConfigError("image not found", path=path, fix="check the path")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise ConfigError("not an 8-bit RGB image", path=path, fix="pass a PNG, JPEG or TIFF tile or image")
    return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)


def load_reference(path: str | Path, methods: tuple[str, ...] = METHODS) -> StainReference:
    """A reference JSON written by :meth:`StainReference.save`, or an image to fit one from."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return fit_reference(read_image(path), methods, {"kind": "images", "inputs": [str(path)]})
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            "stain reference not found", path=path, fix="check the path, or fit one with `pathweak stain fit`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the stain reference ({exc})",
            path=path,
            fix="pass a ref.json from `pathweak stain fit` or an image",
        ) from None
    if (
        not isinstance(data, dict)
        or data.get("pathweak_stain_reference") != FORMAT
        or not isinstance(data.get("methods"), dict)
    ):
        raise ConfigError(
            "not a pathweak stain reference (format 1)",
            path=path,
            fix="pass a ref.json written by `pathweak stain fit`, or a reference image",
        )
    try:
        targets = {m: SlideStain.from_dict({**t, "method": m}) for m, t in data["methods"].items() if m in METHODS}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"a damaged stain reference ({exc})", path=path, fix="fit it again with `pathweak stain fit`"
        ) from None
    for m, t in targets.items():
        if not _well_formed(t):
            raise ConfigError(
                f"the {m} target has the wrong shape", path=path, fix="fit it again with `pathweak stain fit`"
            )
    return StainReference(targets, dict(data.get("source") or {}))


def _well_formed(t: SlideStain) -> bool:
    if t.method == "reinhard":
        return (
            t.means is not None
            and t.stds is not None
            and t.means.shape == (3,)
            and t.stds.shape == (3,)
            and bool(np.all(t.stds > 0))
        )
    return (
        t.matrix is not None
        and t.max_c is not None
        and t.matrix.shape == (2, 3)
        and t.max_c.shape == (2,)
        and bool(np.all(t.max_c > 0))
    )
