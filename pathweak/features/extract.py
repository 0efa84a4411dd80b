"""``extract_features``: TileStores → FeatureStores with a prefetching loader.

Worker processes of a DataLoader read and decode whole batches of tiles (the fast shard path of
:class:`~pathweak.tiling.TileStore`) while the model runs in the main process; on CUDA the model runs
in bf16 autocast and the batch size adapts (halving on out-of-memory). An up-to-date FeatureStore (same
TileStore content, encoder weights and transform) is skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _provenance
from .._atomic import missing_dirs, remove_if_empty, sweep_partials
from ..errors import ConfigError, PathweakError
from ..progress import progress_bar
from ..store import StageResult, begin, commit, current_store, discard, failure_text
from ..tiling.store import TileStore
from .h5 import export_h5
from .store import FORMAT_VERSION, CHUNK_ROWS, FeatureStore, create_feature_store, feature_store_path

LOADER_BATCH = 256  # tiles decoded per loader item


@dataclass
class ExtractResult(StageResult):
    """What happened to one TileStore."""

    tile_store: str
    slide_id: str
    status: str  # "extracted" | "skipped" | "failed"
    store: str | None = None
    n_tiles: int = 0
    seconds: float = 0.0
    h5: str | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)


def extract_features(
    stores: list[str | Path],
    encoder: Any,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    num_workers: int = 1,
    export_h5_files: bool = False,
    force: bool = False,
    progress: bool = True,
    tokens: int = 0,
    decode: str = "auto",
) -> list[ExtractResult]:
    """Embed every tile of each TileStore with ``encoder`` (an :class:`Encoder` or a name for
    :func:`~pathweak.encoders.create_encoder`) into ``<out_dir>/features/<encoder_id>/<slide_id>.zarr``.

    ``tokens`` > 0 (a ViT encoder): one row per patch token inside each tile instead of one per tile,
    ``tokens x tokens`` tokens averaged (a 7x7 map per 224 px tile with 2), with the rows' level-0 boxes
    and their positions on the slide's token grid, under ``<encoder_id>-tokens<N>``: the grid heads
    (``wsseg``) then segment inside tiles. A store that fails is reported in its result and the others go on.
    ``decode``: where JPEG tiles are decoded (``features/decode.py``): auto (on the GPU when the model
    runs on CUDA), cpu, or gpu (an error without CUDA).
    """
    import torch

    from ..encoders import create_encoder

    enc = create_encoder(encoder, weights) if isinstance(encoder, str) else encoder
    dev = _device(device)
    from .decode import check_decode

    check_decode(decode, dev)
    enc = enc.to(dev).eval()
    if tokens:
        from .tokens import TokenRows  # torch-importing, so not at module level

        enc = TokenRows(enc, tokens)
    results = []
    folder = Path(out_dir) / "features" / enc.encoder_id
    sweep_partials(folder)
    created = missing_dirs(folder)
    try:
        opened = [_open_tile_store(p) for p in stores]
        total = sum(len(s) for s in opened if isinstance(s, TileStore))
        with progress_bar(total, f"embedding with {enc.encoder_id}", progress) as advance:
            for path, tile_store in zip(stores, opened):
                started = time.perf_counter()
                if not isinstance(tile_store, TileStore):
                    results.append(_failed(str(path), "", tile_store, started))
                    continue
                try:
                    results.append(
                        _extract_one(tile_store, enc, out_dir, dev, batch_size, num_workers, export_h5_files, force, advance,
                                     decode)
                    )
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    results.append(_failed(str(path), tile_store.slide_id, exc, started))
                finally:
                    tile_store.close()
    finally:
        remove_if_empty(created)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return results


def feature_cache_key(tile_store: TileStore, info: Any) -> str:
    """What a FeatureStore depends on: the TileStore's content and the encoder's weights and transform."""
    return _provenance.cache_key(
        format=FORMAT_VERSION, tile_store=tile_store.attrs.get("cache_key"), encoder=info.encoder_id,
        weights=info.weights_hash, img_size=info.img_size, mean=info.mean, std=info.std,
    )


def _extract_one(
    tile_store: TileStore, enc: Any, out_dir: str | Path, dev: Any, batch_size: int | None, num_workers: int,
    export: bool, force: bool, advance: Any, decode: str = "auto",
) -> ExtractResult:
    started = time.perf_counter()
    enc.check_tiles(tile_store.holds_3d_patches, tile_store.tile_shape, str(tile_store.path))
    final = feature_store_path(out_dir, enc.encoder_id, tile_store.slide_id)
    key = feature_cache_key(tile_store, enc.info)
    h5_path = Path(out_dir) / "h5_files" / enc.encoder_id / f"{tile_store.slide_id}.h5"
    if current_store(final, key, force):
        if export and not h5_path.exists():
            export_h5(FeatureStore.open(final), h5_path)
        advance(len(tile_store))
        return ExtractResult(str(tile_store.path), tile_store.slide_id, "skipped", str(final), len(tile_store),
                             h5=str(h5_path) if export else None)
    n, dim = len(tile_store), enc.embed_dim
    coords, grid, attrs = tile_store.coords, None, _attrs(tile_store, enc, key)
    from .tokens import TokenRows

    if isinstance(enc, TokenRows):  # h x w rows per tile
        if tile_store.is_volume:
            raise ConfigError("token rows are for slide tiles, not volume patches", path=tile_store.path,
                              fix="extract volume patches without --tokens")
        grid, coords, cell = enc.layout(tile_store.grid_index, tile_store.coords, tile_store.tile_extent)
        n = len(coords)
        attrs.update(n_tiles=n, tokens={"pool": enc.pool, "map": list(enc.map_shape), "extent": list(cell),
                                        "tiles": len(tile_store)})
    tmp = begin(final)
    try:
        feats = create_feature_store(tmp, n, dim, coords, attrs, grid=grid, source=tile_store.source)
        buffer = np.empty((min(CHUNK_ROWS, max(n, 1)), dim), np.float16)
        filled, row0 = 0, 0
        from .decode import device_batches

        for tiles in device_batches(tile_store, dev, decode) or _loader(tile_store, num_workers, dev):
            out = _embed(enc, tiles, dev, batch_size)
            pos = 0
            while pos < len(out):
                take = min(len(out) - pos, len(buffer) - filled)
                buffer[filled : filled + take] = out[pos : pos + take]
                filled, pos = filled + take, pos + take
                if filled == len(buffer) or row0 + filled == n:
                    feats[row0 : row0 + filled] = buffer[:filled]
                    row0, filled = row0 + filled, 0
            advance(len(tiles))
        if row0 != n:
            raise PathweakError(f"embedded {row0} of {n} rows", path=tile_store.path)
        commit(tmp, final, store=True)
    except BaseException:
        discard(tmp)
        raise
    h5 = str(export_h5(FeatureStore.open(final), h5_path)) if export else None
    return ExtractResult(str(tile_store.path), tile_store.slide_id, "extracted", str(final), n,
                         time.perf_counter() - started, h5)


class _TileBatches:
    """Loader items: consecutive batches of decoded tiles of one TileStore (opened per worker)."""

    def __init__(self, path: Path, n: int, batch: int):
        self.path, self.n, self.batch = path, n, batch
        self._store: TileStore | None = None

    def __len__(self) -> int:
        return -(-self.n // self.batch)

    def __getitem__(self, i: int) -> Any:
        import torch

        if self._store is None:
            self._store = TileStore.open(self.path)
        return torch.from_numpy(self._store.read_tiles(slice(i * self.batch, min(self.n, (i + 1) * self.batch))))


def _loader(tile_store: TileStore, num_workers: int, dev: Any) -> Any:
    from torch.utils.data import DataLoader

    data = _TileBatches(tile_store.path, len(tile_store), LOADER_BATCH)
    return DataLoader(
        data, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=dev.type == "cuda",
        prefetch_factor=4 if num_workers > 0 else None,
    )


_CUDA_BATCH: dict[str, int] = {}


def _embed(enc: Any, tiles: Any, dev: Any, batch_size: int | None) -> np.ndarray:
    """Features (k, D) float16 of a loader batch, in sub-batches; on CUDA the sub-batch size starts at
    512 (or ``batch_size``) and halves on out-of-memory until it fits."""
    import torch

    if dev.type != "cuda":
        bs = batch_size or int(enc.info.extra.get("cpu_batch", 64))
        return np.concatenate([enc.embed(tiles[i : i + bs]).numpy() for i in range(0, len(tiles), bs)]).astype(np.float16)
    bs = _CUDA_BATCH.get(enc.encoder_id, batch_size or 512)
    tiles = tiles.to(dev, non_blocking=True)
    parts, i = [], 0
    while i < len(tiles):
        try:
            parts.append(enc.embed(tiles[i : i + bs]).to(torch.float16).cpu())
            i += bs
        except torch.cuda.OutOfMemoryError:
            if bs == 1:
                raise
            bs //= 2
            torch.cuda.empty_cache()
    _CUDA_BATCH[enc.encoder_id] = bs
    return torch.cat(parts).numpy()


def _device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("no CUDA device is available", fix="pass --device cpu")
    return torch.device(device)


def _open_tile_store(path: str | Path) -> TileStore | BaseException:
    try:
        return TileStore.open(path)
    except Exception as exc:
        return exc


def _attrs(tile_store: TileStore, enc: Any, key: str) -> dict[str, Any]:
    ta = tile_store.attrs
    return {
        "cache_key": key,
        "slide_id": tile_store.slide_id,
        "n_tiles": len(tile_store),
        "embed_dim": enc.embed_dim,
        "encoder": enc.info.as_dict(),
        "tile_store": {"path": str(Path(tile_store.path).resolve()), "cache_key": ta.get("cache_key")},
        "geometry": {
            "patch_px": ta["tile"]["patch_px"], "read_px": ta["tile"]["read_px"], "level": ta["mpp"]["level"],
            "level_downsample": ta["mpp"]["level_downsample"], "target_mpp": ta["mpp"]["target"],
            "achieved_mpp": ta["mpp"]["achieved"], "level_dim": ta["slide"]["level_dimensions"][ta["mpp"]["level"]],
            "slide_path": ta["slide"]["path"],
        },
        "versions": _provenance.versions("torch", "timm", "zarr"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _failed(path: str, slide_id: str, exc: BaseException, started: float) -> ExtractResult:
    return ExtractResult(path, slide_id, "failed", seconds=time.perf_counter() - started, error=failure_text(path, exc),
                         exception=exc)
