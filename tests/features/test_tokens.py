"""Token-level maps for sub-tile segmentation: a ViT encoder's patch tokens, token bags on a fine grid
(per image, and per slide with every tile's tokens placed inside its tile cell), and the wsseg head
trained on real EBHI-Seg images from image labels only."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import SHARED, need_shared

from pathweak.encoders import create_encoder
from pathweak.errors import ConfigError
from pathweak.features.tokens import TokenBank, cam_to_pixels, token_grid

EBHI = SHARED / "labeled" / "ebhi_seg"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vit(img_size: int = 224):
    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=2, img_size=img_size,
                          global_pool="avg", fc_norm=False)


def test_token_map_has_one_vector_per_patch_and_averages_to_the_embedding():
    enc = _vit()
    tiles = torch.randint(0, 256, (3, 224, 224, 3), dtype=torch.uint8)
    maps = enc.token_map(tiles)
    assert maps.shape == (3, enc.embed_dim, 14, 14)
    # with average pooling and no fc_norm, the tile embedding is the mean of its tokens
    torch.testing.assert_close(maps.mean((2, 3)), enc.embed(tiles), atol=1e-4, rtol=1e-4)
    # a smaller input size gives a smaller map (tiles are resized to the encoder's input)
    assert _vit(64).token_map(tiles[:1]).shape[-2:] == (4, 4)


def test_token_map_needs_a_vit():
    cnn = create_encoder("torchvision:resnet50_trunc", weights="random:0")
    assert not cnn.has_tokens
    with pytest.raises(ConfigError, match="no patch tokens"):
        cnn.token_map(torch.zeros((1, 224, 224, 3), dtype=torch.uint8))


def test_slide_token_bag_places_tokens_inside_their_tile_cells(mil_cohort):
    from pathweak.tiling import TileStore

    stores = sorted(p for p in mil_cohort["root"].rglob("*.zarr") if (p / "tiles").exists())[:2]
    assert stores
    bank = TokenBank.from_tile_stores(_vit(64), stores, pool=2)  # 4x4 tokens per tile, pooled to 2x2
    for i, path in enumerate(stores):
        with TileStore.open(path) as store:
            cells = np.asarray(store.grid_index, np.int64)
            tokens = bank.grid(i).numpy().astype(np.int64)
            assert bank.names[i] == store.slide_id
        assert bank.bag(i).shape == (len(cells) * 4, bank.embed_dim)
        # token (r, c) lies in the 2x2 block of its tile's cell, and no two tokens share a position
        owner = np.repeat(cells, 4, axis=0)
        assert np.array_equal(tokens // 2, owner)
        assert len(np.unique(tokens, axis=0)) == len(tokens)


def test_token_grid_is_row_major():
    g = token_grid(2, 3).numpy()
    assert g.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_wsseg_learns_from_image_labels_on_real_ebhi_tokens(tmp_path):
    """16 patients' adenocarcinoma and normal biopsies (real images, expert masks unused in training):
    the wsseg head on 14x14 token bags trains on image labels, its loss falls, and its map is the
    image's token grid, upsampled to pixels as a probability."""
    need_shared(EBHI / "pairs.csv")
    from PIL import Image

    from pathweak.train import TrainConfig, fit_head, make_folds, read_labels

    rows = list(csv.DictReader(open(EBHI / "pairs.csv")))
    picked = []
    for cls in ("Adenocarcinoma", "Normal"):
        patients = sorted({r["patient_id"] for r in rows if r["class"] == cls})[:8]
        picked += [next(r for r in rows if r["patient_id"] == p and r["class"] == cls) for p in patients]
    images = np.stack([np.asarray(Image.open(EBHI / r["image"]).convert("RGB")) for r in picked])
    names = [f"{r['class']}-{i}" for i, r in enumerate(picked)]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide_id", "patient_id", "label"])
        w.writerows([n, r["patient_id"], r["class"]] for n, r in zip(names, picked, strict=True))
    table = read_labels(labels)
    bank = TokenBank.from_tiles(_vit(), images, names)
    assert bank.bag(0).shape == (196, bank.embed_dim) and len(bank) == len(picked)
    fold = make_folds(table, folds=4, seed=0)[0]
    assert not {table.patient_ids[i] for i in fold.train} & {table.patient_ids[i] for i in fold.test}
    cfg = TrainConfig(head="wsseg", head_options={"negative_class": table.classes.index("Normal")}, max_epochs=12,
                      min_epochs=12, patience=12, lr=1e-3, bags_per_step=4)
    fit = fit_head(bank, table, fold, cfg, seed=0)
    losses = [h["train_loss"] for h in fit.history]
    assert np.mean(losses[-3:]) < losses[0]
    i = int(fold.test[0])
    cam, occupied, origin = fit.head.segmentation_map(bank.bag(i).float(), bank.grid(i))
    assert cam.shape == (2, 14, 14) and bool(occupied.all()) and origin.tolist() == [0, 0]
    prob = cam_to_pixels(torch.softmax(cam, 0)[table.classes.index("Adenocarcinoma")].detach(), images.shape[1:3])
    assert prob.shape == (224, 224) and 0 <= prob.min() <= prob.max() <= 1


def test_wsseg_segments_a_volume_on_its_3d_patch_grid(tmp_path):
    """Axial slice patches of a real MRI volume → features → a bank whose grid is (z, y, x) → wsseg with
    spatial_dims=3: the CAM spans the patch grid in 3D and one training step runs; a 2D wsseg head on the
    same features, or two patches on one cell, is a clear error."""
    from conftest import ANATOMICAL

    need_shared(ANATOMICAL)
    from pathweak.config import VolumeSpec
    from pathweak.features import extract_features
    from pathweak.features.bank import load_feature_bank
    from pathweak.heads import create_head
    from pathweak.volumes import tile_volume

    spec = VolumeSpec(mode="slices", planes=("axial",), patch_px=16, spacing_mm=(2.0, 2.0, 2.0), min_foreground=0.2)
    tiled = tile_volume(ANATOMICAL, tmp_path, spec, progress=False)
    enc = create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=1, img_size=32)
    done = extract_features([tiled.store], enc, tmp_path, num_workers=0, progress=False)
    assert done[0].status == "extracted", done[0].error
    bank = load_feature_bank([done[0].store], device="cpu", progress=False)
    grid = bank.grid(0)
    coords = bank.coords(0)
    assert grid.shape == (len(coords), 3) and len(np.unique(grid.numpy(), axis=0)) == len(coords)
    assert np.array_equal(np.argsort(coords[:, 0], kind="stable"), np.argsort(grid[:, 0].numpy(), kind="stable"))
    head = create_head("wsseg", bank.embed_dim, 2, spatial_dims=3)
    x = bank.bag(0).float()
    cam, occupied, origin = head.segmentation_map(x, grid)
    extent = (grid.long().max(0).values - grid.long().min(0).values + 1).tolist()
    assert list(cam.shape) == [2, *extent] and int(occupied.sum()) == len(coords)
    out = head(x, grid)
    loss = torch.nn.functional.cross_entropy(out.logits[None], torch.tensor([1]))
    loss.backward()
    assert out.instance_logits.shape == (len(coords), 2) and head.cam.weight.grad is not None
    with pytest.raises(ConfigError, match="spatial_dims=3"):
        create_head("wsseg", bank.embed_dim, 2)(x, grid)
    with pytest.raises(ConfigError, match="share one grid cell"):
        head(x[[0, 0]], grid[[0, 0]])
