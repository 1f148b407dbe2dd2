"""Grade students' notebooks: ``python -m ddpm_lib grade SUBMISSION.ipynb... [--out grades.csv]``.

Each submission runs in a fresh Jupyter kernel, without network (a network namespace of its own where
``unshare`` allows one, else Python's sockets refuse to connect), with its solution cells removed and a
time limit on its cells. Nothing the notebook prints is read. After each exercise cell an injected
cell records what the cell's check would have been given (the answer, the exercise's inputs, or what the
student's function returns on trial inputs drawn here with a seed the notebook does not know), as plain
tensors and numbers; this process then judges them with the registry of :mod:`ddpm_lib.book.exercises`,
which the kernel cannot reach. A notebook that reads the answer key or changes the checker is marked
``tampered``; one that hangs is stopped and marked ``timeout`` from the cell that hung on; a cell that
raises marks its exercise ``error``. Every other submission still grades.

Needs nbclient, nbformat and ipykernel: ``pip install "ddpm_lib[grade]"``.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

CORRECT, WRONG, NO_ANSWER, ERROR, TIMEOUT, TAMPERED = (
    "correct", "wrong", "no answer", "error", "timeout", "tampered")
CHECKS = ("check", "check_function", "choose")
TRIAL_SEED = 20_270_427               # not the notebooks' seed 0: a hard-coded table of outputs fails
STARTUP_TIMEOUT = 180                 # seconds for the kernel to start and import ddpm_lib (not counted)
# Code that reads the answer key or reaches into the checker (the registry, its judges, the grader's own
# recorder); a chapter needs only check, check_function and choose.
KEY_NAMES = re.compile(r"\b(expected_value|EXERCISES|judge_value|judge_function|judge_choice|"
                       r"function_trials|function_results|_register|__ddpm_grader__)\b")
EXERCISES_MODULE = r"ddpm_lib\s*\.\s*(?:book\s*\.\s*)?exercises"   # (and ddpm_lib.exercises, its old name)
MODULE_USE = re.compile(rf"import\s+{EXERCISES_MODULE}\b|from\s+ddpm_lib(?:\.book)?\s+import\s+[^\n]*\bexercises\b|"
                        rf"{EXERCISES_MODULE}\s*\.\s*\w+|sys\.modules\s*\[\s*['\"]ddpm_lib")
FROM_IMPORT = re.compile(rf"from\s+{EXERCISES_MODULE}\s+import\s+(\([^)]*\)|[^\n#]*)")
ALLOWED_IMPORTS = {"check", "check_function", "choose", "Verdict"}


@dataclass
class Grade:
    """One exercise of one submission."""

    student: str
    notebook: str
    exercise: str
    verdict: str
    detail: str = ""


@dataclass(frozen=True)
class CheckCall:
    """A check in an exercise cell: its label, which check, and the source of its arguments."""

    label: str
    kind: str
    answer: str
    inputs: tuple[tuple[str, str], ...] = ()


class GradingError(Exception):
    """A submission that cannot be graded at all (not a notebook, no exercises)."""


# ---------------------------------------------------------------------------- reading a submission
def read_notebook(path: Path):
    import nbformat

    try:
        return nbformat.read(str(path), as_version=4)
    except FileNotFoundError:
        raise GradingError(f"{path} does not exist") from None
    except Exception as err:
        raise GradingError(f"{path} is not a Jupyter notebook ({type(err).__name__})") from None


def _source(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def split_cells(nb) -> tuple[list[str], list[tuple[str, str, list[CheckCall]]]]:
    """The exercise labels (from the markdown) and the code cells to run, solutions dropped:
    ``(kind, source, checks)`` with kind "exercise" for a cell between {exercise-end} and
    {solution-start}, else "code"."""
    labels, cells, region = [], [], None
    for cell in nb.cells:
        text = _source(cell)
        if cell["cell_type"] == "markdown":
            labels += re.findall(r"```\{exercise-start\}\s*\n:label: (\S+)", text)
            for marker, now in (("{solution-end}", None), ("{exercise-start}", None),
                                ("{exercise-end}", "exercise"), ("{solution-start}", "solution")):
                if marker in text:
                    region = now
            continue
        if cell["cell_type"] != "code" or region == "solution" or text.startswith("#@title Solution"):
            continue
        if region == "exercise":
            cells.append(("exercise", text, check_calls(text)))
        else:
            cells.append(("code", text, []))
    return labels, cells


def check_calls(text: str) -> list[CheckCall]:
    """The keyed check calls of a cell's source (none when the cell is not valid Python)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CHECKS
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            inputs = tuple((k.arg, ast.get_source_segment(text, k.value)) for k in node.keywords
                           if k.arg not in (None, "strict", "seed"))
            out.append(CheckCall(node.args[0].value, node.func.id,
                                 ast.get_source_segment(text, node.args[1]), inputs))
    return out


def key_access(sources: Iterable[str]) -> str:
    """What in the submission's code reads the answer key or reaches into the checker ("" if nothing)."""
    for text in sources:
        found = KEY_NAMES.search(text) or MODULE_USE.search(text)
        if found:
            return f"the notebook uses {found.group(0).strip()!r}"
        for names in FROM_IMPORT.findall(text):
            extra = {n.split(" as ")[0].strip() for n in names.strip("()").split(",") if n.strip()}
            extra -= ALLOWED_IMPORTS
            if extra:
                return f"the notebook imports {', '.join(sorted(extra))} from ddpm_lib.book.exercises"
    return ""


# ---------------------------------------------------------------------------- the injected cells
RECORDER = r'''
def __ddpm_grader_setup(out_dir, trials_dir, guard):
    import inspect, os, types
    import numpy as np
    import torch
    import ddpm_lib.book.exercises as package
    import ddpm_lib.book.exercises.engine as ex
    from ddpm_lib.schedule import NoiseSchedule
    if guard:
        import socket
        def refuse(*args, **kwargs):
            raise OSError("no network while grading")
        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = refuse
    registry = dict(ex.EXERCISES)        # first: it imports every chapter's keys (submodules of the package)
    names = {(m.__name__, k): v for m in (package, ex) for k, v in vars(m).items()}
    codes = {k: v.__code__ for k, v in names.items() if inspect.isfunction(v)}
    explain, save, load = ex._explain, torch.save, torch.load

    def plain(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().clone()
        if isinstance(v, np.ndarray):
            return torch.from_numpy(np.array(v, dtype=np.float64))
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, NoiseSchedule):
            return {"__schedule__": v.betas.detach().cpu(), "kind": str(v.kind),
                    "timestep_map": None if v.timestep_map is None else v.timestep_map.cpu()}
        if isinstance(v, torch.nn.Module) and isinstance(getattr(v, "config", None), dict):
            return {"__unet__": {k: list(x) if isinstance(x, tuple) else x for k, x in v.config.items()},
                    "state": {k: t.detach().cpu() for k, t in v.state_dict().items()}}
        raise TypeError(type(v).__name__)

    def record(label, kind, answer, inputs):
        try:
            value = answer()
        except Exception as err:
            return save({"error": f"{type(err).__name__}: {err}"[:200]}, os.path.join(out_dir, label))
        out = {}
        if kind == "check_function":
            if value is None:
                out["results"] = [None]
            else:
                results = []
                for args in load(os.path.join(trials_dir, label), weights_only=False):
                    try:
                        r = value(*args)
                    except NotImplementedError:
                        r = None
                    except Exception as err:
                        r = explain(err)
                    try:
                        r = plain(r)
                    except TypeError as err:
                        r = {"type": str(err)}
                    results.append(r)
                    if r is None or isinstance(r, (str, dict)):
                        break
                out["results"] = results
        else:
            try:
                out["answer"] = plain(value)
            except TypeError as err:
                out["type"] = str(err)
            try:
                out["inputs"] = {k: plain(f()) for k, f in inputs.items()}
            except Exception as err:
                out["error"] = f"cannot record the inputs ({type(err).__name__}: {err})"[:200]
        save(out, os.path.join(out_dir, label))

    def audit():
        now = {(m.__name__, k): v for m in (package, ex) for k, v in vars(m).items()}
        changed = sorted(k[1] for k in set(names) | set(now) if now.get(k) is not names.get(k))
        changed += sorted(k[1] for k, c in codes.items() if getattr(names[k], "__code__", None) is not c)
        if dict(ex.EXERCISES) != registry or any(ex.EXERCISES[k] is not v for k, v in registry.items()):
            changed.append("EXERCISES")
        with open(os.path.join(out_dir, "__audit__.json"), "w") as f:
            json.dump(changed, f)

    import json
    return types.SimpleNamespace(record=record, audit=audit)
'''


def _setup_cell(out_dir: Path, trials_dir: Path, guard: bool) -> str:
    return (RECORDER + f"\n__ddpm_grader__ = __ddpm_grader_setup({str(out_dir)!r}, {str(trials_dir)!r}, "
            f"{guard!r})\ndel __ddpm_grader_setup\n")


def _record_cell(calls: list[CheckCall]) -> str:
    lines = []
    for c in calls:
        inputs = ", ".join(f"{k!r}: lambda: ({src})" for k, src in c.inputs)
        lines.append(f"__ddpm_grader__.record({c.label!r}, {c.kind!r}, lambda: ({c.answer}), {{{inputs}}})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- running a kernel
def network_isolation() -> bool:
    """True when kernels can run in a network namespace of their own (``unshare -rn``)."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _kernel_manager(isolate: bool, ipc_dir: Path):
    from jupyter_client.manager import AsyncKernelManager    # nbclient's; its client never blocks

    class GradingKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return ["unshare", "-rn", *cmd] if isolate else cmd

    # IPC sockets: the kernel talks to this process through files, so it needs no network interface
    return GradingKernelManager(kernel_name="python3", transport="ipc", ip=str(ipc_dir / "kernel"))


def _error_of(cell) -> str:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".strip()[:200]
    return ""


def run_submission(nb, work: Path, *, timeout: float, isolate: bool) -> dict[str, str]:
    """Execute the submission's cells with the recorder; returns {label: "error: ..." or "timeout"}
    for the exercises whose cell failed, and writes the records into ``work / "records"``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    _, cells = split_cells(nb)
    records, trials = work / "records", work / "trials"
    run_dir = work / "cwd"
    for d in (records, trials, run_dir):
        d.mkdir()
    _write_trials(cells, trials)
    failed: dict[str, str] = {}
    pending = [c.label for kind, _, calls in cells for c in calls]
    run = nbformat.v4.new_notebook()
    env = {**os.environ, "MPLBACKEND": "Agg"}
    client = NotebookClient(run, km=_kernel_manager(isolate, work), timeout=STARTUP_TIMEOUT,
                            allow_errors=True, shutdown_kernel="immediate", kernel_name="python3",
                            resources={"metadata": {"path": str(run_dir)}})

    def execute(source: str, limit: float):
        cell = nbformat.v4.new_code_cell(source)
        run.cells.append(cell)
        client.timeout = max(1, int(limit))
        client.execute_cell(cell, len(run.cells) - 1)
        return cell

    with client.setup_kernel(env=env, cwd=str(run_dir)):
        execute(_setup_cell(records, trials, guard=not isolate), STARTUP_TIMEOUT)
        deadline = time.monotonic() + timeout
        try:
            for kind, text, calls in cells:
                cell = execute(text, deadline - time.monotonic())
                if kind != "exercise" or not calls:
                    continue
                error = _error_of(cell)
                for c in calls:
                    pending.remove(c.label)
                    if error:
                        failed[c.label] = f"error: {error}"
                if not error:
                    execute(_record_cell(calls), deadline - time.monotonic())
            execute("__ddpm_grader__.audit()", max(5.0, deadline - time.monotonic()))
        except (CellTimeoutError, DeadKernelError, TimeoutError) as err:
            what = "timeout" if not isinstance(err, DeadKernelError) else "error: the kernel died"
            for label in pending:
                failed.setdefault(label, what)
    return failed


def _write_trials(cells, trials: Path) -> None:
    import torch

    from .exercises import FunctionExercise, exercise, function_trials
    for _, _, calls in cells:
        for c in calls:
            try:
                if c.kind == "check_function" and isinstance(exercise(c.label), FunctionExercise):
                    torch.save(function_trials(c.label, TRIAL_SEED), trials / c.label)
            except Exception:                       # an unknown label is judged (and named) later
                pass


# ---------------------------------------------------------------------------- judging the records
def _rebuild(value: Any) -> Any:
    """A recorded input as the object the exercise takes (a schedule, a UNet)."""
    if isinstance(value, dict) and "__schedule__" in value:
        from ..schedule import NoiseSchedule
        return NoiseSchedule(value["__schedule__"], kind=value.get("kind", "custom"),
                             timestep_map=value.get("timestep_map"))
    if isinstance(value, dict) and "__unet__" in value:
        from ..unet import UNet
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in value["__unet__"].items()}
        model = UNet(**config)
        model.load_state_dict(value["state"])
        return model.eval()
    return value


def judge(call: CheckCall, record: dict | None) -> tuple[str, str]:
    """``(verdict, detail)`` of one exercise from what the kernel recorded."""
    from .exercises import NO_ANSWER as SAYS_NO_ANSWER
    from .exercises import (ChoiceExercise, FunctionExercise, UnknownExercise, exercise, function_trials,
                            judge_choice, judge_function, judge_value)

    try:
        ex = exercise(call.label)
    except UnknownExercise as err:
        return ERROR, str(err).split(";")[0]
    wanted = {FunctionExercise: "check_function", ChoiceExercise: "choose"}.get(type(ex), "check")
    if call.kind != wanted:
        return ERROR, f"{call.label} is checked with {wanted}(), the notebook calls {call.kind}()"
    if record is None:
        return NO_ANSWER, "nothing was recorded"
    if "error" in record:
        return ERROR, record["error"]
    if "type" in record:
        return WRONG, f"cannot read {record['type']} as numbers"
    try:
        if call.kind == "check_function":
            results = [r if not isinstance(r, dict) else f"it returned a {r['type']}, not numbers"
                       for r in record["results"]]
            trials = function_trials(call.label, TRIAL_SEED)
            last = results[-1] if results else None
            if len(results) != len(trials) and not (last is None or isinstance(last, str)):
                return ERROR, "the function was not called on every trial"
            ok, message = judge_function(call.label, list(zip(trials, results)))
            if not ok and isinstance(results[-1], str) and results[-1].startswith("it raised"):
                return ERROR, message
        elif call.kind == "choose":
            ok, message = judge_choice(call.label, record["answer"])
        else:
            inputs = {k: _rebuild(v) for k, v in record.get("inputs", {}).items()}
            ok, message = judge_value(call.label, record["answer"], **inputs)
    except Exception as err:                           # bad inputs: the exercise cannot be judged
        return ERROR, f"cannot judge the answer ({type(err).__name__}: {str(err)[:120]})"
    if ok:
        return CORRECT, ""
    if message.startswith("no answer yet"):
        return NO_ANSWER, ""
    return WRONG, message if message != SAYS_NO_ANSWER else ""


def student_name(path: Path) -> str:
    """The file's stem; the folder's name when the file keeps a chapter's name (alice/01_x.ipynb)."""
    if re.match(r"\d\d_|[A-Z]\d_", path.stem) and path.parent.name not in ("", "."):
        return path.parent.name
    return path.stem


def grade_notebook(path: Path, *, timeout: float, isolate: bool) -> list[Grade]:
    """Every exercise of one submission, graded; never raises for a bad submission."""
    import torch

    student, name = student_name(path), path.name
    try:
        nb = read_notebook(path)
    except GradingError as err:
        return [Grade(student, name, "-", ERROR, str(err))]
    labels, cells = split_cells(nb)
    calls = {c.label: c for _, _, cs in cells for c in cs}
    if not labels and not calls:
        return [Grade(student, name, "-", ERROR, "the notebook has no exercises")]
    order = list(dict.fromkeys(labels + list(calls)))
    tampered = key_access(text for _, text, _ in cells)
    with tempfile.TemporaryDirectory(prefix="ddpm-grade-") as tmp:
        work = Path(tmp)
        if tampered:
            failed = {}
        else:
            try:
                failed = run_submission(nb, work, timeout=timeout, isolate=isolate)
            except Exception as err:
                return [Grade(student, name, label, ERROR, f"the notebook could not run ({type(err).__name__}: "
                                                           f"{str(err)[:120]})") for label in order]
            audit = work / "records" / "__audit__.json"
            if audit.is_file():
                changed = json.loads(audit.read_text())
                if changed:
                    tampered = f"the notebook changes ddpm_lib.book.exercises ({', '.join(changed[:4])})"
        grades = []
        for label in order:
            if tampered:
                grades.append(Grade(student, name, label, TAMPERED, tampered))
            elif label in failed:
                verdict, _, detail = failed[label].partition(": ")
                grades.append(Grade(student, name, label, verdict,
                                    detail or f"stopped after {timeout:g} s, in this exercise's cell or before it"))
            elif label not in calls:
                grades.append(Grade(student, name, label, NO_ANSWER, "the exercise's check line was removed"))
            else:
                file = work / "records" / label
                record = None
                if file.is_file():
                    try:
                        record = torch.load(file, weights_only=True)
                    except Exception:
                        record = {"error": "its record cannot be read (not plain numbers)"}
                grades.append(Grade(student, name, label, *judge(calls[label], record)))
    return grades


def grade(paths: list[Path], *, timeout: float = 300, out: Path | None = None,
          echo=print) -> list[Grade]:
    """Grade every submission in turn; write ``out`` (CSV) and print a summary."""
    isolate = network_isolation()
    echo(f"grading {len(paths)} notebook(s); network: "
         + ("off (a network namespace per kernel)" if isolate else "Python sockets refused (no unshare)")
         + f"; at most {timeout:g} s of cells each")
    grades: list[Grade] = []
    for path in paths:
        start = time.monotonic()
        these = grade_notebook(path, timeout=timeout, isolate=isolate)
        grades += these
        right = sum(g.verdict == CORRECT for g in these)
        echo(f"{path}: {right}/{len(these)} correct ({time.monotonic() - start:.0f} s)")
    if out is not None:
        write_csv(grades, out)
    echo(summary_table(grades))
    return grades


def write_csv(grades: list[Grade], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "notebook", "exercise", "verdict", "detail"])
        for g in grades:
            writer.writerow([g.student, g.notebook, g.exercise, g.verdict, g.detail])


def summary_table(grades: list[Grade], width: int = 110) -> str:
    """One line per student and exercise, then each student's total."""
    if not grades:
        return "nothing graded"
    w_student = max(7, *(len(g.student) for g in grades))
    w_ex = max(8, *(len(g.exercise) for g in grades))
    head = f"{'student':<{w_student}}  {'exercise':<{w_ex}}  {'verdict':<9}  detail"
    lines = [head, "-" * len(head)]
    for g in grades:
        line = f"{g.student:<{w_student}}  {g.exercise:<{w_ex}}  {g.verdict:<9}  {g.detail}"
        lines.append(line if len(line) <= width else line[:width - 3] + "...")
    lines.append("")
    totals: dict[str, list[Grade]] = {}
    for g in grades:
        totals.setdefault(g.student, []).append(g)
    for student, gs in totals.items():
        counts = {v: sum(g.verdict == v for g in gs) for v in (CORRECT, WRONG, NO_ANSWER, ERROR, TIMEOUT,
                                                               TAMPERED)}
        rest = ", ".join(f"{n} {v}" for v, n in counts.items() if n and v != CORRECT)
        lines.append(f"{student}: {counts[CORRECT]}/{len(gs)} correct" + (f" ({rest})" if rest else ""))
    return "\n".join(lines)
