#!/usr/bin/env bash
# make test-reader: every chapter run as a reader in Colab runs it, outside this checkout.
#
# 1. Builds the wheel from the files git tracks (no stale build/ folder).
# 2. Makes two fresh venvs in a temporary folder, one per Python that Colab has run this year: 3.12 (until
#    August 2026) and 3.13 (since; scripts/colab_runtime.txt says where that comes from). PY_READER and
#    PY_STUDENT name other interpreters. Each gets what a Colab runtime already has (colab_runtime.txt:
#    ipykernel, ipywidgets, tornado, jupyter-client, matplotlib, numpy, torch ... at Colab's versions).
# 3. Runs the chapters' install cell in a kernel of each venv, as a reader's first cell, with the release
#    it names replaced by the wheel (this machine cannot reach the repository): it must install ddpm_lib,
#    keep the runtime's torch, ipykernel, tornado and jupyter-client, and install no book toolchain.
# 4. Checks `ddpm --version` and `train --config NAME` (a shipped config by its name) in each.
# 5. Executes every chapter of the reader's edition (reader/notebooks/, what the launch buttons open) from
#    a copy in a folder that holds no repository file, in the CPU profile, on Python 3.12.
# 6. Executes every chapter of the student edition (`make student`) there too, on Python 3.13, every
#    exercise blank: each check must say "no answer yet" and no cell may fail.
# EDITIONS="reader" or "student" runs one half (default both, one after the other): `make test` runs the two
# halves as separate jobs beside the unit tests and the book, so both cores stay busy.
# CHAPTERS="01_forward_process A1_results" runs only those; KEEP=1 leaves the folder for a look. The kernel
# runs in the venv; the notebook runner (nbclient) is this checkout's .venv, so the venv holds only what a
# Colab runtime holds plus what the install cell adds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNNER=${RUNNER:-$ROOT/.venv/bin/python}
RUNTIME="$ROOT/scripts/colab_runtime.txt"
find_python() {                                           # pyenv's Python $1, else one on the PATH
    local p want=$1
    for p in "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/"$want"*/bin/python3 \
             "$(command -v "python$want" || true)"; do
        if [ -x "$p" ] && "$p" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$want'" 2>/dev/null; then
            echo "$p"; return
        fi
    done
}
EDITIONS=${EDITIONS:-reader student}
READER=0 STUDENT=0
for e in $EDITIONS; do
    case $e in reader) READER=1 ;; student) STUDENT=1 ;;
    *) echo "error: EDITIONS takes reader and/or student, got '$e'"; exit 2 ;; esac
done
if [ $READER = 1 ]; then
    PY_READER=${PY_READER:-$(find_python 3.12)}
    [ -n "$PY_READER" ] && [ -x "$PY_READER" ] || { echo "error: test-reader needs Python 3.12: set PY_READER=/path/to/python3.12"; exit 2; }
fi
if [ $STUDENT = 1 ]; then
    PY_STUDENT=${PY_STUDENT:-$(find_python 3.13)}
    [ -n "$PY_STUDENT" ] && [ -x "$PY_STUDENT" ] || { echo "error: test-reader needs Python 3.13: set PY_STUDENT=/path/to/python3.13"; exit 2; }
fi
ALL=$(cd "$ROOT/reader/notebooks" && ls *.ipynb | sed 's/\.ipynb$//' | tr '\n' ' ')
CHAPTERS=${CHAPTERS:-$ALL}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ddpm-reader.XXXXXX")
[ "${KEEP:-0}" = 1 ] && echo "keeping $WORK" || trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
step() { echo "test-reader ${EDITIONS// /+} [$(( $(date +%s) - start )) s] $*"; }

step "wheel of $ROOT"
mkdir "$WORK/src"
git -C "$ROOT" ls-files -co --exclude-standard -z \
    | tar -C "$ROOT" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$WORK/src" -xf -
"${PY_READER:-$PY_STUDENT}" -m pip wheel "$WORK/src" --no-deps --quiet --disable-pip-version-check -w "$WORK/wheel"
wheel=$(ls "$WORK"/wheel/ddpm_lib-*.whl)

unset PYTHONPATH MPLBACKEND
export DDPM_PROFILE=cpu PYDEVD_DISABLE_FILE_VALIDATION=1   # (debugpy's note on Python 3.13)
export JUPYTER_PATH=                                       # the runner finds the venvs' kernels, only there
run_notebook() {                                           # NAME.ipynb in kernel KERNEL
    "$RUNNER" - "$1" "$2" <<'EOF'
import sys, nbformat
from nbclient import NotebookClient
path, kernel = sys.argv[1:]
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, kernel_name=kernel, timeout=1800, allow_errors=False,
               resources={"metadata": {"path": "."}}).execute()
nbformat.write(nb, path)
EOF
}

prepare() {                      # NAME PYTHON: venv $WORK/NAME/venv, kernel ddpm-NAME, the install cell run
    local name=$1 base=$2 dir="$WORK/$1"
    step "a fresh $("$base" --version) venv with Colab's packages ($RUNTIME)"
    "$base" -m venv "$dir/venv"
    local py="$dir/venv/bin/python"
    "$py" -m pip install --quiet --disable-pip-version-check --no-compile -r "$RUNTIME"   # .pyc on first import
    "$py" -m ipykernel install --prefix "$dir/venv" --name "ddpm-$name" >/dev/null
    JUPYTER_PATH="${JUPYTER_PATH:+$JUPYTER_PATH:}$dir/venv/share/jupyter"
    "$py" -m pip freeze --disable-pip-version-check | sort >"$dir/before.txt"

    step "the install cell, as a reader's first cell on $("$base" --version) (the release replaced by the wheel)"
    mkdir "$dir/run" && cd "$dir/run"                      # no repository file here, nor on the path
    "$RUNNER" - "$ROOT/reader/notebooks/01_forward_process.ipynb" "$wheel" <<'EOF'
import json, re, sys
import nbformat
cell = "".join(json.load(open(sys.argv[1]))["cells"][0]["source"])
target = re.search(r'"(ddpm_lib\[reader\] @ [^"]+)"', cell)
assert target, "the install cell names no ddpm_lib[reader] requirement"
cell = cell.replace(target.group(1), f"ddpm_lib[reader] @ file://{sys.argv[2]}")
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell),
                                     nbformat.v4.new_code_cell("import ddpm_lib; print(ddpm_lib.__file__)")])
nbformat.write(nb, "install.ipynb")
EOF
    run_notebook install.ipynb "ddpm-$name"
    "$py" -m pip freeze --disable-pip-version-check | sort >"$dir/after.txt"
    "$py" - "$dir/before.txt" "$dir/after.txt" "$dir/venv" <<'EOF'
import sys
def versions(path):
    return dict(line.split("==", 1) if "==" in line else (line.split(" @ ")[0], line)
                for line in open(path).read().split("\n") if line)
before, after = versions(sys.argv[1]), versions(sys.argv[2])
norm = lambda n: n.lower().replace("_", "-")
before, after = ({norm(k): v for k, v in d.items()} for d in (before, after))
kept = ["ipykernel", "ipython", "tornado", "jupyter-client", "traitlets", "torch", "numpy", "notebook"]
changed = [f"{n} {before[n]} -> {after.get(n)}" for n in kept if before.get(n) != after.get(n)]
assert not changed, f"the install cell changed the runtime's {changed}"
toolchain = [n for n in after if n not in before and n in ("jupyter-book", "jupyterlab", "sphinx", "jupyter-server")]
assert not toolchain, f"the install cell installed the book's toolchain: {toolchain}"
assert "ddpm-lib" in after, "the install cell did not install ddpm_lib"
added = sorted(f"{n} {'(the wheel)' if n == 'ddpm-lib' else after[n]}" for n in after if before.get(n) != after[n])
print("  the install cell added or changed:", ", ".join(added))
import ddpm_lib
assert sys.argv[3] in ddpm_lib.__file__, ddpm_lib.__file__
EOF

    step "ddpm --version; train --config mnist_small (a shipped config, by name), two steps"
    [ "$("$dir/venv/bin/ddpm" --version)" = "ddpm_lib $("$py" -c 'import ddpm_lib; print(ddpm_lib.__version__)')" ]
    "$py" -m ddpm_lib train --config mnist_small --preset tiny --steps 2 --warmup-steps 1 --lr-decay-steps 0 \
        --batch-size 4 --device cpu --no-progress --out "$dir/run/train" >/dev/null
}

if [ $READER = 1 ]; then prepare reader "$PY_READER"; fi
if [ $STUDENT = 1 ]; then prepare student "$PY_STUDENT"; fi
export JUPYTER_PATH

if [ $READER = 1 ]; then
    mkdir "$WORK/reader/chapters" && cd "$WORK/reader/chapters"
    for chapter in $CHAPTERS; do
        cp "$ROOT/reader/notebooks/$chapter.ipynb" .
        step "executing $chapter.ipynb (the reader's edition, $("$PY_READER" --version))"
        run_notebook "$chapter.ipynb" ddpm-reader >"$chapter.log" 2>&1 || { tail -40 "$chapter.log"; echo "error: $chapter failed"; exit 1; }
    done
fi
if [ $STUDENT = 1 ]; then
    "$RUNNER" "$ROOT/scripts/student_edition.py" --out "$WORK/student-edition" >/dev/null
    mkdir "$WORK/student/chapters" && cd "$WORK/student/chapters"
    for chapter in $CHAPTERS; do
        cp "$WORK/student-edition/notebooks/$chapter.ipynb" .
        step "executing $chapter.ipynb (the student edition, every exercise blank, $("$PY_STUDENT" --version))"
        run_notebook "$chapter.ipynb" ddpm-student >"$chapter.log" 2>&1 || { tail -40 "$chapter.log"; echo "error: student $chapter failed"; exit 1; }
        "$RUNNER" - "$chapter.ipynb" <<'EOF'
import json, re, sys
nb = json.load(open(sys.argv[1]))
text = lambda c: "".join(c["source"])
markdown = "".join(text(c) for c in nb["cells"] if c["cell_type"] == "markdown")
labels = re.findall(r"\*\*Exercise\*\* `(\S+)`", markdown)
said = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
               for o in c["outputs"])
# A verdict is wrapped at 90 characters: one "[right]"/"[not yet]" line and its indented continuations.
verdicts = [" ".join(v.split()) for v in re.split(r"\n(?=\[)", said)]
blank = [label for label in labels if not any(label in v and "no answer yet" in v for v in verdicts)]
assert not blank, f"{sys.argv[1]}: no 'no answer yet' from the checks of {blank}"
EOF
    done
fi
said=()
[ $READER = 1 ] && said+=("the reader's edition ($("$PY_READER" --version))")
[ $STUDENT = 1 ] && said+=("the student edition ($("$PY_STUDENT" --version))")
step "passed: $(echo $CHAPTERS | wc -w) chapters, as ${said[0]}${said[1]:+ and as ${said[1]}}"
