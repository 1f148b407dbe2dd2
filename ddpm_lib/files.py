"""Files that must not be lost: writes that replace files whole, reads checked first, errors that name the file.

* :func:`check_regular_file` - a file to read is a regular file of a sane size, checked before it is opened;
* :func:`write_together` - several files (``samples.npz`` and ``samples.png``) written to temporary files,
  then renamed into place, so a failure leaves the old ones as they were;
* :func:`write_failure` - "no space left on device writing DIR/last.pt; ..." instead of the raw error of the
  library that was writing (torch.save reports a full disk as ``RuntimeError: [enforce fail ...] unexpected pos``).

:func:`ddpm_lib.checkpoint.atomic_save` writes checkpoints with the same care; a training run's folder, its
lock and its log are :mod:`ddpm_lib.runfolder`'s.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable

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
