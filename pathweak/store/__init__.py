"""The store layer (ground floor): the header every on-disk store carries (:mod:`.header`), one way to open
and check a store of an expected kind and to find stores (:mod:`.open`), one way to build an output
(:mod:`.build`), locks (:mod:`.locks`), one failure message for stages (:mod:`.result`), and the formats:
TileStore (:mod:`.tiles`, with :mod:`.shards` and :mod:`.codecs`), FeatureStore (:mod:`.features`) and
the results store (:mod:`.results`). See docs/architecture.md. Every name is imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .build import begin, build_once, building, commit, current_store, discard, mark_complete
    from .header import StoreHeader, header_attrs, read_header
    from .open import OpenedStore, damaged, find_stores, open_store, read_array, read_attrs
    from .result import StageResult, failure_text

_EXPORTS = {
    "begin": "build",
    "build_once": "build",
    "building": "build",
    "commit": "build",
    "current_store": "build",
    "discard": "build",
    "mark_complete": "build",
    "StoreHeader": "header",
    "header_attrs": "header",
    "read_header": "header",
    "OpenedStore": "open",
    "damaged": "open",
    "find_stores": "open",
    "open_store": "open",
    "read_array": "open",
    "read_attrs": "open",
    "StageResult": "result",
    "failure_text": "result",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
