"""Generate the synthetic sample cohort: ``python sample_data/generate.py [OUT] [--n-slides N] [--seed S]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pathweak.synthetic import make_sample_cohort

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", nargs="?", default=str(Path(__file__).parent / "cohort"))
    ap.add_argument("--n-slides", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    slides = make_sample_cohort(args.out, n_slides=args.n_slides, seed=args.seed, overwrite=args.overwrite)
    print(f"{len(slides)} slides in {args.out}")
