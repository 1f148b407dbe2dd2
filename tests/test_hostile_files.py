"""Issue 29, items 5-7: weights checked on load, non-finite samples refused, special and huge files refused
before they are read, and the memory estimate covering --num-classes."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from ddpm_lib.checkpoint import CheckpointError, load_checkpoint
from checkpoint_edits import edited

TRAIN = ["--preset", "tiny", "--batch-size", "8", "--device", "cpu", "--no-progress", "--warmup-steps", "1"]
SAMPLE = ["--n", "2", "--steps", "2", "--device", "cpu", "--no-progress"]


def cli(args, capsys):
    """Run the command line in this process: exit status, stderr's lines, stdout."""
    from ddpm_lib.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


@pytest.fixture
def run2(tiny_run):
    """The shared run (tests/conftest.py): last.pt at step 4, prev.pt at step 2."""
    return tiny_run


FIRST = "time_mlp.0.weight"


def test_the_first_weight_is_the_one_named(run2):
    assert next(iter(torch.load(run2 / "last.pt", weights_only=True)["model"])) == FIRST


# ---------------------------------------------------------------- 5. weights checked on load
@pytest.mark.parametrize("value, problem", [
    (float("nan"), "holds NaN or infinite values"), (float("inf"), "holds NaN or infinite values"),
    (torch.bool, "is bool, not floating point"), (torch.int64, "is int64, not floating point"),
    (torch.complex64, "is complex64, not floating point"),
], ids=["nan", "inf", "bool", "int64", "complex"])
@pytest.mark.parametrize("group", ["model", "EMA"])
def test_weights_that_are_not_finite_floats_are_refused_naming_the_tensor(run2, tmp_path, capsys, value, problem,
                                                                           group):
    def edit(ckpt):
        state = ckpt["model"] if group == "model" else ckpt["ema"]["module"]
        if isinstance(value, float):
            state[FIRST].view(-1)[3] = value
        else:
            state[FIRST] = state[FIRST].to(value)

    bad = edited(run2 / "last.pt", tmp_path / "bad.pt", edit)
    expected = f"{bad} is damaged: its {group} weight '{FIRST}' {problem}"
    with pytest.raises(CheckpointError, match="^" + expected.replace(".", r"\.").replace("(", r"\(")):
        load_checkpoint(bad)
    code, err, _ = cli(["sample", "--checkpoint", bad, *SAMPLE, "--out", tmp_path / "s"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: " + expected)
    assert not (tmp_path / "s").exists()
    code, err, _ = cli(["train", *TRAIN, "--steps", 1, "--init-from", bad, "--out", tmp_path / "r"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: " + expected)


def test_a_resume_from_a_nan_ema_falls_back_to_prev_or_is_refused(run2, tmp_path, capsys):
    out = shutil.copytree(run2, tmp_path / "run")
    edited(out / "last.pt", out / "last.pt", lambda c: c["ema"]["module"][FIRST].fill_(float("nan")))
    code, err, printed = cli(["train", "--resume", "--out", out, "--steps", 3, "--no-progress"], capsys)
    assert code == 0, err
    assert f"its EMA weight '{FIRST}' holds NaN or infinite values; resuming from {out / 'prev.pt'} (step 2)" in err[0]
    assert torch.isfinite(load_checkpoint(out / "last.pt")["ema"]["module"][FIRST]).all()
    alone = tmp_path / "alone"
    alone.mkdir()
    edited(run2 / "last.pt", alone / "last.pt", lambda c: c["ema"]["module"][FIRST].fill_(float("inf")))
    before = (alone / "last.pt").read_bytes()
    code, err, _ = cli(["train", "--resume", "--out", alone, "--steps", 5, "--no-progress"], capsys)
    assert code == 2 and err == [f"error: {alone / 'last.pt'} is damaged: its EMA weight '{FIRST}' holds NaN or "
                                 "infinite values; use an intact copy"]
    assert (alone / "last.pt").read_bytes() == before


def test_samples_that_come_out_non_finite_are_an_error_and_nothing_is_written(run2, tmp_path, capsys):
    """Finite weights can still overflow: the largest float32 in the time embedding's first layer gives +-inf,
    then NaN (inf - inf) in the network's output. Before, such samples were written as black images."""
    def edit(ckpt):
        ckpt["model"][FIRST].fill_(torch.finfo(torch.float32).max)

    big = edited(run2 / "last.pt", tmp_path / "big.pt", edit)
    code, err, _ = cli(["sample", "--checkpoint", big, *SAMPLE, "--weights", "model", "--out", tmp_path / "s"],
                       capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "sampled values are NaN or infinite" in err[0] and str(big) in err[0]
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- 6, 7. special files, huge files, memory
def special_files(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.pt"
    with open(huge, "wb") as f:                                            # sparse: takes no disk space
        f.truncate(5 * 2**30)
    return {"fifo": (fifo, "is a FIFO (named pipe), not a regular file"),
            "dev-zero": ("/dev/zero", "is a character device, not a regular file"),
            "huge": (huge, "is 5.0 GiB, larger than any {what} could be (4.0 GiB)")}


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
@pytest.mark.parametrize("command", ["sample", "resume", "init-from", "metrics", "config"])
def test_special_and_huge_files_are_refused_before_they_are_read(tmp_path, capsys, kind, command):
    """Before, a FIFO blocked forever and /dev/zero grew to 24 GB. In this process: the check comes before any
    open, so a hang would be the bug itself, and an alarm turns it into a failure instead of a stuck suite."""
    import signal

    path, problem = special_files(tmp_path)[kind]
    what = {"metrics": "samples file", "config": "config file"}.get(command, "checkpoint")
    if kind == "huge" and command == "config":
        problem = "is 5.0 GiB, larger than any config file could be (1 MiB)"
    args = {"sample": ["sample", "--checkpoint", path, "--out", tmp_path / "s"],
            "resume": ["train", "--resume", path, "--out", tmp_path / "r"],
            "init-from": ["train", *TRAIN, "--steps", 1, "--init-from", path, "--out", tmp_path / "r"],
            "metrics": ["metrics", path], "config": ["train", "--config", path]}[command]

    def hung(signum, frame):
        raise TimeoutError(f"{command} on {kind} did not return")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        code, err, _ = cli(args, capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {what} {path} {problem.format(what=what)}"), err
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()


def test_num_classes_is_bounded_and_in_the_memory_estimate(tmp_path, capsys, monkeypatch):
    code, err, _ = cli(["train", *TRAIN, "--num-classes", 10_000_000, "--out", tmp_path / "r"], capsys)
    assert code == 2 and err == ["error: num-classes must be an integer from 1 to 1,000,000, got 10000000"]
    import ddpm_lib.cli

    monkeypatch.setattr(ddpm_lib.cli, "available_memory", lambda device: 200 * 2**20)   # 200 MiB free
    code, err, _ = cli(["train", *TRAIN, "--dataset", "mnist-sample", "--num-classes", 1_000_000, "--steps", 1,
                        "--out", tmp_path / "r"], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: --batch-size 8 with --num-classes 1000000 needs at least") and \
        err[0].endswith("lower --num-classes")
    assert not (tmp_path / "r").exists()                                   # refused before the model was built


def test_a_fifo_checkpoint_does_not_hang_a_real_process(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "ddpm_lib", "sample", "--checkpoint", str(fifo), "--out",
                             str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr == (f"error: checkpoint {fifo} is a FIFO (named pipe), not a "
                                                        "regular file; give the path of a file\n")
