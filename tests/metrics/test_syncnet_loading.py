"""SyncNet loading for LSE (`talkinghead.metrics.syncnet_expert`): the official checkpoint import and
our expert files (writing one by training: tests/methods/test_syncnet_expert.py)."""
from __future__ import annotations

import pytest
import torch

from talkinghead.metrics.syncnet_expert import (
    OFFICIAL_KEY_MAP,
    check_key_map,
    convert_official,
    default_expert_path,
    load_expert,
    load_official,
    official_shapes,
    save_expert,
)
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
# expert files
# ---------------------------------------------------------------------------------------------
def test_default_expert_path_and_load_errors(tmp_path):
    assert default_expert_path(tmp_path / "store") == tmp_path / "store" / "experts" / "syncnet" / "syncnet_expert.pt"
    with pytest.raises(FileNotFoundError, match="train one with `make train METHOD=syncnet`"):
        load_expert(tmp_path / "missing.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a SyncNet expert"):
        load_expert(tmp_path / "other.pt")


def test_save_expert_round_trip_and_lightning_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = SyncNet(SyncNetConfig.from_dict(TINY_MODEL)).eval()
    path = save_expert(tmp_path / "expert.pt", net, "tiny", 5, tmp_path / "my-store")
    loaded, name = load_expert(path)
    assert name == "SyncNet expert (tiny, trained on my-store, step 5)" and not loaded.training
    assert loaded.config == net.config
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    # a Lightning checkpoint of the training module: weights under "net.", the config as hyper-parameter
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "global_step": 9,
                "hyper_parameters": {"model": dict(TINY_MODEL), "name": "tiny"}}, tmp_path / "last.ckpt")
    loaded, name = load_expert(tmp_path / "last.ckpt")
    assert name == "SyncNet expert (tiny, trained on an unrecorded store, step 9)"
    torch.testing.assert_close(loaded.state_dict()["netfcaud.3.weight"], net.state_dict()["netfcaud.3.weight"])
