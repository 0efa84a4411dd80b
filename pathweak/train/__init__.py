"""Training and prediction of heads on cached features (Lightning; imported lazily, needs torch).

``train_cohort(features, labels_csv, out_dir, TrainConfig(head="abmil"))`` runs patient-level
cross-validation over seeds and writes metrics, predictions and packaged models;
``predict_slides(model, features)`` writes results stores for heatmaps; ``load_model`` rebuilds a
packaged model. See docs/training.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:
    from .config import TrainConfig
    from .fit import FitResult, fit_head
    from .infer import BagPrediction, predict_bag
    from .labels import LabelTable, read_labels
    from .package import PackagedModel, load_model, load_models, save_model
    from .predict import predict_slides
    from .run import TrainRun, train_cohort
    from .splits import Fold, make_folds

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
__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
