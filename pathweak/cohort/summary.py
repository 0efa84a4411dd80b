"""summary.json and summary.md of a cohort run: what ran, what was skipped, what failed and why, timings,
and where every output is."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._atomic import atomic_file


def write_summary(report: Any, executor: str) -> tuple[Path, Path]:
    spec = report.spec
    data = {
        "cohort": spec.name,
        "spec": str(spec.source) if spec.source else None,
        "out": str(spec.out),
        "executor": executor,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(report.seconds, 1),
        "slides": len(spec.slides),
        "stages": [
            {**asdict(st), "seconds": round(st.seconds, 1), "outputs": {k: v for k, v in st.outputs.items() if v}}
            for st in report.stages
        ],
        "failed_slides": report.failed_slides,
        "warnings": report.warnings,
        "mpp_disagreements": mpp_disagreements(spec.out / "tiles", [sl.slide_id for sl in spec.slides]),
        "where": _where(spec, report),
    }
    json_path = spec.out / "summary.json"
    md_path = spec.out / "summary.md"
    _atomic_write(json_path, json.dumps(data, indent=2, default=str))
    _atomic_write(md_path, _markdown(data))
    return md_path, json_path


def mpp_disagreements(tiles_dir: Path, slide_ids: list[str]) -> dict[str, str]:
    """Slides whose tile store records a resolution that disagrees with the estimate from its pixels
    (tiled with ``tile: {mpp_check: warn}``; see docs/resolution.md), with the recorded and estimated mpp."""
    from ..store.open import read_attrs

    out = {}
    for sid in slide_ids:
        mpp = (read_attrs(tiles_dir / f"{sid}.zarr") or {}).get("mpp") or {}
        check = mpp.get("check") or {}
        if check.get("status") == "disagrees":
            est = check.get("estimate") or mpp.get("estimate") or {}
            out[sid] = (
                f"recorded {check['recorded']:.4g} um/px, estimated {est.get('mpp', float('nan')):.3g} "
                f"({est.get('low', float('nan')):.3g}-{est.get('high', float('nan')):.3g}), "
                f"ratio {check['ratio']:.2f}"
            )
    return out


def _where(spec: Any, report: Any) -> dict[str, str]:
    where = {"tiles": str(spec.out / "tiles"), "state": str(spec.out / "state")}
    for st in report.stages:
        if st.name == "pretrain" and st.outputs.get("encoder"):
            where["encoder"] = st.outputs["encoder"]
        if st.name == "extract":
            where["features"] = str(spec.out / "features")
        if st.name == "heatmaps" and (st.done or st.skipped):
            where["heatmaps"] = str(spec.out / "heatmaps")
        if st.name == "train":
            where["labels"] = str(spec.out / "labels.csv")
        for key in ("model", "metrics", "cv_predictions", "results", "predictions", "report"):
            if st.outputs.get(key) and isinstance(st.outputs[key], str):
                where[key] = st.outputs[key]
    return where


def _markdown(d: dict[str, Any]) -> str:
    lines = [
        f"# Cohort run: {d['cohort']}",
        "",
        f"{d['slides']} slides, {d['seconds']} s, executor {d['executor']}, finished {d['finished']}.",
        "",
    ]
    if d["where"].get("report"):
        lines += [f"Report (open in a browser): `{d['where']['report']}`", ""]
    lines += ["| stage | done | skipped | failed | seconds |", "|---|---|---|---|---|"]
    for st in d["stages"]:
        lines.append(
            f"| {st['name']} | {len(st['done'])} | {len(st['skipped'])} | {len(st['failed'])} | {st['seconds']} |"
        )
    if d["failed_slides"]:
        lines += ["", "## Failed", ""]
        lines += [f"- **{sid}**: {why}" for sid, why in d["failed_slides"].items()]
    if d.get("warnings"):
        lines += ["", "## Warnings", ""]
        lines += [f"- {w}" for w in d["warnings"]]
    if d.get("mpp_disagreements"):
        lines += ["", "## Resolution disagreements (metadata vs. the estimate from the nuclei)", ""]
        lines += [f"- **{sid}**: {why}" for sid, why in d["mpp_disagreements"].items()]
    lines += ["", "## Where everything is", ""]
    lines += [f"- {k}: `{v}`" for k, v in d["where"].items()]
    extra = [st for st in d["stages"] if st["name"] in ("train",) and st.get("outputs", {}).get("metrics_text")]
    for st in extra:
        lines += ["", "## Cross-validation", "", st["outputs"]["metrics_text"]]
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)
