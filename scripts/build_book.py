"""Build the book: the full executed build for readers, and variants for `make test`.

    python scripts/build_book.py                       # every chapter executed -> _build/html
    python scripts/build_book.py --out DIR             # the same, into DIR/html (e.g. for tests)
    python scripts/build_book.py --no-execute          # every page, notebooks not run
                                                       #   -> _build/check/html (nbval runs them)
    python scripts/build_book.py --only notebooks/01_forward_process notebooks/05_sampling
                                                       # just these chapters, executed -> _build/partial/html

Every variant builds with warnings as errors into a staging folder and moves the pages into place only
when the build passed and no page shows an error output, so a broken build never replaces a good one
(the previous pages stay). Each variant writes its _config.yml / _toc.yml under _build/ and calls
`jupyter-book build` with them, so the real configuration stays the single source.

Figures: a Jupyter kernel draws inline figures only when MPLBACKEND is unset or names the inline
backend, so the build sets the inline backend for the kernels it starts (a MPLBACKEND=Agg inherited from
the shell would otherwise publish pages with no figure and no error).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
JB = Path(sys.executable).with_name("jupyter-book")
INLINE = "module://matplotlib_inline.backend_inline"
# what a cell that failed leaves in a page: myst-nb's error and traceback outputs
ERROR_OUTPUT = re.compile(r'class="[^"]*\boutput\b[^"]*\b(traceback|error)\b')


def error_pages(html: Path) -> list[str]:
    """Pages (relative paths) that show an error output."""
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html")
                  if ERROR_OUTPUT.search(p.read_text(encoding="utf-8", errors="replace")))


def offer_reader_edition(html: Path) -> int:
    """Put the reader's edition (reader/notebooks/, plain Markdown) where a page's download button points
    (_sources/notebooks/), in place of the MyST source that Colab and Jupyter would show raw. Returns how
    many chapters were replaced."""
    count = 0
    for edition in sorted((ROOT / "reader" / "notebooks").glob("*.ipynb")):
        offered = html / "_sources" / "notebooks" / edition.name
        if offered.is_file():
            shutil.copyfile(edition, offered)
            count += 1
    return count


def build(config: dict, toc: dict, out: Path, *, strict: bool = True) -> int:
    """Build into out/.staging, then replace out/html with it if the build passed. Returns an exit code."""
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # the variant config lives in the staging folder: paths in it must not be relative to it
    local = config.get("sphinx", {}).get("local_extensions") or {}
    for name, path in local.items():
        local[name] = str((ROOT / path).resolve())
    (staging / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (staging / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    cmd = [str(JB), "build", str(ROOT), "--config", str(staging / "_config.yml"),
           "--toc", str(staging / "_toc.yml"), "--path-output", str(staging), "--quiet"]
    if strict:
        cmd += ["--warningiserror", "--keep-going"]
    env = dict(os.environ, MPLBACKEND=INLINE)
    start = time.time()
    code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    built = staging / "_build" / "html"
    seconds = time.time() - start
    if code == 0 and not (built / "index.html").is_file():
        print(f"the build made no {built / 'index.html'}")
        code = 1
    if code == 0 and error_pages(built):
        print("pages with an error output:", ", ".join(error_pages(built)))
        code = 1
    if code != 0:
        print(f"build failed (exit {code}) after {seconds:.0f} s; {out / 'html'} is left as it was "
              f"(the failed build is in {staging})")
        return code
    offered = offer_reader_edition(built)
    if offered:
        print(f"the pages' download button offers the reader's edition of {offered} chapters")
    target, old = out / "html", out / ".html-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    print(f"build passed in {seconds:.0f} s -> {target}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-execute", action="store_true", help="all pages, without running the notebooks")
    mode.add_argument("--only", nargs="+", metavar="DOC", help="build just these documents (executed)")
    parser.add_argument("--out", type=Path, help="folder for html/ (default: _build, or _build/check|partial)")
    args = parser.parse_args()

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    strict = True
    if args.no_execute:
        out = ROOT / "_build" / "check"
        config.setdefault("execute", {})["execute_notebooks"] = "off"
    elif args.only:
        out, strict = ROOT / "_build" / "partial", False                # links to left-out pages only warn
        toc = {"format": "jb-book", "root": toc["root"],
               "parts": [{"caption": "Chapters", "chapters": [{"file": doc} for doc in args.only]}]}
    else:
        out = ROOT / "_build"
    return build(config, toc, (args.out or out).resolve(), strict=strict)


if __name__ == "__main__":
    sys.exit(main())
