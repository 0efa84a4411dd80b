"""Pathology augmentations for self-supervised views (numpy/OpenCV, run in loader workers), and
Fourier batch style standardisation (torch, on a batch in the training step)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# Ruifrok & Johnston stain vectors (as in scikit-image's hed_from_rgb): rows H, E, D in RGB OD space
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


def random_resized_crop(img: np.ndarray, rng: np.random.Generator, size: int, scale: tuple[float, float]) -> np.ndarray:
    """A crop covering a random ``scale`` fraction of the image (aspect 3/4..4/3), resized to ``size``."""

    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            break
    else:
        cw = ch = min(h, w)
        x, y = (w - cw) // 2, (h - ch) // 2
    return resize_square(img[y : y + ch, x : x + cw], size)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """A new array: ``img`` resized to ``size`` x ``size`` (area averaging down, bilinear up)."""
    import cv2

    interp = cv2.INTER_AREA if img.shape[1] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def flip_rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the 8 dihedral transforms (tissue has no up or left)."""
    img = np.rot90(img, int(rng.integers(4)))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def whole_tile_view(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """The whole tile resized to ``size`` under one random dihedral transform: no crop, stain, colour or
    blur, so the image extraction sees (up to orientation, which tissue does not have)."""
    return flip_rotate(resize_square(img, size), rng)


def hed_jitter(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Stain augmentation: scale and shift each of haematoxylin, eosin and DAB in optical density."""
    if sigma <= 0:
        return img
    od = -np.log(np.maximum(img.astype(np.float32), 1.0) / 255.0)
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB
    alpha = rng.normal(1.0, sigma, 3).astype(np.float32)
    beta = rng.normal(0.0, sigma, 3).astype(np.float32) * 0.1
    od2 = (hed * alpha + beta) @ _RGB_FROM_HED
    return np.clip(255.0 * np.exp(-od2), 0, 255).reshape(img.shape).astype(np.uint8)


def color_jitter(img: np.ndarray, rng: np.random.Generator, strength: float, hue: float) -> np.ndarray:
    """Brightness, contrast, saturation (each 1 ± strength) and a small hue shift."""
    import cv2

    if strength <= 0 and hue <= 0:
        return img
    x = img.astype(np.float32)
    x *= rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * rng.uniform(1 - strength, 1 + strength) + gray  # saturation
    x = np.clip(x, 0, 255).astype(np.uint8)
    if hue > 0:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV_FULL)
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.uniform(-hue, hue) * 255)) % 256
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    return x


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    import cv2

    if rng.random() >= prob:
        return img
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.1, 1.5))


def stain_toward(img: np.ndarray, rng: np.random.Generator, prob: float, bank: list[Any]) -> np.ndarray:
    """With probability ``prob``: the tile normalised (Macenko, its own stain estimated) toward a stain drawn
    from ``bank`` (:class:`~pathweak.stain.SlideStain` targets, e.g. of random tiles of the cohort). A tile
    with too little stain to estimate (glass) is returned as it is. No draw at all when ``prob`` is 0."""
    if prob <= 0 or not bank or rng.random() >= prob:
        return img
    from ..errors import PathweakError
    from ..stain import estimate
    from ..stain.apply import StainTransform

    target = bank[int(rng.integers(len(bank)))]
    try:
        return StainTransform(estimate(img, "macenko"), target)(np.ascontiguousarray(img))
    except PathweakError:
        return img


def stain_bank(tiles: list[np.ndarray]) -> list[Any]:
    """Macenko targets of the tiles that have stain (the references views are normalised toward)."""
    from ..errors import PathweakError
    from ..stain import estimate

    bank = []
    for tile in tiles:
        try:
            bank.append(estimate(tile, "macenko"))
        except PathweakError:
            continue
    return bank


def pathology_view(
    img: np.ndarray,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float],
    cfg: object,
    bank: list[Any] | None = None,
) -> np.ndarray:
    """One augmented view: random resized crop, dihedral transform, stain normalisation toward a random
    reference of ``bank`` (``cfg.stain_augment``), stain and colour jitter, blur."""
    v = random_resized_crop(img, rng, size, scale)
    v = flip_rotate(v, rng)
    v = stain_toward(v, rng, getattr(cfg, "stain_augment", 0.0), bank or [])
    v = hed_jitter(v, rng, getattr(cfg, "hed_jitter", 0.0))
    v = color_jitter(v, rng, getattr(cfg, "color_jitter", 0.0), getattr(cfg, "hue_jitter", 0.0))
    return gaussian_blur(v, rng, getattr(cfg, "blur_prob", 0.0))


def to_tensor(view: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (H, W, 3) → normalised float (3, H, W)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(view)).permute(2, 0, 1).float().div_(255.0)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def fourier_style_swap(x: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batch style standardisation: with probability ``prob`` per image, replace its amplitude
    spectrum by that of another image of the batch, keeping its own phase (content). Colour and
    texture statistics ("style": stain, scanner) get mixed while structures stay in place."""
    import torch

    if prob <= 0 or x.shape[0] < 2:
        return x
    b = x.shape[0]
    pick = torch.rand(b, generator=generator, device="cpu") < prob
    if not pick.any():
        return x
    perm = torch.randperm(b, generator=generator, device="cpu").to(x.device)
    spec = torch.fft.fft2(x.float())
    amp, phase = spec.abs(), spec.angle()
    mixed = torch.fft.ifft2(torch.polar(amp[perm], phase)).real.to(x.dtype)
    mask = pick.to(x.device).view(b, 1, 1, 1)
    return torch.where(mask, mixed, x)
