"""ResNet / ResNeXt (torchvision names) and the PC-AVS / PD-FGC identity encoder (official netV keys)."""
from __future__ import annotations

import pytest
import torch

from talkinghead import weights
from talkinghead.nn.resnet import (
    IdentityEncoder,
    IdentityEncoderConfig,
    ResNet,
    ResNetConfig,
    load_imagenet,
    resnext50_32x4d,
)


# ---------------------------------------------------------------------------------------------
# Official key tables, written out from torchvision's ResNet (resnet.py: conv1/bn1, layer1..4 of
# Bottleneck conv1..3/bn1..3 + downsample.0 (conv) / downsample.1 (BN) in block 0, fc) and PC-AVS's
# vision_network.py ResNeXt50 (model = torchvision ResNet, conv1x1 Conv2d(2048, 512, 1) with bias,
# fc Linear(2048, num_classes)); not derived from our modules.
# ---------------------------------------------------------------------------------------------


def _bn(prefix: str, c: int, counters: bool) -> dict:
    out = {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,)}
    if counters:
        out[f"{prefix}.num_batches_tracked"] = ()
    return out


def torchvision_resnext_shapes(layers=(3, 4, 6, 3), planes=(64, 128, 256, 512), stem=64, groups=32,
                               width_per_group=4, num_classes=1000, counters=True) -> dict:
    """torchvision ResNeXt/ResNet-50-style (Bottleneck) key -> shape."""
    t = {"conv1.weight": (stem, 3, 7, 7), **_bn("bn1", stem, counters)}
    inplanes = stem
    for s, (n, p) in enumerate(zip(layers, planes), start=1):
        width = int(p * width_per_group / 64) * groups
        out = p * 4
        for b in range(n):
            pre = f"layer{s}.{b}"
            t[f"{pre}.conv1.weight"] = (width, inplanes, 1, 1)
            t.update(_bn(f"{pre}.bn1", width, counters))
            t[f"{pre}.conv2.weight"] = (width, width // groups, 3, 3)
            t.update(_bn(f"{pre}.bn2", width, counters))
            t[f"{pre}.conv3.weight"] = (out, width, 1, 1)
            t.update(_bn(f"{pre}.bn3", out, counters))
            if b == 0:
                t[f"{pre}.downsample.0.weight"] = (out, inplanes, 1, 1)
                t.update(_bn(f"{pre}.downsample.1", out, counters))
            inplanes = out
    t["fc.weight"] = (num_classes, inplanes)
    t["fc.bias"] = (num_classes,)
    return t


def official_netV_shapes(num_classes: int = 5830) -> dict:
    t = {f"model.{k}": v for k, v in torchvision_resnext_shapes().items()}
    t.update({"conv1x1.weight": (512, 2048, 1, 1), "conv1x1.bias": (512,),
              "fc.weight": (num_classes, 2048), "fc.bias": (num_classes,)})
    return t


def _shapes(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


TINY_BACKBONE = ResNetConfig(layers=(1, 1, 1, 1), widths=(8, 16, 16, 32), stem_width=8, groups=2,
                             width_per_group=32, num_classes=7)


# ---------------------------------------------------------------------------------------------
def test_resnext50_keys_equal_torchvision():
    assert _shapes(resnext50_32x4d()) == torchvision_resnext_shapes()
    assert ResNetConfig().is_resnext50_32x4d


def test_netV_state_dict_equals_official_keys():
    enc = IdentityEncoder()
    ours = _shapes(enc)
    assert ours == official_netV_shapes(5830)
    assert {k.split(".")[0] for k in ours} == {"model", "conv1x1", "fc"}
    # ResNeXt50-32x4d's layer4 bottleneck is 1024 wide (512 * 4 / 64 * 32), so conv3 is 1024 -> 2048
    # (a plain ResNet-50 would have (2048, 512, 1, 1) here)
    assert ours["model.layer4.2.conv3.weight"] == (2048, 1024, 1, 1)
    assert ours["model.layer1.0.conv2.weight"] == (128, 4, 3, 3)  # 32 groups of 4 channels
    assert ours["model.fc.weight"] == (1000, 2048)
    assert ours["conv1x1.weight"] == (512, 2048, 1, 1)
    assert ours["fc.weight"] == (5830, 2048)
    # PD-FGC's appearance encoder: the same network, 5995 identities
    assert _shapes(IdentityEncoder(IdentityEncoderConfig.pdfgc())) == official_netV_shapes(5995)


@torch.no_grad()
def test_identity_encoder_paper_size_forward():
    enc = IdentityEncoder().eval()
    out = enc(torch.rand(1, 3, 224, 224) * 2 - 1)
    assert out.feature.shape == (1, 2048)
    assert out.feature_map.shape == (1, 512, 7, 7)
    assert out.logits.shape == (1, 5830)
    assert torch.isfinite(out.feature).all() and torch.isfinite(out.feature_map).all()
    assert torch.allclose(out.logits, enc.fc(out.feature), atol=1e-5)


def test_tiny_identity_encoder_multi_reference_and_backward():
    torch.manual_seed(0)
    cfg = IdentityEncoderConfig(backbone=TINY_BACKBONE, map_channels=16, map_size=3, num_identities=5)
    enc = IdentityEncoder(cfg).eval()
    images = torch.rand(2, 3, 3, 64, 64) * 2 - 1  # B=2, N=3 references
    out = enc(images)
    assert out.feature.shape == (2, 128) and out.feature_map.shape == (2, 16, 3, 3) and out.logits.shape == (2, 5)
    # N references are averaged as in the official code
    single = [enc(images[:, i]) for i in range(3)]
    assert torch.allclose(out.feature, torch.stack([s.feature for s in single]).mean(0), atol=1e-5)
    assert torch.allclose(out.feature_map, torch.stack([s.feature_map for s in single]).mean(0), atol=1e-5)
    enc.train()
    out = enc(images[:, 0])
    (out.logits.sum() + out.feature_map.sum()).backward()
    assert enc.model.conv1.weight.grad is not None and enc.conv1x1.weight.grad is not None
    assert enc.model.fc.weight.grad is None  # the 1000-way ImageNet head is not used
    with pytest.raises(ValueError):
        enc(torch.rand(3, 64, 64))


def test_config_roundtrip_and_validation():
    cfg = IdentityEncoderConfig(backbone=TINY_BACKBONE, num_identities=9)
    assert IdentityEncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        ResNetConfig(layers=(1, 1, 1))
    with pytest.raises(ValueError):
        ResNetConfig(widths=(8, 16, 16, 32), groups=32, width_per_group=4)  # 8 * 4 / 64 rounds to 0
    with pytest.raises(ValueError):
        IdentityEncoderConfig.from_dict({"bogus": 1})
    basic = ResNet(ResNetConfig(block="basic", layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8, groups=1,
                                width_per_group=64, num_classes=3)).eval()
    assert basic(torch.rand(1, 3, 32, 32)).shape == (1, 3)


def test_stage_strides_change_map_size_not_parameters():
    """A stride-1 layer4 doubles the map side (H/16); where every stage changes width, every parameter
    name and shape stays (torchvision drops a stride-1 stage's downsample only when its width stays)."""
    base = dict(block="basic", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_width=8, groups=1,
                width_per_group=64, num_classes=3)
    default, dense = ResNet(ResNetConfig(**base)), ResNet(ResNetConfig(**base, strides=(1, 2, 2, 1)))
    assert {k: v.shape for k, v in default.state_dict().items()} == {k: v.shape for k, v in dense.state_dict().items()}
    images = torch.rand(1, 3, 64, 64)
    assert default.forward_features(images).shape[-2:] == (2, 2)
    assert dense.forward_features(images).shape[-2:] == (4, 4)
    assert ResNetConfig.from_dict(ResNetConfig(**base, strides=(1, 2, 2, 1)).to_dict()).strides == (1, 2, 2, 1)
    with pytest.raises(ValueError, match="strides"):
        ResNetConfig(strides=(1, 2, 3, 2))
    same_width = ResNet(ResNetConfig(**{**base, "widths": (8, 16, 32, 32)}, strides=(1, 2, 2, 1)))
    assert not hasattr(same_width.layer4[0], "downsample") or same_width.layer4[0].downsample is None


def test_load_imagenet_from_weights_registry(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.HOME_ENV, str(tmp_path))
    enc = IdentityEncoder(IdentityEncoderConfig(backbone=ResNetConfig(
        layers=(1, 1, 1, 1), widths=(8, 16, 16, 32), stem_width=8, groups=2, width_per_group=32, num_classes=1000),
        num_identities=4))
    with pytest.raises(weights.MissingWeightsError, match="resnext50_32x4d-7cdf4587.pth"):
        enc.load_imagenet()
    before = enc.model.conv1.weight.clone()
    assert enc.load_imagenet(required=False) is False  # optional: absent file, nothing changes
    assert torch.equal(enc.model.conv1.weight, before)
    # a torchvision-format file (old files have no num_batches_tracked counters) for this config
    torch.manual_seed(1)
    table = torchvision_resnext_shapes(layers=(1, 1, 1, 1), planes=(8, 16, 16, 32), stem=8, groups=2,
                                       width_per_group=32, counters=False)
    state = {k: torch.randn(v) for k, v in table.items()}
    torch.save(state, tmp_path / weights.asset("resnext50_32x4d").file)
    fc_before = enc.fc.weight.clone()
    assert enc.load_imagenet(required=False) is True
    assert torch.equal(enc.model.layer3[0].conv2.weight,
                       state["layer3.0.conv2.weight"])
    assert torch.equal(enc.model.fc.weight, state["fc.weight"])
    assert torch.equal(enc.fc.weight, fc_before)  # the identity classifier is not touched
    # a file that does not fit the config is refused with the shapes named
    with pytest.raises(ValueError, match="mismatched shapes"):
        load_imagenet(ResNet(TINY_BACKBONE))
