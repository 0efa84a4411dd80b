"""Device decode for extraction: a TileStore's JPEG bytes straight from its shards to the model's device.

A TileStore keeps each tile as one JPEG (an inner chunk of a Zarr shard, ``tiling/shards.py``). With
``decode="gpu"`` (or ``"auto"`` on a CUDA device) a batch of tiles is read as raw bytes (one
``pread`` per run of a shard), copied once into a pinned host buffer and decoded by nvJPEG on the GPU
(``torchvision.io.decode_jpeg(..., device="cuda")``); resizing and normalisation then happen on the
device inside :meth:`~pathweak.encoders.Encoder.embed` (bf16 autocast). Nothing is decoded on the
CPU. A prefetch thread reads and decodes the next batches on its own CUDA stream while the main
thread runs the model, so shard reading, decoding and the forward pass overlap.

The CPU decode path (libjpeg-turbo in DataLoader workers, ``features/extract.py``) stays the
fallback and is the only path on machines without CUDA, for lossless stores and for 3D patches.

Tolerance: nvJPEG and libjpeg-turbo may round the inverse DCT and colour conversion differently, by a
grey level (|difference| <= 1 per channel, rarely 2); features then agree to about 1e-2 (float16
features of a ViT; see tests/features/test_decode.py, which checks the raw-byte path decoded by
torchvision on the CPU against the simplejpeg path).
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError
from ..tiling.shards import ShardReader, shard_key

log = logging.getLogger(__name__)

DECODES = ("auto", "cpu", "gpu")
DEVICE_BATCH = 256  # tiles per decoded batch (as the CPU loader's items)
PREFETCH = 3  # decoded batches waiting ahead of the model


def check_decode(decode: str, dev: Any) -> str:
    """Validate ``--decode`` against the model's device ``dev``; returns the requested path ("cpu" or
    "gpu") for JPEG stores. ``gpu`` without CUDA (or with the model on the CPU) is a clear error."""
    import torch

    if decode not in DECODES:
        raise ConfigError(f"unknown --decode {decode!r}", fix="use auto, cpu or gpu")
    if decode == "gpu":
        if not torch.cuda.is_available():
            raise ConfigError(
                "--decode gpu needs a CUDA device and none is available",
                fix="pass --decode auto (or cpu) to decode tiles on the CPU",
            )
        if dev.type != "cuda":
            raise ConfigError(
                "--decode gpu decodes on the model's CUDA device, and the model runs on the CPU",
                fix="pass --device cuda (or auto), or --decode cpu",
            )
        return "gpu"
    if decode == "auto":
        return "gpu" if dev.type == "cuda" else "cpu"
    return "cpu"


def device_decodable(tile_store: Any) -> bool:
    """Whether a store's tiles can be decoded by nvJPEG: JPEG-compressed RGB tiles (not lossless, not 3D)."""
    return tile_store.compression == "jpeg" and not tile_store.holds_3d_patches and len(tile_store.tile_shape) == 3


def device_batches(tile_store: Any, dev: Any, decode: str) -> Iterator[Any] | None:
    """Batches of decoded tiles (k, H, W, 3) uint8 on ``dev`` for the device-decode path, or None when
    the CPU path applies (``decode`` resolves to cpu, or the store is not JPEG RGB tiles)."""
    if check_decode(decode, dev) != "gpu":
        return None
    if not device_decodable(tile_store):
        if decode == "gpu":
            log.warning(
                "%s: tiles are %s, not JPEG RGB tiles; decoding them on the CPU",
                tile_store.path,
                "3D patches" if tile_store.holds_3d_patches else tile_store.compression,
            )
        return None
    return RawTileBatches(tile_store, dev).batches()


class RawTileBatches:
    """Reads a TileStore's tiles as JPEG bytes, shard by shard, and decodes them on ``decode_device``
    (the GPU in extraction; the CPU in tests, with the same bytes and code)."""

    def __init__(self, tile_store: Any, decode_device: Any, batch: int = DEVICE_BATCH, prefetch: int = PREFETCH):
        import torch

        self.path = Path(tile_store.path)
        self.n = len(tile_store)
        self.shard_tiles = int(tile_store.shard_tiles)
        self.tile_shape = tuple(tile_store.tile_shape)
        self.fill = int(tile_store._tiles_meta.get("fill_value", 255) or 255)
        self.device = torch.device(decode_device)
        self.batch, self.prefetch = batch, prefetch
        self._readers: dict[int, ShardReader] = {}
        self._pinned: Any = None

    def ranges(self) -> list[tuple[int, int]]:
        return [(a, min(self.n, a + self.batch)) for a in range(0, self.n, self.batch)]

    def raw(self, start: int, stop: int) -> tuple[Any, list[tuple[int, int] | None]]:
        """The JPEG bytes of tiles ``start:stop`` as one uint8 tensor (pinned on CUDA) and each tile's
        (offset, length) in it (None: an empty chunk, i.e. a fill-value tile)."""
        import torch

        idx = np.arange(start, stop)
        shards = idx // self.shard_tiles
        parts: list[bytes | memoryview] = []
        spans: list[tuple[int, int] | None] = []
        base = 0
        for shard in np.unique(shards):
            slots = (idx[shards == shard] % self.shard_tiles).tolist()
            for chunk in self._reader(int(shard)).chunks(slots):  # one pread per shard run
                if chunk is None:
                    spans.append(None)
                    continue
                parts.append(chunk)
                spans.append((base, len(chunk)))
                base += len(chunk)
        data = np.frombuffer(b"".join(parts), np.uint8)
        if self.device.type == "cuda":
            if self._pinned is None or self._pinned.numel() < data.size:
                self._pinned = torch.empty(max(data.size, 1) * 5 // 4, dtype=torch.uint8).pin_memory()
            buf = self._pinned[: data.size]
            buf.numpy()[:] = data
            return buf, spans
        return torch.from_numpy(data.copy()), spans

    def decode(self, start: int, stop: int) -> Any:
        """Tiles ``start:stop`` decoded on the decode device: (k, H, W, 3) uint8 (a channels-last view)."""
        import torch

        with warnings.catch_warnings():  # torchvision 0.29 deprecates its image I/O in favour of torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg

        data, spans = self.raw(start, stop)
        h, w, c = self.tile_shape
        jpegs = [data[o : o + nb] for o, nb in (s for s in spans if s is not None)]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device) if jpegs else []
        except RuntimeError as exc:
            raise StoreError(
                f"a tile in rows {start}..{stop - 1} does not decode ({str(exc).splitlines()[0]})",
                path=self.path,
                fix="delete the store and re-tile the slide",
            ) from None
        it = iter(decoded)
        fill = None
        out = []
        for s in spans:
            if s is None:
                if fill is None:
                    fill = torch.full((c, h, w), self.fill, dtype=torch.uint8, device=self.device)
                out.append(fill)
            else:
                img = next(it)
                if tuple(img.shape) != (c, h, w):
                    raise StoreError(
                        f"a tile in rows {start}..{stop - 1} decodes to {tuple(img.shape)}, not {(c, h, w)}",
                        path=self.path,
                        fix="delete the store and re-tile the slide",
                    )
                out.append(img)
        return torch.stack(out).permute(0, 2, 3, 1)

    def batches(self) -> Iterator[Any]:
        """Decoded batches in order; a prefetch thread reads and decodes ahead (on its own CUDA stream)."""
        import torch

        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        items: queue.Queue = queue.Queue(self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for a, b in self.ranges():
                    if stop.is_set():
                        return
                    if cuda:
                        with torch.cuda.stream(stream):
                            tiles = self.decode(a, b)
                            event = torch.cuda.Event()
                            event.record(stream)
                        event.synchronize()  # the pinned buffer is free again; the main thread never waits
                    else:
                        tiles, event = self.decode(a, b), None
                    items.put((tiles, event))
                items.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                items.put(exc)

        worker = threading.Thread(target=produce, name="pathweak-decode", daemon=True)
        worker.start()
        try:
            while True:
                item = items.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                tiles, event = item
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    tiles.record_stream(current)
                yield tiles
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    items.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()
            self.close()

    def _reader(self, shard: int) -> ShardReader:
        reader = self._readers.get(shard)
        if reader is None:
            path = shard_key(self.path / "tiles", shard, 4)
            if not path.exists():
                raise StoreError(
                    f"shard {shard} is missing", path=self.path, fix="delete the store and re-tile the slide"
                )
            for old in list(self._readers)[:-2]:  # reading is sequential: keep the last few open
                self._readers.pop(old).close()
            reader = self._readers[shard] = ShardReader(path, self.shard_tiles)
        return reader

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
