"""INS trained end to end on a real-tile cohort (LC25000 pseudo-slides): ``train --head ins
--finetune-encoder`` fine-tunes a pathweak ViT with the INS head's pseudo-labels on batches of tiles, writes
the new encoder (with its provenance) and its features, trains and packages the INS model on them; the test
slides are never seen; bad combinations are one clear error."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file, save_file

from pathweak.errors import ConfigError
from pathweak.train import TrainConfig, predict_slides
from pathweak.train.end_to_end import train_end_to_end
from pathweak.train.finetune import FinetuneConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A pathweak:<dir> encoder: a 2-block ViT-Tiny at 64 px, random weights (the format pretrain writes)."""
    import timm

    folder = tmp_path_factory.mktemp("source")
    kwargs = {"img_size": 64, "dynamic_img_size": False, "global_pool": "avg", "fc_norm": False, "depth": 2}
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **kwargs)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "encoder.safetensors"))
    meta = {"format": "pathweak-encoder/1", "run_name": "source", "timm_model": "vit_tiny_patch16_224",
            "timm_kwargs": kwargs, "arch": "vit_tiny", "embed_dim": 192, "img_size": 64, "patch_size": 16,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "training": {"method": "mae"}}
    (folder / "encoder.json").write_text(json.dumps(meta))
    return folder


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**({"head": "ins", "max_epochs": 3, "min_epochs": 1, "lr": 1e-3, "bootstrap": 0,
                           "device": "cpu"} | kw))


def test_finetuning_reads_batches_of_tiles_never_a_slide(mil_cohort, source, monkeypatch):
    from pathweak.tiling import TileStore
    from pathweak.train import finetune

    stores = sorted((mil_cohort["root"] / "tiles").glob("train_00[0-3].zarr"))
    reads = []
    original = TileStore.read_tiles
    monkeypatch.setattr(TileStore, "read_tiles", lambda self, i: reads.append(len(np.arange(len(self))[i])) or original(self, i))
    monkeypatch.setattr(finetune, "EMBED_BATCH", 8)
    ft = FinetuneConfig(f"pathweak:{source}", epochs=1, warmup_epochs=1, tile_batch=8)
    result = finetune.finetune_ins(stores, [1, 0, 1, 0], 2, ft, _cfg(), torch.device("cpu"), progress=False)
    assert min(len(TileStore.open(s)) for s in stores) == 36 and reads and max(reads) <= 8
    assert sum(reads) == 2 * 4 * 36  # every tile embedded once and seen once by the encoder
    assert len(result.history) == 1 and result.frozen == 0 and result.trainable > 0  # frozen_blocks 0: all train


def test_ins_end_to_end_writes_encoder_and_model(mil_cohort, source, tmp_path):
    ft = FinetuneConfig(f"pathweak:{source}", epochs=2, warmup_epochs=2, tile_batch=8, frozen_blocks=1,
                        encoder_lr=1e-3)
    run = train_end_to_end([mil_cohort["root"] / "tiles"], mil_cohort["labels"], tmp_path / "run", _cfg(), ft,
                           progress=False)
    enc_dir = tmp_path / "run-encoder"
    meta = json.loads((enc_dir / "encoder.json").read_text())
    record = meta["training"]
    labels = pd.read_csv(mil_cohort["labels"])
    test_ids = set(labels.slide_id[labels.split == "test"])
    assert meta["finetuned_from"] == f"pathweak:{source}" and record["method"] == "ins-finetune"
    assert len(record["history"]) == 2 and record["options"]["frozen_blocks"] == 1
    assert record["train_slides"] and not set(record["train_slides"]) & test_ids  # test slides never seen
    assert len(record["train_slides"]) < (labels.split == "train").sum()  # the validation carve neither
    before, after = load_file(str(source / "encoder.safetensors")), load_file(str(enc_dir / "encoder.safetensors"))
    assert torch.equal(before["patch_embed.proj.weight"], after["patch_embed.proj.weight"])  # frozen
    assert torch.equal(before["blocks.0.attn.qkv.weight"], after["blocks.0.attn.qkv.weight"])
    assert not torch.equal(before["blocks.1.attn.qkv.weight"], after["blocks.1.attn.qkv.weight"])  # trained

    s = run.summary
    assert s["finetune"]["encoder"] == f"pathweak:{enc_dir}" and s["head"] == "ins"
    model = json.loads((tmp_path / "run" / "models" / "seed0_fold0" / "model.json").read_text())
    assert model["encoder"]["name"] == f"pathweak:{enc_dir}"
    features = enc_dir / "features" / model["encoder"]["encoder_id"]
    assert len(list(features.glob("*.zarr"))) == len(labels)
    (r,) = predict_slides(tmp_path / "run", [features / "test_000.zarr"], progress=False)
    assert r.predicted in ("normal", "tumour")
    info = json.loads(run_cli("encoders", "info", f"pathweak:{enc_dir}").stdout)
    assert info["finetuned_from"] == f"pathweak:{source}" and info["training"]["method"] == "ins-finetune"


def test_bad_combinations_are_one_clear_error(mil_cohort, source, tmp_path):
    tiles, ft = mil_cohort["root"] / "tiles", FinetuneConfig(f"pathweak:{source}", epochs=1)
    no_split = tmp_path / "labels.csv"
    pd.read_csv(mil_cohort["labels"]).drop(columns="split").to_csv(no_split, index=False)
    cases = [
        (_cfg(head="abmil"), mil_cohort["labels"], ft, "trains the INS head end to end"),
        (_cfg(label_augmentation="rotation"), mil_cohort["labels"], ft, "do not combine"),
        (_cfg(), no_split, ft, "needs a split column"),
        (_cfg(), mil_cohort["labels"], FinetuneConfig("monai:resnet10", weights="random"), "cannot be written back"),
        (_cfg(), mil_cohort["labels"], FinetuneConfig(f"pathweak:{source}", frozen_blocks=3), "has 2 transformer blocks"),
    ]
    for cfg, labels, finetune, phrase in cases:
        with pytest.raises(ConfigError, match=phrase):
            train_end_to_end([tiles], labels, tmp_path / "run", cfg, finetune, progress=False)
        assert not (tmp_path / "run").exists() and not (tmp_path / "run-encoder").exists()
    with pytest.raises(ConfigError, match="--encoder-lr"):
        FinetuneConfig("x", encoder_lr=0)


def test_cli_needs_a_split_column(mil_cohort, source, tmp_path):
    no_split = tmp_path / "labels.csv"
    pd.read_csv(mil_cohort["labels"]).drop(columns="split").to_csv(no_split, index=False)
    proc = run_cli("train", str(mil_cohort["root"] / "tiles"), "--labels", str(no_split), "-o", str(tmp_path / "run"),
                   "--head", "ins", "--finetune-encoder", f"pathweak:{source}", "--device", "cpu")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs a split column" in lines[0] and str(no_split) in lines[0], proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run-encoder").exists()
