"""Sample-quality metrics for MNIST-like images, from a small classifier the project trains itself.

Two data sets have a classifier (``CLASSIFIERS``): ``"mnist"`` (digits) and ``"fashion"`` (Fashion-MNIST).

* confident share: the fraction of images the classifier labels with probability >= 0.9;
* class balance: the entropy of the predicted-label histogram divided by log(10) (1.0 = uniform);
* feature Frechet distance: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) between
  Gaussian fits to the classifier's 64-d penultimate features of two image sets. This is the MNIST
  analogue of FID, *not* Inception FID: its numbers are not comparable with published FIDs.

The classifier runs in eval mode on fixed-size chunks and has no batch statistics, so every metric is
the same whatever batch size the images arrive in. Each result says how many images it used.
The reference set is 744 of the 1,000 held-out real digits; the other 256 are the "real" calibration
row, so no digit is compared with itself and none was seen by the diffusion model or the classifier
(for Fashion-MNIST, 1,000 images of its test split, chosen once, split the same way).

For class-conditional models, :func:`conditional_quality` adds the share of images the classifier
reads as the label that was asked for, and the within-class spread of the features against real
images of the same classes (1.0: as varied as real data; guidance lowers it).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import ASSETS, load_dataset

CLASSIFIERS = {"mnist": ASSETS / "mnist_classifier.pt", "fashion": ASSETS / "fashion_classifier.pt"}
CLASSIFIER = CLASSIFIERS["mnist"]
# The data set each classifier was trained on, and the held-out images its reference set comes from.
REFERENCE_DATA = {"mnist": ("mnist-sample", False), "fashion": ("fashion-mnist", False)}
FEATURE_DIM = 64
CHUNK = 256


class MnistClassifier(nn.Module):
    """A small CNN for 32x32 greyscale images in [-1, 1]: four 3x3 conv stages, 64 features, 10 logits."""

    def __init__(self):
        super().__init__()
        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(stage(1, 32), stage(32, 64), stage(64, 64), stage(64, 128))  # (B, 128, 2, 2)
        self.features_head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(512, FEATURE_DIM), nn.ReLU())
        self.classify = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: Tensor) -> Tensor:                               # (B, 1, 32, 32) -> (B, 64)
        return self.features_head(self.body(x))

    def forward(self, x: Tensor) -> Tensor:                                # (B, 1, 32, 32) -> (B, 10) logits
        return self.classify(self.features(x))


def load_classifier(path: str | Path = CLASSIFIER) -> MnistClassifier:
    """A shipped classifier (trained by scripts/train_classifier.py), in eval mode, on the CPU.

    ``path`` is a file or a data set's name in ``CLASSIFIERS`` (``"mnist"``, ``"fashion"``).
    """
    return _load_classifier(str(CLASSIFIERS.get(path, path)) if isinstance(path, str) else str(path))


@functools.cache
def _load_classifier(path: str) -> MnistClassifier:
    if not Path(path).is_file():
        raise FileNotFoundError(f"classifier weights {path} are missing; run scripts/train_classifier.py")
    # (a cached model: callers must not train it)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MnistClassifier()
    model.load_state_dict(state["model"])
    return model.eval()


@torch.no_grad()
def classifier_outputs(images: Tensor, classifier: MnistClassifier | None = None) -> tuple[Tensor, Tensor]:
    """Class probabilities (N, 10) and features (N, 64), float64, for images (N, 1, 32, 32) in [-1, 1].

    ``classifier`` defaults to the MNIST one (:func:`load_classifier`).
    """
    _check_digits(images, min_images=1)
    classifier = classifier or load_classifier()
    probs, feats = [], []
    for start in range(0, images.shape[0], CHUNK):
        x = images[start:start + CHUNK].float().cpu()
        f = classifier.features(x)
        probs.append(F.softmax(classifier.classify(f), dim=1).double())
        feats.append(f.double())
    return torch.cat(probs), torch.cat(feats)


def class_entropy(labels: Tensor, num_classes: int = 10) -> float:
    """Entropy of the label histogram over log(num_classes): 1.0 when every class is equally common."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(num_classes))


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Frechet distance between Gaussian fits to two feature sets (N_a, D) and (N_b, D), in float64.

    tr((S_a^1/2 S_b S_a^1/2)^1/2) is computed from the eigenvalues of the symmetric matrix
    S_a^1/2 S_b S_a^1/2, which are those of S_a S_b, so no non-symmetric matrix square root is needed.
    A distance is never negative: rounding that tips a near-zero result below 0 (features that are always
    0 make the covariances singular) gives 0.
    """
    a, b = feats_a.double(), feats_b.double()
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError("need two feature sets (N, D) with the same D and N >= 2")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eval_a, evec_a = torch.linalg.eigh(cov_a)
    sqrt_a = evec_a @ torch.diag(eval_a.clamp(min=0).sqrt()) @ evec_a.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return max(0.0, float(((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross))


def reference_split(dataset: str = "mnist", *, with_labels: bool = False) -> tuple[Tensor, ...]:
    """Held-out real images split into (reference 744, calibration 256), fixed once (seed 0).

    For MNIST these are the 1,000 held-out digits of mnist-sample; for Fashion-MNIST, 1,000 images of its
    test split. ``with_labels`` adds the two label tensors: (ref, calib, ref_labels, calib_labels).
    """
    name, train = REFERENCE_DATA[dataset]
    held, labels = load_dataset(name, train=train, with_labels=True)
    order = torch.randperm(held.shape[0], generator=torch.Generator().manual_seed(0))[:1000]
    ref, calib = order[256:], order[:256]
    return (held[ref], held[calib], labels[ref], labels[calib]) if with_labels else (held[ref], held[calib])


@functools.cache
def reference_features(dataset: str = "mnist") -> Tensor:
    """The classifier's features (744, 64) of the reference images (computed once per process)."""
    return classifier_outputs(reference_split(dataset)[0], load_classifier(dataset))[1]


def sample_quality(images: Tensor, *, threshold: float = 0.9, dataset: str = "mnist") -> dict:
    """Confident share, class balance and feature Frechet distance of images (N, 1, 32, 32).

    Returns a dict with ``n``, ``confident`` (share with max probability >= ``threshold``),
    ``class_entropy``, ``frechet`` (against the 744 reference images), ``n_reference`` and
    ``class_counts``. ``dataset`` picks the classifier and reference set (``"mnist"`` or ``"fashion"``).
    """
    _check_digits(images, min_images=2)
    probs, feats = classifier_outputs(images, load_classifier(dataset))
    labels = probs.argmax(1)
    ref = reference_features(dataset)
    return {"n": int(images.shape[0]), "confident": float((probs.max(1).values >= threshold).double().mean()),
            "class_entropy": class_entropy(labels), "frechet": frechet_distance(feats, ref),
            "n_reference": int(ref.shape[0]), "class_counts": torch.bincount(labels, minlength=10).tolist()}


def conditional_quality(images: Tensor, requested: Tensor, *, dataset: str = "mnist",
                        threshold: float = 0.9) -> dict:
    """How well class-conditional samples (N, 1, 32, 32) follow their ``requested`` labels (N,).

    Adds to :func:`sample_quality`'s figures ``accuracy``, the share the classifier labels as requested,
    ``per_class_accuracy`` (10,), and ``spread``: for each class, the total variance of the features of
    the samples asked for that class over that of the real reference images of the class, averaged over
    classes. 1.0 means as varied as real data; a model that draws one image per class scores near 0.
    """
    requested = torch.as_tensor(requested).long().cpu()
    if requested.shape != (images.shape[0],):
        raise ValueError(f"need one requested label per image, got {tuple(requested.shape)} for {images.shape[0]}")
    report = sample_quality(images, threshold=threshold, dataset=dataset)
    probs, feats = classifier_outputs(images, load_classifier(dataset))
    hit = probs.argmax(1) == requested
    ref_feats, ref_labels = reference_features(dataset), reference_split(dataset, with_labels=True)[2]
    per_class, ratios = [], []
    for k in range(10):
        mine = requested == k
        per_class.append(float(hit[mine].double().mean()) if mine.any() else float("nan"))
        if int(mine.sum()) >= 2:
            real = ref_feats[ref_labels == k]
            ratios.append(float(feats[mine].var(0).sum() / real.var(0).sum()))
    return {**report, "accuracy": float(hit.double().mean()), "per_class_accuracy": per_class,
            "spread": sum(ratios) / len(ratios) if ratios else float("nan")}


def nearest_distance(images: Tensor, reference: Tensor, chunk: int = 256) -> Tensor:
    """L2 distance (pixels in [-1, 1]) from each image to its nearest image of ``reference``: (N,).

    The near-copy check of a model card: a model that memorised its training digits draws samples much
    nearer to them than real held-out digits are. ``images`` (N, C, H, W) and ``reference`` (M, C, H, W).
    """
    if images.dim() != 4 or reference.dim() != 4 or images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"images {tuple(images.shape)} and reference {tuple(reference.shape)} must both be "
                         "(N, C, H, W) of one image shape")
    ref = reference.flatten(1).double()                                     # (M, C*H*W)
    return torch.cat([torch.cdist(part.flatten(1).double(), ref).min(dim=1).values
                      for part in images.split(chunk)]).float()


def _check_digits(images: Tensor, min_images: int) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1:] != (1, 32, 32):
        raise ValueError(f"expected digit images (N, 1, 32, 32) in [-1, 1], got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
    if images.shape[0] < min_images:
        raise ValueError(f"need at least {min_images} image(s) here, got {images.shape[0]}")
