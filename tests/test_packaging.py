"""ddpm_lib installs on its own: the wheel carries the code, the assets and the LICENSE, builds without a
setuptools deprecation warning, and asks for only the package's needs (a reader's install adds the extra
`reader`, never the book's toolchain)."""

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import ddpm_lib

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel path, pip's verbose output) of `pip wheel . --no-deps`, built once for this module."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
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
                   "ddpm_lib/assets/mnist_conditional.pt", "ddpm_lib/assets/mnist_conditional_card.json",
                   "ddpm_lib/assets/fashion_conditional.pt", "ddpm_lib/assets/fashion_classifier.pt",
                   "ddpm_lib/assets/fashion_conditional_progress.npz"):
        assert needed in names, needed
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
    assert "Programming Language :: Python :: 3.12" in meta.get_all("Classifier")


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
