"""Resolution you can trust: level-0 microns per pixel estimated from the image (nucleus sizes on the
haematoxylin channel, small lymphocytes and other nuclei each against their own physical size) and checked
against the slide's metadata. See docs/resolution.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .estimate import LYMPHOCYTE_PROFILE_UM, NUCLEUS_PROFILE_UM, MppEstimate, estimate_mpp

_EXPORTS = {
    "LYMPHOCYTE_PROFILE_UM": "estimate",
    "NUCLEUS_PROFILE_UM": "estimate",
    "MppEstimate": "estimate",
    "estimate_mpp": "estimate",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
