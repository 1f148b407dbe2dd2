"""A chapter's functions take what they use as arguments, never a notebook global.

A function defined in a notebook may read, from the notebook's top level, only modules, imported names,
the notebook's other functions and classes, and constants in ALL_CAPS. Data the notebook computes (a
schedule, a model, a tensor, a profile) it is passed: a reader who runs the cells out of order, or who
copies the function into a project of their own, then meets a missing argument instead of a stale value.
"""

import ast
import json
import symtable
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _python(cell_source):
    """The cell without its IPython lines (magics, shell escapes), or None if the rest is not Python."""
    lines = [line for line in cell_source.splitlines()
             if not line.lstrip().startswith(("%", "!"))]
    text = "\n".join(lines)
    try:
        ast.parse(text)
    except SyntaxError:
        return None
    return text


def _data_names(tree):
    """Names the module level binds as data: by assignment, a for or with target, a walrus; not by
    def, class or import, and not `name = lambda ...` (a function in all but its syntax)."""
    names, lambdas = set(), set()

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
                             ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return                                   # their own scopes
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            lambdas.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names - lambdas


def _globals_read(table):
    """Global names that a function's table (and the scopes inside it) reads."""
    found = {s.get_name() for s in table.get_symbols()
             if s.is_referenced() and (s.is_global() or s.is_declared_global())}
    for child in table.get_children():
        if child.get_type() != "function" or child.get_name() in ("lambda", "genexpr", "listcomp",
                                                                    "setcomp", "dictcomp"):
            found |= _globals_read(child)
    return found


def _functions(table, prefix=""):
    """(qualified name, table) of every def, nested ones and methods included, but not lambdas."""
    for child in table.get_children():
        name = f"{prefix}{child.get_name()}"
        if child.get_type() == "function" and child.get_name() != "lambda":
            if child.get_name() not in ("genexpr", "listcomp", "setcomp", "dictcomp"):
                yield name, child
            yield from _functions(child, f"{name}.")
        elif child.get_type() == "class":
            yield from _functions(child, f"{name}.")


def notebook_globals_read(nb_path):
    """{function: sorted names} for each function of the notebook that reads a notebook global
    (data assigned at the top level, not ALL_CAPS) it was not passed."""
    cells = json.loads(Path(nb_path).read_text())["cells"]
    sources = [_python("".join(c["source"])) for c in cells if c["cell_type"] == "code"]
    text = "\n\n".join(s for s in sources if s is not None)
    data = {n for n in _data_names(ast.parse(text)) if not n.isupper()}
    offenders = {}
    for name, table in _functions(symtable.symtable(text, str(nb_path), "exec")):
        read = sorted(_globals_read(table) & data)
        if read:
            offenders[name] = read
    return offenders


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_functions_read_no_notebook_global(nb):
    offenders = notebook_globals_read(nb)
    assert not offenders, f"{nb.name}: functions reading notebook globals they were not passed " + "; ".join(
        f"{name} reads {', '.join(names)}" for name, names in offenders.items())


def test_the_check_finds_an_offender(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%matplotlib inline\nimport math\nfrom torch import nn\n"
                                  "!echo shell\nSCALE = 2.0\nschedule = object()\n"
                                  "for step in range(3):\n    pass\nmodel = lambda x: x"),
        nbformat.v4.new_code_cell(
            "def helper(x):\n    return x\n\n\n"
            "def clean(x, schedule):\n    return helper(math.sqrt(x) * SCALE), nn, schedule, model\n\n\n"
            "def reads_schedule(x):\n    def inner():\n        return step + x\n"
            "    return schedule, inner, [schedule for _ in range(x)]\n\n\n"
            "class Viewer:\n    def show(self):\n        return schedule\n"),
        nbformat.v4.new_code_cell("clean(1.0, schedule)"),
    ]
    path = tmp_path / "made_up.ipynb"
    nbformat.write(nb, path)
    assert notebook_globals_read(path) == {"reads_schedule": ["schedule"],
                                          "reads_schedule.inner": ["step"],
                                          "Viewer.show": ["schedule"]}
    with pytest.raises(AssertionError, match=r"made_up.ipynb: .*reads_schedule reads schedule"):
        test_functions_read_no_notebook_global(path)


MAX_CELL_LINES = 40        # a reader runs and reads one step at a time: compute, check, plot


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_are_short(path):
    """Every code cell of a chapter is under MAX_CELL_LINES lines (split long ones at their seams)."""
    cells = nbformat.read(path, as_version=4).cells
    long = {i: len(c.source.splitlines()) for i, c in enumerate(cells)
            if c.cell_type == "code" and len(c.source.splitlines()) >= MAX_CELL_LINES}
    assert not long, f"{path.name}: code cells of {MAX_CELL_LINES}+ lines (cell index: lines): {long}"
