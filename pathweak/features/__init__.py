"""Feature extraction (TileStore → FeatureStore), the FeatureStore format, h5 export and the
FeatureBank (a cohort's features resident on the training device; imported lazily, it needs torch)."""

from typing import Any

from ..store.features import FeatureStore, feature_store_path, find_feature_stores
from .extract import ExtractResult, extract_features, feature_cache_key
from .h5 import export_h5

_BANK = ("FeatureBank", "StreamingFeatureBank", "estimate_bank", "load_feature_bank")

__all__ = [
    "ExtractResult",
    "FeatureStore",
    "export_h5",
    "extract_features",
    "feature_cache_key",
    "feature_store_path",
    "find_feature_stores",
    *_BANK,
]


def __getattr__(name: str) -> Any:
    if name in _BANK:
        from . import bank

        return getattr(bank, name)
    raise AttributeError(f"module 'pathweak.features' has no attribute {name!r}")
