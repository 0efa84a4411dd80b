"""Slide readers behind one protocol: ``open_slide(path, backend="auto")`` returns a :class:`Slide`; what an
input is (:mod:`.detect`: a 3D volume format or not; :mod:`.inputs`: files, folders, patterns). Every
name is imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .base import MppSource, Slide
    from .open import BACKENDS, open_slide
    from .tiff_tiles import TiffTileReader

_EXPORTS = {
    "MppSource": "base",
    "Slide": "base",
    "BACKENDS": "open",
    "open_slide": "open",
    "TiffTileReader": "tiff_tiles",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
