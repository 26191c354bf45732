"""Tests for talkinghead.nn.discriminators: official layout, multi-scale features, configurability."""
from __future__ import annotations

import pytest
import torch

from talkinghead.nn.discriminators import MultiscaleDiscriminator, MultiscaleDiscriminatorConfig


def official_discriminator_keys() -> dict[str, tuple[int, ...]]:
    """Official PC-AVS MultiscaleDiscriminator (num_D 2, n_layers_D 4, ndf 64, spectralinstance,
    D_input single -> 3 input channels), written out from models/networks/discriminator.py."""
    keys = {}
    for d in range(2):
        p = f"discriminator_{d}"
        keys[f"{p}.model0.0.weight"] = (64, 3, 4, 4)
        keys[f"{p}.model0.0.bias"] = (64,)
        for i, (cin, cout) in enumerate([(64, 128), (128, 256), (256, 512)], start=1):
            keys[f"{p}.model{i}.0.0.weight_orig"] = (cout, cin, 4, 4)
            keys[f"{p}.model{i}.0.0.weight_u"] = (cout,)
            keys[f"{p}.model{i}.0.0.weight_v"] = (cin * 16,)
        keys[f"{p}.model4.0.weight"] = (1, 512, 4, 4)
        keys[f"{p}.model4.0.bias"] = (1,)
    return keys


def test_paper_discriminator_layout_and_features():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(MultiscaleDiscriminatorConfig.pcavs())
    assert {k: tuple(v.shape) for k, v in d.state_dict().items()} == official_discriminator_keys()
    with torch.no_grad():
        out = d(torch.rand(1, 3, 224, 224) * 2 - 1)
    assert len(out) == 2
    want = [
        [(1, 3, 224, 224), (1, 64, 113, 113), (1, 128, 57, 57), (1, 256, 29, 29), (1, 512, 30, 30), (1, 1, 31, 31)],
        [(1, 3, 112, 112), (1, 64, 57, 57), (1, 128, 29, 29), (1, 256, 15, 15), (1, 512, 16, 16), (1, 1, 17, 17)],
    ]
    assert [[tuple(t.shape) for t in scale] for scale in out] == want


def test_tiny_discriminator_features_and_grad():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(MultiscaleDiscriminatorConfig.tiny())
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    out = d(x)
    assert len(out) == 2
    assert [tuple(t.shape) for t in out[0]] == [(2, 3, 64, 64), (2, 16, 33, 33), (2, 32, 17, 17), (2, 64, 18, 18), (2, 1, 19, 19)]
    assert out[0][0] is x  # official: the input itself is feature 0
    torch.testing.assert_close(out[1][0], MultiscaleDiscriminator.downsample(x))
    out[1][-1].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_configurable_scales_layers_and_input():
    cfg = MultiscaleDiscriminatorConfig(in_channels=6, ndf=8, n_layers=2, num_scales=3, include_input=False)
    d = MultiscaleDiscriminator(cfg)
    out = d(torch.randn(1, 6, 48, 48))
    assert len(out) == 3 and all(len(s) == 3 for s in out)  # 2 hidden + logits, no input
    assert all(s[-1].shape[1] == 1 for s in out)
    with pytest.raises(ValueError):
        d(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("norm,key", [("instance", "model1.0.0.weight"), ("spectral", "model1.0.weight_orig"),
                                      ("none", "model1.0.weight")])
def test_norm_variants(norm, key):
    d = MultiscaleDiscriminator(MultiscaleDiscriminatorConfig.tiny(norm=norm, num_scales=1))
    sd = d.state_dict()
    assert f"discriminator_0.{key}" in sd
    has_bias = any(k.startswith("discriminator_0.model1.") and k.endswith("bias") for k in sd)
    assert has_bias == (norm in ("spectral", "none"))  # conv bias dropped when a norm follows
    assert d(torch.randn(1, 3, 32, 32))[0][-1].ndim == 4
