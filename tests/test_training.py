"""Trainer, EMA, run config and checkpoints."""

import csv
import pickle

import pytest
import torch

from ddpm_lib import EMA, RunConfig, Trainer, UNet, load_checkpoint, model_from_checkpoint
from ddpm_lib.checkpoint import CheckpointError, atomic_save, export_weights


def test_ema_warmup_and_average():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)                       # (1 + 0) / (10 + 0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.num_updates == 1 and ema.current_decay() == pytest.approx(2 / 11)
    for _ in range(5000):
        ema.update(model)
    assert torch.allclose(ema.module.weight, torch.ones(2, 2), atol=1e-6)  # converges to a constant
    assert ema.current_decay() == pytest.approx(5002 / 5011)               # still warming up
    ema.num_updates = 20000
    assert ema.current_decay() == 0.999                                    # then the configured decay


def test_ema_copies_buffers_and_never_touches_the_model():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.register_buffer("alphas_cumprod", torch.linspace(1, 0.1, 5))
    ema = EMA(model, decay=0.9)
    before = [p.clone() for p in model.parameters()]
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model.alphas_cumprod.mul_(0.5)
    ema.update(model)
    assert torch.equal(ema.module.alphas_cumprod, model.alphas_cumprod)    # copied, not averaged
    assert not torch.equal(model[0].weight, before[0])                     # the model keeps its own weights
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_run_config_yaml_and_validation(tmp_path):
    path = tmp_path / "run.yml"
    path.write_text("batch_size: 32\nlr: 1.0e-3\nschedule: cosine\n")
    cfg = RunConfig.from_yaml(path)
    assert (cfg.batch_size, cfg.lr, cfg.schedule) == (32, 1e-3, "cosine")
    path.write_text("batchsize: 32\n")
    with pytest.raises(ValueError, match="unknown setting.*batchsize"):
        RunConfig.from_yaml(path)
    with pytest.raises(ValueError, match="batch-size"):
        RunConfig(batch_size=0).validate()
    with pytest.raises(ValueError, match="dataset"):
        RunConfig(dataset="imagenet").validate()


def test_learning_rate_warms_up_holds_then_decays(run_config, digits):
    config = run_config(steps=10, warmup_steps=2, lr_decay_steps=4, lr=1e-3, log_every=1)
    rows = Trainer(config, data=digits).train()
    lrs = [r["lr"] for r in rows]                                          # the rate each step used
    expected = [0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]                    # warm-up 2, stable, last 4 down to 1/4
    assert lrs == pytest.approx([1e-3 * f for f in expected])
    with pytest.raises(ValueError, match="lr-decay-steps must be an integer from 0 to steps"):
        RunConfig(steps=10, lr_decay_steps=11).validate()


def test_a_decay_added_on_resume_gives_the_run_that_had_it_from_the_start(tmp_path, digits, run_config):
    """Warm-up/stable/decay: the stable phase does not depend on the decay, so it can be chosen later."""
    planned = Trainer(run_config("planned", lr_decay_steps=3), data=digits).train()
    first = Trainer(run_config("later", steps=3), data=digits)
    first.train()
    later = Trainer(run_config("later", lr_decay_steps=3), data=digits)
    later.load_state(load_checkpoint(tmp_path / "later" / "last.pt"))
    rest = later.train()
    assert [r["loss"] for r in planned[3:]] == [r["loss"] for r in rest]
    assert [r["lr"] for r in planned[3:]] == [r["lr"] for r in rest]


def test_checkpoint_round_trip_is_bit_exact(tmp_path, digits, run_config):
    trainer = Trainer(run_config(), data=digits)
    trainer.train()
    path = tmp_path / "run" / "last.pt"
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 6 and ckpt["kind"] == "train"
    again = Trainer(run_config("other"), data=digits)
    again.load_state(ckpt)
    for (name, a), b in zip(trainer.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(trainer.ema.module.parameters(), again.ema.module.parameters()):
        assert torch.equal(a, b)
    exp_avg = [tr.optimizer.state_dict()["state"][0]["exp_avg"] for tr in (again, trainer)]
    assert exp_avg[0].equal(exp_avg[1])
    assert again.scheduler.state_dict() == trainer.scheduler.state_dict()
    with pytest.warns(UserWarning, match="only 6 updates"):
        model, schedule = model_from_checkpoint(ckpt)
    for a, b in zip(model.parameters(), trainer.ema.module.parameters()):
        assert torch.equal(a, b)
    assert schedule.same_as(trainer.schedule)


def test_resumed_run_continues_with_identical_losses(tmp_path, digits, run_config):
    full = Trainer(run_config("full"), data=digits).train()
    first = Trainer(run_config("part", steps=3), data=digits)
    first.train()
    resumed = Trainer(run_config("part"), data=digits)
    resumed.load_state(load_checkpoint(tmp_path / "part" / "last.pt"))
    rest = resumed.train()
    assert [r["loss"] for r in full[3:]] == [r["loss"] for r in rest]
    with open(tmp_path / "part" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def test_weights_file_and_bad_files(tmp_path, digits, run_config):
    trainer = Trainer(run_config(), data=digits)
    trainer.train()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    slim = export_weights(ckpt, tmp_path / "weights.pt")
    with pytest.warns(UserWarning, match="EMA weights average only"):
        model, _ = model_from_checkpoint(load_checkpoint(slim))
    assert sum(p.numel() for p in model.parameters()) == trainer.model.num_parameters()
    raw, _ = model_from_checkpoint(load_checkpoint(slim), weights="model")  # float16 copy of the raw weights
    for p_raw, p_trained in zip(raw.parameters(), trainer.model.parameters()):
        assert p_raw.dtype == torch.float32
        assert torch.allclose(p_raw, p_trained.detach(), rtol=1e-3, atol=1e-4)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt is not a ddpm_lib checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt is not a ddpm_lib checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"1 channel\(s\), not 3"):
        model_from_checkpoint(ckpt, in_channels=3)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"good": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise pickle.PicklingError("boom")

    with pytest.raises(pickle.PicklingError):
        atomic_save({"bad": Unpicklable()}, path)
    assert torch.load(path) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]             # no temp file left behind


def test_trainer_rejects_bad_data(run_config):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        Trainer(run_config(), data=torch.rand(8, 1, 32, 32) * 255)
    with pytest.raises(ValueError, match="images"):
        Trainer(run_config(), data=torch.zeros(8, 32, 32))
    with pytest.raises(ValueError, match="channel"):
        Trainer(run_config(), data=torch.zeros(8, 3, 32, 32), model=UNet(1))


def test_conditional_run_starts_from_an_unconditional_one_and_resumes_exactly(tmp_path, run_config):
    from ddpm_lib import load_dataset

    data, labels = load_dataset("mnist-sample", with_labels=True)
    data, labels = data[:64], labels[:64]
    plain = Trainer(run_config(steps=3, out=str(tmp_path / "plain")), data=data)
    plain.train()
    cond_cfg = dict(num_classes=10, label_dropout=0.5, init_from=str(tmp_path / "plain" / "last.pt"))
    fresh = Trainer(run_config(steps=6, out=str(tmp_path / "c"), **cond_cfg), data=data, labels=labels)
    start = {k: v for k, v in fresh.model.state_dict().items() if not k.startswith("label_embed")}
    assert all(torch.equal(v, plain.ema.module.state_dict()[k]) for k, v in start.items())   # the EMA weights
    assert (fresh.model.label_embed.weight == 0).all()
    losses = [r["loss"] for r in fresh.train()]
    assert fresh.model.label_embed.weight.abs().sum() > 0                 # the labels were learned from
    half = Trainer(run_config(steps=3, out=str(tmp_path / "h"), **cond_cfg), data=data, labels=labels)
    half.train()
    rest = Trainer.resume(tmp_path / "h" / "last.pt", {"steps": 6}, data=data, labels=labels)
    assert [r["loss"] for r in rest.train()] == losses[3:]
    with pytest.raises(ValueError, match="needs labels"):
        Trainer(run_config(num_classes=10), data=data)
    with pytest.raises(CheckpointError, match="another architecture"):
        Trainer(run_config(preset="small", num_classes=10, init_from=str(tmp_path / "plain" / "last.pt")),
                data=data, labels=labels)


def flip_bytes(path, count=400):
    """Invert ``count`` bytes in the middle of the largest entry (a tensor) of the zip file ``path``."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda e: e.file_size)
    with open(path, "r+b") as f:
        f.seek(entry.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        f.seek(entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2)
        data = f.read(count)
        f.seek(-len(data), 1)
        f.write(bytes(b ^ 0xFF for b in data))


def test_atomic_save_names_a_full_disk_and_keeps_the_old_file(tmp_path, monkeypatch):
    """Issue 19: a full disk gave 'RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos'."""
    import errno

    from ddpm_lib import checkpoint as ckpt_io

    path = tmp_path / "last.pt"
    atomic_save({"good": 1}, path)

    def full_disk(obj, f):                                                 # what torch.save does on ENOSPC
        f.write(b"PK\x03\x04 the first bytes")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(ckpt_io.torch, "save", full_disk)
    with pytest.raises(OSError) as caught:
        atomic_save({"new": 2}, path)
    assert str(caught.value) == f"no space left on device writing {path}; the previous checkpoint is intact"
    monkeypatch.undo()
    assert torch.load(path) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_damaged_last_checkpoint_is_refused_and_resuming_falls_back_to_prev(tmp_path, digits, run_config):
    """Issue 19: 400 flipped bytes in last.pt loaded silently and a resume saved them again."""
    rows = Trainer(run_config(), data=digits).train()             # checkpoints at steps 3 and 6
    last, prev = tmp_path / "run" / "last.pt", tmp_path / "run" / "prev.pt"
    assert load_checkpoint(last)["step"] == 6 and load_checkpoint(prev)["step"] == 3
    flip_bytes(last)
    with pytest.raises(CheckpointError, match=f"{last} is corrupt .*CRC.*; {prev} holds the checkpoint before it"):
        load_checkpoint(last)
    with pytest.warns(UserWarning, match=f"{last} is corrupt .*; resuming from {prev} \\(step 3\\) instead"):
        resumed = Trainer.resume(last, {"steps": 6}, data=digits)
    assert resumed.step == 3
    assert [r["loss"] for r in resumed.train()] == [r["loss"] for r in rows[3:]]   # the same run, exactly
    assert load_checkpoint(last)["step"] == 6 and load_checkpoint(prev)["step"] == 3   # the damaged file is gone
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size // 2)
    with pytest.raises(CheckpointError, match="is truncated"):
        load_checkpoint(last)


@pytest.mark.parametrize("damage, note", [
    (lambda text: "", r"step\(s\) 1-3 are missing"),                        # a full disk left it empty
    (lambda text: text.split("\n", 1)[1], "restored its header"),           # rows without a header
    (lambda text: text[:text.index("\n3,") + 6], r"dropped 1 unreadable row\(s\); step\(s\) 3 are missing"),
], ids=["empty", "no-header", "cut-row"])
def test_a_damaged_log_is_repaired_on_resume_with_a_line_saying_so(tmp_path, digits, damage, note, run_config):
    """Issue 19: an empty or header-less log.csv made resume die with KeyError: 'step'; a cut row vanished silently."""
    Trainer(run_config(steps=3), data=digits).train()
    log = tmp_path / "run" / "log.csv"
    log.write_text(damage(log.read_text()))
    with pytest.warns(UserWarning, match=f"{log} was damaged: .*{note}"):
        resumed = Trainer.resume(tmp_path / "run" / "last.pt", {"steps": 6}, data=digits)
    resumed.train()
    with open(log) as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(set(steps)) and steps[-3:] == [4, 5, 6]


def test_the_log_is_never_written_through_a_link(tmp_path, digits, run_config):
    """Issue 19: a symlinked log.csv was appended through."""
    (tmp_path / "run").mkdir()
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("precious\n")
    (tmp_path / "run" / "log.csv").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="log.csv is a symbolic link"):
        Trainer(run_config(), data=digits).train()
    assert elsewhere.read_text() == "precious\n"


@pytest.mark.parametrize("signame, at_step, every, message, saved_step", [
    ("SIGINT", 3, 100, "\\(SIGINT\\) at step 3, before the first checkpoint: no checkpoint was saved", None),
    ("SIGTERM", 12, 100, "interrupted \\(SIGTERM\\) at step 12; saved .*last.pt there$", 12),
    ("SIGINT", 7, 5, "at step 7; the last checkpoint, .*last.pt \\(step 5\\), is intact$", 5),
], ids=["sigint-before-any-checkpoint", "sigterm-saves", "sigint-recent-checkpoint-kept"])
def test_a_signal_stops_training_between_steps_and_says_what_was_saved(tmp_path, digits, signame, at_step, every,
                                                                      message, saved_step, run_config):
    """Issue 19: SIGINT before the first checkpoint claimed one existed; SIGTERM killed the run with no message.

    A checkpoint is saved on a signal when the last one is more than Trainer.save_on_stop_after (10) steps old.
    The message names no flag (the command line adds "continue with --resume": test_reliability.py).
    """
    import os
    import signal

    from ddpm_lib import training

    trainer = Trainer(run_config(steps=50, checkpoint_every=every), data=digits)
    signum = getattr(signal, signame)

    def send(module, inputs):
        if trainer.step == at_step - 1 and module.training:               # during step at_step
            os.kill(os.getpid(), signum)

    trainer.model.register_forward_pre_hook(send)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(training.TrainingInterrupted, match=message) as caught:
        trainer.train()
    assert caught.value.signum == signum and trainer.step == at_step
    last = tmp_path / "run" / "last.pt"
    assert caught.value.checkpoint == (last if saved_step is not None else None)   # the CLI names its flag
    assert (load_checkpoint(last)["step"] if last.exists() else None) == saved_step
    with open(tmp_path / "run" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, at_step + 1))
    assert signal.getsignal(signal.SIGINT) is handler                     # the handlers are given back


def test_a_trainer_is_what_run_state_reads_and_writes(run_config, digits):
    """run_state types its functions against the TrainingState protocol (it does not import training.py): a
    Trainer has every attribute the protocol names, of its type."""
    import typing

    from ddpm_lib.run_state import TrainingState

    trainer = Trainer(run_config(), data=digits)
    hints = typing.get_type_hints(TrainingState)
    assert len(hints) >= 13
    wrong = {name: type(getattr(trainer, name, None)).__name__ for name, kind in hints.items()
             if not isinstance(getattr(trainer, name, None), kind)}
    assert not wrong, f"Trainer attributes that are not what run_state.TrainingState says: {wrong}"
