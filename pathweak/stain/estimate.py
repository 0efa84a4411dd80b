"""Estimating a slide's stain (once, from a sample of its pixels): Macenko's and Vahadane's stain vectors with
their concentration scales, and Reinhard's L*a*b* statistics.

Conventions follow the libraries the results are checked against (tests/stain): torchstain for Macenko and
Reinhard, torch-staintools for Vahadane (see the package docstring). Everything here is numpy; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .lab import rgb_to_lab

METHODS = ("macenko", "vahadane", "reinhard")

MACENKO_IO = 240.0  # transmitted light intensity (torchstain)
MACENKO_ALPHA = 1.0  # angle percentile
MACENKO_BETA = 0.15  # OD below which a channel is transparent (glass)
VAHADANE_LUMINOSITY = 0.8  # L* (0-1) below which a pixel is tissue (torch-staintools, StainTools)
VAHADANE_REGULARIZER = 0.01  # L1 weight of the codes (torch-staintools' default)
VAHADANE_MAX_C = 95  # percentile of the (non-negative) concentrations that scales them (torch-staintools)
MIN_PIXELS = 100  # stained pixels needed for an estimate

# Ruifrok & Johnston's H, E and DAB optical-density vectors (scikit-image's rgb_from_hed rows), normalised
RUIFROK = {
    "haematoxylin": np.array([0.65, 0.70, 0.29]),
    "eosin": np.array([0.07, 0.99, 0.11]),
    "dab": np.array([0.27, 0.57, 0.78]),
}
RUIFROK = {k: v / np.linalg.norm(v) for k, v in RUIFROK.items()}


@dataclass(frozen=True)
class SlideStain:
    """One image's or slide's stain: ``matrix`` (2, 3) rows haematoxylin then eosin (unit OD vectors) and
    ``max_c`` (2,) their 99th (macenko) or 95th (vahadane) percentile concentrations, or ``means``/``stds`` (3,) of
    L*a*b* with L in 0-100 and a, b centred on 0 (reinhard). ``pixels``: how many pixels it was estimated on."""

    method: str
    matrix: np.ndarray | None = None
    max_c: np.ndarray | None = None
    means: np.ndarray | None = None
    stds: np.ndarray | None = None
    pixels: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (recorded in FeatureStores and reference files)."""
        out: dict[str, Any] = {"method": self.method, "pixels": int(self.pixels)}
        for name in ("matrix", "max_c", "means", "stds"):
            value = getattr(self, name)
            if value is not None:
                out[name] = np.asarray(value, np.float64).round(8).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlideStain:
        def arr(name: str) -> np.ndarray | None:
            return np.asarray(data[name], np.float64) if name in data else None

        return cls(
            method=str(data["method"]),
            matrix=arr("matrix"),
            max_c=arr("max_c"),
            means=arr("means"),
            stds=arr("stds"),
            pixels=int(data.get("pixels", 0)),
        )


def estimate(pixels: np.ndarray, method: str, *, where: str | None = None, seed: int = 0) -> SlideStain:
    """The stain of ``pixels`` (uint8 RGB, any shape ending in 3: one image, a stack of tiles or a pixel list)
    by ``method``. Too few stained pixels (a blank image) is a clear error naming ``where``."""
    px = np.ascontiguousarray(np.asarray(pixels)[..., :3]).reshape(-1, 3)
    if px.dtype != np.uint8:
        raise ConfigError(f"stain estimation needs uint8 RGB pixels, got {px.dtype}", path=where)
    if method == "macenko":
        return _macenko(px, where)
    if method == "vahadane":
        return _vahadane(px, where, seed)
    if method == "reinhard":
        return _reinhard(px)
    raise ConfigError(f"unknown stain normalisation {method!r}", fix=f"use one of {', '.join(METHODS)}")


def _too_few(n: int, where: str | None) -> ConfigError:
    return ConfigError(
        f"only {n} stained pixels to estimate the stain from (at least {MIN_PIXELS} needed)",
        path=where,
        fix="use an image or tiles with tissue in them",
    )


def _macenko(px: np.ndarray, where: str | None) -> SlideStain:
    od = -np.log((px.astype(np.float64) + 1.0) / MACENKO_IO)
    odhat = od[~np.any(od < MACENKO_BETA, axis=1)]
    if len(odhat) < MIN_PIXELS:
        raise _too_few(len(odhat), where)
    _, eig = np.linalg.eigh(np.cov(odhat.T))
    plane = eig[:, 1:3]
    that = odhat @ plane
    phi = np.arctan2(that[:, 1], that[:, 0])
    lo, hi = np.percentile(phi, MACENKO_ALPHA), np.percentile(phi, 100 - MACENKO_ALPHA)
    v_min = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_max = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v_min, v_max] if v_min[0] > v_max[0] else [v_max, v_min])  # haematoxylin first
    conc = od @ np.linalg.pinv(he)  # (n, 2): least squares of every pixel on the two vectors
    max_c = np.percentile(conc, 99, axis=0)
    return SlideStain("macenko", matrix=he, max_c=max_c, pixels=len(px))


def vahadane_tissue(px: np.ndarray) -> np.ndarray:
    """Tissue pixels for Vahadane (torch-staintools' rule): L* (0-1) above 0 and below 0.8."""
    lum = rgb_to_lab(px.astype(np.float32) / np.float32(255.0))[:, 0] / 255.0
    return (lum > 0) & (lum < VAHADANE_LUMINOSITY)


def vahadane_od(px: np.ndarray) -> np.ndarray:
    """Optical density as torch-staintools computes it: -log(I / 255), I at least 1."""
    return -np.log(np.maximum(px, 1).astype(np.float64) / 255.0)


def _vahadane(px: np.ndarray, where: str | None, seed: int, max_pixels: int = 20_000) -> SlideStain:
    rng = np.random.default_rng(seed)
    candidates = px if len(px) <= 4 * max_pixels else px[rng.choice(len(px), 4 * max_pixels, replace=False)]
    od_tissue = vahadane_od(candidates[vahadane_tissue(candidates)])
    if len(od_tissue) < MIN_PIXELS:
        raise _too_few(len(od_tissue), where)
    if len(od_tissue) > max_pixels:  # a random subsample: the two vectors need thousands of pixels, not millions
        od_tissue = od_tissue[rng.choice(len(od_tissue), max_pixels, replace=False)]
    matrix = sparse_stain_dictionary(od_tissue)
    conc = np.maximum(vahadane_od(px) @ np.linalg.pinv(matrix), 0)  # every pixel: least squares, kept >= 0
    return SlideStain("vahadane", matrix=matrix, max_c=np.percentile(conc, VAHADANE_MAX_C, axis=0), pixels=len(px))


def sparse_stain_dictionary(
    od: np.ndarray, alpha: float = VAHADANE_REGULARIZER, steps: int = 60, inner: int = 50
) -> np.ndarray:
    """Vahadane's stain vectors: ``od`` (n, 3) ~ codes (n, 2) @ D (2, 3) with D and the codes non-negative,
    D's rows of unit length and an L1 penalty ``alpha`` on the codes (mean squared error per pixel). Codes
    by FISTA, then D by one block-coordinate step per stain, ``steps`` times (the scheme of torch-staintools
    and pytorch-lasso); starting from Ruifrok & Johnston's H and E, so the result is deterministic.
    Haematoxylin (the vector absorbing more red) comes first."""
    d = np.stack([RUIFROK["haematoxylin"], RUIFROK["eosin"]])  # (2, 3)
    code = np.maximum(od @ d.T, 0)
    for _ in range(steps):
        gram = d @ d.T
        lr = 1.0 / max(np.linalg.eigvalsh(gram).max(), 1e-12)
        xd = od @ d.T
        z, y, t = code, code.copy(), 1.0
        for _ in range(inner):  # FISTA on 0.5 ||x - z d||^2 + alpha n ||z||_1 / n per pixel, z >= 0
            z_next = np.maximum(y - lr * (y @ gram - xd) - lr * alpha, 0.0)
            t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
            y = z_next + (t - 1) / t_next * (z_next - z)
            z, t = z_next, t_next
        code = z
        resid = od - code @ d
        for k in range(2):  # block coordinate descent on each stain vector, kept non-negative, unit length
            zk = code[:, k]
            new = np.maximum(resid.T @ zk + d[k] * (zk @ zk), 0.0)
            norm = np.linalg.norm(new)
            if norm < 1e-7:  # a dead atom: keep the old one (deterministic, unlike a random restart)
                continue
            new = new / norm
            resid -= np.outer(zk, new - d[k])
            d[k] = new
    return d[np.argsort(-d[:, 0], kind="stable")]


def _reinhard(px: np.ndarray) -> SlideStain:
    lab = rgb_to_lab(px.astype(np.float32) / 255.0)
    split = lab.astype(np.float32) - np.array([0.0, 128.0, 128.0], np.float32)
    split[:, 0] /= np.float32(2.55)
    split64 = split.astype(np.float64)  # float32 sums along the pixel axis would drift by ~1e-4
    return SlideStain("reinhard", means=split64.mean(0), stds=split64.std(0), pixels=len(px))


def he_angles(stain: SlideStain) -> dict[str, float]:
    """Degrees between the estimated stain vectors and Ruifrok & Johnston's: ``h`` (first vector to
    haematoxylin), ``e`` (second to eosin) and ``dab`` (second to DAB). On H&E ``e`` is small; on an IHC
    image the second vector is DAB's brown and ``dab`` is the smaller (docs/stain.md)."""
    if stain.matrix is None:
        return {}

    def angle(v: np.ndarray, ref: np.ndarray) -> float:
        return float(np.degrees(np.arccos(np.clip(abs(v @ ref) / np.linalg.norm(v), -1, 1))))

    h, e = stain.matrix
    return {"h": angle(h, RUIFROK["haematoxylin"]), "e": angle(e, RUIFROK["eosin"]), "dab": angle(e, RUIFROK["dab"])}
