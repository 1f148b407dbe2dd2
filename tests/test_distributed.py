"""DistributedDataParallel under torchrun: 2 CPU processes with the gloo backend."""

import csv
import subprocess
import sys

import pytest

from ddpm_lib import load_checkpoint


def torchrun(*args, port):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port),
                           "-m", "ddpm_lib", "train", *map(str, args)], capture_output=True, text=True, timeout=300)


def losses(path):
    with open(path) as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume_exactly(tmp_path):
    common = ["--batch-size", 8, "--device", "cpu", "--no-progress", "--checkpoint-every", 3]
    full = torchrun("--steps", 6, "--out", tmp_path / "full", *common, port=29611)
    assert full.returncode == 0, full.stderr
    ckpt = load_checkpoint(tmp_path / "full" / "last.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 6 and len(ckpt["rng"]) == 2   # one RNG state per rank
    assert full.stdout.count("done: step 6") == 1                           # only rank 0 speaks and writes

    part = torchrun("--steps", 3, "--out", tmp_path / "part", *common, port=29612)
    assert part.returncode == 0, part.stderr
    resumed = torchrun("--resume", "--steps", 6, "--out", tmp_path / "part", "--no-progress", port=29613)
    assert resumed.returncode == 0, resumed.stderr
    assert losses(tmp_path / "part" / "log.csv") == losses(tmp_path / "full" / "log.csv")


def test_batch_must_split_across_processes(tmp_path):
    result = torchrun("--steps", 1, "--batch-size", 3, "--device", "cpu", "--out", tmp_path / "r", port=29614)
    assert result.returncode != 0
    assert "batch-size 3 is not divisible by 2 processes" in result.stderr
