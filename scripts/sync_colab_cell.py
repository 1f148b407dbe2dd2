"""Write every chapter's first cell, the Colab install cell, from `repository` in _config.yml.

    python scripts/sync_colab_cell.py           # rewrite the cells (after editing _config.yml)
    python scripts/sync_colab_cell.py --check   # exit 1 if a notebook's cell differs

The repository's URL and branch are set once, in _config.yml (`repository.url`, `repository.branch`); they
also drive the book's launch and repository buttons. A teacher who forks the book edits those two lines and
runs this script, and every chapter opened in Colab installs ddpm_lib from the fork.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def colab_cell_source(config: dict) -> str:
    """The source of the install cell for the repository named in a parsed _config.yml."""
    repo = config["repository"]
    target = f"git+{repo['url']}" + (f"@{repo['branch']}" if repo.get("branch") else "")
    return "\n".join([
        "# Colab: install ddpm_lib from the book's repository (this cell does nothing elsewhere).",
        "# The URL comes from _config.yml (scripts/sync_colab_cell.py writes it here).",
        "import subprocess, sys",
        'if "google.colab" in sys.modules:',
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q",',
        f'                    "ddpm_lib[book] @ {target}"], check=True)',
    ])


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks whose cell differs")
    args = parser.parse_args()
    source = colab_cell_source(yaml.safe_load((ROOT / "_config.yml").read_text()))
    stale = []
    for path in notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        first = nb["cells"][0]
        if first["cell_type"] != "code" or "remove-cell" not in first.get("metadata", {}).get("tags", []):
            print(f"{path.name}: the first cell is not the install cell (a code cell tagged remove-cell)")
            return 1
        if "".join(first["source"]) == source:
            continue
        stale.append(path.name)
        if not args.check:
            first["source"] = source.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    if stale:
        print(("out of date: " if args.check else "rewrote: ") + ", ".join(stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
