"""Issue 29, items 1-4: output is claimed before the work, a run folder owns only what it wrote, locks are held
by an open file."""

import csv
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from ddpm_lib.checkpoint import load_checkpoint
from ddpm_lib.runfolder import LOCK_NAME, RunFolderBusy, RunLock, _acquire

TRAIN = ["--preset", "tiny", "--batch-size", "8", "--device", "cpu", "--no-progress", "--warmup-steps", "1"]
SAMPLE = ["--n", "2", "--steps", "2", "--device", "cpu", "--weights", "model", "--no-progress"]


def cli(args, capsys):
    """Run the command line in this process: exit status, stderr's lines, stdout."""
    from ddpm_lib.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run4(tiny_run):
    """The shared 4-step run (tests/conftest.py): last.pt at step 4, prev.pt at step 2, grids at steps 2 and 4."""
    return tiny_run


@pytest.fixture
def run_copy(run4, tmp_path):
    import shutil

    return shutil.copytree(run4, tmp_path / "run")


# ---------------------------------------------------------------- 1. `sample --out` is claimed before sampling
def test_sample_is_refused_at_once_while_another_process_holds_its_folder(run4, tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    fd = _acquire(out)                                     # another open file holds the lock, as another process would
    try:
        started = time.perf_counter()
        code, err, _ = cli(["sample", "--checkpoint", run4 / "last.pt", *SAMPLE, "--out", out], capsys)
        assert code == 1 and len(err) == 1 and err[0].startswith(f"error: {out} is in use by another process (pid ")
        assert time.perf_counter() - started < 5                         # refused before loading or sampling
        assert not (out / "samples.npz").exists() and not (out / "samples.png").exists()
    finally:
        os.close(fd)
    assert cli(["sample", "--checkpoint", run4 / "last.pt", *SAMPLE, "--out", out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["samples.npz", "samples.png"]   # no lock file left


ROUNDS = 20


def test_two_concurrent_samples_on_one_folder_exactly_one_writes(run4, tmp_path, cli_processes):
    """20 rounds: two `python -m ddpm_lib sample` processes on one new --out, released at the same moment
    (tests/cli_processes.py forks them from one process that imported torch once: 40 fresh interpreters would
    take minutes here). Exactly one writes each time; the other is refused in one line, as busy or, if it came
    second, as already written. Two rounds run at a time."""
    def sampler(seed, out):
        return {"args": ["sample", "--checkpoint", run4 / "last.pt", *SAMPLE, "--seed", seed, "--out", out],
                "cwd": tmp_path}

    outs = [tmp_path / f"round_{r:02d}" for r in range(ROUNDS)]
    rounds = cli_processes.run([[sampler(1, out), sampler(2, out)] for out in outs], parallel=4)
    refusals = []
    for out, results in zip(outs, rounds):
        winners = [seed for seed, (code, _, _) in zip((1, 2), results) if code == 0]
        assert len(winners) == 1, (out.name, results)
        for code, _, err in results:
            assert "Traceback" not in err, err
            if code != 0:
                lines = err.strip().splitlines()
                assert code in (1, 2) and len(lines) == 1 and lines[0].startswith("error: "), err
                assert "in use by another process" in lines[0] or "already holds samples.npz" in lines[0], lines
                refusals.append("busy" if "in use by another process" in lines[0] else "already written")
        with np.load(out / "samples.npz") as f:
            assert int(f["seed"]) == winners[0]                          # what is there is the winner's
        assert sorted(p.name for p in out.iterdir()) == ["samples.npz", "samples.png"]
    print(f"{ROUNDS} rounds: refused as busy {refusals.count('busy')} times, as already written "
          f"{refusals.count('already written')} times")


# ---------------------------------------------------------------- 2. a run folder owns only what it wrote
def test_train_refuses_a_folder_holding_grids_and_overwrite_names_all_it_removes(tmp_path, capsys):
    out = tmp_path / "so1"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "step_000500.png").write_bytes(b"a grid")
    before = snapshot(out)
    code, err, _ = cli(["train", *TRAIN, "--steps", 1, "--out", out], capsys)
    assert code == 2 and err == [f"error: {out} holds 1 file(s) a run writes (samples/step_000500.png), which a new "
                                 "run would replace; choose a new --out, or pass --overwrite to remove them"]
    assert snapshot(out) == before
    (out / "tensorboard" / "old").mkdir(parents=True)
    (out / "tensorboard" / "old" / "events.out.tfevents.1").write_bytes(b"x")
    code, err, printed = cli(["train", *TRAIN, "--steps", 1, "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert (f"--overwrite: removed samples/step_000500.png, tensorboard/old/events.out.tfevents.1 from {out}"
            in printed)
    assert not (out / "samples" / "step_000500.png").exists() and not (out / "tensorboard").exists()


def test_overwrite_of_a_run_with_grids_names_the_grids(run_copy, capsys):
    code, err, printed = cli(["train", *TRAIN, "--steps", 1, "--out", run_copy, "--overwrite"], capsys)
    assert code == 0, err
    assert (f"--overwrite: removed last.pt, prev.pt, log.csv, samples/step_000002.png, samples/step_000004.png "
            f"from {run_copy}") in printed


# ---------------------------------------------------------------- 3. going back needs asking, and keeps the newer
def test_resuming_an_older_checkpoint_is_refused_unless_asked_and_keeps_the_newer(run_copy, capsys):
    before = snapshot(run_copy)
    prev, last = run_copy / "prev.pt", run_copy / "last.pt"
    aside = run_copy / "rewound_from_step_4"
    code, err, _ = cli(["train", "--resume", prev, "--steps", 3, "--no-progress"], capsys)
    assert code == 2 and err == [f"error: {last} is at step 4, further than {prev} (step 2); continue the run with "
                                 f"--resume {last}, or pass --overwrite to go back to step 2 (then last.pt and "
                                 f"log.csv are kept in {aside})"]
    assert snapshot(run_copy) == before
    code, err, printed = cli(["train", "--resume", prev, "--steps", 4, "--no-progress", "--overwrite"], capsys)
    assert code == 0, err
    assert "--overwrite: going back to step 2; last.pt (step 4), log.csv and the grids past step 2" in printed
    assert (aside / "last.pt").read_bytes() == before["last.pt"]         # the newer run, kept whole
    assert (aside / "log.csv").read_bytes() == before["log.csv"]
    assert (aside / "samples" / "step_000004.png").read_bytes() == before["samples/step_000004.png"]
    assert load_checkpoint(last)["step"] == 4
    assert losses(run_copy / "log.csv") == losses(aside / "log.csv")      # steps 3-4 again, bit for bit


def losses(log):
    with open(log) as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


# ---------------------------------------------------------------- 4. the lock is held by an open file
def test_deleting_the_lock_file_does_not_let_a_second_writer_in(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom ddpm_lib.runfolder import RunLock\n"
                               f"with RunLock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert (folder / LOCK_NAME).read_text().strip() == str(holder.pid)
        (folder / LOCK_NAME).unlink()
        with pytest.raises(RunFolderBusy, match="is in use by another process"):
            with RunLock(folder):
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(folder):                                                  # the kernel dropped it with the process
        pass


def test_a_stale_or_odd_lock_file_never_blocks(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for leftover in (b"99999999\n", b"", b"\xff\xfe garbage"):
        (folder / LOCK_NAME).write_bytes(leftover)
        with RunLock(folder):
            assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
        assert not (folder / LOCK_NAME).exists()


def test_an_interrupted_run_is_told_the_flag_that_continues_it(tmp_path):
    """The library says which checkpoint a stopped run can continue from; the command line names the flag."""
    import signal

    from ddpm_lib.cli import with_resume_flag
    from ddpm_lib.runfolder import RunFolder
    from ddpm_lib.stopping import TrainingInterrupted

    folder = RunFolder(tmp_path / "run")
    own = TrainingInterrupted("interrupted (SIGINT) at step 7; saved it there", signal.SIGINT, folder.last)
    assert with_resume_flag(own, folder).message.endswith("; saved it there; continue with --resume")
    elsewhere = tmp_path / "other" / "last.pt"
    given = TrainingInterrupted("stopped", signal.SIGTERM, elsewhere)
    flagged = with_resume_flag(given, folder)
    assert flagged.message == f"stopped; continue with --resume {elsewhere}" and flagged.signum == signal.SIGTERM
    none = TrainingInterrupted("interrupted (SIGINT) at step 3, before the first checkpoint: no checkpoint was saved")
    assert with_resume_flag(none, folder) is none
