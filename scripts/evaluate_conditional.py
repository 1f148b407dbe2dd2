"""Ship a class-conditional checkpoint: export its EMA weights, sweep the guidance weight, write its card.

    python scripts/evaluate_conditional.py runs/mnist_conditional/last.pt --name mnist_conditional
    python scripts/evaluate_conditional.py runs/fashion_conditional/last.pt --name fashion_conditional \
        --dataset fashion

Writes the weights under ddpm_lib/assets/ and what the chapters read under ddpm_lib/book/assets/:
  NAME.pt               the EMA weights, configs and the card (`sample --checkpoint mnist-conditional`)
  NAME_card.json        the card: command, config, data, steps, hardware, wall time, and for each guidance
                        weight w the project's metrics over several seeds (requested-label accuracy,
                        confident share, within-class spread, Frechet distance), mean and spread
  NAME_log.csv          the training loss, averaged over windows of 100 steps
  NAME_samples.npz      one sample grid per guidance weight (seed 0, 10 images per label), uint8
Sampling uses DDIM (eta 0) with `--steps` steps, the CLI's default for the shipped models on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_lib.checkpoint import export_weights, load_checkpoint, model_from_checkpoint
from ddpm_lib.data import to_uint8
from ddpm_lib.metrics import conditional_quality, reference_split
from ddpm_lib.sampling import ddim_sample

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "ddpm_lib" / "assets"                       # the weights
BOOK_ASSETS = ROOT / "ddpm_lib" / "book" / "assets"        # the card, log and samples the chapters read
GUIDANCE = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
TARGET_ACCURACY = 0.95             # the default w is the smallest that reaches this requested-label accuracy


def default_guidance(sweep: dict) -> float:
    """The smallest guidance weight whose mean accuracy reaches TARGET_ACCURACY (else the most accurate one).

    The smallest, because larger w buys accuracy with diversity (the spread falls as w grows).
    """
    reached = [float(w) for w, row in sweep.items() if row["accuracy"] >= TARGET_ACCURACY]
    if reached:
        return min(reached)
    return float(max(sweep, key=lambda w: sweep[w]["accuracy"]))


def summarise(runs: list[dict]) -> dict:
    """Mean and sample standard deviation over seeds of every number the runs share (and the mean accuracy
    of each requested class)."""
    keys = ("accuracy", "confident", "class_entropy", "spread", "frechet", "seconds")
    out = {"seeds": len(runs), "n": runs[0]["n"]}
    for k in keys:
        values = np.array([r[k] for r in runs], dtype=np.float64)
        out[k] = round(float(values.mean()), 4)
        out[k + "_sd"] = round(float(values.std(ddof=1)), 4) if len(values) > 1 else 0.0
    per_class = np.array([r["per_class_accuracy"] for r in runs], dtype=np.float64)   # (seeds, 10)
    out["per_class_accuracy"] = [round(float(v), 4) for v in np.nanmean(per_class, axis=0)]
    return out


def main() -> None:
    from evaluate_checkpoint import card_provenance, downsample_log          # the same card helpers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="the training run's last.pt")
    parser.add_argument("--name", required=True, help="asset name, e.g. mnist_conditional")
    parser.add_argument("--dataset", choices=("mnist", "fashion"), default="mnist", help="which classifier judges")
    parser.add_argument("--n", type=int, default=256, help="images per (w, seed) (default 256)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per guidance weight (default 3)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--guidance", type=float, nargs="+", default=GUIDANCE, help="weights to sweep")
    parser.add_argument("--note", default=None, help="how the run was carried out, for the card")
    parser.add_argument("--command", default=None,
                        help="the command(s) that trained it, for the card (default: train --config NAME)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: 40 images, 1 seed, 5 steps, nothing shipped")
    args = parser.parse_args()
    if args.quick:
        args.n, args.seeds, args.steps = 40, 1, 5
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    ckpt = load_checkpoint(args.checkpoint)
    model, schedule = model_from_checkpoint(ckpt)
    model = model.to(memory_format=torch.channels_last)
    if model.num_classes is None:
        raise SystemExit(f"{args.checkpoint} is not a class-conditional model")

    requested = torch.arange(args.n) % model.num_classes                  # balanced labels, (n,)
    sweep, grids = {}, {}
    for w in args.guidance:
        runs = []
        for seed in range(args.seeds):
            start = time.perf_counter()
            images = ddim_sample(model, schedule, (args.n, 1, 32, 32), steps=args.steps, seed=seed,
                                 labels=requested, guidance=w)
            seconds = time.perf_counter() - start
            row = conditional_quality(images, requested, dataset=args.dataset)
            runs.append({**row, "seconds": seconds})
            print(f"w={w:<4} seed {seed}: accuracy {row['accuracy']:.3f} confident {row['confident']:.3f} "
                  f"spread {row['spread']:.3f} frechet {row['frechet']:.1f} ({seconds:.0f} s)", flush=True)
            if seed == 0 and args.n >= 100:
                order = torch.argsort(requested[:100], stable=True)      # 10 per label, one row per label
                grids[f"w={w:g}"] = to_uint8(images[:100][order]).numpy()[:, 0]
        sweep[f"{w:g}"] = summarise(runs)

    ref, calib, _, calib_labels = reference_split(args.dataset, with_labels=True)
    real = conditional_quality(calib, calib_labels, dataset=args.dataset)
    training = (None if args.quick
                else downsample_log(args.checkpoint.parent / "log.csv", BOOK_ASSETS / f"{args.name}_log.csv"))
    card = {
        **card_provenance(args.name, args.command or f"python -m ddpm_lib train --config {args.name}",
                          ckpt, model, args.note, training),
        "sampler": {"name": "ddim", "eta": 0.0, "steps": args.steps, "images": args.n, "seeds": args.seeds},
        "guidance_sweep": sweep,
        "default_guidance": default_guidance(sweep),
        "default_guidance_rule": f"the smallest w whose mean accuracy is >= {TARGET_ACCURACY:g} (else the most "
                                 "accurate w); `sample` uses it when --guidance is not given",
        "real_calibration": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in real.items()},
        "metrics_note": ("accuracy = share the project's classifier reads as the requested label; spread = "
                         "within-class feature variance of the samples over that of real images of the class "
                         "(1 = as varied as real data); confident, class_entropy and frechet as for the "
                         "unconditional model (Frechet against 744 real reference images, not Inception FID)"),
    }
    print(json.dumps(sweep, indent=1))
    if args.quick:
        return
    export_weights(ckpt, ASSETS / f"{args.name}.pt", include_raw=False, card=card,
                   default_guidance=card["default_guidance"])
    (BOOK_ASSETS / f"{args.name}_card.json").write_text(json.dumps(card, indent=2) + "\n")
    np.savez_compressed(BOOK_ASSETS / f"{args.name}_samples.npz", **grids)
    print(f"wrote {ASSETS / args.name}.pt, its card, log and samples")


if __name__ == "__main__":
    main()
