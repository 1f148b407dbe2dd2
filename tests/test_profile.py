"""The book's profiles: sizes that keep every chapter short on a CPU and on a GPU."""

import pytest
import torch

from ddpm_lib.profile import PROFILES, BookProfile, book_profile


def test_cpu_profile_is_the_default_without_a_gpu(monkeypatch):
    monkeypatch.delenv("DDPM_PROFILE", raising=False)
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    profile = book_profile()
    assert isinstance(profile, BookProfile) and profile.name == "cpu" and profile.device.type == "cpu"
    assert book_profile("CPU").name == "cpu"


def test_both_profiles_have_the_same_fields_and_stay_short():
    assert set(PROFILES) == {"cpu", "cuda"} and set(PROFILES["cpu"]) == set(PROFILES["cuda"])
    cuda = PROFILES["cuda"]
    # chapter 4 trains a short run in the notebook; the full 20,000-step run is a CLI command
    assert 100 <= cuda["train_steps"] <= 2_000
    assert cuda["train_steps"] * cuda["train_batch"] <= 1_000 * 256
    assert PROFILES["cpu"]["train_steps"] * PROFILES["cpu"]["train_batch"] <= 100 * 64


def test_bad_or_unavailable_profiles_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        book_profile("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            book_profile("cuda")
