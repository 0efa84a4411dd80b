"""Runs over several slides: the fast TIFF reader opened once per slide, a folder run equal to
one-by-one runs (in this process and over a pool), per-step timings, the slide/volume dispatch and the
import layering that keeps the two tilers apart."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ANATOMICAL, REPO, imported_names, need_shared

from pathweak.io import TiffTileReader
from pathweak.tiling import TileStore, tile_slide, tile_slides


def _copies(svs: Path, folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(svs, folder / f"s{i}.svs")) for i in range(n)]


def _same_store(a: str, b: str) -> None:
    """Two stores with the same grid, tiles and (content) attributes."""
    with TileStore.open(a) as sa, TileStore.open(b) as sb:
        assert np.array_equal(sa.coords, sb.coords)
        assert np.array_equal(sa.read_tiles(np.arange(len(sa))), sb.read_tiles(np.arange(len(sb))))
        assert sa.attrs["cache_key"] == sb.attrs["cache_key"]
        for section in ("tile", "mpp", "tissue", "storage"):
            assert sa.attrs[section] == sb.attrs[section], section
        assert sa.attrs["slide"]["reader"] == sb.attrs["slide"]["reader"] == "tiff-tiles"


def test_the_fast_reader_is_opened_once_per_slide(svs, tmp_path, monkeypatch):
    opened: list[Path] = []
    real_init = TiffTileReader.__init__

    def counting_init(self, path, *args, **kwargs):  # the real reader, counted
        opened.append(Path(path))
        real_init(self, path, *args, **kwargs)

    monkeypatch.setattr(TiffTileReader, "__init__", counting_init)
    slides = _copies(svs, tmp_path / "in", 3)
    results = tile_slides(slides, tmp_path / "out", progress=False)
    assert [r.status for r in results] == ["tiled"] * 3
    assert sorted(opened) == sorted(slides), "planning, store metadata and cutting share one open reader"
    for r in results:
        with TileStore.open(r.store) as store:
            assert store.attrs["slide"]["reader"] == "tiff-tiles"  # the fast path was the one used
    # a re-run skips every slide; deciding so needs no pixels and no reader
    opened.clear()
    assert [r.status for r in tile_slides(slides, tmp_path / "out", progress=False)] == ["skipped"] * 3
    assert opened == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_folder_run_makes_the_stores_of_one_by_one_runs(svs, tmp_path, workers):
    slides = _copies(svs, tmp_path / "in", 3)
    together = tile_slides(slides, tmp_path / "together", workers=workers, progress=False)
    assert [r.status for r in together] == ["tiled"] * 3
    for slide, result in zip(slides, together, strict=True):
        alone = tile_slide(slide, tmp_path / "alone", progress=False)
        assert alone.n_tiles == result.n_tiles > 20
        _same_store(result.store, alone.store)
        # each slide's steps are timed from inside the run
        assert {"plan", "create", "cut", "finish"} <= result.timings.keys()
        assert all(v >= 0 for v in result.timings.values())
        assert 0 < result.timings["create"] < result.timings["plan"] + result.timings["create"] <= result.seconds + 1
        if workers > 1:
            assert result.timings["pool_start"] > 0
    assert not [p.name for p in (tmp_path / "together" / "tiles").iterdir() if ".partial" in p.name]


def test_a_bad_slide_in_a_folder_fails_alone_and_leaves_nothing(svs, tmp_path):
    slides = _copies(svs, tmp_path / "in", 3)
    slides[1].write_bytes(slides[1].read_bytes()[:5000])  # truncated: planning it ahead fails
    results = tile_slides(slides, tmp_path / "out", progress=False)
    assert [r.status for r in results] == ["tiled", "failed", "tiled"]
    assert "s1.svs" in (results[1].error or "") and results[1].exit_code == 2
    names = sorted(p.name for p in (tmp_path / "out" / "tiles").iterdir())
    assert names == ["s0.zarr", "s2.zarr"]


def test_the_dispatch_sends_slides_and_volumes_to_their_tilers(svs, tmp_path):
    need_shared(ANATOMICAL)
    from pathweak.config import VolumeSpec

    results = tile_slides([svs, ANATOMICAL], tmp_path, volume=VolumeSpec(spacing_mm=(4.0, 4.0, 4.0), patch_px=8), progress=False)
    assert [r.status for r in results] == ["tiled", "tiled"], [r.error for r in results]
    with TileStore.open(results[0].store) as slide_store, TileStore.open(results[1].store) as volume_store:
        assert slide_store.attrs["slide"]["reader"] == "tiff-tiles" and slide_store.coords.shape[1] == 2
        assert volume_store.coords.shape[1] == 3  # (z, y, x) patch origins
    assert [Path(r.store).name for r in results] == ["CMU-1-Small-Region.zarr", "nibabel_anatomical.zarr"]


def test_the_dispatch_is_the_one_place_that_reaches_the_volume_tiler():
    """The slide tiler's rooms never import the volume tiler; the volume tiler (a floor below) imports
    nothing of pathweak.tiling; ``tiling/run.py`` sends each input to its tiler."""
    for path in sorted((REPO / "pathweak" / "tiling").glob("*.py")):
        if path.name != "run.py":
            assert "pathweak.volumes.tiler" not in imported_names(path), path.name
    volume_tiler = imported_names(REPO / "pathweak" / "volumes" / "tiler.py")
    assert not {m for m in volume_tiler if m.startswith("pathweak.tiling")}
    assert {"pathweak.tiling.slides", "pathweak.volumes.tiler"} <= imported_names(REPO / "pathweak" / "tiling" / "run.py")


def test_pathweak_tile_imports_no_model_library(svs, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from pathweak_cli.main import app; from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, ['tile', r'{svs}', '-o', r'{tmp_path}', '--json', '--no-progress']); "
        "assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'timm', 'lightning', 'monai') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
