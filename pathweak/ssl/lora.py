"""LoRA for adapting a pretrained ViT (ExPLoRA-style): freeze it, unfreeze the last blocks, add low-rank
updates to the attention projections of the others; ``merge_lora`` folds them back for export."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class LoRALinear(nn.Module):
    """``base(x) + scale * B(A(x))`` with ``base`` frozen; B starts at zero so training starts from base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = (alpha or rank) / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.lora_b @ self.lora_a)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def apply_explora(vit: nn.Module, unfreeze_last: int, rank: int) -> dict[str, int]:
    """Freeze a timm ViT, unfreeze its last ``unfreeze_last`` blocks and final norm, and put LoRA on the
    qkv and output projections of the other blocks. Returns trainable/total parameter counts."""
    net: Any = vit  # a timm ViT: blocks and norm are beyond nn.Module's typing
    for p in net.parameters():
        p.requires_grad_(False)
    blocks = list(net.blocks)
    cut = len(blocks) - unfreeze_last
    for i, block in enumerate(blocks):
        if i >= cut:
            for p in block.parameters():
                p.requires_grad_(True)
        else:
            block.attn.qkv = LoRALinear(block.attn.qkv, rank)
            block.attn.proj = LoRALinear(block.attn.proj, rank)
    for p in net.norm.parameters():
        p.requires_grad_(True)
    trainable = sum(p.numel() for p in vit.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": sum(p.numel() for p in vit.parameters())}


def merge_lora(module: nn.Module) -> nn.Module:
    """Replace every LoRALinear in ``module`` (in place) by a plain Linear with the update folded in."""
    for name, child in list(module.named_children()):
        if isinstance(child, LoRALinear):
            setattr(module, name, child.merged())
        else:
            merge_lora(child)
    return module
