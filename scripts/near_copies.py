"""The near-copy check of a model card: how near each sample lies to its nearest training digit.

    python scripts/near_copies.py SAMPLES.npz [SAMPLES.npz ...]

Prints, for each samples file (written by `python -m ddpm_lib sample`) and for the 256 real held-out
calibration digits, the L2 distance to the nearest of the 9,000 training digits of mnist-sample (pixels in
[-1, 1]): its median, 1st percentile, and the share within --within (default 2.0). A model that copies
its training digits has samples much nearer to them than real held-out digits are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ddpm_lib import load_dataset
from ddpm_lib.data import to_model_range
from ddpm_lib.metrics import nearest_distance, reference_split


def summary(distances, within: float) -> dict:
    d = distances.double()
    return {"n": int(d.numel()), "median": round(float(d.median()), 3), "p01": round(float(d.quantile(0.01)), 3),
            "min": round(float(d.min()), 3), "share_within": round(float((d <= within).double().mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="+", type=Path)
    parser.add_argument("--within", type=float, default=2.0, help="distance counted as a near copy (default 2.0)")
    args = parser.parse_args()
    train = load_dataset("mnist-sample")                                    # (9000, 1, 32, 32)
    rows = {"real held-out (calibration 256)": summary(nearest_distance(reference_split()[1], train), args.within)}
    for path in args.samples:
        with np.load(path) as f:
            images = to_model_range(f["images"])
        rows[str(path)] = summary(nearest_distance(images, train), args.within)
    print(json.dumps({"within": args.within, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
