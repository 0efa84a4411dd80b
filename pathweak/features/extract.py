"""``extract_features``: TileStores → FeatureStores with a prefetching loader.

Worker processes of a DataLoader read and decode whole batches of tiles (the fast shard path of
:class:`~pathweak.tiling.TileStore`) while the model runs in the main process; on CUDA the model runs
in bf16 autocast and the batch size adapts (halving on out-of-memory). An up-to-date FeatureStore (same
TileStore content, encoder weights and transform) is skipped. Several encoders share one pass over each
TileStore (tiles read and decoded once, one FeatureStore per encoder); a TileStore far from a preset's
expected resolution gets a warning in its results.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .. import _provenance, devices
from .._atomic import missing_dirs, remove_if_empty, sweep_partials
from ..errors import ConfigError
from ..progress import log_line, progress_bar
from ..store import StageResult, current_store, failure_text
from ..store.features import (
    FORMAT_VERSION,
    FeatureStore,
    feature_store_path,
)
from ..store.tiles import TileStore
from .h5 import export_h5
from .writer import FeatureWriter

if TYPE_CHECKING:
    import torch

    from ..encoders.base import Encoder, EncoderInfo
    from ..protocols import Advance, ModuleEncoder, TileEncoder
    from .stain import StainNormalization

LOADER_BATCH = 256  # tiles decoded per loader item
EMPTY_WARNING = (
    "{store}: the tile store holds no tiles, so its FeatureStore is empty: training leaves the slide out and "
    "prediction gives it no score; re-tile it (see the warning of `pathweak tile`)"
)


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
    warnings: list[str] = field(default_factory=list)
    exception: BaseException | None = field(default=None, repr=False, compare=False)


def extract_features(
    stores: list[str | Path],
    encoder: str | ModuleEncoder | Sequence[str | ModuleEncoder],
    out_dir: str | Path,
    *,
    weights: str | Path | list[str | Path | None] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    num_workers: int = 1,
    export_h5_files: bool = False,
    force: bool = False,
    progress: bool = True,
    tokens: int = 0,
    decode: str = "auto",
    rotations: int = 1,
    stain: StainNormalization | None = None,
) -> list[ExtractResult]:
    """Embed every tile of each TileStore with ``encoder`` (an :class:`Encoder` or a name for
    :func:`~pathweak.encoders.create_encoder`) into ``<out_dir>/features/<encoder_id>/<slide_id>.zarr``.

    ``encoder`` may be a list: each TileStore's tiles are then read and decoded once and fed to every
    encoder, one FeatureStore each (``weights``: one per encoder, or one for all). Results come store
    by store, one per encoder, in the order given.

    ``tokens`` > 0 (a ViT encoder): one row per patch token inside each tile instead of one per tile,
    ``tokens x tokens`` tokens averaged (a 7x7 map per 224 px tile with 2), with the rows' level-0 boxes
    and their positions on the slide's token grid, under ``<encoder_id>-tokens<N>``: the grid heads
    (``wsseg``) then segment inside tiles. A store that fails is reported in its result and the others go on.
    ``decode``: where JPEG tiles are decoded (``features/decode.py``): auto (on the GPU when the model
    runs on CUDA), cpu, or gpu (an error without CUDA).
    ``rotations`` 2 or 4: each row holds the tile's embeddings under that many rotations side by side, under
    ``<encoder_id>-rot<R>`` (``features/views.py``; for label augmentation, heads/sla.py).
    ``stain``: normalise each slide's tiles toward a
    reference first (``features/stain.py``; the slide's stain estimated once, applied per batch on the device).
    """

    dev = devices.parse_device(device)
    from .decode import check_decode
    from .views import check_rotations

    check_decode(decode, dev)
    check_rotations(rotations, tokens)
    modules = [e.to(dev).eval() for e in _encoders(encoder, weights)]
    encs: list[TileEncoder] = list(modules)
    if tokens:
        from .tokens import TokenRows  # torch-importing, so not at module level

        encs = [TokenRows(_token_encoder(e), tokens) for e in modules]
    if rotations > 1:
        from .views import RotatedViews

        encs = [RotatedViews(e, rotations) for e in modules]
    if stain is not None:
        from .stain import stained

        encs = stained(encs, stain, tokens)
    results: list[ExtractResult] = []
    folders = [Path(out_dir) / "features" / e.encoder_id for e in encs]
    for folder in [*folders, *(Path(out_dir) / "h5_files" / e.encoder_id for e in encs)]:
        sweep_partials(folder)
    created = [d for folder in folders for d in missing_dirs(folder)]
    try:
        opened = [_open_tile_store(p) for p in stores]
        total = sum(len(s) for s in opened if isinstance(s, TileStore))
        label = ", ".join(e.encoder_id for e in encs)
        with progress_bar(total, f"embedding with {label}", progress) as advance:
            for path, tile_store in zip(stores, opened, strict=False):
                started = time.perf_counter()
                logged = len(results)
                if not isinstance(tile_store, TileStore):
                    results += [_failed(str(path), "", tile_store, started) for _ in encs]
                    log_line(results[-1].line("extract"))
                    continue
                try:
                    results += _extract_store(
                        tile_store, encs, out_dir, dev, batch_size, num_workers, export_h5_files, force, advance, decode
                    )
                except KeyboardInterrupt:
                    raise
                except Exception as exc:
                    results += [_failed(str(path), tile_store.slide_id, exc, started) for _ in encs]
                finally:
                    tile_store.close()
                    for r in results[logged:]:
                        log_line(r.line("extract"))
    finally:
        remove_if_empty(created)  # deepest first per encoder; a shared parent goes with the last one
        devices.empty_cache(dev)
    return results


def _encoders(
    encoder: str | ModuleEncoder | Sequence[str | ModuleEncoder],
    weights: str | Path | list[str | Path | None] | None,
) -> list[ModuleEncoder]:
    """The encoders of ``extract_features``' arguments: names created (with their weights), objects as given."""
    from ..encoders import create_encoder, paired_weights

    # anything but a list or tuple is one encoder (a name or an encoder object)
    given = list(encoder) if isinstance(encoder, (list, tuple)) else [cast("str | ModuleEncoder", encoder)]
    if not given:
        raise ConfigError("no encoder given", fix="pass --encoder NAME (once per encoder)")
    listed = paired_weights(len(given), weights)
    encs = [create_encoder(e, w) if isinstance(e, str) else e for e, w in zip(given, listed, strict=False)]
    ids = [e.encoder_id for e in encs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"the same encoder is given twice ({ids})", fix="list each encoder once")
    return encs


def _token_encoder(enc: ModuleEncoder) -> Encoder:
    """``enc`` as the pathweak :class:`~pathweak.encoders.Encoder` that token rows need (its ViT's patch tokens)."""
    from ..encoders.base import Encoder

    if not isinstance(enc, Encoder):
        raise ConfigError(
            f"token rows need a pathweak Encoder (a ViT), not a {type(enc).__name__}",
            fix="pass an encoder made by pathweak.encoders.create_encoder, or extract without --tokens",
        )
    return enc


def feature_cache_key(tile_store: TileStore, info: EncoderInfo) -> str:
    """What a FeatureStore depends on: the TileStore's content and the encoder's weights and transform."""
    transform: dict[str, Any] = {}
    if getattr(info, "interpolation", "bilinear") != "bilinear" or getattr(info, "crop_pct", 1.0) != 1.0:
        transform = {"interpolation": info.interpolation, "crop_pct": info.crop_pct}
    if "tokens" in info.extra:  # token rows: their pooling and cell layout
        transform["tokens"] = info.extra["tokens"]
    return _provenance.cache_key(
        format=FORMAT_VERSION,
        tile_store=tile_store.attrs.get("cache_key"),
        encoder=info.encoder_id,
        weights=info.weights_hash,
        img_size=info.img_size,
        mean=info.mean,
        std=info.std,
        **transform,
    )


def resolution_warning(tile_store: TileStore, info: EncoderInfo) -> str | None:
    """A sentence when the TileStore's µm/px (or tile field of view) is far (> 25 %) from what the
    encoder preset expects; None when they agree or either is unknown. Tiles are not resampled."""
    want_mpp, want_px = info.extra.get("mpp"), info.extra.get("patch_px")
    attrs = tile_store.attrs
    if not want_mpp or tile_store.is_volume:
        return None
    achieved = (attrs.get("mpp") or {}).get("achieved")
    if not achieved:
        return None
    mpp = float(np.mean(achieved))
    side = int((attrs.get("tile") or {}).get("patch_px") or 0)
    off_mpp = abs(mpp / want_mpp - 1) > 0.25
    off_view = bool(side and want_px) and abs(side * mpp / (want_px * want_mpp) - 1) > 0.25
    if not (off_mpp or off_view):
        return None
    return (
        f"{tile_store.path}: tiles are {side} px at {mpp:.3g} µm/px and {info.name} expects {want_px} px at "
        f"{want_mpp:g} µm/px; its features may be off. Re-tile with `pathweak tile --target-mpp {want_mpp:g} "
        f"--patch {want_px}` for this encoder"
    )


def _extract_store(
    tile_store: TileStore,
    encs: list[TileEncoder],
    out_dir: str | Path,
    dev: torch.device,
    batch_size: int | None,
    num_workers: int,
    export: bool,
    force: bool,
    advance: Advance,
    decode: str = "auto",
) -> list[ExtractResult]:
    """All encoders on one TileStore: up-to-date FeatureStores skipped, the others fed from one pass
    over the tiles (each shard read and each tile decoded once)."""
    started = time.perf_counter()
    results: dict[int, ExtractResult] = {}
    writers: dict[int, FeatureWriter] = {}
    notes: list[str] = []
    h5_paths = [Path(out_dir) / "h5_files" / e.encoder_id / f"{tile_store.slide_id}.h5" for e in encs]
    try:
        for i, enc in enumerate(encs):
            enc.check_tiles(tile_store.holds_3d_patches, tile_store.tile_shape, str(tile_store.path))
            final = feature_store_path(out_dir, enc.encoder_id, tile_store.slide_id)
            key = feature_cache_key(tile_store, enc.info)
            if current_store(final, key, force):
                if export and not h5_paths[i].exists():
                    export_h5(FeatureStore.open(final), h5_paths[i])
                results[i] = ExtractResult(
                    str(tile_store.path),
                    tile_store.slide_id,
                    "skipped",
                    str(final),
                    len(tile_store),
                    h5=str(h5_paths[i]) if export else None,
                )
            else:
                begin_slide = getattr(enc, "begin_slide", None)  # a StainedEncoder: the slide's stain, first
                if begin_slide is not None:
                    begin_slide(tile_store)
                writers[i] = FeatureWriter(tile_store, enc, out_dir, key, final)
        if writers:
            from .decode import device_batches

            raw = device_batches(tile_store, dev, decode)
            for tiles in raw if raw is not None else _loader(tile_store, num_workers, dev):
                tiles = tiles.to(dev, non_blocking=True)  # once per batch, however many encoders embed it
                for writer in writers.values():
                    writer.add(_embed(writer.enc, tiles, dev, batch_size))
                advance(len(tiles))
            for writer in writers.values():
                writer.finish(tile_store.path)
            if raw is not None and raw.fallback:
                notes.append(
                    f"{tile_store.path}: JPEG tiles are decoded on the CPU from here on, as no GPU decoder works "
                    f"here ({raw.fallback}); pass --decode cpu to choose that up front"
                )
        else:
            advance(len(tile_store))
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for i, writer in writers.items():
        h5 = str(export_h5(FeatureStore.open(writer.final), h5_paths[i])) if export else None
        results[i] = ExtractResult(
            str(tile_store.path),
            tile_store.slide_id,
            "extracted",
            str(writer.final),
            writer.n,
            time.perf_counter() - started,
            h5,
        )
    for i, enc in enumerate(encs):
        warning = resolution_warning(tile_store, enc.info)
        stain_warning = getattr(enc, "slide_warning", None) if i in writers else None
        results[i].warnings += [*notes, *(w for w in (warning, stain_warning) if w)]
        if not len(tile_store):
            results[i].warnings.append(EMPTY_WARNING.format(store=tile_store.path))
    return [results[i] for i in range(len(encs))]


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
        data,  # type: ignore[arg-type]  # any map-style dataset works; torch types it as its Dataset class
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
        prefetch_factor=4 if num_workers > 0 else None,
    )


_SHRUNK: dict[tuple[str, str], int] = {}  # (encoder, device) -> a sub-batch size that fitted after OOM


def _embed(enc: TileEncoder, tiles: torch.Tensor, dev: torch.device, batch_size: int | None) -> np.ndarray:
    """Features (k, D) float16 of a batch of tiles already on ``dev``, in sub-batches of ``batch_size``
    (default: the encoder's CPU batch, 64, or 512 on CUDA), halved on out-of-memory until they fit (and
    remembered for this encoder and device); the features cross to the host once."""
    import torch

    start = batch_size or (512 if dev.type == "cuda" else int(enc.info.extra.get("cpu_batch", 64)))
    key = (enc.encoder_id, str(dev))
    bs = min(start, _SHRUNK.get(key, start))
    parts, i = [], 0
    while i < len(tiles):
        try:
            parts.append(enc.embed(tiles[i : i + bs]).to(torch.float16))
            i += bs
            continue
        except torch.OutOfMemoryError:
            if bs == 1:
                raise
        # after the except block, so the failed forward's tensors (held by its traceback) are free
        bs //= 2
        _SHRUNK[key] = bs
        devices.empty_cache(dev)
    return torch.cat(parts).cpu().numpy()


def _open_tile_store(path: str | Path) -> TileStore | BaseException:
    try:
        return TileStore.open(path)
    except Exception as exc:
        return exc


def _failed(path: str, slide_id: str, exc: BaseException, started: float) -> ExtractResult:
    return ExtractResult(
        path, slide_id, "failed", seconds=time.perf_counter() - started, error=failure_text(path, exc), exception=exc
    )
