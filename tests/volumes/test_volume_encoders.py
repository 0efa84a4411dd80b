"""3D encoders for volume patches (``--mode 3d``): MONAI 3D ResNets embed the (D, H, W) patches of a real
MRI into a FeatureStore whose rows line up with the patches, the bank places them on their 3D patch grid
for the wsseg head, weights round-trip through a file, and the wrong kind of encoder for a store is one
clear error that leaves nothing behind; results go back to NIfTI through the CLI and through a cohort run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ANATOMICAL, BRAIN1, SVS, need_shared, run_cli

from pathweak.config import StoreSpec, VolumeSpec
from pathweak.encoders import create_encoder
from pathweak.errors import ConfigError
from pathweak.features import FeatureStore, extract_features
from pathweak.tiling import TileStore
from pathweak.volumes import tile_volume

SPEC = VolumeSpec(spacing_mm=(2.0, 2.0, 2.0), patch_px=16, min_foreground=0.25)


@pytest.fixture(scope="module")
def brain1_patches(tmp_path_factory):
    need_shared(BRAIN1)
    result = tile_volume(BRAIN1, tmp_path_factory.mktemp("brain1_3d"), SPEC, StoreSpec(shard_tiles=16), progress=False)
    assert result.status == "tiled", result.error
    return result.store


def small_encoder(weights: str = "random:0"):
    return create_encoder("monai:resnet10", weights=weights, img_size=16)


def test_3d_patches_embed_into_a_feature_store_on_the_patch_grid(brain1_patches, tmp_path):
    from pathweak.features.bank import load_feature_bank
    from pathweak.heads import create_head

    enc = small_encoder()
    assert enc.info.input == "volume" and enc.embed_dim == 512
    (done,) = extract_features([brain1_patches], enc, tmp_path, num_workers=0, progress=False)
    assert done.status == "extracted", done.error
    tiles = TileStore.open(brain1_patches)
    feats = FeatureStore.open(done.store)
    assert tiles.holds_3d_patches and tiles.tile_shape == (16, 16, 16) and len(feats) == len(tiles) > 10
    assert np.array_equal(feats.coords, tiles.coords) and feats.coords.shape[1] == 3
    rows = [0, len(tiles) // 2, len(tiles) - 1]
    direct = enc.embed(torch.from_numpy(tiles.read_tiles(rows))).numpy()
    stored = np.asarray(feats.features[rows], np.float32)
    assert np.allclose(stored, direct, rtol=1e-2, atol=1e-2)
    assert not np.allclose(stored[0], stored[1])  # different patches, different features
    again = extract_features([brain1_patches], enc, tmp_path, num_workers=0, progress=False)[0]
    assert again.status == "skipped"

    bank = load_feature_bank([done.store], device="cpu", progress=False)
    grid = bank.grid(0)
    assert grid.shape == (len(tiles), 3) and len(np.unique(grid.numpy(), axis=0)) == len(tiles)
    head = create_head("wsseg", bank.embed_dim, 2, spatial_dims=3)
    cam, occupied, _ = head.segmentation_map(bank.bag(0).float(), grid)
    extent = (grid.long().max(0).values - grid.long().min(0).values + 1).tolist()
    assert list(cam.shape) == [2, *extent] and int(occupied.sum()) == len(tiles)


def test_weights_round_trip_through_a_file_and_a_mismatch_is_clear(tmp_path):
    enc = small_encoder("random:3")
    path = tmp_path / "resnet10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in enc.backbone.state_dict().items()}}, path)  # MedicalNet layout
    loaded = small_encoder(str(path))
    x = torch.randint(0, 256, (2, 16, 16, 16), dtype=torch.uint8)
    assert torch.equal(loaded.embed(x), enc.embed(x))
    assert loaded.encoder_id != enc.encoder_id and loaded.info.weights_hash
    with pytest.raises(ConfigError, match="do not fit monai:resnet18"):
        create_encoder("monai:resnet18", weights=str(path))
    with pytest.raises(ConfigError, match="needs weights"):
        create_encoder("monai:resnet10")
    with pytest.raises(ConfigError, match="unknown monai encoder"):
        create_encoder("monai:unet", weights="random")


def test_an_encoder_of_the_wrong_kind_is_one_clear_error(brain1_patches, tmp_path):
    from pathweak.tiling import tile_slide

    vit = create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=1, img_size=32)
    (failed,) = extract_features([brain1_patches], vit, tmp_path / "a", num_workers=0, progress=False)
    assert failed.status == "failed" and "3D patches (16x16x16 voxels)" in failed.error and "--mode slices" in failed.error
    assert not (tmp_path / "a").exists()

    need_shared(SVS)
    slide = tile_slide(SVS, tmp_path / "svs", progress=False)
    (failed,) = extract_features([slide.store], small_encoder(), tmp_path / "b", num_workers=0, progress=False)
    assert failed.status == "failed" and "embeds 3D volume patches" in failed.error
    assert not (tmp_path / "b").exists()


def test_predict_on_volume_features_and_export_a_nifti_heatmap(brain1_patches, tmp_path):
    """A 3D wsseg model predicts on 3D-patch features; the results store keeps (z, y, x) coords, and
    `pathweak export -f nifti` / `pathweak heatmap` write the NIfTI heatmap over the source MRI (the same
    file scores_to_nifti writes); slide formats are refused with the fix."""
    import nibabel as nib

    from pathweak.heads import create_head
    from pathweak.heatmap import read_results
    from pathweak.train.package import save_model
    from pathweak.train.predict import predict_slides
    from pathweak.volumes import scores_to_nifti

    enc = small_encoder()
    (done,) = extract_features([brain1_patches], enc, tmp_path, num_workers=0, progress=False)
    torch.manual_seed(0)
    head = create_head("wsseg", enc.embed_dim, 2, spatial_dims=3)
    model = save_model(tmp_path / "model", head, task="classification", classes=["normal", "tumour"],
                       encoder=enc.info.as_dict())
    (pred,) = predict_slides(model, [done.store], tmp_path / "out", progress=False)
    table = read_results(pred.results)
    tiles = TileStore.open(brain1_patches)
    assert np.array_equal(table.coords, tiles.coords) and table.coords.shape[1] == 3
    name = "prob_tumour" if "prob_tumour" in table.scores else sorted(table.scores)[0]
    assert np.isfinite(table.scores[name]).all()

    out = tmp_path / "heat.nii.gz"
    proc = run_cli("export", pred.results, "-f", "nifti", "-o", str(out), "--score", name)
    assert proc.returncode == 0, proc.stderr
    reference = scores_to_nifti(tiles, table.scores[name], tmp_path / "reference.nii.gz")
    written, expected = nib.load(str(out)), nib.load(str(reference))
    assert np.allclose(written.affine, expected.affine)
    assert np.allclose(written.get_fdata(), expected.get_fdata(), equal_nan=True)
    assert written.shape == (256, 256, 25)  # brain1's own voxel grid (MANIFEST.md)

    proc = run_cli("heatmap", pred.results, "-o", str(tmp_path / "maps"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(
        f"{table.slide_id}.{n}.nii.gz" for n in table.scores)
    proc = run_cli("export", pred.results, "-f", "png", "-o", str(tmp_path / "x.png"))
    assert proc.returncode != 0 and "--format nifti" in proc.stderr and not (tmp_path / "x.png").exists()


def test_a_cohort_of_volumes_runs_end_to_end_into_nifti_heatmaps(tmp_path):
    """`pathweak cohort run` on a manifest of real MRIs (two scans, three copies each as separate patients,
    a split column): the spec's `volume:` section decides the 3D patches, the extract stage embeds them with
    the spec's 3D encoder, wsseg trains on the 3D patch grid, and the heatmaps are NIfTI files over each
    source volume."""
    import shutil

    import nibabel as nib

    from pathweak.cohort import CohortSpec, run_cohort

    need_shared(ANATOMICAL, BRAIN1)
    rows = ["path,slide_id,patient_id,label,split"]
    for k, split in enumerate(("train", "val", "test")):
        shutil.copy(ANATOMICAL, tmp_path / f"anat{k}.nii")
        shutil.copy(BRAIN1, tmp_path / f"brain{k}.nrrd")
        rows += [f"anat{k}.nii,anat{k},pa{k},normal,{split}", f"brain{k}.nrrd,brain{k},pb{k},tumour,{split}"]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "cohort.yaml").write_text(
        "name: mri\nmanifest: manifest.csv\nout: out\nencoder: monai:resnet10\nweights: random\n"
        "volume: {spacing_mm: [4, 4, 4], patch_px: 16, min_foreground: 0.25}\nextract: {workers: 0}\n"
        "train: {head: wsseg, head_options: {spatial_dims: 3}, seeds: [0], max_epochs: 2, min_epochs: 1, bootstrap: 0}\n"
        "heatmaps: {formats: [nifti], scores: [prob_tumour]}\nexecutor: {kind: local, workers: 1}\n")
    report = run_cohort(CohortSpec.load(tmp_path / "cohort.yaml"), progress=False)
    assert not report.failed_slides
    out = tmp_path / "out"
    assert (out / "models" / "wsseg" / "run.json").exists()
    for k in range(3):
        for sid, shape in ((f"anat{k}", nib.load(str(ANATOMICAL)).shape), (f"brain{k}", (256, 256, 25))):
            tiles = TileStore.open(out / "tiles" / f"{sid}.zarr")
            assert tiles.holds_3d_patches and tiles.tile_shape == (16, 16, 16)
            (features,) = (out / "features").glob(f"monai-resnet10-*/{sid}.zarr")
            assert np.array_equal(FeatureStore.open(features).coords, tiles.coords)
            heat = nib.load(str(out / "heatmaps" / sid / f"{sid}.prob_tumour.nii.gz"))
            assert heat.shape == shape and np.nanmax(heat.get_fdata()) <= 1.0
