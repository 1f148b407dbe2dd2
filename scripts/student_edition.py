"""The student edition: every chapter without its solutions, for a course page.

    python scripts/student_edition.py                  # -> _build/student/notebooks/*.ipynb and a zip
                                                       #    (plain Markdown, as Colab and Jupyter show it)
    python scripts/student_edition.py --html           # ... and the HTML book of those notebooks
    python scripts/student_edition.py --out DIR        # into DIR instead of _build/student

A solution is everything between a ```{solution-start}``` and its ```{solution-end}``` directive: its
code cells (``#@title Solution``), its markdown, and the two directives themselves. Outputs are cleared.
What stays runs with every exercise blank: each check prints "no answer yet" and raises nothing. The
HTML is built with sphinx-exercise's ``hide_solutions`` as well (no solution is left to hide, but a
page that kept one would not show it). The answer key is never part of this folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reader_edition  # noqa: E402  (scripts/ is not a package)

ROOT = Path(__file__).resolve().parents[1]
START = re.compile(r"```\{solution-start\}[^\n]*\n(:[^\n]*\n)*```\n?")
END = re.compile(r"```\{solution-end\}\s*\n```\n?")
ZIP_NAME = "ddpm-book-student-notebooks.zip"


def student_notebook(nb: dict) -> dict:
    """A copy of ``nb`` with its solutions removed (cells, directives, outputs)."""
    nb = copy.deepcopy(nb)
    cells, inside = [], False
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "code" and text.startswith("#@title Solution"):
            continue
        if cell["cell_type"] != "markdown":
            if not inside:
                cell["outputs"], cell["execution_count"] = [], None
                cells.append(cell)
            continue
        kept, rest = "", text
        while rest:                        # keep what lies outside solution-start ... solution-end
            if inside:
                end = END.search(rest)
                if not end:
                    rest = ""
                    break
                rest, inside = rest[end.end():], False
            else:
                start = START.search(rest)
                if not start:
                    kept, rest = kept + rest, ""
                    break
                kept, rest, inside = kept + rest[:start.start()], rest[start.end():], True
        if kept.strip():
            lines = kept.strip("\n").split("\n")
            cell["source"] = [line + "\n" for line in lines[:-1]] + [lines[-1]]
            cell["metadata"].pop("jupyter", None)
            cells.append(cell)
    nb["cells"] = cells
    return nb


def write_notebooks(out: Path, *, plain: bool = True) -> list[Path]:
    """The student notebooks into ``out / "notebooks"`` and a zip of them. ``plain``: in the reader's
    plain Markdown (scripts/reader_edition.py), as students open them in Colab or Jupyter; else in MyST,
    for the HTML build."""
    folder = out / "notebooks"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = []
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    links = reader_edition.Links(config) if plain else None
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = student_notebook(json.loads(path.read_text()))
        if plain:
            nb = reader_edition.reader_notebook(nb, path.stem, config, links, edition="student")
        target = folder / path.name
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    with zipfile.ZipFile(out / ZIP_NAME, "w", zipfile.ZIP_DEFLATED) as z:
        for path in written:
            z.write(path, f"ddpm-book/notebooks/{path.name}")
    return written


def build_html(out: Path, execute: bool) -> int:
    """The HTML book of the student notebooks, with hide_solutions, into ``out / "html"``."""
    source = out / "source"
    if source.exists():
        shutil.rmtree(source)
    source.mkdir()
    shutil.copytree(ROOT / "book", source / "book")
    write_notebooks(source, plain=False)                  # MyST, for sphinx-exercise
    (source / ZIP_NAME).unlink()
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for name in ("intro.md", "index.md"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, source / name)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] = config.get("title", "") + " (student edition)"
    config.setdefault("execute", {})["execute_notebooks"] = "force" if execute else "off"
    config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (source / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(source), "--path-output", str(out), "-W", "-n", "--keep-going", "--quiet"]
    return subprocess.run(cmd).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "student")
    parser.add_argument("--html", action="store_true", help="also build the HTML book (hide_solutions)")
    parser.add_argument("--execute", action="store_true", help="execute the chapters in the HTML build")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written = write_notebooks(args.out)
    print(f"{len(written)} notebooks without solutions -> {args.out / 'notebooks'}, zip {args.out / ZIP_NAME}")
    if args.html:
        rc = build_html(args.out, args.execute)
        if rc:
            print(f"error: the student HTML build failed (exit status {rc})", file=sys.stderr)
            return 1
        print(f"HTML -> {args.out / '_build' / 'html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
