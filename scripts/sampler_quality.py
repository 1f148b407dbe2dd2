"""Quality against steps for the shipped model: DDPM, DDIM (eta 0 and 1), Heun and DPM-Solver++, several seeds.

    OMP_NUM_THREADS=2 nice -n 5 python scripts/sampler_quality.py            # hours on a 2-core CPU
    python scripts/sampler_quality.py --table                                # print the table so far
    python scripts/sampler_quality.py --runs ddpm:1000 ddim-eta0:50          # only these, every seed
    python scripts/sampler_quality.py --ode        # Heun and DPM-Solver++, into book/assets/ode_quality.json

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
The chapters (notebooks/06_ddim.ipynb, 08_ode_samplers.ipynb) and appendix A1 plot and tabulate the file;
they never rerun it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_lib.checkpoint import load_checkpoint, model_from_checkpoint
from ddpm_lib.data import to_model_range, to_uint8
from ddpm_lib.book.results import sampler_quality_summary
from ddpm_lib.metrics import sample_quality
from ddpm_lib.ode import dpm_solver_sample, heun_sample
from ddpm_lib.sampling import ddim_sample, ddpm_sample
from evaluate_checkpoint import cpu_name  # scripts/ is sys.path[0] when a script runs

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "ddpm_lib" / "book" / "assets" / "sampler_quality.json"
ODE_OUT = ROOT / "ddpm_lib" / "book" / "assets" / "ode_quality.json"           # heun and dpm++ (--ode)
IMAGES = ROOT / "runs" / "sampler_quality"
SAMPLERS = {"ddpm": ("ddpm", None), "ddim-eta0": ("ddim", 0.0), "ddim-eta1": ("ddim", 1.0),
            "heun": ("heun", None), "dpm++": ("dpm++", None)}
BASE_SAMPLERS = ("ddpm", "ddim-eta0", "ddim-eta1")       # the chapter-6 comparison
ODE_SAMPLERS = ("heun", "dpm++")                          # chapter 8: steps = network calls
ODE_STEPS = (5, 10, 20, 50)
STEPS = (10, 20, 50, 100, 250, 500)
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


def draw(model, schedule, sampler: str, steps: int, seed: int, n: int) -> torch.Tensor:
    kind, eta = SAMPLERS[sampler]
    shape = (n, model.in_channels, model.image_size, model.image_size)
    if kind == "ddpm":
        return ddpm_sample(model, schedule, shape, seed=seed, steps=steps, device="cpu")
    if kind == "heun":
        return heun_sample(model, schedule, shape, steps=steps, seed=seed, device="cpu")
    if kind == "dpm++":
        return dpm_solver_sample(model, schedule, shape, steps=steps, seed=seed, device="cpu")
    return ddim_sample(model, schedule, shape, steps=steps, eta=eta, seed=seed, device="cpu")


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


def parse_run(text: str, parser: argparse.ArgumentParser) -> tuple[str, int]:
    """"ddpm:1000" -> ("ddpm", 1000); a name or number the plan does not have is a one-line error."""
    sampler, _, steps = text.partition(":")
    known = {(name, s) for name, s, _ in plan()}
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
    parser.add_argument("--runs", nargs="+", metavar="SAMPLER:STEPS",
                        help="run only these (sampler, steps) pairs of the plan, every seed, in the plan's order "
                             f"(samplers: {', '.join(SAMPLERS)})")
    args = parser.parse_args()
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
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        images = draw(model, schedule, sampler, steps, seed, n)
        wall = time.perf_counter() - start
        pixels = to_uint8(images)                                          # (N, 1, 32, 32) as samples.npz
        if not args.quick:
            IMAGES.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(IMAGES / f"{sampler}_{steps}_{seed}.npz", images=pixels[:, 0].numpy())
        q = sample_quality(to_model_range(pixels[:, 0].numpy()))
        row = {"sampler": sampler, "steps": steps, "seed": seed, "n": n, "confident": q["confident"],
               "class_entropy": q["class_entropy"], "frechet": q["frechet"], "wall_s": round(wall, 2),
               "threads": threads, "load_avg_before": round(load_before, 2),
               "load_avg_after": round(os.getloadavg()[0], 2), "class_counts": q["class_counts"],
               "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        data["rows"].append(row)
        save(args.out, data)
        print(f"{sampler:9s} {steps:5d} steps seed {seed}: confident {100 * q['confident']:.1f}%, "
              f"entropy {q['class_entropy']:.3f}, Frechet {q['frechet']:.1f}, {wall:.0f} s", flush=True)
    print(table(args.out))


if __name__ == "__main__":
    main()
