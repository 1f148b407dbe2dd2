"""The book's profiles: sizes that keep every chapter short on a CPU and on a GPU."""

import pytest
import torch

from ddpm_lib.book.profile import PROFILES, BookProfile, book_profile


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


@pytest.fixture
def broken_cuda(monkeypatch, tmp_path):
    """A machine with an NVIDIA driver's files where a CUDA build of torch cannot start CUDA."""
    from ddpm_lib import device

    driver = tmp_path / "version"
    driver.write_text("NVRM version: 550.54")
    monkeypatch.setattr(device, "NVIDIA_DRIVER_FILES", (driver,))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("DDPM_PROFILE", raising=False)

    def init():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040).\nPlease update.")
    monkeypatch.setattr(torch.cuda, "init", init)
    return device


def test_a_cuda_failure_says_why_the_profile_fell_back_to_the_cpu(broken_cuda, capsys):
    assert book_profile().name == "cpu"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["DDPM_PROFILE=auto chose the CPU profile: torch " + torch.__version__ + " (CUDA 12.4) cannot "
                   "use the GPU: The NVIDIA driver on your system is too old (found version 11040)."]


def test_hidden_gpus_and_cpu_builds_are_named(broken_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in broken_cuda.cuda_failure()
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "is a CPU-only build" in broken_cuda.cuda_failure()


def test_without_a_gpu_the_cpu_profile_is_chosen_without_a_word(broken_cuda, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(broken_cuda, "NVIDIA_DRIVER_FILES", (tmp_path / "absent",))
    assert broken_cuda.cuda_failure() is None
    assert book_profile().name == "cpu" and capsys.readouterr().err == ""
