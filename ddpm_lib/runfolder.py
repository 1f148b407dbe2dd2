"""A training run's folder: the files it holds, its lock, its CSV log and the naming of its checkpoints.

One place knows what ``OUT`` (``RunConfig.out``) holds::

    OUT/last.pt                   the latest checkpoint                      LAST
    OUT/prev.pt                   the one last.pt replaced (its fall-back)   PREV
    OUT/log.csv                   one row per optimizer step                 LOG, :class:`CsvLog`
    OUT/.lock                     the pid of the process writing the folder  LOCK_NAME, :class:`RunLock`
    OUT/samples/step_000500.png   grids drawn while training                 GRIDS (drawn by ddpm_lib.monitor)
    OUT/tensorboard/              TensorBoard's event files                  BOARD (written by ddpm_lib.monitor)
    OUT/rewound_from_step_N/      what going back to an older checkpoint set aside

:class:`RunFolder` answers the questions about them (which files a new run would replace, where last.pt's
previous version goes, which checkpoint is the run's own); the Trainer, the monitor and the command line
ask it. Messages here name files and folders, never command-line flags: ``ddpm_lib.cli`` adds those.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint, reason
from .files import check_regular_file, remove_stale_temporaries, temporary_name, write_failure

try:
    import fcntl
    msvcrt = None
except ImportError:                                                        # Windows: msvcrt's byte-range locks
    fcntl = None
    try:
        import msvcrt
    except ImportError:
        msvcrt = None

LAST, PREV, LOG, LOCK_NAME = "last.pt", "prev.pt", "log.csv", ".lock"
GRIDS, BOARD = "samples", "tensorboard"
RUN_FILES = (LAST, PREV, LOG)                                              # what a run folder holds
LOG_FIELDS = ("step", "loss", "grad_norm", "lr", "ema_decay", "skipped", "img_per_s", "elapsed_s")


class RunFolder:
    """The folder of one training run (``RunConfig.out``), and what each of its files is for."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.last, self.prev = self.path / LAST, self.path / PREV          # the checkpoints
        self.grids, self.board = self.path / GRIDS, self.path / BOARD      # the monitor's folders

    def log(self) -> CsvLog:
        return CsvLog(self.path / LOG)

    def lock(self, writer: bool = True) -> contextlib.AbstractContextManager:
        """The folder's lock while it is written (:class:`RunLock`); nothing for a process that writes nothing
        (``writer=False``: the processes other than 0 under torchrun)."""
        return RunLock(self.path) if writer else contextlib.nullcontext()

    def is_last(self, path: str | Path) -> bool:
        """Whether ``path`` is this folder's last.pt."""
        return Path(path).resolve() == self.last.resolve()

    def holds(self, path: Path) -> bool:
        """Whether ``path`` is one of this run's own files (last.pt, prev.pt, log.csv)."""
        return path.parent.resolve() == self.path.resolve() and path.name in RUN_FILES

    def other_checkpoint(self, path: Path) -> Path:
        """prev.pt for last.pt, last.pt for prev.pt."""
        return self.last if path.name == PREV else self.prev

    def previous_for(self, path: str | Path, resumable: str | Path | None) -> Path | None:
        """Where :func:`~ddpm_lib.checkpoint.atomic_save` keeps the last.pt that writing ``path`` replaces.

        OUT/prev.pt, when ``path`` is OUT/last.pt and that last.pt is ``resumable``, the checkpoint this run
        wrote or resumed from; None for a damaged file that a resume fell back from, or another run's file (a
        prev.pt not of this run is then removed, so that it is never taken for this run's fall-back).
        """
        last, prev = self.last.resolve(), self.prev.resolve()
        known = Path(resumable).resolve() if resumable is not None else None
        if Path(path).resolve() != last:
            return None
        if known == last:
            return prev
        if known != prev:                                                  # a prev.pt not of this run
            prev.unlink(missing_ok=True)
        return None

    def run_files(self) -> list[str]:
        """What a new run here would delete or overwrite, relative to the folder: last.pt, prev.pt, log.csv, the
        grids samples/step_N.png and the files under tensorboard/."""
        held = [name for name in RUN_FILES if (self.path / name).exists() or (self.path / name).is_symlink()]
        held += sorted(str(p.relative_to(self.path)) for p in self.grids.glob("step_*.png"))
        if self.board.is_dir():
            held += sorted(str(p.relative_to(self.path)) for p in self.board.rglob("*") if not p.is_dir())
        return held

    def remove(self, names: list[str]) -> None:
        """Remove ``names`` (from :meth:`run_files`), and tensorboard/ when nothing is left in it."""
        for name in names:
            (self.path / name).unlink(missing_ok=True)
        if self.board.is_dir() and not any(p.is_file() for p in self.board.rglob("*")):
            shutil.rmtree(self.board)                                      # its (now empty) run folders

    def aside(self, step: int) -> Path:
        """Where going back from a checkpoint at ``step`` keeps it: OUT/rewound_from_step_N."""
        return self.path / f"rewound_from_step_{step}"

    def set_aside(self, newer: Path, step: int, aside: Path) -> None:
        """Move ``newer`` and the grids past ``step`` into ``aside``, with a copy of the log (which the resume cuts)."""
        aside.mkdir(exist_ok=True)
        if (self.path / LOG).is_file():
            shutil.copy2(self.path / LOG, aside / LOG)
        for grid in self.grids.glob("step_*.png"):
            number = grid.stem[len("step_"):]
            if number.isdigit() and int(number) > step:
                (aside / GRIDS).mkdir(exist_ok=True)
                os.replace(grid, aside / GRIDS / grid.name)
        os.replace(newer, aside / newer.name)


def load_checkpoint_or_previous(path: str | Path) -> tuple[dict, str | None]:
    """Load ``path``; when it is a run's last.pt that is missing or damaged, that run's prev.pt instead.

    Returns the checkpoint and, after a fall-back, a one-line note saying so (None otherwise). Raises the
    error about ``path`` when there is no usable prev.pt either.
    """
    path = Path(path)
    try:
        return load_checkpoint(path), None
    except CheckpointError as err:
        previous = path.with_name(PREV)
        if path.name != LAST or not previous.is_file():
            raise
        try:
            ckpt = load_checkpoint(previous)
        except CheckpointError as prev_err:
            raise CheckpointError(f"{err}; {previous} is no better ({prev_err})") from None
        problem = getattr(err, "problem", reason(err)) if path.exists() else f"{path} is missing"
        return ckpt, f"{problem}; resuming from {previous} (step {ckpt['step']}) instead"


class CsvLog:
    """OUT/log.csv: one row per optimizer step, appended in batches, cut back to a checkpoint on resume."""

    def __init__(self, path: Path, fields: tuple[str, ...] = LOG_FIELDS):
        self.path = Path(path)
        self.fields = fields

    def append(self, rows: list[dict]) -> None:
        """Append rows, writing the header first when the file is new or empty. Never writes through a link."""
        if not rows:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with open(fd, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
                if os.fstat(fd).st_size == 0:
                    writer.writeheader()
                writer.writerows(rows)
        except OSError as err:
            self._refuse_link()
            raise write_failure(err, self.path, "its earlier rows are intact (a resume repairs a cut row)") from None

    def _refuse_link(self) -> None:
        if self.path.is_symlink():
            raise ValueError(f"{self.path} is a symbolic link; the log is written only to a plain file: remove the "
                             "link, or choose another output folder")

    def repair(self, step: int) -> str | None:
        """Keep the well-formed rows up to ``step`` (a killed run may have logged past its checkpoint).

        Rows that cannot be read (a row cut off by a full disk, a file that lost its header) are dropped, a step
        logged twice keeps its last row, and the file is rewritten atomically with a header. Returns a one-line
        note when the log was damaged (None when it was only cut back to ``step``, the usual case after a kill).
        """
        self._refuse_link()
        if not self.path.exists():
            return None
        remove_stale_temporaries(self.path)
        check_regular_file(self.path, "log")
        try:                                                   # bytes that are not UTF-8 only spoil their rows
            with open(self.path, newline="", encoding="utf-8", errors="replace") as f:
                lines = list(csv.reader(line.replace("\0", "") for line in f))
        except csv.Error as err:
            raise ValueError(f"{self.path} cannot be read as CSV ({err}); move it away to resume without it") from None
        has_header = bool(lines) and lines[0] == list(self.fields)
        kept, unreadable, repeated = {}, 0, 0
        for line in lines[1:] if has_header else lines:
            row = dict(zip(self.fields, line))
            try:
                ok = len(line) == len(self.fields) and int(row["step"]) >= 1
                float(row["loss"])                                  # a NaN loss (a skipped step) is a real row
            except (ValueError, KeyError):
                ok = False
            if not ok:
                unreadable += 1
            elif int(row["step"]) <= step:
                repeated += int(row["step"]) in kept
                kept[int(row["step"])] = row
        tmp = temporary_name(self.path)
        try:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(kept[k] for k in sorted(kept))
            os.replace(tmp, self.path)
        except OSError as err:                                 # a full disk, ulimit -f: name the file
            tmp.unlink(missing_ok=True)
            raise write_failure(err, self.path, "it was not changed") from None
        missing = [k for k in range(1, step + 1) if k not in kept]
        problems = ([f"dropped {unreadable} unreadable row(s)"] if unreadable else []) + \
                   (["restored its header"] if lines and not has_header else []) + \
                   ([f"kept the last of {repeated} repeated step(s)"] if repeated else []) + \
                   ([f"step(s) {_spans(missing)} are missing from it"] if missing else [])
        if not problems:
            return None
        return f"{self.path} was damaged: {'; '.join(problems)}; it now holds the readable rows up to step {step}"


def _spans(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' (at most five spans, then '...')."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = [f"{a}-{b}" if a != b else f"{a}" for a, b in spans[:5]]
    return ", ".join(text) + (", ..." if len(spans) > 5 else "")


class RunFolderBusy(RuntimeError):
    """Another process holds the lock of a run folder: ``folder``, and ``holder``, its pid ("unknown" if unread)."""

    def __init__(self, folder: Path, holder: str):
        super().__init__(f"{folder} is in use by another process (pid {holder}); wait for it to finish or stop it, "
                         "or choose another folder")
        self.folder, self.holder = folder, holder



class RunLock:
    """An exclusive lock on a folder, so two trainers (or two ``sample`` runs) never write the same files.

    ``with RunLock(folder):`` holds a lock on the open folder itself (``fcntl.flock`` on POSIX), not on a file
    whose presence means "locked": deleting any file leaves it held, and the kernel drops it when its process
    dies, so a killed run never leaves the folder locked. On Windows it holds ``msvcrt.locking`` on the open
    ``folder/.lock``, which Windows does not let anyone delete while it is open. ``folder/.lock`` holds the
    holder's pid, for the error another process gets; it is removed when done. Re-entrant within a process:
    the command line takes the lock before it checks the folder, the Trainer again while it trains.
    """

    _held: dict[str, list] = {}                                            # folder -> [file descriptor, depth]

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def __enter__(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.folder.resolve())
        if key in RunLock._held:
            RunLock._held[key][1] += 1
        else:
            RunLock._held[key] = [_acquire(self.folder), 1]
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.folder.resolve())
        entry = RunLock._held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del RunLock._held[key]
            if entry[0] is None:
                return
            if fcntl is not None:
                (self.folder / LOCK_NAME).unlink(missing_ok=True)          # while still locked
                os.close(entry[0])
            else:                                                          # Windows deletes no open file
                os.close(entry[0])
                with contextlib.suppress(OSError):
                    (self.folder / LOCK_NAME).unlink()


def _busy(folder: Path) -> RunFolderBusy:
    try:
        holder = (folder / LOCK_NAME).read_bytes()[:32].decode(errors="replace").strip()
    except OSError:
        holder = ""
    return RunFolderBusy(folder, holder if holder.isdigit() else "unknown")


def _acquire(folder: Path) -> int | None:
    """Lock ``folder`` and write our pid in ``folder/.lock``; RunFolderBusy naming the holder if it is taken.

    Returns the descriptor that holds the lock (None on a file system that cannot lock: there is no lock).
    """
    if fcntl is not None:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(folder) from None
        except OSError:                                                    # a file system without flock: go on
            pass
        _write_pid(folder / LOCK_NAME)
        return fd
    if msvcrt is None:
        return None
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        os.close(fd)
        raise _busy(folder) from None
    os.write(fd, f"{os.getpid()}\n".ljust(32).encode())                  # over byte 0 too: ours now
    return fd


def _write_pid(path: Path) -> None:
    """Write our pid in ``path`` for the message another process gets; only informative, so a failure (a full
    disk) just leaves no file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError:
        return
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
