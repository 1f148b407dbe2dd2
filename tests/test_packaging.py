"""ddpm_lib installs on its own: the wheel carries the code and the assets, and only the package's needs."""

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_the_package_and_its_assets(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                             "-w", str(tmp_path), "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("ddpm_lib-*.whl")
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
    meta = Parser().parsestr(zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    core = {r.split(";")[0].split(">")[0].split("=")[0].strip() for r in meta.get_all("Requires-Dist")
            if "extra ==" not in r}
    assert core == {"torch", "numpy", "einops", "tqdm", "pillow", "pyyaml"}
