"""RunConfig: YAML, validation, one source for defaults and help, and what a resume may change."""

import pytest
import torch

from ddpm_lib import RunConfig
from ddpm_lib.checkpoint import CheckpointError
from ddpm_lib.config import read_yaml_settings, resume_config, setting_help


def write(tmp_path, text):
    path = tmp_path / "run.yml"
    path.write_text(text)
    return path


def test_yaml_numbers_booleans_and_duplicate_keys(tmp_path):
    # YAML 1.1 reads 2e-4 (no dot) as a string; the same value works on the command line, so it must here.
    assert RunConfig.from_yaml(write(tmp_path, "lr: 2e-4\nsteps: 5\n")).validate().lr == 2e-4
    with pytest.raises(ValueError, match="lr must be a number, got 'fast'"):
        RunConfig.from_yaml(write(tmp_path, "lr: fast\n"))
    for text, name in [('channels_last: "no"\n', "channels-last"), ("compile: yes_please\n", "compile"),
                       ('progress: "false"\n', "progress")]:
        with pytest.raises(ValueError, match=f"{name} must be true or false"):
            RunConfig.from_yaml(write(tmp_path, text)).validate()
    with pytest.raises(ValueError, match="given twice: lr"):
        read_yaml_settings(write(tmp_path, "lr: 1.0e-4\nsteps: 3\nlr: 5.0e-4\n"))
    with pytest.raises(ValueError, match="unknown setting"):
        read_yaml_settings(write(tmp_path, "learning_rate: 1.0e-4\n"))


@pytest.mark.parametrize("values, message", [
    (dict(timesteps=100_000_000), "timesteps must be an integer from 2 to 100000"),
    (dict(grad_clip=float("inf")), "grad-clip must be a positive number"),
    (dict(seed=2**63), "seed must be an integer from 0 to"),
    (dict(precision="half"), "precision must be one of"),
    (dict(num_classes=0), "num-classes must be an integer from 1 to 1,000,000"),
    (dict(label_dropout=1.5), "label-dropout must lie in"),
])
def test_validation_names_the_setting(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**values).validate()


def test_old_checkpoints_bf16_setting_becomes_precision():
    assert RunConfig.from_dict({"bf16": True}).precision == "auto"
    assert RunConfig.from_dict({"bf16": False}).precision == "fp32"


def test_help_comes_from_the_config_defaults():
    assert setting_help("steps").endswith("(default 10000)") and setting_help("num_classes").endswith("(default none)")
    assert RunConfig().steps == 10000


def test_resume_config_keeps_the_run_and_refuses_another():
    saved = RunConfig(steps=10, out="runs/a").to_dict()
    ckpt = {"kind": "train", "config": saved, "path": "a/last.pt"}
    assert resume_config(ckpt, {"steps": 20}).steps == 20
    with pytest.raises(CheckpointError, match="belongs to another run: batch_size=64 \\(now 8\\)"):
        resume_config(ckpt, {"batch_size": 8})
    with pytest.raises(CheckpointError, match="weights only"):
        resume_config({"kind": "weights", "config": saved}, {})
    with pytest.raises(CheckpointError, match="not a mapping"):
        resume_config({"kind": "train", "config": [1, 2]}, {})


def test_label_dropout_replaces_the_stated_share():
    from ddpm_lib.training import drop_labels

    labels = torch.randint(0, 10, (100_000,), generator=torch.Generator().manual_seed(0))
    out = drop_labels(labels, 0.1, 10, torch.Generator().manual_seed(1))
    dropped = out == 10
    # Binomial(1e5, 0.1): standard deviation 0.00095 of the share; 5 of them is a safe margin.
    assert abs(dropped.double().mean().item() - 0.1) < 0.005
    assert torch.equal(out[~dropped], labels[~dropped])
    assert (drop_labels(labels, 0.0, 10) == labels).all() and (drop_labels(labels, 1.0, 10) == 10).all()
