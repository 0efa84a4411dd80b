"""Preset weights resolution and its errors: nothing found (the places and the download command), the
wrong architecture's weights, missing or unexpected keys, a snapshot folder, the repo-id spellings, the
transformers install hint; and random initialisation leaving the process's random state alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LC25000, need_shared
from PIL import Image
from test_encoder_presets import (
    HUB,
    PRESETS,
    hub_layout,
    random_network,
    write_snapshot,
)

from pathweak.encoders import create_encoder, preset_info
from pathweak.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    yield cache
    shutil.rmtree(tmp_path / "hf", ignore_errors=True)


def small_state(name: str = "kaiko-s16") -> dict:
    return hub_layout(name, random_network(HUB[name][0]))


def test_nothing_found_lists_the_places_and_the_download_command(hf_cache):
    with pytest.raises(ConfigError) as err:
        create_encoder("uni")
    text = str(err.value)
    assert "\n" not in text and "nothing is downloaded" in text
    assert str(hf_cache / "models--MahmoodLab--UNI") in text and str(hf_cache / "models--MahmoodLab--uni") in text
    # the command of the installed huggingface_hub (2.x here: only `hf`)
    assert "`hf download MahmoodLab/UNI`" in text and "Request access on https://huggingface.co/MahmoodLab/UNI" in text
    assert "(`hf auth login`)" in text and "huggingface-cli" not in text
    with pytest.raises(ConfigError, match=r"hf download MahmoodLab/hest-bench fm_v1/ctranspath/CHIEF_CTransPath.pth --repo-type dataset"):
        create_encoder("chief")
    with pytest.raises(ConfigError, match="github.com/Xiyue-Wang/TransPath"):
        create_encoder("ctranspath")
    with pytest.raises(ConfigError, match="weights file or folder not found"):
        create_encoder("kaiko-s16", weights=hf_cache / "nope.safetensors")
    with pytest.raises(ConfigError, match="not supported: a BEiT3"):
        create_encoder("musk")


def small_tile_store(folder, n: int = 2, mpp: float | None = 0.5, side: int = 32):
    """A real TileStore of ``n`` generated images (``side`` px each)."""
    import cv2
    import numpy as np

    from pathweak.config import StoreSpec
    from pathweak.tiling.images import images_to_store

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        files.append(folder / f"img{i}.png")
        cv2.imwrite(str(files[-1]), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    return images_to_store(files, folder / "tiles.zarr", side, StoreSpec(shard_tiles=4), mpp, progress=False)


def test_nothing_found_from_the_cli(hf_cache):
    from typer.testing import CliRunner

    from pathweak_cli.main import app

    store = small_tile_store(hf_cache.parent / "images")
    result = CliRunner().invoke(app, ["extract", str(store.path), "--encoder", "virchow2", "--out",
                                      str(hf_cache.parent / "out")])
    assert result.exit_code == 2, result.output
    assert not (hf_cache.parent / "out").exists()
    assert "hf download paige-ai/Virchow2" in result.output and "models--paige-ai--Virchow2" in result.output
    table = CliRunner().invoke(app, ["encoders", "list"])
    assert table.exit_code == 0 and "uni2-h" in table.output and "not supported" in table.output
    assert "`hf download <hub repo>`" in table.output and "huggingface-cli" not in table.output
    listed = CliRunner().invoke(app, ["encoders", "list", "--json"])
    assert listed.exit_code == 0
    rows = {r["name"]: r for r in json.loads(listed.output)["presets"]}
    assert rows["virchow2"]["found"] is None and rows["virchow2"]["dim"] == 2560
    info = CliRunner().invoke(app, ["encoders", "info", "gigapath"])
    record = json.loads(info.output)
    assert record["crop_pct"] == 0.875 and record["kwargs"]["patch_size"] == 16 and record["found"] is None
    assert any("models--prov-gigapath--prov-gigapath" in p for p in record["looked"])
    unsupported = CliRunner().invoke(app, ["encoders", "info", "hibou-l"])
    assert unsupported.exit_code == 2 and "not supported" in unsupported.output


def test_wrong_architecture_weights_are_an_error(hf_cache, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(small_state("kaiko-s16"), str(path))  # ViT-S/16 weights for the ViT-S/8 preset
    with pytest.raises(ConfigError, match=r"do not fit lunit-s8.*another shape.*patch_embed.proj.weight"):
        create_encoder("lunit-s8", weights=path)
    with pytest.raises(ConfigError, match="hold no visual.\\* keys"):
        create_encoder("conch", weights=path)
    # the hub config of the snapshot names another architecture
    write_snapshot(hf_cache, "lunit-s16", small_state("kaiko-s16"), {"architecture": "vit_base_patch16_224"})
    with pytest.raises(ConfigError, match="hub config describes another model"):
        create_encoder("lunit-s16")


def test_missing_or_unexpected_keys_are_an_error(tmp_path):
    from safetensors.torch import save_file

    state = small_state()
    missing = {k: v for k, v in state.items() if k != "blocks.3.attn.qkv.weight"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ConfigError, match=r"1 missing \(e.g. \['blocks.3.attn.qkv.weight'\]\)"):
        create_encoder("kaiko-s16", weights=tmp_path / "missing.safetensors")
    extra = {**state, "head.weight": torch.zeros(10, 384)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ConfigError, match=r"1 unexpected \(e.g. \['head.weight'\]\)"):
        create_encoder("kaiko-s16", weights=tmp_path / "extra.safetensors")


def test_snapshot_folder_and_alias_spellings(hf_cache, tmp_path):
    from safetensors.torch import save_file

    state = small_state()
    folder = tmp_path / "snapshot"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_small_patch16_224"}))
    enc = create_encoder("kaiko-s16", weights=folder)
    assert enc.info.extra["weights_source"] == "folder" and enc.embed_dim == 384
    assert preset_info("kaiko-s16", folder)["hub_config"] == str(folder / "config.json")
    # a cache populated under the id TRIDENT used before the Kaiko L/14 repo was renamed is found too
    preset = PRESETS["kaiko-l14"]
    old = preset.repo_aliases[0]
    target = hf_cache / f"models--{old.replace('/', '--')}" / "snapshots" / "abc" / "model.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")  # located, not loaded: the file's presence is what the lookup checks
    assert preset_info("kaiko-l14")["found"] == str(target)
    with pytest.raises(ConfigError, match="cannot read the weights"):
        create_encoder("kaiko-l14")


def test_transformers_missing_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ConfigError, match=r'pip install "pathweak\[hf\]"'):
        create_encoder("phikon", weights="random")


def test_random_init_does_not_reseed_the_process():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = create_encoder("kaiko-s16", weights="random:5")
    create_encoder("timm:vit_tiny_patch16_224", weights="random:1", depth=1, img_size=32)
    assert torch.equal(torch.rand(3), expected)
    b = create_encoder("kaiko-s16", weights="random:5")
    c = create_encoder("kaiko-s16", weights="random:6")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert a.encoder_id.startswith("kaiko-s16-random5-") and a.encoder_id != c.encoder_id


def test_embedding_rule_override():
    enc = create_encoder("kaiko-s16", weights="random", embedding="cls+mean")
    assert enc.embed_dim == 768 and enc.info.extra["embedding"] == "cls+mean"
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 768)
    assert enc.encoder_id != create_encoder("kaiko-s16", weights="random").encoder_id
    with pytest.raises(ConfigError, match="unknown embedding rule"):
        create_encoder("kaiko-s16", weights="random", embedding="max")


def test_preset_transform_crops_like_the_toolkits():
    """GigaPath: Resize(256) + CenterCrop(224) of a 256 px tile is its centre 224 px."""
    from pathweak.encoders.base import Encoder, EncoderInfo

    p = PRESETS["gigapath"]
    info = EncoderInfo(name="t", encoder_id="t", embed_dim=1, img_size=p.img_size, mean=p.mean, std=p.std,
                       interpolation=p.interpolation, crop_pct=p.crop_pct)
    enc = Encoder(torch.nn.Identity(), info)
    tiles = torch.randint(0, 256, (1, 256, 256, 3), dtype=torch.uint8)
    x = enc.preprocess(tiles)
    centre = (tiles[:, 16:240, 16:240].permute(0, 3, 1, 2).float() / 255 - enc.mean) / enc.std
    assert x.shape == (1, 3, 224, 224) and torch.allclose(x, centre, atol=1e-5)


def test_cpu_resize_on_uint8_matches_the_float_resize():
    """The CPU resizes uint8 tiles before they become float: within one grey level (bilinear) of the
    float resize, and exactly the float transform when no resize is needed."""
    from pathweak.encoders.base import Encoder, EncoderInfo

    need_shared(LC25000)
    photo = sorted((LC25000 / "lung_aca").glob("*.jpeg"))[0]
    enc = Encoder(torch.nn.Identity(), EncoderInfo(name="t", encoder_id="t", embed_dim=1, img_size=96))
    tiles = torch.from_numpy(np.asarray(Image.open(photo).convert("RGB"))[:224, :224].copy())[None]
    fast = enc.preprocess(tiles)
    slow = torch.nn.functional.interpolate(tiles.permute(0, 3, 1, 2).float() / 255, size=(96, 96), mode="bilinear",
                                           antialias=True, align_corners=False)
    slow = (slow - enc.mean) / enc.std
    assert fast.shape == slow.shape == (1, 3, 96, 96)
    grey_levels = ((fast - slow) * enc.std * 255).abs()
    assert grey_levels.max() <= 1.0 and grey_levels.mean() < 0.3
    same = tiles[:, :96, :96]
    exact = (same.permute(0, 3, 1, 2).float() / 255 - enc.mean) / enc.std
    assert torch.allclose(enc.preprocess(same), exact, atol=1e-5)


def test_token_maps_of_presets():
    enc = create_encoder("kaiko-s16", weights="random", img_size=32)
    tiles = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    assert enc.token_map(tiles).shape == (1, 384, 2, 2)
    for name in ("ctranspath", "phikon"):  # a Swin feature map and a transformers model: refused, not garbage
        with pytest.raises(ConfigError, match="has no patch tokens"):
            create_encoder(name, weights="random").require_tokens()


def test_the_download_command_is_the_one_the_installed_hub_provides():
    """huggingface_hub 1.x and 2.x install only `hf`; `hf` exists since 0.34; older ones have huggingface-cli."""
    from importlib.metadata import version

    from pathweak.hub import hub_cli

    assert hub_cli("2.4.0") == hub_cli("1.0.1") == hub_cli("0.34.0") == "hf"
    assert hub_cli("0.33.5") == hub_cli("0.20.0") == "huggingface-cli"
    installed = hub_cli(version("huggingface_hub"))
    assert preset_info("uni")["download"] == f"{installed} download MahmoodLab/UNI"
    assert shutil.which(installed) or shutil.which(installed, path=str(Path(sys.executable).parent)), installed


def test_missing_weights_fail_before_torch_is_imported(hf_cache, tmp_path):
    """`pathweak extract --encoder uni` without the weights: the error comes before the model libraries
    load (it took 14 s when it came after them)."""
    store = small_tile_store(tmp_path / "images")
    code = (
        "import sys; from typer.testing import CliRunner; from pathweak_cli.main import app; "
        f"r = CliRunner().invoke(app, ['extract', r'{store.path}', '--encoder', 'uni', '-o', r'{tmp_path / 'out'}']); "
        "print(r.exit_code, 'torch' in sys.modules); print(r.output)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    first, output = proc.stdout.split("\n", 1)
    assert first == "2 False", proc.stdout + proc.stderr
    assert "no weights for uni on this machine" in output and "hf download MahmoodLab/UNI" in output
