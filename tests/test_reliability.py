"""What must not go wrong: killed runs, non-finite losses, mixed precision, EMA and schedule mix-ups."""

import csv
import functools
import signal
import subprocess
import sys
import time

import pytest
import torch

from ddpm_lib import NoiseSchedule, RunConfig, Trainer, TrainingDiverged, UNet, load_checkpoint, model_from_checkpoint
from ddpm_lib.checkpoint import CheckpointError


def cli(*args):
    return [sys.executable, "-m", "ddpm_lib", *map(str, args)]


def log_losses(path):
    with open(path) as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f)]


def wait_for_checkpoint(path, min_step, proc, timeout=300):          # generous: the CPU may be shared
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before step {min_step}: {proc.stderr.read()}")
        if path.exists():
            try:
                if load_checkpoint(path)["step"] >= min_step:
                    return
            except CheckpointError:
                raise                                                      # a torn file would land here
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_losses(tmp_path):
    common = ["--steps", 24, "--batch-size", 4, "--checkpoint-every", 4, "--device", "cpu", "--no-progress",
              "--seed", 3]
    full = subprocess.run(cli("train", *common, "--out", tmp_path / "full"), capture_output=True, text=True)
    assert full.returncode == 0, full.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli("train", *common, "--out", killed), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for_checkpoint(killed / "last.pt", 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = load_checkpoint(killed / "last.pt")["step"]
    assert 8 <= step_at_kill < 24

    resumed = subprocess.run(cli("train", "--resume", "--out", killed, "--steps", 24, "--no-progress"),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {killed / 'last.pt'} at step {step_at_kill}" in resumed.stdout
    assert log_losses(killed / "log.csv") == log_losses(tmp_path / "full" / "log.csv")   # bit-identical losses
    assert load_checkpoint(killed / "last.pt")["step"] == 24


@pytest.mark.slow
def test_checkpoint_survives_kills_at_any_moment(tmp_path):
    """Checkpoint every step and kill at arbitrary moments: last.pt must always load."""
    out = tmp_path / "run"
    for i, delay in enumerate([0.0, 0.13, 0.29, 0.41]):
        proc = subprocess.Popen(cli("train", "--steps", 400, "--batch-size", 2, "--checkpoint-every", 1,
                                    "--device", "cpu", "--no-progress", "--out", out,
                                    *(["--resume"] if i else [])),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_checkpoint(out / "last.pt", 2 + 3 * i, proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(out / "last.pt")                            # never torn
        assert ckpt["step"] >= 2 + 3 * i
    target = load_checkpoint(out / "last.pt")["step"] + 2
    finish = subprocess.run(cli("train", "--resume", "--out", out, "--steps", target, "--no-progress"),
                            capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "log.csv", "prev.pt"]   # no temp or lock file


class Poisoned(UNet):
    """A UNet whose output becomes NaN while ``poison`` is set."""

    poison = False

    def forward(self, x, t):
        out = super().forward(x, t)
        return out * float("nan") if self.poison else out


@pytest.fixture
def config(run_config):
    """This module's runs: 4 steps, checkpoints every 2, stop after 3 bad steps in a row."""
    return functools.partial(run_config, steps=4, checkpoint_every=2, warmup_steps=1, max_bad_steps=3,
                             log_every=RunConfig.log_every)


def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp_path, digits, config):
    torch.manual_seed(0)
    model = Poisoned()
    trainer = Trainer(config(), model=model, data=digits)
    trainer.train()                                                        # 4 good steps, checkpoint at 4
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ema = [p.clone() for p in trainer.ema.module.parameters()]
    adam = {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"][0].items()}
    model.poison = True
    trainer.train_step()                                                   # skipped on the device, no sync
    (row,) = trainer.collect()
    assert row["skipped"] == 1 and trainer.skipped_steps == 1 and row["loss"] != row["loss"]   # NaN logged
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())   # untouched
    assert all(torch.equal(a, b) for a, b in zip(ema, trainer.ema.module.parameters()))
    assert all(torch.equal(adam[k], v) for k, v in trainer.optimizer.state_dict()["state"][0].items())
    model.poison = False
    trainer.train_step()                                                   # a good step resets the streak
    model.poison = True
    for _ in range(5):                                                     # the streak is judged when collected
        trainer.train_step()
    with pytest.raises(TrainingDiverged, match="not finite for 3 steps in a row.*up to step 9.*last good"):
        trainer.collect()
    assert trainer.skipped_steps == 4
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")                   # the last good one is intact
    assert ckpt["step"] == 4 and ckpt["skipped_steps"] == 0
    with open(tmp_path / "run" / "log.csv") as f:                          # logged up to the verdict
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 10))


def test_training_stops_by_itself_when_the_loss_stays_nan(tmp_path, digits, config):
    model = Poisoned()
    model.poison = True
    trainer = Trainer(config(steps=50, log_every=5), model=model, data=digits)
    with pytest.raises(TrainingDiverged):
        trainer.train()
    assert trainer.step <= 5                                               # stopped at the first read-back
    saved = load_checkpoint(tmp_path / "run" / "last.pt")                  # written at step 2, before the verdict
    assert all(torch.isfinite(v).all() for v in saved["model"].values())   # skipped steps never reach the weights


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_keeps_the_loss_float32_and_close_to_fp32(tmp_path, digits, precision, dtype, config):
    """bf16, and fp16 with a gradient scaler (GPUs without bf16: T4, V100), forced on the CPU for the test."""
    runs = {}
    for name in ("fp32", precision):
        trainer = Trainer(config(steps=12, out=str(tmp_path / name), precision=name), data=digits)
        assert (trainer.scaler is not None) == (name == "fp16")
        with trainer._autocast():
            out = trainer.model(digits[:2], torch.tensor([1, 2]))
        assert out.dtype == (dtype if name == precision else torch.float32)
        runs[name] = [r["loss"] for r in trainer.train()]
        assert trainer.skipped_steps <= 1                                  # fp16: the scaler may overflow once
    assert all(torch.isfinite(torch.tensor(v)).all() for v in runs.values())
    diffs = [abs(a - b) for a, b in zip(runs["fp32"], runs[precision])]
    # bf16 keeps 8 bits of mantissa (relative error 2^-8 ~ 0.4% per op) and fp16 11; over 12 steps of a loss near
    # 1 the curves stay within a few percent. 0.05 is several times what either shows here.
    assert max(diffs) < 0.05, diffs


def test_fp16_scaler_state_is_checkpointed_and_resumed(tmp_path, digits, config):
    straight = Trainer(config(steps=6, checkpoint_every=3, out=str(tmp_path / "a"), precision="fp16"),
                       data=digits)
    losses = [r["loss"] for r in straight.train()]
    first = Trainer(config(steps=3, checkpoint_every=3, out=str(tmp_path / "b"), precision="fp16"),
                    data=digits)
    first.train()
    assert "scaler" in load_checkpoint(tmp_path / "b" / "last.pt")
    second = Trainer.resume(tmp_path / "b" / "last.pt", {"steps": 6}, data=digits)
    assert second.scaler.get_scale() == first.scaler.get_scale()
    assert [r["loss"] for r in first.train()] == [] and losses[3:] == [r["loss"] for r in second.train()]


def test_sampling_refuses_another_schedule(tmp_path, digits, config):
    Trainer(config(), data=digits).train()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    with pytest.raises(CheckpointError, match="trained with NoiseSchedule.linear"):
        model_from_checkpoint(ckpt, weights="model", schedule=NoiseSchedule.cosine())
    model, schedule = model_from_checkpoint(ckpt, weights="model", schedule=NoiseSchedule.linear())
    assert schedule.same_as(NoiseSchedule.linear())


def test_resume_refuses_another_preset_or_dataset(tmp_path):
    out = tmp_path / "run"
    ok = subprocess.run(cli("train", "--steps", 2, "--batch-size", 2, "--device", "cpu", "--no-progress",
                            "--out", out), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    for flags, message in ([("--preset", "tutorial"), "preset='tiny' (now 'tutorial')"],
                           [("--dataset", "cifar10"), "dataset='mnist-sample' (now 'cifar10')"]):
        result = subprocess.run(cli("train", "--resume", "--out", out, "--steps", 4, *flags), capture_output=True,
                                text=True)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    early = subprocess.run(cli("sample", "--checkpoint", out / "last.pt", "--n", 2, "--steps", 2, "--device", "cpu",
                               "--out", tmp_path / "s", "--no-progress"), capture_output=True, text=True)
    assert early.returncode == 0 and "warning:" in early.stderr and "EMA weights average only 2" in early.stderr


def test_library_errors_name_the_problem():
    s = NoiseSchedule.linear()
    with pytest.raises(ValueError, match="NaN"):
        Trainer(RunConfig(device="cpu", progress=False), data=torch.full((4, 1, 32, 32), float("nan")))
    if torch.cuda.is_available():                                          # pragma: no cover - GPU machines
        with pytest.raises(ValueError, match="schedule.to"):
            s.q_sample(torch.zeros(1, 1, 4, 4, device="cuda"), torch.zeros(1, dtype=torch.long, device="cuda"))
    with pytest.raises(ValueError, match="is on"):
        s.q_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, dtype=torch.long, device="meta"))


def read_stderr_until(proc, pattern, timeout=240):
    """Read a running process's stderr (progress bars included) until ``pattern`` matches; returns the match."""
    import os
    import re

    os.set_blocking(proc.stderr.fileno(), False)
    seen, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        try:
            seen += os.read(proc.stderr.fileno(), 65536)
        except BlockingIOError:
            pass
        found = list(re.finditer(pattern, seen.decode(errors="replace")))
        if found:
            return found[-1]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"never saw {pattern!r}: {seen[-2000:]!r}")


@pytest.mark.slow
def test_a_second_trainer_is_locked_out_and_sigterm_saves_then_stops(tmp_path):
    """Issue 19: two trainers on one --out interleaved log.csv (and one died); SIGTERM stopped a run silently."""
    out = tmp_path / "run"
    common = ["--batch-size", 2, "--device", "cpu", "--warmup-steps", 0, "--out", out]
    first = subprocess.Popen(cli("train", "--steps", 100_000, "--checkpoint-every", 100_000, *common),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        read_stderr_until(first, r"training")
        second = subprocess.run(cli("train", "--steps", 5, "--no-progress", *common), capture_output=True, text=True)
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip() == (f"error: {out} is in use by another process (pid {first.pid}); wait for it "
                                         "to finish or stop it, or choose another --out")
        read_stderr_until(first, r" (1[2-9]|[2-9]\d|\d{3,})/100000")     # more than 10 steps since none was saved
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    finally:
        first.kill()
    message = first.stderr.read().decode().split("\r")[-1].strip().splitlines()[-1]
    assert first.returncode == 128 + signal.SIGTERM, message
    step = load_checkpoint(out / "last.pt")["step"]
    assert message == (f"error: interrupted (SIGTERM) at step {step}; saved {out / 'last.pt'} there; "
                       "continue with --resume")
    assert [s for s, _ in log_losses(out / "log.csv")] == list(range(1, step + 1))
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "log.csv"]   # the lock file is gone


@pytest.mark.slow
def test_sigint_while_sampling_says_no_samples_were_written(tmp_path):
    """Issue 19: SIGINT during `sample` printed the training message ('the last checkpoint written is intact')."""
    proc = subprocess.Popen(cli("sample", "--sampler", "ddpm", "--n", 2, "--steps", 1000, "--device", "cpu",
                                "--out", tmp_path / "s"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        read_stderr_until(proc, r"sampling")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    last_line = proc.stderr.read().decode().split("\r")[-1].strip().splitlines()[-1]
    assert proc.returncode == 130
    assert last_line == "error: interrupted (SIGINT); no samples were written"
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_checkpoint(tmp_path):
    """Issue 19: `ulimit -f` (and a full disk) gave 'RuntimeError: [enforce fail at inline_container.cc:672]'."""
    import resource

    out = tmp_path / "run"
    made = subprocess.run(cli("train", "--steps", 2, "--batch-size", 2, "--device", "cpu", "--no-progress",
                              "--out", out), capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    before = (out / "last.pt").read_bytes()

    def limit_file_size():                                                 # a checkpoint is about 6 MB
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    full = subprocess.run(cli("train", "--resume", "--out", out, "--steps", 4, "--no-progress"), capture_output=True,
                          text=True, preexec_fn=limit_file_size)
    assert full.returncode == 1 and "Traceback" not in full.stderr
    assert full.stderr.strip().splitlines()[-1] == (f"error: file-size limit (ulimit -f) reached writing "
                                                   f"{out / 'last.pt'}; the previous checkpoint is intact")
    assert (out / "last.pt").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "log.csv"]   # no temporary file left


def test_the_nan_guard_does_not_claim_a_checkpoint_that_was_never_written(tmp_path, digits, config):
    """Issue 19: the guard said 'so is the checkpoint OUT/last.pt' when none had been written."""
    model = Poisoned()
    model.poison = True
    trainer = Trainer(config(steps=50, log_every=5, checkpoint_every=100), model=model, data=digits)
    with pytest.raises(TrainingDiverged, match="last good ones; no checkpoint was written yet; try a lower") as err:
        trainer.train()
    assert "last.pt" not in str(err.value) and not (tmp_path / "run" / "last.pt").exists()
