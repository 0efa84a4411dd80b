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


def test_one_blob_holding_most_of_the_area_is_still_a_giant():
    """The joined nuclei around a gland's lumen fill in to one wide convex blob holding most of the profile
    area. By area alone it would be the median and never count as a giant; with no profile weighing more
    than a tenth of the total in the giant filter's reference, it is dropped and the nuclei remain."""
    import cv2

    from pathweak.resolution.nuclei import without_giants

    region = _region_with([((30 + 45 * i, 30), (10, 10), 1.2) for i in range(5)])
    cv2.circle(region.h, (128, 160), 60, 0.9, thickness=10)  # a ring 10 px thick around a lumen
    prof = nucleus_profiles([region], sigma=0.0)
    assert len(prof) == 6 and prof.area.max() > 0.8 * prof.area.sum()  # the filled ring: ~130 px wide
    kept = without_giants(prof, 3.0)
    assert len(kept) == 5 and kept.diameter == pytest.approx([21] * 5, abs=1.5)
