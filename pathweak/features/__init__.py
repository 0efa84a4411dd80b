"""Feature extraction (TileStore → FeatureStore), h5 export and the FeatureBank (a cohort's features
resident on the training device; it needs torch). The FeatureStore format is on the store floor
(:mod:`pathweak.store.features`), re-exported here. Every name is imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from ..store.features import FeatureStore, feature_store_path, find_feature_stores
    from .bank import FeatureBank, StreamingFeatureBank, estimate_bank, load_feature_bank
    from .extract import ExtractResult, extract_features, feature_cache_key
    from .h5 import export_h5

_EXPORTS = {
    "ExtractResult": "extract",
    "extract_features": "extract",
    "feature_cache_key": "extract",
    "export_h5": "h5",
    "FeatureBank": "bank",
    "StreamingFeatureBank": "bank",
    "estimate_bank": "bank",
    "load_feature_bank": "bank",
    "FeatureStore": "..store.features",
    "feature_store_path": "..store.features",
    "find_feature_stores": "..store.features",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
