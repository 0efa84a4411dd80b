"""Fast reading and writing of whole shards of a tile array, in Zarr v3's ``sharding_indexed`` layout.

Zarr-python spends about half a millisecond of Python per inner chunk, which is more than decoding
a 224 px JPEG tile. The tiler and the data loaders therefore write and read whole shards here: a
shard file is the encoded tiles back to back, then the index (``slots x (offset, nbytes)`` uint64,
little-endian; empty slots are all ones) and its CRC32C, exactly what Zarr's sharding codec with
``index_location="end"`` and index codecs ``[bytes, crc32c]`` writes and reads. Stores written by the
store layer also end every chunk with its own CRC32C (Zarr's ``crc32c`` codec after the tile codec), so
a flipped bit or a zeroed block inside a tile is caught when it is read. The tests check that Zarr reads
these shards and that this module reads Zarr's.

A damaged shard raises :class:`ShardError` (a ``ValueError``); the TileStore turns it into a
:class:`~pathweak.errors.StoreError` that names the store and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMPTY = np.uint64(2**64 - 1)


class ShardError(ValueError):
    """A shard file is damaged: truncated, a bad index checksum, or a chunk whose checksum fails."""


def shard_key(array_dir: Path, shard: int, ndim: int) -> Path:
    """Path of shard ``shard`` (along the first axis) with Zarr's default ``c/`` key encoding."""
    return array_dir.joinpath("c", str(shard), *("0" for _ in range(ndim - 1)))


def pack_shard(chunks: Sequence[bytes], slots: int, crc: bool = True) -> bytes:
    """Concatenate encoded chunks (each followed by its CRC32C with ``crc``) and append the shard index
    with its CRC32C."""
    import google_crc32c

    index = np.full((slots, 2), EMPTY, dtype="<u8")
    parts: list[bytes] = []
    offset = 0
    for i, data in enumerate(chunks):
        parts.append(data)
        n = len(data)
        if crc:  # a separate part: the chunk is copied once, by the join
            parts.append(google_crc32c.value(data).to_bytes(4, "little"))
            n += 4
        index[i] = (offset, n)
        offset += n
    index_bytes = index.tobytes()
    parts.append(index_bytes)
    parts.append(np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes())
    return b"".join(parts)


def write_shard(path: Path, chunks: Sequence[bytes], slots: int, crc: bool = True) -> None:
    """Write one shard file atomically (temporary name, then rename)."""
    from .._atomic import atomic_file

    with atomic_file(path, "wb") as fh:
        fh.write(pack_shard(chunks, slots, crc))


def read_index(fd: int, size: int, slots: int, path: Path) -> np.ndarray:
    """The (slots, 2) offset/length index at the end of an open shard file, CRC-checked."""
    import google_crc32c

    n = slots * 16 + 4
    if size < n:
        raise ShardError(f"{path.name} is truncated ({size} bytes, shorter than its {n}-byte index)")
    tail = os.pread(fd, n, size - n)
    index_bytes, crc = tail[:-4], tail[-4:]
    if np.frombuffer(crc, "<u4")[0] != google_crc32c.value(index_bytes):
        raise ShardError(f"the index of {path.name} fails its checksum (truncated or overwritten)")
    index = np.frombuffer(index_bytes, "<u8").reshape(slots, 2)
    used = index[:, 0] != EMPTY
    if used.any() and int((index[used, 0] + index[used, 1]).max()) > size - n:
        raise ShardError(f"{path.name} is truncated (its index points past the data)")
    return index


class ShardReader:
    """Reads encoded chunks of one shard file by slot (an index cached per open shard)."""

    def __init__(self, path: Path, slots: int, crc: bool = False):
        self.path = path
        self.crc = crc
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.index = read_index(self._fd, os.fstat(self._fd).st_size, slots, path)
        except BaseException:
            self.close()
            raise

    def _check(self, data: bytes, slot: int) -> bytes | memoryview:
        """A chunk without its trailing CRC32C, checked (with ``crc``; a view, not a copy)."""
        if not self.crc:
            return data
        import google_crc32c

        if len(data) < 4 or int.from_bytes(data[-4:], "little") != google_crc32c.value(
            np.frombuffer(data, np.uint8, count=len(data) - 4)
        ):
            raise ShardError(f"chunk {slot} of {self.path.name} fails its checksum (the file is damaged)")
        return memoryview(data)[:-4]

    def chunk(self, slot: int) -> bytes | memoryview | None:
        offset, nbytes = self.index[slot]
        if offset == EMPTY:
            return None
        return self._check(os.pread(self._fd, int(nbytes), int(offset)), slot)

    def chunks(self, slots: Sequence[int]) -> list[bytes | memoryview | None]:
        """Several chunks, reading one contiguous byte range when they lie close together."""
        rows = self.index[list(slots)]
        present = rows[:, 0] != EMPTY
        if not present.any():
            return [None] * len(slots)
        lo = int(rows[present, 0].min())
        hi = int((rows[present, 0] + rows[present, 1]).max())
        blob = os.pread(self._fd, hi - lo, lo)
        if len(blob) < hi - lo:
            raise ShardError(f"{self.path.name} is truncated")
        return [
            self._check(blob[int(o) - lo : int(o) - lo + int(n)], s) if ok else None
            for s, (o, n), ok in zip(slots, rows, present, strict=False)
        ]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
