"""Stain normalisation at extraction: real tiles in a real TileStore, a real (tiny, random) encoder; the slide's
stain estimated once and recorded, the features those of the normalised tiles, the reference in the key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED, need_shared, run_cli

NCT = SHARED / "tiles" / "nct_crc_he_100k_samples"
ENCODER = "timm:vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def nct_store(tmp_path_factory):
    need_shared(NCT)
    from pathweak.config import StoreSpec
    from pathweak.tiling.images import images_to_store

    files = [p for p in sorted(NCT.glob("*.tif")) if not p.name.startswith("BACK")]
    out = tmp_path_factory.mktemp("stain") / "tiles" / "nct.zarr"
    return images_to_store(files, out, 224, StoreSpec(compression="lossless", shard_tiles=4), 0.5, progress=False).path


def test_extract_normalises_each_slide_once_and_records_it(nct_store, tmp_path):
    import torch

    from pathweak.encoders import create_encoder
    from pathweak.features import FeatureStore, extract_features
    from pathweak.features.stain import StainNormalization
    from pathweak.stain import estimate, load_reference
    from pathweak.stain.apply import StainTransform
    from pathweak.store.tiles import TileStore

    ref_path = NCT / "NORM-AAAWMSFI.tif"
    stain = StainNormalization.load("macenko", ref_path)
    enc, enc2 = create_encoder(ENCODER, "random"), create_encoder(ENCODER, "random:1")
    [plain] = extract_features([nct_store], enc, tmp_path, progress=False, num_workers=0)
    normed, normed2 = extract_features([nct_store], [enc, enc2], tmp_path, progress=False, num_workers=0, stain=stain)
    assert normed.status == "extracted" and "stain-macenko-" in normed.store
    second = FeatureStore.open(normed2.store).attrs["encoder"]["extra"]["stain"]  # two encoders, one estimate
    fs = FeatureStore.open(normed.store)
    record = fs.attrs["encoder"]["extra"]["stain"]
    with TileStore.open(nct_store) as ts:
        tiles = ts.read_tiles(slice(None))
    slide = estimate(tiles, "macenko")  # 8 tiles: the whole slide is the sample
    np.testing.assert_allclose(record["slide"]["matrix"], slide.matrix, atol=1e-7)
    assert record["method"] == "macenko" and record["reference"] == str(ref_path) and record["tiles"] == len(tiles)
    assert second == record
    target = load_reference(ref_path, ("macenko",)).target("macenko")
    want = enc.embed(torch.from_numpy(StainTransform(slide, target)(tiles))).numpy().astype(np.float16)
    np.testing.assert_allclose(fs.features.astype(np.float32), want.astype(np.float32), atol=2e-3)
    assert not np.allclose(FeatureStore.open(plain.store).features, fs.features, atol=1e-2)
    # the same run again skips; another reference is another folder and key
    again = extract_features([nct_store], enc, tmp_path, progress=False, num_workers=0, stain=stain)[0]
    assert again.status == "skipped"
    other = StainNormalization.load("macenko", NCT / "TUM-AACHEHDV.tif")
    third = extract_features([nct_store], enc, tmp_path, progress=False, num_workers=0, stain=other)[0]
    assert third.status == "extracted" and third.store != normed.store
    assert FeatureStore.open(third.store).attrs["cache_key"] != fs.attrs["cache_key"]


def test_stain_fit_and_extract_from_the_cli(nct_store, tmp_path):
    out = tmp_path / "ref.json"
    proc = run_cli("stain", "fit", str(nct_store.parent), "-o", str(out), "--tiles", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"macenko", "vahadane", "reinhard"} and data["source"]["tiles"] == 4
    proc = run_cli(
        "extract", str(nct_store), "-o", str(tmp_path), "--encoder", ENCODER, "--weights", "random",
        "--stain-normalize", "reinhard", "--stain-reference", str(out), "--no-progress", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    assert row["status"] == "extracted" and "stain-reinhard-" in row["store"]
    # one option without the other, an unknown method, a broken reference: one line, exit 2, nothing written
    for args, phrase in (
        (["--stain-normalize", "macenko"], "go together"),
        (["--stain-normalize", "nope", "--stain-reference", str(out)], "unknown stain normalisation"),
        (["--stain-normalize", "macenko", "--stain-reference", str(tmp_path / "no.json")], "stain reference not found"),
    ):
        bad = run_cli(
            "extract", str(nct_store), "-o", str(tmp_path / "bad"), "--encoder", ENCODER, "--weights", "random", *args
        )
        assert bad.returncode == 2 and phrase in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert not (tmp_path / "bad").exists()


def test_a_blank_slide_fails_with_a_clear_error_and_the_others_go_on(tmp_path):
    need_shared(NCT)
    from pathweak.config import StoreSpec
    from pathweak.encoders import create_encoder
    from pathweak.features import extract_features
    from pathweak.features.stain import StainNormalization
    from pathweak.tiling.images import images_to_store

    blank = images_to_store(
        sorted(NCT.glob("BACK*")), tmp_path / "tiles" / "blank.zarr", 224, StoreSpec(), 0.5, progress=False
    )
    good = images_to_store(
        sorted(NCT.glob("TUM*")), tmp_path / "tiles" / "tum.zarr", 224, StoreSpec(), 0.5, progress=False
    )
    stain = StainNormalization.load("vahadane", sorted(NCT.glob("NORM*"))[0])
    results = extract_features([blank.path, good.path], create_encoder(ENCODER, "random"), tmp_path, progress=False,
                               num_workers=0, stain=stain)  # fmt: skip
    assert [r.status for r in results] == ["failed", "extracted"]
    assert "blank.zarr" in results[0].error and "stained pixels" in results[0].error


def test_ihc_slide_gets_a_not_he_warning(tmp_path):
    need_shared(SHARED / "misc" / "skimage_ihc.png", NCT)
    from pathweak.config import StoreSpec
    from pathweak.encoders import create_encoder
    from pathweak.features import extract_features
    from pathweak.features.stain import StainNormalization
    from pathweak.tiling.images import images_to_store

    ihc = images_to_store(
        [SHARED / "misc" / "skimage_ihc.png"], tmp_path / "tiles" / "ihc.zarr", 224, StoreSpec(), 0.5, progress=False
    )
    stain = StainNormalization.load("macenko", sorted(NCT.glob("NORM*"))[0])
    [r] = extract_features(
        [ihc.path], create_encoder(ENCODER, "random"), tmp_path, progress=False, num_workers=0, stain=stain
    )
    assert r.status == "extracted" and any("looks like DAB (IHC)" in w for w in r.warnings), r.warnings


@pytest.mark.gpu
def test_stain_on_the_gpu_equals_the_cpu(nct_store):
    import torch

    from pathweak.stain import estimate
    from pathweak.stain.apply import StainTransform
    from pathweak.store.tiles import TileStore

    with TileStore.open(nct_store) as ts:
        tiles = ts.read_tiles(slice(None))
    for method in ("macenko", "vahadane", "reinhard"):
        t = StainTransform(estimate(tiles[:4], method), estimate(tiles[4:], method))
        cpu = t(torch.from_numpy(tiles)).numpy().astype(int)
        gpu = t(torch.from_numpy(tiles).cuda()).cpu().numpy().astype(int)
        assert np.abs(cpu - gpu).max() <= 1, method


def test_rotation_views_of_the_normalised_tiles(nct_store, tmp_path):
    """--rotations with --stain-normalize: each view is a rotation of the normalised tile."""
    import torch

    from pathweak.encoders import create_encoder
    from pathweak.features import FeatureStore, extract_features
    from pathweak.features.stain import StainNormalization
    from pathweak.stain import estimate, load_reference
    from pathweak.stain.apply import StainTransform
    from pathweak.store.tiles import TileStore

    ref_path = NCT / "NORM-AAAWMSFI.tif"
    enc = create_encoder(ENCODER, "random")
    stain = StainNormalization.load("macenko", ref_path)
    [res] = extract_features([nct_store], enc, tmp_path, progress=False, num_workers=0, stain=stain, rotations=2)
    assert res.status == "extracted", res.error
    assert "-rot2-stain-macenko-" in res.store
    fs = FeatureStore.open(res.store)
    with TileStore.open(nct_store) as ts:
        tiles = ts.read_tiles(slice(None))
    normed = StainTransform(estimate(tiles, "macenko"), load_reference(ref_path, ("macenko",)).target("macenko"))(tiles)
    views = [normed, np.ascontiguousarray(np.rot90(normed, 2, axes=(1, 2)))]
    want = np.concatenate([enc.embed(torch.from_numpy(v)).numpy() for v in views], axis=1)
    assert fs.features.shape == want.shape
    np.testing.assert_allclose(fs.features.astype(np.float32), want.astype(np.float16).astype(np.float32), atol=3e-3)
