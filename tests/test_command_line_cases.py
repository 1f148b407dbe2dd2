"""Issue 29: the command lines that were quietly accepted or misleading, as a table, and the API's cases.

Every case of the table runs as a process of its own, ``python -m ddpm_lib ...`` in the case's folder, as a user
would type it; the processes are forked from one that imported torch once (tests/cli_processes.py: a fresh
interpreter per case spends 5-20 s importing torch on a shared 2-core machine; ``DDPM_FRESH_PROCESSES=1`` runs
them so). One module fixture runs them all, four at a time; each case is then checked by its own test.
A refusal asserts: exit status 2 (1 where the environment, not the input, is at fault), exactly one
line on stderr naming the file or setting, no traceback, and no file changed (names, sizes, modification times
and bytes of every file in the case's folder and in the shared run it reads).

Listed cases that are not rows of the table, and why:
- SIGINT while starting: a timed signal, its own process test below (test_ctrl_c_..., exit 130);
- a 100%-full disk: needs a file system that can be filled; a process under `ulimit -f` stands in for it here
  (EFBIG and ENOSPC take the same path, files.WRITE_ERRORS), ENOSPC itself is simulated in
  tests/test_training.py, and a full-size `ulimit -f` process run in tests/test_reliability.py (slow);
- a damaged log.csv (not UTF-8, NUL bytes) is repaired, not refused: its rows below assert exit 0, one line
  naming the log, and that log.csv is the only file changed.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from checkpoint_edits import edited


def snapshot(folder):
    """Every entry under ``folder`` (not following links): a file's size, mtime and digest, a link's target, or
    that it is a folder or a special file."""
    seen = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            key = os.path.relpath(path, folder)
            if os.path.islink(path):
                seen[key] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                seen[key] = ("folder",)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    seen[key] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(f.read()).hexdigest())
            else:
                seen[key] = ("special",)
    return seen


def write(path, data):
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


def loop(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    return tmp_path / "loop"


def images_28(tmp_path):
    np.savez(tmp_path / "s.npz", images=np.zeros((4, 28, 28), np.uint8))
    return tmp_path / "s.npz"


def run_folder(tmp_path):
    (tmp_path / "runA").mkdir()
    return tmp_path / "runA"


def junk_before(ckpt, tmp_path):
    return write(tmp_path / "c.pt", b"JUNK" * 100 + ckpt.read_bytes())


def junk_after(ckpt, tmp_path):
    return write(tmp_path / "c.pt", ckpt.read_bytes() + b"\0" * 70_000)   # past zipfile's 64 KiB search


def set_rng(value):
    def edit(state):
        state["rng"] = value(state["rng"])
    return edit


def run_copy(ckpt, tmp_path):
    return shutil.copytree(ckpt.parent, tmp_path / "run")


def damaged_log(damage):
    def make(t, c):
        run = run_copy(c, t)
        (run / "log.csv").write_bytes(damage((run / "log.csv").read_text()))
        return ["train", "--resume", "--out", run, "--steps", 4, "--no-progress"]   # at step 4: nothing to train
    return make


@dataclass
class Case:
    id: str
    make: object                   # (the case's folder, the shared last.pt) -> its command line
    expected: str                  # what the one line on stderr contains; {t} stands for the case's folder
    code: int = 2
    file_size_limit: int | None = None                  # bytes, as `ulimit -f`
    changes: tuple = ()            # the files (under the case's folder) it may change: a repair's


# (id, how to make the input in the case's folder t from the shared checkpoint c -> the command line, what the one
# line must contain)
CASES = [Case(*row) for row in [
    ("out-empty", lambda t, c: ["train", "--out", ""], "--out (out: in a config file) must be a folder path, got ''"),
    ("yaml-out-empty", lambda t, c: ["train", "--config", write(t / "c.yml", "out: ''\n")], "got ''"),
    ("yaml-out-5", lambda t, c: ["train", "--config", write(t / "c.yml", "out: 5\n")], "must be a folder path, got 5"),
    ("yaml-out-null", lambda t, c: ["train", "--config", write(t / "c.yml", "out: null\n")],
     "must be a folder path, got None"),
    ("yaml-out-list", lambda t, c: ["train", "--config", write(t / "c.yml", "out: [a, b]\n")],
     "must be a folder path, got ['a', 'b']"),
    ("yaml-binary", lambda t, c: ["train", "--config", write(t / "c.yml", bytes(range(256)))],
     "is not a text file (not UTF-8)"),
    ("sample-out-proc", lambda t, c: ["sample", "--checkpoint", c, "--out", "/proc/x"],
     "cannot create output folder /proc/x"),
    ("sample-steps-above-timesteps", lambda t, c: ["train", "--sample-steps", 50, "--timesteps", 10, "--out", t / "r"],
     "--sample-steps 50 is more than --timesteps 10"),
    ("init-from-with-resume", lambda t, c: ["train", "--resume", c, "--init-from", "mnist", "--out", t / "r"],
     "--init-from starts a new run from other weights, --resume continues a run from its own"),
    ("metrics-28x28", lambda t, c: ["metrics", images_28(t)], "expected uint8 digit images (N, 32, 32)"),
    ("ema-num-updates-many", lambda t, c: ["sample", "--checkpoint", edited(c, t / "e.pt", lambda s: s["ema"].update(
        num_updates="many")), "--out", t / "s"], "its ema.num_updates 'many' is not a whole number >= 0"),
    ("rng-damaged", lambda t, c: ["train", "--resume", edited(c, t / "last.pt", set_rng(
        lambda r: [{**r[0], "torch": torch.zeros(3, dtype=torch.uint8)}])), "--steps", 5],
     "its random generators' state cannot be restored"),
    ("rng-empty", lambda t, c: ["train", "--resume", edited(c, t / "last.pt", set_rng(lambda r: [])), "--steps", 5],
     "its random generators' state cannot be restored"),
    ("stored-nan-lr", lambda t, c: ["train", "--resume", edited(c, t / "last.pt", lambda s: s["config"].update(
        lr=float("nan"))), "--steps", 5], "holds unreadable run settings (lr must be a positive number, got nan)"),
    ("yaml-symlink-loop", lambda t, c: ["train", "--config", loop(t)], "too many levels of symbolic links"),
    ("checkpoint-symlink-loop", lambda t, c: ["sample", "--checkpoint", loop(t), "--out", t / "s"],
     "too many levels of symbolic links"),
    ("train-out-symlink-loop", lambda t, c: ["train", "--out", loop(t)], "is a symbolic link that leads nowhere"),
    ("sample-out-symlink-loop", lambda t, c: ["sample", "--checkpoint", c, "--out", loop(t)],
     "is a symbolic link that leads nowhere"),
    ("resume-shipped-name", lambda t, c: ["train", "--resume", "mnist"],
     "mnist is a shipped model (weights only), which cannot be resumed; start a new run from it with --init-from"),
    ("resume-folder", lambda t, c: ["train", "--resume", run_folder(t)], "is a folder; continue its run with --resume"),
    ("metrics-dev-null", lambda t, c: ["metrics", "/dev/null"], "samples file /dev/null is a character device"),
    ("config-folder", lambda t, c: ["train", "--config", t], "is a folder, not a file"),
    ("junk-prepended", lambda t, c: ["sample", "--checkpoint", junk_before(c, t), "--out", t / "s"],
     "has bytes prepended"),
    ("junk-appended", lambda t, c: ["sample", "--checkpoint", junk_after(c, t), "--out", t / "s"],
     "is truncated or has bytes appended"),
]] + [
    Case("log-repair-under-ulimit-f",
         lambda t, c: ["train", "--resume", "--out", run_copy(c, t), "--steps", 6, "--no-progress"],
         "error: file-size limit (ulimit -f) reached writing {t}/run/log.csv; it was not changed", code=1,
         file_size_limit=100),                           # the log is ~360 bytes; the .lock's pid fits
    Case("log-not-utf8", damaged_log(lambda text: text.replace("1,", "1,\xff\xfe", 1).encode("latin-1")),
         "{t}/run/log.csv was damaged: dropped 1 unreadable row(s)", code=0, changes=("run/log.csv",)),
    Case("log-nul-bytes", damaged_log(lambda text: b"step,loss\n" + b"\0" * 64),
         "{t}/run/log.csv was damaged: dropped 2 unreadable row(s); restored its header", code=0,
         changes=("run/log.csv",)),
]


@pytest.fixture(scope="module")
def table(tiny_run, tmp_path_factory, cli_processes):
    """Every case run as its own `python -m ddpm_lib` process (tests/cli_processes.py), four at a time: case id ->
    (exit status, stderr, files before, files after, the case's folder)."""
    ckpt = tiny_run / "last.pt"
    folders = {case.id: tmp_path_factory.mktemp(case.id) for case in CASES}
    groups = [[{"args": case.make(folders[case.id], ckpt), "cwd": folders[case.id],
                "file_size_limit": case.file_size_limit}] for case in CASES]
    before, shared = {key: snapshot(folder) for key, folder in folders.items()}, snapshot(tiny_run)
    finished = cli_processes.run(groups, parallel=4)
    assert snapshot(tiny_run) == shared, "a case changed the shared run it reads"
    return {case.id: (code, err, before[case.id], snapshot(folders[case.id]), folders[case.id])
            for case, [(code, _, err)] in zip(CASES, finished)}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_case_is_one_line_in_a_real_process_and_changes_no_file(case, table):
    code, err, before, after, folder = table[case.id]
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code and "Traceback" not in err and len(lines) == 1, f"exit {code}: {err}"
    assert lines[0].startswith("error: ") == (case.code != 0), lines[0]
    assert case.expected.replace("{t}", str(folder)) in lines[0], lines[0]
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed == set(case.changes), changed


def test_ctrl_c_while_starting_is_one_line_and_exit_130(tmp_path):
    """SIGINT while `python -m ddpm_lib` still imports torch (its first seconds) printed a whole traceback."""
    for delay in (0.3, 0.6):                              # after Python started, before torch is imported
        proc = subprocess.Popen([sys.executable, "-m", "ddpm_lib", "train", "--out", str(tmp_path / "r")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: interrupted (SIGINT)"), err
        assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- the API's cases
def test_sampling_seeds_outside_the_cli_range_are_a_value_error_naming_seed():
    from ddpm_lib import NoiseSchedule, ddpm_sample
    from ddpm_lib.cli import MAX_SAMPLE_SEED
    from ddpm_lib.sampling import MAX_SEED

    assert MAX_SEED == MAX_SAMPLE_SEED                                     # the CLI and the API agree
    model, schedule = (lambda x, t: torch.zeros_like(x)), NoiseSchedule.linear(10)
    for seed in (2**70, -1, MAX_SEED + 1, 1.5, True):
        with pytest.raises(ValueError, match=r"^seed must be a whole number from 0 to 18446744073709551615"):
            ddpm_sample(model, schedule, (1, 1, 4, 4), seed=seed, steps=2)
    assert ddpm_sample(model, schedule, (1, 1, 4, 4), seed=MAX_SEED, steps=2).shape == (1, 1, 4, 4)


@pytest.mark.parametrize("x0, message", [
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), r"^x0 must be a float batch \(B, C, H, W\) in \[-1, 1\], got "
                                                  r"torch.uint8"),
    (torch.zeros(0, 1, 8, 8), r"^x0 is an empty batch"),
    (torch.arange(128.0).reshape(2, 1, 8, 8) * 2, r"^x0 must lie in \[-1, 1\], got values from 0 to 254, like "
                                                   r"\[0, 255\] images"),
], ids=["uint8", "empty", "0-255"])
def test_ddpm_loss_refuses_what_it_cannot_train_on_naming_x0(x0, message):
    from ddpm_lib import NoiseSchedule, ddpm_loss

    with pytest.raises(ValueError, match=message):
        ddpm_loss(lambda x, t: torch.zeros_like(x), NoiseSchedule.linear(10), x0)
    gaussian = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 3   # beyond [-1, 1]: allowed
    assert torch.isfinite(ddpm_loss(lambda x, t: torch.zeros_like(x), NoiseSchedule.linear(10), gaussian))


def test_an_empty_ddpm_profile_means_auto(monkeypatch):
    from ddpm_lib.book.profile import book_profile

    monkeypatch.setenv("DDPM_PROFILE", "")
    monkeypatch.delenv("DDPM_PROFILE")
    default = book_profile()
    monkeypatch.setenv("DDPM_PROFILE", "")
    assert book_profile() == default


def test_a_log_repair_that_hits_the_file_size_limit_names_the_log(tmp_path):
    """Before: a bare '[Errno 27] File too large' under `ulimit -f`. The limit is set around the call alone."""
    import resource

    from ddpm_lib.files import WriteFailed
    from ddpm_lib.runfolder import LOG_FIELDS, CsvLog

    log = CsvLog(tmp_path / "log.csv")
    log.append([{field: 1.0 for field in LOG_FIELDS} | {"step": step} for step in range(1, 101)])
    before = log.path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)               # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, hard))
    try:
        with pytest.raises(WriteFailed) as caught:
            log.repair(50)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(caught.value) == f"file-size limit (ulimit -f) reached writing {log.path}; it was not changed"
    assert log.path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]
