"""The files that ship inside ddpm_lib, found through importlib.resources: ``ASSETS`` (the shipped models,
the classifiers and the bundled digits) and ``CONFIGS`` (the example training configs, which
``train --config NAME`` takes by name). What only the chapters read (cards, logs, stored samples, the
sampler comparisons) is the book's, ``ddpm_lib.book.ASSETS``.

Both are folders of the installed package, so they are there after ``pip install`` as in this repository;
the chapters read every file of theirs from here, never from the repository around them.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

# importlib.resources gives a pathlib.Path for a package installed as files (pip's wheels, a checkout); the
# data readers here (np.load, torch.load, open) need a real path, so a zipped install is refused early.
_ROOT = files(__package__)
if not isinstance(_ROOT, Path):
    raise ImportError(f"ddpm_lib must be installed as files, not inside an archive ({_ROOT})")
ASSETS: Path = _ROOT / "assets"
CONFIGS: Path = _ROOT / "configs"


def config_names() -> list[str]:
    """The shipped example configs, by the name ``train --config`` accepts (the file name without .yml)."""
    return sorted(p.stem for p in CONFIGS.glob("*.yml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """The YAML file a ``--config`` argument means: an existing file, or a shipped config's name.

    A ValueError, one line naming the shipped configs, when it is neither. Anything at that path (a folder,
    a device, a broken link or a loop of links) is returned as it is, so the reader's checks name what it is.
    """
    path = Path(name_or_path)
    if os.path.lexists(path):
        return path
    shipped = CONFIGS / f"{path.name.removesuffix('.yml')}.yml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise ValueError(f"config {name_or_path}: no such file, nor a shipped config (shipped: "
                     f"{', '.join(config_names())})")
