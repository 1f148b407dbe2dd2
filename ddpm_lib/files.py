"""Files that must not be lost: a lock per run folder, writes that replace files whole, errors that name the file.

* :class:`RunLock` - one writer per run folder (``fcntl.flock`` on ``DIR/.lock``, which holds the writer's pid);
* :func:`write_together` - several files (``samples.npz`` and ``samples.png``) written to temporary files,
  then renamed into place, so a failure leaves the old ones as they were;
* :func:`write_failure` - "no space left on device writing DIR/last.pt; ..." instead of the raw error of the
  library that was writing (torch.save reports a full disk as ``RuntimeError: [enforce fail ...] unexpected pos``).

:func:`ddpm_lib.checkpoint.atomic_save` writes checkpoints with the same care.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO, Callable

try:
    import fcntl
except ImportError:                                                        # Windows: no advisory locks, no lock
    fcntl = None

LOCK_NAME = ".lock"
# Why a write failed, in words, for the errors a user can do something about.
WRITE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EFBIG: "file-size limit (ulimit -f) reached",
                errno.EDQUOT: "disk quota exceeded"}


class RunFolderBusy(RuntimeError):
    """Another process holds the lock of a run folder."""


class WriteFailed(OSError):
    """Writing a file failed; the message names the file and says what is intact."""


def temporary_name(path: Path) -> Path:
    """``DIR/.NAME.PID.tmp``: where ``path`` is written before it is renamed into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporary files of ``path`` left by processes that were killed while writing them.

    Only files whose writer (the pid in their name) is gone: another live process may be writing its own.
    """
    if os.name != "posix":                                                 # os.kill(pid, 0) is not a probe there
        return
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                                                # alive, another user's
        return True
    return True


def os_error_in(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: itself, or one in its chain of causes (torch.save wraps the write's OSError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def write_failure(err: BaseException, path: Path, intact: str) -> WriteFailed | None:
    """A one-line WriteFailed for a write of ``path`` that failed with ``err`` (None if no OSError caused it).

    ``intact`` says what survived, e.g. "the previous checkpoint is intact".
    """
    cause = os_error_in(err)
    if cause is None:
        return None
    reason = WRITE_ERRORS.get(cause.errno) or (cause.strerror or type(cause).__name__).lower()
    failed = WriteFailed(f"{reason} writing {path}; {intact}")
    failed.errno = cause.errno
    return failed


def write_together(writers: dict[Path, Callable[[BinaryIO], None]]) -> None:
    """Write each ``path`` with its ``writer(file)``; the files appear together, or none of them changes.

    Every file is written to a temporary file in its folder and synced first; only then are they renamed over
    the targets. Raises WriteFailed naming the file when a write fails (a full disk, a folder in the way).
    """
    temporaries: dict[Path, Path] = {}
    current = None
    try:
        for current, write in writers.items():
            if current.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(current))
            temporaries[current] = temporary_name(current)
            with open(temporaries[current], "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        for current, temporary in temporaries.items():
            os.replace(temporary, current)
    except Exception as err:
        failed = write_failure(err, current, "no file was changed" if len(writers) > 1 else "it was not changed")
        if failed is None:
            raise
        raise failed from None
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


class RunLock:
    """An exclusive lock on a run folder, so two trainers never write the same last.pt and log.csv.

    ``with RunLock(folder):`` holds ``fcntl.flock`` on ``folder/.lock`` (the file holds the holder's pid, named
    in the error another process gets) and removes the file when done. Re-entrant within a process: the
    command line takes the lock before it checks the folder, the Trainer again while it trains. The kernel
    drops the lock when its process dies, so a killed trainer never leaves the folder locked. Where fcntl does
    not exist (Windows) the lock does nothing.
    """

    _held: dict[str, list] = {}                                            # folder -> [file descriptor, depth]

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def __enter__(self) -> "RunLock":
        key = str(self.folder.resolve())
        if key in RunLock._held:
            RunLock._held[key][1] += 1
        else:
            RunLock._held[key] = [_acquire(self.folder) if fcntl is not None else None, 1]
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.folder.resolve())
        entry = RunLock._held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del RunLock._held[key]
            if entry[0] is not None:
                (self.folder / LOCK_NAME).unlink(missing_ok=True)          # while still locked: see _acquire
                os.close(entry[0])


def _acquire(folder: Path) -> int:
    """Lock ``folder/.lock`` (creating the folder) and write our pid in it; RunFolderBusy naming the holder if taken."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise RunFolderBusy(f"{folder} is in use by another process (pid {holder or 'unknown'}); wait for it to "
                                "finish or stop it, or choose another --out") from None
        except OSError:                                                    # a file system without flock: go on
            return fd
        # The holder before us removes the file before unlocking; if it did so after we opened it, we hold a
        # lock on a file nobody else will see: try again with the file that is there now.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise RunFolderBusy(f"could not lock {path}: it keeps changing")
