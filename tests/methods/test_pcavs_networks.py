"""PC-AVS networks: paper-size shapes (one forward at batch 1), the tiny config, config checks."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from talkinghead.methods.pcavs.networks import PCAVS, PCAVSConfig, build_discriminator
from talkinghead.config import to_dict
from talkinghead.methods.pcavs.method import METHOD, model_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return PCAVS(PCAVSConfig.paper()).eval()


def test_paper_config_matches_reference_facts():
    cfg = PCAVSConfig.paper()
    assert cfg.image_size == 224
    assert cfg.identity.feature_dim == 2048 and cfg.identity.map_channels == 512 and cfg.identity.map_size == 7
    assert cfg.identity.backbone.is_resnext50_32x4d and cfg.identity.num_identities == 5830
    assert cfg.nonidentity.hidden == 512 and cfg.mouth_dim == 500 and cfg.pose_dim == 12
    assert cfg.nonidentity.trunk.fc_in == 784
    assert cfg.audio.backbone.channels == (32, 64, 128, 256) and cfg.audio.backbone.layers == (3, 4, 6, 3)
    assert cfg.audio.backbone.embedding == 512 and cfg.audio.backbone.pooling == "SAP"
    assert cfg.generator.style_dim == 2560 == cfg.style_dim
    assert cfg.generator.channels == (512, 512, 512, 512, 256, 128) and cfg.generator.image_size == 224
    d = cfg.discriminator
    assert (d.num_scales, d.n_layers, d.ndf, d.norm) == (2, 4, 64, "spectralinstance")
    assert cfg.audio_scale == 1.2


def test_paper_size_forward_shapes(paper_model):
    m = paper_model
    with torch.no_grad():
        image = torch.rand(1, 3, 224, 224) * 2 - 1
        ident = m.netV(image)
        assert ident.feature.shape == (1, 2048)
        assert ident.feature_map.shape == (1, 512, 7, 7)
        assert ident.logits.shape == (1, 5830)
        enc = m.netE(image)
        assert enc.feature.shape == (1, 512) and enc.mouth.shape == (1, 512)
        assert enc.mouth_embed.shape == (1, 500) and enc.pose.shape == (1, 12)
        content = m.audio_content(torch.rand(1, 1, 80, 20))
        assert content.shape == (1, 512)
        mouth = m.mouth_style(content, 1.2)
        assert mouth.shape == (1, 500)
        assert m.style(ident.feature, mouth, enc.pose).shape == (1, 2560)
        out = m.render(ident.feature, ident.feature_map, mouth, enc.pose, noise_mode="const")
        assert out.shape == (1, 3, 224, 224)
        assert out.abs().max() <= 1
        preds = build_discriminator(m.config)(out)
        assert len(preds) == 2 and preds[0][-1].shape == (1, 1, 31, 31) and preds[1][-1].shape == (1, 1, 17, 17)


def test_paper_submodule_names(paper_model):
    names = {name for name, _ in paper_model.named_children()}
    assert names == {"netV", "netE", "netA_sync", "netG"}
    keys = paper_model.state_dict().keys()
    assert "netV.model.layer4.2.conv3.weight" in keys and "netV.model.fc.weight" in keys
    assert "netE.headpose_embed.1.weight" in keys and "netA_sync.model.attention.0.weight" in keys
    assert "netG.to_rgbs.4.conv.weight" in keys


@pytest.mark.parametrize("size", [32, 64])
def test_tiny_forward(size):
    torch.manual_seed(0)
    cfg = PCAVSConfig.tiny(image_size=size, num_identities=5)
    m = PCAVS(cfg).eval()
    ref = torch.rand(1, 3, size, size) * 2 - 1
    mel = torch.rand(6, 1, 80, 20)
    with torch.no_grad():
        out_fixed = m(ref, mel, noise_mode="const")
        out_pose = m(ref, mel, pose_images=torch.rand(6, 3, size, size) * 2 - 1, noise_mode="const")
        out_front = m(ref, mel, pose=torch.zeros(1, cfg.pose_dim), noise_mode="const")
    for out in (out_fixed, out_pose, out_front):
        assert out.shape == (6, 3, size, size) and torch.isfinite(out).all()
    assert not torch.allclose(out_fixed, out_front)
    d = build_discriminator(cfg)
    assert all(torch.isfinite(s[-1]).all() for s in d(out_fixed))


def test_content_size_decouples_encoder_input_from_generated_size():
    """E_n (content and pose) reads content_size frames while G generates image_size frames."""
    torch.manual_seed(0)
    cfg = PCAVSConfig.tiny(image_size=64, content_size=32, identity_size=64, num_identities=5)
    assert cfg.content_input_size == 32 and cfg.nonidentity.trunk.image_size == 32
    m = PCAVS(cfg).eval()
    ref = torch.rand(1, 3, 64, 64) * 2 - 1
    mel = torch.rand(4, 1, 80, 20)
    with torch.no_grad():
        out = m(ref, mel, pose_images=torch.rand(4, 3, 32, 32) * 2 - 1, noise_mode="const")
        fixed = m(ref, mel, noise_mode="const")  # the reference is resized to 32 px for E_n
    assert out.shape == fixed.shape == (4, 3, 64, 64)
    with pytest.raises(ValueError, match="content_size"):
        PCAVSConfig.from_dict({**cfg.to_dict(), "content_size": 48})  # E_n's trunk is built for 32


def test_config_roundtrip_and_validation():
    cfg = PCAVSConfig.tiny()
    again = PCAVSConfig.from_dict(cfg.to_dict())
    assert again == cfg
    bad = cfg.to_dict()
    bad["generator"]["style_dim"] = 99
    with pytest.raises(ValueError, match="style_dim"):
        PCAVSConfig.from_dict(bad)
    bad = cfg.to_dict()
    bad["audio"]["backbone"]["embedding"] = 32
    with pytest.raises(ValueError, match="speech-content"):
        PCAVSConfig.from_dict(bad)
    with pytest.raises(ValueError, match="unknown"):
        PCAVSConfig.from_dict({"nope": 1})


@pytest.mark.parametrize("name", ["synth", "vox2", "lrw"])
def test_experiment_configs_build(name):
    cfg = to_dict(METHOD.load_config(name))
    model = model_config(cfg["model"], num_identities=7)
    assert model.identity.num_identities == 7
    if name == "synth":
        assert model.image_size == 112 and model.reference_size == 224 and model.content_input_size == 56
        assert model.identity.backbone.strides == (1, 2, 1, 1)  # E_i's layer4 map: 28 x 28 at 224 px
        PCAVS(model)  # the tiny model builds
    else:  # the paper configs are the paper networks (up to the speaker count of the data)
        paper = PCAVSConfig.paper().to_dict()
        ours = model.to_dict()
        for section in ("identity", "nonidentity", "audio"):
            ours[section]["num_identities"] = paper[section]["num_identities"]
        assert ours == paper
        assert cfg["full"]["batch_size"] == 16
        assert cfg["full"]["optim"]["betas"] == [0.0, 0.9] and cfg["full"]["optim"]["lr"] == 1.0e-3
        assert cfg["full"]["loss"]["l1"] == 0 and cfg["full"]["loss"]["mouth_l1"] == 0
