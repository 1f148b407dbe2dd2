"""Stopping a training run on SIGINT or SIGTERM between two steps, and saying what was saved.

:class:`StopSignals` turns the signals into a flag the training loop checks after each step; :func:`stop`
then saves a checkpoint when the last one is old and raises :class:`TrainingInterrupted`, whose message
says which checkpoint the run can continue from and with which flag.
"""

from __future__ import annotations

import signal
import threading

from .run_state import checkpoint_note, resume_flag

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM; ``message`` says what was saved, ``signum`` which signal it was."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.message = message
        self.signum = signum


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


def stop(trainer, signum: int) -> None:
    """After SIGINT/SIGTERM between two steps: save a checkpoint if the last is old, raise TrainingInterrupted.

    "Old" is more than ``trainer.save_on_stop_after`` steps behind the trainer's step.
    """
    saved_step = trainer.last_checkpoint[1] if trainer.last_checkpoint is not None else 0
    saved = trainer.step - saved_step > trainer.save_on_stop_after
    if saved:
        trainer.save_checkpoint()
    raise TrainingInterrupted(interrupted_message(trainer, signum, saved), signum)


def interrupted_message(trainer, signum: int, saved: bool) -> str:
    """What stopped the run at which step, which checkpoint it can continue from, and the flag to do so."""
    what = f"interrupted ({signal.Signals(signum).name}) at step {trainer.step}"
    if saved:
        return f"{what}; saved {trainer.last_checkpoint[0]} there; continue with {resume_flag(trainer)}"
    if trainer.last_checkpoint is None:
        return f"{what}, before the first checkpoint: no checkpoint was saved"
    return f"{what}; {checkpoint_note(trainer)}; continue with {resume_flag(trainer)}"
