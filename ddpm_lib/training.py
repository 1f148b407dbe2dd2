"""The Trainer: Ho et al.'s Algorithm 1 with the engineering a real run needs.

    repeat:  x_0 ~ data,  t ~ Uniform(0..T-1),  eps ~ N(0, I)
             take a gradient step on || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2
             update the EMA copy of the weights

AdamW with linear warm-up (and an optional linear decay at the end), gradient clipping, a non-finite-loss
guard, autocast on CUDA (bf16, or fp16 with a gradient scaler), channels_last, optional torch.compile,
DistributedDataParallel under torchrun, label dropout for class-conditional models, tqdm progress, a CSV
log of every step, and atomic checkpoints from which a killed run continues exactly (:mod:`ddpm_lib.run_state`
says what they hold); SIGINT or SIGTERM stop it between two steps (:mod:`ddpm_lib.stopping`); optionally
TensorBoard scalars and grids of samples along the way (:mod:`ddpm_lib.monitor`). The run's settings are a
:class:`~ddpm_lib.config.RunConfig`; the device and precision come from :mod:`ddpm_lib.device`; the files
it writes are those of a :class:`~ddpm_lib.runfolder.RunFolder`.

The Trainer has three phases: it is *built* (``__init__``: placement, data, model, optimizer, random
streams, each a helper of its own), it takes one *step* (:meth:`Trainer.train_step`, read back by
:meth:`Trainer.collect`), and its *loop* (:meth:`Trainer.train`) repeats steps, logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from . import run_state
from .config import SEED_STRIDE, RunConfig
from .data import check_images, check_labels, fingerprint, load_dataset
from .device import DistInfo, autocast_dtype, resolve_device
from .ema import EMA
from .losses import ddpm_loss
from .monitor import RunMonitor
from .runfolder import RunFolder
from .schedule import NoiseSchedule
from .stopping import StopSignals, TrainingInterrupted
from .unet import UNet


class TrainingDiverged(RuntimeError):
    """The loss was not finite for too many steps in a row; ``reason`` says so, ``lr`` is the run's lr."""

    def __init__(self, reason: str, lr: float):
        super().__init__(f"{reason}; try a lower learning rate (lr is now {lr})")
        self.reason, self.lr = reason, lr


def lr_factor(step: int, config: RunConfig) -> float:
    """The multiple of ``config.lr`` used by optimizer step ``step`` (counted from 0).

    Warm-up, stable, decay: linear from 1/warmup_steps up to 1 over the first ``warmup_steps`` steps,
    then 1, then (with ``lr_decay_steps`` = N > 0) linear from 1 down to 1/N over the last N steps of
    ``config.steps``. Because the stable phase does not depend on when the decay starts, a run can be
    resumed from any checkpoint of that phase with a decay added: the result is the same as a run that
    had the decay in its settings from the start.
    """
    factor = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.lr_decay_steps:
        factor = min(factor, max(0.0, (config.steps - step) / config.lr_decay_steps))
    return factor


def drop_labels(labels: Tensor, p: float, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by the "no label" token ``num_classes`` with probability ``p`` (Ho & Salimans 2022).

    Training on both labelled and unlabelled images makes one network both the conditional and the
    unconditional model that classifier-free guidance combines. labels: (B,) -> (B,).
    """
    keep = torch.rand(labels.shape, device=labels.device, generator=generator) >= p
    return torch.where(keep, labels, num_classes)


def place(config: RunConfig, processes: DistInfo) -> tuple[torch.device, int]:
    """The device of this process (its own GPU under torchrun) and its share of each batch."""
    device = resolve_device(config.device)
    if processes.world_size > 1:
        device = processes.init(device)
    if config.batch_size % processes.world_size:
        raise ValueError(f"batch-size {config.batch_size} is not divisible by {processes.world_size} processes")
    return device, config.batch_size // processes.world_size


def training_data(config: RunConfig, data: Tensor | None, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The images (N, C, H, W) in [-1, 1] and, for a conditional model, the labels (N,): ``data`` and ``labels``
    when given, else the config's data set; checked either way."""
    if data is None:
        data, labels = load_dataset(config.dataset, config.data_root, train=True, with_labels=True)
    if config.num_classes is not None:
        if labels is None:
            raise ValueError("a conditional model (num_classes) needs labels: pass labels= with data=")
        labels = check_labels(labels, data.shape[0], config.num_classes)
    check_images(data)
    return data, labels


def new_model(config: RunConfig, model: nn.Module | None, channels: int) -> nn.Module:
    """The config's UNet (from ``init_from``'s weights if set), or ``model``, checked against the run.

    Seeded with ``config.seed`` first, so every process (and every resume) builds the same initial weights.
    """
    torch.manual_seed(config.seed)
    if model is None:
        extra = {"num_classes": config.num_classes} if config.num_classes is not None else {}
        model = UNet.from_preset(config.preset, in_channels=channels, **extra)
        if config.init_from:
            init_weights(model, config.init_from)
    if getattr(model, "num_classes", None) != config.num_classes:
        raise ValueError(f"the model has num_classes={getattr(model, 'num_classes', None)} but the run asks "
                         f"for {config.num_classes}")
    if getattr(model, "in_channels", channels) != channels:
        raise ValueError(f"the model takes {model.in_channels} channel(s) but the data has {channels}")
    return model


class Trainer:
    """Trains a UNet as ``config`` says; ``train()`` runs to ``config.steps`` and returns the log rows.

    Give ``model`` or ``data`` (float images (N, C, 32, 32) in [-1, 1]) to use your own instead of the
    config's preset and data set. Under ``torchrun`` it wraps the model in DistributedDataParallel,
    gives each process its own shard of the data and lets process 0 alone write files.

    While it writes its output folder it holds the folder's lock (:meth:`RunFolder.lock
    <ddpm_lib.runfolder.RunFolder.lock>`), and SIGINT or SIGTERM stop it between two steps: it saves a
    checkpoint when the last one is more than ``save_on_stop_after`` steps old, then raises
    :class:`TrainingInterrupted`.
    """

    save_on_stop_after = 10

    # ------------------------------------------------------------------ build
    def __init__(self, config: RunConfig, *, model: nn.Module | None = None, data: Tensor | None = None,
                 labels: Tensor | None = None):
        self.config = config.validate()
        self.dist = DistInfo.from_env()
        self.monitor = RunMonitor(config, active=self.dist.is_main)       # before any work: needs tensorboard?
        self.device, self.local_batch = place(config, self.dist)
        data, labels = training_data(config, data, labels)
        self.data_hash = fingerprint(data)
        self.data = self._shard(data)                                      # this process's shard
        self.labels = self._shard(labels) if config.num_classes is not None else None
        self.schedule = NoiseSchedule.from_name(config.schedule, config.timesteps).to(self.device)
        self._build_optimization(new_model(config, model, channels=data.shape[1]))
        self.step = 0
        self.last_checkpoint: tuple[Path, int] | None = None              # (file, step) this run can resume from
        self.skipped_steps = 0                                             # non-finite steps skipped in all
        self._bad_in_a_row = 0
        # Data indices, timesteps and noise come from this generator; dropout from torch's global RNG.
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed * SEED_STRIDE + self.dist.rank)
        torch.manual_seed(config.seed * SEED_STRIDE + self.dist.rank + 1)
        self.train_model = self._wrap_for_training()
        self.folder = RunFolder(config.out)
        self.out = self.folder.path
        self.log = self.folder.log()
        self._log_buffer: list[dict] = []                                  # numbers, not yet in log.csv
        self._pending: list[dict] = []                                     # rows still holding device tensors
        self._started_at = self._collected_at = time.perf_counter()

    def _shard(self, tensor: Tensor) -> Tensor:
        return tensor[self.dist.rank::self.dist.world_size].to(self.device)

    def _build_optimization(self, model: nn.Module) -> None:
        """The model on the device in its memory format, its precision, EMA copy, optimizer and lr schedule."""
        self.memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        # Autocast for the model's forward and backward (the loss is always computed in float32): bf16 on
        # GPUs with bf16 units, fp16 with a gradient scaler on those without (T4, V100), none on CPUs.
        self.amp_dtype = autocast_dtype(self.config.precision, self.device)
        self.scaler = (torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None)
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.ema = EMA(self.model, decay=self.config.ema_decay)
        # Fused AdamW: one kernel for all parameters, and it can skip a step on the device (found_inf).
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, self.config), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, self.config))

    def _wrap_for_training(self) -> nn.Module:
        """The module the steps call: the model, in DistributedDataParallel under torchrun, compiled if asked."""
        train_model: nn.Module = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.config.compile:
            train_model = torch.compile(train_model)
        return train_model

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)

    def train_step(self) -> dict:
        """One optimizer step on a fresh batch, entirely on the device: the host never waits for it.

        A step whose loss or gradient norm is not finite changes nothing: fused AdamW skips its update on
        the device (its ``found_inf`` input, set by us, or by torch's GradScaler under fp16) and the EMA
        update is weighted by 0. Under fp16 a gradient that overflows is the scaler's normal way of finding
        its scale, so only a non-finite *loss* counts towards ``max_bad_steps`` there. The returned row
        keeps its numbers as device tensors; :meth:`collect` turns the pending rows into numbers with one
        synchronisation, counts skipped steps and stops a run after ``max_bad_steps`` bad steps in a row.
        """
        self.train_model.train()
        g = self.generator
        idx = torch.randint(0, self.data.shape[0], (self.local_batch,), device=self.device, generator=g)
        x0 = self.data[idx].contiguous(memory_format=self.memory_format)  # (B, C, H, W)
        t = torch.randint(0, self.schedule.T, (self.local_batch,), device=self.device, generator=g)
        noise = torch.randn(x0.shape, device=self.device, generator=g).contiguous(memory_format=self.memory_format)
        y = None
        if self.labels is not None:                                        # conditional: drop some labels
            y = drop_labels(self.labels[idx], self.config.label_dropout, self.config.num_classes, g)   # (B,)
        with self._autocast():
            loss = ddpm_loss(self.train_model, self.schedule, x0, t=t, noise=noise, y=y)   # float32 scalar
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)                           # clip the true gradients
        else:
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        # Gradients are all-reduced across processes, so every process reaches the same verdict.
        loss_finite = torch.isfinite(loss.detach())
        finite = torch.isfinite(grad_norm) & loss_finite                   # () bool, on the device
        bad = ~loss_finite if self.scaler is not None else ~finite
        lr = self.optimizer.param_groups[0]["lr"]
        decay = self.ema.current_decay()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)                               # skips the update on inf/NaN
            self.scaler.update()
        else:
            self.optimizer.found_inf = (~finite).float()                   # 1.0: the fused kernel skips
            self.optimizer.step()
        self.ema.update(self.model, weight=finite)
        self.scheduler.step()
        self.step += 1
        loss_value = loss.detach()
        if self.dist.world_size > 1:                                       # log the mean over processes
            dist.all_reduce(loss_value)
            loss_value = loss_value / self.dist.world_size
        row = {"step": self.step, "loss": loss_value, "grad_norm": grad_norm.detach(), "finite": finite, "bad": bad,
               "lr": lr, "ema_decay": decay, "time": time.perf_counter()}
        self._pending.append(row)
        return row

    def collect(self) -> list[dict]:
        """Turn the rows of the steps run since the last call into numbers (one device synchronisation).

        Appends them to the log buffer and returns them. Raises :class:`TrainingDiverged` (after logging
        the rows up to it) when ``max_bad_steps`` steps in a row had a non-finite loss; those steps were
        skipped, so the weights and the last checkpoint are the last good ones.
        """
        if not self._pending:
            return []
        rows, self._pending = self._pending, []
        numbers = torch.stack([torch.stack([r["loss"].float(), r["grad_norm"].float(), r["finite"].float(),
                                            r["bad"].float()]) for r in rows]).tolist()   # the one sync
        now = time.perf_counter()
        rate = round(self.config.batch_size * len(rows) / max(now - self._collected_at, 1e-9), 2)
        self._collected_at = now
        out = []
        for r, (loss, norm, ok, bad) in zip(rows, numbers):
            self.skipped_steps += not ok
            self._bad_in_a_row = self._bad_in_a_row + 1 if bad else 0
            out.append({"step": r["step"], "loss": loss, "grad_norm": norm, "lr": r["lr"], "ema_decay": r["ema_decay"],
                        "skipped": self.skipped_steps, "img_per_s": rate,
                        "elapsed_s": round(r["time"] - self._started_at, 3)})
            if self._bad_in_a_row >= self.config.max_bad_steps:
                self._log_buffer.extend(out)
                self.flush_log()
                raise TrainingDiverged(
                    f"the loss was not finite for {self._bad_in_a_row} steps in a row (up to step {r['step']}); "
                    f"those steps were skipped, so the weights are the last good ones; "
                    f"{run_state.checkpoint_note(self.last_checkpoint)}", lr=self.config.lr)
        self._log_buffer.extend(out)
        return out

    # ------------------------------------------------------------------ the loop
    def train(self, steps: int | None = None) -> list[dict]:
        """Run until ``steps`` (default ``config.steps``) steps are done; checkpoints as configured.

        Numbers are read back from the device every ``log_every`` steps. Returns the log rows of the steps
        run by this call (also appended to OUT/log.csv). Holds the output folder's lock meanwhile; SIGINT or
        SIGTERM stop it between two steps (see the class docstring).
        """
        with self._writing(), StopSignals(enabled=self.dist.world_size == 1) as signals:
            try:
                return self._train_loop(steps, signals)
            except KeyboardInterrupt as err:                               # mid-step: nothing more is saved
                if isinstance(err, TrainingInterrupted):
                    raise
                raise TrainingInterrupted.at(signal.SIGINT, self.step, self.last_checkpoint, saved=False) from None

    def _train_loop(self, steps: int | None, signals: StopSignals) -> list[dict]:
        target = self.config.steps if steps is None else steps
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.monitor.start(self.step)
        rows: list[dict] = []
        self._started_at = self._collected_at = time.perf_counter()
        bar = tqdm(total=target, initial=self.step, desc="training", unit="step", dynamic_ncols=True,
                   disable=not (self.config.progress and self.dist.is_main))
        try:
            while self.step < target and signals.signum is None:
                self.train_step()
                bar.update(1)
                if self.step % self.config.log_every == 0 or self.step == target:
                    rows.extend(self.collect())
                    bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", img_s=f"{rows[-1]['img_per_s']:.0f}")
                    self.flush_log()
                if self.monitor.wants_samples(self.step):                 # before the checkpoint of this step
                    self.monitor.sample(self.step, self.ema.module, self.schedule, tuple(self.data.shape[1:]))
                if self.step % self.config.checkpoint_every == 0 or self.step == target:
                    rows.extend(self.collect())
                    self.save_checkpoint()
            if signals.signum is not None and self.step < target:
                rows.extend(self.collect())
                self._stop(signals.signum)
        finally:
            bar.close()
            rows.extend(self.collect())
            self.flush_log()
            self.monitor.close()
        return rows

    def _stop(self, signum: int) -> None:
        """After SIGINT/SIGTERM between two steps: save a checkpoint if the last is more than
        ``save_on_stop_after`` steps old, then raise TrainingInterrupted saying what was saved."""
        saved_step = self.last_checkpoint[1] if self.last_checkpoint is not None else 0
        saved = self.step - saved_step > self.save_on_stop_after
        if saved:
            self.save_checkpoint()
        raise TrainingInterrupted.at(signum, self.step, self.last_checkpoint, saved)

    # ------------------------------------------------------------------ files
    def _writing(self) -> contextlib.AbstractContextManager:
        """The output folder's lock, held while the Trainer writes there (process 0 only; the others write nothing)."""
        return self.folder.lock(writer=self.dist.is_main)

    def flush_log(self) -> None:
        """Append buffered log rows to OUT/log.csv, and to TensorBoard when it is on (process 0 only)."""
        if not self.dist.is_main or not self._log_buffer:
            self._log_buffer.clear()
            return
        self.log.append(self._log_buffer)
        self.monitor.log(self._log_buffer)
        self._log_buffer.clear()

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write OUT/last.pt (or ``path``) atomically; only process 0 writes.

        OUT/last.pt's previous version is kept as OUT/prev.pt (also atomically), so a damaged last.pt has a
        fall-back (:meth:`RunFolder.previous_for <ddpm_lib.runfolder.RunFolder.previous_for>`).
        """
        path = Path(path) if path is not None else self.folder.last
        self.collect()                                                     # the log and counters up to now
        if self.dist.world_size > 1:
            run_state.check_in_sync(self)
        saved = run_state.state(self)                                      # collective under torchrun
        if self.dist.is_main:
            self.flush_log()
            resumable = self.last_checkpoint[0] if self.last_checkpoint is not None else None
            ckpt_io.atomic_save(saved, path, previous=self.folder.previous_for(path, resumable))
        if self.dist.world_size > 1:
            dist.barrier()
        self.last_checkpoint = (path, self.step)
        return path

    def load_state(self, ckpt: dict) -> None:
        """Continue from a training checkpoint, after checking it belongs to this run (:func:`run_state.restore
        <ddpm_lib.run_state.restore>`); the log is cut back to its step (a killed run logs past it), and
        repaired with a warning saying how when it is damaged."""
        run_state.restore(self, ckpt)
        self.last_checkpoint = (Path(ckpt["path"]), self.step) if "path" in ckpt else None
        if self.dist.is_main and self.log.path.exists():
            with self._writing():
                note = self.log.repair(self.step)
            if note:
                warnings.warn(note, stacklevel=2)

    @classmethod
    def resume(cls, checkpoint: str | Path | dict, overrides: dict | None = None, **kwargs) -> Trainer:
        """A Trainer continuing the run saved in ``checkpoint`` (a path or a loaded checkpoint).

        A run's last.pt that is missing or damaged is replaced by its prev.pt, with a warning saying so.
        ``overrides`` may change what does not make it another run (``steps``, ``out``, ``lr_decay_steps``,
        ...; see :func:`~ddpm_lib.config.resume_config`, which refuses the rest before any data is loaded).
        ``kwargs`` go to the constructor (``data=``, ``labels=``, ``model=``).
        """
        ckpt, config = run_state.resume_settings(checkpoint, overrides)
        # The weights come from the checkpoint: the run's init_from (kept in its settings) is not read again.
        trainer = cls(dataclasses.replace(config, init_from=None), **kwargs)
        trainer.config = config
        trainer.load_state(ckpt)
        return trainer


def _param_groups(model: nn.Module, config: RunConfig) -> list[dict]:
    """The optimizer's parameter groups: the label embedding (if any) at ``label_lr_scale`` times the lr.

    Adam moves each weight by at most about lr per step, and a label table that starts at zero while the
    rest of the network is fine-tuned from trained weights barely moves at the network's lr.
    """
    label = [p for name, p in model.named_parameters() if name.startswith("label_embed.")]
    rest = [p for name, p in model.named_parameters() if not name.startswith("label_embed.")]
    if not label:
        return [{"params": rest}]
    return [{"params": rest}, {"params": label, "lr": config.lr * config.label_lr_scale}]


def init_weights(model: UNet, path: str) -> None:
    """Load the (EMA) weights of a checkpoint, weights file or shipped model's name into a new model.

    The architectures must match, except that a conditional model may start from an unconditional one:
    its label embedding then keeps its zero initialisation, so it starts as that model.
    """
    ckpt = ckpt_io.load_checkpoint(path)
    state = ckpt_io.ema_weights(ckpt)
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["model_config"].items() if k != "num_classes"}
    mine = {k: v for k, v in model.config.items() if k != "num_classes"}
    if saved != mine:
        raise ckpt_io.CheckpointError(f"{ckpt['path']} holds another architecture ({saved}) than this run's ({mine})")
    if ckpt["model_config"].get("num_classes") not in (None, model.num_classes):
        raise ckpt_io.CheckpointError(f"{ckpt['path']} has num_classes={ckpt['model_config']['num_classes']}, "
                                      f"not {model.num_classes}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("label_embed.") for k in missing):
        raise ckpt_io.CheckpointError(f"{ckpt['path']}: weights do not fit the model "
                                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
