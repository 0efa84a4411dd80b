"""``WrappedEncoder``: the shared surface of the encoders that wrap another one for extraction (rotation
views, token rows, stain normalisation): its id and width come from the ``info`` record the wrapper builds."""

from __future__ import annotations

from typing import Any


class WrappedEncoder:
    """Base of an extraction-time wrapper: ``encoder_id`` and ``embed_dim`` read from ``self.info``."""

    info: Any  # an EncoderInfo, set by the subclass from the wrapped encoder's record

    @property
    def encoder_id(self) -> str:
        return str(self.info.encoder_id)

    @property
    def embed_dim(self) -> int:
        return int(self.info.embed_dim)
