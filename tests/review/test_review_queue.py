"""The review queue's rule (pathweak/heatmap/review_queue.py, docs/review.md) on hand-made scores, and the
classified detections the review export writes."""

from __future__ import annotations

import json

import numpy as np

from pathweak.heatmap.review_files import exported_class, exported_class_key
from pathweak.heatmap.review_queue import review_priority, review_slide, tile_classes


def _prob(p):
    p = np.asarray(p, np.float64)
    return np.column_stack([1 - p, p])  # class 0 negative, class 1 positive


def test_the_queue_alternates_most_positive_and_the_models_boundary():
    # an uncalibrated head: every score near 0.5; three tiles shown positive (p >= 0.5)
    p = [0.46, 0.47, 0.48, 0.49, 0.51, 0.52, 0.70, 0.45]
    # most positive: 6 5 4 3 2 1 0 7; nearest the switch at 5/8 of the ranking: 3 4 2 5 1 6 0 7
    review = review_slide(_prob(p), 0, 5)
    assert review.queue.tolist() == [6, 3, 5, 4, 2]
    assert review.classes.tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    priority, positive = review_priority(_prob(p), 0)
    assert np.allclose(positive, p)
    place = {6: 0, 3: 1, 5: 2, 4: 3, 2: 5, 1: 9, 0: 12, 7: 14}
    assert np.allclose(priority, [1 - place[i] / 16 for i in range(8)])
    # a calibrated head (INS-like): the line sits where p crosses its mask, not at rank 1/2
    calibrated = review_slide(_prob([0.01, 0.02, 0.95, 0.6, 0.4, 0.03]), 0, 4)
    assert calibrated.queue.tolist() == [2, 4, 3, 5]


def test_queue_leaves_out_reviewed_tiles():
    p = np.array([0.9, 0.2, 0.9, 0.1])
    assert review_slide(_prob(p), 0, 2).queue.tolist() == [0, 1]  # most positive, then nearest the switch
    assert review_slide(_prob(p), 0, 2, exclude=np.array([0])).queue.tolist() == [1, 2]
    flat = review_slide(_prob([0.3, 0.3, 0.3]), 0, 5)  # at most the slide's tiles
    assert sorted(flat.queue.tolist()) == [0, 1, 2]


def test_mispredicted_slides_put_the_most_attended_tiles_first():
    p = _prob([0.2, 0.3, 0.4, 0.6])
    attention = np.array([0.7, 0.1, 0.05, 0.15])
    assert review_slide(p, 0, 2, attention=attention).queue.tolist() == [3, 2]
    assert review_slide(p, 0, 2, attention=attention, mispredicted=True).queue.tolist() == [0, 3]
    assert review_slide(p, 0, 2, mispredicted=True).queue.tolist() == [3, 2]  # no attention: the rule as it is


def test_shown_class_prefers_pseudo_labels_then_masks():
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    assert tile_classes(prob, 0).tolist() == [0, 2, 0]
    assert tile_classes(prob, 0, mask=np.array([1.0, 0.0, 1.0])).tolist() == [1, 0, 1]  # best non-negative class
    assert tile_classes(prob, 0, pseudo_label=np.array([2.0, 1.0, np.nan])).tolist() == [2, 1, 0]


def test_exported_class_measurement_carries_its_class_list():
    key = exported_class_key(["normal", "tumour, grade 3", 'a "quoted" class'])
    assert key == 'pathweak class ["normal", "tumour, grade 3", "a \\"quoted\\" class"]'
    assert exported_class({key: 1.0}) == "tumour, grade 3"
    assert exported_class({key: 2}) == 'a "quoted" class'
    assert exported_class({"prob_tumour": 0.3}) is None
    assert exported_class({key: 7.0}) is None  # an index outside the list reads as no export class


def test_classified_detections_are_written_as_qupath_writes_classes(sample_cohort):
    from pathweak.heatmap import tile_scores
    from pathweak.heatmap.geojson import tile_features
    from pathweak.tiling import tile_slide

    store = tile_slide(sample_cohort / "sample_00.tiff", sample_cohort / "out", progress=False).store
    ts = tile_scores(store, {"prob": np.linspace(0, 1, len(__import__("pathweak").TileStore.open(store)))})
    n = len(ts.coords)
    classes = np.arange(n) % 3 - 1  # -1: unclassified
    lines = [ln for chunk in tile_features(ts, ts.scores, classes=(classes, [("normal", (90, 90, 180)),
                                                                             ('odd "name" %s', (1, 2, 3))]))
             for ln in chunk]
    parsed = [json.loads(ln) for ln in lines]
    assert len(parsed) == n
    for k, f in zip(classes, parsed, strict=True):
        props = f["properties"]
        assert list(props) == (["objectType", "measurements"] if k < 0 else ["objectType", "classification", "measurements"])
        if k == 0:
            assert props["classification"] == {"name": "normal", "color": [90, 90, 180]}
        if k == 1:
            assert props["classification"] == {"name": 'odd "name" %s', "color": [1, 2, 3]}
