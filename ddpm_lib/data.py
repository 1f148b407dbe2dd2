"""Image data sets as tensors in [-1, 1] at 32x32, the shape every model in the book takes.

``mnist-sample`` ships inside the package (10,000 real MNIST digits, see assets/mnist_sample.json for
their provenance); the others come through torchvision, which downloads them where there is internet.
Fashion-MNIST is also read from where Debian's ``dataset-fashion-mnist`` package puts it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .package_files import ASSETS

MNIST_SAMPLE = ASSETS / "mnist_sample.npz"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("mnist-sample", "mnist", "fashion-mnist", "cifar10")
FASHION_MNIST_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                         "bag", "ankle boot")                             # label k is FASHION_MNIST_CLASSES[k]


class DatasetUnavailable(RuntimeError):
    """A data set's files are not on this machine and could not be downloaded."""


def default_root() -> Path:
    """Where downloaded data sets live: $DDPM_DATA, or ~/.cache/ddpm_lib/data."""
    return Path(os.environ.get("DDPM_DATA", Path.home() / ".cache" / "ddpm_lib" / "data"))


def to_model_range(images: np.ndarray | Tensor, size: int = 32) -> Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) -> float32 (N, C, size, size) in [-1, 1].

    Smaller images are padded with black (-1) on every side, as 28x28 MNIST becomes 32x32.
    """
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    if x.dim() == 3:
        x = x[:, None]                                                     # (N, 1, H, W)
    elif x.dim() == 4:
        x = x.permute(0, 3, 1, 2)                                          # (N, C, H, W)
    else:
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {tuple(x.shape)}")
    x = x.float() / 127.5 - 1.0
    pad_h, pad_w = size - x.shape[-2], size - x.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"images of {tuple(x.shape[-2:])} are larger than {size}x{size}")
    if pad_h or pad_w:
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=-1.0)
    return x.contiguous()


def to_uint8(images: Tensor) -> Tensor:
    """Model-range images (N, C, H, W) in [-1, 1] -> uint8 (N, C, H, W), rounding to the nearest level."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def fingerprint(images: Tensor) -> str:
    """A short sha256 of a data set's tensor: which images, in which order, at which shape."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:2] != b"\x00\x00" or raw[2] != 8:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def _mnist_sample(train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits of one split, in a fixed shuffled order (the file stores them by class)."""
    with np.load(MNIST_SAMPLE) as f:
        keep = np.flatnonzero(f["split"] == (0 if train else 1))
        order = keep[np.random.RandomState(0).permutation(len(keep))]
        return f["images"][order], f["labels"][order]


def _debian_fashion(train: bool) -> tuple[np.ndarray, np.ndarray] | None:
    prefix = "train" if train else "t10k"
    images = DEBIAN_FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz"
    labels = DEBIAN_FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        return _read_idx(images), _read_idx(labels)
    return None


def _torchvision(name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        from torchvision import datasets
    except ImportError as err:
        raise DatasetUnavailable(f"{name} needs torchvision (pip install torchvision)") from err
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    try:
        ds = cls(str(root), train=train, download=True)
    except Exception as err:  # torchvision raises URLError, RuntimeError, ... when offline
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetUnavailable(
            f"{name} is not under {root} and could not be downloaded ({reason}); on a machine with internet run "
            f"`python -c \"from ddpm_lib import load_dataset; load_dataset('{name}')\"` and copy {root} here "
            f"(or pass root=, --data-root or DDPM_DATA), or use the dataset mnist-sample (--dataset mnist-sample), "
            f"which ships with ddpm_lib") from None
    images = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
    return images, np.asarray(ds.targets)


def load_dataset(name: str, root: str | Path | None = None, train: bool = True, *,
                 with_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Images of a data set as float32 (N, C, 32, 32) in [-1, 1] (MNIST-like sets padded 28 -> 32).

    Args:
        name: ``"mnist-sample"`` (ships with ddpm_lib: 9,000 training and 1,000 held-out real digits),
            ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"`` (through torchvision).
        root: folder for torchvision's files (default: :func:`default_root`).
        train: the training split, or the held-out (test) split.
        with_labels: also return the class labels, int64 (N,).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "mnist-sample":
        images, labels = _mnist_sample(train)
    elif name == "fashion-mnist" and root is None and (found := _debian_fashion(train)) is not None:
        images, labels = found
    else:
        images, labels = _torchvision(name, Path(root) if root is not None else default_root(), train)
    x = to_model_range(images)
    return (x, torch.as_tensor(labels, dtype=torch.long)) if with_labels else x


def check_images(data: Tensor) -> None:
    """Raise ValueError unless ``data`` is a float tensor of images (N, C, H, W) with values in [-1, 1]."""
    if not isinstance(data, Tensor) or data.dim() != 4 or data.shape[0] < 1:
        raise ValueError(f"training data must be a tensor of images (N, C, H, W), got "
                         f"{tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__}")
    if not data.is_floating_point():
        raise ValueError(f"training data must be float images in [-1, 1], got dtype {data.dtype}")
    if not bool(torch.isfinite(data).all()):
        raise ValueError("training data contains NaN or infinite values")
    lo, hi = float(data.min()), float(data.max())
    if lo < -1.0001 or hi > 1.0001:
        raise ValueError(f"training data must lie in [-1, 1], got values from {lo:.3g} to {hi:.3g} "
                         "(scale images with ddpm_lib.data.to_model_range)")


def check_labels(labels: Tensor | int | Sequence[int], n: int, num_classes: int) -> Tensor:
    """``labels`` as a LongTensor (n,) on the CPU (one int repeats n times); ValueError unless they are
    integers (not floats or bools) with values in 0..num_classes-1. The one label rule: training data
    and sampling (:func:`ddpm_lib.sampling.check_labels`) both check with it."""
    y = torch.as_tensor(labels).cpu()
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {y.dtype}")
    y = y.long().expand(n).clone() if y.dim() == 0 else y.long()
    if tuple(y.shape) != (n,):
        raise ValueError(f"labels must be one integer or {n} of them, got shape {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes}), got values from "
                         f"{int(y.min())} to {int(y.max())}")
    return y
