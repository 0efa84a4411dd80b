"""Shard checksums (pathweak.store.shards): each kind of damage is a ShardError, intact shards read back."""

from __future__ import annotations

import pytest

from pathweak.store.shards import ShardError, ShardReader, pack_shard, write_shard


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "c" / "0"
    write_shard(path, [b"alpha" * 10, b"beta" * 7, b"gamma"], slots=4)
    return path


def test_intact_shard_reads_back(shard):
    r = ShardReader(shard, 4, crc=True)
    assert r.chunks([0, 1, 2, 3]) == [b"alpha" * 10, b"beta" * 7, b"gamma", None]
    assert r.chunk(1) == b"beta" * 7
    r.close()
    assert [p.name for p in shard.parent.iterdir()] == ["0"]  # written atomically: no temporary left


def test_without_chunk_crc_the_layout_is_plain_zarr_sharding():
    plain = pack_shard([b"ab", b"c"], 2, crc=False)
    assert plain.startswith(b"abc") and len(plain) == 3 + 2 * 16 + 4


@pytest.mark.parametrize("where, match", [
    (5, "chunk 0 .* fails its checksum"),       # inside a tile
    (-10, "index .* fails its checksum"),        # inside the index
    (-2, "index .* fails its checksum"),         # the index's CRC itself
])
def test_a_flipped_bit_is_caught(shard, where, match):
    data = bytearray(shard.read_bytes())
    data[where] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=match):
        r = ShardReader(shard, 4, crc=True)
        r.chunks([0, 1, 2])


def test_truncation_is_caught(shard):
    data = shard.read_bytes()
    shard.write_bytes(data[:30])
    with pytest.raises(ShardError, match="truncated|index"):
        ShardReader(shard, 4, crc=True)
    shard.write_bytes(data[:5])
    with pytest.raises(ShardError, match="truncated"):
        ShardReader(shard, 4, crc=True)
