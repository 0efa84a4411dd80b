"""``pathweak --help`` and ``pathweak tile --help`` import no model library (issue 28): the CLI reads the
real config dataclasses and registries, which are torch-free, and every package exports its heavy parts
lazily. Their whole-process time is in benchmarks/results/startup.json (benchmarks/startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

MODEL_LIBRARIES = ("torch", "torchvision", "timm", "lightning", "monai", "transformers")


def loaded_by(args: list[str]) -> tuple[list[str], str]:
    """(model libraries in sys.modules when ``pathweak ARGS`` ends, its stdout)."""
    code = (
        "import sys, json\n"
        f"sys.argv = ['pathweak', *{args!r}]\n"
        "from pathweak_cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {MODEL_LIBRARIES!r} if m in sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["tile", "--help"]], ids=["--help", "tile --help"])
def test_help_imports_no_model_library(args: list[str]) -> None:
    libraries, out = loaded_by(args)
    assert "Usage" in out  # the help was printed
    assert libraries == []


def test_the_check_sees_torch_when_a_command_loads_it() -> None:
    """The same check on a command that builds a head does see torch (so an empty list means something)."""
    libraries, _ = loaded_by(["heads", "list"])
    assert "torch" in libraries
