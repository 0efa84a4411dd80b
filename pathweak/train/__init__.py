"""Training and prediction of heads on cached features (Lightning; imported lazily, needs torch).

``train_cohort(features, labels_csv, out_dir, TrainConfig(head="abmil"))`` runs patient-level
cross-validation over seeds and writes metrics, predictions and packaged models;
``predict_slides(model, features)`` writes results stores for heatmaps; ``load_model`` rebuilds a
packaged model. See docs/training.md.
"""

from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "read_labels": "labels",
    "LabelTable": "labels",
    "make_folds": "splits",
    "Fold": "splits",
    "fit_head": "fit",
    "FitResult": "fit",
    "train_cohort": "run",
    "TrainRun": "run",
    "predict_slides": "predict",
    "load_model": "package",
    "load_models": "package",
    "save_model": "package",
    "PackagedModel": "package",
    "predict_bag": "infer",
    "BagPrediction": "infer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pathweak.train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
