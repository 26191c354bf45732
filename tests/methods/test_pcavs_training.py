"""PC-AVS training through the staged runner: every stage runs a few steps on tiny SynthTalk with
finite, decreasing losses; stages hand their weights on; validation scores held-out clips; a
non-finite loss skips the step instead of crashing; the VGG loss is off without its weights.
(Resume and DDP: tests/methods/test_contract.py, for every method.)"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.methods.pcavs.module import PCAVSModule
from talkinghead.nn.losses import mouth_mask
from talkinghead.methods.pcavs.networks import PCAVSConfig
from talkinghead.methods.registry import get_method
from talkinghead.training.runner import final_checkpoint, train

PCAVS = get_method("pcavs")

TINY_MODEL = {"preset": "tiny", "image_size": 32,
              "identity": {"num_identities": None}, "nonidentity": {"num_identities": None},
              "audio": {"num_identities": None}}


def tiny_config(store: Path, out: Path, **stage_steps: int) -> dict:
    """The smallest useful PC-AVS run: 32 px tiny nets, batches of 4, a few steps per stage."""
    stage = {"batch_size": 4, "epoch_batches": 4, "max_minutes": None, "sample_every_n_steps": 0}
    return {
        "name": "test", "seed": 0, "store": str(store), "out": str(out), "stages": ["identity", "sync", "full"],
        "model": TINY_MODEL,
        "data": {"window": 2, "num_references": 1, "num_negatives": 1, "num_shifted": 1, "min_shift": 5,
                 "augment": "pcavs", "num_workers": 0},
        "trainer": {"accelerator": "cpu", "devices": 1, "num_threads": 1, "log_every_n_steps": 1, "progress": False},
        "logger": {"wandb": False},
        "validation": {"num_clips": 1, "num_frames": 8, "metrics": ["ssim"], "video": True},
        "identity": {**stage, "max_steps": stage_steps.get("identity", 12),
                     "data": {"window": 1, "augment": "none", "num_negatives": 0, "num_shifted": 0},
                     "optim": {"lr": 2e-3, "betas": [0.5, 0.999], "ttur": False, "amsgrad": False}},
        "sync": {**stage, "max_steps": stage_steps.get("sync", 12), "data": {"window": 8},
                 "optim": {"lr": 1e-3, "betas": [0.5, 0.999], "ttur": False, "amsgrad": False},
                 "loss": {"temperature": 0.1}},
        "full": {**stage, "max_steps": stage_steps.get("full", 12), "sample_every_n_steps": 4,
                 "optim": {"lr": 1e-3, "betas": [0.5, 0.99], "ttur": False, "amsgrad": False, "ema": 0.9,
                           "lr_mult": {"netE": 0.5}},
                 "loss": {"l1": 10.0, "mouth_l1": 10.0, "temperature": 0.1}},
    }


def metric_rows(out: Path, stage: str) -> list[dict]:
    rows = []
    for path in sorted((out / stage / "logs").glob("version_*/metrics.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


def series(rows: list[dict], key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rows if r.get(key) not in (None, "")])


@pytest.fixture(scope="module")
def trained(synth_vox2_store, tmp_path_factory):
    """All three stages, 12 batches each, on the tiny store (shared by the checks below)."""
    out = tmp_path_factory.mktemp("pcavs-run")
    path = train(PCAVS, tiny_config(synth_vox2_store, out))
    return out, path


@pytest.mark.parametrize("stage,key", [("identity", "train/loss_identity"), ("sync", "train/loss_sync"),
                                       ("full", "train/l1_audio")])
def test_stage_losses_finite_and_decreasing(trained, stage, key):
    out, _ = trained
    values = series(metric_rows(out, stage), key)
    assert len(values) >= 10
    assert np.isfinite(values).all()
    assert values[-4:].mean() < values[:4].mean(), f"{stage}: {key} did not decrease: {values}"
    done = json.loads((out / stage / "done.json").read_text())
    assert done["batches"] == 12 and done["max_steps"] == 12


def test_full_stage_logs_every_loss_and_a_sample_grid(trained):
    out, path = trained
    assert path == final_checkpoint(out, "full") and path.is_file()
    rows = metric_rows(out, "full")
    for key in ("train/loss_gan", "train/loss_feat", "train/loss_sync", "train/loss_identity", "train/loss_D",
                "train/loss_l1", "train/loss_mouth_l1"):
        assert np.isfinite(series(rows, key)).all() and len(series(rows, key)), key
    assert "train/loss_vgg" not in rows[0]  # no VGG19 file on the test machine: the loss is off
    grids = list((out / "full" / "logs").glob("version_*/samples/full-step*.png"))
    assert grids
    import cv2

    grid = cv2.imread(str(grids[0]))
    assert grid.shape[1] == 4 * 32  # reference | generated | target | pose source
    assert (out / "full" / "config.yaml").is_file()


def test_validation_scores_held_out_clips_and_writes_a_video(trained):
    """Each stage that can generate (the full stage) scores a test-split clip at its end."""
    out, _ = trained
    ssim = series(metric_rows(out, "full"), "val/SSIM")
    assert len(ssim) == 1 and 0.0 < ssim[0] <= 1.0
    assert "val/SSIM" not in metric_rows(out, "sync")[0]  # E_n and E_c^a alone generate nothing
    videos = list((out / "full" / "logs").glob("version_*/samples/full-step*.mp4"))
    assert len(videos) == 1


def test_checkpoint_has_no_vgg_and_hands_weights_on(trained):
    out, _ = trained
    full = torch.load(final_checkpoint(out, "full"), map_location="cpu", weights_only=True)
    assert not any("vgg" in k for k in full["state_dict"])
    assert any(k.startswith("netD.") for k in full["state_dict"])
    assert any(k.startswith("model_ema.netG.") for k in full["state_dict"])  # the moving average is kept
    from talkinghead.methods.pcavs.generate import load_model

    model, info = load_model(final_checkpoint(out, "full"))
    assert info["weights"] == "model_ema"
    key = "netG.conv1.conv.weight"
    assert torch.equal(model.state_dict()[key], full["state_dict"][f"model_ema.{key}"])
    assert not torch.equal(full["state_dict"][f"model.{key}"], full["state_dict"][f"model_ema.{key}"])
    assert full["hyper_parameters"]["stage"] == "full"
    # the sync stage started from the identity stage's netV and trained netE / netA_sync only
    ident = torch.load(final_checkpoint(out, "identity"), map_location="cpu", weights_only=True)["state_dict"]
    sync = torch.load(final_checkpoint(out, "sync"), map_location="cpu", weights_only=True)["state_dict"]
    key = "model.netV.model.conv1.weight"
    assert torch.equal(ident[key], sync[key])
    assert not torch.equal(ident[key], full["state_dict"][key])  # trained further in the full stage


def test_non_finite_loss_skips_the_step(synth_vox2_store, tmp_path, caplog):
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    from talkinghead.data.datamodule import TalkingHeadDataModule
    from talkinghead.methods.pcavs.augment import PCAVSAugment

    dm = TalkingHeadDataModule(store=str(synth_vox2_store), window=8, image_size=32, augment=PCAVSAugment(),
                               batch_size=2, samples_per_epoch=4, drop_last=True)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    batches[1]["mel"] = torch.full_like(batches[1]["mel"], float("nan"))
    module = PCAVSModule(stage="sync", model=PCAVSConfig.tiny(image_size=32, num_identities=3).to_dict(),
                         loss={"temperature": 0.1}, sample_every_n_steps=0)
    trainer = Trainer(max_steps=10, max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with caplog.at_level(logging.WARNING, logger="talkinghead.training.module"):
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert trainer.global_step == 1  # 2 batches, the NaN one skipped
    assert module.skipped == 1
    assert any("non-finite" in r.getMessage() for r in caplog.records)
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_sharded_store_trains_from_its_litdata_shards(synth_vox2_store, tmp_path):
    """``data.source: shards`` reads ``<store>/shards`` (written by ``preprocess --shards``): the same
    batches as from the clip files."""
    import shutil

    from talkinghead.data.store import write_shards

    store = tmp_path / "store"
    shutil.copytree(synth_vox2_store, store)
    write_shards(store, store / "shards", num_workers=1, start_method="fork")
    digests = {}
    for source in ("store", "shards"):
        cfg = tiny_config(store, tmp_path / source, full=2)
        cfg["stages"] = ["full"]
        cfg["validation"]["num_clips"] = 0
        cfg["data"]["source"] = source
        train(PCAVS, cfg, record=True)
        digests[source] = json.loads((tmp_path / source / "full" / "record" / "rank0.json").read_text())
    assert digests["shards"]["batches"] == digests["store"]["batches"]
    shutil.rmtree(store / "shards")
    with pytest.raises(FileNotFoundError):
        train(PCAVS, {**tiny_config(store, tmp_path / "gone", full=1), "stages": ["full"],
                      "data": {**tiny_config(store, tmp_path)["data"], "source": "shards"}})


def test_validation_leaves_the_live_model_training(synth_vox2_store, tmp_path, monkeypatch):
    """Without EMA (the paper configs) validation generates from the live model: it must train in
    train mode all the same, before and after a validation run."""
    modes = []
    full_step = PCAVSModule._full_step

    def spy(self, batch):
        modes.append(all(m.training for m in self.model.modules()))
        return full_step(self, batch)

    monkeypatch.setattr(PCAVSModule, "_full_step", spy)
    cfg = tiny_config(synth_vox2_store, tmp_path, full=4)
    cfg["stages"] = ["full"]
    cfg["full"]["optim"]["ema"] = 0.0
    cfg["full"]["epoch_batches"] = 2
    cfg["validation"].update(num_clips=1, every_n_steps=2)
    train(PCAVS, cfg)
    assert modes == [True] * 4
    assert len(series(metric_rows(tmp_path, "full"), "val/SSIM")) == 2  # after batches 2 and 4


def test_mouth_mask_box():
    lm = torch.zeros(1, 68, 2)
    lm[0, 48:68] = torch.tensor([[10.0, 20.0], [20.0, 24.0]]).repeat(10, 1)
    mask = mouth_mask(lm, 32, margin=0.1)
    assert mask.shape == (1, 1, 32, 32)
    assert mask[0, 0, 22, 15] == 1 and mask[0, 0, 5, 5] == 0 and mask[0, 0, 22, 25] == 0


def test_lr_mult_applies_to_the_earlier_stages_parts_only():
    """optim.lr_mult scales the lr of what an earlier stage trained (E_n's trunk and to_mouth); the
    heads the full stage adds (E_n's pose and mouth-embedding heads, E_i's conv1x1) keep the base lr."""
    model = PCAVSConfig.tiny(image_size=32, num_identities=4).to_dict()
    module = PCAVSModule("full", model=model, optim={"lr": 1e-3, "ttur": False, "lr_mult": {"netE": 0.25}})
    opt_g, _ = module.configure_optimizers()
    lr_of = {id(p): group["lr"] for group in opt_g.param_groups for p in group["params"]}
    net_e = module.model.netE
    for head in (net_e.to_headpose, net_e.headpose_embed, net_e.mouth_embed, module.model.netV.conv1x1):
        assert all(lr_of[id(p)] == pytest.approx(1e-3) for p in head.parameters())
    for part in (net_e.model, net_e.to_mouth):
        assert all(lr_of[id(p)] == pytest.approx(2.5e-4) for p in part.parameters())
    assert all(lr_of[id(p)] == pytest.approx(1e-3) for p in module.model.netA_sync.parameters() if id(p) in lr_of)
    trained = [p for p in module.model.parameters() if p.requires_grad]
    assert len(lr_of) == len(trained)  # every trained generator-side parameter is in exactly one group
