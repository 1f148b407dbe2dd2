"""The reader's edition: every chapter as Colab, Jupyter and VS Code show it, with no MyST syntax left.

    python scripts/reader_edition.py            # write reader/notebooks/*.ipynb from notebooks/
    python scripts/reader_edition.py --check    # exit 1, naming each, if one is missing or stale

The chapters' source (notebooks/) is written in MyST for the HTML book: sphinx-exercise's
{exercise-start}/{solution-start} fences, admonitions, {cite}, {doc} and {ref} roles and (label)= targets.
A plain Markdown renderer (Colab, Jupyter, VS Code, GitHub) shows those as raw text. This script writes the
same chapters in plain Markdown, which the book's launch buttons open (repository.path_to_book: reader in
_config.yml) and the HTML pages offer for download:
- an exercise reads "**Exercise** `label`", then its text;
- a solution's prose is folded in a <details> block; a solution's code cell (#@title Solution) is folded
  by its metadata (Colab's form view, Jupyter's hidden source), as in the source;
- an admonition is a block quote under its title in bold;
- {cite}`key` becomes the authors and year, linked to the paper; {doc} and {ref} link to the HTML book's
  page (GitHub Pages of repository.url, or html.baseurl when _config.yml sets one);
- outputs are cleared, as in the source.
An unknown directive or role is an error, so a new one cannot slip through as raw text.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_colab_cell import project_urls  # noqa: E402  (scripts/ is not a package)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "notebooks"
OUT = ROOT / "reader" / "notebooks"
FENCE = re.compile(r"^(`{3,}|:{3,})\{([\w-]+)\}[ \t]*(.*)$")
OPTION = re.compile(r"^:([\w-]+):[ \t]*(.*)$")
TARGET = re.compile(r"^\(([\w-]+)\)=[ \t]*$")
ROLE = re.compile(r"\{([\w:-]+)\}`([^`]+)`")
ADMONITIONS = {"note", "tip", "hint", "important", "warning", "caution", "attention", "danger", "error",
               "seealso"}
SOLUTION_CODE = "#@title Solution"


# ---------------------------------------------------------------------------------------------- references
def bib_entries(text: str) -> dict[str, dict[str, str]]:
    """{key: {field: value}} of a BibTeX file (braced values, as book/references.bib writes them)."""
    entries = {}
    for match in re.finditer(r"@\w+\s*\{\s*([^,\s]+)\s*,", text):
        key, i, depth, body = match.group(1), match.end(), 1, []
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            body.append(text[i])
            i += 1
        fields, body = {}, "".join(body[:-1])
        for field in re.finditer(r"(\w+)\s*=\s*", body):
            j, value = field.end(), []
            if j < len(body) and body[j] == "{":
                depth, j = 1, j + 1
                while j < len(body) and depth:
                    depth += {"{": 1, "}": -1}.get(body[j], 0)
                    value.append(body[j])
                    j += 1
                value = value[:-1]
            else:
                while j < len(body) and body[j] not in ",\n":
                    value.append(body[j])
                    j += 1
            fields.setdefault(field.group(1).lower(), "".join(value).strip().strip('"'))
        entries[key] = fields
    return entries


def cite_text(entry: dict[str, str]) -> str:
    """"Ho et al. 2020": the first author's last name (two authors: both), and the year."""
    names = [a.strip() for a in re.split(r"\s+and\s+", entry.get("author", "")) if a.strip()]
    last = [(n.split(",")[0] if "," in n else n.split()[-1]).strip("{} ") for n in names]
    who = (last[0] if len(last) == 1 else f"{last[0]} and {last[1]}" if len(last) == 2
           else f"{last[0]} et al." if last else "")
    return f"{who} {entry.get('year', '')}".strip()


def cite_url(entry: dict[str, str]) -> str | None:
    if entry.get("url"):
        return entry["url"]
    if entry.get("doi"):
        return f"https://doi.org/{entry['doi']}"
    return None


# ---------------------------------------------------------------------------------------------- the book
def book_url(config: dict) -> str:
    """Where the HTML book is published: html.baseurl, else the GitHub Pages address of repository.url
    (the Homepage that scripts/sync_colab_cell.py writes into pyproject.toml)."""
    base = str((config.get("html") or {}).get("baseurl") or "").rstrip("/")
    return base or project_urls(config)["Homepage"].rstrip("/")


def page_title(page: str) -> str:
    """The first heading of a book page ('notebooks/02_elbo', 'book/notation')."""
    path = ROOT / page
    if path.with_suffix(".ipynb").exists():
        cells = json.loads(path.with_suffix(".ipynb").read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = path.with_suffix(".md").read_text()
    heading = re.search(r"^#\s+(.+)$", text, re.M)
    if not heading:
        raise ValueError(f"{page} has no heading to name a link by")
    return heading.group(1).strip()


def ref_targets() -> dict[str, tuple[str, str]]:
    """{label: (page, heading)} for every (label)= target in the chapters and book pages."""
    targets = {}
    sources = [(p, "".join("".join(c["source"]) + "\n" for c in json.loads(p.read_text())["cells"]
                           if c["cell_type"] == "markdown")) for p in sorted(SOURCE.glob("*.ipynb"))]
    sources += [(p, p.read_text()) for p in sorted((ROOT / "book").glob("*.md"))]
    for path, text in sources:
        page = path.relative_to(ROOT).with_suffix("").as_posix()
        for match in re.finditer(r"^\(([\w-]+)\)=[ \t]*\n+#+\s+(.+)$", text, re.M):
            targets[match.group(1)] = (page, match.group(2).strip())
    return targets


class Links:
    """Turns the MyST roles of one chapter into plain Markdown links."""

    def __init__(self, config: dict):
        self.book = book_url(config)
        self.bib = bib_entries((ROOT / "book" / "references.bib").read_text())
        self.targets = ref_targets()

    def role(self, name: str, content: str, where: str) -> str:
        explicit = re.fullmatch(r"(.+?)\s*<([^>]+)>", content, re.S)
        text, target = (explicit.group(1), explicit.group(2)) if explicit else (None, content.strip())
        if name == "cite":
            parts = []
            for key in (k.strip() for k in target.split(",")):
                if key not in self.bib:
                    raise ValueError(f"{where}: {{cite}}`{key}` is not in book/references.bib")
                url, label = cite_url(self.bib[key]), cite_text(self.bib[key])
                parts.append(f"[{label}]({url})" if url else label)
            return "[" + "; ".join(parts) + "]"
        if name == "doc":
            page = (Path("notebooks") / target).as_posix() if not target.startswith("/") else target[1:]
            page = str(Path(page)).replace("\\", "/")
            page = _normalise(page)
            return f"[{text or page_title(page)}]({self.book}/{page}.html)"
        if name == "ref":
            if target not in self.targets:
                raise ValueError(f"{where}: {{ref}}`{target}` names no (label)= target")
            page, heading = self.targets[target]
            return f"[{text or heading}]({self.book}/{page}.html#{target})"
        raise ValueError(f"{where}: the role {{{name}}} has no plain-Markdown form in scripts/reader_edition.py")


def _normalise(page: str) -> str:
    parts: list[str] = []
    for part in page.split("/"):
        if part == "..":
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


# ---------------------------------------------------------------------------------------------- markdown
def details(body: str) -> str:
    return f"<details>\n<summary><b>Solution</b> (click to open)</summary>\n\n{body.strip()}\n\n</details>"


def plain_markdown(text: str, state: dict, links: Links, where: str) -> str:
    """One markdown cell of the source in plain Markdown. ``state['solution']`` carries over cells: True
    between a solution's start and end fences, where the prose is folded."""
    lines, out, folded, i = text.split("\n"), [], [], 0

    def emit(line: str):
        (folded if state["solution"] else out).append(line)

    def flush_folded():
        if "".join(folded).strip():
            out.append(details("\n".join(folded)))
        folded.clear()

    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if TARGET.match(line):
            i += 1
            continue
        if not fence:
            emit(line)
            i += 1
            continue
        marker, name, argument = fence.groups()
        options, i = {}, i + 1
        while i < len(lines) and OPTION.match(lines[i]):
            key, value = OPTION.match(lines[i]).groups()
            options[key], i = value, i + 1
        body = []
        while i < len(lines) and lines[i].rstrip() != marker:
            body.append(lines[i])
            i += 1
        i += 1                                                        # the closing fence
        if name == "exercise-start":
            emit(f"**Exercise** `{options.get('label', argument)}`")
            emit("")
        elif name == "exercise-end":
            pass
        elif name == "solution-start":
            state["solution"] = True
        elif name == "solution-end":
            flush_folded()
            state["solution"] = False
        elif name in ADMONITIONS or name == "admonition":
            title = argument or name.capitalize()
            emit(f"> **{title}**")
            emit(">")
            for row in body:
                emit(f"> {row}".rstrip())
        else:
            raise ValueError(f"{where}: the directive {{{name}}} has no plain-Markdown form in "
                             "scripts/reader_edition.py")
    if state["solution"]:
        flush_folded()
    text = "\n".join(out)
    text = ROLE.sub(lambda m: links.role(m.group(1), m.group(2), where), text)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def header(config: dict, name: str, edition: str = "reader") -> str:
    if edition == "student":
        return ("*The student edition of this chapter: the exercises without their solutions. Each check "
                "says whether your answer is right.*")
    return (f"*The reader's edition of this chapter, for Colab and Jupyter. The same chapter, with its "
            f"figures, is in [the HTML book]({book_url(config)}/notebooks/{name}.html).*")


def reader_notebook(nb: dict, name: str, config: dict, links: Links, edition: str = "reader") -> dict:
    """A copy of the source notebook ``nb`` in plain Markdown, outputs cleared."""
    nb = copy.deepcopy(nb)
    state, cells = {"solution": False}, []
    for index, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            text = plain_markdown(source, state, links, f"{name} cell {index}")
            if not text.strip():
                continue
            cell["source"] = text
            cell["metadata"].pop("jupyter", None)
        elif cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if source.startswith(SOLUTION_CODE):
                cell["metadata"]["cellView"] = "form"
                cell["metadata"].setdefault("jupyter", {})["source_hidden"] = True
        cells.append(cell)
    first = next(c for c in cells if c["cell_type"] == "markdown")   # under the chapter's title
    title, _, rest = first["source"].partition("\n")
    first["source"] = f"{title}\n\n{header(config, name, edition)}\n{rest}".rstrip("\n")
    for cell in cells:
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        lines = text.split("\n")
        cell["source"] = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    nb["cells"] = cells
    return nb


def editions(config: dict | None = None) -> dict[Path, str]:
    """{target path: its JSON text} for every chapter."""
    config = config or yaml.safe_load((ROOT / "_config.yml").read_text())
    links = Links(config)
    out = {}
    for path in sorted(SOURCE.glob("*.ipynb")):
        nb = reader_notebook(json.loads(path.read_text()), path.stem, config, links)
        out[OUT / path.name] = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    wanted = editions()
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    extra = [p for p in OUT.glob("*.ipynb") if p not in wanted] if OUT.exists() else []
    if args.check:
        for p in stale + extra:
            print(f"{p.relative_to(ROOT)} is stale: run python scripts/reader_edition.py", file=sys.stderr)
        return 1 if stale or extra else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p.relative_to(ROOT)}")
    for p in extra:
        p.unlink()
        print(f"removed {p.relative_to(ROOT)} (no such chapter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
