"""SyncNet method: official checkpoint import, expert training on a clip store, load_expert, evaluation."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from talkinghead.methods.syncnet import default_checkpoint, load_config, load_expert, load_official, train
from talkinghead.methods.syncnet.data import SyncWindowDataset
from talkinghead.methods.syncnet.evaluate import evaluate_expert, plant_offset
from talkinghead.methods.syncnet.module import SyncNetModule
from talkinghead.methods.syncnet.official import OFFICIAL_KEY_MAP, check_key_map, convert_official, official_shapes
from talkinghead.nn.syncnet import SyncNet, SyncNetConfig

TINY_MODEL = {"audio_channels": [8, 16, 16, 16, 16, 32], "lip_channels": [8, 16, 16, 16, 16, 32], "fc_hidden": 32,
              "embedding": 16, "image_size": [64, 96], "crop": [0.375, 0.8125, 0.1875, 0.8125]}


def published_table() -> dict[str, tuple[int, ...]]:
    """syncnet_v2.model's tensors from the published description (conv/BN pairs at 0/1, 4/5, 8/9,
    11/12, 14/15, 18/19; fc heads Linear 512-512, BN1d, ReLU, Linear 512-1024)."""
    audio = [(1, 64, (3, 3)), (64, 192, (3, 3)), (192, 384, (3, 3)), (384, 256, (3, 3)), (256, 256, (3, 3)),
             (256, 512, (5, 4))]
    lip = [(3, 96, (5, 7, 7)), (96, 256, (1, 5, 5)), (256, 256, (1, 3, 3)), (256, 256, (1, 3, 3)),
           (256, 256, (1, 3, 3)), (256, 512, (1, 6, 6))]
    table = {}
    for tower, layers in (("netcnnaud", audio), ("netcnnlip", lip)):
        for index, (cin, cout, kernel) in zip((0, 4, 8, 11, 14, 18), layers):
            table[f"{tower}.{index}.weight"] = (cout, cin, *kernel)
            table[f"{tower}.{index}.bias"] = (cout,)
            for name in ("weight", "bias", "running_mean", "running_var"):
                table[f"{tower}.{index + 1}.{name}"] = (cout,)
    for head in ("netfcaud", "netfclip"):
        table[f"{head}.0.weight"], table[f"{head}.0.bias"] = (512, 512), (512,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            table[f"{head}.1.{name}"] = (512,)
        table[f"{head}.3.weight"], table[f"{head}.3.bias"] = (1024, 512), (1024,)
    return table


def official_like_state(seed: int = 0) -> tuple[dict[str, torch.Tensor], SyncNet]:
    """Random tensors in the official naming, without BN counters (as a pre-0.4.1 torch.save)."""
    torch.manual_seed(seed)
    net = SyncNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    return state, net.eval()


# ---------------------------------------------------------------------------------------------
# official checkpoint import
# ---------------------------------------------------------------------------------------------
def test_key_map_covers_every_official_tensor_with_matching_shapes():
    table = published_table()
    assert official_shapes() == table
    ours = {k: tuple(v.shape) for k, v in SyncNet().state_dict().items()}
    for key, shape in table.items():
        assert ours[OFFICIAL_KEY_MAP[key]] == shape, key
    assert set(OFFICIAL_KEY_MAP.values()) == set(ours)
    check_key_map()


def test_official_file_loads_and_reproduces_outputs(tmp_path, monkeypatch):
    state, reference = official_like_state()
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path))
    for net in (load_official(path), load_official()):  # explicit file, then the registered asset
        assert not net.training
        torch.manual_seed(1)
        mfccs, lips = torch.randn(2, 1, 13, 20), torch.rand(2, 3, 5, 224, 224) * 255
        with torch.no_grad():
            torch.testing.assert_close(net.forward_aud(mfccs), reference.forward_aud(mfccs))
            torch.testing.assert_close(net.forward_lip(lips), reference.forward_lip(lips))


def test_convert_official_names_the_problem():
    state, _ = official_like_state()
    missing = dict(state)
    missing.pop("netcnnlip.18.weight")
    with pytest.raises(ValueError, match=r"my\.model: .*missing 1 tensors: netcnnlip\.18\.weight"):
        convert_official(missing, "my.model")
    wrong = dict(state, **{"netfcaud.3.weight": torch.zeros(512, 512)})
    with pytest.raises(ValueError, match=r"wrong shapes: netfcaud\.3\.weight"):
        convert_official(wrong)
    with pytest.raises(ValueError, match="unexpected 1 keys: extra"):
        convert_official(dict(state, extra=torch.zeros(1)))


# ---------------------------------------------------------------------------------------------
# training an expert
# ---------------------------------------------------------------------------------------------
def tiny_config(**trainer) -> dict:
    config = load_config()
    config["model"] = dict(TINY_MODEL)
    config["data"].update(windows_per_clip=2, min_shift=2, max_shift=6, samples_per_epoch=8)
    config["trainer"].update(batch_size=2, log_every_n_steps=1, checkpoint_every_n_steps=0, max_minutes=None,
                             **trainer)
    return config


def test_configs_load():
    synth = load_config()
    assert synth["name"] == "tiny" and not SyncNetConfig.from_dict(synth["model"]).is_official
    vox2 = load_config(Path(__file__).resolve().parents[2] / "experiments" / "syncnet" / "vox2.yaml")
    assert SyncNetConfig.from_dict(vox2["model"]).is_official
    with pytest.raises(FileNotFoundError):
        load_config("/nonexistent.yaml")


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
    path = train(tiny_config(), synth_vox2_store, tmp_path / "run", max_steps=3, progress=False)
    assert path == tmp_path / "run" / "syncnet_expert.pt"
    net, name = load_expert(path)
    assert name == f"SyncNet expert (tiny, trained on {Path(synth_vox2_store).name}, step 3)"
    assert net.config == SyncNetConfig.from_dict(TINY_MODEL) and not net.training
    rows = list(csv.DictReader(open(next((tmp_path / "run" / "logs").rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    ckpt_net, ckpt_name = load_expert(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert "step 3" in ckpt_name
    for key, value in net.state_dict().items():
        torch.testing.assert_close(ckpt_net.state_dict()[key], value)
    result = evaluate_expert(net, synth_vox2_store, split="train", offsets=(-1, 0, 1), limit=2)
    assert result["clips"] == 2 and len(result["planted"]) == 6
    assert 0.0 <= result["offset_within_tolerance"] <= 1.0 and math.isfinite(result["lse_c_real"])


def test_default_checkpoint_and_load_errors(tmp_path):
    assert default_checkpoint(tmp_path / "store") == tmp_path / "store" / "experts" / "syncnet" / "syncnet_expert.pt"
    with pytest.raises(FileNotFoundError, match="no SyncNet expert checkpoint"):
        load_expert(tmp_path / "missing.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a SyncNet expert"):
        load_expert(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="not a clip store"):
        train(tiny_config(), tmp_path, tmp_path / "run", max_steps=1, progress=False)


def test_plant_offset():
    frames, audio = torch.zeros(10, 3, 8, 8), torch.zeros(6400)
    f, a = plant_offset(frames, audio, 2)
    assert len(f) == 10 and len(a) == 6400 - 1280
    f, a = plant_offset(frames, audio, -3)
    assert len(f) == 7 and len(a) == 6400
