"""Training: the run's settings (one dataclass, readable from YAML) and the Trainer that runs them.

The loop is Ho et al.'s Algorithm 1 with the usual engineering around it:

    repeat:  x_0 ~ data,  t ~ Uniform(0..T-1),  eps ~ N(0, I)
             take a gradient step on || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2
             update the EMA copy of the weights

AdamW with linear warm-up (and an optional linear decay at the end), gradient clipping, a non-finite-loss
guard, bf16 autocast and channels_last on CUDA, optional torch.compile, DistributedDataParallel under
torchrun, tqdm progress, a CSV log of every step, and atomic checkpoints from which a killed run continues
exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt_io
from .data import DATASETS, fingerprint, load_dataset
from .ema import EMA, unwrap
from .losses import ddpm_loss
from .schedule import NoiseSchedule
from .unet import PRESETS, UNet

LOG_FIELDS = ("step", "loss", "grad_norm", "lr", "ema_decay", "skipped", "img_per_s", "elapsed_s")
# Settings that must not change when a run is resumed: changing them would make it another run.
RESUME_FIXED = ("dataset", "preset", "num_classes", "label_dropout", "schedule", "timesteps", "batch_size", "lr", "warmup_steps",
                "weight_decay", "grad_clip", "ema_decay", "seed")


@dataclass
class RunConfig:
    """Every setting of a training run. Saved in each checkpoint; readable from a YAML file."""

    dataset: str = "mnist-sample"          # one of ddpm_lib.data.DATASETS
    data_root: str | None = None           # folder for torchvision data sets (default: $DDPM_DATA)
    preset: str = "tiny"                   # UNet preset (ddpm_lib.unet.PRESETS)
    num_classes: int | None = None         # K: train a class-conditional model on the data set's labels
    label_dropout: float = 0.1             # share of labels replaced by "no label" (classifier-free guidance)
    init_from: str | None = None           # start from the weights of this checkpoint or weights file
    schedule: str = "linear"               # "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    timesteps: int = 1000                  # T
    steps: int = 10_000                    # optimizer steps to reach
    batch_size: int = 64                   # images per step (all processes together under torchrun)
    lr: float = 2e-4                       # AdamW learning rate after warm-up (Ho et al.: 2e-4)
    warmup_steps: int = 200                # linear learning-rate warm-up (Ho et al.: 5000 on CIFAR-10)
    lr_decay_steps: int = 0                # linear decay of the learning rate to 0 over the last N steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0                 # max global gradient norm (Ho et al.: 1.0)
    ema_decay: float = 0.999               # EMA decay, with warm-up (Ho et al.: 0.9999 over 800k steps)
    seed: int = 0
    checkpoint_every: int = 1000           # steps between checkpoints (and one at the end)
    log_every: int = 50                    # steps between flushes of the CSV log
    out: str = "runs/ddpm"                 # folder for last.pt and log.csv
    device: str = "auto"                   # "auto", "cpu", "cuda" or "cuda:N"
    bf16: bool = True                      # bf16 autocast on CUDA (the loss stays float32); ignored on CPU
    channels_last: bool = True             # NHWC memory format (faster convolutions on CPU and GPU)
    compile: bool = False                  # torch.compile the model (CUDA; minutes of compile on CPU)
    max_bad_steps: int = 10                # stop after this many non-finite losses in a row
    progress: bool = True                  # tqdm progress bar

    def validate(self) -> "RunConfig":
        """Raise ValueError naming the first setting that is out of range."""
        checks = [
            (self.dataset in DATASETS, f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}"),
            (self.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}"),
            (self.num_classes is None or (_is_int(self.num_classes) and self.num_classes >= 1),
             f"num-classes must be an integer >= 1, got {self.num_classes!r}"),
            (_is_num(self.label_dropout) and 0 <= self.label_dropout <= 1,
             f"label-dropout must lie in [0, 1], got {self.label_dropout!r}"),
            (self.init_from is None or (isinstance(self.init_from, str) and self.init_from != ""),
             f"init-from must be a checkpoint path, got {self.init_from!r}"),
            (self.schedule in ("linear", "cosine"), f"schedule must be 'linear' or 'cosine', got {self.schedule!r}"),
            (_is_int(self.timesteps) and self.timesteps >= 2, f"timesteps must be an integer >= 2, got {self.timesteps!r}"),
            (_is_int(self.steps) and self.steps >= 1, f"steps must be an integer >= 1, got {self.steps!r}"),
            (_is_int(self.batch_size) and self.batch_size >= 1, f"batch-size must be an integer >= 1, got {self.batch_size!r}"),
            (_is_num(self.lr) and self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr!r}"),
            (_is_int(self.warmup_steps) and self.warmup_steps >= 0, f"warmup-steps must be an integer >= 0, got {self.warmup_steps!r}"),
            (_is_int(self.lr_decay_steps) and 0 <= self.lr_decay_steps <= (self.steps if _is_int(self.steps) else 0),
             f"lr-decay-steps must be an integer from 0 to steps ({self.steps!r}), got {self.lr_decay_steps!r}"),
            (_is_num(self.weight_decay) and self.weight_decay >= 0, f"weight-decay must be >= 0, got {self.weight_decay!r}"),
            (_is_num(self.grad_clip) and self.grad_clip > 0, f"grad-clip must be > 0, got {self.grad_clip!r}"),
            (_is_num(self.ema_decay) and 0 <= self.ema_decay < 1, f"ema-decay must lie in [0, 1), got {self.ema_decay!r}"),
            (_is_int(self.seed) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}"),
            (_is_int(self.checkpoint_every) and self.checkpoint_every >= 1,
             f"checkpoint-every must be an integer >= 1, got {self.checkpoint_every!r}"),
            (_is_int(self.log_every) and self.log_every >= 1, f"log-every must be an integer >= 1, got {self.log_every!r}"),
            (_is_int(self.max_bad_steps) and self.max_bad_steps >= 1, f"max-bad-steps must be >= 1, got {self.max_bad_steps!r}"),
            (isinstance(self.out, str) and self.out != "", "out must be a folder path"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        resolve_device(self.device)
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; valid ones: {', '.join(sorted(names))}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        """Read settings from a YAML mapping (keys are the field names, e.g. ``batch_size: 128``)."""
        return cls.from_dict(read_yaml_settings(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_yaml_settings(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML file as a dict, after checking every key is a RunConfig field."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, not {type(values).__name__}")
    RunConfig.from_dict(values)                                            # names every unknown key
    return values


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; a clear ValueError for devices that are not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA GPU is available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    return device


def _native_bf16() -> bool:
    """True when the current CUDA GPU has bf16 tensor cores (Ampere or newer), not just emulation."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:                                                      # torch < 2.5 has no such argument
        return torch.cuda.get_device_capability()[0] >= 8


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


def check_resumable(ckpt: dict, config: RunConfig) -> None:
    """Raise CheckpointError unless ``ckpt`` is a training checkpoint of the run ``config`` describes.

    The settings in RESUME_FIXED must agree: changing them would make the continued run another run.
    Cheap: call it before loading any data.
    """
    name = ckpt.get("path", "the checkpoint")
    if ckpt.get("kind") != "train":
        raise ckpt_io.CheckpointError(f"{name} holds weights only and cannot be resumed from")
    saved = ckpt["config"]
    diffs = [f"{k}={saved.get(k)!r} (now {getattr(config, k)!r})"
             for k in RESUME_FIXED if saved.get(k) != getattr(config, k)]
    if diffs:
        raise ckpt_io.CheckpointError(f"{name} belongs to another run: {'; '.join(diffs)}")


class TrainingDiverged(RuntimeError):
    """The loss was not finite for too many steps in a row."""


@dataclass
class DistInfo:
    """Where this process sits in a torchrun job (world_size 1 when run alone)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> "DistInfo":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Trainer:
    """Trains a UNet as ``config`` says; ``train()`` runs to ``config.steps`` and returns the log rows.

    Give ``model`` or ``data`` (float images (N, C, 32, 32) in [-1, 1]) to use your own instead of the
    config's preset and data set. Under ``torchrun`` it wraps the model in DistributedDataParallel,
    gives each process its own shard of the data and lets process 0 alone write files.
    """

    def __init__(self, config: RunConfig, *, model: nn.Module | None = None, data: Tensor | None = None,
                 labels: Tensor | None = None):
        self.config = config.validate()
        self.dist = DistInfo.from_env()
        self.device = resolve_device(config.device)
        if self.dist.world_size > 1:
            self._init_distributed()
        if config.batch_size % self.dist.world_size:
            raise ValueError(f"batch-size {config.batch_size} is not divisible by {self.dist.world_size} processes")
        self.local_batch = config.batch_size // self.dist.world_size

        if data is None:
            data, labels = load_dataset(config.dataset, config.data_root, train=True, with_labels=True)
        if config.num_classes is not None:
            if labels is None:
                raise ValueError("a conditional model (num_classes) needs labels: pass labels= with data=")
            _check_labels(labels, data.shape[0], config.num_classes)
        _check_images(data)
        self.data_hash = fingerprint(data)
        self.data = data[self.dist.rank::self.dist.world_size].to(self.device)   # this process's shard
        self.labels = (labels[self.dist.rank::self.dist.world_size].to(self.device)
                       if config.num_classes is not None else None)
        self.schedule = NoiseSchedule.from_name(config.schedule, config.timesteps).to(self.device)

        torch.manual_seed(config.seed)                                     # the same initial weights everywhere
        if model is None:
            extra = {"num_classes": config.num_classes} if config.num_classes is not None else {}
            model = UNet.from_preset(config.preset, in_channels=data.shape[1], **extra)
            if config.init_from:
                _init_weights(model, config.init_from)
        if getattr(model, "num_classes", None) != config.num_classes:
            raise ValueError(f"the model has num_classes={getattr(model, 'num_classes', None)} but the run asks "
                             f"for {config.num_classes}")
        if getattr(model, "in_channels", data.shape[1]) != data.shape[1]:
            raise ValueError(f"the model takes {model.in_channels} channel(s) but the data has {data.shape[1]}")
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        # bf16 autocast for the model's forward and backward; the loss is always computed in float32.
        # On by default on CUDA GPUs with bf16 units (Ampere and newer; not a T4, which then trains in
        # float32) and off on CPUs, which mostly lack them; tests switch it on for the CPU.
        self.amp = config.bf16 and self.device.type == "cuda" and _native_bf16()
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.ema = EMA(self.model, decay=config.ema_decay)
        # Fused AdamW: one kernel for all parameters, and it can skip a step on the device (found_inf).
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, self.config))
        self.step = 0
        self.skipped_steps = 0                                             # non-finite steps skipped in all
        self._bad_in_a_row = 0
        # Data indices, timesteps and noise come from this generator; dropout from torch's global RNG.
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed * 1000 + self.dist.rank)
        torch.manual_seed(config.seed * 1000 + self.dist.rank + 1)

        self.train_model: nn.Module = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.train_model = torch.compile(self.train_model)
        self.out = Path(config.out)
        self._log_buffer: list[dict] = []                                  # numbers, not yet in log.csv
        self._pending: list[dict] = []                                     # rows still holding device tensors
        self._started_at = self._collected_at = time.perf_counter()

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def train_step(self) -> dict:
        """One optimizer step on a fresh batch, entirely on the device: the host never waits for it.

        A step whose loss or gradient norm is not finite changes nothing: fused AdamW skips its update on
        the device (its ``found_inf`` input, the mechanism of torch's GradScaler) and the EMA update is
        weighted by 0. The returned row keeps its numbers as device tensors; :meth:`collect` turns the
        pending rows into numbers with one synchronisation, counts skipped steps and stops a run after
        ``max_bad_steps`` non-finite steps in a row.
        """
        self.train_model.train()
        g = self.generator
        idx = torch.randint(0, self.data.shape[0], (self.local_batch,), device=self.device, generator=g)
        x0 = self.data[idx].contiguous(memory_format=self.memory_format)  # (B, C, H, W)
        t = torch.randint(0, self.schedule.T, (self.local_batch,), device=self.device, generator=g)
        noise = torch.randn(x0.shape, device=self.device, generator=g).contiguous(memory_format=self.memory_format)
        y = None
        if self.labels is not None:                                        # conditional: drop some labels
            keep = torch.rand(self.local_batch, device=self.device, generator=g) >= self.config.label_dropout
            y = torch.where(keep, self.labels[idx], self.config.num_classes)   # (B,) K = "no label"
        with self._autocast():
            loss = ddpm_loss(self.train_model, self.schedule, x0, t=t, noise=noise, y=y)   # float32 scalar
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        # Gradients are all-reduced across processes, so every process reaches the same verdict.
        finite = torch.isfinite(grad_norm) & torch.isfinite(loss.detach())   # () bool, on the device
        lr = self.optimizer.param_groups[0]["lr"]
        decay = self.ema.current_decay()
        self.optimizer.found_inf = (~finite).float()                       # 1.0: the fused kernel skips
        self.optimizer.step()
        self.ema.update(self.model, weight=finite)
        self.scheduler.step()
        self.step += 1
        loss_value = loss.detach()
        if self.dist.world_size > 1:                                       # log the mean over processes
            dist.all_reduce(loss_value)
            loss_value = loss_value / self.dist.world_size
        row = {"step": self.step, "loss": loss_value, "grad_norm": grad_norm.detach(), "finite": finite, "lr": lr,
               "ema_decay": decay, "time": time.perf_counter()}
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
        numbers = torch.stack([torch.stack([r["loss"].float(), r["grad_norm"].float(), r["finite"].float()])
                               for r in rows]).tolist()                    # the one sync
        now = time.perf_counter()
        rate = round(self.config.batch_size * len(rows) / max(now - self._collected_at, 1e-9), 2)
        self._collected_at = now
        out = []
        for r, (loss, norm, ok) in zip(rows, numbers):
            if ok:
                self._bad_in_a_row = 0
            else:
                self.skipped_steps += 1
                self._bad_in_a_row += 1
            out.append({"step": r["step"], "loss": loss, "grad_norm": norm, "lr": r["lr"], "ema_decay": r["ema_decay"],
                        "skipped": self.skipped_steps, "img_per_s": rate, "elapsed_s": round(r["time"] - self._started_at, 3)})
            if self._bad_in_a_row >= self.config.max_bad_steps:
                self._log_buffer.extend(out)
                self.flush_log()
                raise TrainingDiverged(
                    f"the loss was not finite for {self._bad_in_a_row} steps in a row (up to step {r['step']}); "
                    f"those steps were skipped, so the weights are the last good ones and so is the checkpoint "
                    f"{self.out / 'last.pt'}; try a lower --lr (now {self.config.lr})")
        self._log_buffer.extend(out)
        return out

    # ------------------------------------------------------------------ the loop
    def train(self, steps: int | None = None) -> list[dict]:
        """Run until ``steps`` (default ``config.steps``) steps are done; checkpoints as configured.

        Numbers are read back from the device every ``log_every`` steps. Returns the log rows of the steps
        run by this call (also appended to OUT/log.csv).
        """
        target = self.config.steps if steps is None else steps
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        rows: list[dict] = []
        self._started_at = self._collected_at = time.perf_counter()
        bar = tqdm(total=target, initial=self.step, desc="training", unit="step", dynamic_ncols=True,
                   disable=not (self.config.progress and self.dist.is_main))
        try:
            while self.step < target:
                self.train_step()
                bar.update(1)
                if self.step % self.config.log_every == 0 or self.step == target:
                    rows.extend(self.collect())
                    bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", img_s=f"{rows[-1]['img_per_s']:.0f}")
                    self.flush_log()
                if self.step % self.config.checkpoint_every == 0 or self.step == target:
                    rows.extend(self.collect())
                    self.save_checkpoint()
        finally:
            bar.close()
            rows.extend(self.collect())
            self.flush_log()
        return rows

    # ------------------------------------------------------------------ files
    def flush_log(self) -> None:
        """Append buffered log rows to OUT/log.csv (process 0 only)."""
        if not self.dist.is_main or not self._log_buffer:
            self._log_buffer.clear()
            return
        path = self.out / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(self._log_buffer)
        self._log_buffer.clear()

    def state(self) -> dict:
        """Everything a checkpoint holds (see ddpm_lib.checkpoint)."""
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        rngs = [rng]
        if self.dist.world_size > 1:
            rngs = [None] * self.dist.world_size
            dist.all_gather_object(rngs, {k: v.cpu() for k, v in rng.items()})
        return {"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "kind": "train", "step": self.step,
                "config": self.config.to_dict(), "model_config": unwrap(self.model).config,
                "schedule": self.schedule.to_config(), "model": unwrap(self.model).state_dict(),
                "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rngs, "data_hash": self.data_hash,
                "skipped_steps": self.skipped_steps, "world_size": self.dist.world_size,
                "torch_version": str(torch.__version__)}

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write OUT/last.pt (or ``path``) atomically; only process 0 writes."""
        path = Path(path) if path is not None else self.out / "last.pt"
        self.collect()                                                     # the log and counters up to now
        if self.dist.world_size > 1:
            self._check_in_sync()
        state = self.state()                                               # collective under torchrun
        if self.dist.is_main:
            self.flush_log()
            ckpt_io.atomic_save(state, path)
        if self.dist.world_size > 1:
            dist.barrier()
        return path

    def load_state(self, ckpt: dict) -> None:
        """Continue from a training checkpoint, after checking it belongs to this run."""
        check_resumable(ckpt, self.config)
        name = ckpt.get("path", "the checkpoint")
        if ckpt.get("data_hash") != self.data_hash:
            raise ckpt_io.CheckpointError(f"{name} was trained on other data than {self.config.dataset!r} here "
                                          "(the data set's fingerprint differs)")
        if ckpt.get("world_size", 1) != self.dist.world_size:
            raise ckpt_io.CheckpointError(f"{name} was written by {ckpt.get('world_size', 1)} process(es), "
                                          f"not {self.dist.world_size}")
        unwrap(self.model).load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        rng = ckpt["rng"][self.dist.rank]
        torch.set_rng_state(rng["torch"].cpu())
        self.generator.set_state(rng["generator"].cpu())
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop log rows written after the checkpoint (by a run that was killed before its next one)."""
        path = self.out / "log.csv"
        if not self.dist.is_main or not path.exists():
            return
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)

    @classmethod
    def resume(cls, path: str | Path, config: RunConfig | None = None, **kwargs) -> "Trainer":
        """A Trainer continuing the run saved at ``path``; ``config`` may raise ``steps`` or change ``out``."""
        ckpt = ckpt_io.load_checkpoint(path)
        if config is None:
            if ckpt.get("kind") != "train":
                raise ckpt_io.CheckpointError(f"{path} holds weights only and cannot be resumed from")
            config = RunConfig.from_dict(ckpt["config"])
        trainer = cls(config, **kwargs)
        trainer.load_state(ckpt)
        return trainer

    def _check_in_sync(self) -> None:
        """Under DDP every process must hold the same weights; refuse to save if they drifted apart."""
        checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).sum().reshape(1)
        sums = [torch.zeros_like(checksum) for _ in range(self.dist.world_size)]
        dist.all_gather(sums, checksum)
        if any(not torch.equal(s, sums[0]) for s in sums):
            raise RuntimeError(f"the processes' weights differ at step {self.step} (checksums "
                               f"{[float(s) for s in sums]}); the last checkpoint was not overwritten")

    def _init_distributed(self) -> None:
        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)


def _init_weights(model: UNet, path: str) -> None:
    """Load the weights of a checkpoint or weights file (its EMA weights) into a new model.

    The architectures must match, except that a conditional model may start from an unconditional one:
    its label embedding then keeps its zero initialisation, so it starts as that model.
    """
    ckpt = ckpt_io.load_checkpoint(path)
    state = ckpt["ema"]["module"] if isinstance(ckpt.get("ema"), dict) and "module" in ckpt["ema"] else ckpt["ema"]
    saved = {k: v for k, v in ckpt["model_config"].items() if k != "num_classes"}
    mine = {k: v for k, v in model.config.items() if k != "num_classes"}
    if {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()} != mine:
        raise ckpt_io.CheckpointError(f"{ckpt['path']} holds another architecture ({saved}) than this run's ({mine})")
    if ckpt["model_config"].get("num_classes") not in (None, model.num_classes):
        raise ckpt_io.CheckpointError(f"{ckpt['path']} has num_classes={ckpt['model_config']['num_classes']}, "
                                      f"not {model.num_classes}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("label_embed.") for k in missing):
        raise ckpt_io.CheckpointError(f"{ckpt['path']}: weights do not fit the model "
                                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def _check_labels(labels: Tensor, n: int, num_classes: int) -> None:
    if not isinstance(labels, Tensor) or labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({n},), got "
                         f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes}), got values from "
                         f"{int(labels.min())} to {int(labels.max())}")


def _check_images(data: Tensor) -> None:
    if not isinstance(data, Tensor) or data.dim() != 4 or data.shape[0] < 1:
        raise ValueError(f"training data must be a tensor of images (N, C, H, W), got "
                         f"{tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__}")
    if not data.is_floating_point():
        raise ValueError(f"training data must be float images in [-1, 1], got dtype {data.dtype}")
    if not bool(torch.isfinite(data).all()):
        raise ValueError("training data contains NaN or infinite values")
    lo, hi = float(data.min()), float(data.max())
    if lo < -1.0001 or hi > 1.0001:
        raise ValueError(f"training data must lie in [-1, 1], got values from {lo:.3g} to {hi:.3g} "
                         "(scale images with ddpm_lib.data.to_model_range)")

