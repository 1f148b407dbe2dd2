"""Watching a run: TensorBoard scalars and sample grids, through a resume, and the flag without the package."""

import functools
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_lib import NoiseSchedule, RunConfig, Trainer, UNet, load_checkpoint
from ddpm_lib.monitor import TENSORBOARD_MISSING, TensorBoardMissing, draw_samples, sample_interval

SCALARS = ["loss/raw", "loss/smoothed", "train/grad_norm", "train/lr", "train/ema_decay", "train/skipped_steps",
           "train/img_per_s", "samples/seconds"]


def events(out):
    """Everything TensorBoard would show for OUT/tensorboard: {tag: [(step, value)]}, images as (step, w, h)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    found = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags["scalars"]}
    found.update({tag: [(e.step, e.width, e.height) for e in acc.Images(tag)] for tag in tags["images"]})
    return found


def steps(points):
    return [p[0] for p in points]


def grids(out):
    return sorted(p.name for p in (out / "samples").glob("*.png"))


@pytest.fixture
def config(run_config):
    """This module's runs: TensorBoard on, a grid of 2 sampling steps every 2 training steps."""
    return functools.partial(run_config, tensorboard=True, sample_every=2, sample_steps=2)


def test_event_file_holds_the_scalars_and_grids_at_the_expected_steps(tmp_path, digits, config):
    rows = Trainer(config(), data=digits).train()
    found = events(tmp_path / "run")
    assert sorted(found) == sorted(SCALARS + ["samples"])
    assert found["loss/raw"] == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in rows]   # float32 there
    assert found["train/grad_norm"] == [(r["step"], pytest.approx(r["grad_norm"], rel=1e-6)) for r in rows]
    # One point per flush of the log: every log_every = 2 steps, and at the checkpoints (3 and 6).
    assert steps(found["loss/smoothed"]) == steps(found["train/lr"]) == steps(found["train/img_per_s"]) == [2, 3, 4, 6]
    losses = {r["step"]: r["loss"] for r in rows}
    assert found["loss/smoothed"][-1][1] == pytest.approx((losses[5] + losses[6]) / 2, rel=1e-6)
    assert [v for _, v in found["train/lr"]] == pytest.approx([r["lr"] for r in rows if r["step"] in (2, 3, 4, 6)])
    assert [v for _, v in found["train/ema_decay"]] == pytest.approx([2 / 11, 3 / 12, 4 / 13, 6 / 15])
    assert [v for _, v in found["train/skipped_steps"]] == [0, 0, 0, 0]
    assert found["samples"] == [(2, 276, 276), (4, 276, 276), (6, 276, 276)]   # 4 x 4 digits, twice the size
    assert steps(found["samples/seconds"]) == [2, 4, 6]
    assert grids(tmp_path / "run") == ["step_000002.png", "step_000004.png", "step_000006.png"]
    assert Image.open(tmp_path / "run" / "samples" / "step_000006.png").size == (276, 276)


def test_watching_does_not_change_the_run(tmp_path, digits, config):
    """Sampling has its own generator and forks torch's: losses, weights and random state are the same."""
    watched = Trainer(config("watched"), data=digits)
    plain = Trainer(config("plain", tensorboard=False, sample_every=0), data=digits)
    assert [r["loss"] for r in watched.train()] == [r["loss"] for r in plain.train()]
    for a, b in zip(watched.ema.module.parameters(), plain.ema.module.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(watched.generator.get_state(), plain.generator.get_state())
    assert not (tmp_path / "plain" / "samples").exists() and not (tmp_path / "plain" / "tensorboard").exists()


def test_resume_continues_the_same_run_without_repeating_steps(tmp_path, digits, config):
    full = Trainer(config("full"), data=digits).train()
    # A run checkpoints at step 3, goes on to step 5 (logging and drawing past its checkpoint) and is stopped;
    # it is then resumed from the step-3 checkpoint: what it wrote after step 3 must not show twice.
    part = tmp_path / "part"
    killed = Trainer(config("part"), data=digits)
    killed.train(steps=3)
    shutil.copy(part / "last.pt", tmp_path / "at_step_3.pt")
    killed.train(steps=5)
    assert steps(events(part)["loss/raw"]) == [1, 2, 3, 4, 5] and "step_000004.png" in grids(part)
    shutil.copy(tmp_path / "at_step_3.pt", part / "last.pt")
    resumed = Trainer.resume(part / "last.pt", {"steps": 6}, data=digits)
    assert resumed.step == 3
    rest = resumed.train()
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[3:]]        # still exact with sampling on
    found, expected = events(part), events(tmp_path / "full")
    for tag in SCALARS + ["samples"]:
        assert steps(found[tag]) == steps(expected[tag]), tag                # the same axis, no step twice
    for tag in ("loss/raw", "loss/smoothed", "train/grad_norm", "train/lr", "train/ema_decay"):
        assert found[tag] == expected[tag], tag
    assert grids(part) == grids(tmp_path / "full")
    for name in grids(part):                                               # redrawn identically
        assert np.array_equal(np.asarray(Image.open(part / "samples" / name)),
                              np.asarray(Image.open(tmp_path / "full" / "samples" / name))), name
    assert len(list((part / "tensorboard").glob("events.out.tfevents.*"))) == 3   # one file per train() call


@pytest.mark.slow
def test_cli_train_and_resume_write_one_run(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    common = ["--device", "cpu", "--no-progress", "--batch-size", 4, "--log-every", 2, "--sample-steps", 2]
    first = run_cli("train", "--steps", 4, "--checkpoint-every", 2, "--tensorboard", "--sample-every", 2,
                    "--out", out, *common)
    assert first.returncode == 0, first.stderr
    again = run_cli("train", "--resume", "--out", out, "--steps", 6, "--no-progress")   # settings from last.pt
    assert again.returncode == 0, again.stderr
    found = events(out)
    assert steps(found["loss/raw"]) == [1, 2, 3, 4, 5, 6] and steps(found["samples"]) == [2, 4, 6]
    assert grids(out) == ["step_000002.png", "step_000004.png", "step_000006.png"]
    assert load_checkpoint(out / "last.pt")["config"]["tensorboard"] is True


def run_cli(*args, prelude=""):
    code = f"import sys; {prelude}from ddpm_lib.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=600)


def test_the_flag_without_the_package_is_one_line(tmp_path, monkeypatch, capsys, config):
    from ddpm_lib.cli import main

    monkeypatch.setitem(sys.modules, "tensorboard", None)                 # as if it were not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code = main(["train", "--tensorboard", "--steps", "1", "--out", str(tmp_path / "r"), "--device", "cpu"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and lines == [f"error: {TENSORBOARD_MISSING}"]
    assert not (tmp_path / "r" / "last.pt").exists()
    with pytest.raises(TensorBoardMissing, match="pip install tensorboard"):
        Trainer(config())
    monkeypatch.undo()
    # The same in a process of its own, where tensorboard was never imported; grids alone do not need it.
    hide = "sys.modules['tensorboard'] = None; "
    result = run_cli("train", "--tensorboard", "--steps", 1, "--out", tmp_path / "p", "--device", "cpu", prelude=hide)
    assert result.returncode == 1 and result.stderr.strip() == f"error: {TENSORBOARD_MISSING}", result.stderr
    result = run_cli("train", "--steps", 1, "--batch-size", 2, "--sample-every", 1, "--sample-steps", 1,
                     "--out", tmp_path / "g", "--device", "cpu", "--no-progress", prelude=hide)
    assert result.returncode == 0, result.stderr
    assert grids(tmp_path / "g") == ["step_000001.png"] and not (tmp_path / "g" / "tensorboard").exists()


def test_importing_ddpm_lib_does_not_import_tensorboard():
    code = ("import sys, ddpm_lib, ddpm_lib.training, ddpm_lib.monitor, ddpm_lib.cli; "
            "sys.exit(any(m.startswith(('tensorboard', 'torch.utils.tensorboard')) for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_when_grids_are_drawn():
    assert sample_interval(RunConfig()) == 0                               # off unless asked for
    assert sample_interval(RunConfig(tensorboard=True, checkpoint_every=500)) == 500   # with the checkpoints
    assert sample_interval(RunConfig(tensorboard=True, sample_every=0)) == 0
    assert sample_interval(RunConfig(sample_every=250)) == 250             # PNGs without TensorBoard
    with pytest.raises(ValueError, match="sample-every must be an integer >= 0"):
        RunConfig(sample_every=-1).validate()
    with pytest.raises(ValueError, match="sample-steps must be an integer >= 1"):
        RunConfig(sample_steps=0).validate()
    with pytest.raises(ValueError, match="tensorboard must be true or false"):
        RunConfig(tensorboard="yes").validate()


def test_a_conditional_model_draws_a_row_per_label():
    model = UNet.from_preset("tiny", num_classes=10)
    with torch.no_grad():
        model.label_embed.weight.normal_()                                 # make the labels matter
    state = torch.get_rng_state()
    images = draw_samples(model, NoiseSchedule.linear(20), (1, 32, 32), steps=2)
    assert torch.equal(torch.get_rng_state(), state)                       # torch's stream untouched
    assert images.shape == (40, 1, 32, 32)                                 # 10 labels x 4
    rows = images.view(10, 4, -1)
    assert not torch.equal(rows[0], rows[1])
    again = draw_samples(model, NoiseSchedule.linear(20), (1, 32, 32), steps=2)
    assert torch.equal(images, again)                                      # a fixed seed
