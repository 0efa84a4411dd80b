"""How fast is an epoch of MIL training over the FeatureBank, against the same head fed by a per-slide h5
DataLoader (the CLAM-style baseline)? Prints JSON.

    python benchmarks/mil_speed.py [--features DIR] [--slides 120 --tiles 1000 --dim 384] [--heads mean abmil]

Data: the FeatureStores in ``--features`` (e.g. those mil_bench.py wrote), or a generated cohort of
``--slides`` FeatureStores with about ``--tiles`` tiles of ``--dim`` features each (float16, written
with the real FeatureStore writer). Each store is exported with ``pathweak.features.export_h5`` (the
CLAM/TRIDENT layout), so both sides train on the same numbers.

Per head, in the same process, alternating (bank, h5) for ``--repeats`` rounds of ``--epochs`` epochs
(medians reported):

* ``bank``: pathweak's training path: the FeatureBank resident on the device, ``MILModule`` in a
  Lightning ``Trainer`` (as ``pathweak train`` runs it, validation off), one slide per optimiser step;
* ``bank_loop``: the same bank and head in a plain PyTorch loop (what Lightning itself costs);
* ``h5``: CLAM's recipe: a Dataset opening each slide's h5 file per item (``features``, ``coords``),
  ``DataLoader(batch_size=1, collate=cat)`` with CLAM's worker setting (none on CPU, 4 on CUDA), the
  bag copied to the device, the same head, loss and AdamW step in a plain loop;
* ``*_data``: the epoch's data delivery alone (iterating the loader, moving bags to the device),
  without the head.

The head's own arithmetic is the same on both sides; the difference is what it costs to deliver the
bags. Heads whose arithmetic dominates (attention heads on a CPU) cannot gain much from faster data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_cohort(work: Path, slides: int, tiles: int, dim: int, seed: int = 0) -> Path:
    """``slides`` FeatureStores of tiles drawn around ``tiles`` (0.5x-1.5x), random float16 features."""
    from pathweak.store.build import mark_complete
    from pathweak.store.features import create_feature_store, feature_store_path

    folder = work / "features" / f"synthetic-d{dim}"
    rng = np.random.default_rng(seed)
    for i in range(slides):
        path = feature_store_path(work, f"synthetic-d{dim}", f"slide_{i:04d}")
        n = int(rng.integers(tiles // 2, tiles * 3 // 2 + 1))
        if (path / "zarr.json").exists():
            continue
        side = int(np.ceil(np.sqrt(n)))
        coords = np.stack([np.arange(n) % side * 224, np.arange(n) // side * 224], 1).astype(np.int64)
        attrs = {"cache_key": "synthetic", "slide_id": path.stem, "n_tiles": n, "embed_dim": dim,
                 "encoder": {"name": "synthetic", "encoder_id": f"synthetic-d{dim}", "embed_dim": dim},
                 "tile_store": {"path": "", "cache_key": None},
                 "geometry": {"patch_px": 224, "read_px": 224, "level": 0, "level_downsample": [1.0, 1.0],
                              "target_mpp": 0.5, "achieved_mpp": [0.5, 0.5], "level_dim": [side * 224] * 2,
                              "slide_path": ""}}
        feats = create_feature_store(path, n, dim, coords, attrs)
        feats[...] = rng.standard_normal((n, dim)).astype(np.float16)
        mark_complete(path)
    return folder


def export_all(stores: list, work: Path) -> list[Path]:
    from pathweak.features import export_h5

    out = []
    for s in stores:
        path = work / "h5_files" / s.encoder_id / f"{s.slide_id}.h5"
        if not path.exists():
            export_h5(s, path)
        out.append(path)
    return out


class H5Bags:
    """CLAM's ``Generic_Split.__getitem__`` with ``use_h5``: open the slide's h5, read features and coords."""

    def __init__(self, files: list[Path], labels: np.ndarray):
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import h5py
        import torch

        with h5py.File(self.files[i], "r") as f:
            features = f["features"][:]
            coords = f["coords"][:]
        return torch.from_numpy(features), int(self.labels[i]), coords


def collate_mil(batch):
    import torch

    return torch.cat([b[0] for b in batch], dim=0), torch.LongTensor([b[1] for b in batch])


def h5_loader(files, labels, device, seed):
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    workers = 4 if device.type == "cuda" else 0  # CLAM: {'num_workers': 4} if device.type == "cuda" else {}
    g = torch.Generator().manual_seed(seed)
    return DataLoader(H5Bags(files, labels), batch_size=1, sampler=RandomSampler(range(len(files)), generator=g),
                      collate_fn=collate_mil, num_workers=workers, pin_memory=device.type == "cuda")


def step(head, opt, criterion, x, grid, y, label=None):
    loss = head.loss(head(x.float(), grid, y if label is None else label), y, criterion)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def epoch_h5(head, opt, criterion, files, labels, device, seed, compute=True):
    if compute:
        head.train()
    for data, label in h5_loader(files, labels, device, seed):
        data, label = data.to(device), label.to(device)
        if compute:
            step(head, opt, criterion, data, None, label[0])


def epoch_bank_loop(head, opt, criterion, bank, targets, seed, compute=True):
    import torch

    from pathweak.train.module import bag_loader

    if compute:
        head.train()
    for batch in bag_loader(bank, np.arange(len(bank)), targets, shuffle=True, seed=seed):
        for bag in batch:
            if compute:
                step(head, opt, criterion, bag.x, bag.grid, bag.target, bag.label)
    if bank.device.type == "cuda":
        torch.cuda.synchronize()


def epochs_bank_lightning(head, bank, targets, epochs, precision):
    """Seconds per epoch of pathweak's training path (MILModule in a Lightning Trainer, no validation)."""
    import lightning as L

    from pathweak import devices
    from pathweak._lightning import quiet_lightning
    from pathweak.train.module import MILModule, bag_loader

    times: list[float] = []

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            if bank.device.type == "cuda":
                import torch

                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    module = MILModule(head, "binary")
    with quiet_lightning():
        trainer = L.Trainer(accelerator="gpu" if bank.device.type == "cuda" else "cpu", devices=1,
                            precision=devices.precision(precision, bank.device), max_epochs=epochs,
                            limit_val_batches=0, callbacks=[Clock()], logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(module, bag_loader(bank, np.arange(len(bank)), targets, shuffle=True))
    return times


def timed(fn, device) -> float:
    import torch

    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, help="a folder of FeatureStores (default: generate a cohort)")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "mil_speed")
    ap.add_argument("--slides", type=int, default=120)
    ap.add_argument("--tiles", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", nargs="+", default=["mean", "max", "abmil", "clam_sb", "dsmil", "transmil"])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per timed round")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds (medians reported)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="of the Lightning run (auto: 32-true on CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    from pathweak.devices import parse_device
    from pathweak.features import FeatureStore, find_feature_stores
    from pathweak.features.bank import load_feature_bank
    from pathweak.heads import create_head
    from pathweak.train.module import make_criterion

    if args.threads:
        torch.set_num_threads(args.threads)
    device = parse_device(args.device)
    folder = args.features or make_cohort(args.work, args.slides, args.tiles, args.dim)
    stores = [FeatureStore.open(p) for p in find_feature_stores([folder])]
    files = export_all(stores, args.work)
    labels = np.arange(len(stores)) % 2
    targets = torch.as_tensor(labels)
    t0 = time.perf_counter()
    bank = load_feature_bank(stores, device=str(device), progress=False)
    load_s = time.perf_counter() - t0
    criterion = make_criterion("binary")
    result: dict = {
        "device": str(device), "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "slides": len(bank), "tiles": bank.n_tiles, "dim": bank.embed_dim,
        "features": str(folder), "bank": {"load_seconds": round(load_s, 2), "bytes": bank.nbytes,
                                          "dtype": str(bank.dtype)},
        "h5_bytes": int(sum(f.stat().st_size for f in files)), "epochs_per_round": args.epochs,
        "repeats": args.repeats, "heads": {},
    }
    # data delivery alone
    data = {"bank": [], "h5": []}
    for _ in range(args.repeats):
        data["bank"].append(timed(lambda: epoch_bank_loop(None, None, None, bank, targets, 0, compute=False), device))
        data["h5"].append(timed(lambda: epoch_h5(None, None, None, files, labels, device, 0, compute=False), device))
    result["data_only_seconds_per_epoch"] = {k: round(statistics.median(v), 4) for k, v in data.items()}
    result["data_only_speedup"] = round(statistics.median(data["h5"]) / statistics.median(data["bank"]), 1)
    for name in args.heads:
        rows: dict[str, list[float]] = {"bank": [], "bank_loop": [], "h5": []}
        for r in range(args.repeats):
            torch.manual_seed(r)
            head = create_head(name, bank.embed_dim, 2).to(device)
            rows["bank"] += epochs_bank_lightning(head, bank, targets, args.epochs, args.precision)
            for key, fn in (("bank_loop", lambda h, o, e: epoch_bank_loop(h, o, criterion, bank, targets, e)),
                            ("h5", lambda h, o, e: epoch_h5(h, o, criterion, files, labels, device, e))):
                torch.manual_seed(r)
                head = create_head(name, bank.embed_dim, 2).to(device)
                opt = torch.optim.AdamW(head.parameters(), lr=2e-4, weight_decay=1e-4)
                for e in range(args.epochs):
                    rows[key].append(timed(lambda fn=fn, head=head, opt=opt, e=e: fn(head, opt, e), device))
        med = {k: statistics.median(v) for k, v in rows.items()}
        result["heads"][name] = {
            "seconds_per_epoch": {k: round(v, 3) for k, v in med.items()},
            "speedup_bank_vs_h5": round(med["h5"] / med["bank"], 2),
            "speedup_bank_loop_vs_h5": round(med["h5"] / med["bank_loop"], 2),
        }
        print(name, result["heads"][name], flush=True)
    result["targets"] = {f"{n}_bank>=10x_h5": r["speedup_bank_vs_h5"] >= 10 for n, r in result["heads"].items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
