"""The command line, end to end in real subprocesses, and its one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_lib.checkpoint import export_weights, load_checkpoint
from ddpm_lib.data import to_uint8


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
    assert again.returncode == 0, again.stderr
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


def test_the_ode_samplers_from_the_command_line(trained, tmp_path):
    """--sampler heun / dpm++ (ddpm_lib.ode): --steps counts network calls, the sampler is recorded, and the
    images are those of the library call with the same seed."""
    from ddpm_lib import dpm_solver_sample, heun_sample, model_from_checkpoint

    common = ["--checkpoint", trained / "last.pt", "--n", 2, "--seed", 4, "--device", "cpu", "--weights", "model",
              "--no-progress"]
    model, schedule = model_from_checkpoint(load_checkpoint(trained / "last.pt"), weights="model")
    for name, solve in (("heun", heun_sample), ("dpm++", dpm_solver_sample)):
        result = run("sample", *common, "--sampler", name, "--steps", 3, "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
        assert f"({name}, 3 steps, seed 4)" in result.stdout
        with np.load(tmp_path / name / "samples.npz") as f:
            assert (str(f["sampler"]), int(f["steps"])) == (name, 3) and "eta" not in f.files
            images = f["images"]
        direct = solve(model, schedule, (2, 1, 32, 32), steps=3, seed=4)
        assert np.abs(images.astype(int) - to_uint8(direct)[:, 0].numpy().astype(int)).max() <= 1
    shipped = run("sample", "--sampler", "heun", "--n", 1, "--device", "cpu", "--no-progress", "--out",
                  tmp_path / "shipped")                                     # the shipped model, no --steps
    assert shipped.returncode == 0 and "(heun, 20 steps, seed 0)" in shipped.stdout, shipped.stderr


@pytest.mark.parametrize("name", [[], ["--checkpoint", "mnist-conditional"]], ids=["default", "conditional"])
def test_shipped_models_on_a_cpu_default_to_the_measured_sampler(name, tmp_path, monkeypatch):
    """No --sampler: the default chosen by measurement (appendix A1 asserts the rule); --sampler ddim
    alone keeps eta 0 and its own 50 steps."""
    from ddpm_lib.checkpoint import SHIPPED_CPU_ETA, SHIPPED_CPU_SAMPLER, SHIPPED_CPU_STEPS
    from ddpm_lib.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["sample", *name, "--n", "1", "--device", "cpu", "--no-progress"]) == 0
    with np.load(tmp_path / "samples" / "samples.npz") as f:
        assert (str(f["sampler"]), int(f["steps"])) == (SHIPPED_CPU_SAMPLER, SHIPPED_CPU_STEPS)
        if SHIPPED_CPU_SAMPLER == "ddim":
            assert float(f["eta"]) == SHIPPED_CPU_ETA
        if name:                                                           # the card's default guidance
            assert float(f["guidance"]) == load_checkpoint("mnist-conditional")["default_guidance"]
    if not name:
        assert main(["sample", "--sampler", "ddim", "--n", "1", "--device", "cpu", "--no-progress",
                     "--out", "explicit"]) == 0
        with np.load(tmp_path / "explicit" / "samples.npz") as f:
            assert (str(f["sampler"]), int(f["steps"]), float(f["eta"])) == ("ddim", 50, 0.0)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """A 2-step class-conditional run (10 labels) on the bundled digits, made by the CLI."""
    out = tmp_path_factory.mktemp("cli") / "cond"
    result = run("train", "--dataset", "mnist-sample", "--preset", "tiny", "--steps", 2, "--batch-size", 8,
                 "--num-classes", 10, "--label-dropout", 0.5, "--out", out, "--device", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    return out / "last.pt"


def test_sample_with_a_label_and_guidance(conditional, tmp_path, capsys):
    common = ["sample", "--checkpoint", conditional, "--steps", 3, "--device", "cpu", "--no-progress",
              "--weights", "model"]
    code, err, out = one_line([*common, "--n", 4, "--label", 7, "--guidance", 2.5, "--out", tmp_path / "a"], capsys)
    assert code == 0 and err == [] and "label 7, guidance 2.5" in out
    with np.load(tmp_path / "a" / "samples.npz") as f:
        assert f["labels"].tolist() == [7] * 4 and float(f["guidance"]) == 2.5
        assert f["images"].shape == (4, 32, 32)
    code, err, out = one_line([*common, "--n", 12, "--out", tmp_path / "b"], capsys)      # no --label
    assert code == 0 and "labels 0-9 in turn, guidance 1" in out
    with np.load(tmp_path / "b" / "samples.npz") as f:
        assert f["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    code, err, _ = one_line([*common, "--label", 10, "--out", tmp_path / "c"], capsys)
    assert code == 2 and err == ["error: --label must be from 0 to 9 for this model, got 10"]
    assert not (tmp_path / "c" / "samples.npz").exists()


def test_checkpoint_by_shipped_name(tmp_path, capsys):
    from ddpm_lib.checkpoint import SHIPPED_MODELS

    code, err, out = one_line(["sample", "--checkpoint", "mnist", "--n", 1, "--steps", 2, "--device", "cpu",
                               "--no-progress", "--out", tmp_path], capsys)
    assert code == 0 and err == []
    with np.load(tmp_path / "samples.npz") as f:
        assert Path(str(f["checkpoint"])) == SHIPPED_MODELS["mnist"]


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
    (["sample", "--sampler", "heun", "--eta", "0.5"], "--eta is for --sampler ddim"),
    (["sample", "--sampler", "dpm++", "--variance", "beta"], "--variance is for --sampler ddpm (dpm++ adds no"),
    (["sample", "--label", "3"], "--label needs a class-conditional model; "),
    (["sample", "--guidance", "2"], "--guidance needs a class-conditional model; "),
    (["sample", "--label", "-1"], "--label: must be at least 0"),
    (["sample", "--guidance", "inf"], "--guidance must be a finite number"),
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


# ---------------------------------------------------------------- issue 19: nothing lost or overwritten silently
TRAIN = ["--batch-size", "8", "--device", "cpu", "--no-progress"]


def one_line(args, capsys, cwd=None, monkeypatch=None):
    """Run the command line in this process; its exit status and stderr's lines."""
    from ddpm_lib.cli import main

    if cwd is not None:
        monkeypatch.chdir(cwd)
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the 4-step run (other tests continue the original)."""
    import shutil

    return Path(shutil.copytree(trained, tmp_path / "run"))


def test_train_refuses_to_replace_a_run_unless_told(run_copy, capsys):
    """Issue 19.1: `train --out EXISTING_RUN` without --resume replaced a finished run (step 4 -> 2) and its log."""
    before = (run_copy / "last.pt").read_bytes()
    code, err, _ = one_line(["train", "--steps", 2, *TRAIN, "--out", run_copy], capsys)
    assert code == 2 and err == [f"error: {run_copy} already holds a run (last.pt, prev.pt, log.csv); continue it "
                                 "with --resume, choose a new --out, or pass --overwrite to replace it"]
    assert (run_copy / "last.pt").read_bytes() == before
    code, err, out = one_line(["train", "--steps", 2, "--warmup-steps", 1, *TRAIN, "--out", run_copy, "--overwrite"],
                              capsys)
    assert code == 0 and "--overwrite: removed last.pt, prev.pt, log.csv" in out
    assert load_checkpoint(run_copy / "last.pt")["step"] == 2
    assert (run_copy / "log.csv").read_text().splitlines()[1:][0].startswith("1,") and \
        len((run_copy / "log.csv").read_text().splitlines()) == 3          # header and steps 1-2, nothing older


def test_a_folder_holding_only_a_log_is_not_sent_to_resume(tmp_path, capsys):
    """A run interrupted before its first checkpoint leaves only log.csv: --resume cannot help there."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "log.csv").write_text("step,loss\n1,0.9\n")
    code, err, _ = one_line(["train", "--steps", 1, *TRAIN, "--out", tmp_path / "r"], capsys)
    assert code == 2 and err == [f"error: {tmp_path / 'r'} holds the log.csv of a run that saved no checkpoint; pass "
                                 "--overwrite to start again there, or choose a new --out"]


def test_resume_writes_beside_the_file_and_never_into_another_run(run_copy, tmp_path, capsys):
    """Issue 19.2 (fixed on main, checked here): resuming a backup copy overwrote the run it was copied from."""
    import shutil

    backups = tmp_path / "backups"
    backups.mkdir()
    shutil.copy(run_copy / "last.pt", backups / "x.pt")
    before = (run_copy / "last.pt").read_bytes()
    steps = load_checkpoint(backups / "x.pt")["step"] + 1
    code, err, _ = one_line(["train", "--resume", backups / "x.pt", "--steps", steps, "--no-progress"], capsys)
    assert code == 0, err
    assert load_checkpoint(backups / "last.pt")["step"] == steps and (run_copy / "last.pt").read_bytes() == before
    code, err, _ = one_line(["train", "--resume", backups / "x.pt", "--out", run_copy, "--steps", steps], capsys)
    assert code == 2 and err == [f"error: {run_copy} already holds a run (last.pt, prev.pt, log.csv); continuing "
                                 f"{backups / 'x.pt'} there would mix two runs: choose a new --out, or pass "
                                 "--overwrite to replace it"]


def test_resume_falls_back_to_prev_when_last_is_damaged(run_copy, capsys):
    """Issue 19.4: a corrupt last.pt loaded silently; now it is refused and --resume uses prev.pt, saying so."""
    from test_training import flip_bytes

    last, prev = load_checkpoint(run_copy / "last.pt")["step"], load_checkpoint(run_copy / "prev.pt")["step"]
    flip_bytes(run_copy / "last.pt")
    code, err, out = one_line(["train", "--resume", "--out", run_copy, "--steps", last], capsys)
    (note,) = [line for line in err if "corrupt" in line]
    assert code == 0 and note.startswith(f"warning: {run_copy / 'last.pt'} is corrupt (")
    assert note.endswith(f"; resuming from {run_copy / 'prev.pt'} (step {prev}) instead")
    assert f"resumed {run_copy / 'prev.pt'} at step {prev}" in out
    assert load_checkpoint(run_copy / "last.pt")["step"] == last


def test_a_dotdot_out_creates_no_unused_folder(tmp_path, monkeypatch, capsys):
    """Issue 19: `--out a/../b` created the folder a, then wrote to b."""
    code, err, _ = one_line(["train", "--steps", 1, "--warmup-steps", 1, *TRAIN, "--out", "a/../b"], capsys,
                            cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_warmup_longer_than_the_run_is_said(tmp_path, capsys):
    """Issue 19: `--warmup-steps 100 --steps 2` never let the learning rate pass 2% of --lr, silently."""
    code, err, _ = one_line(["train", "--steps", 2, "--warmup-steps", 100, *TRAIN, "--out", tmp_path / "w"], capsys)
    assert code == 0 and err == ["warning: warmup_steps 100 is more than steps 2: the learning rate never gets past "
                                 "2% of lr 0.0002; lower warmup_steps (--warmup-steps)"]


@pytest.mark.parametrize("yaml_text, expected", [
    ('bf16: "false"\n', "bf16 must be true or false, got 'false'"),
    ('channels_last: "no"\n', "channels-last must be true or false, got 'no'"),
    ('compile: "yes"\n', "compile must be true or false, got 'yes'"),
    ("lr: 1.0e-4\nsteps: 3\nlr: 5.0e-4\n", "setting(s) given twice: lr"),
    ("timesteps: 100000000\n", "timesteps must be an integer from 2 to 100000, got 100000000"),
    ("grad_clip: .inf\n", "grad-clip must be a positive number, got inf"),
], ids=["bf16-string", "channels-last-string", "compile-string", "duplicate-key", "huge-timesteps", "inf-grad-clip"])
def test_yaml_settings_that_were_accepted_wrongly_are_one_line(yaml_text, expected, tmp_path, capsys):
    """Issue 19 (fixed on main in config.py, checked here at the command line): no run, no folder."""
    config = tmp_path / "run.yml"
    config.write_text(yaml_text)
    code, err, _ = one_line(["train", "--config", config, "--out", tmp_path / "r"], capsys)
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "r").exists()


def test_yaml_lr_without_a_dot_is_a_number(tmp_path, capsys):
    """Issue 19 (fixed on main): YAML reads `lr: 2e-4` as a string; it must work as on the command line."""
    config = tmp_path / "run.yml"
    config.write_text(f"lr: 3e-4\nsteps: 1\nwarmup_steps: 1\nbatch_size: 4\ndevice: cpu\nprogress: false\n"
                      f"out: {tmp_path / 'r'}\n")
    code, err, _ = one_line(["train", "--config", config], capsys)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "r" / "last.pt")["config"]["lr"] == 3e-4


@pytest.mark.parametrize("args, expected", [
    (["train", "--seed", 2**63], "train: argument --seed: must be at most 9223372036854774, got 9223372036854775808"),
    (["sample", "--seed", 2**64], "sample: argument --seed: must be at most 18446744073709551615"),
    (["train", "--steps", 2, "--warmup-steps", 1, "--batch-size", 10**6, "--device", "cpu"],
     "--batch-size 1000000 needs at least 1,036.3 GB for the 'tiny' model's weights and activations, more"),
    (["sample", "--n", 10**9, "--device", "cpu"], "--n 1000000000 needs at least"),
], ids=["train-seed", "sample-seed", "huge-batch", "huge-n"])
def test_sizes_out_of_range_are_refused_up_front(args, expected, tmp_path, monkeypatch, capsys):
    """Issue 19: `--seed 2**63` -> 'Overflow when unpacking long long'; huge --n / --batch-size -> allocator errors."""
    code, err, _ = one_line(args, capsys, cwd=tmp_path, monkeypatch=monkeypatch)
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert "lower --" in err[0] or "seed" in err[0]
    assert list(tmp_path.iterdir()) == []                                  # nothing written, no folder made


def test_running_out_of_memory_is_one_line_that_says_what_to_lower(tmp_path, monkeypatch, capsys):
    """Issue 19: an allocation that fails anyway gave the raw allocator message."""
    import ddpm_lib.drawing

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4096000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(ddpm_lib.drawing, "ddpm_sample", no_memory)          # the samplers `sample` draws with
    monkeypatch.setattr(ddpm_lib.drawing, "ddim_sample", no_memory)          # the shipped model's CPU default
    code, err, _ = one_line(["sample", "--n", 2, "--steps", 2, "--device", "cpu", "--out", tmp_path / "s"], capsys)
    assert code == 1 and err == ["error: out of memory (it asked for 4,096.0 GB); lower --n or --chunk-size"]


def test_metrics_names_a_folder_and_reads_channels_first_digits(tmp_path, capsys):
    """Issue 19: `metrics FOLDER` said 'does not exist'; a (N, 1, 32, 32) array was read as channels-last."""
    code, err, _ = one_line(["metrics", tmp_path], capsys)
    assert code == 2 and err == [f"error: {tmp_path} is a folder; give the samples file in it, e.g. "
                                 f"{tmp_path / 'samples.npz'}"]
    np.savez(tmp_path / "chw.npz", images=np.zeros((4, 1, 32, 32), np.uint8))
    code, err, out = one_line(["metrics", tmp_path / "chw.npz"], capsys)
    assert code == 0 and err == [] and '"n": 4' in out


def edited(run, tmp_path, name, edit):
    ckpt = torch.load(run / "last.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c.__setitem__("config", [1]), "is damaged: its 'config' should be a mapping"),
    (lambda c: c.pop("schedule"), "is incomplete: it has no 'schedule'"),
    (lambda c: c["model_config"].__setitem__("base_channels", 10**6),
     "has an unusable model_config (base_channels=1000000 is not a whole number from 1 to 4096)"),
    (lambda c: c["model_config"].__setitem__("base_channels", 64),
     "weights do not fit its model_config (first difference:"),
    (lambda c: c["schedule"].__setitem__("T", 10**9),
     "has an unusable noise schedule (T must be an integer from 1 to 100000, got 1000000000)"),
], ids=["config-not-a-mapping", "no-schedule", "absurd-width", "wrong-width", "huge-T"])
def test_edited_checkpoints_are_refused_before_anything_is_built(trained, tmp_path, edit, expected, capsys):
    """Issue 19: edited checkpoints gave TypeError/KeyError or tried to allocate terabytes."""
    path = edited(trained, tmp_path, "edited.pt", edit)
    code, err, _ = one_line(["sample", "--checkpoint", path, "--n", 1, "--steps", 1, "--device", "cpu",
                             "--out", tmp_path / "s"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {path}") and expected in err[0], err


def test_python_objects_in_a_checkpoint_are_named_in_a_whole_message(tmp_path, capsys):
    """Issue 19: errors were cut mid-word at 120 characters (and told how to load the file unsafely)."""
    torch.save({"format": "ddpm_lib-checkpoint", "payload": os.system}, tmp_path / "evil.pt")
    code, err, _ = one_line(["sample", "--checkpoint", tmp_path / "evil.pt", "--out", tmp_path / "s"], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {tmp_path / 'evil.pt'} is not a ddpm_lib checkpoint: it holds Python objects, "
                             "which are not loaded for safety (") and "GLOBAL" in err[0] and err[0].endswith(")")


def test_sample_never_replaces_samples_silently_and_writes_the_pair_together(trained, tmp_path, capsys):
    """Issue 19: `sample --out` replaced samples.npz/png silently; a folder named samples.png split the pair."""
    args = ["sample", "--checkpoint", trained / "last.pt", "--n", 2, "--steps", 2, "--device", "cpu",
            "--weights", "model", "--no-progress", "--out", tmp_path]
    assert one_line(args, capsys)[0] == 0
    npz = (tmp_path / "samples.npz").read_bytes()
    code, err, _ = one_line([*args, "--seed", 1], capsys)
    assert code == 2 and err == [f"error: {tmp_path} already holds samples.npz and samples.png; pass --overwrite to "
                                 "replace them, or choose another --out"]
    (tmp_path / "samples.png").unlink()
    (tmp_path / "samples.png").mkdir()
    code, err, _ = one_line([*args, "--seed", 1, "--overwrite"], capsys)
    assert code == 2 and err == [f"error: {tmp_path / 'samples.png'} is a folder; remove it or choose another --out"]
    assert (tmp_path / "samples.npz").read_bytes() == npz                 # the pair was not split
    (tmp_path / "samples.png").rmdir()
    assert one_line([*args, "--seed", 1, "--overwrite"], capsys)[0] == 0
    assert (tmp_path / "samples.npz").read_bytes() != npz
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.npz", "samples.png"]   # no temporary left
