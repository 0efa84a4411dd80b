"""The README's Python API example runs as written, on the sample cohort (issue 28): only ``pw.`` names,
and only its inputs and budgets changed (slide paths, the pretraining's time, folds and seeds)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from conftest import REPO


def readme_api_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API") :]
    return section[section.index("```python\n") + len("```python\n") : section.index("\n```", section.index("```python"))]


def test_the_example_uses_only_pw():
    code = readme_api_example()
    assert code.startswith("import pathweak as pw\n")
    assert not re.search(r"^\s*(from|import) ", code[len("import pathweak as pw\n") :], re.M), "only pw. names"


def test_the_readme_api_example_runs(tmp_path: Path) -> None:
    import pathweak as pw

    slides = [s.path for s in pw.make_sample_cohort(tmp_path / "slides", n_slides=8, size=(1536, 1152))]
    code = readme_api_example()
    for old, new in [
        ('["slides/a.svs", "slides/b.svs"]', repr([str(p) for p in slides])),
        ('"slides/a.svs"', repr(str(slides[0]))),
        ("max_minutes=5", "max_steps=2, batch_size=8"),
        ('"labels.csv"', repr(str(tmp_path / "slides" / "labels.csv"))),
        ("folds=5, seeds=(0, 1, 2)", "folds=2, seeds=(0,), max_epochs=2"),
    ]:
        assert old in code, old
        code = code.replace(old, new)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert (tmp_path / "runs" / "x" / "abmil" / "run.json").is_file()
    assert list((tmp_path / "runs" / "x" / "results").glob("*/*.zarr"))


def test_pw_reaches_every_stage():
    """One namespace from slides to reports: each stage's entry point is a ``pw.`` name."""
    import pathweak as pw

    stages = ["open_slide", "open_volume", "segment_tissue", "estimate_mpp", "tile_slides", "TileStore", "pretrain",
              "distill", "extract_features", "FeatureStore", "create_encoder", "create_head", "train_cohort",
              "predict_slides", "read_results", "write_heatmaps", "export_review", "read_corrections",
              "write_report", "run_cohort"]  # fmt: skip
    missing = [name for name in stages if not callable(getattr(pw, name, None))]
    assert not missing, missing
    assert set(stages) <= set(dir(pw))
