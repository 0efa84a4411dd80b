"""External check of the resolution estimate on MoNuSeg (another 18 hospitals, 9 organs, 40x TCGA scans).

    python benchmarks/mpp_external.py --monuseg DIR [--out benchmarks/results/mpp_monuseg.json]

DIR holds the MoNuSeg 2018 challenge images (``*.tif``, 1000 x 1000 px; Kumar et al., IEEE TMI 2017 and
2019; https://monuseg.grand-challenge.org, CC BY-NC-SA 4.0) and, where available, their Aperio ImageScope
annotations (``*.xml`` with the same stem, anywhere under DIR). The data are not in ../shared/data and
are not shipped; docs/resolution.md ("External check") says where they come from.

The truth is the annotation's ``MicronsPerPixel`` (the TCGA slide's own scan resolution, 0.2456-0.2527)
or, without an annotation, 0.25 (MoNuSeg's documented 40x; ``truth_source`` says which). Each image is
measured at its own scale and resampled 2x and 4x coarser (OpenCV ``INTER_AREA``, as in
``mpp_estimate.py``). The 14 official test images are the held-out split: the darkness ratio of the
lymphocyte rule (``nuclei-v5``) was chosen on the 30 training images and the GlaS train images only.

Where the annotation is present, the record also holds the **oracle**: the area-weighted median equivalent
diameter of the hand-drawn nuclei (µm) and the ratio one size constant would give on them
(``NUCLEUS_PROFILE_UM / oracle_um``), i.e. the best a perfect nucleus segmentation read against the constant
could do. It separates what the tissue costs (large tumour nuclei) from what the segmentation costs.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from mpp_estimate import overall, record, resample, summarise, timed  # noqa: E402

SCALES = {"native": 1.0, "x2 coarser": 2.0, "x4 coarser": 4.0}
NOMINAL_MPP = 0.25  # MoNuSeg: "40x" TCGA scans, where no annotation records the slide's own value
# The official MoNuSeg 2018 test images (the challenge's test set)
TEST_IMAGES = frozenset(
    "TCGA-2Z-A9J9-01A-01-TS1 TCGA-44-2665-01B-06-BS6 TCGA-69-7764-01A-01-TS1 TCGA-A6-6782-01A-01-BS1 "
    "TCGA-AC-A2FO-01A-01-TS1 TCGA-AO-A0J2-01A-01-BSA TCGA-CU-A0YN-01A-02-BSB TCGA-EJ-A46H-01A-03-TSC "
    "TCGA-FG-A4MU-01B-01-TS1 TCGA-GL-6846-01A-01-BS1 TCGA-HC-7209-01A-01-TS1 TCGA-HT-8564-01Z-00-DX1 "
    "TCGA-IZ-8196-01A-01-BS1 TCGA-ZF-A9R5-01A-01-TS1".split()
)


def annotation(path: Path | None) -> tuple[float | None, float | None, int]:
    """(MicronsPerPixel, area-weighted median equivalent diameter of the annotated nuclei in px, their count)
    from an ImageScope XML; Nones where the file or the field is absent."""
    if path is None:
        return None, None, 0
    text = path.read_text(errors="replace")
    found = re.search(r'MicronsPerPixel="([0-9.]+)"', text)
    areas = np.array([float(a) for a in re.findall(r'<Region [^>]*? Area="([0-9.]+)"', text)])
    areas = areas[areas > 0]
    if not len(areas):
        return (float(found.group(1)) if found else None), None, 0
    from pathweak.resolution.nuclei import weighted_median

    diam = 2 * np.sqrt(areas / np.pi)
    return (float(found.group(1)) if found else None), weighted_median(diam, areas), len(areas)


def run(folder: Path) -> dict:
    import tifffile

    from pathweak.resolution import NUCLEUS_PROFILE_UM, estimate_mpp

    xmls = {p.stem: p for p in folder.rglob("*.xml")}
    images = sorted({p.stem: p for p in folder.rglob("*.tif")}.items())
    if not images:
        raise SystemExit(f"error: {folder}: no MoNuSeg *.tif images found; pass the folder that holds them")
    records = []
    for stem, path in images:
        rgb = np.ascontiguousarray(tifffile.imread(path)[..., :3])
        mpp_xml, oracle_px, n_annotated = annotation(xmls.get(stem))
        truth = mpp_xml or NOMINAL_MPP
        oracle_um = None if oracle_px is None else oracle_px * truth
        split = "held_out" if stem in TEST_IMAGES else "tune"
        for scale, f in SCALES.items():
            est, cpu = timed(estimate_mpp, resample(rgb, f))
            records.append(
                {
                    "set": f"monuseg ({'test' if split == 'held_out' else 'train'})",
                    **record(stem, truth * f, scale, est, cpu),
                    "split": split,
                    "truth_source": "annotation MicronsPerPixel" if mpp_xml else "nominal 40x",
                    "annotated_nuclei": n_annotated,
                    "oracle_um": None if oracle_um is None else round(oracle_um, 3),
                    "oracle_ratio": None if oracle_um is None else round(NUCLEUS_PROFILE_UM / oracle_um, 4),
                }
            )
    splits = {name: overall([r for r in records if r["split"] == name]) for name in ("tune", "held_out")}
    return {
        "overall": overall(records),
        "splits": splits,
        "oracle": oracle_summary(records),
        "summary": summarise(records),
        "records": records,
    }


def oracle_summary(records: list[dict]) -> dict:
    """Over the annotated images (one record each): the hand-drawn nuclei's size, what one constant reads on
    them, and the estimate against that (the segmentation's own error)."""
    native = [r for r in records if r["scale"] == "native" and r["oracle_ratio"] is not None]
    ratios = np.array([r["oracle_ratio"] for r in native])
    seg = np.array([r["ratio"] / r["oracle_ratio"] for r in native if r["ratio"] is not None])
    if not len(ratios):
        return {"annotated_images": 0}
    return {
        "annotated_images": len(native),
        "nucleus_um_median": round(float(np.median([r["oracle_um"] for r in native])), 3),
        "nucleus_um_min": round(float(min(r["oracle_um"] for r in native)), 3),
        "nucleus_um_max": round(float(max(r["oracle_um"] for r in native)), 3),
        "constant_ratio_min": round(float(ratios.min()), 3),
        "constant_ratio_max": round(float(ratios.max()), 3),
        "constant_within_1.3x": int(np.sum((ratios <= 1.3) & (ratios >= 1 / 1.3))),
        "constant_log_sd": round(float(np.std(np.log(ratios))), 3),
        "estimate_over_oracle_median": None if not len(seg) else round(float(np.median(seg)), 3),
        "estimate_over_oracle_log_sd": None if not len(seg) else round(float(np.std(np.log(seg))), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--monuseg", type=Path, required=True, help="folder with the MoNuSeg *.tif (and *.xml)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    if not args.monuseg.is_dir():
        raise SystemExit(f"error: {args.monuseg}: not a folder; pass the folder holding the MoNuSeg images")
    started = time.perf_counter()
    result = run(args.monuseg)
    meta = {"benchmark": "mpp_external", "data": "MoNuSeg 2018", "python": platform.python_version()}
    out = {**meta, "seconds": round(time.perf_counter() - started, 1), **result}
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
    summary = {k: out[k] for k in ("overall", "splits", "oracle")}
    print(json.dumps(summary, indent=1) if args.out else text)


if __name__ == "__main__":
    main()
