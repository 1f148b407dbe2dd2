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
# `sample` with the shipped model on a CPU: 500 respaced steps score as well as 1000 there, in half the
# time (appendix A1 has both rows).
SHIPPED_CPU_STEPS = 500


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


def _train_flags() -> dict[str, dict]:
    """argparse settings of the ``train`` flags, one per RunConfig setting (their help comes from RunConfig)."""
    from .config import PRECISIONS
    from .data import DATASETS
    from .schedule import SCHEDULES
    from .unet import PRESETS

    return {
        "dataset": dict(choices=DATASETS), "data_root": dict(metavar="DIR"), "preset": dict(choices=sorted(PRESETS)),
        "num_classes": dict(type=positive_int, metavar="K"), "label_dropout": dict(type=float, metavar="P"),
        "label_lr_scale": dict(type=positive_float, metavar="X"),
        "init_from": dict(metavar="CHECKPOINT"), "schedule": dict(choices=SCHEDULES),
        "timesteps": dict(type=int_at_least(2), metavar="T"), "steps": dict(type=positive_int, metavar="N"),
        "batch_size": dict(type=positive_int, metavar="N"), "lr": dict(type=positive_float, metavar="X"),
        "warmup_steps": dict(type=nonnegative_int, metavar="N"),
        "lr_decay_steps": dict(type=nonnegative_int, metavar="N"),
        "ema_decay": dict(type=float, metavar="D"), "seed": dict(type=nonnegative_int, metavar="N"),
        "checkpoint_every": dict(type=positive_int, metavar="N"), "log_every": dict(type=positive_int, metavar="N"),
        "tensorboard": dict(action=argparse.BooleanOptionalAction),
        "sample_every": dict(type=nonnegative_int, metavar="N"), "sample_steps": dict(type=positive_int, metavar="K"),
        "out": dict(metavar="DIR"), "device": dict(), "precision": dict(choices=PRECISIONS),
        "compile": dict(action=argparse.BooleanOptionalAction), "progress": dict(action=argparse.BooleanOptionalAction),
    }


def build_parser() -> argparse.ArgumentParser:
    from .config import setting_help
    from .unet import PRESETS

    parser = Parser(prog="python -m ddpm_lib", description="Train, sample and measure DDPM models.")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,bench,metrics}", parser_class=Parser)

    train = sub.add_parser("train", help="train a model (see RunConfig for every setting)",
                           description="Train a DDPM. Flags override the values of --config.")
    train.add_argument("--config", type=Path, help="YAML file of RunConfig settings, e.g. configs/mnist_small.yml")
    for name, kwargs in _train_flags().items():
        train.add_argument("--" + name.replace("_", "-"), dest=name, help=setting_help(name), **kwargs)
    train.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                       help="continue from CHECKPOINT (default OUT/last.pt) up to --steps; its folder is the "
                            "output folder unless --out is given")
    train.add_argument("--no-bf16", dest="precision", action="store_const", const="fp32",
                       help="same as --precision fp32")

    sample = sub.add_parser("sample", help="draw images from a checkpoint",
                            description="Draw images; writes OUT/samples.png (a grid) and OUT/samples.npz "
                                        "(key 'images', uint8).")
    sample.add_argument("--checkpoint", type=Path,
                        help="checkpoint or weights file (default: the MNIST model that ships with ddpm_lib)")
    sample.add_argument("--n", type=positive_int, default=64, help="number of images (default 64)")
    sample.add_argument("--steps", type=positive_int, default=None,
                        help="reverse steps; fewer than T respaces the schedule (default: 1000 on CUDA, "
                             "500 for the shipped model on CPU, else T)")
    sample.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    sample.add_argument("--variance", choices=("beta", "posterior"), default="beta",
                        help="sigma_t^2 = beta_t or the posterior variance (default beta)")
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
    bench.add_argument("--batch-size", type=positive_int, default=None,
                       help="training batch (default 64 CPU, 256 CUDA)")
    bench.add_argument("--quick", action="store_true", help="a short run (about 2 minutes on a 2-core CPU)")
    bench.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile ddpm_lib's model (default: on for CUDA)")

    metrics = sub.add_parser("metrics", help="sample-quality metrics of images or a checkpoint",
                             description="Classifier confidence, class balance and feature Frechet distance of "
                                         "MNIST samples, against held-out real digits.")
    metrics.add_argument("samples", type=Path, help="a samples.npz written by `sample`")
    return parser


def _settings_given(args: argparse.Namespace) -> dict:
    """The settings this command line asks for: the --config file's, then the flags given."""
    from .config import read_yaml_settings

    given = read_yaml_settings(args.config) if args.config else {}
    given.update({key: getattr(args, key) for key in _train_flags() if getattr(args, key) is not None})
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
    from .config import RunConfig
    from .training import Trainer

    given = _settings_given(args)
    if args.resume is not None:
        if args.resume == "auto":
            path = Path(given.get("out", RunConfig().out)) / "last.pt"
        else:
            path = Path(args.resume)
            given.setdefault("out", str(path.parent))          # the file's own folder, never the one stored in it
        check_writable_dir(Path(given["out"]) if "out" in given else path.parent, "output folder")
        trainer = Trainer.resume(path, given)
        if trainer.dist.is_main:
            print(f"resumed {path} at step {trainer.step}")
    else:
        config = RunConfig.from_dict(given)
        check_writable_dir(Path(config.out), "output folder")
        trainer = Trainer(config)
    config = trainer.config
    if trainer.step >= config.steps:
        print(f"{config.out} is already at step {trainer.step} of {config.steps}; raise --steps to train on")
        return 0
    if trainer.dist.is_main and config.tensorboard:
        print(f"watch it: tensorboard --logdir {Path(config.out) / 'tensorboard'}")
    trainer.train()
    if trainer.dist.is_main:
        out = Path(config.out)
        print(f"done: step {trainer.step}, checkpoint {out / 'last.pt'}, log {out / 'log.csv'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import SHIPPED, load_checkpoint, model_from_checkpoint
    from .data import to_uint8
    from .images import save_grid
    from .sampling import ddpm_sample
    from .device import resolve_device

    device = resolve_device(args.device)
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
        shipped = args.checkpoint is None or Path(args.checkpoint).resolve() == SHIPPED
        steps = SHIPPED_CPU_STEPS if shipped and device.type == "cpu" else schedule.T
    if steps > schedule.T:
        raise UsageError(f"--steps {steps} is more than the {schedule.T} steps the model was trained with")
    shape = (args.n, model.in_channels, model.image_size, model.image_size)
    images = ddpm_sample(model, schedule, shape, seed=args.seed, variance=args.variance, steps=steps,
                         device=device, chunk_size=args.chunk_size, progress=args.progress)
    pixels = to_uint8(images).numpy()                                       # (N, C, H, W)
    if pixels.shape[1] == 1:
        pixels = pixels[:, 0]                                              # (N, H, W)
    np.savez_compressed(out / "samples.npz", images=pixels, seed=args.seed, steps=steps,
                        checkpoint=str(ckpt["path"]), variance=args.variance)
    save_grid(images, out / "samples.png")
    print(f"wrote {args.n} images ({steps} steps, seed {args.seed}) to {out / 'samples.png'} and {out / 'samples.npz'}")
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
        from .monitor import TensorBoardMissing
        from .training import TrainingDiverged

        known = (ValueError, DatasetUnavailable, TrainingDiverged, TensorBoardMissing, OSError)
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not isinstance(err, known):
            message = f"{type(err).__name__}: {message} (run with --debug for the traceback)"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError) else EXIT_FAILURE
