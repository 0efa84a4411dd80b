"""The one task function every executor runs: one stage of one slide, under that output's lock.

A task returns a plain dict (``status`` done | skipped | failed, ``output``, ``seconds``, ``error``) so
it crosses process and network boundaries unchanged; bad input is a failed result, never an exception.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import MissingMppError, PathweakError
from ..store.build import build_once
from ..store.locks import output_lock
from ..store.result import failure_text
from .manifest import Slide
from .spec import CohortSpec


def run_slide_stage(stage: str, slide: Slide, spec: CohortSpec) -> dict[str, Any]:
    """Run ``stage`` ("tile", "extract" or "heatmaps") for ``slide``; never raises for bad input."""
    started = time.perf_counter()
    try:
        result = _STAGES[stage](slide, spec)
    except PathweakError as exc:
        result = {"status": "failed", "error": str(exc)}
    except Exception as exc:  # reported per slide; the cohort goes on
        result = {"status": "failed", "error": failure_text(slide.path, exc)}
    result["seconds"] = time.perf_counter() - started
    return result


def tile_store_path(spec: CohortSpec, slide: Slide) -> Path:
    return spec.out / "tiles" / f"{slide.slide_id}.zarr"


def _tile(slide: Slide, spec: CohortSpec) -> dict[str, Any]:
    from ..tiling import tile_slides

    if not slide.path.exists():
        return {"status": "failed", "error": f"{slide.path}: file not found. Check the manifest's path column."}
    options = spec.tile_options  # this slide's manifest row gives its own resolution and ROI
    mpp = options.mpp if slide.mpp is None else slide.mpp
    options = replace(options, mpp=mpp, roi=None if slide.roi is None else str(slide.roi), workers=1)
    with output_lock(tile_store_path(spec, slide)):
        (r,) = tile_slides(
            [slide.path],
            spec.out,
            spec.tile,
            spec.tissue,
            spec.store,
            options,
            progress=False,
            slide_ids=[slide.slide_id],
            volume=spec.volume,
        )
    status = {"tiled": "done", "skipped": "skipped"}.get(r.status, "failed")
    error = r.error
    if isinstance(r.exception, MissingMppError):  # the same problem, with a cohort's fix instead of the CLI's --mpp
        error = str(
            MissingMppError(
                r.exception.problem,
                path=r.exception.path,
                fix="give it in the manifest's 'mpp' column (e.g. 0.25 for 40x, 0.5 for 20x), or set "
                "'tile_options: {mpp: estimate}' in the cohort spec to estimate it from the nuclei",
            )
        )
    return {
        "status": status,
        "output": r.store,
        "error": error,
        "n_tiles": r.n_tiles,
        "warnings": [r.warning] if r.warning else [],
    }


def _extract(slide: Slide, spec: CohortSpec) -> dict[str, Any]:
    import torch

    from .. import devices
    from ..encoders.cache import cached_encoder
    from ..features import extract_features
    from ..store.features import feature_store_path

    device = devices.take_worker_device(spec.extract.get("device", "auto"))  # a pinned GPU becomes current
    threads = torch.get_num_threads()
    if "threads" in spec.extract:
        torch.set_num_threads(max(1, int(spec.extract["threads"])))
    try:
        encoder = cached_encoder(spec.encoder_name, spec.weights)
        with output_lock(feature_store_path(spec.out, encoder.encoder_id, slide.slide_id)):
            (r,) = extract_features(
                [tile_store_path(spec, slide)],
                encoder,
                spec.out,
                batch_size=spec.extract.get("batch_size"),
                device=device,
                num_workers=int(spec.extract.get("workers", 0)),
                progress=False,
                decode=str(spec.extract.get("decode", "auto")),
                rotations=int(spec.extract.get("rotations", 1)),
            )
    finally:
        torch.set_num_threads(threads)
    status = {"extracted": "done", "skipped": "skipped"}.get(r.status, "failed")
    return {"status": status, "output": r.store, "error": r.error, "n_tiles": r.n_tiles, "warnings": r.warnings}


def _heatmaps(slide: Slide, spec: CohortSpec) -> dict[str, Any]:
    """Heatmap PNGs and QuPath GeoJSON (the spec's formats) of one slide's predictions, into
    ``<out>/heatmaps/<slide_id>/``; skipped when made from the same predictions and settings."""
    from .._provenance import cache_key
    from ..heatmap.export import write_heatmaps
    from .model_stages import predict_key, results_dir
    from .spec import heatmap_settings
    from .stamps import read_stamp, write_stamp

    results = results_dir(spec) / f"{slide.slide_id}.zarr"
    if not results.exists():
        return {"status": "failed", "error": f"{results}: no predictions for this slide. Run the predict stage first."}
    formats, options = heatmap_settings(spec)
    key = cache_key(predictions=predict_key(spec), formats=formats, options=_settings(options))
    out = spec.out / "heatmaps" / slide.slide_id
    name = f"heatmaps/{slide.slide_id}"

    def build() -> list[Path]:
        files = write_heatmaps(results, out, formats, options)
        write_stamp(spec.out, name, key, files)
        return files

    files = build_once(out, lambda: read_stamp(spec.out, name, key) is not None, build)
    if files is None:
        return {"status": "skipped", "output": str(out)}
    return {"status": "done", "output": str(out), "files": [str(f) for f in files]}


def _settings(options: Any) -> Any:
    """Settings as plain data for a cache key (a dataclass's fields, never its repr)."""
    from dataclasses import asdict, is_dataclass

    return asdict(options) if is_dataclass(options) and not isinstance(options, type) else options


_STAGES = {"tile": _tile, "extract": _extract, "heatmaps": _heatmaps}
