"""The shared training machinery (`talkinghead.training`): the staged module's guard, freezing, lr
multipliers and EMA on a toy two-stage module; the runner's time budget (a time-stopped stage is
not finished: the same command continues it) and ``--stage``, on the SyncNet and PC-AVS tiny configs."""
from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from talkinghead.methods.registry import get_method
from talkinghead.training.module import StagedModule
from talkinghead.training.runner import final_checkpoint, stage_plan, train


class Toy(StagedModule):
    """Stage ``first`` trains ``a``; stage ``second`` trains ``a`` and ``b``. A batch whose ``x`` is
    NaN gives a NaN loss."""

    STAGES = ("first", "second")
    STAGE_OUTPUTS = {"first": ("a",), "second": ("a", "b")}
    EMA_OF = "b"

    def __init__(self, stage: str, **kwargs):
        super().__init__(stage, **kwargs)
        self.a = torch.nn.Linear(3, 3)
        self.b = torch.nn.Linear(3, 1)
        self.setup_ema()
        self.freeze_for_stage()

    def stage_parameters(self, stage: str) -> dict:
        groups = {"a": list(self.a.parameters())}
        if stage == "second":
            groups["b"] = list(self.b.parameters())
        return {"main": groups}

    def optimizer_settings(self, name: str) -> dict:
        return {"lr": 0.1, "betas": (0.9, 0.999)}

    def training_step(self, batch, batch_idx):
        loss = (self.b(self.a(batch["x"])) - 1.0).pow(2).mean()
        self.guarded_step(self.optimizers(), loss, "toy")


def batches(n: int, nan_at: tuple[int, ...] = ()) -> DataLoader:
    torch.manual_seed(0)
    items = [{"x": torch.full((4, 3), float("nan")) if i in nan_at else torch.randn(4, 3)} for i in range(n)]
    return DataLoader(items, batch_size=None)


def fit(module: Toy, loader: DataLoader) -> Trainer:
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def test_non_finite_steps_are_skipped_counted_and_stop_after_n_in_a_row():
    module = Toy("first", max_nonfinite_in_a_row=3)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = fit(module, batches(6, nan_at=(1, 3, 4)))
    assert module.skipped == 3 and trainer.global_step == 3
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert not torch.equal(before["a.weight"], module.a.weight)
    module = Toy("first", max_nonfinite_in_a_row=3)
    with pytest.raises(FloatingPointError, match="3 non-finite steps in a row"):
        fit(module, batches(6, nan_at=(2, 3, 4)))
    with torch.no_grad():
        module.a.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite weights"):
        module.on_save_checkpoint({"state_dict": module.state_dict()})


class TwoOptimisers(Toy):
    """Stage ``second`` with ``a`` and ``b`` under separate optimisers: ``b``'s loss is NaN on every
    batch, ``a``'s always finite (a generator that never steps beside a discriminator that does)."""

    def stage_parameters(self, stage: str) -> dict:
        return {"first_opt": {"a": list(self.a.parameters())}, "second_opt": {"b": list(self.b.parameters())}}

    def training_step(self, batch, batch_idx):
        good, bad = self.optimizer_list()
        self.guarded_step(good, self.a(batch["x"]).pow(2).mean(), "a")
        self.guarded_step(bad, self.b(batch["x"]).mean() * float("nan"), "b")


def test_skips_are_counted_in_a_row_per_optimiser():
    with pytest.raises(FloatingPointError, match="3 non-finite steps in a row .last: b loss"):
        fit(TwoOptimisers("second", max_nonfinite_in_a_row=3), batches(6))


def test_freezing_lr_mult_and_ema():
    first = Toy("first")
    assert all(p.requires_grad for p in first.a.parameters())
    assert not any(p.requires_grad for p in first.b.parameters())  # not trained in this stage
    second = Toy("second", lr_mult={"a": 0.5}, ema=0.9)
    groups = {g["name"]: g["lr"] for g in second.configure_optimizers().param_groups}
    assert groups == {"a": pytest.approx(0.05), "b": pytest.approx(0.1)}  # `a` was trained by `first`
    ema_before = second.b_ema.weight.clone()
    fit(second, batches(3))
    assert not torch.equal(second.b_ema.weight, ema_before) and not torch.equal(second.b_ema.weight, second.b.weight)
    assert not second.b_ema.weight.requires_grad
    with pytest.raises(ValueError, match="lr_mult: unknown groups"):
        Toy("second", lr_mult={"c": 0.5}).configure_optimizers()


def test_stage_weights_hand_on(tmp_path):
    first = Toy("first")
    path = tmp_path / "first.ckpt"
    torch.save({"state_dict": first.state_dict(), "hyper_parameters": {"stage": "first"}}, path)
    second = Toy("second")
    loaded = second.load_stage_weights(path)
    assert loaded and torch.equal(second.a.weight, first.a.weight) and not torch.equal(second.b.weight, first.b.weight)


def test_time_budget_leaves_the_stage_unfinished_and_the_same_command_continues(synth_vox2_store, tmp_path):
    syncnet = get_method("syncnet")
    out = tmp_path / "run"
    overrides = [f"store={synth_vox2_store}", f"out={out}", "expert.max_steps=6", "expert.epoch_batches=2",
                 "data.windows_per_clip=2", "data.max_shift=6"]
    budget = ["expert.max_minutes=0.00001"]  # spent after the first epoch
    steps = []
    for _ in range(2):
        last = train(syncnet, "tiny", overrides + budget)
        assert not (out / "expert" / "done.json").exists()
        steps.append(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
    assert steps == [2, 4]  # the second run continued from the first's checkpoint
    train(syncnet, "tiny", overrides)
    done = json.loads((out / "expert" / "done.json").read_text())
    assert done["batches"] == 6 and done["global_step"] == 6
    assert (out / "syncnet_expert.pt").is_file()  # the expert is exported once the stage is finished


def test_stage_option_starts_at_a_later_stage(synth_vox2_store, tmp_path):
    pcavs = get_method("pcavs")
    cfg = pcavs.load_config("tiny")
    assert stage_plan(pcavs, cfg) == ["identity", "sync", "full"]
    assert stage_plan(pcavs, cfg, "sync") == ["sync", "full"]
    with pytest.raises(ValueError, match="not among this run's stages"):
        stage_plan(pcavs, pcavs.load_config("tiny", ["stages=[identity]"]), "full")
    out = tmp_path / "run"
    path = train(pcavs, "tiny", [f"store={synth_vox2_store}", f"out={out}", "full.max_steps=2",
                                 "validation.num_clips=0"], stage="full")
    assert path == final_checkpoint(out, "full") and path.is_file()
    assert not (out / "identity").exists() and not (out / "sync").exists()


def test_wandb_runs_are_grouped_by_method_and_config_and_resume(tmp_path, monkeypatch):
    """W&B (offline without an API key): group <method>-<config name>, job_type = stage, tags, the
    resolved config attached; a second call for the same stage folder continues the same run id;
    WANDB_MODE=disabled leaves CSV logs only."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from talkinghead.config import to_dict
    from talkinghead.training.runner import stage_loggers

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    pcavs = get_method("pcavs")
    cfg = pcavs.load_config("tiny", ["store=/data/store/vox2", "logger.wandb=true", "logger.tags=[ablation]"])
    csv_logger, wandb_logger = stage_loggers(pcavs, cfg, "sync", tmp_path / "sync")
    assert isinstance(csv_logger, CSVLogger) and isinstance(wandb_logger, WandbLogger)
    init = wandb_logger._wandb_init
    assert init["group"] == "pcavs-tiny" and init["job_type"] == "sync" and wandb_logger._offline
    assert init["project"] == "talkinghead" and init["name"] == "pcavs-tiny-sync"
    assert init["tags"] == ["pcavs", "vox2", "sync", "ablation"] and init["config"] == to_dict(cfg)
    again = stage_loggers(pcavs, cfg, "sync", tmp_path / "sync")[1]._wandb_init
    assert again["id"] == init["id"] == (tmp_path / "sync" / "wandb_id").read_text() and again["resume"] == "allow"
    assert len(stage_loggers(pcavs, pcavs.load_config("tiny", ["logger.wandb=false"]), "sync", tmp_path / "x")) == 1
    monkeypatch.setenv("WANDB_PROJECT", "elsewhere")
    assert stage_loggers(pcavs, cfg, "sync", tmp_path / "sync")[1]._wandb_init["project"] == "elsewhere"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert len(stage_loggers(pcavs, cfg, "sync", tmp_path / "sync")) == 1
