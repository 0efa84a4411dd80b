"""The encoder registry: families, weights loading, clear errors when weights are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathweak.encoders import create_encoder, list_encoders
from pathweak.errors import ConfigError


def test_timm_without_weights_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs local weights; nothing is downloaded") as err:
        create_encoder("timm:vit_small_patch16_224")
    assert "--weights FILE" in str(err.value)
    with pytest.raises(ConfigError, match="MahmoodLab/UNI"):
        create_encoder("uni")
    with pytest.raises(ConfigError, match="resnet50-11ad3fa6.pth"):
        create_encoder("torchvision:resnet50_trunc")
    with pytest.raises(ConfigError, match="timm has no model"):
        create_encoder("timm:not_a_model", weights="random")
    with pytest.raises(ConfigError, match="family:name"):
        create_encoder("vit_small")
    with pytest.raises(ConfigError, match="unknown encoder family 'hf'"):
        create_encoder("hf:owkin/phikon", weights="random")


def test_timm_weights_file_round_trip(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    net = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2, img_size=64)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pth")
    x = torch.rand(2, 3, 64, 64)
    a = create_encoder("timm:vit_tiny_patch16_224", weights=tmp_path / "w.safetensors", depth=2, img_size=64)
    b = create_encoder("timm:vit_tiny_patch16_224", weights=tmp_path / "w.pth", depth=2, img_size=64)
    with torch.no_grad():
        assert torch.allclose(a(x), net.eval()(x), atol=1e-6) and torch.allclose(b(x), a(x), atol=1e-6)
    assert a.embed_dim == 192 and a.info.img_size == 64
    again = create_encoder("timm:vit_tiny_patch16_224", weights=tmp_path / "w.safetensors", depth=2, img_size=64)
    assert a.encoder_id == again.encoder_id != b.encoder_id  # the id follows the weights file's bytes
    assert a.encoder_id != create_encoder("timm:vit_tiny_patch16_224", weights="random", depth=2, img_size=64).encoder_id
    with pytest.raises(ConfigError, match="do not fit"):
        create_encoder("timm:vit_tiny_patch16_224", weights=tmp_path / "w.safetensors", depth=3, img_size=64)


def test_random_init_is_explicit_and_seeded():
    a = create_encoder("timm:vit_tiny_patch16_224", weights="random:1", depth=1, img_size=32)
    b = create_encoder("timm:vit_tiny_patch16_224", weights="random:1", depth=1, img_size=32)
    c = create_encoder("timm:vit_tiny_patch16_224", weights="random:2", depth=1, img_size=32)
    tiles = torch.randint(0, 255, (2, 48, 48, 3), dtype=torch.uint8)
    assert torch.equal(a.embed(tiles), b.embed(tiles)) and not torch.equal(a.embed(tiles), c.embed(tiles))
    assert "random1" in a.encoder_id


def test_resnet50_trunc_from_a_local_file(tmp_path):
    from torchvision.models import resnet50

    torch.save(resnet50().state_dict(), tmp_path / "resnet50.pth")
    enc = create_encoder("torchvision:resnet50_trunc", weights=tmp_path / "resnet50.pth", img_size=64)
    feats = enc.embed(torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8))
    assert feats.shape == (2, 1024) and enc.embed_dim == 1024


def test_list_names_every_family():
    names = [r["name"] for r in list_encoders()]
    assert {"pathweak:<dir>", "timm:<model name>", "torchvision:resnet50_trunc", "uni"} <= set(names)


def test_a_tuple_and_a_list_kwarg_give_one_encoder_id():
    from pathweak.encoders.weights import encoder_id

    ids = {encoder_id("timm", "vit", "random:1", {"img_size": v}) for v in [(32, 32), [32, 32], np.array([32, 32])]}
    assert len(ids) == 1 and ids != {encoder_id("timm", "vit", "random:1", {"img_size": [48, 48]})}
