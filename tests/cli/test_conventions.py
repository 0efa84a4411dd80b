"""The CLI convention (docs/cli.md "Conventions"), checked over every command of the app: help texts name
every registry entry, defaults are the config dataclasses', -o/--out and --json are everywhere, --workers are
processes, renamed flags keep working, and an all-failed run prints each error once."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
from conftest import REPO, run_cli
from typer.main import get_command
from typer.testing import CliRunner

from pathweak_cli.main import app

runner = CliRunner()
ROOT = get_command(app)


def _leaves(group=ROOT, prefix=()):
    """(command words, click command) of every runnable command."""
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _leaves(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


COMMANDS = dict(_leaves())


def _help(*words: str) -> str:
    result = runner.invoke(app, [*words, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    text = re.sub(r"-\s*\n\s*", "-", result.output)  # names wrapped at a hyphen (uni2-h)
    return re.sub(r"\s+", " ", text)


def _options(cmd) -> dict[str, object]:
    return {opt: p for p in cmd.params for opt in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}


def _live_names() -> dict[str, list[str]]:
    """Every registry as pathweak itself holds it (importing the heavy packages is fine here)."""
    from pathweak.cohort.spec import STAGES
    from pathweak.config import PLANES
    from pathweak.encoders import ENCODERS, PRESETS
    from pathweak.features.decode import DECODES
    from pathweak.heads import HEADS
    from pathweak.heatmap.colormap import COLORMAPS
    from pathweak.heatmap.export import FORMATS
    from pathweak.io.open import BACKENDS
    from pathweak.ssl.config import ARCHS
    from pathweak.tissue import ARTIFACT_METHODS
    from pathweak.tissue.methods import TISSUE_METHODS
    from pathweak.train.config import SURVIVAL_LOSSES, TASKS
    from pathweak.volumes.foreground import FOREGROUND_METHODS

    return {
        "heads": HEADS.names(),
        "encoders": [*PRESETS, *(f"{n}:" for n in ENCODERS.names())],
        "tissue_methods": TISSUE_METHODS.names(),
        "artifact_methods": ARTIFACT_METHODS.names(),
        "backends": ["auto", *BACKENDS.names()],
        "foreground": FOREGROUND_METHODS.names(),
        "colormaps": list(COLORMAPS),
        "formats": list(FORMATS),
        "tasks": list(TASKS),
        "survival_losses": list(SURVIVAL_LOSSES),
        "archs": list(ARCHS),
        "stages": list(STAGES),
        "decodes": list(DECODES),
        "planes": list(PLANES),
    }


# (command, option, registry): every help text that lists names
NAMED = [
    (("train",), "--head", "heads"),
    (("train",), "--task", "tasks"),
    (("train",), "--survival-loss", "survival_losses"),
    (("extract",), "--encoder", "encoders"),
    (("extract",), "--decode", "decodes"),
    (("tile",), "--tissue", "tissue_methods"),  # shown as "--tissue-method, --tissue <str>"
    (("tile",), "--artifacts", "artifact_methods"),
    (("tile",), "--backend", "backends"),
    (("tile",), "--foreground", "foreground"),
    (("tile",), "--plane", "planes"),
    (("info",), "--backend", "backends"),
    (("heatmap",), "--cmap", "colormaps"),
    (("heatmap",), "--format", "formats"),
    (("export",), "--cmap", "colormaps"),
    (("export",), "--format", "formats"),
    (("pretrain",), "--arch", "archs"),
    (("distill",), "--student", "archs"),
    (("cohort", "run"), "--stage", "stages"),
]


def test_names_read_without_torch_equal_the_live_registries():
    from pathweak_cli._conventions import NAMES

    live = _live_names()
    assert set(NAMES) == set(live)
    for kind, read in NAMES.items():
        assert sorted(read()) == sorted(live[kind]), kind
    assert {"ins", "wsseg", "abmil", "transmil"} <= set(live["heads"])


@pytest.mark.parametrize(("words", "option", "kind"), NAMED, ids=[f"{' '.join(w)} {o}" for w, o, _ in NAMED])
def test_help_names_every_registry_entry(words, option, kind):
    text = _help(*words)
    entry = text[text.index(option + " ") :]
    entry = entry[: entry.find(" --", len(option) + 1)]  # up to the next option
    missing = [n for n in _live_names()[kind] if n not in entry]
    assert not missing, f"`pathweak {' '.join(words)} --help` {option} does not name {missing}: {entry}"
    assert "{names:" not in text


def test_every_help_text_is_filled_in():
    for words in COMMANDS:
        assert "{names:" not in _help(*words), words


def test_help_does_not_import_model_libraries():
    code = (
        "import sys; from typer.testing import CliRunner; from pathweak_cli.main import app; "
        "[CliRunner().invoke(app, [*w.split(), '--help']) for w in ('train', 'extract', 'pretrain', 'distill', 'heatmap')]; "
        "print(sorted(m for m in ('torch', 'lightning', 'timm', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


# (command, option, dataclass, field): the CLI default is the dataclass's
def _default_table():
    from pathweak.config import StoreSpec, TileOptions, TileSpec, TissueSpec, VolumeSpec
    from pathweak.heatmap.export import ExportOptions
    from pathweak.ssl.config import SSLConfig
    from pathweak.train.config import TrainConfig

    rows = [
        ("tile", "--target-mpp", TileSpec, "target_mpp"),
        ("tile", "--patch", TileSpec, "patch_px"),
        ("tile", "--overlap", TileSpec, "overlap_px"),
        ("tile", "--min-tissue", TileSpec, "min_tissue"),
        ("tile", "--jpeg-quality", StoreSpec, "jpeg_quality"),
        ("tile", "--tissue-method", TissueSpec, "method"),
        ("tile", "--backend", TileOptions, "backend"),
        ("tile", "--mpp", TileOptions, "mpp"),
        ("tile", "--workers", TileOptions, "workers"),
        ("tile", "--encode-threads", TileOptions, "encode_threads"),
        ("tile", "--force", TileOptions, "force"),
        ("tile", "--mode", VolumeSpec, "mode"),
        ("tile", "--slice-step", VolumeSpec, "slice_step"),
        ("tile", "--normalize", VolumeSpec, "normalize"),
        ("tile", "--foreground", VolumeSpec, "foreground"),
        ("import-images", "--patch", TileSpec, "patch_px"),
        ("pretrain", "--method", SSLConfig, "method"),
        ("pretrain", "--arch", SSLConfig, "arch"),
        ("pretrain", "--epochs", SSLConfig, "max_epochs"),
        ("pretrain", "--batch-size", SSLConfig, "batch_size"),
        ("pretrain", "--img-size", SSLConfig, "img_size"),
        ("pretrain", "--mask-ratio", SSLConfig, "mask_ratio"),
        ("pretrain", "--patch-3d", SSLConfig, "patch_3d"),
        ("pretrain", "--workers", SSLConfig, "num_workers"),
        ("distill", "--token-weight", SSLConfig, "token_weight"),
        ("distill", "--lr", SSLConfig, "lr"),
        ("heatmap", "--cmap", ExportOptions, "cmap"),
        ("heatmap", "--alpha", ExportOptions, "alpha"),
        ("heatmap", "--smooth", ExportOptions, "smooth"),
        ("export", "--cmap", ExportOptions, "cmap"),
    ]
    train = {
        "--head": "head", "--task": "task", "--folds": "folds", "--val-fraction": "val_fraction",
        "--split-seed": "split_seed", "--epochs": "max_epochs", "--min-epochs": "min_epochs",
        "--patience": "patience", "--lr": "lr", "--weight-decay": "weight_decay",
        "--bags-per-step": "bags_per_step", "--balance": "balance", "--bootstrap": "bootstrap",
        "--device": "device", "--precision": "precision", "--dtype": "dtype", "--survival-loss": "survival_loss",
        "--survival-bins": "survival_bins",
    }  # fmt: skip
    rows += [("train", opt, TrainConfig, name) for opt, name in train.items()]
    return rows


def test_defaults_are_the_config_dataclasses():
    for command, option, cls, name in _default_table():
        param = _options(COMMANDS[(command,)])[option]
        assert param.default == getattr(cls(**({"teacher": "t"} if cls.__name__ == "SSLConfig" else {})), name), (
            command,
            option,
        )
    # tuple-valued defaults are the dataclass's, in the option's text form
    tile = _options(COMMANDS[("tile",)])
    assert tile["--spacing"].default == "1" and tile["--percentiles"].default == "0.5,99.5"
    # and --help shows them
    assert "[default: 224]" in _help("tile") and "[default: abmil]" in _help("train")


def test_the_cli_reads_the_live_defaults_and_no_source():
    """The CLI imports the real dataclasses, functions and registries (no ``ast`` reading of the library)."""
    import inspect
    from pathlib import Path

    from pathweak.features.extract import extract_features
    from pathweak.ssl.config import SSLConfig
    from pathweak.train.predict import predict_slides

    cli = Path(__file__).resolve().parents[2] / "pathweak_cli"
    readers = [p.name for p in cli.rglob("*.py") if re.search(r"^\s*(import ast|from ast import)", p.read_text(), re.M)]
    assert not readers, f"pathweak_cli parses source with ast: {readers}"
    pretrain = _options(COMMANDS[("pretrain",)])
    for option, name in (("--arch", "arch"), ("--epochs", "max_epochs"), ("--mask-ratio", "mask_ratio")):
        assert pretrain[option].default == next(f.default for f in dataclasses.fields(SSLConfig) if f.name == name)
    # and the CLI uses them
    extract, predict = _options(COMMANDS[("extract",)]), _options(COMMANDS[("predict",)])
    for option, name in (("--device", "device"), ("--decode", "decode"), ("--workers", "num_workers"),
                         ("--tokens", "tokens"), ("--export-h5", "export_h5_files"), ("--force", "force")):  # fmt: skip
        assert extract[option].default == inspect.signature(extract_features).parameters[name].default, option
    assert predict["--device"].default == inspect.signature(predict_slides).parameters["device"].default


WRITES_NOTHING = {("info",), ("heads", "list"), ("encoders", "list"), ("encoders", "info")}


def test_out_and_json_on_every_command():
    for words, cmd in COMMANDS.items():
        options = _options(cmd)
        assert "--json" in options, f"pathweak {' '.join(words)} has no --json"
        if words not in WRITES_NOTHING:
            assert {"-o", "--out"} <= set(options), f"pathweak {' '.join(words)} writes but has no -o/--out"


def test_workers_are_processes_and_threads_are_named_so():
    for words, cmd in COMMANDS.items():
        for param in cmd.params:
            opts = getattr(param, "opts", ())
            text = (getattr(param, "help", "") or "").lower()
            if "--workers" in opts:
                assert "process" in text and "thread" not in text, words
            if "threads" in text.split(":")[0] and not getattr(param, "hidden", False):
                assert any(o.endswith("-threads") for o in opts), (words, opts)


def test_hidden_aliases_are_hidden_and_documented():
    doc = (REPO / "docs" / "cli.md").read_text()
    for words, cmd in COMMANDS.items():
        for param in cmd.params:
            if getattr(param, "hidden", False) and getattr(param, "opts", None):
                for opt in param.opts:
                    if opt.startswith("--"):
                        shown = re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", _help(*words))
                        assert shown is None, (words, opt)
                        assert f"`{opt}`" in doc, f"the deprecated {opt} of {' '.join(words)} is not in docs/cli.md"


def test_every_input_failing_prints_each_error_once(tmp_path):
    missing = [str(tmp_path / "a.svs"), str(tmp_path / "b.svs")]
    proc = run_cli("tile", *missing, "-o", str(tmp_path / "o"), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.strip() == "" and "store" not in proc.stdout  # no summary table
    for path in missing:
        assert sum(path in line for line in proc.stderr.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    one = run_cli("tile", missing[0], "-o", str(tmp_path / "o"), "--no-progress")
    assert one.returncode == 2 and one.stdout.strip() == ""
    assert [ln for ln in one.stderr.splitlines() if ln.strip()] == [f"error: {missing[0]}: file not found. Check the path and spelling."]
    # heatmaps: every input failing is exit 2, each error once
    maps = run_cli("heatmap", *(str(tmp_path / f"{n}.zarr") for n in "ab"), "-o", str(tmp_path / "m"))
    assert maps.returncode == 2 and maps.stderr.count("a.zarr") == 1 and maps.stderr.count("b.zarr") == 1


def test_progress_is_drawn_on_a_terminal_only():
    """The one rule for pathweak's bars and Lightning's (``show_progress``): asked for, and stderr a terminal."""
    import os
    import pty

    code = "from pathweak.progress import show_progress; print(show_progress(True), show_progress(False))"
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert piped.stdout.split() == ["False", "False"]
    leader, follower = pty.openpty()
    try:
        tty = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=follower, text=True,
                             check=True, cwd=REPO)  # fmt: skip
    finally:
        os.close(follower)
        os.close(leader)
    assert tty.stdout.split() == ["True", "False"]


def test_one_precedence_rule_command_line_over_file_over_default():
    """pathweak.config.merge_options is the rule; tile (slides and volumes), pretrain and distill use it."""
    from pathlib import Path

    from pathweak.config import merge_options

    merged_values = merge_options({"a": "file", "b": "file"}, {"a": "line"}, {"a": "default", "b": "default", "c": "default"})
    assert merged_values == {"a": "line", "b": "file", "c": "default"}
    cli = Path(__file__).resolve().parents[2] / "pathweak_cli"
    for name in ("slides.py", "volume_options.py", "ssl_options.py"):
        assert "merge_options(" in (cli / name).read_text(), name
