"""DINO (Caron et al. 2021): a student matches an EMA teacher's centred, sharpened output across
multi-crop views."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """MLP → bottleneck → L2 normalisation → weight-normalised projection to ``out_dim`` prototypes."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's centred/sharpened global views and the student's other views."""

    center: torch.Tensor  # buffer (1, out_dim)

    def __init__(self, out_dim: int, student_temp: float, teacher_temp: float, center_momentum: float):
        super().__init__()
        self.student_temp, self.teacher_temp, self.center_momentum = student_temp, teacher_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        t = [F.softmax((o - self.center) / self.teacher_temp, dim=-1).detach() for o in teacher]
        s = [F.log_softmax(o / self.student_temp, dim=-1) for o in student]
        total: torch.Tensor | None = None
        pairs = 0
        for ti, tp in enumerate(t):
            for si, sp in enumerate(s):
                if si == ti:
                    continue
                term = (-tp * sp).sum(dim=-1).mean()
                total = term if total is None else total + term
                pairs += 1
        if total is None:
            raise ValueError("the DINO loss needs two views or more")
        self._update_center(torch.cat(teacher))
        return total / pairs

    @torch.no_grad()
    def _update_center(self, teacher_out: torch.Tensor) -> None:
        batch_center = teacher_out.mean(dim=0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            batch_center /= torch.distributed.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← momentum · teacher + (1 − momentum) · student (parameters of the same names)."""
    for pt, ps in zip(teacher.parameters(), student.parameters(), strict=False):
        pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
