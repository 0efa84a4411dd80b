"""The ``pathweak`` command line: thin wrappers that parse options, call the public API and print.

Commands that need no model (info, tile, demo, heatmap, export, ground-truth, ...) never import torch,
timm, lightning or monai.
"""

from __future__ import annotations

from . import (
    cohorts,  # noqa: F401,E402
    encoders,  # noqa: F401,E402
    heatmaps,  # noqa: F401,E402
    models,  # noqa: F401,E402
    review,  # noqa: F401,E402
    slide_models,  # noqa: F401,E402
    slides,  # noqa: F401,I001  (each module registers its commands on the app, in help order)
    stain,  # noqa: F401,E402
    training,  # noqa: F401,E402
)
from ._app import app


def main() -> None:
    """Console-script entry point."""
    app(prog_name="pathweak")


if __name__ == "__main__":  # pragma: no cover
    main()
