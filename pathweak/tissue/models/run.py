"""Running a tissue model over a slide: tiles read at the model's resolution (the nearest pyramid level at or
below it, resized), normalised, batched through the network on the GPU or the CPU, and each tile's output
painted onto the tissue mask's grid (area-averaged), so the mask lands where the classical masks do."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ...config import TissueSpec
from ...errors import MissingMppError
from ...io.base import LevelReader, Slide
from .records import TissueModel

MEAN = np.array((0.485, 0.456, 0.406), np.float32)  # ImageNet, as all three models were trained
STD = np.array((0.229, 0.224, 0.225), np.float32)
BATCH = 8

_LOADED: dict[tuple[str, str, str], Any] = {}  # one network per model, weights and device in a process


def device_of(spec_device: str) -> Any:
    from ...devices import parse_device

    return parse_device(spec_device)


def network(model: TissueModel, weights: str, device: Any) -> Any:
    key = (model.name, str(weights), str(device))
    if key not in _LOADED:
        from .networks import load_network

        _LOADED.clear()  # one model at a time: a worker tiles many slides with the same one
        _LOADED[key] = load_network(model, weights).to(device)
    return _LOADED[key]


def prepare(tiles: np.ndarray, model: TissueModel) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32, normalised (JPEG round trip first where the model asks)."""
    if model.jpeg_quality:
        import simplejpeg

        tiles = np.stack(
            [
                simplejpeg.decode_jpeg(
                    simplejpeg.encode_jpeg(np.ascontiguousarray(t), model.jpeg_quality, "RGB", "420")
                )
                for t in tiles
            ]
        )
    x = (tiles.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def read_tile(slide: Slide, reader: LevelReader | None, x0: float, y0: float, side0: float, px: int) -> np.ndarray:
    """The level-0 square (x0, y0, side0) as a ``px`` x ``px`` RGB tile (white beyond the slide)."""
    import cv2

    level = slide.best_level_for_downsample(side0 / px)
    ds = slide.level_downsamples[level]
    lx, ly, lside = int(round(x0 / ds)), int(round(y0 / ds)), max(1, int(math.ceil(side0 / ds)))
    lw, lh = slide.level_dimensions[level]
    if reader is not None and lx + lside <= lw and ly + lside <= lh:
        region = reader.read(level, lx, ly, lside, lside)
    else:
        region = slide.read_region((int(round(x0)), int(round(y0))), level, (lside, lside))
    if region.shape[:2] != (px, px):
        interp = cv2.INTER_AREA if lside > px else cv2.INTER_LINEAR
        region = cv2.resize(region, (px, px), interpolation=interp)
    return region


def class_maps(
    model: TissueModel,
    slide: Slide,
    shape: tuple[int, int],
    downsample: tuple[float, float],
    weights: str,
    device: str = "auto",
    reader: LevelReader | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(keep (h, w) float32 in [0, 1], classes (h, w) uint8) on the mask grid ``shape`` (mask pixel = ``downsample``
    level-0 pixels): ``keep`` is the area fraction of each mask pixel the model's rule keeps (tissue, or not an
    artefact), ``classes`` the arg-max class (nearest)."""
    import cv2

    if slide.mpp is None:
        raise MissingMppError(
            f"the {model.name} model reads the slide at {model.mpp:g} µm/px and the slide records no resolution",
            path=slide.path,
            fix="pass --mpp (e.g. --mpp 0.25 for a 40x scan, 0.5 for 20x)",
        )
    dev = device_of(device)
    net = network(model, weights, dev)
    side0 = model.input_px * model.mpp / max(slide.mpp)  # level-0 pixels per model tile side
    w0, h0 = slide.dimensions
    boxes = [(x, y) for y in np.arange(0, h0, side0) for x in np.arange(0, w0, side0)]
    keep = np.zeros(shape, np.float32)
    classes = np.zeros(shape, np.uint8)
    sx, sy = downsample
    for start in range(0, len(boxes), BATCH):
        chunk = boxes[start : start + BATCH]
        tiles = np.stack([read_tile(slide, reader, x, y, side0, model.input_px) for x, y in chunk])
        probs = forward_batch(model, net, prepare(tiles, model), dev)
        for (x, y), p in zip(chunk, probs, strict=True):
            kept, argmax = apply_rule(model, p)
            c0, c1 = int(round(x / sx)), min(shape[1], int(round((x + side0) / sx)))
            r0, r1 = int(round(y / sy)), min(shape[0], int(round((y + side0) / sy)))
            if c1 <= c0 or r1 <= r0:
                continue
            full_w, full_h = int(round((x + side0) / sx)) - c0, int(round((y + side0) / sy)) - r0
            interp = cv2.INTER_AREA if full_w < model.input_px else cv2.INTER_LINEAR
            keep[r0:r1, c0:c1] = cv2.resize(kept, (full_w, full_h), interpolation=interp)[: r1 - r0, : c1 - c0]
            cls = cv2.resize(argmax, (full_w, full_h), interpolation=cv2.INTER_NEAREST)
            classes[r0:r1, c0:c1] = cls[: r1 - r0, : c1 - c0]
    return keep, classes


def forward_batch(model: TissueModel, net: Any, x: np.ndarray, dev: Any) -> np.ndarray:
    import torch

    from .networks import forward

    return forward(model, net, torch.from_numpy(x).to(dev)).cpu().numpy()


def apply_rule(model: TissueModel, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept (H, W) float32 0/1, arg-max class (H, W) uint8) of one tile's probabilities (C, H, W), by the
    model's output rule (records.py, docs/tissue.md)."""
    argmax = probs.argmax(0).astype(np.uint8)
    if model.name == "hest":
        kept = probs[1] > model.threshold
    elif model.role == "tissue":  # GrandQC: class 0 is tissue, where its probability reaches the threshold
        kept = (argmax == 0) & (probs.max(0) >= model.threshold)
    else:  # artefacts: classes above 1 are removed
        kept = argmax <= 1
    return kept.astype(np.float32), argmax


def model_mask(
    model: TissueModel,
    slide: Slide,
    spec: TissueSpec,
    shape: tuple[int, int],
    downsample: tuple[float, float],
    weights: str | Path,
    reader: LevelReader | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(boolean mask, class map) of ``model`` on the mask grid: a mask pixel is kept when at least half of it is."""
    keep, classes = class_maps(
        model, slide, shape, downsample, str(weights), str(spec.params.get("device", "auto")), reader
    )
    return keep >= 0.5, classes


def array_mask(model: TissueModel, rgb: np.ndarray, weights: str, device: str = "auto") -> np.ndarray:
    """The boolean mask ``model``'s rule keeps on an RGB array already at the model's µm/px (padded with
    white to whole tiles, run tile by tile, cropped back)."""
    dev = device_of(device)
    net = network(model, weights, dev)
    px = model.input_px
    h, w = rgb.shape[:2]
    padded = np.full((-(-h // px) * px, -(-w // px) * px, 3), 255, np.uint8)
    padded[:h, :w] = rgb[..., :3]
    out = np.zeros(padded.shape[:2], np.float32)
    corners = [(y, x) for y in range(0, padded.shape[0], px) for x in range(0, padded.shape[1], px)]
    for start in range(0, len(corners), BATCH):
        chunk = corners[start : start + BATCH]
        tiles = np.stack([padded[y : y + px, x : x + px] for y, x in chunk])
        for (y, x), p in zip(chunk, forward_batch(model, net, prepare(tiles, model), dev), strict=True):
            out[y : y + px, x : x + px] = apply_rule(model, p)[0]
    return out[:h, :w] >= 0.5
