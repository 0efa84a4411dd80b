"""``extract --encoder A --encoder B``: one pass over each TileStore (every shard's tiles read once,
counted at the shard reader), one FeatureStore per encoder, equal to separate runs; the resolution
warning; ``benchmarks/extract.py --encoder PRESET``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_encoder_errors import small_tile_store

from pathweak.encoders import create_encoder
from pathweak.features import FeatureStore, extract_features
from pathweak.store import shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[2]


def encoders():
    return [create_encoder("timm:vit_tiny_patch16_224", weights="random:0", depth=1, img_size=32),
            create_encoder("kaiko-s16", weights="random:1", embedding="cls", img_size=32)]


@pytest.fixture()
def chunk_reads(monkeypatch):
    """Every tile chunk read from a shard file, as (shard path, slot), through the real reader."""
    reads: list[tuple[str, int]] = []
    original = shards.ShardReader.chunks

    def counting(self, slots):
        reads.extend((str(self.path), int(s)) for s in slots)
        return original(self, slots)

    monkeypatch.setattr(shards.ShardReader, "chunks", counting)
    return reads


def test_two_encoders_read_each_shard_once_and_match_separate_runs(tmp_path, chunk_reads):
    store = small_tile_store(tmp_path / "images", n=10, side=32)  # 3 shards of 4 tiles
    a, b = encoders()
    both = extract_features([store.path], [a, b], tmp_path / "both", num_workers=0, progress=False)
    assert [r.status for r in both] == ["extracted", "extracted"]
    counts = Counter(chunk_reads)
    assert len({path for path, _ in counts}) == 3 and len(counts) == 10 and set(counts.values()) == {1}
    chunk_reads.clear()
    (one,) = extract_features([store.path], a, tmp_path / "a", num_workers=0, progress=False)
    (two,) = extract_features([store.path], b, tmp_path / "b", num_workers=0, progress=False)
    assert len(chunk_reads) == 20  # separate runs read everything twice
    for multi, single, enc in ((both[0], one, a), (both[1], two, b)):
        assert Path(multi.store).parent.name == enc.encoder_id
        got, want = FeatureStore.open(multi.store), FeatureStore.open(single.store)
        assert got.embed_dim == enc.embed_dim and np.array_equal(got.features, want.features)
        assert np.array_equal(got.coords, want.coords)
    chunk_reads.clear()
    again = extract_features([store.path], [a, b], tmp_path / "both", num_workers=0, progress=False)
    assert [r.status for r in again] == ["skipped", "skipped"] and chunk_reads == []


def test_cli_two_encoders_and_the_resolution_warning(tmp_path):
    from typer.testing import CliRunner

    from pathweak_cli.main import app

    store = small_tile_store(tmp_path / "images", n=3, mpp=2.0, side=32)
    result = CliRunner().invoke(app, ["extract", str(store.path), "--encoder", "kaiko-s16",
                                      "--encoder", "lunit-s16", "--weights", "random", "--out", str(tmp_path / "o"),
                                      "--workers", "0", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "expects 224 px at 0.5 µm/px" in result.output
    assert "--target-mpp 0.5 --patch 224" in result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert [Path(r["store"]).parent.name.split("-random0-")[0] for r in rows] == ["kaiko-s16", "lunit-s16"]
    bad = CliRunner().invoke(app, ["extract", str(store.path), "--encoder", "kaiko-s16", "--encoder",
                                   "lunit-s16", "--weights", "random", "--weights", "random", "--weights", "random",
                                   "--out", str(tmp_path / "p")])
    assert bad.exit_code == 2 and "3 --weights for 2 encoders" in bad.output


def test_no_warning_at_the_expected_resolution(tmp_path):
    store = small_tile_store(tmp_path / "images", n=1, mpp=0.5, side=224)
    (res,) = extract_features([store.path], create_encoder("kaiko-s16", weights="random"), tmp_path / "o",
                              num_workers=0, progress=False)
    assert res.status == "extracted" and res.warnings == []


@pytest.mark.slow  # a subprocess that tiles LC25000 and runs the benchmark (~45 s on a busy 2-core machine)
def test_benchmark_measures_a_preset(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "extract.py"), "--encoder", "kaiko-s16",
                           "--tiles", "16", "--repeats", "1", "--workers", "0", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["encoder"].startswith("kaiko-s16-random0-") and out["embed_dim"] == 384 and out["tiles"] == 16
    assert out["extract_tiles_per_s"] > 0 and out["forward_tiles_per_s"] > 0
