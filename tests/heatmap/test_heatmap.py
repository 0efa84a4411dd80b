"""Heatmaps on a real slide: stitched pixels equal the tile scores, overlaps average, the TIFF overlay
opens with the slide's extent and resolution, the PNG has a colour bar; score tables and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SVS, need_shared

from pathweak.config import TileSpec
from pathweak.errors import ConfigError, StoreError, UnsupportedSlideError
from pathweak.heatmap import (
    ExportOptions,
    export,
    load_scores,
    read_results,
    read_scores_csv,
    stitch,
    tile_scores,
    write_results,
    write_scores_csv,
)
from pathweak.heatmap.colormap import lut, lut_index
from pathweak.tiling import TileStore, tile_slide


@pytest.fixture(scope="module")
def cmu_store(tmp_path_factory) -> TileStore:
    need_shared(SVS)
    result = tile_slide(SVS, tmp_path_factory.mktemp("tiles"), progress=False)
    return TileStore.open(result.store)


@pytest.fixture(scope="module")
def cmu_overlap_store(tmp_path_factory) -> TileStore:
    need_shared(SVS)
    result = tile_slide(SVS, tmp_path_factory.mktemp("tiles_ov"), TileSpec(overlap_px=112), progress=False)
    return TileStore.open(result.store)


def _scores(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"attention": rng.random(n).astype(np.float32), "logit": rng.normal(0, 3, n).astype(np.float32)}


def test_pixel_equals_the_score_of_the_tile_under_it(cmu_store):
    ts = tile_scores(cmu_store, _scores(len(cmu_store)))
    assert ts.extent == (224.0, 224.0) and ts.slide_size == (2220, 2967)
    x0, y0, x1, y1 = ts.boxes()
    for name in ("attention", "logit"):
        full = stitch(ts, name, downsample=1, mask_tissue=False)
        assert full.values.shape == (2967, 2220) and full.downsample == (1.0, 1.0)
        for i in range(len(x0)):
            block = full.values[int(y0[i]) : int(y1[i]), int(x0[i]) : int(x1[i])]
            assert (block == ts.scores[name][i]).all()
        assert np.isnan(full.values).sum() == full.values.size - len(x0) * 224 * 224
    thumb = stitch(ts, "attention", mask_tissue=False)  # default: the thumbnail's scale
    assert thumb.values.shape == cmu_store.thumbnail.shape[:2]
    for i, (x, y) in enumerate(ts.coords):
        assert thumb.values[thumb.pixel_at(x + 112, y + 112)] == ts.scores["attention"][i]


def test_tissue_mask_blanks_only_glass(cmu_store):
    ts = tile_scores(cmu_store, _scores(len(cmu_store)))
    plain = stitch(ts, "attention", mask_tissue=False)
    masked = stitch(ts, "attention")
    kept = np.isfinite(masked.values)
    assert 0 < kept.sum() < np.isfinite(plain.values).sum()
    assert (masked.values[kept] == plain.values[kept]).all()
    mask = cmu_store.tissue_mask.astype(bool)  # same scale as the default raster
    assert not kept[~mask].any()


def test_overlapping_tiles_average(cmu_overlap_store):
    store = cmu_overlap_store
    ts = tile_scores(store, _scores(len(store), seed=1))
    assert store.attrs["tile"]["stride_level_px"] == 112
    hm = stitch(ts, "attention", downsample=8, mask_tissue=False)
    x0, y0, x1, y1 = ts.boxes()
    dx, dy = hm.downsample
    rng = np.random.default_rng(2)
    rows, cols = rng.integers(0, hm.values.shape[0], 400), rng.integers(0, hm.values.shape[1], 400)
    several = 0
    for r, c in zip(rows, cols, strict=True):
        cx, cy = (c + 0.5) * dx, (r + 0.5) * dy
        under = (x0 <= cx) & (cx < x1) & (y0 <= cy) & (cy < y1)
        if not under.any():
            assert np.isnan(hm.values[r, c])
            continue
        several += under.sum() > 1
        assert hm.values[r, c] == pytest.approx(ts.scores["attention"][under].mean(), rel=1e-6)
    assert several > 20


def test_coarse_rasters_keep_every_tile_and_smoothing_stays_in_range(cmu_store):
    ts = tile_scores(cmu_store, _scores(len(cmu_store)))
    coarse = stitch(ts, "attention", downsample=600, mask_tissue=False)  # pixels larger than tiles
    assert coarse.values.shape == (5, 4)
    finite = coarse.values[np.isfinite(coarse.values)]
    lo, hi = ts.scores["attention"].min(), ts.scores["attention"].max()
    assert finite.size >= 4 and ((finite >= lo) & (finite <= hi)).all()
    const = tile_scores(cmu_store, {"c": np.full(len(cmu_store), 0.25, np.float32)})
    assert np.nanmax(np.abs(stitch(const, "c", downsample=600).values - 0.25)) < 1e-6
    sharp = stitch(ts, "attention", mask_tissue=False)
    smooth = stitch(ts, "attention", smooth=1.0, mask_tissue=False)
    assert (np.isfinite(smooth.values) == np.isfinite(sharp.values)).all()
    assert np.nanstd(smooth.values) < np.nanstd(sharp.values)
    assert np.nanmin(smooth.values) >= lo - 1e-6 and np.nanmax(smooth.values) <= hi + 1e-6
    assert np.nanmax(np.abs(stitch(const, "c", smooth=2.0).values - 0.25)) < 1e-6


def test_tiff_overlay_has_the_slides_extent_and_resolution(cmu_store, tmp_path):
    import openslide
    import tifffile
    import tiffslide

    ts = tile_scores(cmu_store, _scores(len(cmu_store)))
    path = export(ts, "tiff", tmp_path / "full.tiff", ExportOptions(scores=("attention",), downsample=1, mask_tissue=False))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.shape == (2967, 2220, 3) and page.is_tiled and len(tif.pages) == 2
        meta = json.loads(page.description)
        assert meta["score"] == "attention" and meta["vmin"] == 0.0 and meta["vmax"] == 1.0
        pixels = page.asarray()
    with tiffslide.TiffSlide(path) as s:
        assert s.dimensions == (2220, 2967) and s.level_count == 2
        assert float(s.properties["tiffslide.mpp-x"]) == pytest.approx(0.499, rel=1e-6)
        assert float(s.properties["tiffslide.mpp-y"]) == pytest.approx(0.499, rel=1e-6)
    with openslide.OpenSlide(str(path)) as s:
        assert s.dimensions == (2220, 2967)
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.499, rel=1e-6)
    colours = lut("viridis")[lut_index(ts.scores["attention"], 0.0, 1.0)]
    for (x, y), colour in zip(ts.coords, colours, strict=True):
        assert (pixels[y + 112, x + 112] == colour).all()  # deflate: exact colours
    assert (pixels[0, 0] == 255).all()  # no tile there

    small = export(ts, "tiff", tmp_path / "thumb.tiff", ExportOptions(scores=("attention",)))
    with tiffslide.TiffSlide(small) as s:
        h, w = cmu_store.thumbnail.shape[:2]
        assert s.dimensions == (w, h)
        # the pixel size times the pixel count is the slide's extent in microns
        assert float(s.properties["tiffslide.mpp-x"]) * w == pytest.approx(2220 * 0.499, rel=1e-6)
        assert float(s.properties["tiffslide.mpp-y"]) * h == pytest.approx(2967 * 0.499, rel=1e-6)


def test_png_overlay_with_colour_bar(cmu_store, tmp_path):
    import cv2

    ts = tile_scores(cmu_store, _scores(len(cmu_store)))
    path = export(ts, "png", tmp_path / "a.png", ExportOptions(scores=("logit",), cmap="magma", alpha=1.0, mask_tissue=False))
    img = cv2.imread(str(path))[..., ::-1]
    h, w = cmu_store.thumbnail.shape[:2]
    assert img.shape[0] == max(h, 160) and img.shape[1] > w + 50
    hm = stitch(ts, "logit", mask_tissue=False)
    lo, hi = float(ts.scores["logit"].min()), float(ts.scores["logit"].max())  # scores outside [0, 1]
    colour = lut("magma")[lut_index(hm.values, lo, hi)]
    scored = np.isfinite(hm.values)
    assert (img[:h, :w][scored] == colour[scored]).all()  # alpha 1: the colours themselves
    assert (img[:h, :w][~scored] == cmu_store.thumbnail[~scored]).all()
    bar = img[:, w:]
    assert len(np.unique(bar.reshape(-1, 3), axis=0)) > 50  # a gradient, not a blank panel


def test_results_store_and_csv_round_trip(cmu_store, tmp_path):
    n = len(cmu_store)
    scores = _scores(n)
    scores["attention"][3] = np.nan
    res = write_results(tmp_path / "r.zarr", cmu_store.coords, scores, tile_store=cmu_store.path, slide_id="CMU")
    table = read_results(res)
    assert table.slide_id == "CMU" and table.tile_store == cmu_store.path
    assert np.array_equal(table.coords, cmu_store.coords)
    for k in scores:
        np.testing.assert_array_equal(table.scores[k], scores[k])
    ts = load_scores(res)
    np.testing.assert_array_equal(ts.scores["logit"], scores["logit"])

    # a CSV in another order and with some tiles missing is matched by coordinates
    order = np.random.default_rng(0).permutation(n)[: n - 5]
    csv_path = write_scores_csv(tmp_path / "s.csv", cmu_store.coords[order], {k: v[order] for k, v in scores.items()})
    back = read_scores_csv(csv_path)
    np.testing.assert_array_equal(back.scores["logit"], scores["logit"][order])  # 9 digits: float32-exact
    ts = load_scores(csv_path, store=cmu_store.path)
    missing = np.setdiff1d(np.arange(n), order)
    assert np.isnan(ts.scores["logit"][missing]).all()
    np.testing.assert_array_equal(ts.scores["logit"][order], scores["logit"][order])


def test_score_input_errors(cmu_store, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,p\n1,2,0.5\n")
    with pytest.raises(StoreError, match="not tiles of"):
        load_scores(bad, store=cmu_store.path)
    with pytest.raises(ConfigError, match="does not say which TileStore"):
        load_scores(bad)
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="no x and y columns"):
        read_scores_csv(bad)
    with pytest.raises(ConfigError, match="has 3 values for 54 tiles"):
        tile_scores(cmu_store, {"p": np.zeros(3)})
    with pytest.raises(ConfigError, match="no score named q"):
        export(tile_scores(cmu_store, {"p": np.zeros(len(cmu_store))}), "png", tmp_path / "x.png", ExportOptions(scores=("q",)))
    two = tile_scores(cmu_store, _scores(len(cmu_store)))
    with pytest.raises(ConfigError, match="shows one score and there are 2"):
        export(two, "tiff", tmp_path / "x.tiff")
    with pytest.raises(ConfigError, match="unknown colormap"):
        export(two, "png", tmp_path / "x.png", ExportOptions(scores=("logit",), cmap="rainbowz"))
    with pytest.raises(ConfigError, match="larger --downsample"):
        stitch(two, "logit", downsample=0.01)
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.tiff")) and not list(tmp_path.glob(".*"))


def test_a_failed_slide_leaves_none_of_its_outputs(cmu_store, tmp_path):
    from pathweak.heatmap import write_heatmaps

    res = write_results(tmp_path / "r.zarr", cmu_store.coords, _scores(len(cmu_store)), tile_store=cmu_store.path,
                        slide_id="CMU")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="unknown colormap"):  # the GeoJSON is written first, then PNG fails
        write_heatmaps(res, out, ["geojson", "png"], ExportOptions(cmap="nope"))
    assert not out.exists() or not list(out.iterdir())
    written = write_heatmaps(res, out, ["geojson", "png", "csv"])
    assert sorted(p.name for p in written) == sorted(p.name for p in out.iterdir()) and len(written) == 4


def test_volume_stores_are_refused_with_a_clear_error(cmu_store, tmp_path):
    import zarr

    from pathweak.heatmap import ScoreTable

    zarr.open_group(str(tmp_path / "volume.zarr"), mode="w", zarr_format=3).attrs.update(
        {"kind": "tiles", "volume": {"mode": "3d"}})
    res = write_results(tmp_path / "vol.zarr", np.zeros((4, 2), np.int64), {"p": np.zeros(4)},
                        tile_store=tmp_path / "volume.zarr", slide_id="v")
    with pytest.raises(UnsupportedSlideError, match="3D volume store.*-f nifti"):
        load_scores(res)
    with pytest.raises(UnsupportedSlideError, match="3D volume store.*-f nifti"):
        tile_scores(cmu_store, ScoreTable(np.zeros((4, 3), np.int64), {"p": np.zeros(4)}))


def test_a_store_of_separate_images_is_refused(tmp_path):
    import cv2

    from pathweak.tiling.images import images_to_store

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((64, 64, 3), 40 * i, np.uint8))
    store = images_to_store(sorted(tmp_path.glob("*.png")), tmp_path / "imgs.zarr", patch_px=32, progress=False)
    with pytest.raises(ConfigError, match="separate images"):
        tile_scores(store, {"p": np.zeros(3)})
    csv_path = write_scores_csv(tmp_path / "s.csv", store.coords, {"p": np.zeros(3)})
    with pytest.raises(ConfigError, match="separate images"):
        load_scores(csv_path, store=store.path)
