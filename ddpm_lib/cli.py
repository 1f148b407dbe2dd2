"""Command line: ``python -m ddpm_lib {train,sample,bench,metrics}``.

Every command checks its input first and reports a mistake as one line, ``error: ...``, with exit
status 2 (usage) or 1 (failure while running); never a traceback. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

EXIT_USAGE, EXIT_FAILURE = 2, 1
# `sample` with the shipped model on a CPU: DDIM (eta 0) on 50 steps scores within a few points of
# 1,000 DDPM steps, 20 times faster (scripts/sampler_quality.py; chapter 6 and appendix A1 have the rows).
SHIPPED_CPU_SAMPLER, SHIPPED_CPU_STEPS = "ddim", 50
DDIM_DEFAULT_STEPS = 50                                  # `--sampler ddim` without --steps, any model


class UsageError(Exception):
    """Bad input from the command line (exit status 2)."""


def int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``, with a one-line message otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
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


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .unet import PRESETS

    parser = Parser(prog="python -m ddpm_lib", description="Train, sample and measure DDPM models.")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,bench,metrics}", parser_class=Parser)

    train = sub.add_parser("train", help="train a model (see RunConfig for every setting)",
                           description="Train a DDPM. Flags override the values of --config.")
    train.add_argument("--config", type=Path, help="YAML file of RunConfig settings, e.g. configs/mnist_small.yml")
    train.add_argument("--dataset", choices=DATASETS, help="data set (default mnist-sample, which ships with ddpm_lib)")
    train.add_argument("--data-root", help="folder for torchvision data sets")
    train.add_argument("--preset", choices=sorted(PRESETS), help="UNet preset (default tiny)")
    train.add_argument("--num-classes", type=positive_int,
                       help="train a class-conditional model on the data set's K labels (default: unconditional)")
    train.add_argument("--label-dropout", type=float,
                       help="share of labels replaced by 'no label' during training, for guidance (default 0.1)")
    train.add_argument("--init-from", metavar="CHECKPOINT",
                       help="start from the weights of this checkpoint (e.g. fine-tune the shipped model)")
    train.add_argument("--schedule", choices=("linear", "cosine"), help="noise schedule (default linear)")
    train.add_argument("--steps", type=positive_int, help="optimizer steps to reach (default 10000)")
    train.add_argument("--batch-size", type=positive_int, help="images per step (default 64)")
    train.add_argument("--lr", type=positive_float, help="learning rate (default 2e-4)")
    train.add_argument("--warmup-steps", type=nonnegative_int, help="linear learning-rate warm-up (default 200)")
    train.add_argument("--lr-decay-steps", type=nonnegative_int,
                       help="decay the learning rate linearly to 0 over the last N steps (default 0: no decay)")
    train.add_argument("--ema-decay", type=float, help="EMA decay (default 0.999)")
    train.add_argument("--seed", type=nonnegative_int, help="random seed (default 0)")
    train.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints (default 1000)")
    train.add_argument("--out", help="output folder for last.pt and log.csv (default runs/ddpm)")
    train.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                       help="continue from CHECKPOINT (default OUT/last.pt) up to --steps")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    train.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    train.add_argument("--no-bf16", dest="bf16", action="store_false", default=None, help="train in float32 on CUDA")
    train.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                       help="no progress bar")

    sample = sub.add_parser("sample", help="draw images from a checkpoint",
                            description="Draw images; writes OUT/samples.png (a grid) and OUT/samples.npz "
                                        "(key 'images', uint8, and the settings: sampler, steps, seed, "
                                        "checkpoint, variance for ddpm or eta for ddim).")
    sample.add_argument("--checkpoint", type=Path,
                        help="checkpoint or weights file (default: the MNIST model that ships with ddpm_lib)")
    sample.add_argument("--n", type=positive_int, default=64, help="number of images (default 64)")
    sample.add_argument("--sampler", choices=("ddpm", "ddim"), default=None,
                        help="DDPM's ancestral sampler or DDIM (default: ddim for the shipped model on a CPU, "
                             "else ddpm)")
    sample.add_argument("--eta", type=float, default=None,
                        help="DDIM's noise scale: 0 deterministic, 1 DDPM's posterior variance (default 0)")
    sample.add_argument("--steps", type=positive_int, default=None,
                        help="reverse steps; fewer than T respaces the schedule (default: 50 for ddim, "
                             "else T)")
    sample.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    sample.add_argument("--variance", choices=("beta", "posterior"), default=None,
                        help="ddpm: sigma_t^2 = beta_t or the posterior variance (default beta)")
    sample.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA or raw weights (default ema)")
    sample.add_argument("--out", type=Path, default=Path("samples"), help="output folder (default ./samples)")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    sample.add_argument("--chunk-size", type=positive_int, default=None, help="images per model call")
    sample.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    bench = sub.add_parser("bench", help="time the tutorial's loops against ddpm_lib's",
                           description="Train and sample with the tutorial's loops and with ddpm_lib on the same "
                                       "model; prints a table and, last, one JSON line.")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    bench.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="UNet preset (default: tiny on CPU, tutorial on CUDA)")
    bench.add_argument("--batch-size", type=positive_int, default=None, help="training batch (default 64 CPU, 256 CUDA)")
    bench.add_argument("--quick", action="store_true", help="a short run (about 2 minutes on a 2-core CPU)")
    bench.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile ddpm_lib's model (default: on for CUDA)")

    metrics = sub.add_parser("metrics", help="sample-quality metrics of images or a checkpoint",
                             description="Classifier confidence, class balance and feature Frechet distance of "
                                         "MNIST samples, against held-out real digits.")
    metrics.add_argument("samples", type=Path, help="a samples.npz written by `sample`")
    return parser


TRAIN_FLAGS = ("dataset", "data_root", "preset", "num_classes", "label_dropout", "init_from", "schedule", "steps", "batch_size", "lr", "warmup_steps",
               "lr_decay_steps", "ema_decay", "seed", "checkpoint_every", "out", "device", "compile", "bf16", "progress")


def _settings_given(args: argparse.Namespace) -> dict:
    """The settings this command line asks for: the --config file's, then the flags given."""
    from .training import read_yaml_settings

    given = read_yaml_settings(args.config) if args.config else {}
    given.update({key: getattr(args, key) for key in TRAIN_FLAGS if getattr(args, key) is not None})
    return given


def check_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed; a UsageError when that fails or it cannot be written."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {what} {path} ({err.strerror})") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"{what} {path} is not writable")
    return path


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .training import RunConfig, Trainer, check_resumable

    given = _settings_given(args)
    base = RunConfig().to_dict()
    ckpt = None
    if args.resume is not None:
        out = Path(given.get("out", base["out"]))
        path = out / "last.pt" if args.resume == "auto" else Path(args.resume)
        ckpt = load_checkpoint(path)
        base = ckpt["config"]                                              # the run's own settings ...
    config = RunConfig.from_dict({**base, **given}).validate()             # ... and what is asked now
    if ckpt is not None:
        check_resumable(ckpt, config)                                      # before any data is loaded
    if ckpt is not None and config.steps <= ckpt["step"]:
        print(f"{ckpt['path']} is already at step {ckpt['step']} of {config.steps}; raise --steps to train on")
        return 0
    check_writable_dir(Path(config.out), "output folder")
    trainer = Trainer(config)
    if ckpt is not None:
        trainer.load_state(ckpt)
        if trainer.dist.is_main:
            print(f"resumed {ckpt['path']} at step {trainer.step}")
    trainer.train()
    if trainer.dist.is_main:
        print(f"done: step {trainer.step}, checkpoint {Path(config.out) / 'last.pt'}, log {Path(config.out) / 'log.csv'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import SHIPPED, load_checkpoint, model_from_checkpoint
    from .data import to_uint8
    from .images import save_grid
    from .sampling import ddim_sample, ddpm_sample
    from .training import resolve_device

    device = resolve_device(args.device)
    shipped_cpu = (args.checkpoint is None or Path(args.checkpoint).resolve() == SHIPPED) and device.type == "cpu"
    sampler = args.sampler or (SHIPPED_CPU_SAMPLER if shipped_cpu else "ddpm")
    if sampler == "ddpm" and args.eta is not None:
        raise UsageError("--eta is for --sampler ddim" + ("" if args.sampler else " (the sampler here is ddpm)"))
    if args.eta is not None and not 0 <= args.eta < float("inf"):
        raise UsageError(f"--eta must be a number >= 0, got {args.eta}")
    if sampler == "ddim" and args.variance is not None:
        raise UsageError("--variance is for --sampler ddpm (DDIM's noise is set by --eta)")
    out = check_writable_dir(args.out, "output folder")
    ckpt = load_checkpoint(args.checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, schedule = model_from_checkpoint(ckpt, weights=args.weights, device=device)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if device.type == "cpu":
        model = model.to(memory_format=__import__("torch").channels_last)
    steps = args.steps
    if steps is None:
        steps = SHIPPED_CPU_STEPS if shipped_cpu else DDIM_DEFAULT_STEPS if sampler == "ddim" else schedule.T
        steps = min(steps, schedule.T)
    if steps > schedule.T:
        raise UsageError(f"--steps {steps} is more than the {schedule.T} steps the model was trained with")
    shape = (args.n, model.in_channels, model.image_size, model.image_size)
    common = {"seed": args.seed, "steps": steps, "device": device, "chunk_size": args.chunk_size,
              "progress": args.progress}
    if sampler == "ddim":
        settings = {"eta": args.eta or 0.0}
        images = ddim_sample(model, schedule, shape, **settings, **common)
    else:
        settings = {"variance": args.variance or "beta"}
        images = ddpm_sample(model, schedule, shape, **settings, **common)
    pixels = to_uint8(images).numpy()                                       # (N, C, H, W)
    if pixels.shape[1] == 1:
        pixels = pixels[:, 0]                                              # (N, H, W)
    np.savez_compressed(out / "samples.npz", images=pixels, seed=args.seed, steps=steps,
                        checkpoint=str(ckpt["path"]), sampler=sampler, **settings)
    save_grid(images, out / "samples.png")
    how = f"{sampler}, {steps} steps" + (f", eta {settings['eta']:g}" if sampler == "ddim" else "")
    print(f"wrote {args.n} images ({how}, seed {args.seed}) to {out / 'samples.png'} and {out / 'samples.npz'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    result = run_bench(device=args.device, preset=args.preset, batch_size=args.batch_size, quick=args.quick,
                       compile=args.compile)
    print(json.dumps(result))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import to_model_range
    from .metrics import sample_quality

    if not args.samples.is_file():
        raise UsageError(f"samples file {args.samples} does not exist")
    try:
        with np.load(args.samples) as f:
            images = f["images"]
    except Exception:
        raise UsageError(f"{args.samples} is not a samples.npz with an 'images' array") from None
    report = sample_quality(to_model_range(images))
    print(json.dumps(report, indent=2))
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "bench": cmd_bench, "metrics": cmd_metrics}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted; the last checkpoint written is intact", file=sys.stderr)
        return 130
    except Exception as err:  # library errors become one line (ValueError, CheckpointError, ...)
        if debug:
            raise
        from .data import DatasetUnavailable
        from .training import TrainingDiverged

        known = (ValueError, DatasetUnavailable, TrainingDiverged, OSError)
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not isinstance(err, known):
            message = f"{type(err).__name__}: {message} (run with --debug for the traceback)"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError) else EXIT_FAILURE
