"""ResNetSE34 and the PC-AVS netA_sync / PD-FGC audio encoders (official key sets, SAP pooling)."""
from __future__ import annotations

import pytest
import torch

from talkinghead.nn.resnetse import AudioEncoder, AudioEncoderConfig, ResNetSE, ResNetSEConfig


# ---------------------------------------------------------------------------------------------
# Official key table, written out from PC-AVS models/networks/audio_network.py (ResNetSE with
# SEBasicBlock, [3, 4, 6, 3], [32, 64, 128, 256], SAP, n_mels 80, n_mel_T 1) and encoder.py
# (ResSESyncEncoder: model = ResNetSE(..., nOut=512), fc = Linear(512, num_classes=5830)).
# ---------------------------------------------------------------------------------------------


def _bn(prefix: str, c: int) -> dict:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def official_resnetse34_shapes(prefix: str = "model.") -> dict:
    t = {"conv1.weight": (32, 1, 3, 3), "conv1.bias": (32,), **_bn("bn1", 32)}
    inplanes = 32
    for s, (c, n) in enumerate(zip((32, 64, 128, 256), (3, 4, 6, 3)), start=1):
        for b in range(n):
            pre = f"layer{s}.{b}"
            t[f"{pre}.conv1.weight"] = (c, inplanes, 3, 3)
            t.update(_bn(f"{pre}.bn1", c))
            t[f"{pre}.conv2.weight"] = (c, c, 3, 3)
            t.update(_bn(f"{pre}.bn2", c))
            t.update({f"{pre}.se.fc.0.weight": (c // 8, c), f"{pre}.se.fc.0.bias": (c // 8,),
                      f"{pre}.se.fc.2.weight": (c, c // 8), f"{pre}.se.fc.2.bias": (c,)})
            if b == 0 and s > 1:  # stride 2 (layer1: 32 -> 32, stride 1: no downsample)
                t[f"{pre}.downsample.0.weight"] = (c, inplanes, 1, 1)
                t.update(_bn(f"{pre}.downsample.1", c))
            inplanes = c
    t.update({"attention.0.weight": (128, 2560, 1), "attention.0.bias": (128,), **_bn("attention.2", 128),
              "attention.3.weight": (2560, 128, 1), "attention.3.bias": (2560,),
              "fc.weight": (512, 2560), "fc.bias": (512,)})
    return {prefix + k: v for k, v in t.items()}


def official_netA_sync_shapes(num_classes: int = 5830) -> dict:
    return {**official_resnetse34_shapes(), "fc.weight": (num_classes, 512), "fc.bias": (num_classes,)}


def _shapes(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


TINY = ResNetSEConfig(channels=(8, 16, 16, 32), layers=(1, 1, 1, 1), reduction=4, attention_hidden=16, embedding=24)


# ---------------------------------------------------------------------------------------------
def test_netA_sync_state_dict_equals_official_keys():
    ours = _shapes(AudioEncoder())
    assert ours == official_netA_sync_shapes()
    assert {k.split(".")[0] for k in ours} == {"model", "fc"}
    assert ours["model.fc.weight"] == (512, 2560)  # SAP pooling: 256 channels x 10 mel bins
    assert ours["fc.weight"] == (5830, 512)
    assert ours["model.layer4.2.se.fc.0.weight"] == (32, 256)
    assert ResNetSEConfig().fc_in == 2560 and ResNetSEConfig(pooling="ASP").fc_in == 5120


def test_pdfgc_audio_state_dict_equals_official_keys():
    ours = _shapes(AudioEncoder(AudioEncoderConfig.pdfgc()))
    expected = {**official_resnetse34_shapes(), "mouth_embed.1.weight": (500, 512), "mouth_embed.1.bias": (500,)}
    assert ours == expected


@torch.no_grad()
def test_paper_size_forward():
    enc = AudioEncoder().eval()
    mel = torch.rand(1, 1, 80, 20)
    out = enc(mel)
    assert out.feature.shape == (1, 512) and out.logits.shape == (1, 5830) and out.mouth_embed is None
    clips = torch.rand(1, 2, 1, 80, 20)  # (B, T, 1, 80, 20) is flattened to B*T windows
    assert enc.forward_feature(clips).shape == (2, 512)
    pd = AudioEncoder(AudioEncoderConfig.pdfgc()).eval()
    out = pd(mel)
    assert out.mouth_embed.shape == (1, 500) and out.logits is None


def test_sap_pooling_written_out():
    """SAP = sum over time of softmax-weighted layer4 features, then fc (official forward)."""
    torch.manual_seed(0)
    net = ResNetSE(TINY).eval()
    x = torch.rand(3, 1, 80, 20)
    with torch.no_grad():
        h = net.bn1(torch.relu(net.conv1(x)))
        h = net.layer4(net.layer3(net.layer2(net.layer1(h))))
        assert h.shape == (3, 32, 10, 3)
        h = h.reshape(3, -1, h.shape[-1])
        w = net.attention(h)
        assert torch.allclose(w.sum(2), torch.ones(3, 320), atol=1e-5)
        assert torch.allclose(net(x), net.fc((h * w).sum(2)), atol=1e-5)


def test_tiny_config_train_and_options():
    torch.manual_seed(0)
    cfg = AudioEncoderConfig(backbone=TINY, num_identities=7, mouth_dim=10)
    assert AudioEncoderConfig.from_dict(cfg.to_dict()) == cfg
    enc = AudioEncoder(cfg).train()
    out = enc(torch.rand(4, 1, 80, 20))
    assert out.feature.shape == (4, 24) and out.mouth_embed.shape == (4, 10) and out.logits.shape == (4, 7)
    (out.logits.sum() + out.mouth_embed.sum()).backward()
    assert enc.model.layer1[0].se.fc[0].weight.grad is not None
    asp = ResNetSE(ResNetSEConfig(**{**TINY.to_dict(), "pooling": "ASP"})).eval()
    assert asp.fc.in_features == 640 and asp(torch.rand(2, 1, 80, 20)).shape == (2, 24)
    with pytest.raises(ValueError, match="80"):
        enc.model(torch.rand(1, 1, 40, 20))
    with pytest.raises(ValueError):
        ResNetSEConfig(channels=(4, 8, 8, 16), reduction=8)
