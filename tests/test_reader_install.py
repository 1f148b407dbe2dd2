"""The chapters' install cell, as a reader's kernel runs it: it does nothing where ddpm_lib imports, and
elsewhere `%pip install`s ddpm_lib[reader] from the release named in _config.yml, keeping the runtime's
torch. Run in a real IPython shell, with the pip magic replaced by one that records its command line."""

import importlib.metadata
import importlib.util
import json
import shlex
from pathlib import Path

import pytest
import yaml

import ddpm_lib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def sync_script():
    spec = importlib.util.spec_from_file_location("sync_colab_cell", ROOT / "scripts" / "sync_colab_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install_cell(nb: Path) -> str:
    return "".join(json.loads(nb.read_text())["cells"][0]["source"])


@pytest.fixture
def shell():
    """An IPython shell whose %pip records its arguments instead of running pip."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.pip_calls = []
    ip.register_magic_function(lambda line: ip.pip_calls.append(line), "line", "pip")
    yield ip
    InteractiveShell.clear_instance()


def run(shell, source: str) -> list[list[str]]:
    result = shell.run_cell(source)
    assert result.success, result.error_in_exec or result.error_before_exec
    return [shlex.split(line) for line in shell.pip_calls]


def missing(*names):
    """A find_spec that reports ``names`` as not installed."""
    real = importlib.util.find_spec
    return lambda name, *args: None if name in names else real(name, *args)


def test_every_file_naming_the_repository_is_in_step_with_the_config():
    assert sync_script().main(["--check"]) == 0, "run python scripts/sync_colab_cell.py"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_starts_with_the_install_cell(nb):
    assert install_cell(nb) == sync_script().colab_cell_source(CONFIG)


def test_the_cell_does_nothing_where_ddpm_lib_imports(shell):
    assert run(shell, install_cell(NOTEBOOKS[0])) == []


def test_elsewhere_it_installs_the_release_and_keeps_the_installed_torch(shell, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", missing("ddpm_lib"))
    url, release = CONFIG["repository"]["url"], CONFIG["repository"]["release"]
    (args,) = run(shell, install_cell(NOTEBOOKS[0]))
    assert args == ["install", "-q", f"ddpm_lib[reader] @ git+{url}@{release}",
                    f"torch=={importlib.metadata.version('torch')}"]


def test_without_torch_it_lets_pip_install_one(shell, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", missing("ddpm_lib", "torch"))
    (args,) = run(shell, install_cell(NOTEBOOKS[0]))
    assert args[:2] == ["install", "-q"] and len(args) == 3 and args[2].startswith("ddpm_lib[reader] @ git+")


def test_the_release_is_this_version_or_a_commit():
    release = CONFIG["repository"]["release"]
    assert release == f"v{ddpm_lib.__version__}" or len(release) == 40, \
        f"repository.release {release!r}: tag v{ddpm_lib.__version__} (ddpm_lib.__version__) or a full commit"


@pytest.mark.parametrize("repo, message", [
    ({"url": "git@github.com:me/book.git", "release": "v1"}, "must be https://github.com/OWNER/NAME"),
    ({"url": "https://github.com/me/book", "release": ""}, "must name a tag or commit"),
    ({"url": "https://github.com/me/book", "release": "v1; rm -rf ~"}, "must name a tag or commit"),
])
def test_a_bad_repository_setting_is_refused(repo, message):
    with pytest.raises(ValueError, match=message):
        sync_script().colab_cell_source({"repository": repo})


def test_a_fork_url_reaches_every_file(tmp_path):
    """What `sync_colab_cell.py` writes for another repository: its URL everywhere, its Pages address."""
    sync = sync_script()
    config = {"repository": {"url": "https://github.com/Teacher/my-ddpm", "release": "v2.0.0"}}
    assert "git+https://github.com/Teacher/my-ddpm@v2.0.0" in sync.colab_cell_source(config)
    pyproject = sync.synced_pyproject((ROOT / "pyproject.toml").read_text(), sync.project_urls(config))
    assert 'Homepage = "https://teacher.github.io/my-ddpm/"' in pyproject
    assert 'Source = "https://github.com/Teacher/my-ddpm"' in pyproject
    setup = sync.synced_setup_page((ROOT / "book" / "setup.md").read_text(), "https://github.com/Teacher/my-ddpm")
    assert "git clone https://github.com/Teacher/my-ddpm && cd my-ddpm" in setup
    assert CONFIG["repository"]["url"] not in setup


def test_the_deploy_check_refuses_another_repositorys_url(capsys):
    sync = sync_script()
    url = CONFIG["repository"]["url"]
    assert sync.main(["--check", "--expect-url", url.upper() + "/"]) == 0        # GitHub names ignore case
    assert sync.main(["--check", "--expect-url", "https://github.com/someone/else"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "https://github.com/someone/else" in err


@pytest.mark.parametrize("loaded", [True, False])
def test_it_asks_for_a_restart_only_when_an_older_ipywidgets_is_loaded(shell, monkeypatch, capsys, loaded):
    """Colab ships ipywidgets 7: the cell installs 8, which a kernel that has imported 7 will not use."""
    import sys

    monkeypatch.setattr(importlib.util, "find_spec", missing("ddpm_lib"))
    if loaded:
        monkeypatch.setitem(sys.modules, "ipywidgets", object())
    else:
        monkeypatch.delitem(sys.modules, "ipywidgets", raising=False)
    run(shell, install_cell(NOTEBOOKS[0]))
    assert ("restart the session" in capsys.readouterr().out) == loaded
