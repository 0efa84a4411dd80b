"""Slide readers behind one protocol: ``open_slide(path, backend="auto")`` returns a :class:`Slide`."""

from .base import MppSource, Slide
from .open import BACKENDS, open_slide
from .tiff_tiles import TiffTileReader

__all__ = ["BACKENDS", "MppSource", "Slide", "TiffTileReader", "open_slide"]
