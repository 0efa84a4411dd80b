#!/usr/bin/env bash
# Prepare .gpu_carry/ for benchmarks/gpu_check.py on a GPU machine that has torch, torchvision, timm,
# lightning, h5py and OpenCV but not pathweak's storage and slide libraries, and no network:
#   .gpu_carry/wheels/  wheels for that machine's Python versions (default 3.12, the lent image's; x86-64
#                       manylinux), no dependencies; gpu_check.py --wheels installs the ones its Python takes
#   .gpu_carry/data/    the part of shared/data the gpu tests and benchmarks read (LC25000 lung tiles)
# It is ignored by git (.gitignore) and travels as a carried path (under 64 MiB with the working tree: each
# extra Python version adds about 25 MB of wheels).
#
#   bash benchmarks/gpu_carry.sh [SHARED_DATA] [PYTHON_VERSION ...]     e.g. ... ../shared/data 3.11 3.12
# then on the GPU machine, from the repository root:
#   python3 benchmarks/gpu_check.py --wheels .gpu_carry/wheels --data .gpu_carry/data
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${1:-${PATHWEAK_SHARED_DATA:-../shared/data}}"
shift || true
PYVS=("${@:-3.12}")
PY="${PYTHON:-python3}"  # a bare `python` exists only inside a virtual environment
OUTDIR=.gpu_carry
mkdir -p "$OUTDIR/wheels" "$OUTDIR/data/labeled"
# what `import pathweak.tiling / features / train / ssl` and the gpu tests need beyond that machine's image
# (pseudo-slides are JPEG TIFFs: imagecodecs writes them, OpenSlide reads them); about 25 MB per Python
PKGS=(zarr==3.1.6 numcodecs donfig google-crc32c simplejpeg openslide-python openslide-bin imagecodecs)
for PYV in "${PYVS[@]}"; do
    "$PY" -m pip download --quiet --dest "$OUTDIR/wheels" --no-deps --only-binary=:all: \
        --python-version "$PYV" --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 "${PKGS[@]}"
done
# LC25000 lung: whole source groups, about 500 tiles per class (~17 MB), with their groups.csv rows; the
# extraction benchmark cycles through them to time as many tiles as it is asked for
"$PY" - "$SHARED/labeled/lc25000_lung" "$OUTDIR/data/labeled/lc25000_lung" <<'PY'
import csv, shutil, sys
from collections import defaultdict
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
rows = list(csv.DictReader(open(src / "groups.csv", newline="")))
groups = defaultdict(lambda: defaultdict(list))
for r in rows:
    groups[r["label"]][r["source_group_id"]].append(r)
keep = []
for label, by_group in sorted(groups.items()):
    n = 0
    for gid in sorted(by_group, key=int):
        if n >= 500:
            break
        keep += by_group[gid]
        n += len(by_group[gid])
shutil.rmtree(dst, ignore_errors=True)
for r in keep:
    (dst / r["file"]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / r["file"], dst / r["file"])
with open(dst / "groups.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=["file", "label", "source_group_id"])
    w.writeheader()
    w.writerows(keep)
print(f"{len(keep)} LC25000 tiles in {dst}")
PY
du -sh "$OUTDIR/wheels" "$OUTDIR/data"
echo "carry: $OUTDIR (limit 64 MiB with the working tree)"
