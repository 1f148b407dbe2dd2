#!/usr/bin/env bash
# make test-reader: a chapter run as a reader runs it, outside this checkout.
#
# Builds the wheel, installs it with its `reader` extra into a fresh Python 3.12 venv (Colab's Python) in
# a temporary folder, and checks there, with no repository file in reach: `ddpm --version`, `train --config`
# with a shipped config's name, and CHAPTERS (default: 01_forward_process A1_results) executed from copies
# of the notebooks by a kernel of that venv, install cell included (ddpm_lib imports, so it does nothing),
# in the CPU profile. PY312 names the interpreter (default: python3.12, else pyenv's 3.12); TORCH_INDEX the
# index torch comes from (default: pip's). KEEP=1 leaves the folder for a look.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
find_py312() {                                            # pyenv's 3.12, else a python3.12 that runs
    local p
    for p in "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.12*/bin/python3 "$(command -v python3.12)"; do
        if [ -x "$p" ] && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            echo "$p"; return
        fi
    done
}
PY312=${PY312:-$(find_py312)}
CHAPTERS=${CHAPTERS:-01_forward_process A1_results}
[ -n "$PY312" ] && [ -x "$PY312" ] || { echo "error: test-reader needs Python 3.12: set PY312=/path/to/python3.12"; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ddpm-reader.XXXXXX")
[ "${KEEP:-0}" = 1 ] && echo "keeping $WORK" || trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
step() { echo "test-reader [$(( $(date +%s) - start )) s] $*"; }

step "wheel of $ROOT (its files that git tracks or would, copied: no stale build/ folder)"
mkdir "$WORK/src"
git -C "$ROOT" ls-files -co --exclude-standard -z \
    | tar -C "$ROOT" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$WORK/src" -xf -
"$PY312" -m pip wheel "$WORK/src" --no-deps --quiet --disable-pip-version-check -w "$WORK/wheel"
wheel=$(ls "$WORK"/wheel/ddpm_lib-*.whl)

step "a fresh $("$PY312" --version) venv in $WORK/venv"
"$PY312" -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ -n "${TORCH_INDEX:-}" ]; then "${PIP[@]}" --index-url "$TORCH_INDEX" "torch>=2.4,<3"; fi
"${PIP[@]}" "ddpm_lib[reader] @ file://$wheel" ipykernel nbclient
# a kernel by a name of its own, so that no python3 kernel of another environment runs the chapters
"$WORK/venv/bin/python" -m ipykernel install --prefix "$WORK/venv" --name ddpm-reader >/dev/null

mkdir "$WORK/reader"
cd "$WORK/reader"                                          # no repository file here, nor on the path
unset PYTHONPATH MPLBACKEND
export DDPM_PROFILE=cpu
py="$WORK/venv/bin/python"
step "the package is the installed wheel"
"$py" -c "import ddpm_lib, sys; assert sys.argv[1] in ddpm_lib.__file__, ddpm_lib.__file__" "$WORK/venv"
[ "$("$WORK/venv/bin/ddpm" --version)" = "ddpm_lib $("$py" -c 'import ddpm_lib; print(ddpm_lib.__version__)')" ]
step "train --config mnist_small (a shipped config, by name), two steps"
"$py" -m ddpm_lib train --config mnist_small --preset tiny --steps 2 --warmup-steps 1 --lr-decay-steps 0 \
    --batch-size 4 --device cpu --no-progress --out "$WORK/reader/run" >/dev/null
for chapter in $CHAPTERS; do
    cp "$ROOT/notebooks/$chapter.ipynb" .
    step "executing $chapter.ipynb"
    "$WORK/venv/bin/jupyter-execute" --kernel_name=ddpm-reader --timeout=1800 "$chapter.ipynb" \
        >"$chapter.log" 2>&1 || { tail -40 "$chapter.log"; echo "error: $chapter failed"; exit 1; }
done
step "passed"
