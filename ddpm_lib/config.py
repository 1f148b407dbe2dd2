"""The settings of a training run: one dataclass, readable from YAML, saved in every checkpoint.

Each field carries its own help text, from which the command line builds its ``train`` flags, so a
default is written down once. :func:`resume_config` is the one place where a checkpoint's settings
meet the ones asked for now.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import DATASETS
from .schedule import MAX_TIMESTEPS, SCHEDULES
from .unet import MAX_CLASSES, PRESETS

# Settings that must not change when a run is resumed: changing them would make it another run.
RESUME_FIXED = ("dataset", "preset", "num_classes", "label_dropout", "label_lr_scale", "schedule", "timesteps",
                "batch_size", "lr", "warmup_steps", "weight_decay", "grad_clip", "ema_decay", "seed")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# Training seeds process r's generators with seed * SEED_STRIDE + r (+ 1 for torch's global one), which must
# stay below 2**63: the largest seed a run may have (the CLI's --seed limit too).
SEED_STRIDE = 1000
MAX_TRAIN_SEED = 2**63 // SEED_STRIDE - 1


def _setting(default: Any, help: str) -> Any:                              # noqa: A002 - argparse's word
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class RunConfig:
    """Every setting of a training run. Saved in each checkpoint; readable from a YAML file."""

    dataset: str = _setting("mnist-sample", "data set (mnist-sample ships with ddpm_lib)")
    data_root: str | None = _setting(None, "folder for torchvision data sets; "
                                           "none: $DDPM_DATA or ~/.cache/ddpm_lib/data")
    preset: str = _setting("tiny", "UNet preset (ddpm_lib.unet.PRESETS)")
    num_classes: int | None = _setting(None, "train a class-conditional model on the data set's K labels; "
                                             "none: unconditional")
    label_dropout: float = _setting(0.1, "share of labels replaced by 'no label' during training, so one network "
                                         "also learns the unconditional model for guidance")
    label_lr_scale: float = _setting(1.0, "learning rate of the label embedding, as a multiple of lr: a table "
                                          "learned from zero while the rest is fine-tuned needs larger steps")
    init_from: str | None = _setting(None, "start from the (EMA) weights of this checkpoint or shipped model name")
    schedule: str = _setting("linear", "noise schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal)")
    timesteps: int = _setting(1000, "T, the number of diffusion steps")
    steps: int = _setting(10_000, "optimizer steps to reach")
    batch_size: int = _setting(64, "images per step (all processes together under torchrun)")
    lr: float = _setting(2e-4, "AdamW learning rate after warm-up (Ho et al.: 2e-4)")
    warmup_steps: int = _setting(200, "linear learning-rate warm-up steps")
    lr_decay_steps: int = _setting(0, "decay the learning rate linearly to 0 over the last N steps (0: no decay)")
    weight_decay: float = _setting(0.0, "AdamW weight decay")
    grad_clip: float = _setting(1.0, "max global gradient norm (Ho et al.: 1.0)")
    ema_decay: float = _setting(0.999, "EMA decay, with warm-up (Ho et al.: 0.9999 over 800k steps)")
    seed: int = _setting(0, "random seed")
    checkpoint_every: int = _setting(1000, "steps between checkpoints (and one at the end)")
    log_every: int = _setting(50, "steps between flushes of the CSV log")
    tensorboard: bool = _setting(False, "also write the loss, learning rate, gradient norm, EMA decay, skipped steps, "
                                        "images/s and the sample grids to OUT/tensorboard (needs the tensorboard "
                                        "package)")
    sample_every: int | None = _setting(None, "steps between grids of samples from the EMA weights, written to "
                                              "OUT/samples/step_N.png (and TensorBoard); 0: no grids; none: every "
                                              "checkpoint-every steps with --tensorboard, else no grids")
    sample_steps: int = _setting(25, "respaced DDPM steps for those grids (at most timesteps)")
    out: str = _setting("runs/ddpm", "folder for last.pt and log.csv (and samples/, tensorboard/)")
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N")
    precision: str = _setting("auto", "autocast on CUDA: auto (bf16 where the GPU has it, else fp16 with a "
                                      "gradient scaler), bf16, fp16 or fp32; the CPU trains in fp32")
    channels_last: bool = _setting(True, "NHWC memory format (faster convolutions on CPU and GPU)")
    compile: bool = _setting(False, "torch.compile the model (CUDA; minutes of compile on a CPU)")
    max_bad_steps: int = _setting(10, "stop after this many non-finite losses in a row")
    progress: bool = _setting(True, "show a progress bar")

    def validate(self) -> "RunConfig":
        """Raise ValueError naming the first setting that is out of range (the device is checked by the Trainer)."""
        checks = [
            (self.dataset in DATASETS, f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}"),
            (self.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}"),
            (self.num_classes is None or (_is_int(self.num_classes) and 1 <= self.num_classes <= MAX_CLASSES),
             f"num-classes must be an integer from 1 to {MAX_CLASSES:,}, got {self.num_classes!r}"),
            (_is_num(self.label_dropout) and 0 <= self.label_dropout <= 1,
             f"label-dropout must lie in [0, 1], got {self.label_dropout!r}"),
            (_is_finite(self.label_lr_scale) and self.label_lr_scale > 0,
             f"label-lr-scale must be a positive number, got {self.label_lr_scale!r}"),
            (self.init_from is None or (isinstance(self.init_from, str) and self.init_from != ""),
             f"init-from must be a checkpoint path or a shipped model's name, got {self.init_from!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (_is_int(self.timesteps) and 2 <= self.timesteps <= MAX_TIMESTEPS,
             f"timesteps must be an integer from 2 to {MAX_TIMESTEPS}, got {self.timesteps!r}"),
            (_is_int(self.steps) and self.steps >= 1, f"steps must be an integer >= 1, got {self.steps!r}"),
            (_is_int(self.batch_size) and self.batch_size >= 1,
             f"batch-size must be an integer >= 1, got {self.batch_size!r}"),
            (_is_finite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr!r}"),
            (_is_int(self.warmup_steps) and self.warmup_steps >= 0,
             f"warmup-steps must be an integer >= 0, got {self.warmup_steps!r}"),
            (_is_int(self.lr_decay_steps) and 0 <= self.lr_decay_steps <= (self.steps if _is_int(self.steps) else 0),
             f"lr-decay-steps must be an integer from 0 to steps ({self.steps!r}), got {self.lr_decay_steps!r}"),
            (_is_finite(self.weight_decay) and self.weight_decay >= 0,
             f"weight-decay must be a number >= 0, got {self.weight_decay!r}"),
            (_is_finite(self.grad_clip) and self.grad_clip > 0,
             f"grad-clip must be a positive number, got {self.grad_clip!r}"),
            (_is_num(self.ema_decay) and 0 <= self.ema_decay < 1,
             f"ema-decay must lie in [0, 1), got {self.ema_decay!r}"),
            (_is_int(self.seed) and 0 <= self.seed <= MAX_TRAIN_SEED,
             f"seed must be an integer from 0 to {MAX_TRAIN_SEED}, got {self.seed!r}"),
            (_is_int(self.checkpoint_every) and self.checkpoint_every >= 1,
             f"checkpoint-every must be an integer >= 1, got {self.checkpoint_every!r}"),
            (_is_int(self.log_every) and self.log_every >= 1,
             f"log-every must be an integer >= 1, got {self.log_every!r}"),
            (self.sample_every is None or (_is_int(self.sample_every) and self.sample_every >= 0),
             f"sample-every must be an integer >= 0, got {self.sample_every!r}"),
            (_is_int(self.sample_steps) and self.sample_steps >= 1,
             f"sample-steps must be an integer >= 1, got {self.sample_steps!r}"),
            (_is_int(self.max_bad_steps) and self.max_bad_steps >= 1,
             f"max-bad-steps must be an integer >= 1, got {self.max_bad_steps!r}"),
            (isinstance(self.out, str) and self.out != "", "out must be a folder path"),
            (isinstance(self.device, str) and self.device != "", "device must be auto, cpu, cuda or cuda:N"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
        ]
        checks += [(isinstance(getattr(self, f.name), bool),
                    f"{f.name.replace('_', '-')} must be true or false, got {getattr(self, f.name)!r}")
                   for f in dataclasses.fields(self) if isinstance(f.default, bool)]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    def caveats(self) -> list[str]:
        """Settings that are valid but probably not what was meant, each as one line."""
        notes = []
        if self.warmup_steps > self.steps:
            notes.append(f"warmup_steps {self.warmup_steps} is more than steps {self.steps}: the learning rate never "
                         f"gets past {self.steps / self.warmup_steps:.0%} of lr {self.lr:g}; lower warmup_steps "
                         "(--warmup-steps)")
        return notes

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """A RunConfig from a mapping of settings; unknown names are refused, naming the valid ones.

        Two spellings are translated: YAML 1.1 reads ``2e-4`` (no dot) as a string, so a numeric string
        for a float setting is read as the number; and ``bf16: true/false``, the setting of checkpoints
        written before ``precision`` existed, becomes ``precision: auto/fp32``.
        """
        values = dict(values)
        if "bf16" in values and "precision" not in values:
            legacy = values.pop("bf16")
            if not isinstance(legacy, bool):
                raise ValueError(f"bf16 must be true or false, got {legacy!r} (or use precision: auto, bf16, fp16 "
                                 "or fp32)")
            values["precision"] = "auto" if legacy else "fp32"
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; valid ones: {', '.join(sorted(names))}")
        for name, value in values.items():
            if isinstance(value, str) and isinstance(names[name].default, float):
                try:
                    values[name] = float(value)
                except ValueError:
                    raise ValueError(f"{name.replace('_', '-')} must be a number, got {value!r}") from None
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        """Read settings from a YAML mapping (keys are the field names, e.g. ``batch_size: 128``)."""
        return cls.from_dict(read_yaml_settings(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def setting_help(name: str) -> str:
    """The help text of a RunConfig setting, with its default."""
    field = next(f for f in dataclasses.fields(RunConfig) if f.name == name)
    default = field.default
    shown = "none" if default is None else ("on" if default is True else "off" if default is False else default)
    return f"{field.metadata['help']} (default {shown})"


def read_yaml_settings(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML file as a dict, after checking every key is a RunConfig field."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """safe_load, but a key given twice is an error rather than silently the last one."""

    def construct_mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"setting(s) given twice: {', '.join(repeated)}",
                                                    node.start_mark)
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    from .files import check_regular_file

    path = Path(path)
    check_regular_file(path, "config file", max_bytes=2**20)               # a FIFO, /dev/zero, a folder: refused
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not a text file (not UTF-8); give a YAML file of settings") from None
    try:
        values = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, not {type(values).__name__}")
    RunConfig.from_dict(values)                                            # names every unknown key
    return values


def _saved_config(ckpt: dict) -> RunConfig:
    """The run settings stored in a training checkpoint (CheckpointError when it holds none)."""
    from .checkpoint import CheckpointError

    name = ckpt.get("path", "the checkpoint")
    if ckpt.get("kind") != "train":
        raise CheckpointError(f"{name} holds weights only and cannot be resumed from")
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{name} has no run settings (its 'config' is not a mapping)")
    try:
        return RunConfig.from_dict(saved).validate()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{name} holds unreadable run settings ({err})") from None


def check_same_run(ckpt: dict, config: RunConfig) -> None:
    """Raise CheckpointError unless ``ckpt`` is a training checkpoint of the run ``config`` describes.

    The settings in RESUME_FIXED must agree: changing them would make the continued run another run.
    """
    from .checkpoint import CheckpointError

    before = _saved_config(ckpt)
    diffs = [f"{k}={getattr(before, k)!r} (now {getattr(config, k)!r})"
             for k in RESUME_FIXED if getattr(before, k) != getattr(config, k)]
    if diffs:
        raise CheckpointError(f"{ckpt.get('path', 'the checkpoint')} belongs to another run: {'; '.join(diffs)}")


def resume_config(ckpt: dict, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The settings of a resumed run: the checkpoint's own, then ``overrides``, validated and checked.

    Cheap (it reads no data), so a wrong resume is refused before anything is loaded.
    """
    config = RunConfig.from_dict({**_saved_config(ckpt).to_dict(), **(overrides or {})}).validate()
    check_same_run(ckpt, config)
    return config


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    return _is_num(v) and math.isfinite(v)
