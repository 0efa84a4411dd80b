"""CLI commands of the export stage: heatmap, export, ground-truth (no model libraries imported)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pathweak.errors import PathweakError
from pathweak.heatmap.export import ExportOptions

from ._app import app, handle_errors
from ._conventions import Command, defaults, names, warn

_DEFAULTS = defaults(ExportOptions)

ScoresArg = Annotated[
    Path, typer.Argument(metavar="SCORES", help="A results store (.zarr) or a CSV with x, y and score columns.")
]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store", help="The TileStore of the tiles (required with a CSV; overrides the one a results store names)."
    ),
]
ScoreOpt = Annotated[
    list[str] | None, typer.Option("--score", help="Score to export (repeatable; default all; PNG/TIFF need one).")
]
RegionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--region",
        help="GeoJSON annotations for tiles with SCORE>=VALUE[:CLASS[:#RRGGBB]] (repeatable; also >, <=, <).",
    ),
]
DownsampleOpt = Annotated[
    float | None, typer.Option(help="Raster scale: level-0 pixels per heatmap pixel (default: the thumbnail's).")
]
LevelOpt = Annotated[int | None, typer.Option(help="Raster at this slide pyramid level instead of --downsample.")]
SmoothOpt = Annotated[float, typer.Option(help="Gaussian smoothing sigma in tiles (0: none).")]
MaskOpt = Annotated[
    bool, typer.Option("--mask-tissue/--no-mask-tissue", help="Blank heatmap pixels outside the tissue mask.")
]
CmapOpt = Annotated[str, typer.Option(help=f"Colormap: {names('colormaps')}.")]
VminOpt = Annotated[
    float | None,
    typer.Option(help="Score at the bottom of the colour scale (default 0, or the minimum when scores leave [0, 1])."),
]
VmaxOpt = Annotated[
    float | None, typer.Option(help="Score at the top of the colour scale (default 1, or the maximum).")
]
AlphaOpt = Annotated[float, typer.Option(help="Opacity of the heatmap over the thumbnail in the PNG (0-1).")]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar (on a terminal only).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the files written as JSON.")]


def _export_options(
    score: list[str] | None,
    region: list[str] | None,
    downsample: float | None,
    level: int | None,
    smooth: float,
    mask_tissue: bool,
    cmap: str,
    vmin: float | None,
    vmax: float | None,
    alpha: float,
) -> Any:
    from pathweak.heatmap import ExportOptions, Region

    return ExportOptions(
        scores=tuple(score or ()),
        regions=tuple(Region.parse(r, i) for i, r in enumerate(region or ())),
        downsample=downsample,
        level=level,
        smooth=smooth,
        mask_tissue=mask_tissue,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=alpha,
    )


@app.command(cls=Command)
@handle_errors
def export(
    scores: ScoresArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="The output file.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help=f"One of {names('formats')}: geojson (QuPath), tiff (pyramidal overlay), png (over the thumbnail) or csv; nifti for a volume's scores (.nii.gz over the source volume).",
        ),
    ] = "geojson",
    store: StoreOpt = None,
    score: ScoreOpt = None,
    region: RegionOpt = None,
    downsample: DownsampleOpt = None,
    level: LevelOpt = None,
    smooth: SmoothOpt = _DEFAULTS["smooth"],
    mask_tissue: MaskOpt = _DEFAULTS["mask_tissue"],
    cmap: CmapOpt = _DEFAULTS["cmap"],
    vmin: VminOpt = _DEFAULTS["vmin"],
    vmax: VmaxOpt = _DEFAULTS["vmax"],
    alpha: AlphaOpt = _DEFAULTS["alpha"],
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Export per-tile scores of one slide in one format: QuPath GeoJSON (tiles as detections with the
    scores as measurements, --region thresholds as classified annotations), a pyramidal TIFF overlay,
    a PNG over the thumbnail with a colour bar, or CSV. A volume's scores (from `pathweak predict` on
    volume features) are written as a NIfTI heatmap in the source volume's geometry (-f nifti)."""
    from pathweak.errors import ConfigError
    from pathweak.heatmap import export as export_scores
    from pathweak.heatmap import load_scores
    from pathweak.volumes.export import is_volume_results, results_to_nifti

    if fmt == "nifti" or is_volume_results(scores):
        if fmt != "nifti":
            raise ConfigError(
                f"a volume's scores are written as a NIfTI heatmap, not {fmt}",
                path=scores,
                fix="use --format nifti -o heatmap.nii.gz",
            )
        if score and len(score) > 1:
            raise ConfigError("a NIfTI heatmap shows one score", fix="pass one --score")
        _print_files([results_to_nifti(scores, out, score[0] if score else None, store)], as_json)
        return
    options = _export_options(score, region, downsample, level, smooth, mask_tissue, cmap, vmin, vmax, alpha)
    ts = load_scores(scores, store)
    _print_files([export_scores(ts, fmt, out, options, progress=progress)], as_json)


def _print_files(files: list[Path], as_json: bool) -> None:
    """The files a command wrote: one path a line, or ``{"files": [...]}`` with --json."""
    if as_json:
        import json

        typer.echo(json.dumps({"files": [str(f) for f in files]}, indent=2))
    else:
        for f in files:
            typer.echo(str(f))


@app.command(cls=Command)
@handle_errors
def heatmap(
    inputs: Annotated[
        list[Path], typer.Argument(metavar="INPUTS", help="Results stores (.zarr) or score CSVs, one per slide.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    fmt: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            "-f",
            help=f"A format to write, one of {names('formats')} (repeatable; default geojson, png and tiff; volumes: nifti, the default).",
        ),
    ] = None,
    store: StoreOpt = None,
    score: ScoreOpt = None,
    region: RegionOpt = None,
    downsample: DownsampleOpt = None,
    level: LevelOpt = None,
    smooth: SmoothOpt = _DEFAULTS["smooth"],
    mask_tissue: MaskOpt = _DEFAULTS["mask_tissue"],
    cmap: CmapOpt = _DEFAULTS["cmap"],
    vmin: VminOpt = _DEFAULTS["vmin"],
    vmax: VmaxOpt = _DEFAULTS["vmax"],
    alpha: AlphaOpt = _DEFAULTS["alpha"],
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Write the heatmaps of each slide into OUT: <slide_id>.geojson (all scores, for QuPath's
    Measurement Maps), and <slide_id>.<score>.png and .tiff for each score. A bad input is reported and
    the others go on (exit status 1)."""
    import time

    from pathweak.errors import ConfigError
    from pathweak.heatmap import write_heatmaps
    from pathweak.progress import log_line

    options = _export_options(score, region, downsample, level, smooth, mask_tissue, cmap, vmin, vmax, alpha)
    if store is not None and len(inputs) > 1:
        raise ConfigError(
            "--store names one TileStore, so it goes with one input", fix="run one slide at a time with --store"
        )
    from .slides import report_failures

    failures: list[tuple[str, int]] = []
    written: list[Path] = []
    for source in inputs:
        started = time.perf_counter()
        try:
            files = list(write_heatmaps(source, out, fmt or None, options, store=store, progress=progress))
        except PathweakError as exc:
            if len(inputs) == 1:
                raise
            log_line(f"heatmap {source}: failed: {exc}")
            failures.append((str(exc), exc.exit_code))
            continue
        log_line(f"heatmap {source}: {len(files)} files, {time.perf_counter() - started:.1f} s")
        written += files
        if not as_json:
            _print_files(files, False)
    if as_json:
        _print_files(written, True)
    report_failures(failures, len(inputs), "inputs")


@app.command("ground-truth", cls=Command)
@handle_errors
def ground_truth(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="The TileStore of the slide.")],
    annotations: Annotated[
        Path, typer.Argument(metavar="ANNOTATIONS", help="QuPath GeoJSON with the annotations (level-0 pixels).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output CSV: x, y and one overlap-fraction column per class.")
    ],
    classes: Annotated[
        list[str] | None,
        typer.Option(
            "--class",
            help="Annotation class to measure (repeatable; default: all annotations as one column 'annotation').",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per-tile ground truth from QuPath annotations: the fraction of each tile inside the annotations
    of each class, as a score CSV (which `pathweak export` can render)."""
    from pathweak.heatmap import annotation_fractions, tile_scores, write_scores_csv
    from pathweak.heatmap.source import open_tile_store

    ts = tile_scores(open_tile_store(store), {})
    columns = (
        {name: annotation_fractions(ts, annotations, [name]) for name in classes}
        if classes
        else {"annotation": annotation_fractions(ts, annotations)}
    )
    for name, values in columns.items():  # annotations on the slide, but on none of its tiles
        if not (values > 0).any():
            warn(f"{annotations}: no tile of {store} overlaps the annotations ({name}): the column is all 0")
    _print_files([write_scores_csv(out, ts.coords, columns)], as_json)


@app.command("export-tissue", cls=Command)
@handle_errors
def export_tissue(
    stores: Annotated[
        list[Path], typer.Argument(metavar="STORES", help="TileStores (<slide>.zarr) or tiles/ folders.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: <slide_id>.tissue.geojson per store.")],
    as_json: JsonOpt = False,
) -> None:
    """The tissue mask of each TileStore (Otsu, an ROI, or a tissue model: HEST, GrandQC) as QuPath
    annotations classified Tissue, plus the regions an artefact model removed, classified by artefact."""
    from pathweak.heatmap.tissue_export import tissue_geojson
    from pathweak.store.tiles import TileStore, find_tile_stores

    written = []
    for path in find_tile_stores(list(stores)):
        with TileStore.open(path) as ts:
            slide_id = ts.slide_id
        written.append(tissue_geojson(path, out / f"{slide_id}.tissue.geojson"))
    _print_files(written, as_json)
