"""Bad input: one clear line naming the file, the problem and the fix; non-zero exit; nothing left on disk."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_clean_failure, run_cli


def test_missing_file(tmp_path):
    path, out = tmp_path / "nope.svs", tmp_path / "out"
    assert_clean_failure(run_cli("tile", str(path), "--out", str(out)), path, out, "file not found", "Check the path")


def test_text_file_renamed_svs(tmp_path):
    path, out = tmp_path / "notes.svs", tmp_path / "out"
    path.write_text("these are my notes, not a slide\n" * 20)
    proc = run_cli("tile", str(path), "--out", str(out))
    assert_clean_failure(proc, path, out, "not a whole-slide image", "Check that this is a slide file; pathweak reads Aperio SVS")
    proc = run_cli("info", str(path))
    assert proc.returncode != 0 and "not a whole-slide image" in proc.stderr


def test_truncated_slide(svs, tmp_path):
    path, out = tmp_path / "cut.svs", tmp_path / "out"
    data = svs.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    assert_clean_failure(run_cli("tile", str(path), "--out", str(out)), path, out, "truncated", "copy")


def test_corrupt_tile_data(svs, tmp_path):
    """Zeroed bytes inside one JPEG tile: the strict decoder refuses it instead of storing wrong pixels."""
    import tifffile

    path, out = tmp_path / "damaged.svs", tmp_path / "out"
    data = bytearray(svs.read_bytes())
    with tifffile.TiffFile(svs) as tif:
        page = tif.pages[0]
        index = 4 * (-(-page.imagewidth // page.tilewidth)) + 4  # tile (4, 4): tissue
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    data[offset + count // 2 : offset + count // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    # OpenSlide already refuses it while the thumbnail is read
    assert_clean_failure(run_cli("tile", str(path), "--out", str(out)), path, out, "damaged")
    # and the tiler's own strict tile decoder names the tile
    from pathweak.errors import CorruptSlideError
    from pathweak.io import TiffTileReader, open_slide

    with open_slide(path) as s, TiffTileReader.for_slide(s) as reader:
        reader.read(0, 0, 0, 960, 960)  # tiles (0..3, 0..3) are intact
        with pytest.raises(CorruptSlideError, match=r"tile \(4, 4\) of level 0 is damaged"):
            reader.read(0, 960, 960, 240, 240)


def test_slide_without_mpp(tmp_path):
    import tifffile

    path, out = tmp_path / "nompp.tiff", tmp_path / "out"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), tile=(256, 256), photometric="rgb")
    assert_clean_failure(run_cli("tile", str(path), "--out", str(out)), path, out, "no resolution", "Pass --mpp")
    ok = run_cli("tile", str(path), "--out", str(out), "--mpp", "0.5", "--min-tissue", "0", "--tissue-method", "all", "--json")
    assert ok.returncode == 0, ok.stderr
    assert (out / "tiles" / "nompp.zarr").is_dir()


def test_multiplex_fluorescence_is_refused(tmp_path):
    import tifffile

    path, out = tmp_path / "mif.tiff", tmp_path / "out"
    stack = np.random.default_rng(0).integers(0, 4000, (5, 512, 512), dtype=np.uint16)
    tifffile.imwrite(path, stack, tile=(256, 256), photometric="minisblack", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    assert_clean_failure(run_cli("tile", str(path), "--out", str(out)), path, out, "not an RGB brightfield slide", "RGB rendering")


def test_folder_run_goes_on_past_a_bad_slide(sample_cohort, tmp_path):
    import shutil

    folder, out = tmp_path / "slides", tmp_path / "out"
    folder.mkdir()
    shutil.copy(sample_cohort / "sample_00.tiff", folder / "good.tiff")
    (folder / "bad.svs").write_text("not a slide")
    proc = run_cli("tile", str(folder), "--out", str(out), "--no-progress")
    assert proc.returncode == 1
    assert "1 of 2 slides failed" in proc.stderr and "bad.svs" in proc.stderr
    assert (out / "tiles" / "good.zarr").is_dir() and not (out / "tiles" / "bad.zarr").exists()
    assert not [p for p in (out / "tiles").iterdir() if p.name.startswith(".")]


def test_bad_options_are_clear(svs, tmp_path):
    proc = run_cli("tile", str(svs), "--out", str(tmp_path / "o"), "--overlap", "300")
    assert proc.returncode != 0 and "overlap must be in [0, patch size)" in proc.stderr
    proc = run_cli("tile", str(svs), "--out", str(tmp_path / "o"), "--target-mpp", "0.1")
    assert proc.returncode != 0 and "finer than the slide's level 0" in proc.stderr and "--target-mpp" in proc.stderr
    assert not (tmp_path / "o").exists()
