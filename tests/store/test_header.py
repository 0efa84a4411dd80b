"""The store header: written by every store, derived for stores that predate it; cache keys are stable."""

from __future__ import annotations

from pathweak._provenance import cache_key
from pathweak.config import StoreSpec, TileSpec, as_dict
from pathweak.store.header import read_header


def test_header_of_new_stores(stores):
    from pathweak.features import FeatureStore
    from pathweak.tiling import TileStore

    with TileStore.open(stores["tiles"]) as ts:
        h = ts.header
        assert (h.kind, h.format, h.complete, h.source, h.axes, h.rows, h.checked, h.derived) == (
            "tiles", 1, True, "slide", "xy", "tile", True, False)
        assert h.cache_key == ts.attrs["cache_key"] and h.created.endswith("+00:00")
    fh = FeatureStore.open(stores["features"]).header
    assert (fh.kind, fh.source, fh.axes, fh.rows) == ("features", "slide", "xy", "tile")


def test_header_derived_from_older_attributes():
    slide = read_header({"pathweak_format": 1, "kind": "tiles", "complete": True, "cache_key": "k",
                         "slide": {"slide_id": "a"}, "created": "2026-01-02T03:04:05+0100"})
    assert (slide.source, slide.axes, slide.rows, slide.derived, slide.checked) == ("slide", "xy", "tile", True, False)
    assert slide.created == "2026-01-02T02:04:05+00:00"
    volume = read_header({"kind": "tiles", "volume": {"format": "nifti"}, "slide": {}})
    assert (volume.source, volume.axes) == ("volume", "zyx")
    images = read_header({"kind": "tiles", "slide": {"source": "images"}})
    assert images.source == "images"
    tokens = read_header({"kind": "features", "tokens": {"map": [7, 7]}})
    assert tokens.rows == "token"
    results = read_header({"kind": "results"}, coord_columns=3)
    assert (results.source, results.axes) == ("volume", "zyx")


def test_cache_keys_hash_the_settings_dict():
    a = cache_key(tile=as_dict(TileSpec()), store=as_dict(StoreSpec()))
    assert a == cache_key(store=as_dict(StoreSpec()), tile=as_dict(TileSpec()))  # order-free
    assert a != cache_key(tile=as_dict(TileSpec(patch_px=256)), store=as_dict(StoreSpec()))
    # and the same in another process (a repr could hold an object's address; a dict's JSON cannot):
    import subprocess
    import sys

    code = ("from pathweak._provenance import cache_key; from pathweak.config import StoreSpec, TileSpec, as_dict;"
            "print(cache_key(tile=as_dict(TileSpec()), store=as_dict(StoreSpec())))")
    other = subprocess.run([sys.executable, "-c", code],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other == a


def test_heatmap_stage_key_hashes_the_options_fields():
    from pathweak.cohort.tasks import _settings
    from pathweak.heatmap.export import ExportOptions

    a, b = _settings(ExportOptions()), _settings(ExportOptions())
    assert isinstance(a, dict) and cache_key(options=a) == cache_key(options=b)
    first = next(iter(a))
    changed = ExportOptions(**{**a, first: None if a[first] is not None else 1})
    assert cache_key(options=_settings(changed)) != cache_key(options=a)


def test_cache_keys_refuse_values_that_are_not_json():
    from pathlib import Path

    import numpy as np
    import pytest

    assert cache_key(a=(1, 2), p=Path("x"), n=np.int64(3)) == cache_key(a=[1, 2], p="x", n=3)
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        cache_key(a=object())  # its repr holds an address: a key that changes every run
