"""ddpm_lib installs on its own: the wheel carries the code, the assets and the LICENSE, builds without a
setuptools deprecation warning, and asks for only the package's needs (a reader's install adds the extra
`reader`, never the book's toolchain)."""

import importlib
import importlib.metadata
import json
import pkgutil
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import ddpm_lib
from ddpm_lib.book import ASSETS as BOOK_ASSETS
from ddpm_lib.package_files import ASSETS, CONFIGS, config_names, resolve_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel path, pip's verbose output) of `pip wheel . --no-deps`, built once for this module."""
    out = tmp_path_factory.mktemp("wheel")
    # from a copy: setuptools' build/ folder in a checkout keeps files of earlier builds, which would hide a
    # file the package data patterns no longer match
    source = tmp_path_factory.mktemp("source") / "ddpm-book"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "_build", "runs", "data",
                                                                "*.egg-info", "__pycache__", ".pytest_cache"))
    # this environment's setuptools when it can build pyproject's SPDX license (77), else pip's isolated build
    isolation = [] if int(importlib.metadata.version("setuptools").split(".")[0]) < 77 else ["--no-build-isolation"]
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", *isolation,
                             "-w", str(out), "-v"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = out.glob("ddpm_lib-*.whl")
    return wheel, result.stdout + result.stderr


def metadata(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    text = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    return Parser().parsestr(text)


def requirement_name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()


def test_wheel_holds_the_package_and_its_assets(built):
    wheel, _ = built
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("ddpm_lib/__init__.py", "ddpm_lib/unet.py", "ddpm_lib/assets/mnist_sample.npz",
                   "ddpm_lib/assets/mnist_small.pt", "ddpm_lib/assets/mnist_classifier.pt",
                   "ddpm_lib/assets/mnist_conditional.pt", "ddpm_lib/book/assets/mnist_conditional_card.json",
                   "ddpm_lib/assets/fashion_conditional.pt", "ddpm_lib/assets/fashion_classifier.pt",
                   "ddpm_lib/book/assets/fashion_conditional_progress.npz",
                   "ddpm_lib/book/__init__.py", "ddpm_lib/book/exercises/__init__.py"):
        assert needed in names, needed
    prose = sorted((ROOT / "ddpm_lib" / "book" / "exercises" / "text").glob("*.yaml"))   # the exercises' prose
    assert prose and all(f"ddpm_lib/book/exercises/text/{p.name}" in names for p in prose)
    assert not [n for n in names if n.startswith(("tests/", "notebooks/", "book/"))]
    # Three shipped models (7.3 MB with raw fp16 weights, 4.9 MB and 4.9 MB EMA only), two classifiers and
    # 10,000 digits: about 19.5 MB. The budget catches a run folder or a data set packaged by mistake (one
    # more model's run folder, with optimizer state, is 19.5 MB on its own).
    assert wheel.stat().st_size < 25e6
    core = {requirement_name(r) for r in metadata(wheel).get_all("Requires-Dist") if "extra ==" not in r}
    assert core == {"torch", "numpy", "einops", "tqdm", "pillow", "pyyaml"}


def test_wheel_carries_the_license_and_its_metadata(built):
    wheel, _ = built
    names = zipfile.ZipFile(wheel).namelist()
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    text = zipfile.ZipFile(wheel).read(license_file).decode()
    assert "MIT License" in text and "CC BY 4.0" in text
    meta = metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert meta["Version"] == ddpm_lib.__version__                   # one version, read from the package
    assert meta["Author"] and meta.get_all("Classifier") and meta.get_all("Project-URL")
    assert "Programming Language :: Python :: 3.13" in meta.get_all("Classifier")   # Colab's
    # `python -m ddpm_lib grade`: the book's grader joins the command line through an entry point.
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[ddpm_lib.commands]\ngrade = ddpm_lib.book.cli:add_grade" in text, text


def test_the_build_gives_no_setuptools_deprecation_warning(built):
    _, log = built
    warned = [line for line in log.splitlines() if "Deprecat" in line or "absent from the `packages`" in line]
    assert not warned, warned[:3]


def test_a_readers_extra_installs_no_toolchain_and_no_torch(built):
    """The chapters' install cells install ddpm_lib[reader]: plots and sliders, never the book's toolchain
    (Colab pins ipykernel, tornado and jupyter-client for its running kernel)."""
    wheel, _ = built
    reader = {requirement_name(r) for r in metadata(wheel).get_all("Requires-Dist") if "extra == \"reader\"" in r}
    assert reader == {"matplotlib", "ipywidgets"}


@pytest.mark.parametrize("command", [["-m", "ddpm_lib"], ["-c", "from ddpm_lib.cli import main; main()"]])
def test_version_on_the_command_line(command):
    result = subprocess.run([sys.executable, *command, "--version"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == f"ddpm_lib {ddpm_lib.__version__}", result


# What the chapters' code names by file name and is not in the package: chapter 4's own training run writes
# these into a temporary folder (Trainer's log and checkpoint).
MADE_BY_A_CHAPTER = {"log.csv", "last.pt"}
DATA_NAME = re.compile(r"""["']([\w.-]+\.(?:csv|json|npz|npy|pt|yml|yaml|png|txt))["']""")


def chapter_code() -> str:
    return "\n".join("".join(c["source"]) for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))
                     for c in json.loads(nb.read_text())["cells"][1:] if c["cell_type"] == "code")


def chapter_text() -> str:
    pages = [ROOT / "README.md", *(ROOT / "book").glob("*.md")]
    cells = ["".join(c["source"]) for nb in (ROOT / "notebooks").glob("*.ipynb")
             for c in json.loads(nb.read_text())["cells"]]
    return "\n".join([*(p.read_text() for p in pages), *cells])


def package_paths() -> set[Path]:
    """Every file path a ddpm_lib module names at import time (SAMPLER_QUALITY, the shipped models, ...)."""
    found = set()
    for info in pkgutil.walk_packages(ddpm_lib.__path__, "ddpm_lib."):
        if info.name.endswith("__main__"):                # runs a command line
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            values = value.values() if isinstance(value, dict) else [value]
            found |= {v for v in values if isinstance(v, Path) and v.suffix}
    return found


def test_the_wheel_holds_every_file_the_chapters_open(built):
    """A chapter run from a pip install finds every file it reads: each data file its code names, and each
    file the package's modules point at, is in the wheel (or written by the chapter itself)."""
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    named = set(DATA_NAME.findall(chapter_code())) - MADE_BY_A_CHAPTER
    assert {"mnist_small_log.csv", "mnist_small_card.json", "fashion_conditional_progress.npz"} <= named
    missing = {n for n in named if not {f"ddpm_lib/assets/{n}", f"ddpm_lib/book/assets/{n}"} & names}
    assert not missing, f"chapters open files the wheel lacks: {sorted(missing)}"
    root = Path(ddpm_lib.__file__).parent
    shipped = {p for p in package_paths() if root in p.parents}
    assert BOOK_ASSETS / "sampler_quality.json" in shipped and ASSETS / "mnist_classifier.pt" in shipped
    missing = {p.relative_to(root).as_posix() for p in shipped} - {n.removeprefix("ddpm_lib/") for n in names}
    assert not missing, f"ddpm_lib's modules name files the wheel lacks: {sorted(missing)}"
    tracked = {f"ddpm_lib/{p.relative_to(root).as_posix()}" for folder in (ASSETS, BOOK_ASSETS, CONFIGS)
               for p in folder.iterdir()
               if p.is_file() and not p.name.startswith(".")}
    assert tracked <= names, f"files of the package's data folders missing from the wheel: {tracked - names}"


def test_no_chapter_reads_a_file_of_the_repository():
    """Outside this repository (Colab, a pip install) only the package is there: no chapter code reaches for
    configs/, scripts/, book/ or a path relative to the notebook."""
    code = chapter_code()
    assert not re.search(r"""["'](\.\./|configs/|scripts/|book/|notebooks/|tests/)""", code)
    assert "__file__" not in code and "os.getcwd" not in code


def test_every_config_the_book_names_ships_with_the_package(built):
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    # a shipped config's name (a file, `--config run.yml`, and the placeholder NAME are examples of the others)
    shown = set(re.findall(r"--config ([a-z_]+)(?![\w./-])", chapter_text()))
    assert {"mnist_small", "fashion_conditional"} <= shown
    assert {f"ddpm_lib/configs/{n}.yml" for n in shown} <= names, shown
    assert set(config_names()) == {"mnist_small", "mnist_conditional", "fashion_conditional"}


def test_a_shipped_config_by_name_and_an_unknown_one():
    assert resolve_config("mnist_small") == CONFIGS / "mnist_small.yml"
    assert resolve_config("mnist_small.yml") == CONFIGS / "mnist_small.yml"
    with pytest.raises(ValueError, match=r"^config mnist_large: no such file, nor a shipped config \(shipped: "
                                         r"fashion_conditional, mnist_conditional, mnist_small\)$"):
        resolve_config("mnist_large")
    with pytest.raises(ValueError, match="no such file"):
        resolve_config("elsewhere/mnist_small")             # a path is a path, never a shipped name


def test_train_reads_a_shipped_config_by_name():
    from ddpm_lib.cli import _settings_given, build_parser

    args = build_parser().parse_args(["train", "--config", "mnist_small", "--steps", "7"])
    given = _settings_given(args)
    assert given["preset"] == "small" and given["dataset"] == "mnist-sample" and given["steps"] == 7
