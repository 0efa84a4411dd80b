"""Tissue and artefact models (HEST, GrandQC tissue, GrandQC artefacts) as tissue-method registry entries:
checkpoints in hub layout with random weights, their keys mapped on the meta device, end to end through
``pathweak tile``, against a direct computation, the missing-weights error; the classical masks unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import SVS, need_shared, run_cli

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from pathweak.errors import ConfigError  # noqa: E402
from pathweak.tissue.models import ALL  # noqa: E402
from pathweak.tissue.models.networks import build_network, check_on_meta  # noqa: E402

MODELS = {m.name: m for m in ALL}
REPO_DIR = "models--MahmoodLab--hest-tissue-seg"


def hub_layout(model, state: dict) -> dict:
    """A network's state dict as the hub file holds it (HEST: a Lightning checkpoint's ``model.`` keys plus
    the auxiliary head TRIDENT drops)."""
    if model.name != "hest":
        return dict(state)
    out = {f"model.{k}": v for k, v in state.items()}
    out["model.aux_classifier.0.weight"] = torch.zeros(256, 1024, 3, 3, device=next(iter(state.values())).device)
    out["model.aux_classifier.4.bias"] = torch.zeros(21, device=next(iter(state.values())).device)
    return out


def save_weights(folder, force: dict[str, int] | None = None, seed: int = 0) -> None:
    """Random weights of all three models in ``folder`` under their hub file names. ``force`` = {model: class}
    makes that model predict the class everywhere (zero final weights, a large bias)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for m in ALL:
        state = build_network(m).state_dict()
        if force and m.name in force:
            head = "classifier.4" if m.name == "hest" else "segmentation_head.0"
            state[f"{head}.weight"].zero_()
            state[f"{head}.bias"].fill_(-20.0)
            state[f"{head}.bias"][force[m.name]] = 20.0
        payload = hub_layout(m, state)
        torch.save({"epoch": 1, "state_dict": payload} if m.name == "hest" else payload, folder / m.files[0])


def hf_snapshot(tmp_path, monkeypatch, force=None):
    cache = tmp_path / "hf" / "hub"
    snap = cache / REPO_DIR / "snapshots" / "0123abcd"
    save_weights(snap, force)
    (cache / REPO_DIR / "refs").mkdir(parents=True)
    (cache / REPO_DIR / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return snap


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    from pathweak.synthetic import make_sample_cohort

    # 1040 x 760 px at 0.5 µm/px: whole model pixels at 1 and 10 µm/px, two HEST tiles across
    return make_sample_cohort(tmp_path_factory.mktemp("tm"), n_slides=1, size=(1040, 760))[0].path


@pytest.mark.parametrize("name", list(MODELS))
def test_hub_keys_map_onto_the_network_on_the_meta_device(name):
    model = MODELS[name]
    with torch.device("meta"):
        state = hub_layout(model, build_network(model).state_dict())
    check_on_meta(model, state)  # every key and shape, nothing allocated
    first = next(k for k in state if k.endswith("weight") and "aux" not in k)
    renamed = {(k + "_x" if k == first else k): v for k, v in state.items()}
    with pytest.raises(ConfigError, match=r"1 missing .*1 unexpected"):
        check_on_meta(model, renamed, "w.pth")
    wrong = dict(state)
    wrong[first] = torch.empty(3, device="meta")
    with pytest.raises(ConfigError, match="with another shape"):
        check_on_meta(model, wrong, "w.pth")


def test_missing_weights_is_the_encoder_presets_error(slide, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    out = tmp_path / "o"
    proc = run_cli("tile", str(slide), "-o", str(out), "--tissue", "hest", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no weights for hest on this machine (nothing is downloaded at run time)" in lines[0]
    assert "huggingface-cli download MahmoodLab/hest-tissue-seg deeplabv3_seg_v4.ckpt" in lines[0]
    assert "--tissue-weights FILE|DIR" in lines[0] and not out.exists()
    from pathweak.encoders import create_encoder

    with pytest.raises(ConfigError) as enc:  # the encoder presets' own wording
        create_encoder("uni")
    assert "on this machine (nothing is downloaded at run time); looked in:" in str(enc.value) in str(enc.value)
    assert lines[0].split("; looked in:")[0].replace("hest", "uni") in "error: " + str(enc.value)
    bad = run_cli(
        "tile", str(slide), "-o", str(out), "--artifacts", "grandqc", "--artifact-weights", str(tmp_path / "nope.pth")
    )
    assert (
        bad.returncode == 2 and "weights file or folder not found" in bad.stderr and "--artifact-weights" in bad.stderr
    )
    unknown = run_cli("tile", str(slide), "-o", str(out), "--artifacts", "nope")
    assert unknown.returncode == 2 and "unknown artifact method 'nope'" in unknown.stderr
    assert not out.exists()


def test_hest_and_artefacts_end_to_end_from_the_hub_cache(slide, tmp_path, monkeypatch):
    """HEST forced to 'tissue' everywhere keeps every tile of the grid (glass included, which Otsu drops); the
    artefact model forced to 'pen marking' then removes it all, into the artefact mask and the record."""
    from pathweak.store.tiles import TileStore

    snap = hf_snapshot(tmp_path, monkeypatch, force={"hest": 1, "grandqc-artifacts": 4})
    proc = run_cli("tile", str(slide), "-o", str(tmp_path / "hest"), "--tissue", "hest", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    otsu = json.loads(run_cli("tile", str(slide), "-o", str(tmp_path / "otsu"), "--no-progress", "--json").stdout)[0]
    with TileStore.open(row["store"]) as ts:
        tissue = ts.attrs["tissue"]
        assert tissue["method"] == "hest" and tissue["params"]["params"]["weights"] == str(
            snap / "deeplabv3_seg_v4.ckpt"
        )
        assert len(tissue["params"]["params"]["weights_hash"]) > 8 and ts.tissue_mask.all() and ts.artifact_mask is None
        assert row["n_tiles"] == int(np.prod(ts.attrs["tile"]["grid_shape"])) > otsu["n_tiles"] > 0
    proc = run_cli("tile", str(slide), "-o", str(tmp_path / "art"), "--artifacts", "grandqc", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr
    with TileStore.open(json.loads(proc.stdout)[0]["store"]) as ts:
        assert not ts.tissue_mask.any() and set(np.unique(ts.artifact_mask)) <= {0, 4}
        assert (ts.artifact_mask == 4).sum() > 0
        assert set(ts.attrs["tissue"]["params"]["artifacts_removed"]) == {"pen marking"}
        assert len(ts) == 0
    # both masks go to QuPath: the artefact regions classified, the Otsu tissue as Tissue
    from pathweak.io.qupath_geojson import annotation_geometries, read_qupath_geojson

    for run, removed, kept in (("art", ["Pen marking"], ["Tissue"]), ("otsu", ["Tissue"], ["Pen marking"])):
        proc = run_cli("export-tissue", str(tmp_path / run / "tiles"), "-o", str(tmp_path / "qp" / run), "--json")
        assert proc.returncode == 0, proc.stderr
        [geojson] = json.loads(proc.stdout)["files"]
        objects = read_qupath_geojson(geojson)
        assert annotation_geometries(objects, removed) and not annotation_geometries(objects, kept), run


def test_grandqc_tissue_end_to_end_from_a_folder(slide, tmp_path):
    from pathweak.store.tiles import TileStore

    save_weights(tmp_path / "w", force={"grandqc": 0})  # class 0 is GrandQC's tissue
    proc = run_cli("tile", str(slide), "-o", str(tmp_path / "o"), "--tissue", "grandqc", "--tissue-weights",
                   str(tmp_path / "w"), "--no-progress", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with TileStore.open(json.loads(proc.stdout)[0]["store"]) as ts:
        assert ts.attrs["tissue"]["method"] == "grandqc" and ts.tissue_mask.all()
        assert ts.attrs["tissue"]["params"]["params"]["weights"].endswith("Tissue_Detection_MPP10.pth")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_masks_equal_a_direct_computation(name, slide, tmp_path):
    """Random (not forced) weights: pathweak's tiled run equals a direct one written here the way TRIDENT
    builds and loads the model (its own key rule), on the whole slide read at the model's µm/px, with the
    output resized once to the mask grid (agreement on 99% of mask pixels: tile seams resize differently)."""
    import cv2

    from pathweak.config import TissueSpec
    from pathweak.io import open_slide
    from pathweak.tissue.models.run import MEAN, STD, class_maps, prepare

    model = MODELS[name]
    save_weights(tmp_path, seed=3)
    raw = torch.load(tmp_path / model.files[0], weights_only=True)
    if name == "hest":
        from torchvision.models.segmentation import deeplabv3_resnet50

        net = deeplabv3_resnet50(weights=None, weights_backbone=None)
        net.classifier[4] = torch.nn.Conv2d(256, 2, kernel_size=1, stride=1)
        net.load_state_dict({k.replace("model.", ""): v for k, v in raw["state_dict"].items() if "aux" not in k})
    else:
        import segmentation_models_pytorch as smp

        cls = smp.UnetPlusPlus if name == "grandqc" else smp.Unet
        net = cls(
            encoder_name="timm-efficientnet-b0", encoder_weights=None, classes=len(model.classes), activation=None
        )
        net.load_state_dict(raw)
    net.eval()
    with open_slide(slide) as s:
        shape, ds = (95, 130), (8.0, 8.0)
        keep, _ = class_maps(model, s, shape, ds, str(tmp_path / model.files[0]))
        img = s.read_downsampled(model.mpp / s.mpp[0])
    px = model.input_px
    h, w = img.shape[:2]
    padded = np.full((-(-h // px) * px, -(-w // px) * px, 3), 255, np.uint8)
    padded[:h, :w] = img
    tiles = [
        padded[y : y + px, x : x + px] for y in range(0, padded.shape[0], px) for x in range(0, padded.shape[1], px)
    ]
    x = (
        prepare(np.stack(tiles), model)
        if model.jpeg_quality
        else ((np.stack(tiles) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    )
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    probs = torch.softmax(out["out"] if isinstance(out, dict) else out, 1).numpy()
    if name == "hest":
        kept = probs[:, 1] > 0.5
    elif name == "grandqc":
        kept = (probs.argmax(1) == 0) & (probs.max(1) >= 0.5)
    else:
        kept = probs.argmax(1) <= 1
    full = np.zeros(padded.shape[:2], np.float32)
    cols = padded.shape[1] // px
    for i, k in enumerate(kept):
        full[(i // cols) * px : (i // cols + 1) * px, (i % cols) * px : (i % cols + 1) * px] = k
    scale = model.mpp / 0.5  # slide px per model px
    want = cv2.resize(
        full,
        (round(padded.shape[1] * scale / ds[0]), round(padded.shape[0] * scale / ds[1])),
        interpolation=cv2.INTER_AREA,
    )[: shape[0], : shape[1]]
    assert ((want >= 0.5) == (keep >= 0.5)).mean() > 0.99
    del TissueSpec


def test_classical_masks_are_unchanged():
    """Otsu masks of real slides: the same pixels as before the models were added (hashes taken from main)."""
    need_shared(SVS)
    from pathweak.config import TissueSpec
    from pathweak.io import open_slide
    from pathweak.tissue import segment_tissue

    want = {
        ("CMU-1-Small-Region.svs", "otsu_saturation"): ((185, 138), 9540, "f74ddb1dc996f12f"),
        ("CMU-1-Small-Region.svs", "otsu_gray"): ((185, 138), 10161, "dc5e153ae3813c0d"),
        ("slidetool_test_dicom_wsi.dcm", "otsu_saturation"): ((616, 250), 62555, "7b0ac688ec9cfb7f"),
        ("slidetool_test_dicom_wsi.dcm", "otsu_gray"): ((616, 250), 71749, "94f5f3b39cc3a586"),
    }
    for (name, method), (shape, n, digest) in want.items():
        with open_slide(SVS.parent / name) as s:
            m = segment_tissue(s, TissueSpec(method=method))
        got = (m.mask.shape, int(m.mask.sum()), hashlib.sha256(np.packbits(m.mask).tobytes()).hexdigest()[:16])
        assert got == (shape, n, digest), (name, method)
        assert m.artifacts is None and m.params == {**m.params, "params": {}}


def test_grandqc_without_segmentation_models_pytorch_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # as if not installed
    with pytest.raises(ConfigError, match=r'needs segmentation-models-pytorch.*pathweak\[tissue\]'):
        build_network(MODELS["grandqc"])
    build_network(MODELS["hest"])  # torchvision only
