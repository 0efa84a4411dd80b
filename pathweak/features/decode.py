"""Device decode for extraction: a TileStore's JPEG bytes straight from its shards to the model's device.

A TileStore keeps each tile as one JPEG (an inner chunk of a Zarr shard, ``store/shards.py``). With
``decode="gpu"`` (or ``"auto"`` on a CUDA device) a batch of tiles is read as raw bytes (one ``pread``
per run of a shard, each chunk's CRC32C checked), copied once into a pinned host buffer and decoded by
nvJPEG on the GPU in one batched call; resizing and normalisation then happen on the device inside
:meth:`~pathweak.encoders.Encoder.embed`. Nothing is decoded on the CPU. A prefetch thread reads and
decodes the next batches on its own CUDA stream while the main thread runs the model, so shard reading,
decoding and the forward pass overlap.

The batched decoder is torchcodec's ``decode_jpeg`` when torchcodec (>= 0.16, a CUDA build) is
installed, which is where torchvision's image decoding moved; else torchvision's ``decode_jpeg``
(deprecated since torchvision 0.29; a list of JPEGs needs >= 0.19).

A decoder error is classified, never guessed at:

- out of memory: the batch is decoded in halves (and later batches are smaller); a single tile that
  does not fit is a :class:`~pathweak.errors.MemoryBudgetError`;
- the decoder cannot work here (a build without nvJPEG, no usable driver, the library missing): the next
  decoder is tried, then, with ``--decode auto``, the tiles are decoded on the CPU from then on, once
  said in the store's result; with ``--decode gpu`` it is an error;
- any other error: the same bytes are decoded by the store's own strict CPU decoder; a tile that fails
  there is damaged (the store's damage error: re-tile), else the device decoder is at fault and is
  treated as unable to work here.

The CPU decode path (libjpeg-turbo in DataLoader workers, ``features/extract.py``) stays the fallback
and is the only path on machines without CUDA, for lossless stores and for 3D patches.

Tolerance: nvJPEG and libjpeg-turbo may round the inverse DCT and colour conversion differently, by a
grey level (|difference| <= 1 per channel, rarely 2); features then agree to about 1e-2 (float16
features of a ViT; see tests/features/test_decode.py, which checks the raw-byte path decoded by the
same library on the CPU against the simplejpeg path).
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import devices
from ..errors import ConfigError, MemoryBudgetError, StoreError, reason
from ..store.open import damaged
from ..store.shards import ShardError, ShardReader, shard_key

log = logging.getLogger(__name__)

DECODES = ("auto", "cpu", "gpu")
DEVICE_BATCH = 256  # tiles per decoded batch (as the CPU loader's items)
PREFETCH = 3  # decoded batches waiting ahead of the model
# what a decoder says when it cannot work on this machine at all (not about the bytes it was given)
UNSUPPORTED = (
    "not compiled with nvjpeg",
    "nvjpeg support",
    "couldn't load the image extension",
    "could not run",
    "no kernel image",
    "failed to initialize nvjpeg",
    "driver version is insufficient",
    "failed to get current cuda device",
    "no cuda gpus are available",
)
_UNAVAILABLE: dict[str, str] = {}  # device type -> why no device decoder works in this process

Decoder = Callable[[list[Any], Any], list[Any]]


def check_decode(decode: str, dev: Any) -> str:
    """Validate ``--decode`` against the model's device ``dev``; returns the requested path ("cpu" or
    "gpu") for JPEG stores. ``gpu`` without CUDA (or with the model on the CPU) is a clear error."""
    if decode not in DECODES:
        raise ConfigError(f"unknown --decode {decode!r}", fix="use auto, cpu or gpu")
    if decode == "gpu":
        if devices.visible_gpus() == 0:
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


def device_batches(tile_store: Any, dev: Any, decode: str) -> RawTileBatches | None:
    """Batches of decoded tiles (k, H, W, 3) uint8 on ``dev`` for the device-decode path (iterate the
    returned object), or None when the CPU path applies (``decode`` resolves to cpu, the store is not JPEG
    RGB tiles, or no device decoder works in this process and ``decode`` is auto)."""
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
    if dev.type in _UNAVAILABLE:
        if decode == "gpu":
            raise unavailable_error(dev, _UNAVAILABLE[dev.type])
        return None  # said once, in the result of the store where it was found
    return RawTileBatches(tile_store, dev, strict=decode == "gpu")


def unavailable_error(dev: Any, why: str) -> ConfigError:
    return ConfigError(
        f"--decode gpu: JPEG tiles cannot be decoded on {dev} here ({why})",
        fix="pass --decode auto (or cpu) to decode them on the CPU, or install torchcodec or a torchvision built with nvJPEG",
    )


def jpeg_decoders() -> list[tuple[str, Decoder]]:
    """The batched JPEG decoders installed, in order of preference: torchcodec's, then torchvision's."""
    found: list[tuple[str, Decoder]] = []
    try:
        from torchcodec.decoders import decode_jpeg as codec_decode  # the API torchvision's decoders moved to

        found.append(("torchcodec", lambda data, device: list(codec_decode(data, mode="RGB", device=device))))
    except Exception as exc:  # not installed, or its native library does not load
        log.debug("torchcodec is not usable: %s", reason(exc))
    try:
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as vision_decode

        # deprecated since 0.29 in favour of torchcodec: silenced here, as the message names no action for users
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
        )
        found.append(("torchvision", lambda data, device: list(vision_decode(data, ImageReadMode.RGB, device))))
    except Exception as exc:
        log.debug("torchvision's decode_jpeg is not usable: %s", reason(exc))
    return found


def failure_kind(exc: BaseException) -> str:
    """What a decoder's error means: "memory" (out of memory), "unsupported" (the decoder cannot work on
    this machine) or "data" (about the bytes: checked on the CPU before a store is called damaged)."""
    if devices.out_of_memory(exc):
        return "memory"
    text = str(exc).lower()
    if isinstance(exc, (ImportError, NotImplementedError)) or any(m in text for m in UNSUPPORTED):
        return "unsupported"
    return "data"


class RawTileBatches:
    """Reads a TileStore's tiles as JPEG bytes, shard by shard, and decodes them on ``decode_device``
    (the GPU in extraction; the CPU in tests, with the same bytes and code). ``strict``: an unusable
    device decoder is an error (``--decode gpu``) instead of a switch to CPU decoding (``fallback`` then
    says why)."""

    def __init__(
        self,
        tile_store: Any,
        decode_device: Any,
        batch: int = DEVICE_BATCH,
        prefetch: int = PREFETCH,
        strict: bool = False,
        decoders: list[tuple[str, Decoder]] | None = None,
    ):
        import torch

        self.path = Path(tile_store.path)
        self.n = len(tile_store)
        self.shard_tiles = int(tile_store.shard_tiles)
        self.tile_shape = tuple(tile_store.tile_shape)
        self.crc = bool(tile_store.chunk_crc)
        self.fill = int(tile_store._tiles_meta.get("fill_value", 255) or 255)
        self.device = torch.device(decode_device)
        self.batch, self.prefetch, self.strict = batch, prefetch, strict
        self.decoders = list(jpeg_decoders() if decoders is None else decoders)
        self.fallback: str | None = None  # why the tiles were decoded on the CPU from some batch on
        self._failures: list[str] = []
        self._readers: dict[int, ShardReader] = {}
        self._pinned: Any = None
        self._cpu_store: Any = None

    def ranges(self) -> Iterator[tuple[int, int]]:
        """Tile ranges of the batches, in order (a batch shrinks after an out-of-memory error)."""
        start = 0
        while start < self.n:
            stop = min(self.n, start + self.batch)
            yield start, stop
            start = stop

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
            try:
                chunks = self._reader(int(shard)).chunks(slots)  # one pread per shard run, CRC32C checked
            except (ShardError, OSError) as exc:
                raise damaged(self.path, "tiles", reason(exc)) from None
            for chunk in chunks:
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

        if self.fallback is not None:
            return self._decode_on_cpu(start, stop)
        data, spans = self.raw(start, stop)
        h, w, c = self.tile_shape
        jpegs = [data[o : o + nb] for o, nb in (s for s in spans if s is not None)]
        try:
            decoded = self._decode_jpegs(jpegs, start, stop)
        except _NoDecoder as exc:
            if self.strict:
                raise unavailable_error(self.device, str(exc)) from None
            self.fallback = _UNAVAILABLE[self.device.type] = str(exc)
            return self._decode_on_cpu(start, stop)
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

    def _decode_jpegs(self, jpegs: list[Any], start: int, stop: int) -> list[Any]:
        """Decode with the first decoder that works here (see the module docstring for the error classes)."""
        while self.decoders:
            name, fn = self.decoders[0]
            try:
                return fn(jpegs, self.device) if jpegs else []
            except Exception as exc:  # classified below, once the traceback (and its tensors) is gone
                kind, why = failure_kind(exc), reason(exc)
            if kind == "memory":
                return self._decode_smaller(jpegs, start, stop)
            if kind == "data":
                self._check_on_cpu(start, stop)  # raises the store's damage error when a tile is damaged
                why = f"it fails on tiles the CPU decodes: {why}"
            self._failures.append(f"{name}: {why}")
            self.decoders.pop(0)
        raise _NoDecoder(
            "; ".join(self._failures) or "no batched JPEG decoder is installed (torchcodec or torchvision)"
        )

    def _decode_smaller(self, jpegs: list[Any], start: int, stop: int) -> list[Any]:
        """After an out-of-memory error: ``jpegs`` in parts of at most half as many (this batch size stays
        for the next batches); one tile that does not fit is an error."""
        devices.empty_cache(self.device)
        if len(jpegs) <= 1:
            raise MemoryBudgetError(
                f"{self.device} runs out of memory decoding one tile of rows {start}..{stop - 1}",
                path=self.path,
                fix="free GPU memory (one process per GPU, a smaller --batch-size) or pass --decode cpu",
            )
        self.batch = max(1, min(self.batch, len(jpegs) // 2))
        out: list[Any] = []
        while len(out) < len(jpegs):
            out += self._decode_jpegs(jpegs[len(out) : len(out) + self.batch], start, stop)
        return out

    def _check_on_cpu(self, start: int, stop: int) -> None:
        self._store().read_tiles(slice(start, stop))

    def _decode_on_cpu(self, start: int, stop: int) -> Any:
        """Tiles ``start:stop`` decoded by the store's CPU decoder, on the decode device."""
        import torch

        tiles = torch.from_numpy(self._store().read_tiles(slice(start, stop)))
        if self.device.type == "cuda":
            tiles = tiles.pin_memory()
        return tiles.to(self.device, non_blocking=True)

    def _store(self) -> Any:
        if self._cpu_store is None:
            from ..store.tiles import TileStore

            self._cpu_store = TileStore.open(self.path)
        return self._cpu_store

    def __iter__(self) -> Iterator[Any]:
        return self.batches()

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
                raise damaged(self.path, "tiles", f"shard {shard} ({path.relative_to(self.path)}) is missing")
            for old in list(self._readers)[:-2]:  # reading is sequential: keep the last few open
                self._readers.pop(old).close()
            reader = self._readers[shard] = ShardReader(path, self.shard_tiles, self.crc)
        return reader

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        if self._cpu_store is not None:
            self._cpu_store.close()
            self._cpu_store = None


class _NoDecoder(Exception):
    """No device decoder works here (the message says why, per decoder)."""
