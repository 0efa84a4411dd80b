"""Stain normalisation as an SSL augmentation: views normalised toward the stains of random tiles of the cohort."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED, need_shared

from pathweak.ssl import SSLConfig
from pathweak.ssl.augment import pathology_view, stain_bank, stain_toward
from pathweak.stain import estimate
from pathweak.stain.reference import read_image

NCT = SHARED / "tiles" / "nct_crc_he_100k_samples"


def _angle(a, b):
    return np.degrees(np.arccos(np.clip(abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


def test_a_view_takes_the_stain_of_the_reference_drawn():
    need_shared(NCT)
    tum, norm, back = (read_image(next(NCT.glob(f"{k}-*.tif"))) for k in ("TUM", "MUS", "BACK"))
    bank = stain_bank([norm, back])
    assert len(bank) == 1  # glass has no stain to be a reference
    out = stain_toward(tum, np.random.default_rng(0), 1.0, bank)
    before, after = estimate(tum, "macenko").matrix, estimate(out, "macenko").matrix
    target = bank[0].matrix
    for k in range(2):  # the normalised tile's own stain vectors move onto the reference's
        assert _angle(after[k], target[k]) < 3 < _angle(before[k], target[k])
    assert np.array_equal(stain_toward(back, np.random.default_rng(0), 1.0, bank), back)  # glass: unchanged


def test_off_means_no_draw_and_the_same_views():
    need_shared(NCT)
    img = read_image(next(NCT.glob("TUM-*.tif")))
    cfg = SSLConfig.tiny("dino")
    assert cfg.stain_augment == 0.0
    bank = stain_bank([read_image(next(NCT.glob("MUS-*.tif")))])
    a = pathology_view(img, np.random.default_rng(3), 64, (0.5, 1.0), cfg, bank)
    b = pathology_view(img, np.random.default_rng(3), 64, (0.5, 1.0), cfg)
    assert np.array_equal(a, b)
    with pytest.raises(Exception, match="stain_augment is a probability"):
        SSLConfig.tiny("dino", stain_augment=1.5)


def test_views_of_a_cohort_use_a_bank_of_its_tiles(tmp_path):
    need_shared(NCT)
    from pathweak.encoders.base import IMAGENET_MEAN, IMAGENET_STD
    from pathweak.ssl.data import SSLViews, TileIndex
    from pathweak.tiling.images import images_to_store

    store = images_to_store(sorted(NCT.glob("*.tif")), tmp_path / "nct.zarr", 224, progress=False).path
    index = TileIndex([store])
    on = SSLViews(
        index, SSLConfig.tiny("mae", stain_augment=1.0, img_size=64), np.arange(9), IMAGENET_MEAN, IMAGENET_STD
    )
    assert len(on.bank) == 8  # every tile but the background one
    off = SSLViews(index, SSLConfig.tiny("mae", img_size=64), np.arange(9), IMAGENET_MEAN, IMAGENET_STD)
    assert off.bank == [] and len(on[0]) == 1 and tuple(on[0][0].shape) == (3, 64, 64)
