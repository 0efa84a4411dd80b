"""Level choice and tile grid geometry."""

from __future__ import annotations

import numpy as np
import pytest

from pathweak.config import TileSpec
from pathweak.errors import ConfigError, MissingMppError
from pathweak.io import open_slide
from pathweak.tiling import choose_level, tile_grid
from pathweak.tissue import segment_tissue


def test_level_choice_on_a_real_pyramid(pyramid_tiff):
    # levels: 300x250, 150x125, 75x62, 37x31 -> with mpp 0.5: 0.5, 1.0, 2.0, 4.05 um/px
    with open_slide(pyramid_tiff, mpp=0.5) as s:
        exact = choose_level(s, TileSpec(target_mpp=1.0, patch_px=32))
        assert exact.level == 1 and exact.read_px == 32 and not exact.resize
        assert exact.achieved_mpp == pytest.approx((1.0, 1.0))
        between = choose_level(s, TileSpec(target_mpp=1.5, patch_px=32))
        assert between.level == 1 and between.resize and between.read_px == 48
        assert between.achieved_mpp == pytest.approx((1.5, 1.5))
        near = choose_level(s, TileSpec(target_mpp=1.95, patch_px=32))  # 2.0 is within 10 %, at most 10 % above
        assert near.level == 2 and not near.resize
        coarse = choose_level(s, TileSpec(target_mpp=8.0, patch_px=16))
        assert coarse.level == 3 and coarse.resize
        with pytest.raises(ConfigError, match="finer than the slide's level 0"):
            choose_level(s, TileSpec(target_mpp=0.25))
    with open_slide(pyramid_tiff) as s, pytest.raises(MissingMppError, match="Pass --mpp"):
        choose_level(s, TileSpec())


def test_grid_coordinates_lie_in_tissue(svs):
    with open_slide(svs) as s:
        mask = segment_tissue(s)
        spec = TileSpec(target_mpp=0.5, patch_px=224, min_tissue=0.5)
        grid = tile_grid(s, mask, spec)
        w, h = s.dimensions
    assert grid.coords.dtype == np.int64 and grid.coords.shape == (len(grid), 2)
    assert len(grid) > 20
    assert (grid.coords >= 0).all() and (grid.coords[:, 0] + 224 <= w).all() and (grid.coords[:, 1] + 224 <= h).all()
    assert (grid.tissue_fraction >= 0.5).all()
    again = mask.fraction_in_boxes(grid.coords[:, 0], grid.coords[:, 1], grid.coords[:, 0] + 224, grid.coords[:, 1] + 224)
    assert np.allclose(again, grid.tissue_fraction)
    # every tile centre is on tissue in the mask
    cx = ((grid.coords[:, 0] + 112) / mask.downsample[0]).astype(int)
    cy = ((grid.coords[:, 1] + 112) / mask.downsample[1]).astype(int)
    assert mask.mask[cy, cx].mean() > 0.9
    # grid_index and coords agree; coordinates are unique
    assert np.array_equal(grid.grid_index[:, ::-1] * 224, grid.coords)
    assert len(np.unique(grid.coords, axis=0)) == len(grid)


def test_overlap_halves_the_stride(svs):
    with open_slide(svs) as s:
        mask = segment_tissue(s)
        a = tile_grid(s, mask, TileSpec(patch_px=224, overlap_px=0, min_tissue=0))
        b = tile_grid(s, mask, TileSpec(patch_px=224, overlap_px=112, min_tissue=0))
    assert a.grid_shape == (2967 // 224, 2220 // 224)
    assert b.grid_shape == ((2967 - 224) // 112 + 1, (2220 - 224) // 112 + 1)
    assert set(np.diff(np.unique(b.coords[:, 0]))) == {112}


def test_bad_specs_are_clear():
    with pytest.raises(ConfigError, match="overlap"):
        TileSpec(patch_px=224, overlap_px=224)
    with pytest.raises(ConfigError, match="target mpp"):
        TileSpec(target_mpp=0)
