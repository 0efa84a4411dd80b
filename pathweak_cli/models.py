"""CLI commands of the model stages: pretrain, distill, extract, import-images (encoders list/info are in
``encoders``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pathweak.config import StoreSpec, TileSpec
from pathweak.features.extract import extract_features

from ._app import app, handle_errors, json_stdout
from ._conventions import Command, default, deprecated, function_defaults, inputs, names, paths, ssl_default
from .ssl_options import SELECT_HELP, CpuPreset, print_pretrain, ssl_config, ssl_values
from .stain import StainMethodOpt, StainRefOpt, stain_option

StoresArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="STORES", help="TileStores (<slide>.zarr), tiles/ folders or globs.", show_default=False),
]
OldStores = Annotated[list[str] | None, deprecated("--stores", "the STORES arguments")]
JsonAlways = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON (its only form; accepted for uniformity).")
]
_STORES_EXAMPLE = "runs/x/tiles/"
_EXTRACT = function_defaults(extract_features)


@app.command(cls=Command)
@handle_errors
@json_stdout
def pretrain(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: encoder.safetensors, encoder.json, checkpoints/, logs/.")
    ],
    stores: StoresArg = None,
    method: Annotated[
        str,
        typer.Option(
            help="dino or mae (2D tiles), or mae3d (a 3D ViT on the 3D patches of volume stores); mae on 2D and 3D stores together trains one ViT for both."
        ),
    ] = ssl_default("method"),
    arch: Annotated[str, typer.Option(help=f"{names('archs')} (timm, patch 16).")] = ssl_default("arch"),
    config: Annotated[
        Path | None,
        typer.Option(help="YAML with an ssl: section (see configs/ssl_*.yaml); options given on the command line win."),
    ] = None,
    tiny: Annotated[
        bool, typer.Option(help="Start from the CPU-sized preset (6-block ViT-Tiny at 112 px, batch 32).")
    ] = False,
    cpu: CpuPreset = False,
    select: Annotated[str, typer.Option(help=SELECT_HELP)] = ssl_default("select"),
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = ssl_default("max_epochs"),
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes.")] = ssl_default(
        "max_minutes"
    ),
    batch_size: Annotated[int, typer.Option(help="Images per step (per device; --tiny: 32).")] = ssl_default(
        "batch_size"
    ),
    img_size: Annotated[
        int,
        typer.Option(
            help="Input size (multiple of 16; --tiny: 112; for mae3d the cube side, a multiple of --patch-3d)."
        ),
    ] = ssl_default("img_size"),
    patch_3d: Annotated[int, typer.Option(help="mae3d: voxels per side of one token's cube.")] = ssl_default(
        "patch_3d"
    ),
    mask_ratio: Annotated[float, typer.Option(help="MAE masking ratio.")] = ssl_default("mask_ratio"),
    fourier_style: Annotated[
        float, typer.Option(help="Probability of Fourier amplitude swaps within a batch.")
    ] = ssl_default("fourier_style"),
    adapt_from: Annotated[
        Path | None, typer.Option(help="Adapt this encoder (pathweak dir or state dict) ExPLoRA-style.")
    ] = None,
    devices: Annotated[
        str,
        typer.Option(
            help="Processes (Lightning DDP, one per device): auto (every GPU, else 1), N or all; on a CPU N gloo processes."
        ),
    ] = str(ssl_default("devices")),
    strategy: Annotated[str, typer.Option(help="Lightning strategy (auto, ddp, ...).")] = ssl_default("strategy"),
    workers: Annotated[int, typer.Option(help="Loader worker processes decoding tiles (--tiny: 1).")] = ssl_default(
        "num_workers"
    ),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoints/last.ckpt when it exists.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal only).")] = True,
    as_json: JsonAlways = False,
    stores_old: OldStores = None,
) -> None:
    """Self-supervised pretraining (DINO or MAE) of a ViT on TileStores (MAE3D of a 3D ViT on volume
    stores of 3D patches); the checkpoint with the highest RankMe on held-out tiles (or, with --select last,
    the final weights) is exported as OUT/encoder.safetensors + encoder.json (use it as --encoder
    pathweak:OUT)."""
    from pathweak.ssl import pretrain as run_pretrain
    from pathweak.store.tiles import find_tile_stores

    found = find_tile_stores(paths(inputs(stores, stores_old, "--stores", "TileStores", _STORES_EXAMPLE)))
    values = ssl_values(
        ctx,
        config,
        {
            "method": ("method", method),
            "arch": ("arch", arch),
            "epochs": ("max_epochs", epochs),
            "max_minutes": ("max_minutes", max_minutes),
            "batch_size": ("batch_size", batch_size),
            "img_size": ("img_size", img_size),
            "patch_3d": ("patch_3d", patch_3d),
            "mask_ratio": ("mask_ratio", mask_ratio),
            "fourier_style": ("fourier_style", fourier_style),
            "adapt_from": ("adapt_from", adapt_from),
            "devices": ("devices", devices),
            "strategy": ("strategy", strategy),
            "workers": ("num_workers", workers),
            "select": ("select", select),
        },
    )
    cfg = ssl_config(method, values, tiny, cpu)
    result = run_pretrain(paths(found), out, cfg, resume=resume, progress=progress)
    print_pretrain(result)


@app.command(cls=Command)
@handle_errors
@json_stdout
def distill(
    ctx: typer.Context,
    teacher: Annotated[
        str,
        typer.Option(
            help="The encoder to distil: pathweak:<dir>, timm:<model>, a preset (see `pathweak encoders list`)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: encoder.safetensors, encoder.json, checkpoints/, logs/.")
    ],
    stores: StoresArg = None,
    student: Annotated[
        str, typer.Option(help=f"Student architecture: {names('archs')} (timm, patch 16).")
    ] = "vit_tiny",
    teacher_weights: Annotated[str | None, typer.Option(help="Local weights file of a timm/preset teacher.")] = None,
    depth: Annotated[
        int | None, typer.Option(help="Student transformer blocks (default: the architecture's 12; 6 with --tiny).")
    ] = ssl_default("depth"),
    img_size: Annotated[int, typer.Option(help="Student input size (multiple of 16; --tiny: 112).")] = ssl_default(
        "img_size"
    ),
    embed_dim: Annotated[
        int | None, typer.Option(help="Student token width (default: the architecture's, 192 for vit_tiny).")
    ] = ssl_default("embed_dim"),
    heads: Annotated[
        int | None, typer.Option(help="Student attention heads (default: the architecture's, 3 for vit_tiny).")
    ] = ssl_default("num_heads"),
    token_weight: Annotated[
        float, typer.Option(help="Weight of the patch-token loss for ViT teachers (0: embedding only).")
    ] = ssl_default("token_weight"),
    loss: Annotated[
        str,
        typer.Option(help="standardized (MSE to per-dimension standardised teacher features) or cosine (+ L2)."),
    ] = ssl_default("distill_loss"),
    relation_weight: Annotated[
        float, typer.Option(help="Weight of the batch similarity-matrix (relational) loss (0: off).")
    ] = ssl_default("relation_weight"),
    whole_tile_views: Annotated[
        float,
        typer.Option(
            help="Fraction of views that are the whole tile, un-augmented but for a flip/rotation (what extraction "
            "sees); the rest are augmented crops (0: all augmented)."
        ),
    ] = ssl_default("whole_tile_views"),
    tiny: Annotated[bool, typer.Option(help="Start from the CPU-sized preset (6-block student at 112 px).")] = False,
    cpu: CpuPreset = False,
    select: Annotated[str, typer.Option(help=SELECT_HELP)] = ssl_default("select"),
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = ssl_default("max_epochs"),
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes.")] = ssl_default(
        "max_minutes"
    ),
    batch_size: Annotated[int, typer.Option(help="Images per step (per device; --tiny: 32).")] = ssl_default(
        "batch_size"
    ),
    lr: Annotated[float, typer.Option(help="Learning rate per 256 images (--tiny: 0.001).")] = ssl_default("lr"),
    workers: Annotated[int, typer.Option(help="Loader worker processes decoding tiles (--tiny: 1).")] = ssl_default(
        "num_workers"
    ),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoints/last.ckpt when it exists.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal only).")] = True,
    as_json: JsonAlways = False,
    stores_old: OldStores = None,
) -> None:
    """Distil a (big) encoder into a small ViT: the student learns to reproduce the teacher's embedding
    (and a ViT teacher's patch tokens) on augmented views of the tiles: MSE to per-dimension standardised
    teacher features through a projection (or cosine + L2 with --loss cosine).
    Exports the checkpoint with the highest RankMe (or with --select last the final weights) as a
    pathweak:OUT encoder that records its teacher. --embed-dim/--heads make a student narrower than vit_tiny.

    The student defaults to vit_tiny here (pretraining's architecture default is vit_small): a distilled
    encoder is meant to be small."""
    from pathweak.ssl.distill import distill as run_distill
    from pathweak.store.tiles import find_tile_stores

    found = find_tile_stores(paths(inputs(stores, stores_old, "--stores", "TileStores", _STORES_EXAMPLE)))
    values = ssl_values(
        ctx,
        None,
        {
            "teacher_weights": ("teacher_weights", teacher_weights),
            "depth": ("depth", depth),
            "img_size": ("img_size", img_size),
            "embed_dim": ("embed_dim", embed_dim),
            "heads": ("num_heads", heads),
            "token_weight": ("token_weight", token_weight),
            "loss": ("distill_loss", loss),
            "relation_weight": ("relation_weight", relation_weight),
            "whole_tile_views": ("whole_tile_views", whole_tile_views),
            "epochs": ("max_epochs", epochs),
            "max_minutes": ("max_minutes", max_minutes),
            "batch_size": ("batch_size", batch_size),
            "lr": ("lr", lr),
            "workers": ("num_workers", workers),
            "select": ("select", select),
        },
    )
    values.update(arch=student, teacher=teacher)
    cfg = ssl_config("distill", values, tiny, cpu)
    result = run_distill(paths(found), out, cfg, resume=resume, progress=progress)
    print_pretrain(result, teacher=teacher)


@app.command(cls=Command)
@handle_errors
def extract(
    encoder: Annotated[
        list[str],
        typer.Option(
            help=f"An encoder: a preset, pathweak:<dir>, timm:<model>, torchvision:resnet50_trunc, or "
            f"monai:resnet10|18|34|50 for 3D volume patches ({names('encoders')}; see `pathweak encoders list`). "
            "Repeat it to embed with several encoders in one pass (each tile read and decoded once)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder; stores go to OUT/features/<encoder_id>/<slide_id>.zarr.")
    ],
    stores: StoresArg = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            help="Weights: a file, or for a preset a hub snapshot folder (default: the local Hugging Face cache), or 'random[:seed]'. Once per --encoder in the same order, or once for all."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Model batch size (default: 64 on CPU, 8 for 3D encoders; adaptive from 512 on GPU)."),
    ] = _EXTRACT["batch_size"],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = _EXTRACT["device"],
    decode: Annotated[
        str,
        typer.Option(
            help=f"Where JPEG tiles are decoded ({names('decodes')}): auto (on the GPU with nvJPEG when the model runs on CUDA, else CPU), cpu, or gpu (an error without CUDA)."
        ),
    ] = _EXTRACT["decode"],
    devices: Annotated[
        str | None,
        typer.Option(
            help="Shard slides over N devices, one process each: N or all (every GPU; on a CPU-only machine N processes)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Loader worker processes decoding tiles ahead of the model.")] = _EXTRACT[
        "num_workers"
    ],
    export_h5: Annotated[
        bool, typer.Option(help="Also write CLAM/TRIDENT-style h5 files to OUT/h5_files/<encoder_id>/.")
    ] = _EXTRACT["export_h5_files"],
    force: Annotated[bool, typer.Option(help="Re-extract even when the FeatureStore is up to date.")] = _EXTRACT[
        "force"
    ],
    tokens: Annotated[
        int,
        typer.Option(
            help="ViT encoders: one row per patch token inside each tile (N x N tokens averaged, e.g. 2: a 7x7 map per 224 px tile) for sub-tile wsseg maps, under OUT/features/<encoder_id>-tokens<N>/; 0: one row per tile."
        ),
    ] = _EXTRACT["tokens"],
    rotations: Annotated[
        int,
        typer.Option(
            help="2 or 4: one row per tile holding its features under that many rotations side by side, under OUT/features/<encoder_id>-rot<N>/, for `train --label-augmentation rotation`; 1: none."
        ),
    ] = _EXTRACT["rotations"],
    stain_normalize: StainMethodOpt = None,
    stain_reference: StainRefOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal only).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    stores_old: OldStores = None,
) -> None:
    """Embed every tile of TileStores into FeatureStores (float16, one row per tile, coords alongside;
    with --tokens, one row per patch token inside each tile)."""
    from pathweak.errors import ConfigError
    from pathweak.store.tiles import find_tile_stores

    from .slides import report_failures

    found = find_tile_stores(paths(inputs(stores, stores_old, "--stores", "TileStores", _STORES_EXAMPLE)))
    if devices is not None and len(encoder) > 1:
        raise ConfigError(
            "--devices runs one encoder at a time",
            fix="give one --encoder with --devices, or drop --devices to embed with several encoders in one pass",
        )
    kwargs: dict[str, Any] = dict(
        weights=list(weights) if weights else None,
        batch_size=batch_size,
        device=device,
        num_workers=workers,
        export_h5_files=export_h5,
        force=force,
        progress=progress,
        tokens=tokens,
        decode=decode,
        rotations=rotations,
        stain=stain_option(stain_normalize, stain_reference),
    )
    from pathweak.encoders import check_weights

    check_weights(encoder, kwargs["weights"])  # a preset without weights fails here, before torch is imported
    from pathweak.features import extract_features  # torch: after the options are checked

    if devices is not None:
        from pathweak.features.devices import extract_on_devices

        kwargs["weights"] = weights[0] if weights else None
        results = extract_on_devices(paths(found), encoder[0], out, devices=devices, **kwargs)
    else:
        results = extract_features(paths(found), encoder, out, **kwargs)
    rows = [r.as_row() for r in results]
    for warning in dict.fromkeys(w for r in results for w in r.warnings):
        typer.echo(f"warning: {warning}", err=True)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif len(failed) < len(results):
        unit = "tokens" if tokens else "tiles"
        for r in rows:  # a failure's message is printed once, on stderr, below
            typer.echo(f"{r['slide_id']}: {r['status']} {r['n_tiles']} {unit} -> {r['store'] or '-'}")
    # every store bad input (e.g. a damaged TileStore) exits 2 like any PathweakError; a partial failure 1
    report_failures([(r.error or "failed", r.exit_code) for r in failed], len(results), "stores")


@app.command("import-images", cls=Command)
@handle_errors
def import_images(
    inputs: Annotated[
        list[Path], typer.Argument(metavar="INPUTS", help="Image files or folders of images (searched recursively).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The TileStore to write, e.g. runs/x/tiles/lc25000.zarr.")],
    patch: Annotated[
        int, typer.Option(help="Tile side; images are centre-cropped square and resized to it.")
    ] = default(TileSpec, "patch_px"),
    mpp: Annotated[float | None, typer.Option(help="Microns per pixel of the images, when known.")] = None,
    lossless: Annotated[bool, typer.Option(help="Store losslessly (zstd) instead of JPEG 95.")] = (
        default(StoreSpec, "compression") == "lossless"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the store and its tile count as JSON.")] = False,
) -> None:
    """Put pre-cut tile images (a patch dataset such as LC25000) into one TileStore for pretraining and extraction."""
    from pathweak.tiling.images import images_to_store, list_images

    files = paths(f for p in inputs for f in (list_images(p) if p.is_dir() else [p]))
    store = images_to_store(files, out, patch, StoreSpec(compression="lossless" if lossless else "jpeg"), mpp)
    if as_json:
        typer.echo(json.dumps({"store": str(store.path), "n_tiles": len(store)}, indent=2))
        return
    typer.echo(f"{len(store)} tiles in {store.path}")
