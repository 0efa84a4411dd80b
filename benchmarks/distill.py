"""Distilling pathweak's own pretrained ViT into a small student: does the student keep the teacher's
linear-probe accuracy at a fraction of its cost? Writes JSON.

    python benchmarks/distill.py [--teacher pathweak:<dir>] [--student-minutes 5] [--variants standardized cosine]

Teacher: a ViT (``--teacher-arch``, ``--teacher-depth`` blocks) pretrained with pathweak's MAE, CPU recipe
(``SSLConfig.cpu``, final weights), on the unlabelled tiles of ../shared/data/labeled (LC25000, EBHI);
or ``--teacher pathweak:<dir>`` to bring one. Student: a narrow timm ViT (``--student-embed-dim``,
``--student-heads``, ``--student-depth``), distilled with ``pathweak.ssl.distill`` on the same tiles, once
per loss in ``--variants`` (the first is the one the targets judge; the others are reported beside it).
Probes as in benchmarks/ssl_probe.py (logistic regression, 5-fold grouped by source photo / patient) for
the teacher, the students and the student architecture at random init; extraction speed is tiles per
second of each encoder's ``embed`` over the same tiles, measured in this run with the same threads in
``--speed-rounds`` interleaved rounds (teacher, student, teacher, student, ...); the speedup is the median
of the rounds' student / teacher ratios, so a change of load between rounds moves one ratio, not the answer.
``--reuse-students`` takes students already distilled in ``--work`` (their ``encoder.json`` records the
run) and only probes and times them again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from linear_probe import DEFAULT_DATA, build_stores, embed_store, load_tasks, probe  # noqa: E402


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
    ap.add_argument("--teacher-arch", default="vit_small")
    ap.add_argument("--teacher-depth", type=int, default=4)
    ap.add_argument("--teacher-minutes", type=float, default=20.0)
    ap.add_argument("--student-minutes", type=float, default=5.0, help="per variant")
    ap.add_argument("--student-depth", type=int, default=3)
    ap.add_argument("--student-embed-dim", type=int, default=128, help="student token width (ViT-Tiny: 192)")
    ap.add_argument("--student-heads", type=int, default=2)
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["standardized"],
        help="distillation losses, each a student: standardized, cosine, standardized+relation "
        "(the first is the one the targets judge)",
    )
    ap.add_argument(
        "--whole-tile-views",
        type=float,
        default=0.0,
        help="fraction of distillation views that are the whole, un-augmented tile (0: all augmented crops)",
    )
    ap.add_argument("--img-size", type=int, default=96, help="input side of teacher and student")
    ap.add_argument("--speed-tiles", type=int, default=512)
    ap.add_argument("--speed-rounds", type=int, default=5, help="interleaved teacher/student timing rounds")
    ap.add_argument(
        "--reuse-students",
        action="store_true",
        help="probe and time the students already in --work/student_<variant> instead of distilling them again",
    )
    ap.add_argument("--lc-every", type=int, default=3, help="keep every N-th LC25000 tile (CPU budget; 1 = all)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: fastest on a shared, oversubscribed CPU; see the result's 'threads')",
    )
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
    result: dict = {
        "data": str(args.data),
        "tiles": {k: len(v["files"]) for k, v in tasks.items()},
        "probe": {},
        "distillation": {},
        "load_average_start": os.getloadavg(),
    }
    teacher_name = args.teacher
    if teacher_name is None:
        cfg = SSLConfig.cpu(
            "mae",
            arch=args.teacher_arch,
            depth=args.teacher_depth,
            img_size=args.img_size,
            max_epochs=1000,
            max_minutes=args.teacher_minutes,
            select="last",
        )
        res = pretrain(list(stores.values()), args.work / "teacher", cfg, resume=False, progress=False)
        teacher_name = f"pathweak:{args.work / 'teacher'}"
        result["teacher_pretraining"] = {
            "method": "mae",
            "recipe": "SSLConfig.cpu, select=last",
            "arch": args.teacher_arch,
            "depth": args.teacher_depth,
            "minutes": args.teacher_minutes,
            "steps": res.steps,
            "rankme": [round(r["rankme"], 2) for r in res.rankme],
        }
    students, student_kwargs = {}, {}
    for variant in args.variants:
        loss, _, extra = variant.partition("+")
        s_cfg = SSLConfig.tiny(
            "distill",
            teacher=teacher_name,
            arch="vit_tiny",
            depth=args.student_depth,
            embed_dim=args.student_embed_dim,
            num_heads=args.student_heads,
            img_size=args.img_size,
            max_epochs=1000,
            max_minutes=args.student_minutes,
            samples_per_epoch=2048,
            batch_size=64,
            lr=1.5e-3,
            select="last",
            distill_loss=loss,
            relation_weight=1.0 if extra == "relation" else 0.0,
            whole_tile_views=args.whole_tile_views,
        )
        s_out = args.work / f"student_{variant}"
        if args.reuse_students and (s_out / "encoder.json").exists():
            training = json.loads((s_out / "encoder.json").read_text())["training"]
            steps, epochs, losses, reused = training["steps"], training["epochs"], [], True
            ranks = [r["rankme"] for r in training["rankme"]]
        else:
            res = distill(list(stores.values()), s_out, s_cfg, resume=False, progress=False)
            steps, epochs, losses, reused = res.steps, res.epochs, res.losses, False
            ranks = [r["rankme"] for r in res.rankme]
        result["distillation"][variant] = {
            "loss": loss,
            "relation_weight": s_cfg.relation_weight,
            "whole_tile_views": s_cfg.whole_tile_views,
            "minutes": args.student_minutes,
            "steps": steps,
            "epochs": epochs,
            "rankme": [round(r, 2) for r in ranks],
            "loss_first_last": [round(float(np.mean(losses[:10])), 4), round(float(np.mean(losses[-10:])), 4)]
            if losses
            else None,
            "reused": reused,
        }
        students[variant] = create_encoder(f"pathweak:{s_out}")
        student_kwargs = json.loads((s_out / "encoder.json").read_text())["timm_kwargs"]
    headline = args.variants[0]
    result["student_architecture"] = {
        "timm_model": "vit_tiny_patch16_224",
        "timm_kwargs": student_kwargs,
        "headline_variant": headline,
        "select": "last",
    }
    encoders = {
        "teacher": create_encoder(teacher_name),
        "student": students[headline],
        "student_random_init": create_encoder("timm:vit_tiny_patch16_224", weights="random:0", **student_kwargs),
    }
    encoders |= {f"student_{v}": students[v] for v in args.variants[1:]}
    if teacher_name.startswith("pathweak:"):  # is the teacher better than its own architecture at random init?
        meta = json.loads((Path(teacher_name.removeprefix("pathweak:")) / "encoder.json").read_text())
        training = meta.get("training", {})
        result["teacher_pretraining"] = result.get("teacher_pretraining", {}) | {
            "method": training.get("method"),
            "steps": training.get("steps"),
            "seconds": training.get("seconds"),
            "config": {
                k: training.get("config", {}).get(k)
                for k in ("arch", "depth", "img_size", "batch_size", "mask_ratio", "max_minutes", "select")
            },
        }
        encoders["teacher_random_init"] = create_encoder(
            f"timm:{meta['timm_model']}", weights="random:0", **meta["timm_kwargs"]
        )
    params = {k: sum(p.numel() for p in e.parameters()) for k, e in encoders.items()}
    result["parameters"] = {
        "teacher": params["teacher"],
        "student": params["student"],
        "ratio": round(params["student"] / params["teacher"], 4),
    }
    first = next(iter(stores.values()))
    rounds = [  # the machine is shared: interleave, and judge the median ratio
        {k: speed(encoders[k], first, args.speed_tiles) for k in ("teacher", "student")}
        for _ in range(args.speed_rounds)
    ]
    ratios = [r["student"] / r["teacher"] for r in rounds]
    result["extraction_tiles_per_s"] = {
        "teacher": round(float(np.median([r["teacher"] for r in rounds])), 1),
        "student": round(float(np.median([r["student"] for r in rounds])), 1),
        "speedup": round(float(np.median(ratios)), 2),
        "speedup_per_round": [round(x, 2) for x in ratios],
        "threads": torch.get_num_threads(),
        "tiles": args.speed_tiles,
        "load_average": os.getloadavg(),
    }
    for name, task in tasks.items():
        row = result["probe"][name] = {"grouped_by": task["grouped_by"]}
        for enc_name, enc in encoders.items():
            row[enc_name] = probe(embed_store(enc, stores[name], args.img_size), task["labels"], task["groups"])
        for v in args.variants[1:]:
            row[f"student_{v}_over_teacher"] = round(
                row[f"student_{v}"]["balanced_accuracy"] / row["teacher"]["balanced_accuracy"], 4
            )
        if "teacher_random_init" in row:
            row["teacher_minus_random_points"] = round(
                100 * (row["teacher"]["balanced_accuracy"] - row["teacher_random_init"]["balanced_accuracy"]), 1
            )
        row["student_over_teacher"] = round(
            row["student"]["balanced_accuracy"] / row["teacher"]["balanced_accuracy"], 4
        )
        row["student_minus_random_points"] = round(
            100 * (row["student"]["balanced_accuracy"] - row["student_random_init"]["balanced_accuracy"]), 1
        )
    result["targets"] = (
        {
            "student_params<=1/4": result["parameters"]["ratio"] <= 0.25,
            "speedup>=3": result["extraction_tiles_per_s"]["speedup"] >= 3,
        }
        | {f"{t}_student>=0.95_teacher": result["probe"][t]["student_over_teacher"] >= 0.95 for t in tasks}
        | {f"{t}_student>random_init": result["probe"][t]["student_minus_random_points"] > 0 for t in tasks}
    )
    result["variant_targets"] = {  # the same quality targets for the other losses (size and speed are shared)
        v: {f"{t}_student>=0.95_teacher": result["probe"][t][f"student_{v}_over_teacher"] >= 0.95 for t in tasks}
        | {
            f"{t}_student>random_init": result["probe"][t][f"student_{v}"]["balanced_accuracy"]
            > result["probe"][t]["student_random_init"]["balanced_accuracy"]
            for t in tasks
        }
        for v in args.variants[1:]
    }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["load_average_end"] = os.getloadavg()
    result["command"] = "python benchmarks/distill.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
