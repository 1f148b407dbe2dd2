"""Samples of one training run against its training step, for chapter 4: the same noise through each checkpoint.

    python scripts/training_progress.py --start mnist runs/fashion/step500.pt runs/fashion/step1000.pt ... \
        --out ddpm_lib/book/assets/fashion_conditional_progress.npz

A run keeps only its last checkpoint (and the one before), so copy `last.pt` aside as the run goes (or
train with `--checkpoint-every N` and copy after each). `--start` names the weights the run began from
(a shipped model's name, for a fine-tune: its step 0). Every checkpoint draws the same images: one per
label (or `--n` unconditional ones), from one seed, with DDIM (eta 0, `--steps` steps) and the run's
default guidance for a conditional model. Writes, uint8 in [0, 255]:
  images  (K, N, 32, 32)   K checkpoints in step order, N images each
  steps   (K,)             the training step of each row
  labels  (N,)             the label asked of each column (-1: unconditional)
and the settings (sampler, steps, eta, seed, guidance) as 0-d arrays.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from ddpm_lib.checkpoint import load_checkpoint, model_from_checkpoint
from ddpm_lib.data import to_uint8
from ddpm_lib.sampling import ddim_sample
from ddpm_lib.training import init_weights
from ddpm_lib.unet import UNet


def draw(model: torch.nn.Module, schedule, labels: torch.Tensor | None, n: int, steps: int, seed: int,
         guidance: float) -> np.ndarray:
    """One row: (N, 32, 32) uint8 samples of ``model`` from ``seed``."""
    with torch.no_grad():
        x = ddim_sample(model, schedule, (n, 1, 32, 32), steps=steps, eta=0.0, seed=seed,
                        labels=labels, guidance=guidance if labels is not None else 1.0)
    return to_uint8(x.cpu())[:, 0]                                          # (N, 32, 32)


def start_model(start: str, like: dict) -> tuple[UNet, object]:
    """The run's step 0: ``start``'s weights in the run's architecture, built as training's ``init_from`` does
    (an unconditional start gets a zero label table, so it draws the same images whatever the label)."""
    model, schedule = model_from_checkpoint(like)
    fresh = UNet(**model.config)
    init_weights(fresh, start)
    return fresh.eval(), schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoints of one run, any order")
    parser.add_argument("--start", default=None, help="the weights the run began from (its step 0)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=10, help="images per row for an unconditional run")
    args = parser.parse_args()
    ckpts = [load_checkpoint(p) for p in args.checkpoints]
    ckpts.sort(key=lambda c: c["step"])
    num_classes = ckpts[-1]["config"].get("num_classes")
    labels = torch.arange(num_classes) if num_classes else None
    guidance = float(ckpts[-1].get("default_guidance", 3.0)) if num_classes else 1.0
    n = num_classes or args.n
    rows, steps = [], []
    if args.start is not None:
        rows.append(draw(*start_model(args.start, ckpts[-1]), labels, n, args.steps, args.seed, guidance))
        steps.append(0)
    for ckpt in ckpts:
        rows.append(draw(*model_from_checkpoint(ckpt), labels, n, args.steps, args.seed, guidance))
        steps.append(int(ckpt["step"]))
        print(f"step {ckpt['step']}: drawn", flush=True)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, images=np.stack(rows), steps=np.array(steps),
                        labels=(labels.numpy() if labels is not None else np.full(n, -1)),
                        sampler=np.array("ddim"), sample_steps=np.array(args.steps), eta=np.array(0.0),
                        seed=np.array(args.seed), guidance=np.array(guidance))
    os.replace(tmp, out)
    print(f"wrote {out}: {len(rows)} rows of {n} images, steps {steps}")


if __name__ == "__main__":
    main()
