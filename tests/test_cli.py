"""The command line, end to end in real subprocesses, and its one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddpm_lib.checkpoint import export_weights, load_checkpoint


def run(*args, cwd=None, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ddpm_lib", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run on the bundled digits, made by the CLI itself."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = run("train", "--dataset", "mnist-sample", "--preset", "tiny", "--steps", 4, "--batch-size", 8,
                 "--checkpoint-every", 2, "--out", out, "--device", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    return out


def test_train_then_sample_end_to_end(trained, tmp_path):
    assert (trained / "last.pt").is_file() and (trained / "log.csv").is_file()
    assert load_checkpoint(trained / "last.pt")["step"] == 4
    result = run("sample", "--checkpoint", trained / "last.pt", "--n", 5, "--steps", 8, "--seed", 3,
                 "--out", tmp_path / "s", "--device", "cpu", "--weights", "model", "--no-progress")
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "s" / "samples.npz") as f:
        images = f["images"]
    assert images.dtype == np.uint8 and images.shape == (5, 32, 32)
    png = (tmp_path / "s" / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    again = run("sample", "--checkpoint", trained / "last.pt", "--n", 5, "--steps", 8, "--seed", 3,
                "--out", tmp_path / "s2", "--device", "cpu", "--weights", "model", "--no-progress")
    with np.load(tmp_path / "s2" / "samples.npz") as f:
        assert np.array_equal(f["images"], images)                         # same seed, same images


def test_sampler_and_eta_are_used_and_recorded(trained, tmp_path):
    common = ["--checkpoint", trained / "last.pt", "--n", 3, "--steps", 4, "--seed", 1, "--device", "cpu",
              "--weights", "model", "--no-progress"]
    result = run("sample", *common, "--sampler", "ddim", "--eta", 0.5, "--out", tmp_path / "d")
    assert result.returncode == 0, result.stderr
    assert "(ddim, 4 steps, eta 0.5, seed 1)" in result.stdout
    with np.load(tmp_path / "d" / "samples.npz") as f:
        assert (str(f["sampler"]), float(f["eta"]), int(f["steps"])) == ("ddim", 0.5, 4)
        assert "variance" not in f.files
        ddim_images = f["images"]
    result = run("sample", *common, "--out", tmp_path / "p")               # another checkpoint: ddpm
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "p" / "samples.npz") as f:
        assert (str(f["sampler"]), str(f["variance"])) == ("ddpm", "beta") and "eta" not in f.files
        assert not np.array_equal(f["images"], ddim_images)


def test_shipped_model_on_a_cpu_defaults_to_ddim(tmp_path, monkeypatch):
    from ddpm_lib.cli import SHIPPED_CPU_SAMPLER, SHIPPED_CPU_STEPS, main

    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--n", "1", "--device", "cpu", "--no-progress"]) == 0
    with np.load(tmp_path / "samples" / "samples.npz") as f:
        assert (str(f["sampler"]), int(f["steps"]), float(f["eta"])) == (SHIPPED_CPU_SAMPLER, SHIPPED_CPU_STEPS, 0.0)


def test_resume_continues_to_more_steps(trained):
    result = run("train", "--resume", "--out", trained, "--steps", 6, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout and load_checkpoint(trained / "last.pt")["step"] == 6


def test_yaml_config_is_read(tmp_path):
    cfg = tmp_path / "run.yml"
    cfg.write_text(f"steps: 2\nbatch_size: 4\nout: {tmp_path / 'y'}\ndevice: cpu\nprogress: false\n")
    result = run("train", "--config", cfg)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / "y" / "last.pt")["config"]["batch_size"] == 4


@pytest.mark.parametrize("args, expected", [
    (["sample", "--n", "0"], "--n: must be at least 1, got 0"),
    (["sample", "--n", "-3"], "--n: must be at least 1, got -3"),
    (["sample", "--n", "many"], "--n: expected a whole number"),
    (["sample", "--steps", "0"], "--steps: must be at least 1"),
    (["train", "--dataset", "no-such-set"], "invalid choice: 'no-such-set' (choose from 'mnist-sample'"),
    (["train", "--batch-size", "0"], "--batch-size: must be at least 1"),
    (["train", "--lr", "-1"], "--lr: must be a positive number"),
    (["train", "--preset", "huge"], "invalid choice: 'huge'"),
    (["sample", "--checkpoint", "nowhere/ckpt.pt"], "checkpoint nowhere/ckpt.pt does not exist"),
    (["sample", "--sampler", "ddpm", "--eta", "0.5"], "--eta is for --sampler ddim"),
    (["sample", "--eta", "-1"], "--eta must be a number >= 0, got -1.0"),
    (["sample", "--eta", "nan"], "--eta must be a number >= 0"),
    (["sample", "--eta", "lots"], "--eta: invalid float value: 'lots'"),
    (["sample", "--sampler", "ddim", "--variance", "posterior"], "--variance is for --sampler ddpm"),
    (["sample", "--sampler", "plms"], "invalid choice: 'plms'"),
    (["train", "--device", "cuda:7"] if not torch.cuda.is_available() else ["train", "--device", "tpu"],
     "device"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_is_one_line_without_traceback(args, expected, tmp_path, monkeypatch, capsys):
    """In-process through cli.main (fast); test_files_that_are_not_checkpoints_are_named runs a real process."""
    from ddpm_lib.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]


def test_files_that_are_not_checkpoints_are_named(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    result = run("sample", "--checkpoint", junk, "--out", tmp_path / "o")
    assert result.returncode != 0 and f"{junk} is not a ddpm_lib checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_or_invalid_output_folder(tmp_path, trained):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("sample", "--checkpoint", trained / "last.pt", "--out", blocker, "--n", 1)
    assert result.returncode == 2 and "exists and is not a folder" in result.stderr
    result = run("sample", "--checkpoint", trained / "last.pt", "--out", blocker / "sub", "--n", 1)
    assert result.returncode == 2 and "cannot create output folder" in result.stderr


def test_resume_refuses_a_weights_file_and_another_run(tmp_path, trained):
    slim = export_weights(load_checkpoint(trained / "last.pt"), tmp_path / "w.pt")
    result = run("train", "--resume", slim, "--out", tmp_path / "r", "--steps", 9)
    assert result.returncode != 0 and "holds weights only" in result.stderr
    result = run("train", "--resume", trained / "last.pt", "--out", tmp_path / "r2", "--steps", 9,
                 "--batch-size", 16, "--no-progress")
    assert result.returncode != 0 and "belongs to another run: batch_size=8 (now 16)" in result.stderr
