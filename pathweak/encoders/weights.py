"""Encoder weights: checkpoints read by :mod:`pathweak.hub` (re-exported here), strict loading with a ViT's
position embedding resampled to the network's grid, explicit random initialisation that does not reseed the
process, and the ids/hashes recorded with every encoder."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import hub
from .._provenance import json_value
from ..errors import ConfigError
from ..hub import WRAPPERS, read_checkpoint

__all__ = ["WRAPPERS", "load_state_dict_file", "load_strict", "read_checkpoint"]


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """A state dict from .safetensors (safe) or a torch checkpoint (weights only), with ``module.``,
    ``backbone.`` and ``model.`` key prefixes removed (the lenient reader of the ``timm:`` family)."""
    state = read_checkpoint(path)
    return {re.sub(r"^(module\.|backbone\.|model\.)+", "", k): v for k, v in state.items()}


def load_strict(net: Any, state: dict[str, Any], what: str, path: str | Path) -> None:
    """:func:`pathweak.hub.load_strict`, after a ViT ``pos_embed`` saved for another grid is resampled to
    the network's (the toolkits do the same)."""
    own = net.state_dict()
    state = dict(state)
    if "pos_embed" in state and "pos_embed" in own and tuple(state["pos_embed"].shape) != tuple(own["pos_embed"].shape):
        state["pos_embed"] = _resample_pos_embed(net, state["pos_embed"], own["pos_embed"])
    hub.load_strict(net, state, what, path)


def _resample_pos_embed(net: Any, saved: Any, own: Any) -> Any:
    """A ViT position embedding resampled from a square grid to the network's grid (prefix tokens kept)."""
    import math

    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(net, "no_embed_class", False) else int(getattr(net, "num_prefix_tokens", 1))
    if saved.ndim != 3 or saved.shape[-1] != own.shape[-1]:
        return saved  # reported as a shape mismatch
    side = math.isqrt(saved.shape[1] - prefix)
    if side * side != saved.shape[1] - prefix:
        return saved
    grid = net.patch_embed.grid_size
    return resample_abs_pos_embed(
        saved, new_size=list(grid), old_size=[side, side], num_prefix_tokens=prefix, verbose=False
    )


def random_seed(weights: str | None) -> int | None:
    """The seed of ``random`` (0) or ``random:<seed>``; None for a weights path."""
    if weights is None:
        return None
    if weights == "random":
        return 0
    if weights.startswith("random:"):
        try:
            return int(weights.split(":", 1)[1])
        except ValueError:
            raise ConfigError(
                f"bad random seed in {weights!r}", fix="use --weights random or random:<integer>"
            ) from None
    return None


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a model constructor under ``seed`` (when not None) without touching the caller's random state:
    the CPU generator is forked and restored afterwards."""
    if seed is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def weights_hash(weights: str | None) -> str | None:
    """Content hash of a weights file; ``random:<seed>`` as is; None without weights."""
    if weights is None or random_seed(weights) is not None:
        return None if weights is None else weights
    from .._provenance import content_hash

    return content_hash(weights)


def encoder_id(family: str, model: str, weights: str | None, kwargs: dict[str, Any] | None = None) -> str:
    """Folder-safe id, unique per architecture, constructor kwargs and weights content."""
    tag = weights if weights and random_seed(weights) is not None else weights_hash(weights) or "none"
    digest = hashlib.sha256(json.dumps([str(tag), jsonable(kwargs or {})], sort_keys=True).encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    seed = random_seed(weights) if weights else None
    prefix = f"{family}-{safe}" if family else safe
    return f"{prefix}-random{seed}-{digest}" if seed is not None else f"{prefix}-{digest}"


def jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs as JSON values: tuples as lists, numpy values and paths as plain ones (so
    ``img_size=(224, 224)`` and ``[224, 224]`` give one id), anything else (a class, a function) by its repr."""
    return {k: _plain(v) for k, v in kwargs.items()}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    try:
        return _plain(json_value(value))
    except TypeError:
        return repr(value)
