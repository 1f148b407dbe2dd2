"""Write every place that names the book's repository from _config.yml: the chapters' install cells, the
package's URLs in pyproject.toml and the clone commands in book/setup.md.

    python scripts/sync_colab_cell.py           # rewrite them (after editing _config.yml)
    python scripts/sync_colab_cell.py --check   # exit 1, naming each, if one differs
    python scripts/sync_colab_cell.py --check --expect-url https://github.com/OWNER/NAME
                                                # ...or if repository.url is not that (the deploy workflow)

The repository is set once, in _config.yml: `repository.url` (also behind the book's launch, repository
and issue buttons) and `repository.release`, the tag or commit the install cells install ddpm_lib from.
The install cell is the first code cell of every chapter. It does nothing where ddpm_lib is importable
(this checkout, an environment that installed it); elsewhere (Colab, a reader's own Jupyter) it runs
`%pip install "ddpm_lib[reader] @ git+URL@RELEASE"`, keeping the torch already installed. It never
installs the book's toolchain: a running kernel keeps its ipykernel, tornado and jupyter-client.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = "https://github.com/ddpm-book/ddpm-book"      # no repository is published at this address
GITHUB = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+?)/?$")


def repository(config: dict) -> tuple[str, str]:
    """(url, release) of a parsed _config.yml, checked: a GitHub URL and a tag or commit."""
    repo = config.get("repository") or {}
    url, release = str(repo.get("url", "")).rstrip("/"), str(repo.get("release", ""))
    if not GITHUB.match(url):
        raise ValueError(f"repository.url in _config.yml must be https://github.com/OWNER/NAME, got {url!r}")
    if not re.fullmatch(r"[\w.+-]+", release):
        raise ValueError(f"repository.release in _config.yml must name a tag or commit, got {release!r}")
    return url, release


def install_target(config: dict) -> str:
    """The pip requirement the install cells install: the package with its `reader` extra, from git."""
    url, release = repository(config)
    return f"ddpm_lib[reader] @ git+{url}@{release}"


def colab_cell_source(config: dict) -> str:
    """The source of the install cell for a parsed _config.yml (IPython syntax: it uses %pip)."""
    return "\n".join([
        "# Installs ddpm_lib where it is missing (Colab, your own Jupyter); does nothing where it imports.",
        "# Written from _config.yml by scripts/sync_colab_cell.py: the tag or commit is repository.release.",
        "import importlib.metadata, importlib.util, sys",
        'if importlib.util.find_spec("ddpm_lib") is None:',
        "    # keep the torch this runtime has: pip may not replace it (nor ipykernel, never named here)",
        '    keep = f"torch=={importlib.metadata.version(\'torch\')}" if importlib.util.find_spec("torch") else ""',
        f'    %pip install -q "{install_target(config)}" {{keep}}',
        '    if "ipywidgets" in sys.modules:   # an older ipywidgets is loaded; the sliders need 8',
        '        print("Installed: restart the session once (Runtime > Restart session).")',
    ])


def project_urls(config: dict) -> dict[str, str]:
    """pyproject.toml's [project.urls]: the repository, its issues, and its GitHub Pages book."""
    url, _ = repository(config)
    owner, name = GITHUB.match(url).groups()
    return {"Homepage": f"https://{owner.lower()}.github.io/{name}/", "Source": url, "Issues": f"{url}/issues"}


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def synced_notebook(path: Path, source: str) -> str | None:
    """The notebook's JSON text with its install cell set to ``source``, or None when it already is."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = nb["cells"][0]
    if first["cell_type"] != "code" or "remove-cell" not in first.get("metadata", {}).get("tags", []):
        raise ValueError(f"{path.name}: the first cell is not the install cell (a code cell tagged remove-cell)")
    if "".join(first["source"]) == source:
        return None
    first["source"] = source.splitlines(keepends=True)
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def synced_pyproject(text: str, urls: dict[str, str]) -> str:
    for key, value in urls.items():
        text, n = re.subn(rf'^{key} = ".*"$', f'{key} = "{value}"', text, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"pyproject.toml has no `{key} = ...` line under [project.urls]")
    return text


def synced_setup_page(text: str, url: str) -> str:
    name = url.rsplit("/", 1)[1]
    return re.sub(r"^git clone \S+ && cd \S+$", f"git clone {url} && cd {name}", text, flags=re.M)


def planned_files(config: dict) -> dict[Path, str]:
    """Every file whose text differs from what _config.yml says, with its new text."""
    changed = {}
    source = colab_cell_source(config)
    for path in notebooks():
        text = synced_notebook(path, source)
        if text is not None:
            changed[path] = text
    url, _ = repository(config)
    for path, sync in ((ROOT / "pyproject.toml", lambda t: synced_pyproject(t, project_urls(config))),
                       (ROOT / "book" / "setup.md", lambda t: synced_setup_page(t, url))):
        old = path.read_text(encoding="utf-8")
        if sync(old) != old:
            changed[path] = sync(old)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ from _config.yml")
    parser.add_argument("--expect-url", metavar="URL", help="also fail unless repository.url is URL")
    args = parser.parse_args(argv)
    try:
        config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
        changed = planned_files(config)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    url = repository(config)[0]
    if args.expect_url and url.lower() != args.expect_url.rstrip("/").lower():
        placeholder = " (the placeholder)" if url == PLACEHOLDER else ""
        print(f"error: repository.url in _config.yml is {url}{placeholder}, not {args.expect_url}: set it and run "
              "python scripts/sync_colab_cell.py (book/setup.md, Publishing the book)", file=sys.stderr)
        return 1
    names = ", ".join(str(p.relative_to(ROOT)) for p in changed)
    if args.check:
        if changed:
            print(f"out of date with _config.yml: {names} (run python scripts/sync_colab_cell.py)")
        return 1 if changed else 0
    for path, text in changed.items():
        path.write_text(text, encoding="utf-8")
    if changed:
        print(f"rewrote: {names}")
    if url == PLACEHOLDER:
        print(f"note: repository.url is still the placeholder {PLACEHOLDER}; set it before publishing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
