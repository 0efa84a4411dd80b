"""Writing pyramidal tiled TIFFs that OpenSlide (generic-tiff), tiffslide and QuPath open.

Level 0 comes from a ``read(x, y, w, h) -> RGB`` function and every lower level is built tile by tile
from it, so an image of any size is written in bounded memory. Resolution tags (centimetre unit) carry
the mpp; each level is a full-resolution-ordered tiled directory, as OpenSlide's generic TIFF driver
expects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .._atomic import atomic_file

RegionFn = Callable[[int, int, int, int], np.ndarray]


def write_pyramidal_tiff(
    path: str | Path,
    source: np.ndarray | RegionFn,
    mpp: float | tuple[float, float],
    size: tuple[int, int] | None = None,
    *,
    tile: int = 256,
    quality: int = 90,
    compression: str = "jpeg",
    min_level_side: int = 512,
    level_factor: int = 4,
    description: str = "",
) -> Path:
    """Write ``source`` (an RGB array, or a region function with ``size=(width, height)``) as a
    pyramidal tiled TIFF with levels shrinking by ``level_factor`` until the longer side is below
    ``min_level_side``. ``mpp`` is the pixel size of level 0 in microns, one number or (x, y); the
    resolution tags of every level follow it. ``compression`` is "jpeg", "deflate" (lossless) or "none".
    The file appears atomically (temporary name, then rename)."""
    import tifffile

    path = Path(path)
    read: RegionFn
    if isinstance(source, np.ndarray):
        arr = source
        width, height = arr.shape[1], arr.shape[0]

        def read_array(x: int, y: int, w: int, h: int) -> np.ndarray:
            out = np.full((h, w, 3), 255, np.uint8)
            sub = arr[y : y + h, x : x + w, :3]
            out[: sub.shape[0], : sub.shape[1]] = sub
            return out

        read = read_array
    else:
        if size is None:
            raise ValueError("size=(width, height) is required with a region function")
        width, height = size
        read = source
    downsamples = [1]
    while max(width, height) // (downsamples[-1] * level_factor) >= min_level_side:
        downsamples.append(downsamples[-1] * level_factor)

    mpp_x, mpp_y = (mpp, mpp) if isinstance(mpp, (int, float)) else mpp
    res_x, res_y = 1e4 / mpp_x, 1e4 / mpp_y  # pixels per centimetre
    codec = {"jpeg": ("jpeg", {"level": quality}), "deflate": ("zlib", None), "none": (None, None)}[compression]
    with atomic_file(path, "wb") as fh, tifffile.TiffWriter(fh, bigtiff=width * height * 3 > 2**31) as tif:
        for i, ds in enumerate(downsamples):
            lw, lh = -(-width // ds), -(-height // ds)
            tif.write(
                _tiles(read, width, height, ds, tile),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=codec[0],
                compressionargs=codec[1],
                resolution=(res_x / ds, res_y / ds),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                description=description if i == 0 else None,
                metadata=None,
            )
    return path


def _tiles(read: RegionFn, width: int, height: int, ds: int, tile: int) -> Iterator[np.ndarray]:
    """Tiles of the level at downsample ``ds``, row by row (edge tiles padded white)."""
    import cv2

    lw, lh = -(-width // ds), -(-height // ds)
    for ty in range(0, lh, tile):
        for tx in range(0, lw, tile):
            w, h = min(tile, lw - tx), min(tile, lh - ty)
            region = read(tx * ds, ty * ds, w * ds, h * ds)
            if ds > 1:
                region = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
            out = np.full((tile, tile, 3), 255, np.uint8)
            out[:h, :w] = region[:h, :w]
            yield out
