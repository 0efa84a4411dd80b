"""TileStore: the on-disk patches of one slide (a Zarr v3 group), and how to create and open one.

Layout (format 1)::

    <slide_id>.zarr/
      coords          int64 (N, 2)   level-0 top-left (x, y) of every patch
      grid_index      int32 (N, 2)   (row, col) of the patch in the slide's full tile grid
      tissue_fraction float32 (N,)   tissue fraction of the patch (from the tissue mask)
      tiles           uint8 (N, T, T, 3), inner chunk = 1 tile (JPEG 4:4:4 or zstd), shards of S tiles
      tissue_mask     uint8 (h, w)   thumbnail-scale tissue mask (1 = tissue)
      thumbnail       uint8 (h, w, 3)
      artifact_mask   uint8 (h, w), optional: the class an artefact model removed (0: kept; --artifacts)
      attrs: the store header (pathweak.store.header: kind="tiles", pathweak_format, complete, cache_key,
             source, axes, rows, created, integrity), slide/mpp/tile/tissue/storage/versions

Volume stores (``attrs["volume"]`` present) use the same layout with (z, y, x) ``coords``: 3D patches
(``tiles`` uint8 (N, D, H, W), zstd) or 2D slice patches (RGB, as above); see docs/tilestore_format.md.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..config import StoreSpec
from ..errors import reason
from .header import StoreHeader, header_attrs, read_header
from .open import array_meta, damaged, find_stores, open_store, read_array, read_attrs
from .shards import ShardError, ShardReader, shard_key

FORMAT_VERSION = 1
KIND = "tiles"


def create_store(
    path: Path,
    n_tiles: int,
    tile_px: int,
    spec: StoreSpec,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any],
    tile_shape: tuple[int, ...] | None = None,
    fill_value: int = 255,
    dimension_names: tuple[str, ...] = ("tile", "y", "x", "rgb"),
    source: str = "slide",
) -> None:
    """Create the group, the empty ``tiles`` array and the small arrays of a TileStore at ``path``.

    ``tile_shape`` is the shape of one tile (default RGB ``(tile_px, tile_px, 3)``; a 3D volume patch
    is ``(D, H, W)`` and must be stored losslessly). The tile data itself is written shard by shard
    (:func:`pathweak.store.shards.write_shard`). ``source`` ("slide", "volume", "images") goes into
    the store header; every chunk carries a CRC32C.
    """
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

    from . import codecs  # imports zarr: only where stores are made or tiles decoded

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    shard = max(1, min(spec.shard_tiles, max(n_tiles, 1)))
    tile_shape = tuple(tile_shape or (tile_px, tile_px, 3))
    if spec.compression == "jpeg" and (len(tile_shape) != 3 or tile_shape[2] != 3):
        raise ValueError(f"JPEG stores RGB tiles only, not tiles of shape {tile_shape}")
    if spec.compression == "jpeg":
        serializer: Any = codecs.JpegCodec(quality=spec.jpeg_quality)
        compressors: Any = (Crc32cCodec(),)
    else:
        serializer, compressors = BytesCodec(), (ZstdCodec(level=codecs.ZSTD_LEVEL), Crc32cCodec())
    group.create_array(
        "tiles",
        shape=(n_tiles, *tile_shape),
        dtype="uint8",
        chunks=(1, *tile_shape),
        shards=(shard, *tile_shape),
        serializer=serializer,
        compressors=compressors,
        fill_value=fill_value,
        dimension_names=dimension_names,
    )
    for name, data in arrays.items():
        chunks = (min(max(len(data), 1), 65536),) + data.shape[1:] if name not in ("tissue_mask", "thumbnail") else None
        arr = group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunks or "auto",
            compressors=(ZstdCodec(), Crc32cCodec()),
            config={"write_empty_chunks": True},  # type: ignore[arg-type]  # zarr's NotRequired keys (typing, 3.11+) read as required at 3.10
        )
        if data.size:
            arr[...] = data
    header = header_attrs(
        KIND,
        FORMAT_VERSION,
        source=source,
        axes="zyx" if source == "volume" else "xy",
        cache_key=attrs.get("cache_key"),
    )
    group.attrs.update({**header, **attrs, "created": header["created"]})


def shard_tiles_of(path: Path) -> int:
    """Tiles per shard of the store at ``path`` (read from its ``tiles`` metadata)."""
    meta = array_meta(Path(path), "tiles", KIND)
    return int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])


ARRAYS = ("coords", "grid_index", "tissue_fraction", "tiles")


class TileStore:
    """A finished TileStore, opened for reading.

    ``coords``, ``grid_index`` and ``tissue_fraction`` are numpy arrays; ``read_tiles(indices)`` returns
    tiles fast (whole-shard reads, JPEG decoded in C); ``tiles`` is the plain Zarr array. A volume store
    (:attr:`is_volume`) has (z, y, x) ``coords``; its tiles are RGB slice patches or, when
    :attr:`tile_shape` has no colour axis, 3D (D, H, W) patches.
    """

    def __init__(self, path: Path, attrs: dict[str, Any]):
        self.path = path
        self.attrs = attrs
        self._readers: OrderedDict[int, ShardReader] = OrderedDict()

    @classmethod
    def open(cls, path: str | Path) -> TileStore:
        """Open a finished store; a missing, incomplete, foreign, newer-format or damaged one (arrays of
        other lengths, a missing shard or chunk file, a shard whose index fails its checksum) is a
        clear :class:`StoreError` naming the store."""
        try:
            n = int(read_attrs(Path(path))["tile"]["n_tiles"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            n = None
        opened = open_store(path, KIND, ARRAYS, rows={"n_tiles": n} if n is not None else None)
        store = cls(opened.path, opened.attrs)
        store.header = opened.header
        store.check_shards()
        return store

    header: StoreHeader

    def check_shards(self) -> None:
        """Every shard of ``tiles`` is present and its index passes its checksum (cheap: the index only)."""
        for shard in range(-(-len(self) // self.shard_tiles)):
            self._reader(shard)

    # -- small arrays ----------------------------------------------------------------------------
    def _array(self, name: str) -> np.ndarray:
        return read_array(self.path, name, KIND)

    @cached_property
    def coords(self) -> np.ndarray:
        return self._array("coords")

    @cached_property
    def grid_index(self) -> np.ndarray:
        return self._array("grid_index")

    @cached_property
    def tissue_fraction(self) -> np.ndarray:
        return self._array("tissue_fraction")

    @cached_property
    def thumbnail(self) -> np.ndarray:
        return self._array("thumbnail")

    @cached_property
    def tissue_mask(self) -> np.ndarray:
        return self._array("tissue_mask")

    @cached_property
    def artifact_mask(self) -> np.ndarray | None:
        """Thumbnail-scale class ids an artefact model removed from the tissue mask (0: kept), else None."""
        return self._array("artifact_mask") if (self.path / "artifact_mask").exists() else None

    @cached_property
    def label_fraction(self) -> np.ndarray | None:
        """Per-patch fraction of each label value (N, C) of a volume tiled with a label map, else None."""
        return self._array("label_fraction") if (self.path / "label_fraction").exists() else None

    @property
    def source(self) -> str:
        """What the tiles come from: "slide", "volume" or "images" (the store header's source kind)."""
        return self._header.source

    @property
    def _header(self) -> StoreHeader:
        header = getattr(self, "header", None)
        if header is None:
            header = self.header = read_header(self.attrs)
        return header

    @property
    def tiles(self) -> Any:
        """The ``tiles`` array through Zarr (generic, slower access)."""
        import zarr

        from . import codecs  # noqa: F401  (registers pathweak.jpeg with Zarr)

        return zarr.open_array(str(self.path / "tiles"), mode="r")

    # -- facts -----------------------------------------------------------------------------------
    @property
    def slide_id(self) -> str:
        """The id of the source: the slide's, or the volume's or image set's (``source_id``; stores written
        before the store layer gave those a made-up ``slide`` block)."""
        if self.source != "slide" and "source_id" in self.attrs:
            return str(self.attrs["source_id"])
        return str(self.attrs["slide"]["slide_id"])

    @property
    def tile_px(self) -> int:
        return int(self.attrs["tile"]["patch_px"])

    @property
    def compression(self) -> str:
        return str(self.attrs["storage"]["compression"])

    @property
    def is_volume(self) -> bool:
        """True for a store tiled from a 3D volume (coords are (z, y, x) voxels; see attrs["volume"])."""
        return self._header.source == "volume"

    @cached_property
    def _tiles_meta(self) -> dict[str, Any]:
        return array_meta(self.path, "tiles", KIND)

    @cached_property
    def chunk_crc(self) -> bool:
        """True when every tile chunk ends with its CRC32C (stores written by the store layer)."""
        inner = (self._tiles_meta.get("codecs") or [{}])[0].get("configuration", {}).get("codecs", [])
        return any(c.get("name") == "crc32c" for c in inner)

    @property
    def tile_shape(self) -> tuple[int, ...]:
        """Shape of one tile: (T, T, 3) RGB, or (D, H, W) for 3D volume patches."""
        return tuple(int(s) for s in self._tiles_meta["shape"][1:])

    @property
    def tile_extent(self) -> tuple[float, float]:
        """Level-0 size (w, h) of the region each tile covers: for a slide, the read size times the level's
        downsample; for images and volume patches, the read size (they are not read from a pyramid)."""
        read = float(self.attrs["tile"]["read_px"])
        if self.source != "slide":
            return read, read
        ds = self.attrs["mpp"]["level_downsample"]
        return read * float(ds[0]), read * float(ds[1])

    @property
    def holds_3d_patches(self) -> bool:
        """True for 3D volume patches (tiles of (D, H, W) voxels), False for RGB tiles and slice patches."""
        return list(self._tiles_meta.get("dimension_names") or [])[1:] == ["z", "y", "x"]

    @cached_property
    def shard_tiles(self) -> int:
        return shard_tiles_of(self.path)

    def __len__(self) -> int:
        return int(self.attrs["tile"]["n_tiles"])

    # -- tiles -----------------------------------------------------------------------------------
    def read_tiles(self, indices: np.ndarray | list[int] | slice) -> np.ndarray:
        """Tiles at ``indices`` as a (k, T, T, 3) uint8 array, in the order given."""
        n = len(self)
        idx = np.arange(n)[indices] if isinstance(indices, slice) else np.asarray(indices, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"tile index out of range 0..{n - 1}")
        out = np.empty((idx.size, *self.tile_shape), np.uint8)
        shards = idx // self.shard_tiles
        for shard in np.unique(shards):
            where = np.nonzero(shards == shard)[0]
            slots = (idx[where] % self.shard_tiles).tolist()
            try:
                chunks = self._reader(int(shard)).chunks(slots)
            except (ShardError, OSError) as exc:
                raise damaged(self.path, KIND, reason(exc)) from None
            for pos, data in zip(where, chunks, strict=False):
                out[pos] = self._decode(data, int(idx[pos]))
        return out

    def __getitem__(self, i: int) -> np.ndarray:
        return self.read_tiles([i])[0]

    def _decode(self, data: bytes | memoryview | None, index: int) -> np.ndarray:
        if data is None:
            return np.full(self.tile_shape, self._tiles_meta.get("fill_value", 255), np.uint8)
        from . import codecs  # (imports zarr; a module import is a dictionary lookup once done)

        try:
            if self.compression == "jpeg":
                return codecs.decode_jpeg(data)
            return codecs.decode_zstd(data, self.tile_shape)
        except Exception as exc:
            raise damaged(self.path, KIND, f"tile {index} cannot be decoded ({reason(exc)})") from None

    def _reader(self, shard: int) -> ShardReader:
        reader = self._readers.get(shard)
        if reader is None:
            path = shard_key(self.path / "tiles", shard, 4)
            if not path.exists():
                raise damaged(self.path, KIND, f"shard {shard} ({path.relative_to(self.path)}) is missing")
            try:
                reader = ShardReader(path, self.shard_tiles, self.chunk_crc)
            except (ShardError, OSError) as exc:
                raise damaged(self.path, KIND, f"shard {shard}: {reason(exc)}") from None
            self._readers[shard] = reader
            while len(self._readers) > 8:
                self._readers.popitem(last=False)[1].close()
        else:
            self._readers.move_to_end(shard)
        return reader

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __enter__(self) -> TileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TileStore({str(self.path)!r}, tiles={len(self)}, tile_px={self.tile_px})"

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def find_tile_stores(inputs: list[str | Path]) -> list[Path]:
    """TileStores named directly, found in folders (``*.zarr`` children, e.g. ``out/tiles``) or by glob."""
    return find_stores(
        inputs,
        KIND,
        "TileStore",
        "pass <slide>.zarr stores or the tiles/ folder of `pathweak tile`",
        "run `pathweak tile` first",
    )


def store_size_bytes(path: Path) -> int:
    """Bytes on disk under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
