"""A training run's checkpoint: what it holds, writing it, and continuing a run from it exactly.

The functions take the :class:`~ddpm_lib.training.Trainer` whose run they save or restore; the Trainer
exposes them as its methods ``state()``, ``save_checkpoint()``, ``load_state()`` and ``Trainer.resume()``.
A checkpoint holds the weights, the EMA copy, the optimizer and scheduler, every random generator's state,
the step and the run's settings (see :mod:`ddpm_lib.checkpoint`), so a resumed run's losses are the same,
bit for bit, as those of a run that was never stopped.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from . import checkpoint as ckpt_io
from .config import check_same_run, resume_config
from .ema import unwrap


def state(trainer) -> dict:
    """Everything a checkpoint holds (see ddpm_lib.checkpoint)."""
    rng = {"torch": torch.get_rng_state(), "generator": trainer.generator.get_state()}
    if trainer.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(trainer.device)
    rngs = [rng]
    if trainer.dist.world_size > 1:
        rngs = [None] * trainer.dist.world_size
        dist.all_gather_object(rngs, {k: v.cpu() for k, v in rng.items()})
    return {"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "kind": "train", "step": trainer.step,
            "config": trainer.config.to_dict(), "model_config": unwrap(trainer.model).config,
            "schedule": trainer.schedule.to_config(), "model": unwrap(trainer.model).state_dict(),
            "ema": trainer.ema.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(), "rng": rngs, "data_hash": trainer.data_hash,
            **({"scaler": trainer.scaler.state_dict()} if trainer.scaler is not None else {}),
            "skipped_steps": trainer.skipped_steps, "world_size": trainer.dist.world_size,
            "torch_version": str(torch.__version__)}


def save_checkpoint(trainer, path: str | Path | None = None) -> Path:
    """Write OUT/last.pt (or ``path``) atomically; only process 0 writes.

    OUT/last.pt's previous version is kept as OUT/prev.pt (also atomically), so a damaged last.pt has a
    fall-back (:func:`~ddpm_lib.checkpoint.load_checkpoint_or_previous`).
    """
    last = trainer.out / "last.pt"
    path = Path(path) if path is not None else last
    trainer.collect()                                                  # the log and counters up to now
    if trainer.dist.world_size > 1:
        _check_in_sync(trainer)
    saved = trainer.state()                                            # collective under torchrun
    if trainer.dist.is_main:
        trainer.flush_log()
        ckpt_io.atomic_save(saved, path, previous=_previous_name(trainer, path))
    if trainer.dist.world_size > 1:
        dist.barrier()
    trainer.last_checkpoint = (path, trainer.step)
    return path


def _previous_name(trainer, path: Path) -> Path | None:
    """Where atomic_save keeps the last.pt it replaces: OUT/prev.pt, if that last.pt is one this run wrote or
    resumed from (not a damaged file that a resume fell back from, nor another run's file)."""
    last, prev = (trainer.out / "last.pt").resolve(), (trainer.out / "prev.pt").resolve()
    known = Path(trainer.last_checkpoint[0]).resolve() if trainer.last_checkpoint is not None else None
    if Path(path).resolve() != last:
        return None
    if known == last:
        return prev
    if known != prev:                                                  # a prev.pt not of this run
        prev.unlink(missing_ok=True)
    return None


def _check_in_sync(trainer) -> None:
    """Under DDP every process must hold the same weights; refuse to save if they drifted apart."""
    checksum = torch.stack([p.detach().double().sum() for p in trainer.model.parameters()]).sum().reshape(1)
    sums = [torch.zeros_like(checksum) for _ in range(trainer.dist.world_size)]
    dist.all_gather(sums, checksum)
    if any(not torch.equal(s, sums[0]) for s in sums):
        raise RuntimeError(f"the processes' weights differ at step {trainer.step} (checksums "
                           f"{[float(s) for s in sums]}); the last checkpoint was not overwritten")


def load_state(trainer, ckpt: dict) -> None:
    """Continue from a training checkpoint, after checking it belongs to this run."""
    check_same_run(ckpt, trainer.config)
    name = ckpt.get("path", "the checkpoint")
    if ckpt.get("data_hash") != trainer.data_hash:
        raise ckpt_io.CheckpointError(f"{name} was trained on other data than {trainer.config.dataset!r} here "
                                      "(the data set's fingerprint differs)")
    if ckpt.get("world_size", 1) != trainer.dist.world_size:
        raise ckpt_io.CheckpointError(f"{name} was written by {ckpt.get('world_size', 1)} process(es), "
                                      f"not {trainer.dist.world_size}")
    try:
        unwrap(trainer.model).load_state_dict(ckpt["model"])
        trainer.ema.load_state_dict(ckpt["ema"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        trainer.scheduler.load_state_dict(ckpt["scheduler"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise ckpt_io.CheckpointError(f"{name} does not fit this run's model or optimizer "
                                      f"({ckpt_io.reason(err)})") from None
    if trainer.scaler is not None and "scaler" in ckpt:
        trainer.scaler.load_state_dict(ckpt["scaler"])
    trainer.step = int(ckpt["step"])
    trainer.skipped_steps = int(ckpt.get("skipped_steps", 0))
    try:
        rng = ckpt["rng"][trainer.dist.rank]
        torch.set_rng_state(rng["torch"].cpu())
        trainer.generator.set_state(rng["generator"].cpu())
        if "cuda" in rng and trainer.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), trainer.device)
    except (RuntimeError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise ckpt_io.CheckpointError(f"{name} is damaged: its random generators' state cannot be restored "
                                      f"({ckpt_io.reason(err)}); use an intact copy") from None
    trainer.last_checkpoint = (Path(ckpt["path"]), trainer.step) if "path" in ckpt else None
    _repair_log(trainer)


def _repair_log(trainer) -> None:
    """Cut the log back to the checkpoint's step (a killed run logs past it) and repair a damaged one."""
    if trainer.dist.is_main and trainer.log.path.exists():
        with trainer.folder_lock():
            note = trainer.log.repair(trainer.step)
        if note:
            warnings.warn(note, stacklevel=3)                          # the caller of load_state


def resume(trainer_class: type, checkpoint: str | Path | dict, overrides: dict | None = None, **kwargs):
    """A Trainer continuing the run saved in ``checkpoint`` (a path or a loaded checkpoint).

    A run's last.pt that is missing or damaged is replaced by its prev.pt, with a warning saying so.

    ``overrides`` may change what does not make it another run (``steps``, ``out``, ``lr_decay_steps``,
    ...; see :func:`~ddpm_lib.config.resume_config`, which refuses the rest before any data is loaded).
    ``kwargs`` go to the constructor (``data=``, ``labels=``, ``model=``).
    """
    if isinstance(checkpoint, dict):
        ckpt = checkpoint
    else:
        ckpt, note = ckpt_io.load_checkpoint_or_previous(checkpoint)
        if note:
            warnings.warn(note, stacklevel=2)
    config = resume_config(ckpt, overrides)
    # The weights come from the checkpoint: the run's init_from (kept in its settings) is not read again.
    trainer = trainer_class(dataclasses.replace(config, init_from=None), **kwargs)
    trainer.config = config
    trainer.load_state(ckpt)
    return trainer


def checkpoint_note(trainer) -> str:
    """Which checkpoint this run can continue from, in words."""
    if trainer.last_checkpoint is None:
        return "no checkpoint was written yet"
    path, step = trainer.last_checkpoint
    return f"the last checkpoint, {path} (step {step}), is intact"


def resume_flag(trainer) -> str:
    """The ``train`` flag that continues from the last checkpoint: ``--resume``, or ``--resume PATH``."""
    path = trainer.last_checkpoint[0]
    return "--resume" if Path(path).resolve() == (trainer.out / "last.pt").resolve() else f"--resume {path}"
