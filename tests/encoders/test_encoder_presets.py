"""Every preset loads through the real loading path: its architecture built here independently (timm /
transformers with the kwargs the facts file records), random weights written in the hub's own layout
(config.json where the hub has one, the hub's file name and key names) into a temporary Hugging Face
cache, the encoder created offline through the preset, its embeddings compared with a direct forward of
the same weights. ViT-L and bigger models are checked on the meta device (keys and shapes) by default
and loaded for real under ``-m slow``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pathweak.encoders import PRESETS, create_encoder, preset_rows
from pathweak.encoders.build import build_network, hub_state_dict, target_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def _swiglu() -> dict[str, Any]:
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU}


def _timm(arch: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        extra = _swiglu() if kwargs.pop("swiglu", False) else {}
        return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs, **extra)

    return make


def cls_token(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.forward_features(x)[:, 0]


def cls_mean(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    t = net.forward_features(x)
    return torch.cat([t[:, 0], t[:, net.num_prefix_tokens :].mean(1)], -1)


class ConchReference(nn.Module):
    """CONCH's VisualModel.forward_no_head (vision_tower.py) with the checkpoint's parameter names."""

    def __init__(self, trunk: nn.Module, d_model: int, context: int, proj: bool):
        super().__init__()
        self.trunk = trunk
        pool = nn.Module()
        pool.query = nn.Parameter(torch.randn(1, d_model))
        pool.attn = nn.MultiheadAttention(d_model, 8, kdim=context, vdim=context)
        pool.ln_q, pool.ln_k = nn.LayerNorm(d_model), nn.LayerNorm(context)
        self.attn_pool_contrast = pool
        self.ln_contrast = nn.LayerNorm(d_model)
        if proj:
            self.proj_contrast = nn.Parameter(torch.randn(d_model, d_model))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        p = self.attn_pool_contrast
        tokens = p.ln_k(self.trunk(x)).permute(1, 0, 2)
        q = p.ln_q(p.query).unsqueeze(1).expand(-1, tokens.shape[1], -1)
        return self.ln_contrast(p.attn(q, tokens, tokens, need_weights=False)[0].permute(1, 0, 2)[:, 0])


def _conch(arch: str, d_model: int, context: int, proj: bool, **kw: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        trunk = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="", **kw)
        return ConchReference(trunk, d_model, context, proj)

    return make


def _swin() -> nn.Module:
    import timm

    from pathweak.encoders.modules import ConvStem

    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, embed_layer=ConvStem)


def _hf(cls_name: str, **config: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        transformers = pytest.importorskip("transformers")
        cls = getattr(transformers, cls_name)
        extra = {"add_pooling_layer": False} if cls_name == "ViTModel" else {}
        return cls(cls.config_class(**config), **extra)

    return make


def hf_cls(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net(pixel_values=x).last_hidden_state[:, 0]


def hf_cls_mean(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = net(pixel_values=x).last_hidden_state
    return torch.cat([h[:, 0], h[:, 1:].mean(1)], -1)


def old_swin_layout(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, Any]:
    """timm Swin keys as the original CTransPath checkpoints hold them: PatchMerging at the end of a
    stage (``layers.N.downsample`` -> ``layers.N-1``), the relative position index buffers persisted,
    everything under ``model``."""
    import re

    out = {re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k): v
           for k, v in state.items()}
    for name, buf in net.named_buffers():
        if name.endswith("relative_position_index"):
            out[name] = buf.clone()
    return {"model": out}


VIT_L = {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True}
G_DINO = {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False}
#: name -> (reference builder, direct embedding, hub config.json or None, key layout, heavy)
HUB: dict[str, tuple[Callable[[], nn.Module], Callable[..., torch.Tensor], dict | None, str, bool]] = {
    "uni": (_timm("vit_large_patch16_224", **VIT_L), cls_token, {"architecture": "vit_large_patch16_224"}, "timm", True),
    "uni2-h": (_timm("vit_giant_patch14_224", img_size=224, patch_size=14, depth=24, num_heads=24, init_values=1e-5,
                     embed_dim=1536, mlp_ratio=2.66667 * 2, no_embed_class=True, reg_tokens=8, dynamic_img_size=True,
                     swiglu=True), cls_token, {"architecture": "vit_giant_patch14_224"}, "timm", True),
    "conch": (_conch("vit_base_patch16_224", 512, 768, True, img_size=448, dynamic_img_size=True),
              lambda net, x: net.embed(x), None, "conch", False),
    "conch-v1.5": (_conch("vit_large_patch16_224", 768, 1024, False, img_size=448, init_values=1.0,
                          dynamic_img_size=True), lambda net, x: net.embed(x), None, "plain", True),
    "virchow": (_timm("vit_huge_patch14_224", img_size=224, init_values=1e-5, mlp_ratio=5.3375, dynamic_img_size=True,
                      swiglu=True), cls_mean,
                {"architecture": "vit_huge_patch14_224", "model_args": {"img_size": 224, "init_values": 1e-5,
                 "num_classes": 0, "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True}}, "timm", True),
    "virchow2": (_timm("vit_huge_patch14_224", img_size=224, init_values=1e-5, mlp_ratio=5.3375, reg_tokens=4,
                       dynamic_img_size=True, swiglu=True), cls_mean,
                 {"architecture": "vit_huge_patch14_224", "model_args": {"reg_tokens": 4, "global_pool": ""}}, "timm",
                 True),
    "h-optimus-0": (_timm("vit_giant_patch14_reg4_dinov2", **G_DINO), cls_token,
                    {"architecture": "vit_giant_patch14_reg4_dinov2", "num_classes": 0, "global_pool": "token"},
                    "timm", True),
    "h-optimus-1": (_timm("vit_giant_patch14_reg4_dinov2", **G_DINO), cls_token,
                    {"architecture": "vit_giant_patch14_reg4_dinov2"}, "timm", True),
    "h0-mini": (_timm("vit_base_patch14_reg4_dinov2", img_size=224, init_values=1e-5, mlp_ratio=5.33334,
                      dynamic_img_size=False, swiglu=True), cls_mean,
                {"architecture": "vit_base_patch14_reg4_dinov2", "model_args": {"mlp_ratio": 5.33334, "reg_tokens": 4,
                 "init_values": 1e-5, "global_pool": ""}}, "timm", False),
    "phikon": (_hf("ViTModel", hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   patch_size=16, image_size=224, layer_norm_eps=1e-12, qkv_bias=True), hf_cls, "hf", "plain", False),
    "phikon-v2": (_hf("Dinov2Model", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=16,
                      image_size=224, layerscale_value=1e-5), hf_cls, "hf", "plain", True),
    "gigapath": (_timm("vit_giant_patch14_dinov2", img_size=224, in_chans=3, patch_size=16, embed_dim=1536, depth=40,
                       num_heads=24, init_values=1e-5, mlp_ratio=5.33334, dynamic_img_size=True), cls_token,
                 {"architecture": "vit_giant_patch14_dinov2", "model_args": {"patch_size": 16, "img_size": 224}},
                 "timm", True),
    "ctranspath": (_swin, lambda net, x: net(x), None, "swin", False),
    "chief": (_swin, lambda net, x: net(x), None, "swin", False),
    "lunit-s8": (_timm("vit_small_patch8_224", img_size=224, dynamic_img_size=True), cls_token,
                 {"architecture": "vit_small_patch8_224"}, "timm", False),
    "lunit-s16": (_timm("vit_small_patch16_224", img_size=224, dynamic_img_size=True), cls_token,
                  {"architecture": "vit_small_patch16_224"}, "timm", False),
    "kaiko-s8": (_timm("vit_small_patch8_224", dynamic_img_size=True), cls_token,
                 {"architecture": "vit_small_patch8_224"}, "timm", False),
    "kaiko-s16": (_timm("vit_small_patch16_224", dynamic_img_size=True), cls_token,
                  {"architecture": "vit_small_patch16_224"}, "timm", False),
    "kaiko-b8": (_timm("vit_base_patch8_224", dynamic_img_size=True), cls_token,
                 {"architecture": "vit_base_patch8_224"}, "timm", False),
    "kaiko-b16": (_timm("vit_base_patch16_224", dynamic_img_size=True), cls_token,
                  {"architecture": "vit_base_patch16_224"}, "timm", False),
    "kaiko-l14": (_timm("vit_large_patch14_reg4_dinov2", img_size=224, dynamic_img_size=True), cls_token,
                  {"architecture": "vit_large_patch14_reg4_dinov2"}, "timm", True),
    "gpfm": (_timm("vit_large_patch14_dinov2", img_size=224, init_values=1e-5, dynamic_img_size=True), cls_token,
             None, "wrapped", True),
    "midnight": (_hf("Dinov2Model", hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, patch_size=14,
                     image_size=224, mlp_ratio=4, use_swiglu_ffn=True, layerscale_value=1e-5), hf_cls_mean, "hf",
                 "plain", True),
}


def hub_layout(name: str, net: nn.Module) -> dict[str, Any]:
    """The state dict as the hub file holds it (CONCH: the whole CoCa under visual.*, text keys too)."""
    layout = HUB[name][3]
    state = {k: v.detach() for k, v in net.state_dict().items()}
    if layout == "conch":
        state = {f"visual.{k}": v for k, v in state.items()}
        state["visual.attn_pool_caption.query"] = torch.zeros(256, 512)
        state["text.token_embedding.weight"] = torch.zeros(10, 768)
        state["logit_scale"] = torch.zeros(())
    elif layout == "swin":
        state = old_swin_layout(state, net)
    elif layout == "wrapped":  # GPFM's training checkpoint
        state = {"teacher": {f"backbone.{k}": v for k, v in state.items()}}
    return state


def write_snapshot(cache: Path, name: str, state: dict[str, Any], config: dict | None) -> Path:
    """A hub snapshot in the Hugging Face cache layout: <cache>/<type>s--Org--Name/{refs/main,snapshots/<rev>/...}."""
    from safetensors.torch import save_file

    preset = PRESETS[name]
    repo_dir = cache / f"{preset.repo_type}s--{preset.repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / SNAPSHOT
    target = snap / preset.files[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(SNAPSHOT)
    if target.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    else:
        torch.save(state, target)
    if config is not None:
        (snap / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield cache
    shutil.rmtree(tmp_path / "hf", ignore_errors=True)  # hundreds of MB per model: not kept in pytest's tmp


def _config(name: str, net: nn.Module) -> dict | None:
    config = HUB[name][2]
    if config == "hf":
        return net.config.to_dict()
    return config


def random_network(make: Callable[[], nn.Module], seed: int = 7) -> nn.Module:
    """The reference network with random values everywhere (built on meta and filled: faster than the
    architectures' own init on a busy CPU). Matrices ~N(0, 0.05), vectors ~N(0, 1) (norm scales and biases
    too, so a swapped LayerNorm shows), BatchNorm variances in [0.5, 1.5]."""
    with torch.device("meta"):
        net = make()
    net = net.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            if not t.is_floating_point():
                t.zero_()
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.05 if t.ndim >= 2 else 1.0))
    if any(n.endswith("relative_position_index") for n, _ in net.named_buffers()):  # computed buffers: rebuild them
        ref = make()
        own = dict(net.named_buffers())
        with torch.no_grad():
            for n, b in ref.named_buffers():
                if n not in net.state_dict():
                    own[n].copy_(b)
    return net.eval()


def _round_trip(name: str, hf_cache: Path, probe: int | None = None) -> None:
    make, direct, _, _, _ = HUB[name]
    net = random_network(make)
    preset = PRESETS[name]
    if preset.repo:
        write_snapshot(hf_cache, name, hub_layout(name, net), _config(name, net))
        enc = create_encoder(name)
        assert enc.info.extra["weights_source"] == "hf-cache"
    else:  # CTransPath: not on the hub, a file from the authors
        path = hf_cache.parent / preset.files[0]
        torch.save(hub_layout(name, net), path)
        enc = create_encoder(name, weights=path)
    assert enc.embed_dim == preset.embed_dim
    if probe is None:  # the whole path: uint8 tiles -> the preset's transform -> embedding
        tiles = torch.randint(0, 256, (1, preset.patch_px, preset.patch_px, 3), dtype=torch.uint8)
        got = enc.embed(tiles)
        with torch.no_grad():
            want = direct(net, enc.preprocess(tiles))
    else:  # the backbone on a smaller input (dynamic-size ViTs), to keep the default run fast on 2 cores
        x = torch.randn(2, 3, probe, probe)
        with torch.no_grad():
            got, want = enc(x), direct(net, x)
    assert got.shape[1] == preset.embed_dim == want.shape[1] and want.abs().mean() > 0.05  # not a trivial match
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


#: presets whose backbone is compared on a smaller input than theirs in the default run (side in px)
PROBE = {"conch": 112, "kaiko-b8": 64, "kaiko-s8": 64, "lunit-s8": 64, "kaiko-b16": 112, "phikon": None}


LIGHT = [n for n, h in HUB.items() if not h[4]]
HEAVY = [n for n, h in HUB.items() if h[4]]


def test_every_preset_has_a_hub_layout_test():
    assert set(HUB) == set(PRESETS)


@pytest.mark.parametrize("name", LIGHT)
def test_preset_loads_from_the_hf_cache(name, hf_cache):
    _round_trip(name, hf_cache, PROBE.get(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAVY)
def test_big_preset_loads_from_the_hf_cache(name, hf_cache):
    fixed = not PRESETS[name].kwargs.get("dynamic_img_size", PRESETS[name].kind == "hf")
    _round_trip(name, hf_cache, None if fixed else 112)


@pytest.mark.parametrize("name", HEAVY)
def test_big_preset_keys_and_shapes_on_meta(name):
    """The hub layout of the ViT-L/H/g models maps onto the preset's network key for key and shape."""
    make = HUB[name][0]
    with torch.device("meta"):
        ref = make()
        preset = PRESETS[name]
        net = build_network(preset)
        module = target_module(preset, net)
        state = hub_state_dict(preset, _unwrap(hub_layout(name, ref)), module, "hub")
        own = module.state_dict()
        assert sorted(state) == sorted(own)
        assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in own.items()}
        out = net(torch.zeros(1, 3, preset.img_size, preset.img_size))
    assert tuple(out.shape) == (1, preset.embed_dim)
    millions = sum(p.numel() for p in net.parameters()) / 1e6
    assert abs(millions - preset.params_m) / preset.params_m < 0.03


def _unwrap(state: dict[str, Any]) -> dict[str, Any]:
    from pathweak.encoders.weights import WRAPPERS

    for key in WRAPPERS:
        if key in state and isinstance(state[key], dict):
            return state[key]
    return state


def test_architecture_facts_on_meta():
    """Shapes the facts file records, from the preset networks (not from the references above)."""
    with torch.device("meta"):
        nets = {n: target_module(PRESETS[n], build_network(PRESETS[n])) for n in
                ("uni2-h", "virchow2", "gigapath", "h0-mini", "h-optimus-0", "conch", "ctranspath")}
    shapes = {n: {k: tuple(v.shape) for k, v in m.state_dict().items()} for n, m in nets.items()}
    assert shapes["uni2-h"]["blocks.0.mlp.fc1.weight"] == (8192, 1536) and shapes["uni2-h"]["reg_token"] == (1, 8, 1536)
    assert shapes["uni2-h"]["pos_embed"] == (1, 256, 1536)  # no_embed_class: 16x16 patches only
    assert shapes["virchow2"]["blocks.0.mlp.fc1.weight"] == (6832, 1280) and shapes["virchow2"]["reg_token"] == (1, 4, 1280)
    assert shapes["gigapath"]["patch_embed.proj.weight"] == (1536, 3, 16, 16) and len(nets["gigapath"].blocks) == 40
    assert shapes["h-optimus-0"]["reg_token"] == (1, 4, 1536)
    assert nets["virchow2"].num_prefix_tokens == 5 and nets["uni2-h"].num_prefix_tokens == 9
    assert shapes["conch"]["attn_pool_contrast.attn.k_proj_weight"] == (512, 768)
    assert shapes["conch"]["trunk.pos_embed"] == (1, 785, 768)  # 448 px, 28x28 + CLS
    stem = {k: v for k, v in shapes["ctranspath"].items() if k.startswith("patch_embed.proj.") and k.endswith("weight")}
    assert stem == {"patch_embed.proj.0.weight": (12, 3, 3, 3), "patch_embed.proj.1.weight": (12,),
                    "patch_embed.proj.3.weight": (24, 12, 3, 3), "patch_embed.proj.4.weight": (24,),
                    "patch_embed.proj.6.weight": (96, 24, 1, 1)}


def test_list_shows_where_weights_are_found(hf_cache):
    target = write_snapshot(hf_cache, "kaiko-s16", hub_layout("kaiko-s16", random_network(HUB["kaiko-s16"][0])), None)
    rows = {r["name"]: r for r in preset_rows()}
    assert rows["kaiko-s16"]["found"] == str(target) and rows["uni"]["found"] is None
    assert rows["virchow2"]["dim"] == 2560 and rows["midnight"]["dim"] == 3072 and rows["h0-mini"]["dim"] == 1536
    assert not rows["musk"]["supported"] and "BEiT3" in rows["musk"]["why"]
