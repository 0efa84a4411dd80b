"""Resolution you can trust: level-0 microns per pixel estimated from the image (nucleus sizes on the
haematoxylin channel) and checked against the slide's metadata. See docs/resolution.md."""

from .estimate import NUCLEUS_PROFILE_UM, MppEstimate, estimate_mpp

__all__ = ["NUCLEUS_PROFILE_UM", "MppEstimate", "estimate_mpp"]
