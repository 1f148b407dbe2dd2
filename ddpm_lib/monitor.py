"""Watching a run: TensorBoard scalars and grids of samples while the Trainer trains.

The Trainer hands a :class:`RunMonitor` the log rows it has read back from the device (once per log
interval) and, every ``sample_every`` steps, its EMA model. The monitor writes

- ``OUT/samples/step_000500.png``: a grid drawn from the EMA weights with the same seed each time, so two
  grids differ only by the weights (and a reader without TensorBoard sees the digits appear too);
- with ``tensorboard=True``, ``OUT/tensorboard/``: these scalars and the same grids, via
  ``torch.utils.tensorboard`` (the ``tensorboard`` package is an optional extra of ddpm_lib):

- ``loss/raw``: L_simple of every step;
- ``loss/smoothed``: the mean loss of the steps since the previous point (one log interval);
- ``train/grad_norm``: the global gradient norm of every step, before clipping;
- ``train/lr``, ``train/ema_decay`` (it warms up), ``train/skipped_steps`` (non-finite steps so far) and
  ``train/img_per_s`` (training images per second, the time spent sampling included): one point at the end
  of each log interval;
- ``samples``: the grid, every ``sample_every`` steps, and ``samples/seconds``, how long it took to draw.

A resumed run continues the same TensorBoard run: its writer starts with ``purge_step`` set to the step
after the checkpoint, which tells TensorBoard to drop whatever the earlier process wrote past that
checkpoint before it was stopped, so the step axis has no duplicate points. Grids past the checkpoint are
deleted the same way (the resumed run draws them again, identically).

What it costs, measured with the tiny preset at batch 64 on a shared 2-core CPU: one grid (16 images, 25 steps)
takes as long as 4 to 5 training steps (3.7 in the median of six in-process tries, 3.2 to 5.8; 5 in two whole
30-step runs), so grids every 1,000 steps (the default with ``tensorboard`` and ``checkpoint_every`` 1000) add about
0.5% to the training time, every 500 steps 1%, and every 25 steps (chapter 4's 100-step run) 15 to 20%. The
TensorBoard scalars cost 1 to 2.5 ms a step there (about 0.3 ms per value written), under 0.1% of a step.

Drawing a grid never touches the training random streams (it uses its own generator, inside
``torch.random.fork_rng``), so a run's losses are the same with the monitor on or off.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from .config import RunConfig
from .images import make_grid, save_grid
from .runfolder import RunFolder
from .sampling import class_labels, ddpm_sample
from .schedule import NoiseSchedule

TENSORBOARD_MISSING = ("TensorBoard logging (tensorboard=True, --tensorboard) needs the tensorboard package, which "
                       "is not installed: pip install tensorboard (ddpm_lib's 'tensorboard' extra), or turn it off "
                       "(--no-tensorboard)")
SAMPLE_SEED = 0              # the same starting noise for every grid of a run
SAMPLE_IMAGES = 16           # an unconditional grid: 4 x 4
PER_LABEL, MAX_LABEL_ROWS = 4, 10  # a conditional grid: a row of 4 per label, for the first 10 labels
# 25 respaced steps with the posterior variance give clean digits from a trained model; with sigma_t^2 = beta_t
# so few steps leave visible noise (see the variance choice in NoiseSchedule.model_variance).
SAMPLE_VARIANCE = "posterior"


class TensorBoardMissing(ImportError):
    """``tensorboard=True`` but the tensorboard package cannot be imported."""


def require_tensorboard():
    """torch's SummaryWriter class, or :class:`TensorBoardMissing` with a one-line message."""
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it; ask for it first, by name
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TensorBoardMissing(TENSORBOARD_MISSING) from None
    return SummaryWriter


def sample_interval(config: RunConfig) -> int:
    """Steps between sample grids: ``sample_every``; when that is None, ``checkpoint_every`` with
    ``tensorboard`` on and 0 (no grids) without it."""
    if config.sample_every is not None:
        return config.sample_every
    return config.checkpoint_every if config.tensorboard else 0


def sample_labels(num_classes: int | None) -> tuple[torch.Tensor | None, int, int]:
    """The labels of a grid's images (None: unconditional), how many images and how many per row."""
    if num_classes is None:
        return None, SAMPLE_IMAGES, math.isqrt(SAMPLE_IMAGES)
    rows = min(num_classes, MAX_LABEL_ROWS)
    return class_labels(rows * PER_LABEL, num_classes, per_class=PER_LABEL), rows * PER_LABEL, PER_LABEL


class RunMonitor:
    """Writes a run's scalars to TensorBoard and its sample grids to PNG (and TensorBoard).

    ``active=False`` (the processes other than 0 under torchrun) writes nothing; whether tensorboard can
    be imported is checked in every process, at construction, so a run without it stops before any work.
    Call :meth:`start` before training, :meth:`log` with each batch of log rows, :meth:`sample` when
    :meth:`wants_samples` says so, and :meth:`close` at the end.
    """

    def __init__(self, config: RunConfig, active: bool = True):
        self.writer_class = require_tensorboard() if config.tensorboard else None
        self.active = active
        self.tensorboard = config.tensorboard and active
        self.sample_every = sample_interval(config) if active else 0
        self.sample_steps = config.sample_steps
        folder = RunFolder(config.out)
        self.out = folder.path
        self.tensorboard_dir = folder.board
        self.samples_dir = folder.grids
        self.writer = None
        self.sample_seconds = 0.0                                          # time spent drawing grids, in all

    # ------------------------------------------------------------------ the run's lifetime
    def start(self, step: int) -> None:
        """Open the TensorBoard run at ``step``: points and grids from beyond it are dropped."""
        if not self.active:
            return
        for path in self.samples_dir.glob("step_*.png"):                  # drawn past the checkpoint
            if _step_of(path) is not None and _step_of(path) > step:
                path.unlink()
        if self.tensorboard and self.writer is None:
            self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
            _wait_for_a_later_file_name(self.tensorboard_dir)
            self.writer = self.writer_class(str(self.tensorboard_dir), purge_step=step + 1, flush_secs=30)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ scalars
    def log(self, rows: list[dict]) -> None:
        """Write the log rows of one interval (the Trainer's, after ``collect``), then flush them to disk."""
        if self.writer is None or not rows:
            return
        add = self.writer.add_scalar
        for r in rows:
            add("loss/raw", r["loss"], r["step"])
            add("train/grad_norm", r["grad_norm"], r["step"])
        last = rows[-1]
        step = last["step"]
        finite = [r["loss"] for r in rows if math.isfinite(r["loss"])]
        if finite:
            add("loss/smoothed", sum(finite) / len(finite), step)
        add("train/lr", last["lr"], step)
        add("train/ema_decay", last["ema_decay"], step)
        add("train/skipped_steps", last["skipped"], step)
        add("train/img_per_s", last["img_per_s"], step)
        self.writer.flush()                       # on disk before a checkpoint at this step, and visible live

    # ------------------------------------------------------------------ sample grids
    def wants_samples(self, step: int) -> bool:
        return bool(self.sample_every) and step % self.sample_every == 0

    def sample(self, step: int, model: nn.Module, schedule: NoiseSchedule, image_shape: tuple[int, ...]) -> Path:
        """Draw a grid from ``model`` (the EMA weights), write OUT/samples/step_NNNNNN.png and, with
        TensorBoard on, add it there. ``image_shape``: (C, H, W). Returns the PNG's path.

        A conditional model draws a row per label. The training random streams are left as they were.
        """
        started = time.perf_counter()
        images = draw_samples(model, schedule, image_shape, self.sample_steps)
        per_row = sample_labels(getattr(model, "num_classes", None))[2]
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        path = save_grid(images, self.samples_dir / f"step_{step:06d}.png", nrow=per_row, upscale=2)
        seconds = time.perf_counter() - started
        self.sample_seconds += seconds
        if self.writer is not None:
            grid = make_grid(images, nrow=per_row, upscale=2)             # (H, W) or (H, W, 3) uint8
            self.writer.add_image("samples", grid, step, dataformats="HW" if grid.ndim == 2 else "HWC")
            self.writer.add_scalar("samples/seconds", seconds, step)
            self.writer.flush()
        return path


def draw_samples(model: nn.Module, schedule: NoiseSchedule, image_shape: tuple[int, ...], steps: int) -> torch.Tensor:
    """The images of a monitoring grid: ``steps`` respaced DDPM steps from seed ``SAMPLE_SEED``.

    Runs inside ``torch.random.fork_rng``, so the global CPU and CUDA random states are the same after it
    as before (the sampler also draws from a generator of its own). Returns (N, C, H, W) in [-1, 1].
    """
    device = next(model.parameters()).device
    labels, n, _ = sample_labels(getattr(model, "num_classes", None))
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=cuda):
            return ddpm_sample(model, schedule, (n, *image_shape), seed=SAMPLE_SEED, steps=min(steps, schedule.T),
                               variance=SAMPLE_VARIANCE, labels=labels, device=device)
    finally:
        model.train(was_training)


def _step_of(path: Path) -> int | None:
    """The step in a grid's file name, step_000500.png -> 500 (None for other names)."""
    digits = path.stem.removeprefix("step_")
    return int(digits) if digits.isdigit() else None


def _wait_for_a_later_file_name(log_dir: Path, most: float = 1.5) -> None:
    """Wait, if need be, until a new event file's name sorts after every one already in ``log_dir``.

    TensorBoard reads a folder's event files in name order, and a name begins with the second its writer
    opened (``events.out.tfevents.<seconds>.<host>...``). A resumed run's file must come after the earlier
    run's, or the earlier points would be read last and replace the new ones; two runs within one second
    (tests, a quick resume) would otherwise be ordered by host and process id. Waits at most ``most`` s.
    """
    stamps = []
    for path in log_dir.glob("events.out.tfevents.*"):
        field = path.name.split(".")[3:4]
        if field and field[0].isdigit():
            stamps.append(int(field[0]))
    deadline = time.time() + most
    while stamps and int(time.time()) <= max(stamps) and time.time() < deadline:
        time.sleep(0.05)
