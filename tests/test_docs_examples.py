"""The command examples of the README and docs/ stay true: every `pathweak ...` line in a fenced block
parses with the real command line (commands, options, choices and value types), and the examples of
docs/getting_started.md run on real files (the demo's paths mapped onto a small real run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import REPO, SVS, need_shared, run_cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_commands(text: str) -> list[str]:
    """The `pathweak ...` lines of Markdown's fenced code blocks (continuations joined)."""
    out = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("pathweak "):
                out.append(line)
    return out


def parse(args: list[str]) -> str:
    """Parse ``pathweak ARGS`` as the CLI would, without running it; returns the command's name."""
    import typer.main

    from pathweak_cli.main import app

    group = typer.main.get_command(app)
    ctx = group.make_context("pathweak", list(args))
    command = group
    while hasattr(command, "resolve_command"):  # groups: pathweak, cohort, encoders, heads
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return str(command.name)


def test_every_documented_command_parses():
    found, bad = 0, []
    for path in DOCS:
        for line in doc_commands(path.read_text()):
            args = shlex.split(line, comments=True)[1:]
            if "--help" in args or "--version" in args:
                continue
            found += 1
            try:
                parse(args)
            except Exception as exc:  # noqa: BLE001  (click's usage errors: report them all at once)
                bad.append(f"{path.name}: {line}\n    {type(exc).__name__}: {exc}")
    assert found > 40, found
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def demo_like(mil_cohort, tmp_path_factory):
    """A real run laid out like the demo's: a trained model's results store, its TileStore (a labelled
    pseudo-slide with prob_tumour and attention scores)."""
    from pathweak.train import TrainConfig, predict_slides, train_cohort

    out = tmp_path_factory.mktemp("demo_like")
    cfg = TrainConfig(head="abmil", seeds=(0,), max_epochs=2, min_epochs=1, patience=1, bootstrap=0, device="cpu")
    train_cohort([mil_cohort["features"]], mil_cohort["labels"], out / "models" / "abmil", cfg, progress=False)
    (first, *_) = predict_slides(out / "models" / "abmil", [mil_cohort["features"]], out, name="abmil", progress=False)
    from pathweak.heatmap import read_results

    return {"results": Path(first.results), "tiles": Path(read_results(first.results).tile_store), "out": out}


def _runnable(section: str) -> list[list[str]]:
    text = (REPO / "docs" / "getting_started.md").read_text()
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(c, comments=True)[1:] for c in doc_commands(part)]


def test_getting_started_heatmap_examples_run_on_the_demo_layout(demo_like, tmp_path):
    paths = {
        "runs/demo/results/abmil/sample_00.zarr": str(demo_like["results"]),
        "runs/demo/tiles/sample_00.zarr": str(demo_like["tiles"]),
        "runs/demo/maps": str(tmp_path / "maps"),
        "scores.csv": str(tmp_path / "scores.csv"),
        "attention.png": str(tmp_path / "attention.png"),
    }
    commands = _runnable("Heatmaps and QuPath")
    assert len(commands) == 3
    for args in commands:
        args = [paths.get(a, a) for a in args]
        assert not [a for a in args if a.startswith("runs/")], args  # every path mapped
        proc = run_cli(*args)
        assert proc.returncode == 0, f"{args}\n{proc.stderr[-2000:]}"
    geojson = next((tmp_path / "maps").glob("*.geojson")).read_text()
    assert '"Tumour"' in geojson  # the --region annotations
    assert (tmp_path / "attention.png").stat().st_size > 1000


def test_a_wrong_region_score_names_the_results_store_and_region(demo_like, tmp_path):
    """The docs' old spelling (prob_tumor for the class tumour): one line naming the results store given
    (not the TileStore behind it), the scores there are, and --region."""
    results = demo_like["results"]
    proc = run_cli("heatmap", str(results), "-o", str(tmp_path / "m"), "--region", "prob_tumor>=0.5:Tumor")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {results}: no score named prob_tumor"), proc.stderr
    assert "prob_tumour" in lines[0] and "--region" in lines[0] and "--score" not in lines[0]
    assert str(demo_like["tiles"]) not in lines[0]


def test_getting_started_own_slides_examples_run(tmp_path):
    need_shared(SVS)
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / SVS.name).symlink_to(SVS)
    paths = {"slide.svs": str(SVS), "slides/": str(slides), "runs/cohort": str(tmp_path / "cohort")}
    commands = _runnable("Your own slides")
    assert [c[0] for c in commands] == ["info", "tile"]
    for args in commands:
        args = [paths.get(a, a) for a in args]
        proc = run_cli(*args)
        assert proc.returncode == 0, f"{args}\n{proc.stderr[-2000:]}"
    assert (tmp_path / "cohort" / "tiles" / f"{SVS.stem}.zarr").is_dir()


def test_readme_set_up_keeps_its_two_commands_and_tells_cpu_users_how_to_skip_cuda():
    """.ci/run reads the test command from README.md exactly as it stands; the CPU-only advice installs
    torch's CPU build before pathweak, so pip keeps it."""
    text = (REPO / "README.md").read_text()

    def marked(name: str) -> str:
        return text.split(f"<!-- {name} -->\n```\n", 1)[1].split("\n", 1)[0]

    assert marked("main-command") == "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && pathweak demo"
    assert marked("test-command") == (
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && pytest'
    )
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    cpu = [ln for ln in setup.splitlines() if "--index-url https://download.pytorch.org/whl/cpu" in ln]
    assert cpu and cpu[0].index("pip install torch") < cpu[0].index("--index-url")
    assert setup.index("--index-url https://download.pytorch.org/whl/cpu") < setup.index("pip install -e . && pathweak demo\n```\n\nPython")
