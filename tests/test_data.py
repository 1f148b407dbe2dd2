"""Data sets: the bundled digits, and the torchvision and Debian paths tested on files built here."""

import gzip
import json
import urllib.error

import numpy as np
import pytest
import torch

from ddpm_lib import data as data_mod
from ddpm_lib.data import DatasetUnavailable, fingerprint, load_dataset, to_model_range


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format that MNIST files use."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def bundled():
    with np.load(data_mod.MNIST_SAMPLE) as f:
        return f["images"], f["labels"], f["split"]


def test_mnist_sample_is_real_digits_with_a_disjoint_held_out_split(bundled):
    images, labels, split = bundled
    x, y = load_dataset("mnist-sample", with_labels=True)
    held = load_dataset("mnist-sample", train=False)
    assert x.shape == (9000, 1, 32, 32) and held.shape == (1000, 1, 32, 32)
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.all(x[:, :, :2] == -1) and torch.all(x[:, :, -2:] == -1)  # 28 -> 32 padding is black
    assert np.bincount(labels[split == 1]).tolist() == [100] * 10
    assert len(set(y[:20].tolist())) >= 6                                # shuffled: the first few are varied
    assert sorted(y.tolist()) == sorted(labels[split == 0].tolist())
    train_set = {img.tobytes() for img in images[split == 0]}
    assert not any(img.tobytes() in train_set for img in images[split == 1])
    provenance = json.loads((data_mod.ASSETS / "mnist_sample.json").read_text())
    assert provenance["count"] == len(images) == 10000
    assert provenance["cross_check"]["found_in_this_set"] == 5000


def test_to_model_range_round_trips_pixels():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    x = to_model_range(pixels, size=16)
    assert x.shape == (1, 1, 16, 16) and x.min() == -1 and x.max() == 1
    assert torch.equal(data_mod.to_uint8(x)[0, 0], torch.from_numpy(pixels[0]))
    with pytest.raises(ValueError, match="uint8"):
        to_model_range(np.zeros((1, 28, 28), dtype=np.float32))


def test_torchvision_mnist_path_reads_files_built_here(tmp_path, bundled):
    images, labels, split = bundled
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    tr, te = split == 0, split == 1
    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(images[tr][:300]))
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels[tr][:300]))
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images[te][:100]))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels[te][:100]))
    x, y = load_dataset("mnist", root=tmp_path, with_labels=True)
    assert x.shape == (300, 1, 32, 32)
    assert torch.equal(x, to_model_range(images[tr][:300]))
    assert torch.equal(y, torch.as_tensor(labels[tr][:300], dtype=torch.long))
    assert load_dataset("mnist", root=tmp_path, train=False).shape == (100, 1, 32, 32)


def test_fashion_mnist_from_the_debian_location(tmp_path, bundled, monkeypatch):
    images, labels, _ = bundled
    for prefix, n in (("train", 50), ("t10k", 20)):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images[:n])))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels[:n])))
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", tmp_path)
    x = load_dataset("fashion-mnist")
    assert x.shape == (50, 1, 32, 32) and torch.equal(x, to_model_range(images[:50]))
    assert load_dataset("fashion-mnist", train=False).shape == (20, 1, 32, 32)


def test_offline_download_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "urlretrieve", no_network, raising=False)
    monkeypatch.setattr(tv_utils, "_urlretrieve", no_network, raising=False)
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", root=tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "mnist-sample" in message
    with pytest.raises(ValueError, match="choose one of"):
        load_dataset("imagenet")


def test_fingerprint_changes_with_the_data():
    x = load_dataset("mnist-sample")[:10]
    assert fingerprint(x) == fingerprint(load_dataset("mnist-sample")[:10])   # a fixed order
    assert fingerprint(x) == fingerprint(x.clone())
    assert fingerprint(x) != fingerprint(x[:9])
    assert fingerprint(x) != fingerprint(torch.flip(x, [0]))


def test_fashion_class_names_match_torchvision():
    from torchvision import datasets

    from ddpm_lib.data import FASHION_MNIST_CLASSES

    assert [c.lower() for c in datasets.FashionMNIST.classes] == [c.lower() for c in FASHION_MNIST_CLASSES]


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([True, False]), r"^labels must be integers, got torch\.bool$"),
    ([0.0, 1.0], r"^labels must be integers, got torch\.float32$"),
    ([0, 1, 2], r"^labels must be one integer or 2 of them, got shape \(3,\)$"),
    ([0, 10], r"^labels must lie in 0\.\.9 \(num_classes=10\), got values from 0 to 10$"),
])
def test_training_and_sampling_check_labels_by_one_rule(labels, message):
    from ddpm_lib.sampling import check_labels as sampling_labels

    class Conditional:
        num_classes = 10

    with pytest.raises(ValueError, match=message):
        data_mod.check_labels(labels, 2, 10)
    with pytest.raises(ValueError, match=message):
        sampling_labels(labels, 2, Conditional())
    assert torch.equal(data_mod.check_labels(3, 4, 10), torch.full((4,), 3))   # one int repeats
