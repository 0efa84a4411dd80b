"""TileStores from folders of pre-cut tile images (PNG/JPEG/TIFF patches such as LC25000 or NCT-CRC-HE),
so patch datasets flow through the same pretraining and feature extraction as slides."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import _provenance
from .._atomic import ensure_replaceable
from ..config import StoreSpec, as_dict
from ..errors import ConfigError, SlideFormatError
from ..progress import progress_bar
from ..store import build as lifecycle
from ..store.codecs import encoder_for
from ..store.shards import shard_key, write_shard
from ..store.tiles import FORMAT_VERSION, TileStore, create_store, shard_tiles_of

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def images_to_store(
    images: list[str | Path],
    out_path: str | Path,
    patch_px: int = 224,
    store: StoreSpec | None = None,
    mpp: float | None = None,
    force: bool = False,
    progress: bool = True,
) -> TileStore:
    """One TileStore holding ``images`` as tiles, in the given order (each centre-cropped to a square
    and resized to ``patch_px``). ``grid_index`` row i is image i; ``attrs["images"]`` lists the files.
    Re-running with the same files and settings skips the work."""
    import cv2

    store = store or StoreSpec()
    paths = [Path(p) for p in images]
    if not paths:
        raise ConfigError("no images given", fix="pass image files or a folder of them")
    out_path = Path(out_path)
    key = _provenance.cache_key(
        format=FORMAT_VERSION,
        images=[(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths],
        patch_px=patch_px,
        store=as_dict(store),
        mpp=mpp,
    )
    if lifecycle.current_store(out_path, key, force) is not None:
        return TileStore.open(out_path)
    ensure_replaceable(out_path, "zarr.json", "a TileStore")
    n = len(paths)
    attrs: dict[str, Any] = {
        "cache_key": key,
        "source_id": out_path.stem,
        "mpp": {  # the images' own resolution, when the user gives it (they are read as they are)
            "level0": [mpp, mpp] if mpp else None,
            "source": "user" if mpp else None,
            "target": mpp,
            "achieved": [mpp, mpp] if mpp else None,
        },
        "tile": {
            "patch_px": patch_px,
            "read_px": patch_px,
            "overlap_px": 0,
            "stride_px": patch_px,
            "n_tiles": n,
            "grid_shape": [n, 1],
            "coords": "(0, i * patch_px): image i stacked in a column",
        },
        "tissue": {"method": "none (pre-cut images)"},
        "storage": as_dict(store),
        "images": [str(p) for p in paths],
        "versions": _provenance.versions("zarr", "simplejpeg"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    coords = np.column_stack([np.zeros(n), np.arange(n) * patch_px]).astype(np.int64)
    grid = np.column_stack([np.arange(n), np.zeros(n)]).astype(np.int32)
    tmp = lifecycle.begin(out_path)
    try:
        create_store(
            tmp,
            n,
            patch_px,
            store,
            {"coords": coords, "grid_index": grid, "tissue_fraction": np.ones(n, np.float32)},
            attrs,
            source="images",
        )
        slots = shard_tiles_of(tmp)
        encode = encoder_for(store)
        with progress_bar(n, f"importing {out_path.stem}", progress) as advance:
            for shard, start in enumerate(range(0, n, slots)):
                batch = [load_square(p, patch_px, cv2) for p in paths[start : start + slots]]
                write_shard(shard_key(tmp / "tiles", shard, 4), [encode(t) for t in batch], slots)
                advance(len(batch))
        lifecycle.commit(tmp, out_path, store=True, marker="zarr.json", what="a TileStore")
    except BaseException:
        lifecycle.discard(tmp)
        raise
    return TileStore.open(out_path)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def load_square(path: Path, size: int, cv2: Any) -> np.ndarray:
    """An RGB image file centre-cropped to a square and resized to ``size``; an unreadable file is a clear error."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SlideFormatError("cannot read the image", path=path, fix="pass PNG, JPEG or TIFF RGB images")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    if s != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)
