"""Tissue detection on real tiles and slides, ROI masks from QuPath GeoJSON, bounded memory on huge slides."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import SHARED, need_shared
from PIL import Image

from pathweak.config import TissueSpec
from pathweak.io import open_slide
from pathweak.tissue import TISSUE_METHODS, detect_tissue, rasterize_polygons, segment_tissue

TILES = SHARED / "tiles" / "histolab_fixture_tiles"


def _tile_fraction(path) -> float:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    level = re.search(r"level(\d)", path.name)
    # histolab's fixture tiles are crops of 40x-ish slides at pyramid level 0, 1 or 2 (4x apart)
    px_um = 0.5 * 4 ** int(level.group(1)) if level else 0.5
    return float(detect_tissue(rgb, TissueSpec(), px_um=px_um).mean())


def test_separates_tissue_from_empty_and_pen_tiles():
    need_shared(TILES)
    tissue = sorted(TILES.glob("tissue-*.png"))
    empty = sorted(TILES.glob("no-tissue*.png")) + sorted(TILES.glob("almost-white-*.png"))
    assert len(tissue) == 6 and len(empty) == 8
    for p in tissue:
        assert _tile_fraction(p) > 0.5, p.name
    for p in empty:  # includes red and green pen marks and a thin line on glass
        assert _tile_fraction(p) < 0.05, p.name


def test_registry_lists_methods():
    assert {"otsu_saturation", "otsu_gray", "all"} <= set(TISSUE_METHODS.names())


def test_svs_mask_polygons_are_valid_and_inside(svs):
    with open_slide(svs) as s:
        m = segment_tissue(s)
        w, h = s.dimensions
    assert m.method == "otsu_saturation"
    assert 0.2 < m.tissue_fraction < 0.9
    assert m.polygons, "no tissue polygons"
    for poly in m.polygons:
        assert poly.is_valid and poly.area > 0
        x0, y0, x1, y1 = poly.bounds
        assert x0 >= -1 and y0 >= -1 and x1 <= w + 1 and y1 <= h + 1
    # the polygons cover what the mask covers
    area = sum(p.area for p in m.polygons)
    assert area == pytest.approx(m.tissue_fraction * w * h, rel=0.1)


def test_roi_from_qupath_annotations(svs, tmp_path):
    import json

    roi = tmp_path / "roi.geojson"
    ring = [[200, 300], [1200, 300], [1200, 1500], [200, 1500], [200, 300]]
    roi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "a", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}},
        {"type": "Feature", "id": "b", "geometry": {"type": "Polygon", "coordinates": [[[1500, 2000], [1600, 2000], [1600, 2100], [1500, 2000]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}}},
    ]}))
    with open_slide(svs) as s:
        m = segment_tissue(s, roi=roi, roi_classes=["Tumor"])
        w, h = s.dimensions
    assert m.method == "roi"
    frac = m.fraction_in_boxes(np.array([300, 1300, 1500]), np.array([400, 400, 2000]), np.array([600, 1600, 1600]), np.array([700, 700, 2100]))
    assert frac[0] == pytest.approx(1.0) and frac[1] == pytest.approx(0.0) and frac[2] == pytest.approx(0.0)
    assert m.mask.mean() == pytest.approx(1000 * 1200 / (w * h), rel=0.05)


def test_rasterize_sets_pixels_whose_centres_are_inside():
    from shapely.geometry import Polygon, box

    mask = rasterize_polygons([box(2, 2, 6, 6)], (10, 10), (1.0, 1.0))
    expected = np.zeros((10, 10), bool)
    expected[2:6, 2:6] = True
    assert (mask == expected).all()
    holed = Polygon([(0, 0), (40, 0), (40, 40), (0, 40)], [[(8, 8), (20, 8), (20, 20), (8, 20)]])
    mask = rasterize_polygons([holed], (12, 12), (4.0, 4.0))  # edges on pixel boundaries at downsample 4
    assert mask.sum() * 16 == holed.area and not mask[2:5, 2:5].any() and mask[:10, :10].sum() == 100 - 9


def test_rasterize_real_qupath_multipolygon():
    need_shared(SHARED / "qupath")
    from pathweak.io.qupath_geojson import read_qupath_geojson

    objs = read_qupath_geojson(SHARED / "qupath" / "qupath_test_polygon.geojson")
    assert len(objs) == 1 and objs[0].geometry.geom_type == "MultiPolygon"
    geom = objs[0].geometry
    x0, y0, x1, y1 = geom.bounds
    ds = (4.0, 4.0)
    mask = rasterize_polygons([geom], (int(y1 / 4) + 2, int(x1 / 4) + 2), ds)
    assert mask.sum() * 16 == pytest.approx(geom.area, rel=0.05)


def test_huge_slide_mask_without_loading_level0(tmp_path):
    """A 200k x 200k pyramid (level 0 sparse): segmentation reads a low level only, in bounded memory.

    The slide is written in one process and segmented in another, so the peak RSS measured is the
    segmentation's alone (writing 600k tiles with tifffile has its own, unrelated footprint).
    """
    path = tmp_path / "huge.tiff"
    writer = textwrap.dedent(
        f"""
        import numpy as np, tifffile
        H = W = 200_000
        def tiles(ds):
            h, w = H // ds, W // ds
            cx = cy = 96000 / ds; r = 57600 / ds
            first = True
            for ty in range(0, h, 256):
                for tx in range(0, w, 256):
                    nx, ny = min(max(cx, tx), tx + 256), min(max(cy, ty), ty + 256)
                    if ds < 16 or (nx - cx) ** 2 + (ny - cy) ** 2 > r * r:
                        yield np.full((256, 256, 3), 245, np.uint8) if first else None
                    else:
                        yy, xx = np.mgrid[ty:ty + 256, tx:tx + 256]
                        t = np.full((256, 256, 3), 245, np.uint8)
                        t[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (200, 120, 180)
                        yield t
                    first = False
        with tifffile.TiffWriter(r"{path}", bigtiff=True) as tif:
            for i, ds in enumerate([1, 4, 16, 64]):
                tif.write(tiles(ds), shape=(H // ds, W // ds, 3), dtype=np.uint8, tile=(256, 256), photometric="rgb",
                          compression="jpeg", resolution=(4e4 / ds, 4e4 / ds), resolutionunit="CENTIMETER",
                          subfiletype=0 if i == 0 else 1)
        """
    )
    out = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    reader = textwrap.dedent(
        f"""
        import re
        from pathweak.io import open_slide
        from pathweak.tissue import segment_tissue
        with open_slide(r"{path}") as s:
            assert s.dimensions == (200_000, 200_000)
            m = segment_tissue(s)
        disk = 3.141592653589793 * 57600 ** 2 / 200_000 / 200_000
        # VmHWM is this process's own peak (ru_maxrss would include the parent's peak at exec time)
        hwm_kb = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
        print(round(m.tissue_fraction, 4), round(disk, 4), hwm_kb // 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    frac, disk, rss_mb = map(float, out.stdout.split()[-3:])
    assert abs(frac - disk) < 0.02
    assert rss_mb < 1500, f"peak RSS {rss_mb} MB"  # level 0 alone would be 120 GB


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "pathml_small_HE_levels.tiff"])
@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_thumbnail_through_the_direct_tile_reader_equals_the_backends(name, backend):
    """The tiler reads the tissue thumbnail by decoding the level's TIFF tiles itself (faster than the
    backend's read_region); the thumbnail and the mask are the same either way."""
    from pathweak.io import TiffTileReader

    path = SHARED / "wsi" / name
    need_shared(path)
    with open_slide(path, backend=backend, mpp=0.5 if name.endswith(".tiff") else None) as slide:  # no mpp tag
        reader = TiffTileReader.for_slide(slide)
        assert reader is not None
        try:
            direct = segment_tissue(slide, reader=reader)
        finally:
            reader.close()
        plain = segment_tissue(slide)
    assert direct.thumbnail.shape == plain.thumbnail.shape
    assert np.abs(direct.thumbnail.astype(int) - plain.thumbnail.astype(int)).max() <= 2
    assert np.array_equal(direct.mask, plain.mask)
