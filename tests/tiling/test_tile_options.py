"""Tiling options are declared once (pathweak.config.TileOptions) and flow down unchanged: the API takes the
record or its fields by name, each slide's job carries it, and the results do not depend on the way it came."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from pathweak.config import TileOptions, TileSpec
from pathweak.errors import ConfigError
from pathweak.store.open import read_attrs
from pathweak.tiling import TileJob, TileStore, tile_slide, tile_slides
from pathweak.tiling.slides import tile_slide_files

FIELDS = {f.name for f in dataclasses.fields(TileOptions)}


def test_no_layer_below_the_cli_declares_a_tiling_option_again():
    """The entry points and the job take a TileOptions; none has a parameter or field of its own for one."""
    for function in (tile_slide, tile_slides, tile_slide_files):
        params = set(inspect.signature(function).parameters)
        assert "options" in params, function.__name__
        assert not params & FIELDS, (function.__name__, params & FIELDS)
    job_fields = {f.name for f in dataclasses.fields(TileJob)}
    assert "options" in job_fields and not job_fields & FIELDS, job_fields & FIELDS


def test_fields_by_name_are_the_record(svs, tmp_path):
    """``workers=1, encode_threads=0`` by name tiles exactly what ``options=TileOptions(...)`` tiles: the
    same cache key (so a rerun either way skips) and the same tiles."""
    spec = TileSpec(target_mpp=2.0, patch_px=64)
    by_name = tile_slide(svs, tmp_path / "a", spec, encode_threads=0, fast_read=False, progress=False)
    record = tile_slide(svs, tmp_path / "b", spec, options=TileOptions(encode_threads=0, fast_read=False), progress=False)
    assert by_name.status == record.status == "tiled" and by_name.n_tiles == record.n_tiles > 0
    assert read_attrs(by_name.store)["cache_key"] == read_attrs(record.store)["cache_key"]
    with TileStore.open(by_name.store) as a, TileStore.open(record.store) as b:
        assert np.array_equal(a.coords, b.coords)
        assert np.array_equal(a.read_tiles(np.arange(len(a))), b.read_tiles(np.arange(len(b))))
    # a field given by name replaces that field of the record; the rest of the record stays
    again = tile_slide(svs, tmp_path / "b", spec, options=TileOptions(fast_read=False), encode_threads=2, progress=False)
    assert again.status == "skipped"
    forced = tile_slide(svs, tmp_path / "b", spec, options=TileOptions(fast_read=False), force=True, progress=False)
    assert forced.status == "tiled"


def test_an_option_that_is_not_a_field_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown TileOptions key\(s\): worker") as err:
        tile_slides([tmp_path / "x.svs"], tmp_path, worker=2)
    assert "workers" in str(err.value)  # the known names are listed
    assert not (tmp_path / "tiles").exists()


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"workers": 0}, "workers must be at least 1"),
        ({"encode_threads": -1}, "encode threads must be 0 or more"),
        ({"mpp": "auto"}, "mpp must be a number"),
        ({"mpp": 0.0}, "mpp must be positive"),
    ],
)
def test_each_option_is_checked_once_where_it_is_declared(fields, phrase):
    with pytest.raises(ConfigError, match=phrase):
        TileOptions(**fields)


def test_the_record_is_a_plain_picklable_value():
    """Paths and lists given by API users are kept as text and tuples: the job pickles to worker processes and
    the cache key hashes the same value whichever form was given."""
    import pickle
    from pathlib import Path

    a = TileOptions(roi=Path("roi.geojson"), roi_classes=["Tumor"])  # type: ignore[arg-type]
    b = TileOptions(roi="roi.geojson", roi_classes=("Tumor",))
    assert a == b and pickle.loads(pickle.dumps(a)) == b
    assert TileOptions(roi_classes=()).roi_classes is None


def test_the_getting_started_example_runs(sample_cohort, tmp_path):
    """docs/getting_started.md's TileOptions example, as written, on the sample cohort's slides and its
    QuPath tumour annotations: the ROI replaces tissue detection, and the fields by name are used."""
    import os

    from conftest import REPO

    import pathweak as pw

    text = (REPO / "docs" / "getting_started.md").read_text()
    code = next(block.split("```", 1)[0] for block in text.split("```python\n")[1:] if "pw.TileOptions(" in block)
    slides = sorted(sample_cohort.glob("*.tiff"))
    tumour = next(s for s in slides if (sample_cohort / f"{s.stem}.tumour.geojson").exists())
    mapping = {'"a.svs"': tumour, '"b.svs"': slides[0] if slides[0] != tumour else slides[1], '"c.svs"': slides[2],
               '"tumour.geojson"': sample_cohort / f"{tumour.stem}.tumour.geojson"}  # fmt: skip
    for old, new in mapping.items():
        assert old in code, old
        code = code.replace(old, repr(str(new)))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope = {"pw": pw}
        exec(compile(code, "getting_started.md", "exec"), scope)
    finally:
        os.chdir(cwd)
    results = scope["results"]
    assert [r.status for r in results] == ["tiled", "tiled"] and results[0].n_tiles > 0
    assert read_attrs(tmp_path / results[0].store)["tissue"]["method"] == "roi"  # stores under the relative runs/x
    c = read_attrs(tmp_path / "runs" / "x" / "tiles" / f"{slides[2].stem}.zarr")
    assert c["mpp"]["level0"] == [0.25, 0.25]
