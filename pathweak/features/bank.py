"""FeatureBank: a cohort's FeatureStores in one contiguous tensor, resident where the head trains.

Layout: ``features`` (T, D) in float16 (or bfloat16/float32) holds the tiles of every slide back to
back; slide ``i`` is rows ``offsets[i]:offsets[i + 1]`` (ragged bags, no padding). ``grid`` (T, 2) int32
holds each tile's (row, col) on its slide's tile grid (for heads with a 2D positional encoding); coords
stay on the CPU. The tensors live on the GPU when there is one (else in RAM), so an epoch reads
nothing from disk and a bag is a zero-copy slice.

Before loading, :func:`estimate_bank` compares the bytes needed with the memory free on the device.
When the cohort does not fit, :func:`load_feature_bank` says so in one line and (``stream="auto"``)
falls back to :class:`StreamingFeatureBank`, which reads one bag at a time from disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..devices import parse_device
from ..errors import ConfigError, MemoryBudgetError, StoreError
from ..heads.base import GridBox
from ..progress import progress_bar
from ..store.features import FeatureStore, find_feature_stores
from ..store.features import grid_positions as grid_positions  # re-exported: the bank's grid layout

if TYPE_CHECKING:
    from ..protocols import FeatureBankLike

log = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
GIB = 2**30


@dataclass(frozen=True)
class BankEstimate:
    """Memory a cohort needs on ``device`` against what is free there."""

    n_slides: int
    n_tiles: int
    embed_dim: int
    dtype: str
    device: str
    needed_bytes: int
    free_bytes: int
    budget_bytes: int

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.budget_bytes

    def describe(self) -> str:
        return (
            f"the cohort's features need {self.needed_bytes / GIB:.2f} GiB ({self.n_tiles:,} tiles x {self.embed_dim} "
            f"x {self.dtype}) and {self.budget_bytes / GIB:.2f} GiB of {self.device} memory may be used "
            f"({self.free_bytes / GIB:.2f} GiB free)"
        )


class _BankBase:
    """What both banks share: slide ids, store paths, per-slide offsets and the encoder."""

    resident = False

    def __init__(self, stores: list[FeatureStore], device: torch.device, dtype: torch.dtype):
        self.paths = [s.path for s in stores]
        self.slide_ids = [s.slide_id for s in stores]
        self.attrs = [s.attrs for s in stores]
        counts = np.array([len(s) for s in stores], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.embed_dim = stores[0].embed_dim
        self.encoder = dict(stores[0].attrs["encoder"])
        self.device = device
        self.dtype = dtype
        self._index = {sid: i for i, sid in enumerate(self.slide_ids)}
        self.coord_dims = stores[0].coord_dims  # 2: slides' (x, y); 3: volumes' (z, y, x)

    @property
    def encoder_id(self) -> str:
        return str(self.encoder["encoder_id"])

    @property
    def n_tiles(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return len(self.slide_ids)

    def index(self, slide_id: str) -> int:
        """Position of ``slide_id`` in the bank; an unknown id is a ``KeyError``."""
        return self._index[slide_id]

    def bag_size(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def bag(self, i: int) -> torch.Tensor:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def grid(self, i: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def coords(self, i: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def tile_store(self, i: int) -> str:
        """The TileStore the features of slide ``i`` were computed from."""
        return str(self.attrs[i]["tile_store"]["path"])


class FeatureBank(_BankBase):
    """The whole cohort resident on one device (see the module docstring)."""

    resident = True

    def __init__(self, stores: list[FeatureStore], device: torch.device, dtype: torch.dtype, progress: bool = True):
        super().__init__(stores, device, dtype)
        self.features = torch.empty((self.n_tiles, self.embed_dim), dtype=dtype, device=device)
        self._grid = torch.empty((self.n_tiles, self.coord_dims), dtype=torch.int32, device=device)
        self._grid_host = np.empty((self.n_tiles, self.coord_dims), np.int32)  # for grid_box: no device reads
        self._coords = np.empty((self.n_tiles, self.coord_dims), np.int64)
        with progress_bar(self.n_tiles, "loading features", progress) as advance:
            for i, store in enumerate(stores):
                a, b = int(self.offsets[i]), int(self.offsets[i + 1])
                feats = _checked_features(store)
                # host float16 -> device (pinned staging on CUDA) -> dtype conversion on the device
                src = torch.from_numpy(feats)
                if device.type == "cuda":
                    src = src.pin_memory().to(device, non_blocking=True)
                self.features[a:b].copy_(src)
                self._coords[a:b] = store.coords
                self._grid_host[a:b] = store.grid_positions()
                self._grid[a:b].copy_(torch.from_numpy(self._grid_host[a:b]))
                advance(b - a)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def bag(self, i: int) -> torch.Tensor:
        """Features (n_i, D) of slide ``i``: a view into the bank (no copy, no disk)."""
        return self.features[self.offsets[i] : self.offsets[i + 1]]

    def grid(self, i: int) -> torch.Tensor:
        """(row, col) int32 of each tile of slide ``i`` on its tile grid."""
        return self._grid[self.offsets[i] : self.offsets[i + 1]]

    def coords(self, i: int) -> np.ndarray:
        return self._coords[self.offsets[i] : self.offsets[i + 1]]

    def grid_box(self, i: int) -> GridBox:
        """The bounding box of slide ``i``'s grid, from the host copy (nothing read from the device)."""
        return GridBox.of(self._grid_host[self.offsets[i] : self.offsets[i + 1]])

    def to(self, device: str | torch.device) -> FeatureBank:
        """Move the bank to ``device`` in place (one copy; bags stay views of the new tensors)."""
        device = torch.device(device)
        if self.features.device != device:
            self.features = self.features.to(device)
            self._grid = self._grid.to(device)
        self.device = device
        return self

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


class StreamingFeatureBank(_BankBase):
    """The same interface as :class:`FeatureBank`, reading each bag from its FeatureStore when asked
    (for cohorts larger than the device's memory; slower, as every epoch reads the disk)."""

    def bag(self, i: int) -> torch.Tensor:
        feats = torch.from_numpy(_checked_features(FeatureStore.open(self.paths[i])))
        return feats.to(self.device, self.dtype, non_blocking=True)

    def grid(self, i: int) -> torch.Tensor:
        return torch.from_numpy(FeatureStore.open(self.paths[i]).grid_positions()).to(self.device)

    def grid_box(self, i: int) -> GridBox:
        return GridBox.of(FeatureStore.open(self.paths[i]).grid_positions())

    def coords(self, i: int) -> np.ndarray:
        return FeatureStore.open(self.paths[i]).coords


Bank = FeatureBank | StreamingFeatureBank


def load_feature_bank(
    inputs: list[str | Path] | list[FeatureStore],
    *,
    slide_ids: list[str] | None = None,
    device: str = "auto",
    dtype: str = "float16",
    stream: bool | str = "auto",
    memory_fraction: float = 0.8,
    memory_limit: int | None = None,
    progress: bool = True,
) -> Bank:
    """Open the FeatureStores in ``inputs`` (stores, folders or globs) and load them into a bank.

    ``slide_ids`` keeps only those slides, in that order (an id with no FeatureStore is an error).
    ``device`` is "auto" (CUDA when available), "cpu" or "cuda[:N]"; ``dtype`` float16 (as stored),
    bfloat16 or float32. ``stream``: "auto" streams from disk when the cohort does not fit in
    ``memory_fraction`` of the free memory (or ``memory_limit`` bytes), True always streams, False
    raises :class:`MemoryBudgetError` instead.
    """
    if all(isinstance(s, FeatureStore) for s in inputs):
        stores: list[FeatureStore] = list(inputs)  # type: ignore[arg-type]
    else:
        stores = [FeatureStore.open(p) for p in find_feature_stores(list(inputs))]  # type: ignore[arg-type]
    stores = _select(stores, slide_ids)
    _check_compatible(stores)
    dev = parse_device(device)
    if dtype not in DTYPES:
        raise ConfigError(f"unknown feature dtype {dtype!r}", fix=f"use one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    est = estimate_bank(stores, dev, dtype, memory_fraction, memory_limit)
    if stream is True:
        return StreamingFeatureBank(stores, dev, torch_dtype)
    if not est.fits:
        where = stores[0].path.parent
        if stream == "auto":
            log.warning("%s: %s; streaming one bag at a time from disk (slower)", where, est.describe())
            return StreamingFeatureBank(stores, dev, torch_dtype)
        raise MemoryBudgetError(
            est.describe(),
            path=where,
            fix="pass --stream to read one bag at a time from disk, --device cpu, or train on fewer slides",
        )
    return FeatureBank(stores, dev, torch_dtype, progress)


def estimate_bank(
    stores: list[FeatureStore],
    device: torch.device,
    dtype: str = "float16",
    memory_fraction: float = 0.8,
    memory_limit: int | None = None,
) -> BankEstimate:
    """Bytes the bank needs (features and grid on ``device``) against the memory free there; reads only
    the stores' attributes."""
    n = sum(len(s) for s in stores)
    dim = stores[0].embed_dim if stores else 0
    needed = n * dim * DTYPES[dtype].itemsize + n * 2 * 4
    free = free_memory(device)
    budget = int(free * memory_fraction) if memory_limit is None else int(memory_limit)
    return BankEstimate(len(stores), n, dim, dtype, str(device), needed, free, budget)


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: CUDA's free memory, or the RAM the kernel reports as available."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _checked_features(store: FeatureStore) -> np.ndarray:
    feats = store.features
    if feats.shape != (len(store), store.embed_dim):
        raise StoreError(
            f"features have shape {feats.shape}, attrs say ({len(store)}, {store.embed_dim})",
            path=store.path,
            fix="re-run `pathweak extract --force`",
        )
    return feats


def _select(stores: list[FeatureStore], slide_ids: list[str] | None) -> list[FeatureStore]:
    by_id: dict[str, FeatureStore] = {}
    for s in stores:
        if s.slide_id in by_id:
            raise StoreError(
                f"two FeatureStores for slide {s.slide_id!r} ({by_id[s.slide_id].path} and {s.path})",
                path=s.path.parent,
                fix="pass the features of one encoder, once",
            )
        by_id[s.slide_id] = s
    if slide_ids is None:
        return stores
    missing = [sid for sid in slide_ids if sid not in by_id]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise StoreError(
            f"no FeatureStore for slide {', '.join(missing[:3])}{more}",
            path=stores[0].path.parent,
            fix="extract features for those slides or remove them from the labels file",
        )
    return [by_id[sid] for sid in slide_ids]


def _check_compatible(stores: list[FeatureStore]) -> None:
    if not stores:
        raise StoreError("no FeatureStores to load", fix="run `pathweak extract` first")
    first = stores[0]
    dims = first.coord_dims
    for s in stores[1:]:
        if s.coord_dims != dims:
            raise StoreError(
                "slide features ((x, y) coords) and volume features ((z, y, x) coords) in one cohort",
                path=s.path,
                fix="train slides and volumes as separate cohorts",
            )
        if s.encoder_id != first.encoder_id or s.embed_dim != first.embed_dim:
            raise StoreError(
                f"features of different encoders in one cohort ({s.encoder_id} vs {first.encoder_id})",
                path=s.path,
                fix="pass FeatureStores of one encoder (one features/<encoder_id>/ folder)",
            )


def bank_summary(bank: FeatureBankLike) -> dict[str, Any]:
    """A JSON-able description of a bank (for run records)."""
    return {
        "slides": len(bank),
        "tiles": bank.n_tiles,
        "embed_dim": bank.embed_dim,
        "encoder_id": bank.encoder_id,
        "device": str(bank.device),
        "dtype": str(bank.dtype).replace("torch.", ""),
        "resident": bank.resident,
    }
