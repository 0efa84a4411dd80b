"""Where a preset's weights are on this machine: the lookup is :mod:`pathweak.hub` (on the ground floor, so
tissue models, slide encoders and text towers find their weights exactly as the encoder presets do)."""

from __future__ import annotations

from ..hub import GENERIC_FILES, Located, cache_dirs, locate, repo_folder, resolve

__all__ = ["GENERIC_FILES", "Located", "cache_dirs", "locate", "repo_folder", "resolve"]
