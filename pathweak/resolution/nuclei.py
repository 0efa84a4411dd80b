"""Nucleus profiles on the haematoxylin channel: the size measurement behind the resolution estimate.

Every step is defined relative to the image's own scale, so that resampling an image by a factor
rescales the measured sizes by the same factor: no pixel-sized filters or area limits. Nuclei are the
connected regions of haematoxylin above Otsu's threshold (pooled over all regions of a slide) after a
Gaussian blur whose width follows the size being measured (``sigma`` is chosen by the caller: first
1 px, then a fixed fraction of the first-pass size), holes filled. Regions touching a border are dropped,
and so are non-convex ones (solidity < ``MIN_SOLIDITY``: clusters of touching nuclei, stroma strands).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

MIN_SOLIDITY = 0.85  # area / convex-hull area of a region counted as one nucleus
MIN_AREA_PX = 4  # smaller regions have no measurable shape (noise at any scale)
# In the giant filter's reference median no one profile weighs more than this share of the total area: a single
# blob (the joined nuclei around a gland's lumen, filled in; a clump) can otherwise hold most of the area, be the
# median itself and never count as a giant (GlaS benign glands: 150-190 px "nuclei"; docs/resolution.md, nuclei-v5).
GIANT_REFERENCE_CAP = 0.1


@dataclass
class Region:
    """One sampled image region: haematoxylin amount and tissue mask."""

    h: np.ndarray
    tissue: np.ndarray


@dataclass
class Profiles:
    """Equivalent diameters (px) and areas of the nucleus profiles found, with the block of each (4 x the
    region index + the quadrant of the region it lies in: the unit of the bootstrap)."""

    diameter: np.ndarray
    area: np.ndarray
    region: np.ndarray
    candidate_area: float = 0.0  # pixels of all regions above the threshold not touching a border
    darkness: np.ndarray | None = None  # mean haematoxylin inside the profile (natural-log OD)
    roundness: np.ndarray | None = None  # minor / major axis of the profile's second moments (1: a disc)
    level: float = 0.0  # the image's nuclear H level (Otsu's split at 1 px blur, natural-log OD; set by the estimator)

    def subset(self, keep: np.ndarray) -> Profiles:
        """The profiles where ``keep`` (bool mask or indices) is true."""
        pick = lambda v: None if v is None else v[keep]  # noqa: E731
        return replace(
            self,
            diameter=self.diameter[keep],
            area=self.area[keep],
            region=self.region[keep],
            darkness=pick(self.darkness),
            roundness=pick(self.roundness),
        )

    def scaled(self, k: float) -> Profiles:
        """The profiles of an image upsampled ``k`` x, in the original image's pixels."""
        return replace(
            self, diameter=self.diameter / k, area=self.area / k**2, candidate_area=self.candidate_area / k**2
        )

    @property
    def coverage(self) -> float:
        """The share of the candidate area that the accepted (convex, isolated) profiles hold."""
        return float(self.area.sum() / self.candidate_area) if self.candidate_area else 0.0

    def __len__(self) -> int:
        return len(self.diameter)


def rescale(regions: list[Region], factor: float) -> list[Region]:
    """The regions resampled by ``factor`` (> 1: upsampled, cubic; < 1: downsampled, area average).

    Upsampling coarse images before segmentation lets a nucleus of 2-3 px be measured in fractions of a
    pixel (its area is no longer a count of a handful of pixels), and keeps ``MIN_AREA_PX`` below a pixel
    of the original image; downsampling gives the cross-check its second, coarser view.
    """
    import cv2

    if factor == 1.0:
        return regions
    out = []
    for r in regions:
        h, w = r.h.shape
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        mode = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
        hh = np.maximum(cv2.resize(r.h, size, interpolation=mode), 0.0)
        tissue = cv2.resize(r.tissue.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5
        out.append(Region(hh, tissue))
    return out


def pooled_threshold(
    regions: list[Region], sigma: float, max_pixels: int = 400_000, blurred: list[np.ndarray] | None = None
) -> float:
    """Otsu's threshold (256-bin histogram) of the blurred haematoxylin over the tissue of all regions
    (``blurred``: the regions' haematoxylin already blurred by ``sigma``), on an even subsample of at most
    ``max_pixels`` of the tissue."""
    blurred = blurred if blurred is not None else [_blur(r.h, sigma) for r in regions]
    total = sum(b.size for b in blurred)
    step = max(1, int(np.sqrt(total / max_pixels)))  # every step-th row and column
    values = np.concatenate(
        [b[::step, ::step][r.tissue[::step, ::step]] for b, r in zip(blurred, regions, strict=True)]
    )
    if len(values) == 0 or float(values.max()) == float(values.min()):
        return float("inf")
    hist, edges = np.histogram(values, bins=256)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


def nucleus_profiles(regions: list[Region], sigma: float, features: bool = False) -> Profiles:
    """The nucleus profiles of every region at blur ``sigma`` (px): their size, and with ``features`` also
    their darkness (mean haematoxylin) and roundness (axis ratio of the second moments)."""
    import cv2

    blurred = [_blur(r.h, sigma) for r in regions]
    t = pooled_threshold(regions, sigma, blurred=blurred)
    diam, area, which, dark, rnd = [], [], [], [], []
    candidate = 0.0
    for i, (r, b) in enumerate(zip(regions, blurred, strict=True)):
        binary = _fill_holes(((b > t) & r.tissue).astype(np.uint8))
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
        if n <= 1:
            continue
        h, w = binary.shape
        x, y, bw, bh, px = (stats[:, k] for k in range(5))
        keep = (px >= MIN_AREA_PX) & (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
        keep[0] = False
        candidate += float(px[keep].sum())
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        accepted = []
        for c in contours:
            label = labels[c[0, 0, 1], c[0, 0, 0]]
            if not keep[label]:
                continue
            hull = cv2.contourArea(cv2.convexHull(c))
            # solidity of the pixel region: pixel count against the hull grown by half a pixel all round
            hull_px = hull + cv2.arcLength(cv2.convexHull(c), True) / 2 + 1
            if px[label] / hull_px >= MIN_SOLIDITY:
                accepted.append(label)
        if not accepted:
            continue
        lab = np.asarray(accepted)
        diam.append(2 * np.sqrt(px[lab] / np.pi))
        area.append(px[lab])
        if features:
            d, rn = _label_stats(labels, r.h, n)
            dark.append(d[lab])
            rnd.append(rn[lab])
        cx, cy = centroids[lab, 0], centroids[lab, 1]
        which.append(4 * i + 2 * (cy >= h / 2).astype(int) + (cx >= w / 2).astype(int))  # region and quadrant
    cat = lambda v, t: np.concatenate(v).astype(t) if v else np.zeros(0, t)  # noqa: E731
    darkness, roundness = (cat(dark, float), cat(rnd, float)) if features else (None, None)
    return Profiles(cat(diam, float), cat(area, float), cat(which, int), candidate, darkness, roundness)


def _label_stats(labels: np.ndarray, h: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per connected region (``labels`` 0..n-1): the mean haematoxylin and the axis ratio (minor / major,
    1 for a disc) of its second moments."""
    fg = np.flatnonzero(labels)  # the labelled pixels only: the background holds most of a region
    lab = labels.ravel()[fg]
    hv = h.ravel()[fg].astype(np.float64)
    yi, xi = np.divmod(fg, labels.shape[1])
    yv, xv = yi.astype(np.float64), xi.astype(np.float64)
    cnt = np.maximum(np.bincount(lab, minlength=n), 1).astype(np.float64)

    def mean(v: np.ndarray) -> np.ndarray:
        return np.bincount(lab, weights=v, minlength=n) / cnt

    mh, mx, my = mean(hv), mean(xv), mean(yv)
    cxx = mean(xv * xv) - mx * mx + 1 / 12  # + the variance of a pixel's own extent
    cyy = mean(yv * yv) - my * my + 1 / 12
    cxy = mean(xv * yv) - mx * my
    half = np.sqrt(np.maximum(((cxx - cyy) / 2) ** 2 + cxy * cxy, 0.0))
    major, minor = (cxx + cyy) / 2 + half, np.maximum((cxx + cyy) / 2 - half, 0.0)
    roundness = np.sqrt(minor / np.maximum(major, 1e-9))
    return mh, roundness


def without_giants(prof: Profiles, factor: float, rounds: int = 2) -> Profiles:
    """The profiles without the giants: those wider than ``factor`` x the area-weighted median diameter
    (recomputed ``rounds`` times), in which no profile weighs more than ``GIANT_REFERENCE_CAP`` of the total.
    Nucleus profiles of one tissue vary by 2-3x; a blob several times wider is a clump, a fold, a stain
    deposit or a gland's ring of nuclei filled in, and by its area alone it can move the median, or be it."""
    for _ in range(rounds):
        if len(prof) == 0:
            return prof
        weights = np.minimum(prof.area, GIANT_REFERENCE_CAP * prof.area.sum())
        keep = prof.diameter <= factor * weighted_median(prof.diameter, weights)
        if keep.all():
            break
        prof = prof.subset(keep)
    return prof


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The median of ``values`` weighted by ``weights`` (here: diameters by area, so the many tiny
    fragments count for little and the nuclei that hold most of the haematoxylin decide)."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


def detail_scale(gray_od: np.ndarray, tissue: np.ndarray) -> float:
    """The width (px) of the finest detail in the tissue: sqrt(E|grad|^2 / E|laplacian|^2).

    About 1 px for a sharp image (native or downsampled), larger for a blurred or upsampled one; an
    image whose finest detail is wider than the nuclei cannot show their size.
    """
    import cv2

    gx = cv2.Sobel(gray_od, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(gray_od, cv2.CV_32F, 0, 1, ksize=3) / 8
    lap = cv2.Laplacian(gray_od, cv2.CV_32F, ksize=1)
    inner = tissue.copy()
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    if not inner.any():
        return float("nan")
    g2 = float(np.mean((gx * gx + gy * gy)[inner]))
    l2 = float(np.mean((lap * lap)[inner]))
    return float(np.sqrt(g2 / l2)) if l2 > 0 else float("inf")


def _fill_holes(binary: np.ndarray) -> np.ndarray:
    """The 0/1 mask with its enclosed holes filled (pale nuclear centres), by flood-filling the outside."""
    import cv2

    h, w = binary.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = binary
    outside = pad.copy()
    cv2.floodFill(outside, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2)
    return (outside[1:-1, 1:-1] != 2).astype(np.uint8)


def _blur(h: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    if sigma <= 0.3:
        return h
    return cv2.GaussianBlur(h, (0, 0), sigma)
