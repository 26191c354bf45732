"""PD-FGC networks: paper-size shapes (one forward at batch 1, one generator training step), the tiny
config's forward and official inference conventions, the style order, config checks."""
from __future__ import annotations

import math

import pytest
import torch

from talkinghead.methods.pdfgc.networks import (
    BLINK_DIMS,
    GAZE_DIMS,
    PDFGC,
    PDFGCConfig,
    build_discriminator,
    smooth_lip,
    smooth_pose,
)
from talkinghead.nn.fan import MotionEncoder, MotionEncoderConfig
from talkinghead.nn.stylegan2 import ModulatedGenerator


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return PDFGC(PDFGCConfig.paper()).eval()


def test_paper_config_matches_reference_facts():
    cfg = PDFGCConfig.paper()
    assert cfg.image_size == 224
    a = cfg.appearance
    assert a.backbone.is_resnext50_32x4d and a.feature_dim == 2048 and a.map_channels == 512 and a.map_size == 7
    assert a.num_identities == 5995
    m = cfg.motion
    assert m.trunk.fc_in == 784 and m.trunk.feature_dim == 512 and m.hidden == 512
    assert (m.mouth_dim, m.pose_dim, m.eye_dim, m.emo_dim) == (500, 6, 6, 30) and m.training_heads
    assert cfg.audio.backbone.channels == (32, 64, 128, 256) and cfg.audio.backbone.layers == (3, 4, 6, 3)
    assert cfg.audio.backbone.embedding == 512 and cfg.audio.backbone.pooling == "SAP"
    assert cfg.audio.mouth_dim == 500 and cfg.audio.num_identities is None
    assert cfg.style_dim == cfg.generator.style_dim == 2048 + 500 + 30 + 6 + 6 == 2590
    assert cfg.generator.channels == (512, 512, 512, 512, 256, 128) and cfg.generator.image_size == 224
    assert cfg.generator.n_mlp == 8 and cfg.generator.input_is_latent
    d = cfg.discriminator
    assert (d.num_scales, d.n_layers, d.ndf, d.norm) == (2, 4, 64, "spectralinstance")
    assert (cfg.lip_scale, cfg.emo_scale, cfg.eye_scale) == (1.5, 1.2, 1.2)
    assert BLINK_DIMS == (0, 1, 4, 5) and GAZE_DIMS == (2, 3)


def test_paper_parameter_shapes(paper_model):
    assert {name for name, _ in paper_model.named_children()} == {
        "net_appearance", "net_motion", "net_audio", "net_generator"}
    s = {k: tuple(v.shape) for k, v in paper_model.state_dict().items()}
    expected = {
        "net_appearance.model.layer1.0.conv2.weight": (128, 4, 3, 3),  # ResNeXt 32x4d grouped conv
        "net_appearance.model.fc.weight": (1000, 2048),
        "net_appearance.conv1x1.weight": (512, 2048, 1, 1),
        "net_appearance.fc.weight": (5995, 2048),
        "net_motion.model.fc.weight": (512, 784),
        "net_motion.model.l0.weight": (68, 256, 1, 1),
        "net_motion.to_mouth.0.weight": (512, 512),
        "net_motion.to_eye.2.running_mean": (512,),  # BatchNorm1d inside every to_* head
        "net_motion.to_emo.3.weight": (512, 512),
        "net_motion.mouth_embed.1.weight": (500, 512),
        "net_motion.headpose_embed.1.weight": (6, 512),
        "net_motion.eye_embed.1.weight": (6, 512),
        "net_motion.emo_embed.1.weight": (30, 512),
        "net_motion.classifier.2.weight": (5995, 512),  # training-only heads
        "net_motion.mouth_fc.1.weight": (5995, 512),
        "net_motion.headpose_fc.1.weight": (5995, 6),
        "net_motion.to_feature.2.running_var": (512,),
        "net_motion.to_embed.1.weight": (512, 512),
        "net_audio.model.conv1.weight": (32, 1, 3, 3),
        "net_audio.model.attention.0.weight": (128, 2560, 1),
        "net_audio.model.fc.weight": (512, 2560),
        "net_audio.mouth_embed.1.weight": (500, 512),
        "net_generator.style.8.weight": (2590, 2590),
        "net_generator.input.input": (1, 512, 7, 7),
        "net_generator.conv1.conv.modulation.weight": (512, 2590),
        "net_generator.to_rgbs.4.conv.weight": (1, 3, 128, 1, 1),
        "net_generator.noises.noise_10": (1, 1, 224, 224),
    }
    assert {k: s.get(k) for k in expected} == expected
    assert not any(k.startswith("net_audio.fc.") for k in s)  # the official audio module has no classifier


def test_paper_size_forward_shapes(paper_model):
    m = paper_model
    with torch.no_grad():
        image = torch.rand(1, 3, 224, 224) * 2 - 1
        app = m.appearance(image)
        assert app.feature.shape == (1, 2048) and app.feature_map.shape == (1, 512, 7, 7)
        assert app.logits.shape == (1, 5995)
        codes = m.motion_codes(image)
        assert codes.lip.shape == (1, 500) and codes.emo.shape == (1, 30)
        assert codes.eye.shape == (1, 6) and codes.pose.shape == (1, 6)
        mel = torch.rand(1, 1, 80, 20)
        assert m.audio_feature(mel).shape == (1, 512)
        lip = m.lip_code(mel)
        assert lip.shape == (1, 500)
        assert torch.allclose(m.lip_code(mel, 1.5), lip * 1.5)
        style = m.style(app.feature, lip, codes.emo, codes.eye, codes.pose)
        assert style.shape == (1, 2590)
        out = m.generate(app.feature, app.feature_map, lip, codes.emo, codes.eye, codes.pose, noise_mode="const")
        assert out.shape == (1, 3, 224, 224) and out.abs().max() <= 1
        preds = build_discriminator(m.config)(out)
        assert len(preds) == 2 and preds[0][-1].shape == (1, 1, 31, 31) and preds[1][-1].shape == (1, 1, 17, 17)


def test_paper_generator_one_training_step():
    """One optimiser step of the paper-size generator on CPU: gradients reach the modulations,
    the weights move, the output changes."""
    torch.manual_seed(0)
    g = ModulatedGenerator(PDFGCConfig.paper().generator)
    style, amap = torch.randn(1, 2590), torch.randn(1, 512, 7, 7)
    opt = torch.optim.Adam([p for p in g.parameters() if p.requires_grad], lr=1e-3, betas=(0.0, 0.99))
    before = g(style, identity_map=amap, noise_mode="const")
    before.abs().mean().backward()
    grad = g.conv1.conv.modulation.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    old = g.convs[9].conv.weight.detach().clone()
    opt.step()
    assert not torch.equal(old, g.convs[9].conv.weight)
    with torch.no_grad():
        after = g(style, identity_map=amap, noise_mode="const")
    assert not torch.allclose(before.detach(), after)


def test_style_follows_the_official_order():
    cfg = PDFGCConfig.tiny(image_size=32, num_identities=4)
    m = PDFGC(cfg)
    n = 3
    parts = [torch.randn(n, d) for d in (cfg.appearance_dim, cfg.lip_dim, cfg.emo_dim, cfg.eye_dim, cfg.pose_dim)]
    style = m.style(*parts)
    assert style.shape == (n, cfg.style_dim)
    start = 0
    for part in parts:  # [appearance, lip, emo, eye, pose]
        assert torch.equal(style[:, start:start + part.shape[1]], part)
        start += part.shape[1]
    # generate feeds exactly that style to the generator
    amap = torch.randn(n, cfg.appearance.map_channels, cfg.appearance.map_size, cfg.appearance.map_size)
    with torch.no_grad():
        direct = m.net_generator(style, identity_map=amap, noise_mode="const")
        assert torch.equal(m.generate(parts[0], amap, *parts[1:], noise_mode="const"), direct)
        swapped = m.generate(parts[0], amap, parts[1], parts[2], parts[4], parts[3], noise_mode="const")
    assert not torch.allclose(swapped, direct)  # eye and pose are not interchangeable


@pytest.mark.parametrize("size", [32, 64])
def test_tiny_forward(size):
    torch.manual_seed(0)
    cfg = PDFGCConfig.tiny(image_size=size, num_identities=5)
    m = PDFGC(cfg).eval()
    ref = torch.rand(1, 3, size, size) * 2 - 1
    mel = torch.rand(6, 1, 80, 20)
    frames = torch.rand(6, 3, size, size) * 2 - 1
    with torch.no_grad():
        canonical = m(ref, mel, noise_mode="const")
        driven = m(ref, mel, pose_frames=frames, emo_frames=frames[:1], eye_frames=frames, noise_mode="const")
    for out in (canonical, driven):
        assert out.shape == (6, 3, size, size) and torch.isfinite(out).all() and out.abs().max() <= 1
    assert not torch.allclose(canonical, driven)
    d = build_discriminator(cfg)
    assert all(torch.isfinite(s[-1]).all() for s in d(driven))


def test_forward_applies_the_official_conventions():
    """Lip x lip_scale then the Gaussian, pose 3-frame mean, emo / eye x their scales, missing
    sources zero; written out with the explicit methods."""
    torch.manual_seed(0)
    cfg = PDFGCConfig.tiny(image_size=32, num_identities=5, lip_scale=1.5, emo_scale=1.2, eye_scale=1.2)
    m = PDFGC(cfg).eval()
    ref = torch.rand(1, 3, 32, 32) * 2 - 1
    mel = torch.rand(5, 1, 80, 20)
    pose_frames, eye_frames = torch.rand(5, 3, 32, 32) * 2 - 1, torch.rand(5, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        got = m(ref, mel, pose_frames=pose_frames, eye_frames=eye_frames, noise_mode="const")
        app = m.appearance(ref)
        lip = smooth_lip(m.lip_code(mel) * 1.5)
        pose = smooth_pose(m.motion_codes(pose_frames).pose)
        eye = m.motion_codes(eye_frames).eye * 1.2
        emo = torch.zeros(5, cfg.emo_dim)
        want = m.generate(app.feature.expand(5, -1), app.feature_map.expand(5, -1, -1, -1), lip, emo, eye, pose,
                          noise_mode="const")
        assert torch.allclose(got, want, atol=1e-6)
        raw = m(ref, mel, pose_frames=pose_frames, eye_frames=eye_frames, smooth=False, noise_mode="const")
    assert not torch.allclose(raw, got, atol=1e-4)


def test_smoothing_matches_the_official_formulas():
    x = torch.arange(12, dtype=torch.float32).view(4, 3) ** 2
    k = torch.tensor([math.exp(-0.5), 1.0, math.exp(-0.5)])
    k = k / k.sum()
    want = torch.stack([k[1] * x[0] + k[2] * x[1]]  # zero padding at the ends, not renormalised
                       + [k[0] * x[i - 1] + k[1] * x[i] + k[2] * x[i + 1] for i in (1, 2)]
                       + [k[0] * x[2] + k[1] * x[3]])
    assert torch.allclose(smooth_lip(x), want)
    want = torch.stack([x[0:2].mean(0), x[0:3].mean(0), x[1:4].mean(0), x[2:4].mean(0)])
    assert torch.allclose(smooth_pose(x), want)
    assert torch.equal(smooth_pose(x[:1]), x[:1])


def test_motion_training_heads():
    torch.manual_seed(0)
    cfg = PDFGCConfig.tiny(image_size=32, num_identities=5)
    enc = PDFGC(cfg).net_motion.train()
    clips = torch.rand(2, 3, 3, 32, 32) * 2 - 1  # B=2 samples of 3 frames
    out = enc(clips)
    assert out.feature.shape == (6, 64) and out.mouth.shape == (6, 64)
    assert (out.pose.shape, out.eye.shape, out.emo.shape) == ((6, 6), (6, 6), (6, 8))
    assert enc.identity_logits(out.feature, num_clips=3).shape == (2, 5)
    assert enc.mouth_logits(out.mouth).shape == (6, 5)  # clip_len 1: one row per frame
    assert enc.pose_logits(out.pose).shape == (6, 5)
    unified = enc.unified(out.feature)
    assert unified.shape == (6, 64)
    (unified.sum() + out.emo.sum()).backward()
    assert enc.to_feature[0].weight.grad is not None and enc.to_emo[0].weight.grad is not None
    inference_only = MotionEncoder(MotionEncoderConfig(trunk=cfg.motion.trunk, hidden=64, mouth_dim=32, emo_dim=8))
    with pytest.raises(RuntimeError, match="training-only heads"):
        inference_only.unified(torch.zeros(2, 64))


def test_config_roundtrip_and_validation():
    cfg = PDFGCConfig.tiny()
    assert PDFGCConfig.from_dict(cfg.to_dict()) == cfg
    assert PDFGCConfig.from_dict(PDFGCConfig.paper().to_dict()) == PDFGCConfig.paper()
    bad = cfg.to_dict()
    bad["generator"]["style_dim"] = 99
    with pytest.raises(ValueError, match="style_dim"):
        PDFGCConfig.from_dict(bad)
    bad = cfg.to_dict()
    bad["audio"]["mouth_dim"] = 7
    with pytest.raises(ValueError, match="audio lip code"):
        PDFGCConfig.from_dict(bad)
    bad = cfg.to_dict()
    bad["audio"]["backbone"]["embedding"] = 32
    with pytest.raises(ValueError, match="audio-visual"):
        PDFGCConfig.from_dict(bad)
    with pytest.raises(ValueError, match="motion_size"):
        PDFGCConfig.from_dict({**cfg.to_dict(), "motion_size": 48})  # the trunk is built for 56
    with pytest.raises(ValueError, match="map_size"):
        PDFGCConfig.tiny(image_size=60, map_size=7)
    with pytest.raises(ValueError, match="unknown"):
        PDFGCConfig.from_dict({"nope": 1})
