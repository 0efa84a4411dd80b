"""The per-profile measurements behind the lymphocyte ruler (pathweak.resolution.nuclei): size, darkness and
roundness of drawn shapes whose true values are known."""

from __future__ import annotations

import numpy as np
import pytest

from pathweak.resolution.nuclei import Region, nucleus_profiles


def _region_with(shapes: list[tuple[tuple[int, int], tuple[int, int], float]]) -> Region:
    """A 256 px haematoxylin region holding filled ellipses ((x, y), (half-axes), amount) on a faint background."""
    import cv2

    h = np.full((256, 256), 0.05, np.float32)
    for centre, axes, amount in shapes:
        cv2.ellipse(h, centre, axes, 0, 0, 360, amount, thickness=-1)
    return Region(h, np.ones_like(h, bool))


def test_profiles_carry_darkness_and_roundness():
    region = _region_with([((60, 60), (12, 12), 1.2), ((180, 70), (24, 8), 0.5), ((90, 190), (10, 20), 0.8)])
    prof = nucleus_profiles([region], sigma=0.0, features=True)
    assert len(prof) == 3 and prof.darkness is not None and prof.roundness is not None
    order = np.argsort(prof.area)  # disc (r 12: 452 px), 24 x 8 ellipse (603 px), 10 x 20 ellipse (628 px)
    assert prof.darkness[order] == pytest.approx([1.2, 0.5, 0.8], abs=0.01)
    assert prof.roundness[order] == pytest.approx([1.0, 1 / 3, 0.5], abs=0.05)
    assert prof.diameter[order[0]] == pytest.approx(25, abs=1)  # the disc's equivalent diameter


def test_features_are_kept_through_subsets_and_rescaling():
    prof = nucleus_profiles([_region_with([((60, 60), (12, 12), 1.2), ((180, 70), (24, 8), 0.5)])], 0.0, True)
    small = prof.subset(prof.area < 500)
    assert len(small) == 1 and small.darkness == pytest.approx([1.2], abs=0.01)
    assert prof.scaled(2).roundness is prof.roundness and prof.scaled(2).diameter == pytest.approx(prof.diameter / 2)
    assert nucleus_profiles([_region_with([((60, 60), (12, 12), 1.2)])], 0.0).darkness is None  # only when asked


def test_a_ring_around_a_lumen_is_not_a_nucleus():
    """The joined nuclei around a gland's lumen fill in to one wide convex blob; it is dropped as mostly hole,
    while a disc with a small pale centre (under 20% of it) still counts, at its filled size."""
    import cv2

    region = _region_with([((60, 60), (12, 12), 1.2), ((170, 80), (14, 14), 1.0)])
    cv2.circle(region.h, (170, 80), 5, 0.05, thickness=-1)  # a pale centre: 13% of the disc
    cv2.circle(region.h, (110, 180), 50, 0.9, thickness=8)  # a ring 8 px thick around a 92 px lumen
    prof = nucleus_profiles([region], sigma=0.0)
    assert len(prof) == 2
    assert sorted(prof.diameter) == pytest.approx([25, 29], abs=1.5)  # the ring (~108 px) is gone
