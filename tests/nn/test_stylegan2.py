"""Tests for talkinghead.nn.stylegan2: official key layout, forward, modulation, demodulation, training."""
from __future__ import annotations

import pytest
import torch

from talkinghead.nn.stylegan2 import (
    ModulatedConv2d,
    ModulatedGenerator,
    ModulatedGeneratorConfig,
    Upsample,
    make_blur_kernel,
    upfirdn2d,
)


def official_generator_keys(style_dim: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official PC-AVS/PD-FGC ``ModulateGenerator`` at 224 px, written out from
    the official code (models/networks/generator.py: StyleGAN2Generator with crop_size 224,
    channel_multiplier 2, n_mlp 8, feature_encoded_dim == style_dim), independently of our module."""
    s = style_dim
    keys: dict[str, tuple[int, ...]] = {}
    for i in range(1, 9):  # style = Sequential(PixelNorm, 8 x EqualLinear(s, s, lr_mul=0.01, fused_lrelu))
        keys[f"style.{i}.weight"] = (s, s)
        keys[f"style.{i}.bias"] = (s,)
    keys["input.input"] = (1, 512, 7, 7)

    def styled(prefix: str, cin: int, cout: int, up: bool) -> None:
        keys[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        keys[f"{prefix}.conv.modulation.weight"] = (cin, s)
        keys[f"{prefix}.conv.modulation.bias"] = (cin,)
        keys[f"{prefix}.noise.weight"] = (1,)
        keys[f"{prefix}.activate.bias"] = (1, cout, 1, 1)
        if up:
            keys[f"{prefix}.conv.blur.kernel"] = (4, 4)

    def to_rgb(prefix: str, cin: int, up: bool) -> None:
        keys[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        keys[f"{prefix}.conv.modulation.weight"] = (cin, s)
        keys[f"{prefix}.conv.modulation.bias"] = (cin,)
        keys[f"{prefix}.bias"] = (1, 3, 1, 1)
        if up:
            keys[f"{prefix}.upsample.kernel"] = (4, 4)

    styled("conv1", 512, 512, False)
    to_rgb("to_rgb1", 512, False)
    channels = {7: 512, 14: 512, 28: 512, 56: 512, 112: 256, 224: 128}
    cin = 512
    for level, res in enumerate([14, 28, 56, 112, 224]):
        cout = channels[res]
        styled(f"convs.{2 * level}", cin, cout, True)
        styled(f"convs.{2 * level + 1}", cout, cout, False)
        to_rgb(f"to_rgbs.{level}", cout, True)
        cin = cout
    for i in range(11):  # num_layers = log2(224 / 7) * 2 + 1
        r = 7 * 2 ** ((i + 1) // 2)
        keys[f"noises.noise_{i}"] = (1, 1, r, r)
    return keys


@pytest.fixture(scope="module")
def paper_generator():
    torch.manual_seed(0)
    return ModulatedGenerator(ModulatedGeneratorConfig.pcavs()).eval()


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_paper_generator_has_official_keys(paper_generator):
    got = _shapes(paper_generator)
    want = official_generator_keys(2560)
    assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    assert got == want
    # characteristic tensors, spelled out
    assert got["convs.0.conv.modulation.weight"] == (512, 2560)
    assert got["conv1.conv.weight"] == (1, 512, 512, 3, 3)
    assert got["convs.8.conv.weight"] == (1, 128, 256, 3, 3)
    assert got["convs.9.activate.bias"] == (1, 128, 1, 1)
    assert got["to_rgbs.4.conv.weight"] == (1, 3, 128, 1, 1)
    assert got["input.input"] == (1, 512, 7, 7)
    assert got["style.8.weight"] == (2560, 2560)
    assert got["noises.noise_10"] == (1, 1, 224, 224)
    assert {k.split(".")[0] for k in got} == {"style", "input", "conv1", "to_rgb1", "convs", "to_rgbs", "noises"}
    # the official checkpoint layout loads strictly
    paper_generator.load_state_dict(paper_generator.state_dict(), strict=True)


def test_pdfgc_generator_has_official_keys():
    with torch.device("meta"):
        g = ModulatedGenerator(ModulatedGeneratorConfig.pdfgc())
    assert _shapes(g) == official_generator_keys(2590)


def test_paper_generator_forward(paper_generator):
    cfg = paper_generator.config
    assert (cfg.image_size, cfg.n_latent, cfg.num_noise_layers) == (224, 12, 11)
    torch.manual_seed(1)
    with torch.no_grad():
        img = paper_generator(torch.randn(1, 2560), torch.randn(1, 512, 7, 7))
    assert img.shape == (1, 3, 224, 224)
    assert torch.isfinite(img).all()
    assert img.min() >= -1 and img.max() <= 1


def tiny(**kw) -> ModulatedGenerator:
    torch.manual_seed(0)
    return ModulatedGenerator(ModulatedGeneratorConfig.tiny(**kw))


def test_tiny_config_sizes():
    g = tiny()
    cfg = g.config
    assert cfg.image_size == 64 and cfg.num_levels == 4
    assert not any(k.startswith("style.") for k in g.state_dict())
    x = g(torch.randn(3, cfg.style_dim), torch.randn(3, 64, 4, 4))
    assert x.shape == (3, 3, 64, 64)


def test_style_modulates_output():
    g = tiny(noise_mode="none")
    idm = torch.randn(2, 64, 4, 4)
    s1, s2 = torch.randn(2, 96), torch.randn(2, 96)
    with torch.no_grad():
        a, a2, b = g(s1, idm), g(s1, idm), g(s2, idm)
    assert torch.equal(a, a2)  # deterministic without noise
    assert (a - b).abs().mean() > 1e-2
    # and only through the style: changing only the pose-like tail of the code also changes it
    s3 = s1.clone()
    s3[:, -12:] += 3.0
    with torch.no_grad():
        c = g(s3, idm)
    assert (a - c).abs().mean() > 1e-3


def test_per_layer_style_matches_broadcast():
    g = tiny(noise_mode="none")
    s, idm = torch.randn(2, 96), torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        a = g(s, idm)
        b = g(s[:, None].repeat(1, g.config.n_latent, 1), idm)
    torch.testing.assert_close(a, b)


def test_demodulation_keeps_unit_std():
    torch.manual_seed(0)
    x = torch.randn(4, 64, 40, 40)
    style = torch.randn(4, 16) * 3
    demod = ModulatedConv2d(64, 48, 3, 16, demodulate=True)
    plain = ModulatedConv2d(64, 48, 3, 16, demodulate=False)
    plain.load_state_dict(demod.state_dict())
    with torch.no_grad():
        plain.modulation.weight.mul_(4)
        demod.modulation.weight.mul_(4)
        y, _ = demod(x, style)
        z, _ = plain(x, style)
    interior = y[:, :, 1:-1, 1:-1]
    # per sample and output channel the weights have unit L2 norm -> unit variance for iid N(0, 1) input
    assert 0.9 < interior.std().item() < 1.1
    assert abs(interior.mean().item()) < 0.05
    assert not 0.8 < z[:, :, 1:-1, 1:-1].std().item() < 1.25  # without demodulation the style scale leaks through


def test_upsampling_shapes_and_gain():
    conv = ModulatedConv2d(8, 4, 3, 5, upsample=True)
    out, m = conv(torch.randn(2, 8, 7, 7), torch.randn(2, 5))
    assert out.shape == (2, 4, 14, 14) and m.shape == (2, 1, 8, 1, 1)
    up = Upsample((1, 3, 3, 1))
    y = up(torch.full((1, 2, 6, 6), 3.0))
    assert y.shape == (1, 2, 12, 12)
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], torch.full((1, 2, 8, 8), 3.0))  # DC gain 1
    k = make_blur_kernel((1, 3, 3, 1))
    assert k.shape == (4, 4) and abs(k.sum().item() - 1) < 1e-6
    # upfirdn2d: identity kernel with up=2 is zero insertion
    x = torch.arange(4.0).view(1, 1, 2, 2)
    z = upfirdn2d(x, torch.ones(1, 1), up=2)
    assert torch.equal(z[0, 0], torch.tensor([[0.0, 0, 1, 0], [0, 0, 0, 0], [2, 0, 3, 0], [0, 0, 0, 0]]))


def test_noise_modes():
    g = tiny()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(1.0)
    s, idm = torch.randn(2, 96), torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        r1, r2 = g(s, idm, noise_mode="random"), g(s, idm, noise_mode="random")
        c1, c2 = g(s, idm, noise_mode="const"), g(s, idm, noise_mode="const")
        p1, p2 = g(s, idm, noise_mode="persistent"), g(s, idm, noise_mode="persistent")
        n1 = g(s, idm, noise_mode="none")
        g.reset_noise()
        p3 = g(s, idm, noise_mode="persistent")
    assert not torch.equal(r1, r2)
    assert torch.equal(c1, c2) and torch.equal(p1, p2)
    assert not torch.equal(p1, p3) and not torch.equal(c1, n1)
    # persistent noise is shared across the batch: identical inputs give identical images
    with torch.no_grad():
        same = g(s[:1].repeat(2, 1), idm[:1].repeat(2, 1, 1, 1), noise_mode="persistent")
    torch.testing.assert_close(same[0], same[1])
    with pytest.raises(ValueError):
        g(s, idm, noise_mode="bogus")


def test_constant_input_fallback_and_shape_errors():
    g = tiny(noise_mode="none")
    assert g(torch.randn(2, 96)).shape == (2, 3, 64, 64)  # learned constant when no identity map
    with pytest.raises(ValueError):
        g(torch.randn(2, 96), torch.randn(2, 32, 4, 4))
    with pytest.raises(ValueError):
        g(torch.randn(2, 95), torch.randn(2, 64, 4, 4))


def test_mapping_mlp_optional():
    g = tiny(n_mlp=2, input_is_latent=False, noise_mode="none")
    assert g.state_dict()["style.2.weight"].shape == (96, 96)
    z = torch.randn(2, 96)
    with torch.no_grad():
        a = g(z, torch.randn(2, 64, 4, 4))
    assert a.shape == (2, 3, 64, 64)


def test_pcavs_init():
    g = tiny(init="pcavs")
    assert torch.count_nonzero(g.conv1.conv.modulation.bias) == 0
    assert g.conv1.conv.weight.std() < 0.01


def test_tiny_generator_trains():
    torch.manual_seed(0)
    cfg = ModulatedGeneratorConfig.tiny(style_dim=32, start_size=4, channels=(32, 32, 16), noise_mode="none")
    g = ModulatedGenerator(cfg)
    style, idm = torch.randn(4, 32), torch.randn(4, 32, 4, 4)
    target = torch.rand(4, 3, 16, 16) * 1.6 - 0.8
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (g(style, idm) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
