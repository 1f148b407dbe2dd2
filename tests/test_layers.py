"""The library never imports the book's support: no module of ddpm_lib outside ddpm_lib/book imports
ddpm_lib.book, absolutely or relatively, at the top or inside a function. And no module is too big."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ddpm_lib"
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if "book" not in p.relative_to(PACKAGE).parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, as an absolute dotted name (relative imports resolved)."""
    package = ["ddpm_lib", *path.relative_to(PACKAGE).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}       # from ddpm_lib import book
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.add(str(node.args[0].value))
    return found


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_the_library_never_imports_the_book(path):
    wrong = sorted(m for m in imported_modules(path) if m == "ddpm_lib.book" or m.startswith("ddpm_lib.book."))
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong}: the library must not depend on ddpm_lib.book"


def test_the_scan_sees_every_form_of_import(tmp_path, monkeypatch):
    fake = PACKAGE / "sampling.py"
    forms = {"from .book import widgets": True, "from .book.exercises import check": True,
             "import ddpm_lib.book.results": True, "from ddpm_lib import book": True,
             "def f():\n    from . import book": True, "from . import images": False,
             "from .images import make_grid": False}
    for code, book in forms.items():
        monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: code)
        found = imported_modules(fake)
        assert any(m == "ddpm_lib.book" or m.startswith("ddpm_lib.book.") for m in found) is book, code


def test_no_module_is_more_than_15_percent_of_the_package():
    lines = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    total = sum(lines.values())
    biggest = max(lines, key=lines.get)
    assert lines[biggest] <= 0.15 * total, f"{biggest.relative_to(PACKAGE)}: {lines[biggest]} of {total} lines"


# Classes that do one job and may be longer, each with its reason in CONTRIBUTING.md ("Long classes") and a
# ceiling: growing past it needs a new reason, or a split.
LONG_CLASSES = {("training.py", "Trainer"): 300}


def test_no_class_is_over_250_lines():
    contributing = (PACKAGE.parent / "CONTRIBUTING.md").read_text()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                where = (path.relative_to(PACKAGE).as_posix(), node.name)
                limit = LONG_CLASSES.get(where, 250)
                assert size <= limit, f"{where[0]}: class {node.name} is {size} lines (at most {limit})"
                if where in LONG_CLASSES:
                    assert f"except `{node.name}`" in contributing, f"CONTRIBUTING.md says not why {node.name} is long"


def test_the_book_joins_the_command_line_through_its_entry_point(capsys):
    """`python -m ddpm_lib grade` (the teachers' command) comes from the book's entry point: the library's
    commands do not name it, and the parser gains it from the installed metadata."""
    from ddpm_lib import cli

    assert "grade" not in cli.COMMANDS
    assert cli._plugin_commands()["grade"].value == "ddpm_lib.book.cli:add_grade"
    with pytest.raises(SystemExit) as stop:
        cli.main(["grade", "--help"])
    assert stop.value.code == 0 and "SUBMISSION.ipynb" in capsys.readouterr().out


def module_name(path: Path) -> str:
    parts = ["ddpm_lib", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle of ``graph`` (module -> the modules it imports) once, as the list of its modules."""
    cycles, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt):]
                key = frozenset(cycle)
                if key not in done:
                    done.add(key)
                    cycles.append(cycle)
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        seen = {start}
        visit(start, [start])
    return cycles


def package_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in the file (TYPE_CHECKING blocks and functions too);
    the package's face (ddpm_lib/__init__.py, ddpm_lib/book/__init__.py) re-exports and is left out."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_modules(path):
            while imported and imported not in modules:                  # ddpm_lib.unet.UNet -> ddpm_lib.unet
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_the_package_has_no_import_cycle():
    cycles = import_cycles(package_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
