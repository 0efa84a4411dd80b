"""Feature extraction (TileStore → FeatureStore), the FeatureStore format and h5 export."""

from .extract import ExtractResult, extract_features, feature_cache_key
from .h5 import export_h5
from .store import FeatureStore, feature_store_path

__all__ = ["ExtractResult", "FeatureStore", "export_h5", "extract_features", "feature_cache_key", "feature_store_path"]
