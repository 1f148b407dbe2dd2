"""Trainer, EMA, run config and checkpoints."""

import csv
import pickle

import pytest
import torch

from ddpm_lib import EMA, RunConfig, Trainer, UNet, load_checkpoint, model_from_checkpoint
from ddpm_lib.checkpoint import CheckpointError, atomic_save, export_weights


def tiny_config(tmp_path, **kw):
    values = dict(steps=6, batch_size=4, out=str(tmp_path / "run"), checkpoint_every=3, log_every=2,
                  progress=False, warmup_steps=2, device="cpu")
    values.update(kw)
    return RunConfig(**values)


@pytest.fixture(scope="module")
def digits():
    from ddpm_lib import load_dataset

    return load_dataset("mnist-sample")[:64]


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


def test_learning_rate_warms_up_holds_then_decays(tmp_path, digits):
    config = tiny_config(tmp_path, steps=10, warmup_steps=2, lr_decay_steps=4, lr=1e-3, log_every=1)
    rows = Trainer(config, data=digits).train()
    lrs = [r["lr"] for r in rows]                                          # the rate each step used
    expected = [0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]                    # warm-up 2, stable, last 4 down to 1/4
    assert lrs == pytest.approx([1e-3 * f for f in expected])
    with pytest.raises(ValueError, match="lr-decay-steps must be an integer from 0 to steps"):
        RunConfig(steps=10, lr_decay_steps=11).validate()


def test_a_decay_added_on_resume_gives_the_run_that_had_it_from_the_start(tmp_path, digits):
    """Warm-up/stable/decay: the stable phase does not depend on the decay, so it can be chosen later."""
    planned = Trainer(tiny_config(tmp_path, out=str(tmp_path / "planned"), lr_decay_steps=3), data=digits).train()
    first = Trainer(tiny_config(tmp_path, out=str(tmp_path / "later"), steps=3), data=digits)
    first.train()
    later = Trainer(tiny_config(tmp_path, out=str(tmp_path / "later"), lr_decay_steps=3), data=digits)
    later.load_state(load_checkpoint(tmp_path / "later" / "last.pt"))
    rest = later.train()
    assert [r["loss"] for r in planned[3:]] == [r["loss"] for r in rest]
    assert [r["lr"] for r in planned[3:]] == [r["lr"] for r in rest]


def test_checkpoint_round_trip_is_bit_exact(tmp_path, digits):
    trainer = Trainer(tiny_config(tmp_path), data=digits)
    trainer.train()
    path = tmp_path / "run" / "last.pt"
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 6 and ckpt["kind"] == "train"
    again = Trainer(tiny_config(tmp_path, out=str(tmp_path / "other")), data=digits)
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


def test_resumed_run_continues_with_identical_losses(tmp_path, digits):
    full = Trainer(tiny_config(tmp_path, out=str(tmp_path / "full")), data=digits).train()
    first = Trainer(tiny_config(tmp_path, out=str(tmp_path / "part"), steps=3), data=digits)
    first.train()
    resumed = Trainer(tiny_config(tmp_path, out=str(tmp_path / "part")), data=digits)
    resumed.load_state(load_checkpoint(tmp_path / "part" / "last.pt"))
    rest = resumed.train()
    assert [r["loss"] for r in full[3:]] == [r["loss"] for r in rest]
    with open(tmp_path / "part" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def test_weights_file_and_bad_files(tmp_path, digits):
    trainer = Trainer(tiny_config(tmp_path), data=digits)
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


def test_trainer_rejects_bad_data(tmp_path):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        Trainer(tiny_config(tmp_path), data=torch.rand(8, 1, 32, 32) * 255)
    with pytest.raises(ValueError, match="images"):
        Trainer(tiny_config(tmp_path), data=torch.zeros(8, 32, 32))
    with pytest.raises(ValueError, match="channel"):
        Trainer(tiny_config(tmp_path), data=torch.zeros(8, 3, 32, 32), model=UNet(1))


def test_conditional_run_starts_from_an_unconditional_one_and_resumes_exactly(tmp_path):
    from ddpm_lib import load_dataset

    data, labels = load_dataset("mnist-sample", with_labels=True)
    data, labels = data[:64], labels[:64]
    plain = Trainer(tiny_config(tmp_path, steps=3, out=str(tmp_path / "plain")), data=data)
    plain.train()
    cond_cfg = dict(num_classes=10, label_dropout=0.5, init_from=str(tmp_path / "plain" / "last.pt"))
    fresh = Trainer(tiny_config(tmp_path, steps=6, out=str(tmp_path / "c"), **cond_cfg), data=data, labels=labels)
    start = {k: v for k, v in fresh.model.state_dict().items() if not k.startswith("label_embed")}
    assert all(torch.equal(v, plain.ema.module.state_dict()[k]) for k, v in start.items())   # the EMA weights
    assert (fresh.model.label_embed.weight == 0).all()
    losses = [r["loss"] for r in fresh.train()]
    assert fresh.model.label_embed.weight.abs().sum() > 0                 # the labels were learned from
    half = Trainer(tiny_config(tmp_path, steps=3, out=str(tmp_path / "h"), **cond_cfg), data=data, labels=labels)
    half.train()
    rest = Trainer.resume(tmp_path / "h" / "last.pt", {"steps": 6}, data=data, labels=labels)
    assert [r["loss"] for r in rest.train()] == losses[3:]
    with pytest.raises(ValueError, match="needs labels"):
        Trainer(tiny_config(tmp_path, num_classes=10), data=data)
    with pytest.raises(CheckpointError, match="another architecture"):
        Trainer(tiny_config(tmp_path, preset="small", num_classes=10, init_from=str(tmp_path / "plain" / "last.pt")),
                data=data, labels=labels)
