"""One entry point for every export format, used by the CLI and the Python API alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._atomic import sweep_partials
from ..errors import ConfigError
from .regions import Region
from .source import TileScores
from .stitch import Heatmap, stitch

FORMATS = ("geojson", "tiff", "png", "csv")
SUFFIX = {"geojson": ".geojson", "tiff": ".tiff", "png": ".png", "csv": ".csv"}


@dataclass(frozen=True)
class ExportOptions:
    """How to render and what to include. ``scores`` picks scores (default all; a raster format needs
    exactly one); ``regions`` adds thresholded annotations to GeoJSON; ``downsample`` / ``level`` choose
    the raster scale (default: the thumbnail's); ``smooth`` is a Gaussian sigma in tiles."""

    scores: tuple[str, ...] = ()
    regions: tuple[Region, ...] = ()
    downsample: float | None = None
    level: int | None = None
    smooth: float = 0.0
    mask_tissue: bool = True
    cmap: str = "viridis"
    vmin: float | None = None
    vmax: float | None = None
    alpha: float = 0.5
    seed: int | None = None


def export(
    ts: TileScores, fmt: str, path: str | Path, options: ExportOptions | None = None, progress: bool = False
) -> Path:
    """Write ``ts`` as ``fmt`` (geojson, tiff, png or csv) to ``path``; the file appears atomically."""
    options = options or ExportOptions()
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    for region in options.regions:
        ts.pick([region.score], option="--region")
    if fmt == "geojson":
        from .geojson import write_geojson

        return write_geojson(
            ts, path, list(options.scores), list(options.regions), seed=options.seed, progress=progress
        )
    if fmt == "csv":
        from ..store.results import write_scores_csv

        return write_scores_csv(path, ts.coords, ts.pick(list(options.scores)))
    heatmap = raster(ts, options)
    if fmt == "tiff":
        from .tiff import write_tiff

        return write_tiff(heatmap, path, cmap=options.cmap, vmin=options.vmin, vmax=options.vmax)
    from .png import write_png

    return write_png(
        heatmap, ts.store.thumbnail, path, cmap=options.cmap, vmin=options.vmin, vmax=options.vmax, alpha=options.alpha
    )


def raster(ts: TileScores, options: ExportOptions) -> Heatmap:
    """The heatmap of the one score a raster format shows."""
    names = list(options.scores) or list(ts.scores)
    if len(names) != 1:
        raise ConfigError(
            f"a raster shows one score and there are {len(names)} ({', '.join(names)})",
            path=ts.store.path,
            fix="pick one with --score",
        )
    return stitch(
        ts,
        names[0],
        downsample=options.downsample,
        level=options.level,
        smooth=options.smooth,
        mask_tissue=options.mask_tissue,
    )


def write_heatmaps(
    source: str | Path,
    out_dir: str | Path,
    formats: list[str] | None = None,
    options: ExportOptions | None = None,
    *,
    store: str | Path | None = None,
    progress: bool = False,
) -> list[Path]:
    """All exports of one slide's scores into ``out_dir``: ``<slide_id>.geojson`` and ``.csv`` with every
    chosen score, ``<slide_id>.<score>.png`` and ``.tiff`` per score (default formats: geojson, png,
    tiff). A volume's results give ``<slide_id>.<score>.nii.gz`` per score (format ``nifti``, the only
    one for volumes). If one fails, the files this call wrote are removed again."""
    from dataclasses import replace

    from ..volumes.export import is_volume_results
    from .source import load_scores

    options = options or ExportOptions()
    if is_volume_results(source):
        return _volume_heatmaps(source, out_dir, formats, options, store)
    formats = list(formats or ("geojson", "png", "tiff"))
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown export format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    ts = load_scores(source, store)
    names = list(ts.pick(list(options.scores)))
    out_dir = Path(out_dir)
    sweep_partials(out_dir, prefix=f".{ts.slide_id}.")  # a killed run's leftovers of this slide's files
    written: list[Path] = []
    try:
        for fmt in formats:
            if fmt in ("geojson", "csv"):
                written.append(export(ts, fmt, out_dir / f"{ts.slide_id}{SUFFIX[fmt]}", options, progress))
                continue
            for name in names:
                one = replace(options, scores=(name,))
                written.append(export(ts, fmt, out_dir / f"{ts.slide_id}.{name}{SUFFIX[fmt]}", one, progress))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _volume_heatmaps(
    source: str | Path, out_dir: str | Path, formats: list[str] | None, options: ExportOptions, store: str | Path | None
) -> list[Path]:
    """``<slide_id>.<score>.nii.gz`` for each chosen score of a volume's results store."""
    from ..volumes.export import pick_score, scores_to_nifti, volume_results

    if formats and list(formats) != ["nifti"]:
        raise ConfigError(
            f"a volume's scores are written as NIfTI heatmaps, not {', '.join(formats)}",
            path=source,
            fix="use --format nifti (or no --format)",
        )
    volume, scores, volume_id = volume_results(source, store)
    names = list(options.scores) or list(scores)
    written: list[Path] = []
    try:
        for name in names:
            out = Path(out_dir) / f"{volume_id}.{name}.nii.gz"
            written.append(scores_to_nifti(volume, pick_score(scores, name, source), out))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
