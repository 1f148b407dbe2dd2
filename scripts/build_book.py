"""Build variants of the book for `make test` (the full executed build is `make book`).

    python scripts/build_book.py --no-execute          # every page, warnings as errors, notebooks not run
                                                       #   -> _build/check/html (nbval runs them instead)
    python scripts/build_book.py --only notebooks/01_forward_process notebooks/05_sampling
                                                       # just these chapters, executed -> _build/partial/html

Both write a variant of _config.yml / _toc.yml under _build/ and call `jupyter-book build` with them, so
the real configuration stays the single source. Exit status is jupyter-book's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
JB = Path(sys.executable).with_name("jupyter-book")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--no-execute", action="store_true", help="all pages, without running the notebooks")
    mode.add_argument("--only", nargs="+", metavar="DOC", help="build just these documents (executed)")
    args = parser.parse_args()

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    if args.no_execute:
        name, strict = "check", True
        config.setdefault("execute", {})["execute_notebooks"] = "off"
    else:
        name, strict = "partial", False                                    # links to left-out pages only warn
        toc = {"format": "jb-book", "root": toc["root"],
               "parts": [{"caption": "Chapters", "chapters": [{"file": doc} for doc in args.only]}]}
    out = ROOT / "_build" / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    cmd = [str(JB), "build", str(ROOT), "--config", str(out / "_config.yml"), "--toc", str(out / "_toc.yml"),
           "--path-output", str(out), "--quiet"]
    if strict:
        cmd += ["--warningiserror", "--keep-going"]
    start = time.time()
    code = subprocess.run(cmd, cwd=ROOT).returncode
    print(f"{name} build: exit {code} in {time.time() - start:.0f} s -> {out / '_build' / 'html'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
