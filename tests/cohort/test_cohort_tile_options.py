"""A cohort's slides whose files lack their resolution, or that have a region of interest: the manifest's
``mpp`` and ``roi`` columns and the spec's ``tile_options:`` section reach the tile stage; a slide with no
resolution gets the cohort's fix (not the CLI's ``--mpp``), and bad values are refused naming the line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pathweak.cohort import CohortSpec
from pathweak.cohort.tasks import run_slide_stage
from pathweak.errors import ConfigError
from pathweak.io import open_slide
from pathweak.store.open import read_attrs

CMU_MPP = 0.499


@pytest.fixture(scope="module")
def no_mpp_slides(svs, tmp_path_factory) -> Path:
    """Three copies of the real CMU-1 pixels as tiled JPEG TIFFs without a resolution, and a QuPath ROI."""
    import tifffile

    folder = tmp_path_factory.mktemp("no_mpp")
    with open_slide(svs) as s:
        rgb = s.read_region((0, 0), 0, s.dimensions)
    for name in ("a", "b", "c"):
        tifffile.imwrite(folder / f"{name}.tif", rgb, tile=(256, 256), photometric="rgb", compression="jpeg")
    with open_slide(folder / "a.tif") as s:
        assert s.mpp is None
    box = [[200, 200], [1400, 200], [1400, 1400], [200, 1400], [200, 200]]
    roi = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [box]},
           "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}}]}  # fmt: skip
    (folder / "roi.geojson").write_text(json.dumps(roi))
    return folder


def _spec(folder: Path, rows: list[dict], out: Path, **sections) -> CohortSpec:
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "slide_id", "patient_id", "label", "mpp", "roi"])
        writer.writeheader()
        writer.writerows({"patient_id": r["slide_id"], "label": "x", **r} for r in rows)
    data = {"manifest": "manifest.csv", "out": str(out), "encoder": "timm:vit_tiny_patch16_224", "weights": "random"}
    return CohortSpec.from_dict({**data, **sections}, folder)


def test_the_manifest_gives_each_slide_its_resolution_and_roi(no_mpp_slides, tmp_path):
    rows = [{"path": "a.tif", "slide_id": "given", "mpp": str(CMU_MPP)},
            {"path": "b.tif", "slide_id": "none"},
            {"path": "c.tif", "slide_id": "roi", "mpp": str(CMU_MPP), "roi": "roi.geojson"}]  # fmt: skip
    spec = _spec(no_mpp_slides, rows, tmp_path / "out")
    given, none, roi = (run_slide_stage("tile", s, spec) for s in spec.slides)
    assert given["status"] == "done", given
    assert read_attrs(given["output"])["mpp"]["level0"] == [CMU_MPP, CMU_MPP]
    assert none["status"] == "failed" and "no resolution" in none["error"]
    assert "manifest's 'mpp' column" in none["error"] and "tile_options: {mpp: estimate}" in none["error"]
    assert "--mpp" not in none["error"]  # a cohort has no command-line option for it
    assert not (tmp_path / "out" / "tiles" / "none.zarr").exists()
    assert roi["status"] == "done" and 0 < roi["n_tiles"] < given["n_tiles"]
    attrs = read_attrs(roi["output"])
    assert attrs["tissue"]["method"] == "roi" and attrs["tissue"]["params"]["roi"] == str(no_mpp_slides / "roi.geojson")
    # the spec's tile_options: estimate the resolution of slides the manifest gives none
    spec = _spec(no_mpp_slides, rows, tmp_path / "out", tile_options={"mpp": "estimate"})
    again = run_slide_stage("tile", spec.slides[1], spec)
    assert again["status"] == "done", again
    estimated = read_attrs(again["output"])["mpp"]
    assert estimated["source"] == "estimated" and abs(estimated["level0"][0] - CMU_MPP) / CMU_MPP < 0.25
    assert run_slide_stage("tile", spec.slides[0], spec)["status"] == "skipped"  # its row's mpp wins: unchanged


@pytest.mark.parametrize(
    ("row", "phrase"),
    [({"mpp": "abc"}, "line 2: mpp 'abc'"), ({"mpp": "nan"}, "line 2: mpp 'nan'"), ({"mpp": "-0.5"}, "positive"),
     ({"roi": "missing.geojson"}, "line 2: the ROI file missing.geojson is not found")],  # fmt: skip
)
def test_a_bad_mpp_or_a_missing_roi_is_refused_naming_the_line(no_mpp_slides, tmp_path, row, phrase):
    with pytest.raises(ConfigError, match=phrase) as err:
        _spec(no_mpp_slides, [{"path": "a.tif", "slide_id": "a", **row}], tmp_path / "out")
    assert "manifest.csv" in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "phrase"),
    [({"workers": 2}, "executor: {workers: N}"), ({"force": True}, "delete a store"),
     ({"roi": "roi.geojson"}, "manifest's 'roi' column"), ({"mmp": 0.25}, "unknown TileOptions key")],  # fmt: skip
)
def test_tile_options_a_cohort_sets_elsewhere_are_refused(no_mpp_slides, tmp_path, options, phrase):
    with pytest.raises(ConfigError, match=phrase):
        _spec(no_mpp_slides, [{"path": "a.tif", "slide_id": "a"}], tmp_path / "out", tile_options=options)


def test_the_cli_and_the_manifest_read_mpp_by_one_rule():
    """config.parse_mpp is the rule; the CLI adds that an empty --mpp is refused, not taken as the slide's own."""
    from pathweak.config import parse_mpp
    from pathweak_cli.slides import _mpp_option

    assert [parse_mpp(t) for t in ("", None, " Estimate ", "0.25")] == [None, None, "estimate", 0.25]
    for bad in ("abc", "0", "-1", "nan"):
        with pytest.raises(ValueError):
            parse_mpp(bad)
        with pytest.raises(ConfigError, match="--mpp must be a positive number"):
            _mpp_option(bad)
    assert _mpp_option(None) is None and _mpp_option("estimate") == "estimate" and _mpp_option("0.5") == 0.5
    with pytest.raises(ConfigError, match="--mpp must be"):
        _mpp_option("")
