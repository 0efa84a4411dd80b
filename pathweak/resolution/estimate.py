"""``estimate_mpp``: level-0 microns per pixel from the image content, with an uncertainty range.

Method (docs/resolution.md): sample a dozen level-0 regions from the tissue on the thumbnail, unmix
their haematoxylin (colour deconvolution), segment nucleus profiles twice (first with a 1 px blur, then
with a blur proportional to the first size found, on an upsampled copy where nuclei are small), drop
giant blobs, and read each profile against a physical size: ``LYMPHOCYTE_PROFILE_UM`` for the round
profiles of small lymphocytes, dark relative to the image's own nuclear haematoxylin (``nuclei-v5``),
``NUCLEUS_PROFILE_UM`` for the rest; the scale is the area-weighted median of size / diameter, with the
measurement's own inflation of small profiles (taken from drawn discs of known size, ``sampling.py``)
divided out (``nuclei-v4``). It answers "cannot tell" (``mpp`` None and a
``reason``) for non-H&E stains, too little tissue or too few nuclei, blurred or upsampled images, images
too coarse to show nuclei, ragged or fragmented nuclei, sizes that change under resampling, and ranges
too wide to tell 20x from 40x.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .nuclei import (
    Profiles,
    Region,
    detail_scale,
    nucleus_profiles,
    pooled_threshold,
    rescale,
    weighted_median,
    without_giants,
)
from .sampling import sampling_bias
from .stain import TISSUE_OD, StainCheck, check_he, haematoxylin, optical_density, total_od

if TYPE_CHECKING:
    from ..io.base import Slide

# Area-weighted median equivalent diameter of nucleus profiles in 4-5 um H&E sections, in microns. Nuclei
# of most cells are 5-10 um across (small lymphocytes ~7 um, epithelial and tumour nuclei 8-12 um); a
# section cuts a sphere of diameter D in profiles of mean diameter pi/4 D (Wicksell 1925), so ~7.5 um
# nuclei show pi/4 x 7.5 = 5.9 um profiles. See docs/resolution.md for the sources and the measured spread.
NUCLEUS_PROFILE_UM = 5.9
# Small lymphocytes are a second ruler with their own size: 6-8 um cells whose round, dense (heterochromatic)
# nucleus nearly fills them, ~5.6 um across; pi/4 x 5.6 = 4.4 um profiles. A profile is counted as one when it
# is round (second-moment axis ratio >= LYMPHOCYTE_MIN_ROUNDNESS) and dark (mean haematoxylin, natural-log OD
# through skimage's hed_from_rgb, >= LYMPHOCYTE_MIN_DARKNESS). The two rules were set on the GlaS train_* images
# only (docs/resolution.md, "The lymphocyte ruler").
LYMPHOCYTE_PROFILE_UM = 4.4
LYMPHOCYTE_MIN_ROUNDNESS = 0.7
# Dark = mean haematoxylin at least this many times the image's own nuclear level (Otsu's split of its H channel),
# so the rule follows the strength of the stain (``nuclei-v5``; v3/v4 used an absolute 0.9 OD, set on GlaS, which read
# the hyperchromatic tumour nuclei of other labs' darker slides as lymphocytes: MoNuSeg, docs/resolution.md).
LYMPHOCYTE_DARKNESS_RATIO = 2.0
FIRST_PASS_BLUR = 1.0  # px (0.5 keeps more nuclei apart in coarse images, but lets specks decide in fine ones)
SECOND_PASS_BLUR = 0.1  # blur sigma of the second pass, as a fraction of the first-pass diameter
# spread (log) of the median profile size between tissues, added to the sampling spread: lymphocyte-rich
# tissue shows ~4.5 um profiles, large tumour nuclei ~8 um, +-0.3 in log around 5.9 taken as +-2 sd
SYSTEMATIC_LOG_SD = 0.15
MIN_NUCLEI = 20
GIANT_FACTOR = 3.0  # profiles wider than 3x the area-weighted median are clumps, not nuclei
MIN_NUCLEUS_PX = 2.5  # nuclei narrower than this cannot be measured
MAX_DETAIL_PX = 2.6  # finest detail wider than this: blurred or upsampled, nuclei not resolved
MIN_TISSUE_PX = 2_000
# A ~95% range wider than high/low = 2 sqrt(2) cannot tell 20x from 40x (a 2x step, +-sqrt 2 either side): no answer
MAX_RANGE_FACTOR = 2 * math.sqrt(2)
# Nuclei are the most haematoxylin-dense structures: where Otsu's split of the haematoxylin lies below this
# (natural-log OD through skimage's hed_from_rgb), the "dense" part is mucin, debris or faint cytoplasm,
# not nuclei. Measured here: nuclear tissue at its own scale 0.27-2.0 (GlaS 0.27-0.62, CMU-1 1.18), NCT debris
# 0.09 and mucus 0.21-0.22; averaging lowers it on coarser images (GlaS 4x coarser: 0.18-0.30).
MIN_NUCLEAR_H = 0.25
FINE_PX = 8.0  # first-pass nuclei narrower than this are measured on an upsampled copy
MAX_UPSAMPLE = 4  # (a 2 px nucleus is measured on a 4x copy)
CHECK_MIN_PX = 8.0  # nuclei at least this wide are measured again at half the resolution ...
CHECK_FACTOR = 1.25  # ... and the two sizes must agree within this factor
CHECK_REGIONS = 4  # ... on at most this many regions
CHECK_MIN_NUCLEI = 10  # (the half-resolution view of a small image holds fewer measurable nuclei)
# Whole, isolated profiles must hold this share of the nuclear (above-threshold, off-border) area; below it
# the "nuclei" are specks left over from ragged or touching ones (NCT smooth muscle 2x finer: 3-6%).
MIN_COVERAGE = 0.08
MIN_MPP, MAX_MPP = 0.1, 10.0  # the pixel sizes of histology scans (80x ... 1x); outside: not nuclei
REGION_PX = 512
STAIN_PIXELS = 50_000  # tissue pixels (an even subsample over the regions) for the H&E check
N_REGIONS = 12
FIRST_PASS_REGIONS = 4  # the first pass looks at this many of them
WHOLE_READ_PX = 16_000_000  # a slide without pyramid levels up to this size is read once, whole


@dataclass(frozen=True)
class MppEstimate:
    """A resolution estimate. ``mpp`` (level-0 um/px) is None when the image cannot tell; ``reason`` says why.

    ``low``..``high`` is the ~95% range (sampling spread over regions plus the spread of nucleus sizes
    between tissues); ``nucleus_px`` the measured median nucleus profile diameter in level-0 pixels.
    """

    mpp: float | None
    low: float | None = None
    high: float | None = None
    reason: str | None = None
    n_nuclei: int = 0
    n_regions: int = 0
    nucleus_px: float | None = None
    he_fraction: float | None = None
    detail_px: float | None = None
    coverage: float | None = None
    lymphocyte_share: float | None = None
    sampling_factor: float | None = None  # the small-profile correction applied (1: none), sampling.py
    seconds: float = 0.0
    method: str = "nuclei-v5"

    @property
    def ok(self) -> bool:
        return self.mpp is not None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("mpp", "low", "high", "nucleus_px", "detail_px", "lymphocyte_share", "sampling_factor"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 4)
        d["seconds"] = round(self.seconds, 3)
        return d

    def describe(self) -> str:
        """One line, e.g. ``0.52 um/px (0.41-0.66, 812 nuclei)`` or ``cannot tell (no tissue found)``."""
        if self.mpp is None:
            return f"cannot tell ({self.reason})"
        return f"{self.mpp:.3g} um/px ({self.low:.3g}-{self.high:.3g}, {self.n_nuclei} nuclei)"


def estimate_mpp(
    source: Slide | str | Path | np.ndarray | list[np.ndarray],
    *,
    n_regions: int = N_REGIONS,
    region_px: int = REGION_PX,
    seed: int = 0,
) -> MppEstimate:
    """Estimate level-0 microns per pixel of an H&E slide (a :class:`~pathweak.io.Slide`, a slide path,
    an RGB uint8 image array, or a list of such arrays that share one pixel size, e.g. tiles of one
    slide or dataset, measured together) from the size of its nuclei; no model, no metadata used.

    Up to ``n_regions`` level-0 regions of ``region_px`` pixels are read where the thumbnail shows
    tissue (an array smaller than a region is used whole). A single 224 px tile rarely holds enough
    whole nuclei to tell; a few dozen tiles pooled usually do. The answer is an :class:`MppEstimate`;
    its ``mpp`` is None ("cannot tell") with a ``reason`` instead of a guess for non-H&E stains, too
    little tissue, blurred images or nuclei too small to measure.
    """
    started = time.perf_counter()
    if isinstance(source, np.ndarray):
        images = _split(_rgb(source), region_px)
    elif isinstance(source, (list, tuple)):
        images = [part for image in source for part in _split(_rgb(image), region_px)]
    elif isinstance(source, (str, Path)):
        from ..io import open_slide

        with open_slide(source) as slide:
            images = sample_regions(slide, n_regions, region_px, seed)
    else:
        images = sample_regions(source, n_regions, region_px, seed)
    result = estimate_from_regions(images)
    return MppEstimate(**{**asdict(result), "seconds": time.perf_counter() - started})


def estimate_from_regions(images: list[np.ndarray]) -> MppEstimate:
    """The estimate from RGB regions that all share the same (unknown) pixel size."""
    regions, detail, stain_px = [], [], []
    per_region = STAIN_PIXELS // max(1, len(images))
    for rgb in images:
        od = optical_density(rgb)
        gray = total_od(od)
        tissue = gray > TISSUE_OD
        n = int(np.count_nonzero(tissue))
        regions.append(Region(haematoxylin(od), tissue))
        if n > 100:
            detail.append((detail_scale(gray, tissue), n))
        px = od[tissue]
        stain_px.append(px[:: max(1, n // per_region)])
    n_tissue = int(sum(int(np.count_nonzero(r.tissue)) for r in regions))
    if n_tissue < MIN_TISSUE_PX:
        return MppEstimate(
            None, reason=f"too little tissue ({n_tissue} stained pixels, need {MIN_TISSUE_PX})", n_regions=len(images)
        )
    stain = _pooled_stain(stain_px)
    if not stain.is_he:
        return MppEstimate(
            None,
            reason=f"not an H&E stain: haematoxylin and eosin explain {stain.he_fraction:.0%} of "
            "the tissue's colour (need 30%)",
            n_regions=len(images),
            he_fraction=stain.he_fraction,
        )
    vals = np.array([d for d, _ in detail])
    wts = np.array([w for _, w in detail], float)
    detail_px = float(np.exp(np.average(np.log(vals), weights=wts))) if len(vals) else float("nan")
    base: dict[str, Any] = {"n_regions": len(images), "he_fraction": stain.he_fraction, "detail_px": detail_px}
    if detail_px > MAX_DETAIL_PX:
        return MppEstimate(
            None,
            reason=f"the image is blurred or upsampled (finest detail {detail_px:.1f} px wide): "
            "nuclei are not resolved",
            **base,
        )
    found = measure(regions)
    if isinstance(found, str):
        return MppEstimate(None, reason=found, **base)
    prof, d = found
    measured: dict[str, Any] = {"n_nuclei": len(prof), "nucleus_px": d, "coverage": round(prof.coverage, 3), **base}
    if d < MIN_NUCLEUS_PX:
        return MppEstimate(
            None,
            reason=f"nuclei are only {d:.1f} px wide: the image is too coarse to measure them "
            f"(coarser than ~{NUCLEUS_PROFILE_UM / MIN_NUCLEUS_PX:.1f} um/px)",
            **measured,
        )
    if not MIN_MPP <= NUCLEUS_PROFILE_UM / d <= MAX_MPP:
        return MppEstimate(
            None,
            reason=f"the profiles measured ({d:.1f} px) would mean {NUCLEUS_PROFILE_UM / d:.3g} um/px, outside "
            f"the {MIN_MPP:g}-{MAX_MPP:g} um/px of histology scans: they are not nuclei",
            **measured,
        )
    if prof.coverage < MIN_COVERAGE:
        return MppEstimate(
            None,
            reason=f"the whole, isolated profiles hold only {prof.coverage:.0%} of the nuclear area (need "
            f"{MIN_COVERAGE:.0%}): ragged, touching or fragmented nuclei",
            **measured,
        )
    if d >= CHECK_MIN_PX:
        step = max(1, math.ceil(len(regions) / CHECK_REGIONS))  # the check looks at a few regions
        half = measure(rescale(regions[::step], 0.5), CHECK_MIN_NUCLEI)
        same = (prof.region // 4) % step == 0
        d_same = weighted_median(prof.diameter[same], prof.area[same]) if same.any() else d
        # a half-resolution view too coarse to answer does not count against the estimate
        if not isinstance(half, str) and abs(math.log(2 * half[1] / d_same)) > math.log(CHECK_FACTOR):
            return MppEstimate(
                None,
                reason=f"the nucleus size is not stable under resampling ({d_same:.1f} px, and "
                f"{2 * half[1]:.1f} px at half the resolution): fragments or merged nuclei, not whole ones",
                **measured,
            )
    rulers = profile_rulers(prof)
    # the segmentation measures small profiles a little wide (drawn discs: 8% at 3 px, 1% at 8 px): divide it out
    factor = sampling_bias(d)
    measured["sampling_factor"] = round(factor, 3)
    mpp = math.exp(log_scale(prof, rulers)) * factor
    measured["lymphocyte_share"] = round(float(np.average(rulers < NUCLEUS_PROFILE_UM, weights=prof.area)), 3)
    sd = math.hypot(SYSTEMATIC_LOG_SD, _sampling_log_sd(prof, rulers))
    if math.exp(4 * sd) > MAX_RANGE_FACTOR:
        return MppEstimate(
            None,
            reason=f"the nucleus sizes are inconsistent (range {mpp * math.exp(-2 * sd):.3g}-"
            f"{mpp * math.exp(2 * sd):.3g} um/px, wider than {MAX_RANGE_FACTOR:.2g}x, which cannot tell 20x "
            "from 40x): too few nuclei, or sizes that disagree between regions",
            **measured,
        )
    return MppEstimate(mpp, low=mpp * math.exp(-2 * sd), high=mpp * math.exp(2 * sd), **measured)


def profile_rulers(prof: Profiles) -> np.ndarray:
    """The physical size (um) each profile is taken to have: ``LYMPHOCYTE_PROFILE_UM`` for the round profiles
    at least ``LYMPHOCYTE_DARKNESS_RATIO`` x the image's nuclear level dark (small lymphocytes),
    ``NUCLEUS_PROFILE_UM`` for the rest."""
    assert prof.roundness is not None and prof.darkness is not None
    dark = prof.darkness >= LYMPHOCYTE_DARKNESS_RATIO * prof.level
    lymph = (prof.roundness >= LYMPHOCYTE_MIN_ROUNDNESS) & dark
    return np.where(lymph, LYMPHOCYTE_PROFILE_UM, NUCLEUS_PROFILE_UM)


def log_scale(prof: Profiles, rulers: np.ndarray) -> float:
    """log um/px: the area-weighted median over the profiles of log(ruler / diameter), each profile read
    against its own class's physical size."""
    return weighted_median(np.log(rulers / prof.diameter), prof.area)


def measure(regions: list[Region], min_nuclei: int = MIN_NUCLEI) -> tuple[Profiles, float] | str:
    """The nucleus profiles of the regions and their area-weighted median diameter (px), or why not.

    Two passes: blur ``FIRST_PASS_BLUR`` px, then ``SECOND_PASS_BLUR`` x the first size. Where the first size is under
    ``FINE_PX`` the regions are upsampled (at most ``MAX_UPSAMPLE`` x) before the second pass, and the
    sizes scaled back, so that small nuclei are measured to a fraction of a pixel.
    """
    level = pooled_threshold(regions, 1.0)
    if level < MIN_NUCLEAR_H:
        return (
            f"no haematoxylin-dense nuclei (Otsu level {level:.2f}, need {MIN_NUCLEAR_H}): "
            "mucin, debris or faint staining"
        )
    step = max(1, math.ceil(len(regions) / FIRST_PASS_REGIONS))  # the first pass only sets the blur
    first = without_giants(nucleus_profiles(regions[::step], FIRST_PASS_BLUR), GIANT_FACTOR)
    if len(first) < min_nuclei and step > 1:
        first = without_giants(nucleus_profiles(regions, FIRST_PASS_BLUR), GIANT_FACTOR)
    if len(first) < min_nuclei:
        return f"too few nuclei ({len(first)}, need {min_nuclei})"
    d1 = weighted_median(first.diameter, first.area)
    k = int(min(MAX_UPSAMPLE, max(1, math.ceil(FINE_PX / d1))))
    if k > 1:
        regions = rescale(regions, k)
    prof = without_giants(nucleus_profiles(regions, SECOND_PASS_BLUR * d1 * k, features=True), GIANT_FACTOR)
    if len(prof) < min_nuclei:
        return f"too few nuclei ({len(prof)}, need {min_nuclei})"
    prof = replace(prof.scaled(k), level=level)
    return prof, weighted_median(prof.diameter, prof.area)


def sample_regions(
    slide: Slide, n_regions: int = N_REGIONS, region_px: int = REGION_PX, seed: int = 0
) -> list[np.ndarray]:
    """Up to ``n_regions`` level-0 RGB regions of ``region_px`` pixels where the thumbnail shows tissue,
    drawn at random (``seed``) among the boxes most covered by tissue; the whole level 0 when it is smaller."""
    import cv2

    w0, h0 = slide.dimensions
    if w0 <= region_px * 2 and h0 <= region_px * 2:
        return _split(slide.read_region((0, 0), 0, (w0, h0)), region_px)
    full = None
    if max(slide.level_downsamples) < 4 and w0 * h0 <= WHOLE_READ_PX:
        # no pyramid level to take a thumbnail from: the thumbnail would read level 0 anyway, so read it once
        full = slide.read_region((0, 0), 0, (w0, h0))
        scale = min(1.0, 1024 / max(w0, h0))
        size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
        thumb = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
    else:
        thumb = slide.get_thumbnail(1024)
    tissue = (total_od(optical_density(thumb)) > TISSUE_OD).astype(np.float32)
    nx, ny = max(1, w0 // region_px), max(1, h0 // region_px)
    cover = cv2.resize(
        tissue[: tissue.shape[0] * ny * region_px // h0 or None, : tissue.shape[1] * nx * region_px // w0 or None],
        (nx, ny),
        interpolation=cv2.INTER_AREA,
    )
    order = np.argsort(-cover.ravel(), kind="stable")
    good = order[cover.ravel()[order] >= 0.5]
    if len(good) < n_regions:
        good = order[cover.ravel()[order] > 0.05][: max(n_regions, len(good))]
    rng = np.random.default_rng(seed)
    pick: Any = rng.choice(good, size=min(n_regions, len(good)), replace=False) if len(good) else []
    boxes = [(int(i % nx) * region_px, int(i // nx) * region_px) for i in sorted(pick)]
    if full is not None:
        return [np.ascontiguousarray(full[y : y + region_px, x : x + region_px]) for x, y in boxes]
    return [slide.read_region((x, y), 0, (region_px, region_px)) for x, y in boxes]


def _split(rgb: np.ndarray, region_px: int) -> list[np.ndarray]:
    """An image as one region, or as tiles of about ``region_px`` when it is much larger."""
    h, w = rgb.shape[:2]
    if h <= 2 * region_px and w <= 2 * region_px:
        return [rgb]
    return [
        rgb[y : y + region_px, x : x + region_px]
        for y in range(0, h - region_px // 2, region_px)
        for x in range(0, w - region_px // 2, region_px)
    ]


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


def _pooled_stain(stain_px: list[np.ndarray]) -> StainCheck:
    od = np.concatenate(stain_px)
    return check_he(od[:, None, :], np.ones((len(od), 1), bool))


def _sampling_log_sd(prof: Profiles, rulers: np.ndarray, n_boot: int = 200) -> float:
    """Bootstrap spread (log) of the scale (:func:`log_scale`) over blocks (region quadrants), else over
    nuclei when fewer than 4 blocks hold nuclei."""
    rng = np.random.default_rng(0)
    groups = np.unique(prof.region)
    members = [np.flatnonzero(prof.region == g) for g in groups]
    logs = []
    for _ in range(n_boot):
        if len(groups) >= 4:
            idx = np.concatenate([members[k] for k in rng.integers(0, len(groups), len(groups))])
        else:
            idx = rng.integers(0, len(prof), len(prof))
        logs.append(weighted_median(np.log(rulers[idx] / prof.diameter[idx]), prof.area[idx]))
    return float(np.std(logs))
