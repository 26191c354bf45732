"""The shared key-map machinery (`talkinghead.nn.official.KeyMap`) on a toy two-file model, and the
shared official shape tables against our blocks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from talkinghead.nn.fan import FAN
from talkinghead.nn.official import (
    KeyMap,
    fan_use_shapes,
    read_official_files,
    resnetse34_shapes,
    resnext50_shapes,
)
from talkinghead.nn.resnet import ResNet
from talkinghead.nn.resnetse import ResNetSE


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, 2)  # training only: no official tensor fills it
        self.dec = nn.Linear(4, 3)


TOY = KeyMap("Toy", {"enc": "enc.pth", "dec": "dec.pth"},
             {"enc": (("net.", "enc."),), "dec": (("", "dec."),)},
             skip={"enc": ("net.9.", "cls.")}, unfilled=("head.",))


def _shapes(module: nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_map_key_skip_and_rules():
    assert TOY.map_key("enc", "net.0.weight") == "enc.0.weight"
    assert TOY.map_key("enc", "net.9.weight") is None and TOY.skipped("enc", "net.9.weight")
    assert TOY.map_key("enc", "other.weight") is None and not TOY.skipped("enc", "other.weight")
    mapped, skipped = TOY.map_state_dict("enc", {"module.net.0.bias": torch.zeros(4), "cls.weight": torch.zeros(1)})
    assert list(mapped) == ["enc.0.bias"] and skipped == ["cls.weight"]
    with pytest.raises(ValueError, match="enc.pth: keys outside the Toy key map"):
        TOY.map_state_dict("enc", {"other.weight": torch.zeros(1)})


def test_check_and_load_into(tmp_path):
    torch.manual_seed(0)
    source, target = Toy(), Toy()
    official = {"enc": {f"net.{k}": v for k, v in source.enc.state_dict().items()},
                "dec": dict(source.dec.state_dict())}
    official["enc"]["cls.weight"] = torch.zeros(5)  # skipped by name
    report = TOY.check(target, {c: {k: tuple(v.shape) for k, v in s.items()} for c, s in official.items()})
    assert report == {"unmapped": [], "missing": [], "mismatched": [], "uncovered": [], "skipped": ["enc:cls.weight"]}
    head = target.head.weight.detach().clone()
    del official["enc"]["net.1.num_batches_tracked"]  # old-PyTorch files: tolerated
    for component, name in TOY.files.items():
        torch.save(official[component], tmp_path / name)
    states = read_official_files(TOY, tmp_path, TOY.files, {}, "the toy release")
    assert TOY.load_into(target, states) == {"enc": ["cls.weight"], "dec": []}
    assert torch.equal(target.enc[0].weight, source.enc[0].weight) and torch.equal(target.dec.bias, source.dec.bias)
    assert torch.equal(target.head.weight, head)  # unfilled: kept
    bad = dict(official["dec"], weight=torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"dec.pth does not fit this Toy config \(hint\)"):
        TOY.load_into(target, {"dec": bad}, hint=" (hint)")
    with pytest.raises(ValueError, match="enc.pth lacks 1 tensors"):
        TOY.load_into(target, {"enc": {k: v for k, v in official["enc"].items() if k != "net.1.running_var"}})
    (tmp_path / "dec.pth").unlink()
    with pytest.raises(FileNotFoundError, match=r"dec.pth: missing \(the toy release has enc.pth, dec.pth\)"):
        read_official_files(TOY, tmp_path, ("dec",), {}, "the toy release")


def test_shape_tables_match_our_blocks():
    assert {f"model.{k}": v for k, v in _shapes(ResNet()).items()} == resnext50_shapes("model")
    assert {f"model.{k}": v for k, v in _shapes(FAN()).items()} == fan_use_shapes("model")
    assert {f"model.{k}": v for k, v in _shapes(ResNetSE()).items()} == resnetse34_shapes("model")
    branch = resnetse34_shapes("model", layer4="layer4_exp", attention="attention_exp", fc="fc_exp", stem=False)
    main = resnetse34_shapes("model")
    renamed = {"model.layer4.": "model.layer4_exp.", "model.attention.": "model.attention_exp.",
               "model.fc.": "model.fc_exp."}
    tail = {renamed[p] + k[len(p):]: v for k, v in main.items() for p in renamed if k.startswith(p)}
    assert branch == tail
