"""FAN trunk ("FAN_use") and the PC-AVS non-identity / PD-FGC motion encoders (official key sets)."""
from __future__ import annotations

import pytest
import torch

from talkinghead.nn.fan import (
    FAN,
    FANConfig,
    MotionEncoder,
    MotionEncoderConfig,
    NonIdentityEncoder,
    NonIdentityEncoderConfig,
)


# ---------------------------------------------------------------------------------------------
# Official key tables, written out from PC-AVS models/networks/FAN_feature_extractor.py and
# encoder.py (FanEncoder) / PD-FGC lib/models/networks/encoder.py; not derived from our modules.
# ---------------------------------------------------------------------------------------------


def _bn(prefix: str, c: int) -> dict:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _lin(prefix: str, i: int, o: int) -> dict:
    return {f"{prefix}.weight": (o, i), f"{prefix}.bias": (o,)}


def convblock(prefix: str, cin: int, cout: int) -> dict:
    t = {**_bn(f"{prefix}.bn1", cin), f"{prefix}.conv1.weight": (cout // 2, cin, 3, 3),
         **_bn(f"{prefix}.bn2", cout // 2), f"{prefix}.conv2.weight": (cout // 4, cout // 2, 3, 3),
         **_bn(f"{prefix}.bn3", cout // 4), f"{prefix}.conv3.weight": (cout // 4, cout // 4, 3, 3)}
    if cin != cout:  # downsample = Sequential(BN, ReLU, Conv1x1 no bias)
        t.update(_bn(f"{prefix}.downsample.0", cin))
        t[f"{prefix}.downsample.2.weight"] = (cout, cin, 1, 1)
    return t


def official_fan_use_shapes(prefix: str = "model.") -> dict:
    t = {"conv1.weight": (64, 3, 7, 7), "conv1.bias": (64,), **_bn("bn1", 64),
         **convblock("conv2", 64, 128), **convblock("conv3", 128, 128), **convblock("conv4", 128, 256)}
    names = [f"b{i}_{lvl}" for lvl in (4, 3, 2, 1) for i in (1, 2, 3)] + ["b2_plus_1"]
    for name in names:
        t.update(convblock(f"m0.{name}", 256, 256))
    t.update(convblock("top_m_0", 256, 256))
    t.update({"conv_last0.weight": (256, 256, 1, 1), "conv_last0.bias": (256,),
              "l0.weight": (68, 256, 1, 1), "l0.bias": (68,), **_bn("bn_end0", 256),
              "conv6.weight": (1, 68, 3, 3), "conv6.bias": (1,), **_lin("fc", 784, 512), **_bn("bn5", 68)})
    return {prefix + k: v for k, v in t.items()}


def official_netE_shapes(num_classes: int = 5830, pose_dim: int = 12, clip_len: int = 1) -> dict:
    t = official_fan_use_shapes()
    t.update({**_lin("classifier.0", 512, 512), **_lin("classifier.2", 512, num_classes),
              **_lin("to_mouth.0", 512, 512), **_lin("to_mouth.2", 512, 512),
              **_lin("mouth_embed.1", 512, 512 - pose_dim),
              **_lin("mouth_fc.1", 512 * clip_len, num_classes),
              **_lin("to_headpose.0", 512, 512), **_lin("to_headpose.2", 512, 512),
              **_lin("headpose_embed.1", 512, pose_dim),
              **_lin("headpose_fc.1", pose_dim * clip_len, num_classes)})
    return t


def official_pdfgc_motion_shapes() -> dict:
    t = official_fan_use_shapes()
    for head in ("to_mouth", "to_headpose", "to_eye", "to_emo"):
        t.update({**_lin(f"{head}.0", 512, 512), **_bn(f"{head}.2", 512), **_lin(f"{head}.3", 512, 512)})
    t.update({**_lin("mouth_embed.1", 512, 500), **_lin("headpose_embed.1", 512, 6),
              **_lin("eye_embed.1", 512, 6), **_lin("emo_embed.1", 512, 30)})
    return t


def _shapes(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


TINY_TRUNK = FANConfig(stem_width=8, widths=(16, 16, 32), hourglass_depth=2, num_heatmaps=8, feature_dim=32,
                       image_size=64)


# ---------------------------------------------------------------------------------------------
def test_netE_state_dict_equals_official_keys():
    ours = _shapes(NonIdentityEncoder())
    assert ours == official_netE_shapes()
    assert {k.split(".")[0] for k in ours} == {
        "model", "classifier", "to_mouth", "mouth_embed", "mouth_fc", "to_headpose", "headpose_embed", "headpose_fc"}
    assert ours["model.fc.weight"] == (512, 784)
    assert ours["model.l0.weight"] == (68, 256, 1, 1)
    assert ours["model.m0.b2_plus_1.conv3.weight"] == (64, 64, 3, 3)
    assert ours["mouth_embed.1.weight"] == (500, 512)
    assert ours["headpose_embed.1.weight"] == (12, 512)
    assert ours["headpose_fc.1.weight"] == (5830, 12)
    # inference-only build drops exactly the three classifiers
    slim = _shapes(NonIdentityEncoder(NonIdentityEncoderConfig(classifier_heads=False)))
    assert set(ours) - set(slim) == {k for k in ours if k.split(".")[0] in ("classifier", "mouth_fc", "headpose_fc")}


def test_pdfgc_motion_state_dict_equals_official_keys():
    ours = _shapes(MotionEncoder())
    assert ours == official_pdfgc_motion_shapes()
    assert ours["to_eye.2.running_mean"] == (512,)
    assert ours["emo_embed.1.weight"] == (30, 512)


def test_fan_sizes():
    assert FANConfig().hourglass_size == 56 and FANConfig().heatmap_size == 28 and FANConfig().fc_in == 784
    assert TINY_TRUNK.fc_in == 8 * 8
    assert FANConfig(image_size=256).fc_in == 32 * 32
    with pytest.raises(ValueError):
        FANConfig(image_size=16)  # 4 px at the hourglass < 2**4
    with pytest.raises(ValueError):
        FANConfig(widths=(16, 18, 32))


@torch.no_grad()
def test_netE_paper_size_forward():
    enc = NonIdentityEncoder().eval()
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    assert enc.model.heatmaps(x).shape == (1, 68, 56, 56)
    out = enc(x)
    assert out.feature.shape == (1, 512)
    assert out.mouth.shape == (1, 512) and out.mouth_embed.shape == (1, 500) and out.pose.shape == (1, 12)
    assert enc.identity_logits(out.feature).shape == (1, 5830)
    assert enc.mouth_logits(out.mouth).shape == (1, 5830)
    assert enc.pose_logits(out.pose).shape == (1, 5830)
    assert torch.allclose(out.pose, enc.pose(out.feature), atol=1e-6)


@torch.no_grad()
def test_pdfgc_motion_paper_size_forward():
    enc = MotionEncoder().eval()
    out = enc(torch.rand(1, 3, 224, 224) * 2 - 1)
    assert out.feature.shape == (1, 512) and out.mouth.shape == (1, 512)
    assert out.pose.shape == (1, 6) and out.eye.shape == (1, 6) and out.emo.shape == (1, 30)


def test_tiny_encoders_clips_and_backward():
    torch.manual_seed(0)
    cfg = NonIdentityEncoderConfig(trunk=TINY_TRUNK, hidden=32, mouth_dim=20, pose_dim=4, num_identities=5, clip_len=3)
    assert NonIdentityEncoderConfig.from_dict(cfg.to_dict()) == cfg
    enc = NonIdentityEncoder(cfg).train()
    clips = torch.rand(2, 3, 3, 64, 64) * 2 - 1  # B=2 samples of T=clip_len=3 frames
    out = enc(clips)
    assert out.feature.shape == (6, 32) and out.mouth.shape == (6, 32)
    assert out.mouth_embed.shape == (6, 20) and out.pose.shape == (6, 4)
    assert enc.identity_logits(out.feature, num_clips=3).shape == (2, 5)
    assert enc.mouth_logits(out.mouth).shape == (2, 5)
    assert enc.pose_logits(out.pose).shape == (2, 5)
    (out.mouth_embed.sum() + out.pose.sum()).backward()
    assert enc.model.conv1.weight.grad is not None and enc.model.m0.b2_plus_1.conv1.weight.grad is not None
    with pytest.raises(ValueError, match="64x64"):
        enc(torch.rand(1, 3, 96, 96))

    motion = MotionEncoder(MotionEncoderConfig(trunk=TINY_TRUNK, hidden=32, mouth_dim=20, pose_dim=3, eye_dim=3,
                                               emo_dim=5)).train()
    m = motion(clips)
    assert (m.pose.shape, m.eye.shape, m.emo.shape, m.mouth.shape) == ((6, 3), (6, 3), (6, 5), (6, 32))
    m.emo.sum().backward()


@pytest.mark.parametrize("seed", range(12))
def test_conv6_relu_starts_open_for_every_seed(seed):
    """conv6 maps non-negative heatmaps to one channel before a ReLU: started with default signs its
    output was negative at some or all positions for 9 of these 12 seeds (all: a trunk that never
    trains). Started non-negative it is positive at every position, and the feature differs between
    images."""
    torch.manual_seed(seed)
    trunk = FAN(TINY_TRUNK).eval()
    images = torch.rand(6, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        pre = trunk.conv6(trunk.relu(trunk.bn5(trunk.heatmaps(images))))
        feature = trunk(images)
    assert bool((pre > 0).all())
    assert feature.std(0).max() > 0


def test_trunk_forward_matches_official_order():
    """The trunk's forward, written out step by step from FAN_use.forward, equals FAN.forward."""
    torch.manual_seed(0)
    fan = FAN(TINY_TRUNK).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    F = torch.nn.functional
    with torch.no_grad():
        h = F.relu(fan.bn1(fan.conv1(x)))
        h = F.max_pool2d(fan.conv2(h), 2)
        h = fan.conv4(fan.conv3(h))
        h = fan.top_m_0(fan.m0(h))
        h = fan.l0(F.relu(fan.bn_end0(fan.conv_last0(h))))
        h = fan.conv6(F.relu(fan.bn5(h)))
        expected = fan.fc(F.relu(h.view(-1, h.shape[-2] * h.shape[-1])))
        assert torch.allclose(fan(x), expected, atol=1e-6)
