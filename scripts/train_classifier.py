"""Train a classifier behind ddpm_lib.metrics and write it to ddpm_lib/assets/ (metrics.CLASSIFIERS).

    python scripts/train_classifier.py                     # MNIST: mnist_classifier.pt (about 3 min, 2 cores)
    python scripts/train_classifier.py --dataset fashion   # Fashion-MNIST: fashion_classifier.pt (~20 min)

MNIST: the 9,000 training digits of mnist-sample; accuracy on its 1,000 held-out digits. Fashion-MNIST:
its 60,000 training images; accuracy on its 10,000 test images. Both with random shifts of up to 2
pixels, and the same network and optimiser; the classifier never sees the held-out images.
Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from ddpm_lib.checkpoint import atomic_save
from ddpm_lib.data import load_dataset
from ddpm_lib.metrics import CLASSIFIERS, REFERENCE_DATA, MnistClassifier


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (background -1 fills the gap)."""
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=gen)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(CLASSIFIERS), default="mnist")
    parser.add_argument("--epochs", type=int, default=None, help="default 12 (mnist) or 6 (fashion)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    name = REFERENCE_DATA[args.dataset][0]
    epochs = args.epochs or (12 if args.dataset == "mnist" else 6)
    x, y = load_dataset(name, with_labels=True)
    x_test, y_test = load_dataset(name, train=False, with_labels=True)
    model = MnistClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps_per_epoch = x.shape[0] // 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * steps_per_epoch)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * 128:(i + 1) * 128]
            loss = F.cross_entropy(model(shift(x[idx], gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = torch.cat([model(x_test[i:i + 1000]).argmax(1) for i in range(0, len(x_test), 1000)])
            acc = (acc == y_test).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, held-out accuracy {acc:.4f}", flush=True)
    summary = {"held_out_accuracy": acc, "held_out_n": int(x_test.shape[0]), "train_n": int(x.shape[0]),
               "epochs": epochs, "seed": args.seed, "dataset": name, "seconds": round(time.time() - start, 1)}
    atomic_save({"model": model.state_dict(), "summary": summary}, CLASSIFIERS[args.dataset])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
