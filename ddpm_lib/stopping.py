"""Stopping a training run on SIGINT or SIGTERM between two steps, and saying what was saved.

:class:`StopSignals` turns the signals into a flag the training loop checks after each step; the Trainer
then saves a checkpoint when the last one is old and raises :class:`TrainingInterrupted`, whose message
says which checkpoint the run can continue from (``checkpoint``; the command line adds its flag).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from .run_state import checkpoint_note

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM; ``message`` says what was saved, ``signum`` which signal it was,
    ``checkpoint`` the file the run can continue from (None when none was written)."""

    def __init__(self, message: str, signum: int = signal.SIGINT, checkpoint: Path | None = None):
        super().__init__(message)
        self.message = message
        self.signum = signum
        self.checkpoint = checkpoint

    @classmethod
    def at(cls, signum: int, step: int, last_checkpoint: tuple[Path, int] | None, saved: bool) -> TrainingInterrupted:
        """Stopped by ``signum`` at ``step``; ``last_checkpoint`` is the run's (file, step), ``saved`` whether it
        was written just now."""
        what = f"interrupted ({signal.Signals(signum).name}) at step {step}"
        if last_checkpoint is None:
            return cls(f"{what}, before the first checkpoint: no checkpoint was saved", signum)
        if saved:
            return cls(f"{what}; saved {last_checkpoint[0]} there", signum, last_checkpoint[0])
        return cls(f"{what}; {checkpoint_note(last_checkpoint)}", signum, last_checkpoint[0])


class StopSignals:
    """While active, SIGINT and SIGTERM ask the training loop to stop at the next step boundary.

    ``signum`` is the signal received (None until then). A second signal stops at once (KeyboardInterrupt).
    Only in the main thread of a lone process: elsewhere (another thread; torchrun, where each process would
    stop at a different step) the signals keep their usual effect.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if self.enabled:
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._note)
        return self

    def _note(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
