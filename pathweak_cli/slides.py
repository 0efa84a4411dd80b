"""CLI commands of the slide stages: info, tile, sample-data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pathweak.config import StoreSpec, TileOptions, TileSpec, TissueSpec, VolumeSpec

from ._app import _err, app, handle_errors
from ._conventions import Command, default, deprecated, explicit, joined, merged, names, paths


@app.command(cls=Command)
@handle_errors
def info(
    slide: Annotated[
        Path,
        typer.Argument(
            metavar="SLIDE",
            help="A slide file (or a DICOM-WSI folder), or a 3D volume (NIfTI, NRRD, MetaImage, DICOM file or series folder).",
        ),
    ],
    backend: Annotated[
        str, typer.Option(help=f"Reader: {names('backends')} (auto: OpenSlide where it can read the file).")
    ] = "auto",
    mpp: Annotated[float | None, typer.Option(help="Override the level-0 microns per pixel.")] = None,
    estimate_mpp: Annotated[
        bool,
        typer.Option(
            "--estimate-mpp",
            help="Also estimate the resolution from the nuclei in the image (H&E; about a second, reading a few dozen level-0 regions) and check the recorded one against it (disagreement beyond 1.6x is flagged).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a slide's metadata (size, pyramid levels, resolution and where it came from, vendor), or a
    volume's (shape, spacing, orientation, timepoints)."""
    from .volume_options import volume_info

    meta = volume_info(slide)
    if meta is None:
        from pathweak.io import open_slide

        with open_slide(slide, backend=backend, mpp=mpp) as s:
            meta = s.info()
            if estimate_mpp:
                from pathweak.resolution.check import check_mpp

                check = check_mpp(s)
                meta["mpp_estimate"] = check.estimate.as_dict()
                meta["mpp_check"] = check.as_dict() | {"estimate": None, "message": check.message() or None}
    if as_json:
        typer.echo(json.dumps(meta, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(slide), show_header=False)
    for key, value in meta.items():
        if key == "level_dimensions":
            value = ", ".join(f"{w}x{h}" for w, h in value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        if key == "mpp_estimate":
            value = _describe_estimate(value)
        elif key == "mpp_check":
            value = value["message"] and f"DISAGREES: {value['message']}" or value["status"]
        table.add_row(key, "unknown (pass --mpp)" if key == "mpp" and value is None else str(value))
    Console().print(table)


def _describe_estimate(e: dict[str, Any]) -> str:
    if e["mpp"] is None:
        return f"cannot tell ({e['reason']})"
    return f"{e['mpp']:.3g} um/px (range {e['low']:.3g}-{e['high']:.3g}, {e['n_nuclei']} nuclei, {e['seconds']:.2f} s)"


@app.command(cls=Command)
@handle_errors
def tile(
    ctx: typer.Context,
    inputs: Annotated[
        list[str], typer.Argument(metavar="INPUTS", help="Slide files, folders of slides, or glob patterns.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; stores go to OUT/tiles/<slide_id>.zarr.")],
    target_mpp: Annotated[float, typer.Option(help="Microns per pixel of the stored patches.")] = default(
        TileSpec, "target_mpp"
    ),
    patch: Annotated[
        int, typer.Option(help="Patch side in pixels (volumes: 64 in 3d mode, 224 in slices mode, unless given).")
    ] = default(TileSpec, "patch_px"),
    overlap: Annotated[int, typer.Option(help="Overlap between neighbouring patches, in pixels.")] = default(
        TileSpec, "overlap_px"
    ),
    min_tissue: Annotated[float, typer.Option(help="Minimum tissue fraction of a kept patch (0-1).")] = default(
        TileSpec, "min_tissue"
    ),
    backend: Annotated[
        str, typer.Option(help=f"Reader: {names('backends')} (auto: OpenSlide where it can read the file).")
    ] = default(TileOptions, "backend"),
    mpp: Annotated[
        str | None,
        typer.Option(
            help="Override the slide's level-0 microns per pixel: a number, or 'estimate' to use the resolution estimated from the nuclei in the image (H&E only; the store records the source 'estimated' and the range)."
        ),
    ] = default(TileOptions, "mpp"),
    check_mpp: Annotated[
        bool,
        typer.Option(
            "--check-mpp",
            help="Estimate each slide's resolution from its nuclei and warn where the recorded one disagrees by more than 1.6x.",
        ),
    ] = False,
    strict_mpp: Annotated[
        bool, typer.Option("--strict-mpp", help="Like --check-mpp, but refuse such slides (exit 2, nothing written).")
    ] = False,
    workers: Annotated[
        int, typer.Option(help="Worker processes (over slides, over shards of large slides, and one volume each).")
    ] = default(TileOptions, "workers"),
    encode_threads: Annotated[
        int | None,
        typer.Option(
            help="Threads per worker encoding tiles while the next region is decoded (0: inline; default: 2 when the cores allow, fewer when workers fill them)."
        ),
    ] = default(TileOptions, "encode_threads"),
    jpeg_quality: Annotated[int, typer.Option(help="JPEG quality of stored tiles (4:4:4).")] = default(
        StoreSpec, "jpeg_quality"
    ),
    lossless: Annotated[bool, typer.Option(help="Store tiles losslessly (zstd) instead of JPEG.")] = (
        default(StoreSpec, "compression") == "lossless"
    ),
    tissue_method: Annotated[
        str,
        typer.Option(
            "--tissue-method",
            "--tissue",
            help=f"Tissue detector: {names('tissue_methods')} (hest, grandqc: models, docs/tissue.md).",
        ),
    ] = default(TissueSpec, "method"),
    tissue_weights: Annotated[
        Path | None,
        typer.Option(help="A tissue model's weights: the file or a hub snapshot folder (default: the local HF cache)."),
    ] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(
            help=f"Remove artefacts (folds, pen, bubbles, out of focus...) found by a model: {names('artifact_methods')}."
        ),
    ] = None,
    artifact_weights: Annotated[
        Path | None, typer.Option(help="The artefact model's weights: the file or a hub snapshot folder.")
    ] = None,
    roi: Annotated[Path | None, typer.Option(help="QuPath GeoJSON whose annotations replace tissue detection.")] = None,
    roi_class: Annotated[
        list[str] | None, typer.Option(help="Keep only ROI annotations of this class (repeatable).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML with tile:, tissue:, store: sections (options given here win).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-tile even when an up-to-date store exists.")] = default(
        TileOptions, "force"
    ),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    mode: Annotated[
        str, typer.Option(help="Volumes: 3d (voxel patches) or slices (2D RGB patches of slices).")
    ] = default(VolumeSpec, "mode"),
    spacing: Annotated[
        str, typer.Option(help="Volumes: voxel size of the patches in mm, one value or z,y,x, or 'native'.")
    ] = joined(default(VolumeSpec, "spacing_mm")),
    patch_depth: Annotated[
        int | None, typer.Option(help="Volumes, 3d: patch depth in voxels (default: --patch).")
    ] = None,
    plane: Annotated[
        list[str] | None,
        typer.Option(
            "--plane",
            help=f"Volumes, slices: a plane to cut, one of {names('planes')} (repeatable; default: "
            f"{', '.join(default(VolumeSpec, 'planes'))}).",
        ),
    ] = None,
    planes_old: Annotated[list[str] | None, deprecated("--planes", "--plane")] = None,
    slice_step: Annotated[int, typer.Option(help="Volumes, slices: use every N-th slice.")] = default(
        VolumeSpec, "slice_step"
    ),
    normalize: Annotated[
        str, typer.Option(help="Volumes: intensity to uint8 by percentile, window or zscore.")
    ] = default(VolumeSpec, "normalize"),
    window: Annotated[
        str | None, typer.Option(help="Volumes: intensity window LO,HI for --normalize window (e.g. -1000,1000 HU).")
    ] = None,
    percentiles: Annotated[
        str, typer.Option(help="Volumes: foreground percentiles LO,HI for --normalize percentile.")
    ] = joined(default(VolumeSpec, "percentiles")),
    foreground: Annotated[str, typer.Option(help=f"Volumes: foreground detector: {names('foreground')}.")] = default(
        VolumeSpec, "foreground"
    ),
    label: Annotated[
        Path | None,
        typer.Option(help="Volumes: a label map on the volume's grid; per-patch label fractions are stored."),
    ] = None,
    timepoint: Annotated[
        int | None, typer.Option(help="Volumes: the timepoint of a 4D series to tile (0-based).")
    ] = None,
) -> None:
    """Find tissue and write patches at a target resolution into Zarr TileStores.

    3D volumes among the inputs (NIfTI, NRRD, MetaImage, DICOM CT/MR) are reoriented to RAS, resampled
    to --spacing and cut into 3D patches (--patch voxels, default 64) or 2D slice patches (--mode slices,
    default 224); --min-tissue is then the minimum foreground fraction. Re-running skips slides whose
    store is up to date; a changed slide or spec is re-tiled. A folder run goes on past a bad slide and
    lists the failures at the end (exit status 1).
    """
    from pathweak.config import from_dict, load_yaml, merge_options
    from pathweak.tiling import expand_slide_paths, tile_slides

    from .volume_options import volume_spec_from_options

    given = explicit(ctx)
    planes = merged(plane, planes_old, "--planes", "--plane")
    if planes:
        given.add("planes")
    sections = load_yaml(config) if config else {}

    def section(name: str, options: dict[str, tuple[str, Any]]) -> dict[str, Any]:
        """A spec's fields by merge_options: ``options`` maps option name -> (field, value)."""
        values = {key: value for key, value in options.values()}
        on_line = {key: value for name, (key, value) in options.items() if name in given}
        return merge_options(dict(sections.get(name, {})), on_line, values)

    tile_cfg = section("tile", {"target_mpp": ("target_mpp", target_mpp), "patch": ("patch_px", patch),
                                "overlap": ("overlap_px", overlap), "min_tissue": ("min_tissue", min_tissue)})  # fmt: skip
    if strict_mpp or check_mpp:
        tile_cfg["mpp_check"] = "strict" if strict_mpp else "warn"
    tissue_cfg = section("tissue", {"tissue_method": ("method", tissue_method)})
    models = {"weights": tissue_weights, "artifacts": artifacts, "artifact_weights": artifact_weights}
    if any(v is not None for v in models.values()):  # model settings travel in TissueSpec.params
        tissue_cfg["params"] = {**tissue_cfg.get("params", {}), **{k: str(v) for k, v in models.items() if v}}
    store_cfg = section("store", {"lossless": ("compression", "lossless" if lossless else "jpeg"),
                                  "jpeg_quality": ("jpeg_quality", jpeg_quality)})  # fmt: skip

    volume_spec = volume_spec_from_options(
        sections.get("volume", {}),
        given,
        config,
        mode=mode,
        spacing=spacing,
        patch=patch,
        patch_depth=patch_depth,
        overlap=overlap,
        min_tissue=min_tissue,
        planes=",".join(planes) or ",".join(default(VolumeSpec, "planes")),
        slice_step=slice_step,
        normalize=normalize,
        window=window,
        percentiles=percentiles,
        foreground=foreground,
    )
    slides = expand_slide_paths(paths(inputs))
    results = tile_slides(
        paths(slides),
        out,
        from_dict(TileSpec, tile_cfg, config),
        from_dict(TissueSpec, tissue_cfg, config),
        from_dict(StoreSpec, store_cfg, config),
        TileOptions(
            backend=backend,
            mpp=_mpp_option(mpp),
            roi=None if roi is None else str(roi),
            roi_classes=tuple(roi_class) if roi_class else None,
            workers=workers,
            encode_threads=encode_threads,
            force=force,
        ),
        progress=progress,
        volume=volume_spec,
        label=label,
        timepoint=timepoint,
    )
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in vars(r).items() if k != "exception"} for r in results], indent=2))
    elif len(failed) < len(results):
        _print_results(results)
    for r in results:
        if r.warning:
            typer.echo(f"warning: {r.warning}", err=True)
    report_failures(
        [(r.error or "failed", getattr(r.exception, "exit_code", 1)) for r in failed], len(results), "slides"
    )


def report_failures(failures: list[tuple[str, int]], n_inputs: int, what: str) -> None:
    """Each failure once on stderr, then exit: 2 when every input failed on bad input (as one input's
    error does), else 1 when any failed. Nothing when none failed."""
    if not failures:
        return
    if len(failures) == 1 and n_inputs == 1:
        _err(failures[0][0])
    else:
        _err(f"{len(failures)} of {n_inputs} {what} failed:")
        for message, _code in failures:
            typer.echo(f"  {message}", err=True)
    every_bad_input = len(failures) == n_inputs and all(code == 2 for _m, code in failures)
    raise typer.Exit(2 if every_bad_input else 1)


def _mpp_option(value: str | None) -> float | str | None:
    """``--mpp``: a positive number of microns per pixel, or ``estimate``."""
    from pathweak.config import parse_mpp

    try:
        mpp = parse_mpp(value)
        if mpp is None and value is not None:  # --mpp "" (an empty variable in a script) is not "the slide's own"
            raise ValueError("empty")
        return mpp
    except ValueError:
        from pathweak.errors import ConfigError

        raise ConfigError(
            f"--mpp must be a positive number of microns per pixel or 'estimate', got {value!r}",
            fix="pass e.g. --mpp 0.25 (40x), --mpp 0.5 (20x) or --mpp estimate",
        ) from None


def _print_results(results: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("slide", "status", "tiles", "seconds", "store")
    for r in results:  # a failure's message is printed once, on stderr, after the table
        table.add_row(r.slide_id, r.status, str(r.n_tiles), f"{r.seconds:.1f}", r.store or "-")
    Console().print(table)


SAMPLE_COHORT = Path("sample_data/cohort")


@app.command("sample-data", cls=Command)
@handle_errors
def sample_data(
    out_old: Annotated[
        Path | None, typer.Argument(hidden=True, help="Deprecated: the folder as an argument (use -o/--out).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the generated cohort.")] = SAMPLE_COHORT,
    n_slides: Annotated[int, typer.Option(help="Number of slides (every other one has tumour).")] = 16,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same slides.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Regenerate slides that already exist.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the slides written as JSON.")] = False,
) -> None:
    """Generate the small synthetic H&E-like cohort (pyramidal JPEG TIFFs, labels.csv, tumour GeoJSON)."""
    from pathweak.synthetic import make_sample_cohort

    from ._conventions import warn

    if out_old is not None:
        warn("the folder as an argument is deprecated and will be removed in the next release; use -o/--out")
        out = out_old
    slides = make_sample_cohort(out, n_slides=n_slides, seed=seed, overwrite=overwrite)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "out": str(out),
                    "labels": str(out / "labels.csv"),
                    "slides": [
                        {"slide_id": x.slide_id, "patient_id": x.patient_id, "label": x.label, "path": str(x.path)}
                        for x in slides
                    ],
                },
                indent=2,
            )
        )
        return
    typer.echo(f"{len(slides)} slides, labels and tumour outlines in {out}")
