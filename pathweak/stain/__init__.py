"""Stain normalisation maths (ground floor: numpy at module level, torch only inside the functions that use it).

Three methods, each split into an *estimate* (once per slide, from a sample of its tiles' pixels) and an
*apply* (per batch of tiles, numpy on the CPU or torch on any device):

- ``macenko``: the stain vectors of the optical-density plane's extreme angles (Macenko et al. 2009), with
  torchstain's conventions (Io 240, OD = -log((I + 1) / Io), transparent pixels below OD 0.15 left out,
  1st/99th angle percentiles, concentrations scaled by their 99th percentiles);
- ``vahadane``: sparse non-negative dictionary learning of two stain vectors (Vahadane et al. 2016), with
  torch-staintools' conventions (luminosity tissue mask 0.8, L1 weight 0.01, FISTA codes and block-coordinate
  dictionary steps), started from Ruifrok & Johnston's H and E so that it is deterministic;
- ``reinhard``: per-channel mean and standard deviation in CIE L*a*b* (Reinhard et al. 2001), with
  torchstain's colour conversion.

The two stain methods map optical density linearly, so applying them is one 3 x 3 matrix per slide between
a log and an exp. A :class:`~pathweak.stain.reference.StainReference` holds the target of every method
(fitted from a tile, an image or a sample of a cohort's tiles) and is saved as JSON (``pathweak stain fit``).
"""

from __future__ import annotations

from .estimate import METHODS, SlideStain, estimate, he_angles
from .reference import StainReference, fit_reference, load_reference

__all__ = ["METHODS", "SlideStain", "StainReference", "estimate", "fit_reference", "he_angles", "load_reference"]
