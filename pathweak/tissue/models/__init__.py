"""Deep-learning tissue and artefact models as entries of the tissue-method registry: ``hest`` and ``grandqc``
in :data:`~pathweak.tissue.methods.TISSUE_METHODS` (``pathweak tile --tissue hest``), ``grandqc`` in
:data:`ARTIFACT_METHODS` (``--artifacts grandqc``). Registering them imports no torch: the networks are built
(``networks.py``) and run (``run.py``) only when a slide is segmented with one.

Weights come from a file, a hub snapshot folder or the local Hugging Face cache, found by
:mod:`pathweak.hub` exactly as the encoder presets find theirs; nothing is downloaded and only tensors are read
from the checkpoints. :func:`resolve_models` finds them once per run, before any slide is opened, and writes
the file and its content hash into the spec's ``params`` (so into the TileStore's cache key and tissue record).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..._registry import Registry
from ...config import TissueSpec
from ...errors import ConfigError
from ...io.base import LevelReader, Slide
from ..methods import TISSUE_METHODS
from .records import ALL, ARTIFACT_MODELS, TISSUE_MODELS, TissueModel, markdown_table

__all__ = ["ALL", "ARTIFACT_METHODS", "ModelMethod", "TissueModel", "markdown_table", "resolve_models"]


class ModelMethod:
    """A segmentation model as a registry entry. Called on an RGB array (taken to be at the model's µm/px)
    it returns the boolean mask its rule keeps; :meth:`segment` reads a slide at the model's resolution."""

    reads_slide = True

    def __init__(self, model: TissueModel):
        self.model = model

    def __call__(self, rgb: np.ndarray, spec: TissueSpec) -> np.ndarray:
        from .run import array_mask

        return array_mask(
            self.model, rgb, _weights(spec, self.model, "weights"), str(spec.params.get("device", "auto"))
        )

    def segment(
        self,
        slide: Slide,
        spec: TissueSpec,
        shape: tuple[int, int],
        downsample: tuple[float, float],
        reader: LevelReader | None = None,
        key: str = "weights",
    ) -> tuple[np.ndarray, np.ndarray]:
        """(boolean mask, arg-max class map) on the tissue mask's grid."""
        from .run import model_mask

        return model_mask(self.model, slide, spec, shape, downsample, _weights(spec, self.model, key), reader)


ARTIFACT_METHODS: Registry[ModelMethod] = Registry("artifact method")
for _name, _model in TISSUE_MODELS.items():
    TISSUE_METHODS.register(_name)(ModelMethod(_model))
for _name, _model in ARTIFACT_MODELS.items():
    ARTIFACT_METHODS.register(_name)(ModelMethod(_model))


def _weights(spec: TissueSpec, model: TissueModel, key: str) -> str:
    weights = spec.params.get(key)
    if not weights:
        weights = str(resolve_weights(model, None, "--tissue-weights" if key == "weights" else "--artifact-weights"))
    return str(weights)


def resolve_weights(model: TissueModel, weights: str | Path | None, option: str) -> Path:
    """The model's weights file (``weights``: a file or a hub snapshot folder; else the local Hugging Face
    cache), or the one error the encoder presets give, naming ``option``."""
    from ...hub import resolve

    return resolve(model, weights, option).file


def resolve_models(spec: TissueSpec) -> TissueSpec:
    """``spec`` with the weights of its tissue model (``method``) and artefact model (``params["artifacts"]``)
    found and recorded (file and content hash in ``params``); unchanged for the classical methods."""
    from ..._provenance import content_hash

    params: dict[str, Any] = dict(spec.params)
    artifacts = params.get("artifacts")
    if artifacts is not None and str(artifacts) not in ARTIFACT_METHODS:
        ARTIFACT_METHODS.get(str(artifacts))  # the registry's error: unknown name, the known ones
    jobs = [("weights", TISSUE_MODELS.get(spec.method), "--tissue-weights")]
    if artifacts:
        jobs.append(("artifact_weights", ARTIFACT_MODELS[str(artifacts)], "--artifact-weights"))
    for key, model, option in jobs:
        if model is None:
            if params.get(key):
                raise ConfigError(
                    f"--tissue-weights is for a tissue model, and {spec.method!r} is a classical method",
                    fix=f"use --tissue {' or --tissue '.join(TISSUE_MODELS)}, or leave out --tissue-weights",
                )
            continue
        file = resolve_weights(model, params.get(key), option)
        params[key], params[f"{key}_hash"] = str(file.resolve()), content_hash(file)
    return replace(spec, params=params) if params != spec.params else spec
