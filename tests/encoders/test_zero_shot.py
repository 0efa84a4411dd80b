"""Zero-shot with CONCH's text tower built from open_clip: CONCH's published text-tower layout checked key by
key on the meta device, the forward against CONCH's own TextTransformer written out from its source, the
tokeniser equal to the reference (transformers' PreTrainedTokenizerFast, as CONCH calls it), and end to end on a
random-weights tower in hub layout: results stores that heatmaps and QuPath exports read."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED
from torch import nn
from torch.nn import functional as F

pytest.importorskip("open_clip")
from pathweak.encoders.text import TEXT_TOWERS, BpeTokenizer, build_tower, check_on_meta, split_checkpoint  # noqa: E402
from pathweak.errors import ConfigError  # noqa: E402

NCT = SHARED / "tiles" / "nct_crc_he_100k_samples"
SPECIALS = ["<pad>", "<start_of_text>", "<end_of_text>"]


def conch_text_layout(layers=12, width=768, vocab=32007, context=128, out=512) -> dict[str, tuple[int, ...]]:
    """CONCH's ``text.*`` tensors and shapes, read off conch/open_clip_custom/transformer.py (TextTransformer
    with embed_cls, no layer scale) and its conch_ViT-B-16.json."""
    shapes = {
        "token_embedding.weight": (vocab, width),
        "positional_embedding": (context, width),
        "cls_emb": (width,),
        "text_projection": (width, out),
        "ln_final.weight": (width,),
        "ln_final.bias": (width,),
    }
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        shapes |= {
            p + "ln_1.weight": (width,), p + "ln_1.bias": (width,),
            p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
            p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
            p + "ln_2.weight": (width,), p + "ln_2.bias": (width,),
            p + "mlp.c_fc.weight": (4 * width, width), p + "mlp.c_fc.bias": (4 * width,),
            p + "mlp.c_proj.weight": (width, 4 * width), p + "mlp.c_proj.bias": (width,),
        }  # fmt: skip
    return shapes


def test_conch_checkpoint_layout_fits_the_open_clip_tower_on_the_meta_device():
    tower = TEXT_TOWERS["conch"]
    with torch.device("meta"):
        ckpt = {f"text.{k}": torch.empty(s) for k, s in conch_text_layout().items()}
        ckpt |= {"visual.proj_contrast": torch.empty(512, 512), "logit_scale": torch.empty(()),
                 "visual.trunk.cls_token": torch.empty(1, 1, 768), "text_decoder.ln_final.weight": torch.empty(768)}  # fmt: skip
    text, proj, scale = split_checkpoint(ckpt, "ckpt")
    check_on_meta(tower, text, "ckpt")
    assert tuple(proj.shape) == (512, 512) and len(text) == 6 + 12 * 12
    text.pop("cls_emb")
    with pytest.raises(ConfigError, match="1 missing"):
        check_on_meta(tower, text, "ckpt")
    with pytest.raises(ConfigError, match="no CONCH text tower"):
        split_checkpoint({k: v for k, v in ckpt.items() if not k.startswith("visual.")}, "vision.bin")


def conch_text_forward(sd: dict[str, torch.Tensor], text: torch.Tensor, heads: int, pad_id: int = 0) -> torch.Tensor:
    """CONCH's TextTransformer.forward (conch/open_clip_custom/transformer.py) written out: class token
    appended, causal mask plus its class-token padding mask (F.pad as CONCH builds it), sequence-first blocks,
    the last token's output through ln_final and the projection."""
    width = sd["token_embedding.weight"].shape[1]
    x = F.embedding(text, sd["token_embedding.weight"])
    seq = text.shape[1] + 1
    x = torch.cat([x, sd["cls_emb"].reshape(1, 1, -1).repeat(len(text), 1, 1)], 1)
    causal = torch.full((seq, seq), float("-inf")).triu_(1)
    cls_mask = F.pad((text != pad_id).unsqueeze(1), (1, 0, seq - 1, 0), value=1.0)
    additive = torch.zeros(cls_mask.shape).masked_fill_(~cls_mask, float("-inf")).repeat_interleave(heads, 0)
    mask = causal[None] + additive
    x = (x + sd["positional_embedding"][:seq]).permute(1, 0, 2)
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        attn = nn.MultiheadAttention(width, heads)
        attn.load_state_dict({k[len(p) + 5 :]: v for k, v in sd.items() if k.startswith(p + "attn.")})
        h = F.layer_norm(x, (width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        x = x + attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = F.layer_norm(x, (width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = F.gelu(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    pooled = F.layer_norm(x.permute(1, 0, 2)[:, -1], (width,), sd["ln_final.weight"], sd["ln_final.bias"])
    return pooled @ sd["text_projection"]


def test_open_clip_tower_equals_conchs_forward():
    """Random weights of a small tower of CONCH's kind, texts of different lengths with padding: the same output."""
    tower = replace(
        TEXT_TOWERS["conch"],
        config={**TEXT_TOWERS["conch"].config, "width": 64, "heads": 4, "layers": 3, "vocab_size": 50},
    )
    torch.manual_seed(0)
    net = build_tower(tower).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    text = torch.zeros(3, 127, dtype=torch.long)
    for row, n in enumerate((5, 17, 127)):
        text[row, :n] = torch.randint(3, 50, (n,))
        text[row, 0], text[row, n - 1] = 1, 2
    with torch.no_grad():
        torch.testing.assert_close(net(text), conch_text_forward(net.state_dict(), text, heads=4), rtol=1e-4, atol=1e-5)


def small_bpe(path: Path) -> Path:
    """A byte-level BPE tokeniser file built like CONCH's (normaliser NFD + strip accents + lowercase, byte-level
    pre-tokeniser with a prefix space, <start_of_text> ... <end_of_text> template, <pad>=0), trained on a few
    pathology sentences."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    corpus = ["an H&E image of adenocarcinoma", "normal colon mucosa with glands", "lymphocytes and stroma",
              "Invasive carcinoma of the lung", "smooth muscle; adipose tissue; débris and mucus"] * 20  # fmt: skip
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<start_of_text> $A <end_of_text>", special_tokens=[("<start_of_text>", 1), ("<end_of_text>", 2)]
    )
    tok.save(str(path))
    return path


def reference_tokens(path: Path, texts: list[str]) -> torch.Tensor:
    """CONCH's tokenize(): transformers' PreTrainedTokenizerFast on the file, 127 tokens, then one pad."""
    from transformers import PreTrainedTokenizerFast

    ref = PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token="<start_of_text>", eos_token="<end_of_text>", pad_token="<pad>"
    )
    ids = ref(texts, max_length=127, add_special_tokens=True, return_token_type_ids=False, truncation=True,
              padding="max_length", return_tensors="pt")["input_ids"]  # fmt: skip
    return F.pad(ids, (0, 1), value=ref.pad_token_id)


TEXTS = [
    "an H&E image of adenocarcinoma.",
    "NORMAL Colon Mucosa",
    "débris",
    "",
    "tumour " * 200,
    "lymphocytes, stroma!",
]


def test_tokeniser_equals_the_reference(tmp_path):
    pytest.importorskip("transformers")
    path = small_bpe(tmp_path / "bpe.json")
    ours = BpeTokenizer(path, TEXT_TOWERS["conch"])(TEXTS)
    assert ours.shape == (len(TEXTS), 128) and int(ours[4, 126]) == 2  # truncated, still ends with <end_of_text>
    assert torch.equal(ours, reference_tokens(path, TEXTS))


@pytest.mark.skipif(
    not os.environ.get("PATHWEAK_CONCH_TOKENIZER"),
    reason="set PATHWEAK_CONCH_TOKENIZER to CONCH's conch_byte_level_bpe_uncased.json",
)
def test_conchs_own_tokeniser_equals_the_reference():
    pytest.importorskip("transformers")
    path = Path(os.environ["PATHWEAK_CONCH_TOKENIZER"])
    assert torch.equal(BpeTokenizer(path, TEXT_TOWERS["conch"])(TEXTS), reference_tokens(path, TEXTS))


def test_zero_shot_end_to_end_on_a_random_tower_in_hub_layout(tmp_path, monkeypatch):
    """CONCH features of a slide's tiles (random vision weights), a small random text tower of CONCH's kind saved as
    CONCH's whole checkpoint in a Hugging Face cache with its tokeniser beside it; `pathweak zero-shot` writes
    results stores that `pathweak export` turns into QuPath GeoJSON."""
    from typer.testing import CliRunner

    from pathweak.features import extract_features
    from pathweak.heatmap import read_results
    from pathweak.synthetic import make_sample_cohort
    from pathweak.tiling import tile_slides
    from pathweak_cli.main import app

    small = replace(
        TEXT_TOWERS["conch"],
        config={**TEXT_TOWERS["conch"].config, "width": 64, "heads": 4, "layers": 2, "vocab_size": 300},
    )
    monkeypatch.setitem(TEXT_TOWERS, "conch", small)
    snap = tmp_path / "hf" / "hub" / "models--MahmoodLab--conch" / "snapshots" / "c0ffee"
    snap.mkdir(parents=True)
    torch.manual_seed(0)
    ckpt = {f"text.{k}": v for k, v in build_tower(small).state_dict().items()}
    ckpt |= {"visual.proj_contrast": torch.randn(512, 512) * 512**-0.5, "logit_scale": torch.tensor(np.log(1 / 0.07)),
             "text_decoder.ln_final.weight": torch.ones(64)}  # fmt: skip
    torch.save(ckpt, snap / "pytorch_model.bin")
    small_bpe(snap / "conch_byte_level_bpe_uncased.json")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))

    [slide] = make_sample_cohort(tmp_path / "cohort", n_slides=1, size=(896, 672))
    [tiled] = tile_slides([slide.path], tmp_path, progress=False)
    [res] = extract_features([tiled.store], "conch", tmp_path, weights="random", progress=False, num_workers=0)
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("classes:\n  tumor: [adenocarcinoma, carcinoma]\n  normal: normal colon mucosa\n"
                       "templates: ['an H&E image of CLASSNAME.', 'CLASSNAME']\n")  # fmt: skip
    result = CliRunner().invoke(
        app,
        [
            "zero-shot",
            str(Path(res.store).parent),
            "--prompts",
            str(prompts),
            "-o",
            str(tmp_path / "o"),
            "--topk",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    table = read_results(row["results"])
    probs = np.stack([table.scores["prob_tumor"], table.scores["prob_normal"]], 1)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert row["predicted"] in ("tumor", "normal") and abs(sum(row["slide_scores"].values()) - 1) < 1e-5
    assert (Path(row["results"]).parent / "predictions.csv").exists()
    exported = CliRunner().invoke(
        app, ["export", row["results"], "--format", "geojson", "-o", str(tmp_path / "qp.geojson")]
    )
    assert exported.exit_code == 0, exported.output
    features = json.loads((tmp_path / "qp.geojson").read_text())["features"]
    assert len(features) == tiled.n_tiles > 0 and "prob_tumor" in features[0]["properties"]["measurements"]
    # features of another encoder, a bad prompts file: one clear error each
    bad = CliRunner().invoke(
        app,
        ["zero-shot", str(Path(res.store).parent), "--prompts", str(tmp_path / "none.yaml"), "-o", str(tmp_path / "x")],
    )
    assert bad.exit_code == 2 and "none.yaml: config file not found" in bad.output
    (tmp_path / "one.yaml").write_text("classes: {tumor: carcinoma}\n")
    one = CliRunner().invoke(
        app,
        ["zero-shot", str(Path(res.store).parent), "--prompts", str(tmp_path / "one.yaml"), "-o", str(tmp_path / "x")],
    )
    assert one.exit_code == 2 and "needs `classes:` (at least two" in one.output


def test_without_open_clip_the_error_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "open_clip.transformer", None)
    with pytest.raises(ConfigError, match=r"needs open-clip-torch.*pathweak\[zeroshot\]"):
        build_tower(TEXT_TOWERS["conch"])
    with pytest.raises(ConfigError, match="no text tower for musk: BEiT3"):
        from pathweak.encoders.text import get_text_tower

        get_text_tower("musk")
