"""The extension points as protocols: what pathweak calls on an encoder, a bank of bags, a level reader
and a progress callback. Anything with these members plugs in; the real classes satisfy them (checked by
mypy, and at run time with ``isinstance`` in tests/test_protocols.py).

Importing this module imports neither torch nor numpy's heavy neighbours: the torch types are only named
in annotations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .progress import Advance as Advance  # the progress callback: ``advance(n=1, description=None, total=None)``

if TYPE_CHECKING:
    import numpy as np
    import torch
    from typing_extensions import Self

    from .encoders.base import EncoderInfo

__all__ = [
    "Advance",
    "BagSource",
    "FeatureBankLike",
    "LevelReader",
    "ModuleEncoder",
    "ResidentBagSource",
    "TileEncoder",
]


@runtime_checkable
class TileEncoder(Protocol):
    """What feature extraction calls on an encoder (:class:`~pathweak.encoders.Encoder`,
    :class:`~pathweak.features.tokens.TokenRows`): its record (name, weights hash, input size, mean/std,
    preset extras), id and embedding size, a check of a store's tile kind, and ``embed``: uint8 tiles
    (B, H, W, 3) (or 3D patches (B, D, H, W)) to float32 rows (k, ``embed_dim``)."""

    @property
    def info(self) -> EncoderInfo: ...

    @property
    def encoder_id(self) -> str: ...

    @property
    def embed_dim(self) -> int: ...

    def check_tiles(self, is_3d: bool, tile_shape: tuple[int, ...], where: str) -> None: ...

    def embed(self, tiles: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ModuleEncoder(TileEncoder, Protocol):
    """An encoder handed to ``extract_features``: a :class:`TileEncoder` that is also a torch module, moved
    to the extraction device and put in eval mode first (and to the CPU before it is sent to device workers)."""

    def to(self, device: torch.device) -> Self: ...

    def eval(self) -> Self: ...

    def cpu(self) -> Self: ...


@runtime_checkable
class BagSource(Protocol):
    """What MIL training and inference read of a bank (:class:`~pathweak.features.bank.FeatureBank`,
    :class:`~pathweak.features.bank.StreamingFeatureBank`, :class:`~pathweak.features.tokens.TokenBank`):
    ``len(bank)`` bags, bag ``i``'s instances (n_i, ``embed_dim``) and their (row, col) int32 grid
    positions (n_i, 2), on ``device``; ``resident``: held in memory (needed by multi-device training)."""

    @property
    def embed_dim(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def resident(self) -> bool: ...

    def __len__(self) -> int: ...

    def bag(self, i: int) -> torch.Tensor: ...

    def grid(self, i: int) -> torch.Tensor: ...


@runtime_checkable
class ResidentBagSource(BagSource, Protocol):
    """A :class:`BagSource` held in memory that moves to a device in place (``to`` returns the bank):
    what each rank of multi-device training needs (:class:`~pathweak.features.bank.FeatureBank`,
    :class:`~pathweak.features.tokens.TokenBank`)."""

    def to(self, device: torch.device | str) -> Self: ...


@runtime_checkable
class FeatureBankLike(BagSource, Protocol):
    """A cohort's bank as ``train_cohort`` uses it: a :class:`BagSource` whose bags are slides (``slide_ids``
    in bank order) of one encoder (its FeatureStore record, ``encoder``), with the numbers a run records."""

    @property
    def slide_ids(self) -> list[str]: ...

    @property
    def encoder(self) -> dict[str, Any]: ...

    @property
    def encoder_id(self) -> str: ...

    @property
    def n_tiles(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...


@runtime_checkable
class LevelReader(Protocol):
    """What the tiler's cutting code reads a slide through: RGB uint8 (h, w, 3) at pyramid ``level``, with
    (x, y) in that level's pixels and white outside the image (:class:`~pathweak.io.tiff_tiles.TiffTileReader`,
    or the slide backend's ``read_region``)."""

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray: ...
