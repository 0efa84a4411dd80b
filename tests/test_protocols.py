"""The package ships its type hints (py.typed, packaged by setuptools), and the real classes satisfy the
extension-point protocols of pathweak/protocols.py: a tiny random-init ViT encoder built offline and its
token rows, the feature banks loaded from a real FeatureStore, a TokenBank, the direct TIFF level reader,
and the progress callback. mypy checks the same structurally in CI (.ci/run)."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
from conftest import REPO

from pathweak.protocols import BagSource, FeatureBankLike, LevelReader, ModuleEncoder, ResidentBagSource, TileEncoder


@pytest.mark.parametrize("package", ["pathweak", "pathweak_cli"])
def test_py_typed_is_in_the_package_and_packaged(package):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert resources.files(package).joinpath("py.typed").is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"][package]


def test_protocols_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, pathweak.protocols; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def tiny_encoder():
    from pathweak.encoders import create_encoder

    return create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=1, img_size=32)


def test_encoders_satisfy_the_encoder_protocols(tiny_encoder):
    import torch

    from pathweak.features.tokens import TokenRows

    enc = tiny_encoder
    assert isinstance(enc, ModuleEncoder) and isinstance(enc, TileEncoder)
    rows = TokenRows(enc, pool=1)
    assert isinstance(rows, TileEncoder)
    assert not isinstance(rows, ModuleEncoder)  # not a torch module: extract wraps encoders after .to/.eval
    assert not isinstance(object(), TileEncoder)
    tiles = torch.zeros((2, 32, 32, 3), dtype=torch.uint8)
    assert tuple(enc.embed(tiles).shape) == (2, enc.embed_dim)
    assert tuple(rows.embed(tiles).shape) == (2 * 2 * 2, rows.embed_dim)  # a 2x2 token map per 32 px tile


def test_extract_refuses_token_rows_of_a_foreign_encoder(tmp_path, tiny_encoder):
    """An encoder object that is a ModuleEncoder but not pathweak's Encoder cannot give token rows."""
    from pathweak.errors import ConfigError
    from pathweak.features.extract import _token_encoder

    class Foreign:
        def __init__(self, enc):
            self._enc = enc
            self.info, self.encoder_id, self.embed_dim = enc.info, enc.encoder_id, enc.embed_dim

        def check_tiles(self, is_3d, tile_shape, where):
            self._enc.check_tiles(is_3d, tile_shape, where)

        def embed(self, tiles):
            return self._enc.embed(tiles)

        def to(self, device):
            return self

        def eval(self):
            return self

        def cpu(self):
            return self

    foreign = Foreign(tiny_encoder)
    assert isinstance(foreign, ModuleEncoder)
    assert _token_encoder(tiny_encoder) is tiny_encoder
    with pytest.raises(ConfigError, match="token rows need a pathweak Encoder"):
        _token_encoder(foreign)


def test_banks_satisfy_the_bank_protocols(tmp_path, svs, tiny_encoder):
    from pathweak.config import TileSpec
    from pathweak.features import extract_features
    from pathweak.features.bank import FeatureBank, StreamingFeatureBank, load_feature_bank
    from pathweak.features.tokens import TokenBank
    from pathweak.tiling import TileStore, tile_slides

    (tiled,) = tile_slides([svs], tmp_path, TileSpec(target_mpp=4.0, patch_px=32), progress=False)
    (done,) = extract_features([tiled.store], tiny_encoder, tmp_path, num_workers=0, progress=False)
    assert done.status == "extracted", done.error
    for stream, cls in ((False, FeatureBank), (True, StreamingFeatureBank)):
        bank = load_feature_bank([done.store], device="cpu", stream=stream, progress=False)
        assert type(bank) is cls
        assert isinstance(bank, FeatureBankLike) and isinstance(bank, BagSource)
        assert bank.bag(0).shape == (done.n_tiles, bank.embed_dim) and bank.grid(0).shape == (done.n_tiles, 2)
    with TileStore.open(tiled.store) as store:
        tiles = store.read_tiles(slice(0, 3))
    tokens = TokenBank.from_tiles(tiny_encoder, tiles, ["a", "b", "c"])
    assert isinstance(tokens, BagSource)
    assert not isinstance(tokens, FeatureBankLike)  # bags of tiles, not a cohort's slides
    assert len(tokens) == 3 and tokens.bag(0).shape == (4, tiny_encoder.embed_dim)
    # multi-device training moves each rank's copy of a resident bank in place: every resident bank can
    for resident in (load_feature_bank([done.store], device="cpu", progress=False), tokens):
        assert isinstance(resident, ResidentBagSource)
        assert resident.to("meta") is resident and resident.device.type == "meta"
        assert resident.bag(0).device.type == "meta" and resident.grid(0).device.type == "meta"
    streamed = load_feature_bank([done.store], device="cpu", stream=True, progress=False)
    assert not isinstance(streamed, ResidentBagSource)  # fit_distributed refuses it with the fix


def test_tiff_tile_reader_is_a_level_reader(svs):
    from pathweak.io import TiffTileReader, open_slide

    with open_slide(svs) as slide:
        reader = TiffTileReader.for_slide(slide)
        assert reader is not None
        with reader:
            assert isinstance(reader, LevelReader)
            region: LevelReader = reader
            out = region.read(0, 100, 50, 40, 30)
            assert out.shape == (30, 40, 3) and out.dtype == np.uint8
            expected = np.asarray(slide.read_region((100, 50), 0, (40, 30)))
            assert np.abs(out.astype(int) - expected.astype(int)).mean() < 2
    assert not isinstance(object(), LevelReader)


def test_progress_bar_yields_an_advance_callback():
    from pathweak.progress import progress_bar
    from pathweak.protocols import Advance

    with progress_bar(3, "protocols", enabled=False) as advance:
        callback: Advance = advance
        callback()
        callback(2, description="done", total=1)
