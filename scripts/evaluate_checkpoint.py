"""Ship a trained MNIST checkpoint with the book: export its EMA weights, measure it, write its card.

    python scripts/evaluate_checkpoint.py runs/mnist_small/last.pt

Writes the weights under ddpm_lib/assets/ and what the chapters read under ddpm_lib/book/assets/:
  mnist_small.pt          the EMA weights, model and schedule configs, and the card (what
                          `python -m ddpm_lib sample` uses when no --checkpoint is given)
  mnist_small_card.json   the model card: command, config, data, steps, hardware, wall time, final loss,
                          sample-quality metrics with calibration rows, bits/dim with per-t terms
  mnist_small_log.csv     the training loss, averaged over windows of 100 steps
  mnist_small_samples.npz  the 256 samples (seed 0) the metrics were computed on, uint8
The sample grid goes to book/images/mnist_small_samples.png. Takes about 30 minutes on a 2-core CPU
(1,000-step sampling of 256 images, and the exact 1,000-term bound on 256 held-out digits).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_lib.checkpoint import SHIPPED, export_weights, load_checkpoint, model_from_checkpoint
from ddpm_lib.data import load_dataset, to_model_range
from ddpm_lib.images import save_grid
from ddpm_lib.losses import bits_per_dim
from ddpm_lib.book.results import add_noise, blur
from ddpm_lib.metrics import reference_split, sample_quality

ROOT = Path(__file__).resolve().parents[1]

ASSETS = ROOT / "ddpm_lib" / "assets"                       # the weights
BOOK_ASSETS = ROOT / "ddpm_lib" / "book" / "assets"        # the card, log and samples the chapters read


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def card_provenance(name: str, command: str, ckpt: dict, model, note: str | None, training) -> dict:
    """The first entries of a model card: what was trained, how, on which data and hardware."""
    config = ckpt["config"]
    return {
        "name": name,
        "command": command,
        "config": config,
        "stopped_at_step": ckpt["step"],
        "data": {"dataset": config["dataset"], "train_images": int(load_dataset(config["dataset"]).shape[0]),
                 "fingerprint": ckpt["data_hash"]},
        "hardware": f"{cpu_name()}, {torch.get_num_threads()} threads (CPU only), torch {torch.__version__}",
        "note": note,
        "training": training,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def cli_sample(checkpoint: Path | None, out: Path, n: int, steps: int | None, seed: int = 0,
               sampler: str | None = None) -> tuple[np.ndarray, float]:
    """Run `python -m ddpm_lib sample` as a reader would; returns the images and the wall time."""
    cmd = [sys.executable, "-m", "ddpm_lib", "sample", "--n", str(n), "--seed", str(seed), "--out", str(out),
           "--no-progress", "--overwrite"] + (["--sampler", sampler] if sampler else [])
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    with np.load(out / "samples.npz") as f:
        return f["images"], seconds


def rounded(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def downsample_log(src: Path, dst: Path, window: int = 100) -> dict:
    with open(src) as f:
        rows = list(csv.DictReader(f))
    with open(dst, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss"])
        for i in range(0, len(rows), window):
            chunk = rows[i:i + window]
            writer.writerow([chunk[-1]["step"], f"{np.mean([float(r['loss']) for r in chunk]):.5f}"])
    last = rows[-window:]
    # elapsed_s restarts at 0 when a run is resumed: add up the segments.
    wall, previous = 0.0, 0.0
    for r in rows:
        elapsed = float(r["elapsed_s"])
        if elapsed < previous:
            wall += previous
        previous = elapsed
    return {"final_loss_mean_last_100": round(float(np.mean([float(r["loss"]) for r in last])), 5),
            "wall_time_s": round(wall + previous, 1), "steps_logged": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="the training run's last.pt")
    parser.add_argument("--n", type=int, default=256, help="samples per row of the metrics table (default 256)")
    parser.add_argument("--full-steps", type=int, default=1000, help="steps of the full-sampling row (default 1000)")
    parser.add_argument("--bpd-images", type=int, default=256, help="held-out digits for bits/dim (default 256)")
    parser.add_argument("--bpd-strata", type=int, default=None,
                        help="strata of the bits/dim estimate (default: all 1000 terms, the exact bound)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: few images, few steps, nothing shipped")
    parser.add_argument("--note", default=None, help="how the run was actually carried out, for the card")
    args = parser.parse_args()
    if args.quick:
        args.n, args.full_steps, args.bpd_images, args.bpd_strata = 32, 20, 16, 50
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    ckpt = load_checkpoint(args.checkpoint)
    run_dir = args.checkpoint.parent
    n = args.n
    work = ROOT / "runs" / "evaluate"
    work.mkdir(parents=True, exist_ok=True)
    target = work / "quick.pt" if args.quick else SHIPPED

    log = downsample_log(run_dir / "log.csv", work / "log.csv" if args.quick else BOOK_ASSETS / "mnist_small_log.csv")
    export_weights(ckpt, target)                                           # card added below

    # Samples as a reader gets them: the CLI's defaults on this CPU, and full 1000-step sampling.
    default_images, default_s = cli_sample(None if not args.quick else target, work / "default", n,
                                           10 if args.quick else None)
    full_images, full_s = cli_sample(target, work / "full", n, args.full_steps, sampler="ddpm")
    with np.load(work / "default" / "samples.npz") as f:
        default_steps, default_sampler = int(f["steps"]), str(f["sampler"])
        default_noise = str(f["variance"]) if "variance" in f.files else f"DDIM eta {float(f['eta']):g}"

    _, real = reference_split()
    rows = {
        f"model, default sampler ({default_steps} steps)": sample_quality(to_model_range(default_images)),
        f"model, {args.full_steps} steps": sample_quality(to_model_range(full_images)),
        "real held-out digits": sample_quality(real[:n]),
        "held-out digits, blurred (sigma 1 px)": sample_quality(blur(real[:n], 1.0)),
        "held-out digits + noise (std 0.3)": sample_quality(add_noise(real[:n], 0.3)),
    }
    for name, row in rows.items():
        print(f"{name:>42}: {rounded(row)}")

    model, schedule = model_from_checkpoint(load_checkpoint(target))
    model = model.to(memory_format=torch.channels_last)
    held = load_dataset("mnist-sample", train=False)
    x0 = held[torch.randperm(len(held), generator=torch.Generator().manual_seed(1))[: args.bpd_images]]
    start = time.perf_counter()
    timesteps = args.bpd_strata
    bpd = bits_per_dim(model, schedule, x0, timesteps=timesteps, generator=torch.Generator().manual_seed(0))
    bpd_s = time.perf_counter() - start
    print(f"bits/dim {bpd['bpd'].mean():.4f} +- {bpd['bpd'].std() / len(x0) ** 0.5:.4f} ({bpd_s:.0f} s)")

    card = {
        **card_provenance("mnist_small", "python -m ddpm_lib train --config mnist_small", ckpt, model,
                          args.note, log),
        "sampler_default": {"sampler": default_sampler, "steps_on_cpu": default_steps, "variance": default_noise,
                            "images": n,
                            "seconds": round(default_s, 1)},
        "full_sampling": {"steps": args.full_steps, "seconds": round(full_s, 1), "images": n},
        "metrics": {name: rounded(row) for name, row in rows.items()},
        "metrics_note": ("confident = share classified with probability >= 0.9 by the project's MNIST classifier; "
                         "class_entropy = entropy of predicted labels / log 10; frechet = Frechet distance of the "
                         "classifier's 64-d features against 744 held-out reference digits (not Inception FID)"),
        "bits_per_dim": {"mean": round(float(bpd["bpd"].mean()), 4),
                         "stderr": round(float(bpd["bpd"].std() / len(x0) ** 0.5), 4), "images": int(len(x0)),
                         "timesteps": "all 1000" if timesteps is None else f"{timesteps} strata (stratified estimate)",
                         "decoder_L0": round(float(bpd["terms"][:, 0].mean()), 4),
                         "prior_LT": round(float(bpd["prior"].mean()), 6),
                         "per_t_mean": [round(float(v), 6) for v in bpd["terms"].mean(0)],
                         "seconds": round(bpd_s, 1)},
    }
    if args.quick:
        print(json.dumps({k: v for k, v in card.items() if k != "bits_per_dim"}, indent=2))
        return
    export_weights(ckpt, SHIPPED, card={k: v for k, v in card.items() if k != "bits_per_dim"})
    (BOOK_ASSETS / "mnist_small_card.json").write_text(json.dumps(card, indent=2) + "\n")
    np.savez_compressed(BOOK_ASSETS / "mnist_small_samples.npz", images=default_images, seed=0, steps=default_steps)
    (ROOT / "book" / "images").mkdir(exist_ok=True)
    save_grid(to_model_range(default_images), ROOT / "book" / "images" / "mnist_small_samples.png", nrow=16, upscale=2)
    print(f"wrote {SHIPPED}, the card and the samples")


if __name__ == "__main__":
    main()
