"""Fast reading and writing of whole shards of a tile array, in Zarr v3's ``sharding_indexed`` layout.

Zarr-python spends about half a millisecond of Python per inner chunk, which is more than decoding
a 224 px JPEG tile. The tiler and the data loaders therefore write and read whole shards here: a
shard file is the encoded tiles back to back, then the index (``slots x (offset, nbytes)`` uint64,
little-endian; empty slots are all ones) and its CRC32C, exactly what Zarr's sharding codec with
``index_location="end"`` and index codecs ``[bytes, crc32c]`` writes and reads. The tests check that
Zarr reads these shards and that this module reads Zarr's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMPTY = np.uint64(2**64 - 1)


def shard_key(array_dir: Path, shard: int, ndim: int) -> Path:
    """Path of shard ``shard`` (along the first axis) with Zarr's default ``c/`` key encoding."""
    return array_dir.joinpath("c", str(shard), *("0" for _ in range(ndim - 1)))


def pack_shard(chunks: Sequence[bytes], slots: int) -> bytes:
    """Concatenate encoded chunks and append the shard index with its CRC32C."""
    import google_crc32c

    index = np.full((slots, 2), EMPTY, dtype="<u8")
    parts, offset = [], 0
    for i, data in enumerate(chunks):
        index[i] = (offset, len(data))
        parts.append(data)
        offset += len(data)
    index_bytes = index.tobytes()
    parts.append(index_bytes)
    parts.append(np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes())
    return b"".join(parts)


def write_shard(path: Path, chunks: Sequence[bytes], slots: int) -> None:
    """Write one shard file atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(pack_shard(chunks, slots))
    os.replace(tmp, path)


def read_index(fd: int, size: int, slots: int, path: Path) -> np.ndarray:
    """The (slots, 2) offset/length index at the end of an open shard file, CRC-checked."""
    import google_crc32c

    n = slots * 16 + 4
    if size < n:
        raise ValueError(f"{path}: shard is {size} bytes, shorter than its index ({n})")
    tail = os.pread(fd, n, size - n)
    index_bytes, crc = tail[:-4], tail[-4:]
    if np.frombuffer(crc, "<u4")[0] != google_crc32c.value(index_bytes):
        raise ValueError(f"{path}: shard index checksum mismatch (the file is damaged)")
    return np.frombuffer(index_bytes, "<u8").reshape(slots, 2)


class ShardReader:
    """Reads encoded chunks of one shard file by slot (an index cached per open shard)."""

    def __init__(self, path: Path, slots: int):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self.index = read_index(self._fd, os.fstat(self._fd).st_size, slots, path)

    def chunk(self, slot: int) -> bytes | None:
        offset, nbytes = self.index[slot]
        if offset == EMPTY:
            return None
        return os.pread(self._fd, int(nbytes), int(offset))

    def chunks(self, slots: Sequence[int]) -> list[bytes | None]:
        """Several chunks, reading one contiguous byte range when they lie close together."""
        rows = self.index[list(slots)]
        present = rows[:, 0] != EMPTY
        if not present.any():
            return [None] * len(slots)
        lo = int(rows[present, 0].min())
        hi = int((rows[present, 0] + rows[present, 1]).max())
        blob = os.pread(self._fd, hi - lo, lo)
        return [blob[int(o) - lo : int(o) - lo + int(n)] if ok else None for (o, n), ok in zip(rows, present)]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
