"""Tile codecs: one function each way, shared by the Zarr v3 codec and the fast shard path.

``pathweak.jpeg`` is a Zarr v3 array-to-bytes codec: each inner chunk (one RGB tile) is one baseline
JPEG, 4:4:4 (no chroma subsampling), decoded strictly so that a damaged tile raises. It is registered
with Zarr through the ``zarr.codecs`` entry point, so any Zarr 3 reader with pathweak installed opens a
TileStore's ``tiles`` array directly. Lossless stores use Zarr's own ``bytes`` + ``zstd`` codecs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

JPEG_CODEC_NAME = "pathweak.jpeg"
ZSTD_LEVEL = 1


def encode_jpeg(tile: np.ndarray, quality: int) -> bytes:
    """One (T, T, 3) uint8 tile as a 4:4:4 baseline JPEG."""
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(tile), quality=quality, colorspace="RGB", colorsubsampling="444")


def decode_jpeg(data: bytes | memoryview) -> np.ndarray:
    """A tile from its JPEG bytes; damaged data raises ``ValueError`` (strict libjpeg-turbo)."""
    import simplejpeg

    return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)


def encode_zstd(tile: np.ndarray) -> bytes:
    """A tile's raw bytes, zstd-compressed (Zarr's ``bytes`` + ``zstd`` codec chain)."""
    import imagecodecs

    return imagecodecs.zstd_encode(np.ascontiguousarray(tile).tobytes(), level=ZSTD_LEVEL)  # type: ignore[return-value]  # bytes when no out= is given


def decode_zstd(data: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    import imagecodecs

    return np.frombuffer(imagecodecs.zstd_decode(bytes(data)), np.uint8).reshape(shape)


def encoder_for(spec: Any) -> Callable[[np.ndarray], bytes]:
    """The tile encoder of a :class:`~pathweak.config.StoreSpec` (JPEG at its quality, or zstd)."""
    if spec.compression == "jpeg":
        quality = spec.jpeg_quality
        return lambda tile: encode_jpeg(tile, quality)
    return encode_zstd


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Zarr v3 codec: a uint8 chunk of shape (..., H, W, 3) holding one image, stored as JPEG 4:4:4."""

    is_fixed_size = False
    quality: int = 90

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JpegCodec:
        _, config = parse_named_configuration(data, JPEG_CODEC_NAME, require_configuration=False)
        options: dict[str, Any] = dict(config or {})  # JSON values, as to_dict wrote them
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return {"name": JPEG_CODEC_NAME, "configuration": {"quality": self.quality}}

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        tile = decode_jpeg(chunk_bytes.as_numpy_array().tobytes())
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(tile.reshape(chunk_spec.shape))  # type: ignore[arg-type]  # zarr's NDArrayLike protocol does not match numpy's stubs

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        arr = chunk_array.as_ndarray_like()
        tile = np.asarray(arr).reshape(arr.shape[-3:])
        return chunk_spec.prototype.buffer.from_bytes(encode_jpeg(tile, self.quality))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("JPEG output size is data dependent")


def register() -> None:
    """Register the codec with Zarr in this process (the entry point does it for installed copies)."""
    import zarr.registry

    zarr.registry.register_codec(JPEG_CODEC_NAME, JpegCodec)


register()
