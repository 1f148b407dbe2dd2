"""Command line: ``python -m ddpm_lib {train,sample,bench,metrics}``, and commands other packages add through
the entry-point group ``ddpm_lib.commands``: the book's grader, ``grade`` (ddpm_lib/book/cli.py).

Every command checks its input first and reports a mistake as one line, ``error: ...``, with exit
status 2 (usage) or 1 (failure while running); never a traceback. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import __version__
from .checkpoint import (DDIM_DEFAULT_STEPS, ODE_DEFAULT_STEPS, ODE_SAMPLERS, SHIPPED_CPU_ETA,
                         SHIPPED_CPU_SAMPLER, SHIPPED_CPU_STEPS, SHIPPED_MODELS, CheckpointError, load_checkpoint,
                         model_from_checkpoint, resolve_checkpoint, shipped_cpu_default)
from .config import MAX_TRAIN_SEED, PRECISIONS, RunConfig, read_yaml_settings, setting_help
from .data import DATASETS, DatasetUnavailable, to_model_range
from .device import DistInfo, available_memory, resolve_device
from .drawing import SAMPLE_FILES, SAMPLERS, draw, save_samples
from .files import check_regular_file
from .monitor import TensorBoardMissing
from .package_files import config_names, resolve_config
from .runfolder import LOG, RUN_FILES, RunFolder, RunFolderBusy, RunLock
from .sampling import MAX_SEED as MAX_SAMPLE_SEED
from .sampling import class_labels, default_chunk_size
from .schedule import SCHEDULES
from .stopping import TrainingInterrupted
from .training import Trainer, TrainingDiverged
from .unet import PRESETS, conv_output_bytes, parameter_count, training_bytes_per_parameter

EXIT_USAGE, EXIT_FAILURE = 2, 1
# What to lower when a command runs out of memory.
MEMORY_HINTS = {"train": "lower --batch-size (or use a smaller --preset)", "sample": "lower --n or --chunk-size",
                "metrics": "score fewer images", "bench": "lower --batch-size"}
INTERRUPTED = {"sample": "no samples were written", "metrics": "nothing was written",
               "train": "nothing was written", "bench": "nothing was written"}
# The shipped models' CPU sampler default (chosen by measurement; appendix A1 states the rule and asserts it)
# lives beside the models, in checkpoint.py.


class UsageError(Exception):
    """Bad input from the command line (exit status 2)."""


def int_at_least(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number from ``minimum`` (to ``maximum``), with a one-line message otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return parse


positive_int, nonnegative_int = int_at_least(1), int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line: 'error: <command>: <what>'."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{self.prog.split()[-1]}: {message}")


def _train_flags() -> dict[str, dict]:
    """argparse settings of the ``train`` flags, one per RunConfig setting (their help comes from RunConfig)."""
    return {
        "dataset": dict(choices=DATASETS), "data_root": dict(metavar="DIR"), "preset": dict(choices=sorted(PRESETS)),
        "num_classes": dict(type=positive_int, metavar="K"), "label_dropout": dict(type=float, metavar="P"),
        "label_lr_scale": dict(type=positive_float, metavar="X"),
        "init_from": dict(metavar="CHECKPOINT"), "schedule": dict(choices=SCHEDULES),
        "timesteps": dict(type=int_at_least(2), metavar="T"), "steps": dict(type=positive_int, metavar="N"),
        "batch_size": dict(type=positive_int, metavar="N"), "lr": dict(type=positive_float, metavar="X"),
        "warmup_steps": dict(type=nonnegative_int, metavar="N"),
        "lr_decay_steps": dict(type=nonnegative_int, metavar="N"),
        "ema_decay": dict(type=float, metavar="D"), "seed": dict(type=int_at_least(0, MAX_TRAIN_SEED), metavar="N"),
        "checkpoint_every": dict(type=positive_int, metavar="N"), "log_every": dict(type=positive_int, metavar="N"),
        "tensorboard": dict(action=argparse.BooleanOptionalAction),
        "sample_every": dict(type=nonnegative_int, metavar="N"), "sample_steps": dict(type=positive_int, metavar="K"),
        "out": dict(metavar="DIR"), "device": dict(), "precision": dict(choices=PRECISIONS),
        "compile": dict(action=argparse.BooleanOptionalAction), "progress": dict(action=argparse.BooleanOptionalAction),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m ddpm_lib", description="Train, sample and measure DDPM models.")
    parser.add_argument("--version", action="version", version=f"ddpm_lib {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    plugins = _plugin_commands()
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join([*COMMANDS, *plugins]) + "}",
                                parser_class=Parser)

    train = sub.add_parser("train", help="train a model (see RunConfig for every setting)",
                           description="Train a DDPM. Flags override the values of --config.")
    train.add_argument("--config", metavar="FILE_OR_NAME",
                       help="YAML file of RunConfig settings, or a shipped config's name ("
                            + ", ".join(config_names()) + ")")
    for name, kwargs in _train_flags().items():
        train.add_argument("--" + name.replace("_", "-"), dest=name, help=setting_help(name), **kwargs)
    train.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                       help="continue from CHECKPOINT (default OUT/last.pt) up to --steps; its folder is the "
                            "output folder unless --out is given")
    train.add_argument("--no-bf16", dest="precision", action="store_const", const="fp32",
                       help="same as --precision fp32")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --out (its last.pt, prev.pt and log.csv) instead of refusing")

    sample = sub.add_parser("sample", help="draw images from a checkpoint",
                            description="Draw images; writes OUT/samples.png (a grid) and OUT/samples.npz "
                                        "(key 'images', uint8, and the settings: sampler, steps, seed, "
                                        "checkpoint, variance for ddpm or eta for ddim).")
    sample.add_argument("--checkpoint", default=None, metavar="FILE_OR_NAME",
                        help="checkpoint or weights file, or a shipped model's name: "
                             "mnist (the default), mnist-conditional, fashion-conditional")
    sample.add_argument("--n", type=positive_int, default=64, help="number of images (default 64)")
    sample.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="DDPM's ancestral sampler, DDIM, or an ODE solver: EDM's Heun or DPM-Solver++(2M) "
                             f"(default: {shipped_cpu_default()} for the shipped models on a CPU, else ddpm)")
    sample.add_argument("--eta", type=float, default=None,
                        help="DDIM's noise scale: 0 deterministic, 1 DDPM's posterior variance (default 0; "
                             "the shipped models' CPU default has its own)")
    sample.add_argument("--steps", type=positive_int, default=None,
                        help="reverse steps (network calls for heun and dpm++); fewer than T respaces the "
                             "schedule (default: 50 for ddim, 20 for heun and dpm++, else T)")
    sample.add_argument("--seed", type=int_at_least(0, MAX_SAMPLE_SEED), default=0, help="random seed (default 0)")
    sample.add_argument("--variance", choices=("beta", "posterior"), default=None,
                        help="ddpm: sigma_t^2 = beta_t or the posterior variance (default beta)")
    sample.add_argument("--label", type=nonnegative_int, default=None, metavar="K",
                        help="class-conditional models: draw every image of class K (default: --n images spread "
                             "evenly over the classes)")
    sample.add_argument("--guidance", type=float, default=None, metavar="W",
                        help="class-conditional models: classifier-free guidance weight, eps_u + W (eps_c - eps_u); "
                             "1 is plain conditional, 0 ignores the label (default: the model card's, else 1)")
    sample.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA or raw weights (default ema)")
    sample.add_argument("--out", type=Path, default=Path("samples"), help="output folder (default ./samples)")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    sample.add_argument("--chunk-size", type=positive_int, default=None, help="images per model call")
    sample.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    sample.add_argument("--overwrite", action="store_true", help="replace samples.npz and samples.png in --out")

    bench = sub.add_parser("bench", help="time the tutorial's loops against ddpm_lib's",
                           description="Train and sample with the tutorial's loops and with ddpm_lib on the same "
                                       "model; prints a table and, last, one JSON line.")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    bench.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="UNet preset (default: tiny on CPU, tutorial on CUDA)")
    bench.add_argument("--batch-size", type=positive_int, default=None,
                       help="training batch (default 64 CPU, 256 CUDA)")
    bench.add_argument("--quick", action="store_true", help="a short run (about 2 minutes on a 2-core CPU)")
    bench.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile ddpm_lib's model (default: on for CUDA)")

    metrics = sub.add_parser("metrics", help="sample-quality metrics of images or a checkpoint",
                             description="Classifier confidence, class balance and feature Frechet distance of "
                                         "MNIST samples, against held-out real digits.")
    metrics.add_argument("samples", type=Path, help="a samples.npz written by `sample`")

    for name, entry_point in plugins.items():                       # e.g. the book's `grade`
        entry_point.load()(sub)
    return parser


def _settings_given(args: argparse.Namespace) -> dict:
    """The settings this command line asks for: the --config file's, then the flags given."""
    given = read_yaml_settings(resolve_config(args.config)) if args.config else {}
    given.update({key: getattr(args, key) for key in _train_flags() if getattr(args, key) is not None})
    return given


def check_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed; a UsageError when that fails or it cannot be written."""
    check_can_create(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {what} {path} ({err.strerror})") from None
    return path


def check_can_create(path: Path, what: str) -> Path:
    """A UsageError unless ``path`` is a writable folder or one that can be created; creates nothing."""
    if path.is_symlink() and not path.exists():
        raise UsageError(f"{what} {path} is a symbolic link that leads nowhere (a missing target, or a loop)")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} exists and is not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK):
            raise UsageError(f"{what} {path} is not writable")
        return path
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"cannot create {what} {path} ({parent} is not a writable folder)")
    return path


def clean_path(path: Path) -> Path:
    """``path`` without '..' (resolved), so that creating it makes no folder that is then left unused."""
    return path.resolve() if ".." in path.parts else path


@contextlib.contextmanager
def output_folder(path: Path, what: str = "output folder"):
    """Create ``path`` for the duration of a command; if the command fails, remove the folders it created."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    check_writable_dir(path, what)
    try:
        yield path
    except BaseException:
        for folder in created:                                             # deepest first; only empty ones go
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def prepare_run_folder(folder: RunFolder, resume: Path | None, overwrite: bool) -> None:
    """Refuse to start or continue a run in a folder that holds another one, unless ``overwrite`` (then remove it).

    Continuing the run of the folder itself (``resume`` is its last.pt or prev.pt) is allowed, unless the folder
    holds a newer checkpoint than ``resume``: going back is refused unless ``overwrite``, which moves the newer
    checkpoint and the log aside (see :meth:`RunFolder.set_aside <ddpm_lib.runfolder.RunFolder.set_aside>`).
    """
    out = folder.path
    if resume is not None and folder.holds(resume):
        check_not_going_back(folder, resume, overwrite)
        return
    held = folder.run_files()
    if not held:
        return
    if not overwrite:
        what = f"{out} already holds a run ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''})"
        if held == [LOG]:
            raise UsageError(f"{out} holds the log.csv of a run that saved no checkpoint; pass --overwrite to start "
                             "again there, or choose a new --out")
        if not any(name in RUN_FILES for name in held):
            raise UsageError(f"{out} holds {len(held)} file(s) a run writes ({', '.join(held[:3])}"
                             f"{', ...' if len(held) > 3 else ''}), which a new run would replace; choose a new "
                             "--out, or pass --overwrite to remove them")
        if resume is None:
            raise UsageError(f"{what}; continue it with --resume, choose a new --out, or pass --overwrite to "
                             "replace it")
        raise UsageError(f"{what}; continuing {resume} there would mix two runs: choose a new --out, or pass "
                         "--overwrite to replace it")
    folder.remove(held)
    print(f"--overwrite: removed {', '.join(held)} from {out}")


def checkpoint_step(path: Path) -> int | None:
    """The step of the checkpoint at ``path`` (None when it is missing or cannot be read)."""
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path)["step"]
    except CheckpointError:
        return None


def check_not_going_back(folder: RunFolder, resume: Path, overwrite: bool) -> None:
    """Refuse to continue from ``resume`` when another checkpoint of the folder is further on, unless ``overwrite``."""
    other = folder.other_checkpoint(resume)
    newer, older = checkpoint_step(other), checkpoint_step(resume)
    if newer is None or older is None or newer <= older:
        return
    aside = folder.aside(newer)
    if not overwrite:
        raise UsageError(f"{other} is at step {newer}, further than {resume} (step {older}); continue the run with "
                         f"--resume {other}, or pass --overwrite to go back to step {older} (then {other.name} and "
                         f"log.csv are kept in {aside})")
    folder.set_aside(other, older, aside)
    print(f"--overwrite: going back to step {older}; {other.name} (step {newer}), log.csv and the grids past step "
          f"{older} are kept in {aside}")


def check_sample_output(out: Path, overwrite: bool) -> Path:
    """``out`` cleaned, after checking samples.npz and samples.png can be written there (before any sampling)."""
    out = check_can_create(clean_path(out), "output folder")
    for name in SAMPLE_FILES:
        if (out / name).is_dir():
            raise UsageError(f"{out / name} is a folder; remove it or choose another --out")
    held = [name for name in SAMPLE_FILES if (out / name).exists()]
    if held and not overwrite:
        raise UsageError(f"{out} already holds {' and '.join(held)}; pass --overwrite to replace them, or choose "
                         "another --out")
    return out


def sample_labels(model, ckpt: dict, args: argparse.Namespace):
    """The (N,) labels and the guidance weight for ``sample`` (None, 1.0 for an unconditional model)."""
    classes = getattr(model, "num_classes", None)
    if not classes:
        given = [flag for flag, value in (("--label", args.label), ("--guidance", args.guidance)) if value is not None]
        if given:
            verb = "needs" if len(given) == 1 else "need"
            raise UsageError(f"{' and '.join(given)} {verb} a class-conditional model; {ckpt['path']} has no labels")
        return None, 1.0
    if args.label is not None and args.label >= classes:
        raise UsageError(f"--label must be from 0 to {classes - 1} for this model, got {args.label}")
    guidance = args.guidance if args.guidance is not None else float(ckpt.get("default_guidance", 1.0))
    return class_labels(args.n, classes, label=args.label), guidance       # --label, or 0, 1, ..., K-1, 0, ...


def check_train_request(given: dict, args: argparse.Namespace) -> None:
    """UsageErrors for ``train`` settings that would be ignored, clamped or misread if let through."""
    if "out" in given and (not isinstance(given["out"], str) or not given["out"].strip()):
        raise UsageError(f"--out (out: in a config file) must be a folder path, got {given['out']!r}")
    if args.resume is not None and given.get("init_from") is not None:
        raise UsageError("--init-from starts a new run from other weights, --resume continues a run from its own: "
                         "give one of them")
    if args.resume is not None and args.resume != "auto":
        path = Path(args.resume)
        if args.resume in SHIPPED_MODELS and not path.exists():
            raise UsageError(f"{args.resume} is a shipped model (weights only), which cannot be resumed; start a "
                             f"new run from it with --init-from {args.resume}")
        if path.is_dir():
            raise UsageError(f"--resume {path} is a folder; continue its run with --resume {path / 'last.pt'} "
                             f"(or --resume --out {path})")
    timesteps = given.get("timesteps", RunConfig().timesteps)
    if args.resume is None and "sample_steps" in given and isinstance(timesteps, int) and \
            isinstance(given["sample_steps"], int) and given["sample_steps"] > timesteps:
        raise UsageError(f"--sample-steps {given['sample_steps']} is more than --timesteps {timesteps}; the grids "
                         "cannot take more steps than the schedule has: lower --sample-steps")


def cmd_train(args: argparse.Namespace) -> int:
    given = _settings_given(args)
    check_train_request(given, args)
    folder, resume = train_folder(given, args.resume)
    main_process = DistInfo.from_env().is_main
    with output_folder(folder.path), folder.lock(writer=main_process):
        if main_process:
            prepare_run_folder(folder, resume, args.overwrite)
        trainer = start_trainer(given, resume)
        if trainer.step >= trainer.config.steps:
            print(f"{trainer.config.out} is already at step {trainer.step} of {trainer.config.steps}; raise --steps "
                  "to train on")
            return 0
        if resume is not None:
            check_training_memory(trainer.config)
        if trainer.dist.is_main and trainer.config.tensorboard:
            print(f"watch it: tensorboard --logdir {folder.board}")
        try:
            trainer.train()
        except TrainingInterrupted as err:
            raise with_resume_flag(err, folder) from None
    if trainer.dist.is_main:
        print(f"done: step {trainer.step}, checkpoint {folder.last}, log {folder.path / LOG}")
    return 0


def train_folder(given: dict, resume_arg: str | None) -> tuple[RunFolder, Path | None]:
    """The run's folder and the checkpoint ``--resume`` names (None for a new run); cleans ``given["out"]``."""
    if "out" in given:
        given["out"] = str(clean_path(Path(given["out"])))
    resume = None
    if resume_arg is not None:
        resume = RunFolder(given.get("out", RunConfig().out)).last if resume_arg == "auto" else Path(resume_arg)
        given.setdefault("out", str(clean_path(resume.parent)))  # the file's own folder, never the one stored in it
    else:
        RunConfig.from_dict(given).validate()                              # before any folder is made
    return RunFolder(given.get("out", RunConfig().out)), resume


def start_trainer(given: dict, resume: Path | None) -> Trainer:
    """A Trainer for a new run of the settings ``given``, or continuing ``resume``; prints what it resumed and
    the settings' caveats."""
    if resume is not None:
        trainer = Trainer.resume(resume, given)
        if trainer.dist.is_main:
            print(f"resumed {trainer.last_checkpoint[0]} at step {trainer.step}")
    else:
        check_training_memory(RunConfig.from_dict(given))            # before the model is built
        trainer = Trainer(RunConfig.from_dict(given))
    for caveat in trainer.config.caveats() if trainer.dist.is_main else []:
        print(f"warning: {caveat}", file=sys.stderr)
    return trainer


def with_resume_flag(err: TrainingInterrupted, folder: RunFolder) -> TrainingInterrupted:
    """``err`` with the flag that continues the run: ``--resume`` (the folder's last.pt) or ``--resume PATH``."""
    if err.checkpoint is None:
        return err
    flag = "--resume" if folder.is_last(err.checkpoint) else f"--resume {err.checkpoint}"
    return TrainingInterrupted(f"{err.message}; continue with {flag}", err.signum, err.checkpoint)


def check_training_memory(config) -> None:
    """A UsageError when the model's weights (with gradients, AdamW's moments and the EMA) and one batch's
    activations cannot fit in the device's free memory (a lower bound), checked before anything is built."""
    device = resolve_device(config.device)
    channels = 3 if config.dataset == "cifar10" else 1
    model_config = {**PRESETS[config.preset], "in_channels": channels}
    per_image, _ = conv_output_bytes(model_config)
    if config.num_classes is not None:
        model_config["num_classes"] = config.num_classes
    weights = parameter_count(model_config) * training_bytes_per_parameter()
    needed = weights + per_image * (config.batch_size // DistInfo.from_env().world_size)
    available = available_memory(device)
    if available is not None and needed > available:
        classes = f" with --num-classes {config.num_classes}" if config.num_classes is not None else ""
        hint = "lower --num-classes" if weights > available else MEMORY_HINTS["train"]
        raise UsageError(f"--batch-size {config.batch_size}{classes} needs at least {gigabytes(needed)} for the "
                         f"{config.preset!r} model's weights and activations, more than the {gigabytes(available)} "
                         f"free on {device}; {hint}")


def check_sampling_memory(model, n: int, chunk_size: int | None, device) -> None:
    """A UsageError when ``n`` images (three copies) and one chunk's largest activation cannot fit (a lower bound)."""
    _, largest = conv_output_bytes(model.config)
    chunk = min(n, chunk_size or default_chunk_size(device))
    needed = 3 * n * model.in_channels * model.image_size ** 2 * 4 + chunk * largest
    available = available_memory(device)
    if available is not None and needed > available:
        raise UsageError(f"--n {n} needs at least {gigabytes(needed)}, more than the {gigabytes(available)} free on "
                         f"{device}; {MEMORY_HINTS['sample']}")


def gigabytes(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def cmd_sample(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    shipped = {os.path.realpath(path) for path in SHIPPED_MODELS.values()}
    shipped_cpu = os.path.realpath(resolve_checkpoint(args.checkpoint)) in shipped and device.type == "cpu"
    sampler = args.sampler or (SHIPPED_CPU_SAMPLER if shipped_cpu else "ddpm")
    if sampler != "ddim" and args.eta is not None:
        raise UsageError("--eta is for --sampler ddim" + ("" if args.sampler else f" (the sampler here is {sampler})"))
    if args.eta is not None and not 0 <= args.eta < float("inf"):
        raise UsageError(f"--eta must be a number >= 0, got {args.eta}")
    if sampler != "ddpm" and args.variance is not None:
        raise UsageError("--variance is for --sampler ddpm" + (" (DDIM's noise is set by --eta)" if sampler == "ddim"
                                                               else f" ({sampler} adds no noise after x_T)"))
    if sampler == "ddim" and args.eta is None:                             # the shipped default's own eta
        args.eta = SHIPPED_CPU_ETA if shipped_cpu and args.sampler is None else 0.0
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise UsageError(f"--guidance must be a finite number, got {args.guidance}")
    out = check_sample_output(args.out, args.overwrite)
    with output_folder(out), RunLock(out):                                 # claimed before sampling
        check_sample_output(out, args.overwrite)                           # again: another may have written
        return sample_into(out, args, device, sampler, shipped_cpu)


def sample_into(out: Path, args: argparse.Namespace, device, sampler: str, shipped_cpu: bool) -> int:
    """The rest of ``sample``, once ``out`` is claimed: load, check, draw, write."""
    ckpt = load_checkpoint(args.checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, schedule = model_from_checkpoint(ckpt, weights=args.weights, device=device)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    steps = args.steps
    if steps is None:
        steps = (SHIPPED_CPU_STEPS if shipped_cpu and args.sampler is None      # the measured default
                 else ODE_DEFAULT_STEPS if sampler in ODE_SAMPLERS
                 else DDIM_DEFAULT_STEPS if shipped_cpu or sampler == "ddim" else schedule.T)
        steps = min(steps, schedule.T)
    if steps > schedule.T:
        raise UsageError(f"--steps {steps} is more than the {schedule.T} steps the model was trained with")
    labels, guidance = sample_labels(model, ckpt, args)
    shape = (args.n, model.in_channels, model.image_size, model.image_size)
    check_sampling_memory(model, args.n * (2 if labels is not None and guidance != 1 else 1), args.chunk_size,
                          device)
    settings = ({"eta": args.eta or 0.0} if sampler == "ddim" else {} if sampler in ODE_SAMPLERS
                else {"variance": args.variance or "beta"})
    images = draw(model, schedule, shape, sampler, **settings, seed=args.seed, steps=steps, device=device,
                  chunk_size=args.chunk_size, progress=args.progress, labels=labels, guidance=guidance)
    record = {} if labels is None else {"labels": labels.numpy(), "guidance": guidance}
    npz, png = save_samples(out, images, source=ckpt["path"], seed=args.seed, steps=steps,
                            checkpoint=str(ckpt["path"]), sampler=sampler, **settings, **record)
    how = f"{sampler}, {steps} steps" + (f", eta {settings['eta']:g}" if sampler == "ddim" else "")
    if labels is not None:
        which = f"label {args.label}" if args.label is not None else f"labels 0-{model.num_classes - 1} in turn"
        how += f", {which}, guidance {guidance:g}"
    images_word = "image" if args.n == 1 else "images"
    print(f"wrote {args.n} {images_word} ({how}, seed {args.seed}) to {png} and {npz}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    result = run_bench(device=args.device, preset=args.preset, batch_size=args.batch_size, quick=args.quick,
                       compile=args.compile)
    print(json.dumps(result))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from .metrics import sample_quality

    if args.samples.is_dir():
        raise UsageError(f"{args.samples} is a folder; give the samples file in it, e.g. "
                         f"{args.samples / 'samples.npz'}")
    check_regular_file(args.samples, "samples file")
    try:
        with np.load(args.samples) as f:
            images = f["images"]
    except Exception:
        raise UsageError(f"{args.samples} is not a samples.npz with an 'images' array") from None
    if images.ndim == 4 and images.shape[1] == 1:                          # (N, 1, H, W), channels first
        images = images[:, 0]
    elif images.ndim == 4 and images.shape[-1] == 1:                       # (N, H, W, 1), channels last
        images = images[..., 0]
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != (32, 32):
        raise UsageError(f"{args.samples}: expected uint8 digit images (N, 32, 32) or (N, 1, 32, 32), got "
                         f"{images.dtype} {images.shape}")
    report = sample_quality(to_model_range(images))
    print(json.dumps(report, indent=2))
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "bench": cmd_bench, "metrics": cmd_metrics}
PLUGIN_GROUP = "ddpm_lib.commands"


def _plugin_commands() -> dict:
    """Commands other packages add: entry points of the group ``ddpm_lib.commands``, each ``NAME =
    "module:function"`` where ``function(subparsers)`` adds the command's parser, whose ``run`` default
    (``set_defaults(run=...)``) runs it. The book's grader comes in this way (``grade``, from
    ddpm_lib.book.cli): the library names no command it does not hold, and never imports the book
    (tests/test_layers.py)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in COMMANDS}


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled as SIGINT: the command stops with a message saying what was written."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)


def _out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    return isinstance(err, RuntimeError) and bool(re.search(r"can't allocate memory|out of memory", str(err), re.I))


def _error_message(err: Exception, command: str | None) -> str:
    """One line for an error the command could not handle itself; the library's errors that suggest a setting
    get the flag that changes it."""
    if _out_of_memory(err):
        tried = re.search(r"allocate (\d+) bytes", str(err))
        size = f" (it asked for {gigabytes(int(tried.group(1)))})" if tried else ""
        return f"out of memory{size}; {MEMORY_HINTS.get(command, 'use less data')}"
    if isinstance(err, RunFolderBusy):
        return (f"{err.folder} is in use by another process (pid {err.holder}); wait for it to finish or stop it, "
                "or choose another --out")
    if isinstance(err, TrainingDiverged):
        return f"{err.reason}; try a lower --lr (now {err.lr})"
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(err, (ValueError, DatasetUnavailable, TrainingDiverged, RunFolderBusy, TensorBoardMissing,
                               OSError)):
        message = f"{type(err).__name__}: {message} (run with --debug for the traceback)"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    command = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupted) if in_main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            args = build_parser().parse_args(argv)
            command = args.command
            if command is None:
                build_parser().print_help()
                return EXIT_USAGE
            return (COMMANDS.get(command) or args.run)(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:                                       # SIGINT, or SIGTERM (Interrupted)
        signum = getattr(err, "signum", signal.SIGINT)
        message = getattr(err, "message", None) or (f"interrupted ({signal.Signals(signum).name}); "
                                                    f"{INTERRUPTED.get(command, 'nothing was written')}")
        print(f"error: {message}", file=sys.stderr)
        return 128 + signum
    except Exception as err:  # library errors become one line (ValueError, CheckpointError, ...)
        if debug:
            raise
        print(f"error: {_error_message(err, command)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError) else EXIT_FAILURE
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm if previous_sigterm is not None else signal.SIG_DFL)
