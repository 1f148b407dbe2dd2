"""A training run's checkpoint: what it holds, and putting a Trainer back exactly where it was saved.

A checkpoint holds the weights, the EMA copy, the optimizer and scheduler, every random generator's state,
the step and the run's settings (see :mod:`ddpm_lib.checkpoint`), so a resumed run's losses are the same,
bit for bit, as those of a run that was never stopped. The functions here read and write a
:class:`TrainingState`, the parts of a :class:`~ddpm_lib.training.Trainer` a checkpoint holds; the Trainer
decides when (``save_checkpoint``, ``load_state``, ``Trainer.resume``), and its
:class:`~ddpm_lib.runfolder.RunFolder` where.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn

from . import checkpoint as ckpt_io
from .config import RunConfig, check_same_run, resume_config
from .device import DistInfo
from .ema import EMA, unwrap
from .runfolder import load_checkpoint_or_previous
from .schedule import NoiseSchedule


class TrainingState(Protocol):
    """What a training checkpoint holds of a run, and where it puts it back: a
    :class:`~ddpm_lib.training.Trainer` is one (this module needs no more of it, and does not import it)."""

    config: RunConfig
    dist: DistInfo
    device: torch.device
    schedule: NoiseSchedule
    model: nn.Module                      # possibly wrapped (DDP, torch.compile): unwrap() gives the UNet
    ema: EMA
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator
    step: int
    skipped_steps: int
    data_hash: str


def state(trainer: TrainingState) -> dict:
    """Everything a checkpoint holds (see ddpm_lib.checkpoint); a collective call under torchrun."""
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


def check_in_sync(trainer: TrainingState) -> None:
    """Under DDP every process must hold the same weights; refuse to save if they drifted apart."""
    checksum = torch.stack([p.detach().double().sum() for p in trainer.model.parameters()]).sum().reshape(1)
    sums = [torch.zeros_like(checksum) for _ in range(trainer.dist.world_size)]
    dist.all_gather(sums, checksum)
    if any(not torch.equal(s, sums[0]) for s in sums):
        raise RuntimeError(f"the processes' weights differ at step {trainer.step} (checksums "
                           f"{[float(s) for s in sums]}); the last checkpoint was not overwritten")


def restore(trainer: TrainingState, ckpt: dict) -> None:
    """Put ``trainer`` where the training checkpoint ``ckpt`` was saved, after checking it belongs to this run."""
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


def resume_settings(checkpoint: str | Path | dict, overrides: dict | None = None) -> tuple[dict, RunConfig]:
    """The checkpoint to continue from (a path, or one already loaded) and the settings of the continued run.

    A run's last.pt that is missing or damaged is replaced by its prev.pt, with a warning saying so.
    ``overrides`` may change what does not make it another run (:func:`~ddpm_lib.config.resume_config`).
    """
    if isinstance(checkpoint, dict):
        ckpt = checkpoint
    else:
        ckpt, note = load_checkpoint_or_previous(checkpoint)
        if note:
            warnings.warn(note, stacklevel=3)                          # the caller of Trainer.resume
    return ckpt, resume_config(ckpt, overrides)


def checkpoint_note(last_checkpoint: tuple[Path, int] | None) -> str:
    """Which checkpoint a run can continue from, in words: ``last_checkpoint`` is its (file, step), or None."""
    if last_checkpoint is None:
        return "no checkpoint was written yet"
    path, step = last_checkpoint
    return f"the last checkpoint, {path} (step {step}), is intact"
