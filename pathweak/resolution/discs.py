"""Drawn discs of known size, measured by the estimator's own ``measure``: the source of
:data:`pathweak.resolution.sampling.SAMPLING_BIAS` (``python -m pathweak.resolution.discs`` prints the table)."""

from __future__ import annotations

import math

import numpy as np

from .estimate import measure
from .nuclei import Region

SPREAD = 0.15  # sd of log diameter of the drawn discs
SUPERSAMPLE = 16  # sub-pixels per pixel side when drawing
REFERENCE_PX = (10.0, 12.0, 14.0)  # true diameters whose measured / true ratio is the reference (factor 1)


def drawn_discs(
    diameter: float,
    size: int = 384,
    spread: float = SPREAD,
    seed: int = 0,
    amount: float = 1.0,
    background: float = 0.2,
) -> Region:
    """A ``size`` px haematoxylin region of grey discs (``amount`` on ``background``) of median diameter
    ``diameter`` px (log-normal, sd ``spread``), one per grid cell at a random sub-pixel position, each pixel
    holding the share of its area a disc covers."""
    import cv2

    rng = np.random.default_rng(seed)
    h = np.full((size, size), background, np.float32)
    cell = max(4, math.ceil(diameter * math.exp(2 * spread) * 2.2))
    for cy in range(cell, size - cell, cell):
        for cx in range(cell, size - cell, cell):
            r = diameter * math.exp(rng.normal(0.0, spread)) / 2
            x0, y0 = cx + rng.uniform(-0.5, 0.5), cy + rng.uniform(-0.5, 0.5)
            half = math.ceil(r) + 2
            top, left = int(y0) - half, int(x0) - half
            n = 2 * half * SUPERSAMPLE
            sub = (np.arange(n) + 0.5) / SUPERSAMPLE
            inside = ((sub[None, :] + left - x0) ** 2 + (sub[:, None] + top - y0) ** 2 <= r * r).astype(np.float32)
            cover = cv2.resize(inside, (2 * half, 2 * half), interpolation=cv2.INTER_AREA)
            h[top : top + 2 * half, left : left + 2 * half] += cover * (amount - background)
    return Region(h, np.ones_like(h, bool))


def measured_ratio(diameter: float, seeds: tuple[int, ...] = tuple(range(8)), size: int = 512) -> tuple[float, float]:
    """The mean measured area-weighted median diameter (px) of drawn discs of median ``diameter`` px, and
    measured / true."""
    sizes = []
    for seed in seeds:
        found = measure([drawn_discs(diameter, size=size, seed=seed)])
        if isinstance(found, str):
            raise ValueError(f"drawn discs of {diameter} px: {found}")
        sizes.append(found[1])
    m = float(np.mean(sizes))
    return m, m / diameter


def bias_table(
    diameters: tuple[float, ...] = (2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0) + REFERENCE_PX,
    seeds: tuple[int, ...] = tuple(range(8)),
) -> list[tuple[float, float]]:
    """(measured px, measured / true relative to the ``REFERENCE_PX`` discs) for each diameter: the source of
    ``SAMPLING_BIAS``."""
    rows = [measured_ratio(d, seeds) for d in diameters]
    ref = float(np.mean([b for d, (_, b) in zip(diameters, rows, strict=True) if d in REFERENCE_PX]))
    return [(round(m, 3), round(b / ref, 3)) for m, b in rows]


if __name__ == "__main__":
    for row in bias_table():
        print(row)
