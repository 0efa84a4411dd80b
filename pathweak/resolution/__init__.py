"""Resolution you can trust: level-0 microns per pixel estimated from the image (nucleus sizes on the
haematoxylin channel, small lymphocytes and other nuclei each against their own physical size) and checked
against the slide's metadata. See docs/resolution.md."""

from .estimate import LYMPHOCYTE_PROFILE_UM, NUCLEUS_PROFILE_UM, MppEstimate, estimate_mpp

__all__ = ["LYMPHOCYTE_PROFILE_UM", "NUCLEUS_PROFILE_UM", "MppEstimate", "estimate_mpp"]
