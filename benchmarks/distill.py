"""Distilling pathweak's own pretrained ViT into a small student: does the student keep the teacher's
linear-probe accuracy at a fraction of its cost? Writes JSON.

    python benchmarks/distill.py [--teacher-minutes 5] [--student-minutes 5] [--out benchmarks/results/distill.json]

Teacher: a ViT-Small (``--teacher-depth`` blocks) pretrained with pathweak's MAE on the unlabelled tiles
of ../shared/data/labeled (LC25000, EBHI; or ``--teacher pathweak:<dir>`` to bring one). Student: a
ViT-Tiny (``--student-depth`` blocks), at most a quarter of the teacher's parameters, distilled with
``pathweak.ssl.distill`` on the same tiles. Probes as in benchmarks/ssl_probe.py (logistic regression,
5-fold grouped by source photo / patient) for the teacher, the student and the same student
architecture at random init; extraction speed is tiles per second of each encoder's ``embed`` over the
same tiles, measured one after the other in this run with the same threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ssl_probe import DEFAULT_DATA, build_stores, embed_store, load_tasks, probe


def speed(encoder, store: Path, n: int, batch: int = 64) -> float:
    """Tiles per second of ``encoder.embed`` on the first ``n`` tiles (decoded beforehand)."""
    import torch

    from pathweak.tiling import TileStore

    with TileStore.open(store) as s:
        tiles = torch.from_numpy(s.read_tiles(slice(0, min(n, len(s)))))
    with torch.no_grad():
        encoder.embed(tiles[:batch])  # warm-up
        t = time.perf_counter()
        for start in range(0, len(tiles), batch):
            encoder.embed(tiles[start : start + batch])
        return len(tiles) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "distill")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "distill.json")
    ap.add_argument("--teacher", default=None, help="an existing pathweak:<dir> teacher (default: pretrain one)")
    ap.add_argument("--teacher-minutes", type=float, default=5.0)
    ap.add_argument("--teacher-depth", type=int, default=8)
    ap.add_argument("--student-minutes", type=float, default=5.0)
    ap.add_argument("--student-depth", type=int, default=4)
    ap.add_argument("--img-size", type=int, default=112, help="input side of teacher and student")
    ap.add_argument("--speed-tiles", type=int, default=512)
    ap.add_argument("--lc-every", type=int, default=3, help="keep every N-th LC25000 tile (CPU budget; 1 = all)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: fastest on a shared, oversubscribed CPU; see the result's 'threads')")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from pathweak.encoders import create_encoder
    from pathweak.ssl import SSLConfig, pretrain
    from pathweak.ssl.distill import distill

    t0 = time.perf_counter()
    tasks = load_tasks(args.data, args.work, ["lc25000", "ebhi"])
    if "lc25000_3class" in tasks and args.lc_every > 1:
        lc = tasks["lc25000_3class"]
        tasks["lc25000_3class"] = {k: v[:: args.lc_every] if isinstance(v, list) else v for k, v in lc.items()}
    stores = build_stores(tasks, args.work)
    result: dict = {"data": str(args.data), "tiles": {k: len(v["files"]) for k, v in tasks.items()}, "probe": {}}
    teacher_name = args.teacher
    if teacher_name is None:
        cfg = SSLConfig.tiny("mae", arch="vit_small", depth=args.teacher_depth, img_size=args.img_size,
                             max_epochs=1000, max_minutes=args.teacher_minutes, samples_per_epoch=2048,
                             mask_ratio=0.75, lr=1.5e-3, batch_size=64)
        res = pretrain(list(stores.values()), args.work / "teacher", cfg, resume=False, progress=False)
        teacher_name = f"pathweak:{args.work / 'teacher'}"
        result["teacher_pretraining"] = {"method": "mae", "minutes": args.teacher_minutes, "steps": res.steps,
                                         "rankme": [round(r["rankme"], 2) for r in res.rankme]}
    s_cfg = SSLConfig.tiny("distill", teacher=teacher_name, arch="vit_tiny", depth=args.student_depth,
                           img_size=args.img_size, max_epochs=1000, max_minutes=args.student_minutes,
                           samples_per_epoch=2048, batch_size=64, lr=1.5e-3)
    s_out = args.work / "student"
    res = distill(list(stores.values()), s_out, s_cfg, resume=False, progress=False)
    ranks = [r["rankme"] for r in res.rankme]
    result["distillation"] = {
        "minutes": args.student_minutes, "steps": res.steps, "epochs": res.epochs, "rankme": [round(r, 2) for r in ranks],
        "rankme_rose": bool(len(ranks) >= 2 and max(ranks[1:]) > ranks[0]),
        "loss_first_last": [round(float(np.mean(res.losses[:10])), 4), round(float(np.mean(res.losses[-10:])), 4)]
        if res.losses else None,
    }
    kwargs = json.loads((s_out / "encoder.json").read_text())["timm_kwargs"]
    encoders = {"teacher": create_encoder(teacher_name), "student": create_encoder(f"pathweak:{s_out}"),
                "student_random_init": create_encoder("timm:vit_tiny_patch16_224", weights="random:0", **kwargs)}
    params = {k: sum(p.numel() for p in e.parameters()) for k, e in encoders.items()}
    result["parameters"] = {"teacher": params["teacher"], "student": params["student"],
                            "ratio": round(params["student"] / params["teacher"], 4)}
    first = next(iter(stores.values()))
    sp = {k: speed(encoders[k], first, args.speed_tiles) for k in ("teacher", "student")}
    sp["teacher_again"] = speed(encoders["teacher"], first, args.speed_tiles)  # the machine is shared: bracket the student
    teacher_tps = (sp["teacher"] + sp["teacher_again"]) / 2
    result["extraction_tiles_per_s"] = {k: round(v, 1) for k, v in sp.items()} | {
        "speedup": round(sp["student"] / teacher_tps, 2), "threads": torch.get_num_threads()}
    for name, task in tasks.items():
        row = result["probe"][name] = {"grouped_by": task["grouped_by"]}
        for enc_name, enc in encoders.items():
            row[enc_name] = probe(embed_store(enc, stores[name], args.img_size), task["labels"], task["groups"])
        row["student_over_teacher"] = round(row["student"]["balanced_accuracy"] / row["teacher"]["balanced_accuracy"], 4)
        row["student_minus_random_points"] = round(
            100 * (row["student"]["balanced_accuracy"] - row["student_random_init"]["balanced_accuracy"]), 1)
    result["targets"] = {
        "student_params<=1/4": result["parameters"]["ratio"] <= 0.25,
        "speedup>=3": result["extraction_tiles_per_s"]["speedup"] >= 3,
    } | {f"{t}_student>=0.95_teacher": result["probe"][t]["student_over_teacher"] >= 0.95 for t in tasks} | {
        f"{t}_student>random_init": result["probe"][t]["student_minus_random_points"] > 0 for t in tasks}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["command"] = "python benchmarks/distill.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
