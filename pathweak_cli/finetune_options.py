"""The options of ``pathweak train --finetune-encoder`` (INS trained end to end on TileStores), kept beside the
train command so it stays short; defaults are FinetuneConfig's, read without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pathweak.train.config import FinetuneConfig

from ._conventions import defaults

_DEFAULTS = defaults(FinetuneConfig)
ENCODER_LR, FROZEN_BLOCKS, EPOCHS, TILE_BATCH = (
    _DEFAULTS[k] for k in ("encoder_lr", "frozen_blocks", "epochs", "tile_batch")
)

FinetuneEncoder = Annotated[
    str | None,
    typer.Option(
        help="Train the INS head end to end with this encoder (pathweak:DIR or timm:MODEL): the arguments are then "
        "TileStores, the labels need a split column; writes the fine-tuned encoder and its features to "
        "--encoder-out and the run to --out (see docs/training.md)."
    ),
]
EncoderWeights = Annotated[str | None, typer.Option(help="--finetune-encoder timm:MODEL: its weights file.")]
EncoderLr = Annotated[float, typer.Option(help="--finetune-encoder: the encoder's AdamW learning rate.")]
FrozenBlocks = Annotated[
    int, typer.Option(help="--finetune-encoder: leading transformer blocks kept fixed (and the patch embedding).")
]
EncoderEpochs = Annotated[
    int, typer.Option(help="--finetune-encoder: encoder epochs (embed, INS head pass, encoder pass over the tiles).")
]
TileBatch = Annotated[int, typer.Option(help="--finetune-encoder: tiles per encoder step (bounds the memory).")]
EncoderOut = Annotated[
    Path | None, typer.Option(help="--finetune-encoder: folder of the fine-tuned encoder (default: OUT-encoder).")
]


def run_end_to_end(
    stores: list[str | Path], labels: Path, out: Path, cfg: Any, values: dict[str, Any], progress: bool
) -> Any:
    """Fine-tune with INS and train (train/end_to_end.py); the TrainRun."""
    from pathweak.train.end_to_end import train_end_to_end
    from pathweak.train.finetune import FinetuneConfig

    encoder_out = values.pop("encoder_out")
    return train_end_to_end(
        stores, labels, out, cfg, FinetuneConfig(**values), encoder_out=encoder_out, progress=progress
    )
