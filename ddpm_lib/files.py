"""Files that must not be lost: a lock per run folder, writes that replace files whole, errors that name the file.

* :class:`RunLock` - one writer per folder (``fcntl.flock`` on the open folder; ``DIR/.lock`` names the writer);
* :func:`check_regular_file` - a file to read is a regular file of a sane size, checked before it is opened;
* :func:`write_together` - several files (``samples.npz`` and ``samples.png``) written to temporary files,
  then renamed into place, so a failure leaves the old ones as they were;
* :func:`write_failure` - "no space left on device writing DIR/last.pt; ..." instead of the raw error of the
  library that was writing (torch.save reports a full disk as ``RuntimeError: [enforce fail ...] unexpected pos``).

:func:`ddpm_lib.checkpoint.atomic_save` writes checkpoints with the same care.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable

try:
    import fcntl
    msvcrt = None
except ImportError:                                                        # Windows: msvcrt's byte-range locks
    fcntl = None
    try:
        import msvcrt
    except ImportError:
        msvcrt = None

LOCK_NAME = ".lock"
# Why a write failed, in words, for the errors a user can do something about.
WRITE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EFBIG: "file-size limit (ulimit -f) reached",
                errno.EDQUOT: "disk quota exceeded"}


# No checkpoint, samples file or YAML file here comes near this; a larger one is a wrong path (or /dev/zero's kin).
MAX_FILE_BYTES = 4 * 2**30
FILE_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
              stat.S_IFSOCK: "a socket"}


class FileNotUsable(ValueError):
    """A file to read is missing, not a regular file, or too large; the message names it."""


def check_regular_file(path: str | Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> os.stat_result:
    """Raise FileNotUsable unless ``path`` is a regular file of at most ``max_bytes``, before anything opens it.

    Opening a FIFO with no writer blocks forever and reading /dev/zero never ends; both are refused here.
    ``what`` names the file in the message ("checkpoint", "config file", ...).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotUsable(f"{what} {path} does not exist") from None
    except OSError as err:
        raise FileNotUsable(f"cannot read {what} {path} ({(err.strerror or str(err)).lower()})") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileNotUsable(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise FileNotUsable(f"{what} {path} is {kind}, not a regular file; give the path of a file")
    if info.st_size > max_bytes:
        raise FileNotUsable(f"{what} {path} is {_size(info.st_size)}, larger than any {what} could be "
                            f"({_size(max_bytes)}); check the path")
    return info


def _size(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


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
    return RunFolderBusy(f"{folder} is in use by another process (pid {holder if holder.isdigit() else 'unknown'}); "
                         "wait for it to finish or stop it, or choose another --out")


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
