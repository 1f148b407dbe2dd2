"""Run many `python -m ddpm_lib ...` command lines as real processes, without importing torch for each one.

Each process of `python -m ddpm_lib` spends its first seconds (5-20 s on this project's shared 2-core machine)
importing torch, so a table of 30 command lines, or 20 rounds of two concurrent samplers, would take minutes.
Here one driver process (``python tests/cli_processes.py SPEC RESULT``, this interpreter, PYTHONPATH passed
through) imports ``ddpm_lib.cli`` once and forks a child per command line. Each child is a process of its own
(its own pid, descriptors, locks, working folder and limits) with its stdin at /dev/null and its stdout and
stderr on pipes, and runs ddpm_lib/__main__.py with ``runpy`` exactly as ``-m`` does; its exit status is the
process's. What a fork skips is the interpreter's start-up and the imports: Ctrl-C during them is tested with a
fresh process (tests/test_command_line_cases.py).

The command lines come in groups: the processes of a group are forked, then released together (a byte each on
one pipe), so that two samplers on one folder really race. ``parallel`` processes run at a time.

``DDPM_FRESH_PROCESSES=1`` runs each command line as a fresh ``python -m ddpm_lib`` instead (slow, the same
assertions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT = 300                                      # seconds; the slowest command line here takes a few


def child_env() -> dict:
    """This environment, with this checkout first on PYTHONPATH and one thread per process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run(groups: list[list[dict]], *, parallel: int = 4, timeout: float = 600) -> list[list[tuple[int, str, str]]]:
    """Run each group's command lines together: ``{"args": [...], "cwd": folder, "file_size_limit": bytes or
    None}`` each. Returns, per group, (exit status, stdout, stderr) per command line (a negative status: killed
    by that signal)."""
    groups = [[{"args": [str(a) for a in case["args"]], "cwd": str(case["cwd"]),
                "file_size_limit": case.get("file_size_limit")} for case in group] for group in groups]
    if os.environ.get("DDPM_FRESH_PROCESSES") == "1":
        return _run_fresh(groups, parallel, timeout)
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"groups": groups, "parallel": parallel}))
        driver = subprocess.run([sys.executable, __file__, str(spec), str(result)], env=child_env(), text=True,
                                capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
        assert driver.returncode == 0 and result.exists(), f"the driver failed: {driver.stderr}"
        return [[tuple(r) for r in group] for group in json.loads(result.read_text())]


def python_m(case: dict) -> list[str]:
    """The argv of ``python -m ddpm_lib ARGS``, as under `ulimit -f` when the case has a file-size limit (set by
    the child itself: preexec_fn is not safe in a process that runs threads)."""
    if case.get("file_size_limit") is None:
        return [sys.executable, "-m", "ddpm_lib", *case["args"]]
    code = ("import resource, runpy, sys; limit = int(sys.argv.pop(1)); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1])); "
            "runpy.run_module('ddpm_lib', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", code, str(case["file_size_limit"]), *case["args"]]


def _run_fresh(groups, parallel, timeout):
    def one_group(group):
        procs = [subprocess.Popen(python_m(case), cwd=case["cwd"], env=child_env(), text=True,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for case in group]
        outputs = [p.communicate(timeout=timeout) for p in procs]
        return [(p.returncode, *output) for p, output in zip(procs, outputs)]

    with ThreadPoolExecutor(max(1, parallel // max(len(g) for g in groups))) as pool:
        return list(pool.map(one_group, groups))


# ---------------------------------------------------------------- the driver, in its own process
def _child(case: dict, go: int, out: int, err: int) -> None:
    """In a forked child: become `python -m ddpm_lib ARGS` in the case's folder, wait for the go, run, exit."""
    import resource
    import runpy
    import signal
    import traceback

    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.chdir(case["cwd"])
        sys.path[0] = os.getcwd()                                        # as -m has it
        if case["file_size_limit"] is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE,
                               (case["file_size_limit"], resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        os.read(go, 1)
        signal.alarm(CHILD_TIMEOUT)                      # a child that hangs is killed (exit -14), never left over
        sys.argv = ["ddpm_lib", *case["args"]]
        code = 0
        runpy.run_module("ddpm_lib", run_name="__main__", alter_sys=True)
    except SystemExit as stop:                                              # as the interpreter reads sys.exit
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _drive(spec_path: str, result_path: str) -> None:
    import selectors

    import ddpm_lib.cli  # noqa: F401  (imported once here: every child inherits it)
    from ddpm_lib.unet import PRESETS, conv_output_bytes

    # The memory estimate of `sample` and `train` runs a UNet on the meta device, whose first call imports
    # torch._dynamo (seconds): import it here too. Nothing runs on a real device, and no thread is started.
    conv_output_bytes(PRESETS["tiny"])

    spec = json.loads(Path(spec_path).read_text())
    groups, parallel = spec["groups"], spec["parallel"]
    results = [[None] * len(group) for group in groups]
    pending = list(enumerate(groups))
    selector = selectors.DefaultSelector()
    running = {}                                         # pid -> [group, index, open pipes, stdout, stderr]
    while pending or running:
        while pending and (not running or len(running) + len(pending[0][1]) <= parallel):
            g, group = pending.pop(0)
            go_read, go_write = os.pipe()
            for i, case in enumerate(group):
                out_read, out_write = os.pipe()
                err_read, err_write = os.pipe()
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    os.close(go_write)
                    _child(case, go_read, out_write, err_write)
                os.close(out_write)
                os.close(err_write)
                running[pid] = [g, i, 2, bytearray(), bytearray()]
                selector.register(out_read, selectors.EVENT_READ, (pid, 3))
                selector.register(err_read, selectors.EVENT_READ, (pid, 4))
            os.write(go_write, b"x" * len(group))                            # all of the group at once
            os.close(go_write)
            os.close(go_read)
        for key, _ in selector.select():
            pid, slot = key.data
            data = os.read(key.fd, 65536)
            if data:
                running[pid][slot] += data
                continue
            selector.unregister(key.fd)
            os.close(key.fd)
            running[pid][2] -= 1
            if running[pid][2] == 0:                                        # both pipes closed: it has ended
                g, i, _, out, err = running.pop(pid)
                _, status = os.waitpid(pid, 0)
                results[g][i] = (os.waitstatus_to_exitcode(status), out.decode(errors="replace"),
                                 err.decode(errors="replace"))
    Path(result_path).write_text(json.dumps(results))


if __name__ == "__main__":
    _drive(*sys.argv[1:3])
