"""The store layer: the header every on-disk store carries (:mod:`.header`), one way to open and
check a store of an expected kind (:mod:`.open`), one way to build an output (:mod:`.build`), locks
(:mod:`.locks`) and one failure message for stages (:mod:`.result`). See docs/architecture.md."""

from .build import (
    begin,
    build_once,
    building,
    commit,
    current_store,
    discard,
    mark_complete,
)
from .header import StoreHeader, header_attrs, read_header
from .open import OpenedStore, damaged, open_store, read_array, read_attrs
from .result import StageResult, failure_text

__all__ = [
    "OpenedStore",
    "StageResult",
    "StoreHeader",
    "begin",
    "build_once",
    "building",
    "commit",
    "current_store",
    "damaged",
    "discard",
    "failure_text",
    "header_attrs",
    "mark_complete",
    "open_store",
    "read_array",
    "read_attrs",
    "read_header",
]
