"""SyncNet method: expert training on a clip store, and evaluation (loading: tests/metrics/test_syncnet_loading.py)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from talkinghead.methods.registry import get_method
from talkinghead.methods.syncnet.data import SyncWindowDataset
from talkinghead.methods.syncnet.evaluate import evaluate_expert, plant_offset
from talkinghead.methods.syncnet.module import SyncNetModule
from talkinghead.metrics.syncnet_expert import load_expert
from talkinghead.nn.syncnet import SyncNetConfig
from talkinghead.training.runner import train

SYNCNET = get_method("syncnet")

TINY_MODEL = {"audio_channels": [8, 16, 16, 16, 16, 32], "lip_channels": [8, 16, 16, 16, 16, 32], "fc_hidden": 32,
              "embedding": 16, "image_size": [64, 96], "crop": [0.375, 0.8125, 0.1875, 0.8125]}


# ---------------------------------------------------------------------------------------------
# training an expert
# ---------------------------------------------------------------------------------------------
def train_tiny(store: Path, out: Path, steps: int) -> Path:
    """The tiny config (experiments/syncnet/tiny.yaml) for `steps` batches; returns the expert file."""
    train(SYNCNET, "tiny", [f"store={store}", f"out={out}", f"expert.max_steps={steps}", "data.windows_per_clip=2",
                            "data.max_shift=6"])
    return out / "syncnet_expert.pt"


def test_configs_load():
    synth = SYNCNET.load_config()
    assert synth.name == "tiny" and not SyncNetConfig.from_dict(dict(synth.model)).is_official
    vox2 = SYNCNET.load_config("vox2")
    assert SyncNetConfig.from_dict(dict(vox2.model)).is_official
    with pytest.raises(FileNotFoundError):
        SYNCNET.load_config("/nonexistent.yaml")


def test_dataset_windows_follow_the_scoring_convention(synth_vox2_store):
    config = SyncNetConfig.from_dict(TINY_MODEL)
    data = SyncWindowDataset(synth_vox2_store, config, windows_per_clip=3, min_shift=2, max_shift=8, length=5)
    item = data[0]
    assert item["lip"].shape == (3, 3, 5, 64, 96) and item["audio"].shape == (3, 1, 13, 20)
    starts = item["start"]
    assert bool((starts.diff() >= 2).all()) and int(starts[-1] - starts[0]) <= 8
    assert torch.equal(data[0]["start"], starts)  # deterministic
    assert len(data.clips) == 3 and data.windows == [35, 35, 35]  # 40 frames -> 35 windows


def test_loss_is_finite_and_decreases(synth_vox2_store):
    torch.manual_seed(0)
    module = SyncNetModule(model=TINY_MODEL, margin=5.0, lr=3e-3)
    data = SyncWindowDataset(synth_vox2_store, module.net.config, windows_per_clip=3, max_shift=8, length=3)
    batch = torch.utils.data.default_collate([data[i] for i in range(3)])
    optimizer = module.configure_optimizers()
    losses = []
    for _ in range(12):
        out = module.losses(batch)
        assert torch.isfinite(out["loss"])
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    assert {"d_pos", "d_shift", "d_other", "acc_shift"} <= set(out)
    assert min(losses[-3:]) < losses[0]


def test_official_size_training_step_runs_on_cpu():
    module = SyncNetModule(model={}, margin=20.0)
    batch = {"lip": torch.rand(2, 2, 3, 5, 224, 224) * 255, "audio": torch.randn(2, 2, 1, 13, 20),
             "start": torch.tensor([[0, 3], [1, 4]]), "clip": torch.tensor([0, 1])}
    out = module.losses(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and module.net.netcnnlip[0].weight.grad is not None


def test_train_writes_an_expert_that_load_expert_reads(synth_vox2_store, tmp_path):
    path = train_tiny(synth_vox2_store, tmp_path / "run", steps=3)
    assert path == tmp_path / "run" / "syncnet_expert.pt"
    net, name = load_expert(path)
    assert name == f"SyncNet expert (tiny-test, trained on {Path(synth_vox2_store).name}, step 3)"
    assert net.config == SyncNetConfig.from_dict(dict(SYNCNET.load_config("tiny").model)) and not net.training
    rows = list(csv.DictReader(open(next((tmp_path / "run" / "expert" / "logs").rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    ckpt_net, ckpt_name = load_expert(tmp_path / "run" / "expert" / "checkpoints" / "last.ckpt")
    assert "step 3" in ckpt_name
    for key, value in net.state_dict().items():
        torch.testing.assert_close(ckpt_net.state_dict()[key], value)
    result = evaluate_expert(net, synth_vox2_store, split="train", offsets=(-1, 0, 1), limit=2)
    assert result["clips"] == 2 and len(result["planted"]) == 6
    assert 0.0 <= result["offset_within_tolerance"] <= 1.0 and math.isfinite(result["lse_c_real"])


def test_default_out_is_where_lse_looks(synth_vox2_store, tmp_path):
    from talkinghead.metrics.syncnet_expert import default_expert_path

    cfg = SYNCNET.load_config("tiny", [f"store={tmp_path / 'store'}", "out=null"])
    assert SYNCNET.out_dir(cfg) / "syncnet_expert.pt" == default_expert_path(tmp_path / "store")


def test_train_needs_a_clip_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a clip store"):
        train_tiny(tmp_path, tmp_path / "run", steps=1)


def test_plant_offset():
    frames, audio = torch.zeros(10, 3, 8, 8), torch.zeros(6400)
    f, a = plant_offset(frames, audio, 2)
    assert len(f) == 10 and len(a) == 6400 - 1280
    f, a = plant_offset(frames, audio, -3)
    assert len(f) == 7 and len(a) == 6400
