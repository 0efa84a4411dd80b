"""``run_cohort``: tile → (pretrain) → extract → train (cross-validation) → predict → heatmaps for a cohort
spec, each stage skipping valid, up-to-date outputs; per-slide state, locks and a summary."""

from __future__ import annotations

import json
import time
from typing import Any

from .._atomic import atomic_file, sweep_partials
from ..errors import ConfigError, PathweakError
from ..progress import log_line, progress_bar
from ..store.build import build_once
from ..store.result import failure_text, result_line
from .executors import make_executor
from .manifest import Slide
from .model_stages import predict_stage, train_stage
from .outcome import CohortReport, StageReport
from .spec import STAGES, CohortSpec, check_spec
from .stamps import read_stage_seconds, record_stage_seconds
from .state import StateStore
from .summary import write_summary
from .tasks import run_slide_stage


def run_cohort(
    spec: CohortSpec,
    *,
    retry_failed: bool = False,
    executor: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    stages: tuple[str, ...] | None = None,
    progress: bool = True,
) -> CohortReport:
    """Run the cohort's stages. A slide that failed in an earlier run is left alone unless
    ``retry_failed``; a slide that fails now is recorded and the others go on."""
    started = time.perf_counter()
    wanted = stages or STAGES
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}", fix=f"choose from {', '.join(STAGES)}")
    check_spec(spec, wanted)  # what would fail after hours of tiling fails now
    gpus = (
        extract_devices(spec, external=bool(scheduler or spec.executor.get("scheduler")))
        if "extract" in wanted
        else None
    )
    spec.out.mkdir(parents=True, exist_ok=True)
    for folder in (
        spec.out,
        spec.out / "tiles",
        spec.out / "state",
        spec.out / "state" / "stamps",
        spec.out / "models",
        *spec.out.glob("features/*"),
        *spec.out.glob("results/*"),
        *spec.out.glob("heatmaps/*"),
    ):
        sweep_partials(folder)
    state = StateStore(spec.out)
    kind = executor or spec.executor.get("kind", "local")
    pool = make_executor(
        kind, int(workers or spec.executor.get("workers", 2)), scheduler or spec.executor.get("scheduler")
    )
    reports: list[StageReport] = []
    try:
        active = _eligible(spec, state, retry_failed)
        # a failed cohort-level stage (pretrain, train, predict) stops the stages after it, so none of
        # them runs on an older encoder, model or predictions left from an earlier run
        for stage in _in_order(wanted, spec):
            log_line(f"{stage}: starting ({len(active)} slides)")
            if stage in ("tile", "extract"):
                on = pool.on_devices(gpus) if stage == "extract" and gpus else pool  # one process per GPU
                try:
                    reports.append(_per_slide(stage, active, spec, state, on, progress))
                finally:
                    if on is not pool:
                        on.close()  # its encoders leave the GPUs before training
                active = [s for s in active if s.slide_id not in reports[-1].failed]
            elif stage == "heatmaps":
                predicted = [s for s in active if _succeeded(state, s, "predict")]
                reports.append(_per_slide("heatmaps", predicted, spec, state, pool, progress))
            else:
                reports.append(_COHORT_STAGES[stage](spec, active, state, progress))
                if reports[-1].failed:
                    log_line(reports[-1].line())
                    record_stage_seconds(spec.out, stage, reports[-1].seconds, bool(reports[-1].done))
                    break
            log_line(reports[-1].line())
            record_stage_seconds(spec.out, stage, reports[-1].seconds, bool(reports[-1].done))
    finally:
        pool.close()
    if any(r.name == "train" and not r.failed for r in reports):
        reports.append(_report_stage(spec, started, [r.name for r in reports if r.skipped and not r.done]))
        log_line(reports[-1].line())
    report = CohortReport(spec, reports, time.perf_counter() - started)
    report.summary_md, report.summary_json = write_summary(report, kind)
    return report


def extract_devices(spec: CohortSpec, *, visible: int | None = None, external: bool = False) -> list[str] | None:
    """The GPUs the extract stage runs on, one process (and one encoder) each: ``extract: {devices: N|all}``
    GPUs, or the one ``extract: {device: ...}`` names (auto: the first); None when extraction runs on the
    CPU (the executor's workers share the cores), or on an external Dask cluster given no ``devices`` (each
    worker then uses the GPU it sees, e.g. dask-cuda's one GPU per worker). ``visible``: GPUs seen (tests)."""
    from ..devices import device_list

    n = spec.extract.get("devices")
    if n is None and external:
        return None
    devs = device_list(1 if n is None else n, str(spec.extract.get("device", "auto")), visible=visible)
    return devs if devs[0].startswith("cuda") else None


def _in_order(wanted: tuple[str, ...], spec: CohortSpec) -> list[str]:
    """The stages to run, in pipeline order (pretrain only when the spec has a ``pretrain:`` section)."""
    return [st for st in STAGES if st in wanted and (st != "pretrain" or spec.pretrain)]


def _succeeded(state: StateStore, slide: Slide, stage: str) -> bool:
    rec = state.load(slide.slide_id).stages.get(stage)
    return rec is not None and rec.status != "failed"


def _eligible(spec: CohortSpec, state: StateStore, retry_failed: bool) -> list[Slide]:
    if retry_failed:
        return list(spec.slides)
    return [s for s in spec.slides if state.load(s.slide_id).failed_stage() is None]


def _per_slide(
    stage: str, slides: list[Slide], spec: CohortSpec, state: StateStore, pool: Any, progress: bool
) -> StageReport:
    report = StageReport(stage)
    t0 = time.perf_counter()
    with progress_bar(len(slides), f"{stage}", progress, unit="slides", lines=False) as advance:
        for (_stage_name, slide, _spec), result, exc in pool.run(run_slide_stage, [(stage, s, spec) for s in slides]):
            if exc is not None:  # the worker itself died (killed, out of memory)
                result = {"status": "failed", "error": failure_text(f"{slide.slide_id}: worker failed", exc)}
            state.record(slide.slide_id, stage, result)
            log_line(result_line(stage, slide.slide_id, result))
            {"done": report.done, "skipped": report.skipped}.get(result["status"], []).append(slide.slide_id)
            report.warnings += result.get("warnings") or []
            if result["status"] == "failed":
                report.failed[slide.slide_id] = result.get("error") or "failed"
            else:
                report.outputs[slide.slide_id] = result.get("output")
            advance(1)
    report.seconds = time.perf_counter() - t0
    return report


def _pretrain(spec: CohortSpec, slides: list[Slide], state: StateStore, progress: bool) -> StageReport:
    """Pretrain this cohort's encoder on its tiles, unless an encoder trained on the same tiles and
    settings is already there (its encoder.json records both)."""
    from .._provenance import cache_key
    from ..ssl import pretrain
    from .spec import pretrain_config
    from .tasks import tile_store_path

    report = StageReport("pretrain")
    t0 = time.perf_counter()
    out = spec.out / "encoder"
    cfg = pretrain_config(spec)
    stores = [tile_store_path(spec, s) for s in slides]
    from dataclasses import asdict

    from ..store.open import read_attrs

    key = cache_key(cfg=asdict(cfg), stores=sorted((read_attrs(p) or {}).get("cache_key", "") for p in stores))
    meta_path = out / "encoder.json"

    def current() -> bool:
        try:
            return json.loads(meta_path.read_text()).get("cohort_key") == key
        except (OSError, ValueError):
            return False

    def build() -> bool:
        pretrain(stores, out, cfg, resume=True, progress=progress)
        meta = json.loads(meta_path.read_text())
        meta["cohort_key"] = key
        with atomic_file(meta_path) as fh:
            fh.write(json.dumps(meta, indent=2, default=str))
        return True

    try:
        # checked again under the lock: a second run that waited for the first one skips, instead of
        # pretraining again and replacing the encoder the first run's features were made with
        if build_once(out, current, build):
            report.done.append("encoder")
        else:
            report.skipped.append("encoder")
        report.outputs["encoder"] = f"pathweak:{out}"
    except PathweakError as exc:
        report.failed["encoder"] = str(exc)
    report.seconds = time.perf_counter() - t0
    return report


def _report_stage(spec: CohortSpec, started: float, skipped: list[str]) -> StageReport:
    """``<out>/report.html`` of the run (pathweak.report): metrics, curves, heatmaps and tile galleries;
    skipped when the model, the predictions and the stages' times are those it was written from. A
    failure is recorded, and the run's other outputs stand."""
    from .._provenance import cache_key, content_hash
    from .._version import __version__
    from ..report.build import RunSource, write_report
    from .model_stages import model_dir, predict_key, results_dir
    from .stamps import read_stamp, write_stamp

    report = StageReport("report")
    t0 = time.perf_counter()
    run = model_dir(spec)
    page = spec.out / "report.html"
    try:
        key = cache_key(
            run=content_hash(run / "run.json"),
            predict=predict_key(spec),
            times=read_stage_seconds(spec.out),
            v=__version__,
        )
        if read_stamp(spec.out, "report", key) is not None:
            report.skipped.append("report")
            report.outputs["report"] = str(page)
            return report
        results = results_dir(spec)
        src = RunSource(
            run,
            json.loads((run / "run.json").read_text()),
            spec.out,
            {
                "cohort": spec.name,
                "slides": len(spec.slides),
                "seconds": round(sum(read_stage_seconds(spec.out).values()), 1),  # what the results took
                "stage_seconds": read_stage_seconds(spec.out),
                "run_seconds": round(t0 - started, 1),  # this run's (a rerun that skipped everything: short)
                "skipped": skipped,  # stages this run found up to date
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            results if results.exists() else None,
        )
        report.outputs["report"] = str(write_report(src))
        write_stamp(spec.out, "report", key, [page, spec.out / "report_files"])
        report.done.append("report")
    except (PathweakError, OSError, ValueError, ImportError) as exc:
        report.failed["report"] = f"{type(exc).__name__}: {exc}"
    report.seconds = time.perf_counter() - t0
    return report


_COHORT_STAGES = {"pretrain": _pretrain, "train": train_stage, "predict": predict_stage}
