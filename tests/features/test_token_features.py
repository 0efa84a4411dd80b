"""Token-level FeatureStores (`pathweak extract --tokens N`): one row per ViT patch token inside each
tile of a real slide, with its level-0 box and its cell on the slide's token grid, so the unchanged
bank, wsseg head, predict and QuPath / raster exports work at sub-tile resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SVS, need_shared, run_cli

from pathweak.encoders import create_encoder
from pathweak.errors import ConfigError
from pathweak.features import FeatureStore, extract_features
from pathweak.tiling import TileStore, tile_slide


@pytest.fixture(scope="module")
def svs_tiles(tmp_path_factory):
    need_shared(SVS)
    return tile_slide(SVS, tmp_path_factory.mktemp("svs"), progress=False).store


def tiny_vit():
    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=1, img_size=64)  # 4x4 tokens


def test_token_rows_lie_inside_their_tiles_on_a_fine_grid(svs_tiles, tmp_path):
    enc = tiny_vit()
    (done,) = extract_features([svs_tiles], enc, tmp_path, num_workers=0, progress=False, tokens=2)
    assert done.status == "extracted", done.error
    tiles = TileStore.open(svs_tiles)
    feats = FeatureStore.open(done.store)
    assert feats.encoder_id == enc.encoder_id + "-tokens2" and feats.attrs["tokens"]["map"] == [2, 2]
    assert len(feats) == 4 * len(tiles) == feats.features.shape[0]
    extent = tiles.attrs["tile"]["read_px"] * tiles.attrs["mpp"]["level_downsample"][0]
    assert feats.attrs["tokens"]["extent"] == [extent / 2, extent / 2]
    coords = feats.coords.reshape(len(tiles), 4, 2)
    assert np.array_equal(coords[:, 0], tiles.coords)  # the first token of each tile sits at its corner
    assert np.array_equal(coords[:, 3] - coords[:, 0], np.tile([extent // 2, extent // 2], (len(tiles), 1)))
    # the rows equal the encoder's pooled token map of each tile, row-major
    maps = enc.token_map(torch.from_numpy(tiles.read_tiles([0, 1])))
    pooled = torch.nn.functional.avg_pool2d(maps, 2).permute(0, 2, 3, 1).reshape(-1, enc.embed_dim)
    assert np.allclose(np.asarray(feats.features[:8], np.float32), pooled.numpy(), atol=2e-2)
    # grid: one cell per row, 2x finer than the tile grid, ordered like the coords
    grid = feats.grid_positions()
    assert len(np.unique(grid, axis=0)) == len(grid)
    assert np.array_equal(grid.reshape(len(tiles), 4, 2)[:, 0] // 2, tiles.grid_index)
    for axis, col in ((0, 1), (1, 0)):  # x -> column, y -> row
        assert np.array_equal(np.unique(feats.coords[:, axis]).searchsorted(feats.coords[:, axis]),
                              grid[:, col] - grid[:, col].min())
    again = extract_features([svs_tiles], enc, tmp_path, num_workers=0, progress=False, tokens=2)[0]
    assert again.status == "skipped"
    tile_level = extract_features([svs_tiles], enc, tmp_path, num_workers=0, progress=False)[0]
    assert tile_level.status == "extracted" and tile_level.store != done.store  # never mixed with tile features


def test_token_cells_tile_the_tile_exactly_when_the_pool_does_not_divide_the_map(svs_tiles, tmp_path):
    """As observed: `--tokens 2` on a 7x7 token map gave map [4, 4] with extent [64, 64] on 224 px tiles, so each
    tile's last row and column of boxes reached 32 px into the neighbour (overlapping detections in QuPath).
    Now 4 equal cells tile the tile, each the area-weighted mean of the tokens under it."""
    enc = create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=1, img_size=112)  # 7x7 tokens
    (done,) = extract_features([svs_tiles], enc, tmp_path, num_workers=0, progress=False, tokens=2)
    tiles, feats = TileStore.open(svs_tiles), FeatureStore.open(done.store)
    extent, cell = np.array(tiles.tile_extent), np.array(feats.attrs["tokens"]["extent"])
    assert feats.attrs["tokens"]["map"] == [4, 4] and np.allclose(cell * 4, extent)
    starts = feats.coords.reshape(len(tiles), 16, 2)
    corner = tiles.coords[:, None, :]
    assert (starts >= corner).all() and (starts + cell <= corner + extent + 1e-6).all()  # no box leaves its tile
    assert np.allclose((starts + cell).max(1), tiles.coords + extent, atol=1)  # and the last ones reach its edge
    maps = enc.token_map(torch.from_numpy(tiles.read_tiles([0])))[0]  # (D, 7, 7): tokens of 32 px
    share = torch.tensor([1.0, 0.75]) / 1.75  # cell 0 spans tokens 0..1.75: all of token 0, 3/4 of token 1
    first = torch.einsum("dhw,h,w->d", maps[:, :2, :2], share, share)
    assert np.allclose(np.asarray(feats.features[0], np.float32), first.numpy(), atol=2e-2)


def test_wsseg_predicts_and_exports_at_token_resolution(svs_tiles, tmp_path):
    from pathweak.features.bank import load_feature_bank
    from pathweak.heads import create_head
    from pathweak.heatmap import read_results
    from pathweak.io.qupath_geojson import read_qupath_geojson
    from pathweak.train.package import save_model
    from pathweak.train.predict import predict_slides

    enc = tiny_vit()
    (done,) = extract_features([svs_tiles], enc, tmp_path, num_workers=0, progress=False, tokens=1)
    feats = FeatureStore.open(done.store)
    bank = load_feature_bank([done.store], device="cpu", progress=False)
    assert np.array_equal(bank.grid(0).numpy(), feats.grid_positions())
    torch.manual_seed(0)
    head = create_head("wsseg", enc.embed_dim, 2)
    cam, occupied, _ = head.segmentation_map(bank.bag(0).float(), bank.grid(0))
    tiles = TileStore.open(svs_tiles)
    tile_extent = (tiles.grid_index.max(0) - tiles.grid_index.min(0) + 1) * 4
    assert list(cam.shape) == [2, *tile_extent.tolist()] and int(occupied.sum()) == len(feats)

    model = save_model(tmp_path / "model", head, task="classification", classes=["normal", "tumour"],
                       encoder=feats.attrs["encoder"])
    (pred,) = predict_slides(model, [done.store], tmp_path / "out", progress=False)
    table = read_results(pred.results)
    assert np.array_equal(table.coords, feats.coords) and table.extent == tuple(feats.attrs["tokens"]["extent"])
    geojson = tmp_path / "tokens.geojson"
    proc = run_cli("export", pred.results, "-f", "geojson", "-o", str(geojson), "--score", "prob_tumour")
    assert proc.returncode == 0, proc.stderr
    objs = [o for o in read_qupath_geojson(geojson) if o.object_type == "detection"]
    assert len(objs) == len(feats)
    x0, y0, x1, y1 = objs[0].geometry.bounds
    assert (x1 - x0, y1 - y0) == pytest.approx(table.extent) and (x0, y0) == tuple(feats.coords[0])
    proc = run_cli("export", pred.results, "-f", "png", "-o", str(tmp_path / "tokens.png"), "--score", "prob_tumour")
    assert proc.returncode == 0, proc.stderr


def test_tokens_need_a_vit_and_slide_tiles(svs_tiles, tmp_path):
    resnet = create_encoder("torchvision:resnet50_trunc", weights="random")
    with pytest.raises(ConfigError, match="no patch tokens"):
        extract_features([svs_tiles], resnet, tmp_path, num_workers=0, progress=False, tokens=2)
    with pytest.raises(ConfigError, match="token pooling"):
        extract_features([svs_tiles], tiny_vit(), tmp_path, num_workers=0, progress=False, tokens=-1)
    assert not (tmp_path / "features").exists()
