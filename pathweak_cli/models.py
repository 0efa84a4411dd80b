"""CLI commands of the model stages: pretrain, extract, encoders list/info, import-images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import _err, app, handle_errors

encoders_app = typer.Typer(help="Encoders that turn tiles into features.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(encoders_app, name="encoders")


@encoders_app.command("list")
@handle_errors
def encoders_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the presets (and families) as JSON.")] = False,
) -> None:
    """List the encoder presets (embedding size, input, resolution, licence, whether their weights are in
    the local Hugging Face cache here), the models that are not supported and why, and the families.
    Nothing is downloaded."""
    from pathweak.encoders import FAMILIES, preset_rows

    rows = preset_rows()
    if as_json:
        typer.echo(json.dumps({"presets": rows, "families": FAMILIES}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("preset", "dim", "input", "µm/px @ px", "licence", "gated", "weights here", "hub repo")
    for r in rows:
        if r["supported"]:
            table.add_row(
                r["name"],
                str(r["dim"]),
                str(r["input"]),
                f"{r['mpp']:g} @ {r['patch_px']}",
                r["licence"],
                "yes" if r["gated"] else "no",
                r["found"] or "no",
                r["repo"] or "(not on the hub)",
            )
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    console.print(
        "Get weights with `huggingface-cli download <hub repo>` (gated: request access first); "
        "`pathweak encoders info NAME` shows the full record and the exact command."
    )
    unsupported = Table("not supported", "repo", "why")
    for r in rows:
        if not r["supported"]:
            unsupported.add_row(r["name"], r["repo"], r["why"])
    console.print(unsupported)
    families = Table("family", "weights")
    for row in FAMILIES:
        families.add_row(row["name"], row["weights"])
    console.print(families)


@encoders_app.command("info")
@handle_errors
def encoders_info(
    name: Annotated[str, typer.Argument(help="A preset name (see `pathweak encoders list`).")],
    weights: Annotated[
        str | None, typer.Option(help="Where to look first: a weights file or a hub snapshot folder.")
    ] = None,
) -> None:
    """The full record of a preset as JSON: architecture and constructor arguments, input, resolution,
    mean/std, embedding rule and size, precision, licence, hub repo and files, the download command, and
    where its weights were looked for and found."""
    from pathweak.encoders import preset_info

    typer.echo(json.dumps(preset_info(name, weights), indent=2))


@app.command()
@handle_errors
def pretrain(
    stores: Annotated[list[str], typer.Option("--stores", help="TileStores (<slide>.zarr), tiles/ folders or globs.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: encoder.safetensors, encoder.json, checkpoints/, logs/.")
    ],
    method: Annotated[
        str, typer.Option(help="dino or mae (2D tiles), or mae3d (a 3D ViT on the 3D patches of volume stores).")
    ] = "dino",
    arch: Annotated[str, typer.Option(help="vit_tiny, vit_small or vit_base (timm, patch 16).")] = "vit_small",
    config: Annotated[
        Path | None, typer.Option(help="YAML with an ssl: section (see configs/ssl_*.yaml); options given here win.")
    ] = None,
    tiny: Annotated[bool, typer.Option(help="Start from the CPU-sized preset (6-block ViT-Tiny at 112 px).")] = False,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step (per device).")] = None,
    img_size: Annotated[
        int | None, typer.Option(help="Input size (multiple of 16; for mae3d the cube side, a multiple of --patch-3d).")
    ] = None,
    patch_3d: Annotated[
        int | None, typer.Option(help="mae3d: voxels per side of one token's cube (default 4).")
    ] = None,
    mask_ratio: Annotated[float | None, typer.Option(help="MAE masking ratio.")] = None,
    fourier_style: Annotated[
        float | None, typer.Option(help="Probability of Fourier amplitude swaps within a batch.")
    ] = None,
    adapt_from: Annotated[
        Path | None, typer.Option(help="Adapt this encoder (pathweak dir or state dict) ExPLoRA-style.")
    ] = None,
    devices: Annotated[
        str,
        typer.Option(
            help="Processes (Lightning DDP, one per device): auto (every GPU, else 1), N or all; on a CPU N gloo processes."
        ),
    ] = "auto",
    strategy: Annotated[str, typer.Option(help="Lightning strategy (auto, ddp, ...).")] = "auto",
    workers: Annotated[int | None, typer.Option(help="Loader worker processes decoding tiles.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoints/last.ckpt when it exists.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Self-supervised pretraining (DINO or MAE) of a ViT on TileStores (MAE3D of a 3D ViT on volume
    stores of 3D patches); the checkpoint with the highest RankMe on held-out tiles is exported as
    OUT/encoder.safetensors + encoder.json (use it as --encoder pathweak:OUT)."""
    from pathweak.config import load_yaml
    from pathweak.ssl import SSLConfig
    from pathweak.ssl import pretrain as run_pretrain
    from pathweak.tiling.store import find_tile_stores

    values: dict[str, Any] = dict(load_yaml(config).get("ssl", {})) if config else {}
    given = {
        "method": method,
        "arch": arch,
        "max_epochs": epochs,
        "max_minutes": max_minutes,
        "batch_size": batch_size,
        "img_size": img_size,
        "patch_3d": patch_3d,
        "mask_ratio": mask_ratio,
        "fourier_style": fourier_style,
        "adapt_from": str(adapt_from) if adapt_from else None,
        "devices": devices,
        "strategy": strategy,
        "num_workers": workers,
    }
    for key, value in given.items():
        if value is not None:
            values[key] = value
    for key in ("global_scale", "local_scale", "mae_scale"):
        if key in values:
            values[key] = tuple(values[key])
    cfg = SSLConfig.tiny(**values) if tiny else SSLConfig(**values)
    result = run_pretrain(find_tile_stores(stores), out, cfg, resume=resume, progress=progress)
    typer.echo(
        json.dumps(
            {
                "encoder": f"pathweak:{result.encoder_dir}",
                "steps": result.steps,
                "epochs": result.epochs,
                "best_checkpoint": result.best_checkpoint,
                "rankme": result.rankme,
            },
            indent=2,
        )
    )


@app.command()
@handle_errors
def distill(
    teacher: Annotated[
        str,
        typer.Option(
            help="The encoder to distil: pathweak:<dir>, timm:<model>, a preset (see `pathweak encoders list`)."
        ),
    ],
    stores: Annotated[
        list[str],
        typer.Option(
            "--stores", help="TileStores (<slide>.zarr), tiles/ folders or globs: the tiles the student learns on."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: encoder.safetensors, encoder.json, checkpoints/, logs/.")
    ],
    student: Annotated[
        str, typer.Option(help="Student architecture: vit_tiny, vit_small or vit_base (timm, patch 16).")
    ] = "vit_tiny",
    teacher_weights: Annotated[str | None, typer.Option(help="Local weights file of a timm/preset teacher.")] = None,
    depth: Annotated[
        int | None, typer.Option(help="Student transformer blocks (default: the architecture's 12; 6 with --tiny).")
    ] = None,
    img_size: Annotated[
        int | None, typer.Option(help="Student input size (multiple of 16); default 224, 112 with --tiny.")
    ] = None,
    token_weight: Annotated[
        float | None, typer.Option(help="Weight of the patch-token loss for ViT teachers (0: embedding only).")
    ] = None,
    tiny: Annotated[bool, typer.Option(help="Start from the CPU-sized preset (6-block student at 112 px).")] = False,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step (per device).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate per 256 images.")] = None,
    workers: Annotated[int | None, typer.Option(help="Loader worker processes decoding tiles.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoints/last.ckpt when it exists.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Distil a (big) encoder into a small ViT: the student learns to reproduce the teacher's embedding
    (and a ViT teacher's patch tokens) on augmented views of the tiles; cosine + L2 through a projection.
    Exports the checkpoint with the highest RankMe as a pathweak:OUT encoder that records its teacher."""
    from pathweak.ssl import SSLConfig
    from pathweak.ssl.distill import distill as run_distill
    from pathweak.tiling.store import find_tile_stores

    given = {
        "arch": student,
        "teacher": teacher,
        "teacher_weights": teacher_weights,
        "depth": depth,
        "img_size": img_size,
        "token_weight": token_weight,
        "max_epochs": epochs,
        "max_minutes": max_minutes,
        "batch_size": batch_size,
        "lr": lr,
        "num_workers": workers,
    }
    values = {k: v for k, v in given.items() if v is not None}
    cfg = SSLConfig.tiny("distill", **values) if tiny else SSLConfig(method="distill", **values)
    result = run_distill(find_tile_stores(stores), out, cfg, resume=resume, progress=progress)
    typer.echo(
        json.dumps(
            {
                "encoder": f"pathweak:{result.encoder_dir}",
                "teacher": teacher,
                "steps": result.steps,
                "epochs": result.epochs,
                "best_checkpoint": result.best_checkpoint,
                "rankme": result.rankme,
            },
            indent=2,
        )
    )


@app.command()
@handle_errors
def extract(
    stores: Annotated[list[str], typer.Option("--stores", help="TileStores (<slide>.zarr), tiles/ folders or globs.")],
    encoder: Annotated[
        list[str],
        typer.Option(
            help="A preset (uni2-h, virchow2, conch, ...), pathweak:<dir>, timm:<model>, torchvision:resnet50_trunc, or monai:resnet10|18|34|50 for 3D volume patches (see `pathweak encoders list`). Repeat it to embed with several encoders in one pass (each tile read and decoded once)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder; stores go to OUT/features/<encoder_id>/<slide_id>.zarr.")
    ],
    weights: Annotated[
        list[str] | None,
        typer.Option(
            help="Weights: a file, or for a preset a hub snapshot folder (default: the local Hugging Face cache), or 'random[:seed]'. Once per --encoder in the same order, or once for all."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Model batch size (default: 64 on CPU, 8 for 3D encoders; adaptive from 512 on GPU)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    decode: Annotated[
        str,
        typer.Option(
            help="Where JPEG tiles are decoded: auto (on the GPU with nvJPEG when the model runs on CUDA, else CPU), cpu, or gpu (an error without CUDA)."
        ),
    ] = "auto",
    devices: Annotated[
        str | None,
        typer.Option(
            help="Shard slides over N devices, one process each: N or all (every GPU; on a CPU-only machine N processes)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Loader worker processes decoding tiles ahead of the model.")] = 1,
    export_h5: Annotated[
        bool, typer.Option(help="Also write CLAM/TRIDENT-style h5 files to OUT/h5_files/<encoder_id>/.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Re-extract even when the FeatureStore is up to date.")] = False,
    tokens: Annotated[
        int,
        typer.Option(
            help="ViT encoders: one row per patch token inside each tile (N x N tokens averaged, e.g. 2: a 7x7 map per 224 px tile) for sub-tile wsseg maps, under OUT/features/<encoder_id>-tokens<N>/; 0: one row per tile."
        ),
    ] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Embed every tile of TileStores into FeatureStores (float16, one row per tile, coords alongside;
    with --tokens, one row per patch token inside each tile)."""
    from pathweak.features import extract_features
    from pathweak.tiling.store import find_tile_stores

    if devices is not None and len(encoder) > 1:
        from pathweak.errors import ConfigError

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
    )
    if devices is not None:
        from pathweak.features.devices import extract_on_devices

        kwargs["weights"] = weights[0] if weights else None
        results = extract_on_devices(find_tile_stores(stores), encoder[0], out, devices=devices, **kwargs)
    else:
        results = extract_features(find_tile_stores(stores), encoder, out, **kwargs)
    rows = [r.as_row() for r in results]
    for warning in dict.fromkeys(w for r in results for w in r.warnings):
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(
                f"{r['slide_id']}: {r['status']} {r['n_tiles']} {'tokens' if tokens else 'tiles'} -> {r['store'] or r['error']}"
            )
    failed = [r for r in results if r.status == "failed"]
    if failed:
        for r in failed:
            _err(r.error or "failed")
        # bad input everywhere (e.g. a damaged TileStore) exits 2 like any PathweakError; a partial failure 1
        bad_input = len(failed) == len(results) and all(r.exit_code == 2 for r in failed)
        raise typer.Exit(2 if bad_input else 1)


@app.command("import-images")
@handle_errors
def import_images(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders of images (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The TileStore to write, e.g. runs/x/tiles/lc25000.zarr.")],
    patch: Annotated[int, typer.Option(help="Tile side; images are centre-cropped square and resized to it.")] = 224,
    mpp: Annotated[float | None, typer.Option(help="Microns per pixel of the images, when known.")] = None,
    lossless: Annotated[bool, typer.Option(help="Store losslessly (zstd) instead of JPEG 95.")] = False,
) -> None:
    """Put pre-cut tile images (a patch dataset such as LC25000) into one TileStore for pretraining and extraction."""
    from pathweak.config import StoreSpec
    from pathweak.tiling.images import images_to_store, list_images

    files = [f for p in inputs for f in (list_images(p) if p.is_dir() else [p])]
    store = images_to_store(files, out, patch, StoreSpec(compression="lossless" if lossless else "jpeg"), mpp)
    typer.echo(f"{len(store)} tiles in {store.path}")
