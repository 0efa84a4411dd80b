"""Stain normalisation at extraction, and references fitted from TileStores.

``extract_features(..., stain=StainNormalization(method, reference))`` wraps every encoder in a
:class:`StainedEncoder`: each slide's stain is estimated once, from a seeded sample of its tiles, before its
first batch, and every batch is normalised on the device its tiles are on (the GPU when extraction decodes
there, else the CPU) before the encoder sees it. The method and the reference's digest are part of the
encoder id (so of the FeatureStore's folder and cache key); the slide's own estimate is recorded in the
FeatureStore's ``encoder.extra.stain``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..stain import METHODS, SlideStain, StainReference, estimate, fit_reference, he_angles, load_reference
from ..stain.apply import StainTransform
from ..store.tiles import TileStore
from .wrapped import WrappedEncoder

if TYPE_CHECKING:
    import torch

    from ..protocols import TileEncoder

SAMPLE_TILES = 64  # tiles of a slide its stain is estimated from
MAX_PIXELS = 1 << 20  # pixels of that sample used (an even random subsample beyond)
NOT_HE_DEGREES = 45.0  # a second stain vector this far from eosin is not H&E (IHC's DAB, a special stain)
VERSION = 1  # of the estimate's recipe (sample size, seeds): part of the encoder id


def sample_pixels(stores: list[TileStore], n_tiles: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """(pixels (k, 3) uint8, tiles read): ``n_tiles`` tiles drawn at random (seeded) over ``stores``, their
    pixels subsampled to at most :data:`MAX_PIXELS`."""
    sizes = np.array([len(s) for s in stores], np.int64)
    total = int(sizes.sum())
    if total == 0:
        raise ConfigError("the TileStores hold no tiles", path=stores[0].path if stores else None)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, min(n_tiles, total), replace=False))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for i, store in enumerate(stores):
        local = picks[(picks >= offsets[i]) & (picks < offsets[i + 1])] - offsets[i]
        if len(local):
            parts.append(store.read_tiles(local)[..., :3].reshape(-1, 3))
    pixels = np.concatenate(parts)
    if len(pixels) > MAX_PIXELS:
        pixels = pixels[np.sort(rng.choice(len(pixels), MAX_PIXELS, replace=False))]
    return pixels, len(picks)


def fit_reference_from(
    inputs: list[str | Path], methods: tuple[str, ...] = METHODS, n_tiles: int = 256, seed: int = 0
) -> StainReference:
    """A reference fitted on image files and/or a sample of ``n_tiles`` tiles over TileStores (``pathweak
    stain fit``): the pixels of every image and of the sampled tiles, pooled."""
    from ..stain.reference import IMAGE_SUFFIXES, read_image
    from ..store.tiles import find_tile_stores

    images = [Path(p) for p in inputs if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    others = [p for p in inputs if Path(p).suffix.lower() not in IMAGE_SUFFIXES]
    parts = [read_image(p).reshape(-1, 3) for p in images]
    n_read = len(images)
    store_paths = find_tile_stores(others) if others else []
    if store_paths:
        stores = [TileStore.open(p) for p in store_paths]
        try:
            pixels, n_read = sample_pixels(stores, n_tiles, seed)
            parts.append(pixels)
            n_read += len(images)
        finally:
            for s in stores:
                s.close()
    if not parts:
        raise ConfigError("nothing to fit a stain reference on", fix="pass TileStores, a tiles/ folder or images")
    source = {"kind": "tiles" if store_paths else "images", "inputs": [str(p) for p in inputs], "tiles": n_read}
    return fit_reference(np.concatenate(parts), methods, source, seed)


@dataclass
class StainNormalization:
    """What ``extract --stain-normalize METHOD --stain-reference REF`` asks for; shared by the wrapped
    encoders of one run so that a slide's stain is estimated once whatever the number of encoders."""

    method: str
    reference: StainReference
    reference_path: str = ""
    _slides: dict[str, tuple[SlideStain, StainTransform]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.target = self.reference.target(self.method, self.reference_path or None)

    @classmethod
    def load(cls, method: str, reference: str | Path) -> StainNormalization:
        if method not in METHODS:
            raise ConfigError(f"unknown stain normalisation {method!r}", fix=f"use one of {', '.join(METHODS)}")
        return cls(method, load_reference(reference, (method,)), str(reference))

    @property
    def tag(self) -> str:
        """Folder-safe and unique per method, reference target and estimate recipe."""
        body = json.dumps([self.method, self.reference.digest(self.method), SAMPLE_TILES, MAX_PIXELS, VERSION])
        return f"stain-{self.method}-{hashlib.sha256(body.encode()).hexdigest()[:8]}"

    def record(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "reference": self.reference_path,
            "reference_digest": self.reference.digest(self.method),
            "target": self.target.as_dict(),
            "sample_tiles": SAMPLE_TILES,
            "version": VERSION,
        }

    def for_slide(self, store: TileStore) -> tuple[SlideStain, StainTransform]:
        """The slide's estimate and transform (estimated on first use, then kept for the other encoders)."""
        key = str(store.attrs.get("cache_key") or store.path)
        if key not in self._slides:
            pixels, n = sample_pixels([store], SAMPLE_TILES)
            stain = estimate(pixels, self.method, where=str(store.path))
            stain = replace(stain, extra={"tiles": n})
            self._slides = {key: (stain, StainTransform(stain, self.target))}  # one slide at a time
        return self._slides[key]


def not_he_warning(stain: SlideStain, where: str) -> str | None:
    """A sentence when a stain estimate does not look like H&E (its second vector far from eosin)."""
    angles = he_angles(stain)
    if not angles or angles["e"] <= NOT_HE_DEGREES:
        return None
    looks = "DAB (IHC)" if angles["dab"] < angles["e"] else "neither eosin nor DAB"
    return (
        f"{where}: the second stain vector is {angles['e']:.0f} degrees from eosin and looks like {looks}: "
        "this is probably not an H&E slide, and normalising it toward an H&E reference recolours it. "
        "Leave out --stain-normalize for such slides"
    )


def stained(encs: list[TileEncoder], stain: StainNormalization, tokens: int = 0) -> list[TileEncoder]:
    """``encs`` wrapped to normalise stain (token rows are not: a clear error)."""
    if tokens:
        raise ConfigError(
            "--stain-normalize does not combine with --tokens yet", fix="extract token rows without stain normalisation"
        )
    return [StainedEncoder(e, stain) for e in encs]


class StainedEncoder(WrappedEncoder):
    """A :class:`~pathweak.protocols.TileEncoder` that normalises each batch's stain before ``enc`` embeds
    it. Call :meth:`begin_slide` before a slide's first batch."""

    def __init__(self, enc: TileEncoder, stain: StainNormalization):
        self.enc, self.stain = enc, stain
        base = enc.info
        self.info = replace(
            base,
            encoder_id=f"{base.encoder_id}-{stain.tag}",
            extra={**base.extra, "stain": stain.record()},
        )
        self._transform: StainTransform | None = None
        self.slide_warning: str | None = None

    def check_tiles(self, is_3d: bool, tile_shape: tuple[int, ...], where: str) -> None:
        if is_3d:
            raise ConfigError("stain normalisation is for RGB slide tiles, not 3D patches", path=where)
        self.enc.check_tiles(is_3d, tile_shape, where)

    def begin_slide(self, store: TileStore) -> None:
        """Estimate (or reuse) the slide's stain and record it in this encoder's info for its FeatureStore
        (a store with no tiles has nothing to estimate from, and nothing to normalise)."""
        self.slide_warning = None
        if not len(store):
            self._transform = None
            self.info = replace(self.info, extra={**self.info.extra, "stain": {**self.stain.record(), "slide": None}})
            return
        slide, self._transform = self.stain.for_slide(store)
        record = {**self.stain.record(), "slide": slide.as_dict(), "tiles": slide.extra.get("tiles")}
        self.info = replace(self.info, extra={**self.info.extra, "stain": record})
        self.slide_warning = not_he_warning(slide, str(store.path)) if slide.matrix is not None else None

    def embed(self, tiles: torch.Tensor) -> torch.Tensor:
        if self._transform is None:
            raise RuntimeError("StainedEncoder.begin_slide was not called before embed")
        return self.enc.embed(self._transform(tiles))

    def to(self, device: Any) -> StainedEncoder:
        self.enc = self.enc.to(device)  # type: ignore[attr-defined]
        return self

    def eval(self) -> StainedEncoder:
        self.enc = self.enc.eval()  # type: ignore[attr-defined]
        return self

    def cpu(self) -> StainedEncoder:
        return self.to("cpu")
