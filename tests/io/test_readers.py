"""Slide readers on the real SVS, pyramidal TIFF and DICOM-WSI files."""

from __future__ import annotations

import numpy as np
import pytest

from pathweak.errors import ConfigError
from pathweak.io import TiffTileReader, open_slide


def test_svs_metadata_through_openslide(svs):
    with open_slide(svs) as s:
        assert s.backend == "openslide"
        assert s.vendor == "aperio"
        assert s.dimensions == (2220, 2967)
        assert s.level_count == 1 and s.level_downsamples == (1.0,)
        assert s.mpp == pytest.approx((0.499, 0.499))
        assert s.mpp_source == "metadata"
        assert s.objective_power == 20
        assert set(s.associated_image_names) == {"label", "macro", "thumbnail"}
        label = s.associated_image("label")
        assert label.ndim == 3 and label.shape[2] == 3 and label.dtype == np.uint8


def test_auto_uses_openslide_and_tiffslide_agrees(svs, pyramid_tiff):
    for path in (svs, pyramid_tiff):
        with open_slide(path) as o, open_slide(path, backend="tiffslide") as t:
            assert o.backend == "openslide" and t.backend == "tiffslide"
            assert o.level_dimensions == t.level_dimensions
            for level in range(o.level_count):
                w, h = o.level_dimensions[level]
                a = o.read_region((0, 0), level, (min(w, 400), min(h, 300)))
                b = t.read_region((0, 0), level, (min(w, 400), min(h, 300)))
                assert a.shape == b.shape and a.dtype == np.uint8
                # identical decoders here; allow a little for builds whose JPEG decoders differ
                assert np.abs(a.astype(int) - b).max() <= 2


def test_region_outside_slide_is_white_in_both_backends(svs):
    for backend in ("openslide", "tiffslide"):
        with open_slide(svs, backend=backend) as s:
            region = s.read_region((2100, 2900), 0, (200, 100))
            assert region.shape == (100, 200, 3)
            assert (region[:, 120:] == 255).all() and (region[67:, :] == 255).all()


def test_dicom_wsi_opens_with_openslide(dicom):
    with open_slide(dicom) as s:
        assert s.backend == "openslide" and s.vendor == "dicom"
        assert s.dimensions == (1000, 2459)
        assert s.mpp == pytest.approx((2.004, 2.004))
        region = s.read_region((100, 100), 0, (256, 256))
        assert region.shape == (256, 256, 3) and region.std() > 1


def test_bogus_72dpi_resolution_is_not_trusted(pyramid_tiff):
    with open_slide(pyramid_tiff) as s:
        assert s.info()["metadata_mpp_raw"][0] == pytest.approx(352.858, rel=1e-4)
        assert s.mpp is None and s.mpp_source is None
    with open_slide(pyramid_tiff, mpp=0.5) as s:
        assert s.mpp == (0.5, 0.5) and s.mpp_source == "user"
        assert s.level_mpp(1) == pytest.approx((1.0, 1.0))


def test_thumbnail_and_context_manager(svs):
    s = open_slide(svs)
    with s:
        thumb = s.get_thumbnail(256)
        assert max(thumb.shape[:2]) == 256 and thumb.shape[2] == 3
        # the thumbnail is a shrunken slide: mean colour close to the full-resolution mean
        full = s.read_region((0, 0), 0, s.dimensions)
        assert np.abs(thumb.reshape(-1, 3).mean(0) - full.reshape(-1, 3).mean(0)).max() < 3
    with pytest.raises(ValueError, match="closed"):
        s.read_region((0, 0), 0, (10, 10))


def test_unknown_backend_is_a_clear_error(svs):
    with pytest.raises(ConfigError, match="unknown slide backend 'bioformats'"):
        open_slide(svs, backend="bioformats")


def test_direct_tile_reader_matches_openslide(svs, pyramid_tiff):
    """The tiler's direct decoder returns OpenSlide's pixels exactly (integer-downsample levels)."""
    for path in (svs, pyramid_tiff):
        with open_slide(path) as s:
            reader = TiffTileReader.for_slide(s)
            assert reader is not None
            with reader:
                for level, ds in enumerate(s.level_downsamples):
                    if ds != int(ds):
                        continue
                    w, h = s.level_dimensions[level]
                    got = reader.read(level, 3, 5, w - 1, h - 2)
                    want = s.read_region((3 * int(ds), 5 * int(ds)), level, (w - 1, h - 2))
                    assert np.array_equal(got, want)


def test_direct_tile_reader_declines_dicom(dicom):
    with open_slide(dicom) as s:
        assert TiffTileReader.for_slide(s) is None
