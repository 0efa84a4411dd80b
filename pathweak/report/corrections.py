"""The report's "Corrections" section (docs/review.md): which instance labels a model trained on, and the
weak-only and corrected models side by side when both runs exist. They pair by name: a run ``X`` and a run
``X-corrected`` in the same folder (the cohort runner's ``models/<head>`` and ``models/<head>-corrected``)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

SUFFIX = "-corrected"


def partner_run(run_dir: Path, summary: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """The other run of the pair (weak-only for a corrected run, corrected for a weak-only one), if present."""
    name = run_dir.name
    other = run_dir.with_name(name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name + SUFFIX)
    if "instance_labels" in summary and not name.endswith(SUFFIX):
        return None  # a corrected run under its own name: no convention says which run is its weak-only one
    try:
        return other, json.loads((other / "run.json").read_text())
    except (OSError, ValueError):
        return None


def corrections_section(run_dir: Path, summary: dict[str, Any]) -> str | None:
    """The section's HTML, or None when the run has no instance labels and no corrected partner."""
    pair = partner_run(run_dir, summary)
    if "instance_labels" not in summary and pair is None:
        return None
    runs = [(run_dir, summary)] + ([pair] if pair else [])
    weak = [r for r in runs if "instance_labels" not in r[1]]
    corrected = [r for r in runs if "instance_labels" in r[1]]
    ordered = weak + corrected
    names = sorted({m for _, s in ordered for m in s.get("metrics", {})})
    head = "<tr><th>metric</th>" + "".join(
        f"<th>{'corrected' if 'instance_labels' in s else 'weak labels only'}<br><code>{html.escape(p.name)}</code></th>"
        for p, s in ordered
    )
    rows = []
    for m in names:
        cells = []
        for _, s in ordered:
            v = s.get("metrics", {}).get(m)
            cells.append(f"<td>{v['mean']:.3f} ± {v['std']:.3f}</td>" if v else "<td>–</td>")
        rows.append(f"<tr><td>{html.escape(m)}</td>{''.join(cells)}</tr>")
    body = f"<table>{head}</tr>{''.join(rows)}</table>" if len(ordered) > 1 else ""
    for _, s in corrected:
        body += _provenance(s["instance_labels"])
    note = (
        "Slide-level metrics of the same cohort trained on the slide labels alone and with a pathologist's "
        "corrections (instance labels, docs/review.md), mean ± std across seeds."
        if len(ordered) > 1
        else "This model also trained on a pathologist's corrections (instance labels, docs/review.md); a weak-only "
        f"run named <code>{html.escape(run_dir.name.removesuffix(SUFFIX))}</code> beside it would be shown here too."
    )
    return f"<section><h2>Corrections</h2><p class=note>{note}</p>{body}</section>"


def _provenance(il: dict[str, Any]) -> str:
    """The corrections a model saw: files (with their content hash), tiles per class and per slide."""
    per_class = ", ".join(f"{html.escape(c)} {n}" for c, n in il.get("per_class", {}).items())
    files = "".join(
        f"<tr><td><code>{html.escape(Path(f['path']).name)}</code></td><td>{html.escape(str(f.get('slide')))}</td>"
        f"<td>{html.escape(json.dumps(f.get('used', {})))}</td><td>{html.escape(json.dumps(f.get('not_used', {})))}</td>"
        f"<td><code>{html.escape(str(f.get('sha256', ''))[:12])}</code></td></tr>"
        for f in il.get("files", [])
    )
    slides = ", ".join(
        f"{html.escape(s)} ({', '.join(f'{html.escape(c)} {n}' for c, n in counts.items())})"
        for s, counts in il.get("per_slide", {}).items()
    )
    contradicting = len(il.get("contradictions", {}).get("tiles", []))
    return (
        f"<p>{il.get('tiles', 0)} corrected tiles ({per_class}) in {len(il.get('per_slide', {}))} slides from "
        f"<code>{html.escape(str(il.get('source')))}</code> (content hash <code>{html.escape(str(il.get('sha256'))[:12])}"
        f"</code>, overlap {il.get('overlap')}); {contradicting} contradicting their slide label "
        f"(rule: {html.escape(str(il.get('contradictions', {}).get('rule')))}). Per slide: {slides or '–'}.</p>"
        "<table><tr><th>file</th><th>slide</th><th>used</th><th>not used</th><th>sha256</th></tr>"
        f"{files}</table>"
    )
