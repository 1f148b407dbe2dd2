"""Quality against steps for the shipped model: DDPM, DDIM (eta 0 and 1), Heun and DPM-Solver++, several seeds.

    OMP_NUM_THREADS=2 nice -n 5 python scripts/sampler_quality.py            # hours on a 2-core CPU
    python scripts/sampler_quality.py --table                                # print the table so far
    python scripts/sampler_quality.py --runs ddpm:1000 ddim-eta0:50          # only these, every seed
    python scripts/sampler_quality.py --ode        # Heun and DPM-Solver++, into book/assets/ode_quality.json
    OMP_NUM_THREADS=2 python scripts/sampler_quality.py --model mnist_conditional --n 60
                                    # the class-conditional model, every sampler, 5-50 calls

For each (sampler, steps, seed) it draws --n images (256) from the shipped MNIST model on the CPU, as
`python -m ddpm_lib sample` does (EMA weights, channels_last, chunks of 64), rounds them to uint8 as
samples.npz stores them (kept under runs/sampler_quality/), scores them with
ddpm_lib.metrics.sample_quality as `python -m ddpm_lib metrics` does, and appends a row to the JSON file (default
ddpm_lib/book/assets/sampler_quality.json) as soon as it is done: run it again to resume where it stopped.
Each row records the wall time of the sampling alone, the thread count and the load average: wall
times measured while other jobs share the CPU are inflated, compare them within a row's conditions.
For the ODE solvers of ddpm_lib.ode (samplers "heun" and "dpm++", chapter 8) ``steps`` is the number of
network calls, as it is for DDPM and DDIM, so every row compares samplers at equal cost. Their rows go to
a file of their own (``--ode``: ddpm_lib/book/assets/ode_quality.json by default), so that the file chapter 6
reads keeps the three samplers it compares; ddpm_lib.book.results.sampler_quality_summary reads either.

``--model mnist_conditional`` measures the shipped class-conditional model (chapter 7) instead: every
sampler (DDPM, DDIM eta 0 and 1, Heun, DPM-Solver++) at 5, 10, 20 and 50 network calls, every seed,
asking for the labels ``arange(n) % 10`` (n/10 of each digit), with classifier-free guidance at the
card's default weight w (chapter 7's; ``--guidance`` overrides). One network call is one evaluation of
the guided noise predictor: for w not 0 or 1, a single U-Net pass on a batch of 2n (with and without the
label). Each row adds ddpm_lib.metrics.conditional_quality's requested-label accuracy and within-class
spread; the file (ddpm_lib/book/assets/conditional_sampler_quality.json by default) also holds the
command lines that wrote it and the same metrics on subsets of n real held-out digits (their Frechet
distance is the floor at that n: with few images the Frechet distance is biased upwards).
The chapters (notebooks/06_ddim.ipynb, 08_ode_samplers.ipynb) and appendix A1 plot and tabulate the files;
they never rerun them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_lib.checkpoint import load_checkpoint, model_from_checkpoint
from ddpm_lib.data import to_model_range, to_uint8
from ddpm_lib.book.results import sampler_quality_summary
from ddpm_lib.metrics import conditional_quality, reference_split, sample_quality
from ddpm_lib.drawing import draw as draw_by_name
from evaluate_checkpoint import cpu_name  # scripts/ is sys.path[0] when a script runs

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "ddpm_lib" / "book" / "assets" / "sampler_quality.json"
ODE_OUT = ROOT / "ddpm_lib" / "book" / "assets" / "ode_quality.json"           # heun and dpm++ (--ode)
COND_OUT = ROOT / "ddpm_lib" / "book" / "assets" / "conditional_sampler_quality.json"   # --model mnist_conditional
IMAGES = ROOT / "runs" / "sampler_quality"
MODELS = ("mnist_small", "mnist_conditional")
SAMPLERS = {"ddpm": ("ddpm", None), "ddim-eta0": ("ddim", 0.0), "ddim-eta1": ("ddim", 1.0),
            "heun": ("heun", None), "dpm++": ("dpm++", None)}
BASE_SAMPLERS = ("ddpm", "ddim-eta0", "ddim-eta1")       # the chapter-6 comparison
ODE_SAMPLERS = ("heun", "dpm++")                          # chapter 8: steps = network calls
ODE_STEPS = (5, 10, 20, 50)
STEPS = (10, 20, 50, 100, 250, 500)
COND_STEPS = (5, 10, 20, 50)                              # the conditional model: network calls
SEEDS = (0, 1, 2)
FULL_STEPS = 1000
FULL_SAMPLERS = ("ddpm", "ddim-eta0")


def plan(seeds=SEEDS, steps=STEPS, full_seeds=SEEDS, ode_steps=ODE_STEPS) -> list[tuple[str, int, int]]:
    """Every (sampler, steps, seed) to run, so that a run stopped early has the most useful rows.

    Every seed of the steps up to 100 first, then the largest steps below 1000 one seed at a time,
    then the 1000-step rows (ddpm and ddim eta 0) for the first seed, the other seeds last; then the
    ODE solvers (heun, dpm++) at ``ode_steps`` network calls, every seed.
    """
    cheap = [s for s in steps if s <= 100]
    base = BASE_SAMPLERS
    runs = [(name, s, seed) for seed in seeds for s in cheap for name in base]
    runs += [(name, s, seed) for seed in seeds[:1] for s in steps if s not in cheap for name in base]
    runs += [(name, FULL_STEPS, seed) for seed in full_seeds[:1] for name in FULL_SAMPLERS]
    runs += [(name, s, seed) for seed in seeds[1:] for s in steps if s not in cheap for name in base]
    runs += [(name, FULL_STEPS, seed) for seed in full_seeds[1:] for name in FULL_SAMPLERS]
    runs += [(name, s, seed) for seed in seeds for s in ode_steps for name in ODE_SAMPLERS]
    return runs


def conditional_plan(seeds=SEEDS, steps=COND_STEPS) -> list[tuple[str, int, int]]:
    """Every (sampler, calls, seed) for the conditional model: every sampler at the calls up to 20 for
    every seed first, then 50 calls seed by seed, so that a run stopped early has whole seeds."""
    cheap = [s for s in steps if s <= 20]
    runs = [(name, s, seed) for seed in seeds for s in cheap for name in SAMPLERS]
    runs += [(name, s, seed) for seed in seeds for s in steps if s not in cheap for name in SAMPLERS]
    return runs


def load_conditional(path: Path, n: int, guidance: float) -> dict:
    """The conditional results file, or a new one with its header and the real-digit calibration at n."""
    if path.is_file():
        data = json.loads(path.read_text())
        if data["guidance"] != guidance:
            raise SystemExit(f"{path} holds guidance w = {data['guidance']:g}, not {guidance:g}: "
                             "give another --out")
        return data
    return {"produced_by": "scripts/sampler_quality.py --model mnist_conditional",
            "commands": [],
            "model": "ddpm_lib/assets/mnist_conditional.pt (EMA)",
            "guidance": guidance,
            "labels": "requested labels torch.arange(n) % 10: n/10 images of each digit",
            "calls": "steps = network calls: evaluations of the guided noise predictor, each one U-Net "
                     "pass on a batch of 2n (with and without the label) for w other than 0 and 1",
            "note": "metrics are ddpm_lib.metrics.conditional_quality on the images rounded to uint8 (as "
                    "samples.npz holds them); accuracy = share the classifier reads as the requested "
                    "label; spread = within-class feature variance over that of real digits; the "
                    "Frechet distance against the 744 reference images is biased upwards for small n "
                    "(see real_calibration, real digits at the same n); wall_s is the sampling time "
                    "alone, with other jobs sharing the CPU (threads and load_avg per row)",
            "real_calibration": real_calibration(n),
            "rows": []}


def real_calibration(n: int) -> dict:
    """conditional_quality on disjoint subsets of n real held-out digits (their true labels as requested):
    what real data scores at this n. Mean and sample standard deviation over the subsets."""
    _, calib, _, calib_labels = reference_split("mnist", with_labels=True)          # (256, 1, 32, 32)
    subsets = max(1, calib.shape[0] // n)
    runs = [conditional_quality(calib[i * n:(i + 1) * n], calib_labels[i * n:(i + 1) * n])
            for i in range(subsets)]
    out: dict = {"n": n, "subsets": subsets}
    for key in ("accuracy", "confident", "class_entropy", "spread", "frechet"):
        values = np.array([r[key] for r in runs], dtype=np.float64)
        out[key] = float(values.mean())
        out[key + "_sd"] = float(values.std(ddof=1)) if subsets > 1 else 0.0
    return out


def load(path: Path, produced_by: str = "scripts/sampler_quality.py") -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"produced_by": produced_by, "model": "ddpm_lib/assets/mnist_small.pt (EMA)",
            "note": "metrics on the images rounded to uint8 (as samples.npz holds them); "
                    "wall_s is the sampling time alone on the CPU named; other jobs shared the CPU "
                    "(see threads and load_avg per row), so times are inflated and comparable only "
                    "roughly; metrics are ddpm_lib.metrics.sample_quality on the images",
            "rows": []}


def save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def draw(model, schedule, sampler: str, steps: int, seed: int, n: int, labels=None,
         guidance: float = 1.0) -> torch.Tensor:
    kind, eta = SAMPLERS[sampler]
    shape = (n, model.in_channels, model.image_size, model.image_size)
    given = {"steps": steps, "seed": seed, "device": "cpu", "labels": labels, "guidance": guidance}
    if kind == "ddim":
        given["eta"] = eta
    return draw_by_name(model, schedule, shape, kind, **given)


def measure(model, schedule, sampler: str, steps: int, seed: int, n: int, *, threads: int, quality,
            keep_as: str | None, labels=None, guidance: float = 1.0) -> tuple[dict, dict]:
    """One run: draw n images, time the drawing alone, keep them as IMAGES/<keep_as>.npz (None: not kept), and
    score them with ``quality`` (images in [-1, 1] after the uint8 rounding samples.npz applies). Returns the
    row's fields every results file shares, and what ``quality`` returned."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    images = draw(model, schedule, sampler, steps, seed, n, labels=labels, guidance=guidance)
    wall = time.perf_counter() - start
    pixels = to_uint8(images)[:, 0].numpy()                               # (N, 32, 32) as samples.npz
    if keep_as is not None:
        IMAGES.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(IMAGES / f"{keep_as}.npz", images=pixels)
    q = quality(to_model_range(pixels))
    row = {"sampler": sampler, "steps": steps, "seed": seed, "n": n, "confident": q["confident"],
           "class_entropy": q["class_entropy"], "frechet": q["frechet"], "wall_s": round(wall, 2),
           "threads": threads, "load_avg_before": round(load_before, 2),
           "load_avg_after": round(os.getloadavg()[0], 2), "class_counts": q["class_counts"],
           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    return row, q


def table(path: Path) -> str:
    lines = ["| sampler | steps | seeds | confident (%) | class entropy | feature Frechet | wall (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for e in sampler_quality_summary(path):
        lines.append(f"| {e['sampler']} | {e['steps']} | {len(e['seeds'])} "
                     f"| {100 * e['confident']:.1f} ± {100 * e['confident_sd']:.1f} "
                     f"| {e['class_entropy']:.3f} ± {e['class_entropy_sd']:.3f} "
                     f"| {e['frechet']:.1f} ± {e['frechet_sd']:.1f} "
                     f"| {e['wall_s']:.0f} ({e['wall_s_min']:.0f}-{e['wall_s_max']:.0f}) |")
    return "\n".join(lines)


def conditional_table(path: Path) -> str:
    """The conditional file's rows as a table: mean ± standard error over the seeds."""
    lines = ["| sampler | calls | seeds | accuracy (%) | confident (%) | spread | feature Frechet |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for e in sampler_quality_summary(path):
        k = len(e["seeds"]) ** 0.5
        lines.append(f"| {e['sampler']} | {e['steps']} | {len(e['seeds'])} "
                     f"| {100 * e['accuracy']:.1f} ± {100 * e['accuracy_sd'] / k:.1f} "
                     f"| {100 * e['confident']:.1f} ± {100 * e['confident_sd'] / k:.1f} "
                     f"| {e['spread']:.2f} ± {e['spread_sd'] / k:.2f} "
                     f"| {e['frechet']:.1f} ± {e['frechet_sd'] / k:.1f} |")
    return "\n".join(lines)


def parse_run(text: str, parser: argparse.ArgumentParser, runs=None) -> tuple[str, int]:
    """"ddpm:1000" -> ("ddpm", 1000); a name or number the plan does not have is a one-line error."""
    sampler, _, steps = text.partition(":")
    known = {(name, s) for name, s, _ in (runs if runs is not None else plan())}
    if not steps.isdigit() or (sampler, int(steps)) not in known:
        parser.error(f"--runs {text}: expected SAMPLER:STEPS from the plan, e.g. ddpm:1000 "
                     f"(samplers {', '.join(SAMPLERS)}; steps {', '.join(map(str, sorted({s for _, s in known})))})")
    return sampler, int(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results file (default {OUT.relative_to(ROOT)}; with --ode {ODE_OUT.relative_to(ROOT)})")
    parser.add_argument("--n", type=int, default=256, help="images per run (default 256)")
    parser.add_argument("--table", action="store_true", help="print the table of the file and stop")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 8 images, 2 and 5 steps, one seed")
    parser.add_argument("--ode", action="store_true",
                        help=f"run only the ODE solvers ({', '.join(ODE_SAMPLERS)}) of the plan")
    parser.add_argument("--model", choices=MODELS, default="mnist_small",
                        help="the shipped model to measure (default mnist_small); mnist_conditional is the "
                             "class-conditional model of chapter 7: every sampler at "
                             f"{', '.join(map(str, COND_STEPS))} network calls, balanced labels, guidance "
                             f"as --guidance, rows into {COND_OUT.relative_to(ROOT)}")
    parser.add_argument("--guidance", type=float, default=None,
                        help="with --model mnist_conditional: the classifier-free guidance weight w "
                             "(default: the card's default weight, chapter 7's)")
    parser.add_argument("--runs", nargs="+", metavar="SAMPLER:STEPS",
                        help="run only these (sampler, steps) pairs of the plan, every seed, in the plan's order "
                             f"(samplers: {', '.join(SAMPLERS)})")
    args = parser.parse_args()
    if args.model == "mnist_conditional":
        if args.ode:
            parser.error("--ode and --model mnist_conditional: the conditional plan runs every sampler")
        conditional(args, parser)
        return
    if args.guidance is not None:
        parser.error("--guidance is for --model mnist_conditional (the unconditional model has no labels)")
    if args.runs and not args.ode:                       # heun:K / dpm++:K alone imply --ode
        named = {text.partition(":")[0] for text in args.runs}
        if named & set(ODE_SAMPLERS) and named - set(ODE_SAMPLERS):
            parser.error(f"--runs: run {' and '.join(ODE_SAMPLERS)} apart from the others (their rows go to "
                         f"{ODE_OUT.relative_to(ROOT)})")
        args.ode = named <= set(ODE_SAMPLERS)
    if args.out is None:
        args.out = ODE_OUT if args.ode else OUT
    data = load(args.out, "scripts/sampler_quality.py --ode" if args.ode else "scripts/sampler_quality.py")
    if args.table:
        print(table(args.out))
        return
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    runs = plan((0,), (2, 5), (), (2, 5)) if args.quick else plan()
    if args.ode:
        runs = [r for r in runs if r[0] in ODE_SAMPLERS]
    if args.runs:
        wanted = {parse_run(text, parser) for text in args.runs}
        runs = [r for r in runs if r[:2] in wanted]
    n = 8 if args.quick else args.n
    data.setdefault("cpu", cpu_name())
    done = {(r["sampler"], r["steps"], r["seed"]) for r in data["rows"] if r["n"] == n}
    model, schedule = model_from_checkpoint(load_checkpoint(None), device="cpu")
    model = model.to(memory_format=torch.channels_last)                   # as the CLI does on a CPU
    for sampler, steps, seed in runs:
        if (sampler, steps, seed) in done:
            continue
        row, q = measure(model, schedule, sampler, steps, seed, n, threads=threads, quality=sample_quality,
                         keep_as=None if args.quick else f"{sampler}_{steps}_{seed}")
        data["rows"].append(row)
        save(args.out, data)
        print(f"{sampler:9s} {steps:5d} steps seed {seed}: confident {100 * q['confident']:.1f}%, "
              f"entropy {q['class_entropy']:.3f}, Frechet {q['frechet']:.1f}, {row['wall_s']:.0f} s", flush=True)
    print(table(args.out))


def conditional(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--model mnist_conditional: every sampler at COND_STEPS calls, every seed, into COND_OUT."""
    out = args.out or COND_OUT
    if args.table:
        print(conditional_table(out))
        return
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    ckpt = load_checkpoint("mnist-conditional")
    guidance = float(ckpt["card"]["default_guidance"] if args.guidance is None else args.guidance)
    runs = conditional_plan((0,), (2, 5)) if args.quick else conditional_plan()
    if args.runs:
        wanted = {parse_run(text, parser, runs) for text in args.runs}
        runs = [r for r in runs if r[:2] in wanted]
    n = 20 if args.quick else args.n
    if n < 20 or n % 10:
        parser.error(f"--n {n}: the conditional model needs a multiple of 10, at least 20 (2 per digit)")
    if args.quick:
        out = Path(os.environ.get("TMPDIR", "/tmp")) / "conditional_sampler_quality_quick.json"
        out.unlink(missing_ok=True)
    data = load_conditional(out, n, guidance)
    data.setdefault("cpu", cpu_name())
    command = shlex.join(["python", "scripts/sampler_quality.py", *sys.argv[1:]])
    env = f"OMP_NUM_THREADS={threads} "
    done = {(r["sampler"], r["steps"], r["seed"]) for r in data["rows"] if r["n"] == n}
    model, schedule = model_from_checkpoint(ckpt, device="cpu")
    model = model.to(memory_format=torch.channels_last)                   # as the CLI does on a CPU
    requested = torch.arange(n) % 10                                       # (n,) balanced labels
    for sampler, steps, seed in runs:
        if (sampler, steps, seed) in done:
            continue
        if env + command not in data["commands"]:
            data["commands"].append(env + command)
        row, q = measure(model, schedule, sampler, steps, seed, n, threads=threads,
                         quality=lambda images: conditional_quality(images, requested),
                         keep_as=None if args.quick else f"conditional_{sampler}_{steps}_{seed}",
                         labels=requested, guidance=guidance)
        row.update(guidance=guidance, accuracy=q["accuracy"], spread=q["spread"],
                   per_class_accuracy=q["per_class_accuracy"])
        data["rows"].append(row)
        save(out, data)
        print(f"{sampler:9s} {steps:3d} calls seed {seed}: accuracy {100 * q['accuracy']:.1f}%, "
              f"confident {100 * q['confident']:.1f}%, spread {q['spread']:.2f}, "
              f"Frechet {q['frechet']:.1f}, {row['wall_s']:.0f} s", flush=True)
    print(conditional_table(out))


if __name__ == "__main__":
    main()
