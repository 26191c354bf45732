"""SyncNet network: official names / shapes, forward shapes, tiny configs, fused copy, input preparation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.nn.syncnet import (
    FusedSyncNet,
    SyncNet,
    SyncNetConfig,
    audio_features,
    lip_frames,
    lip_windows,
    quantize_int16,
)

TINY = SyncNetConfig(audio_channels=(8, 16, 16, 16, 16, 32), lip_channels=(8, 16, 16, 16, 16, 32), fc_hidden=32,
                     embedding=16, image_size=(64, 96), crop=(0.375, 0.8125, 0.1875, 0.8125))


def official_table() -> dict[str, tuple[int, ...]]:
    """The official syncnet_v2 tensors, written out from the published layer list (reference facts)."""
    t: dict[str, tuple[int, ...]] = {}

    def conv(prefix, shape):
        t[prefix + ".weight"] = shape
        t[prefix + ".bias"] = (shape[0],)

    def bn(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            t[f"{prefix}.{name}"] = (c,)

    conv("netcnnaud.0", (64, 1, 3, 3)); bn("netcnnaud.1", 64)  # noqa: E702
    conv("netcnnaud.4", (192, 64, 3, 3)); bn("netcnnaud.5", 192)  # noqa: E702
    conv("netcnnaud.8", (384, 192, 3, 3)); bn("netcnnaud.9", 384)  # noqa: E702
    conv("netcnnaud.11", (256, 384, 3, 3)); bn("netcnnaud.12", 256)  # noqa: E702
    conv("netcnnaud.14", (256, 256, 3, 3)); bn("netcnnaud.15", 256)  # noqa: E702
    conv("netcnnaud.18", (512, 256, 5, 4)); bn("netcnnaud.19", 512)  # noqa: E702
    conv("netcnnlip.0", (96, 3, 5, 7, 7)); bn("netcnnlip.1", 96)  # noqa: E702
    conv("netcnnlip.4", (256, 96, 1, 5, 5)); bn("netcnnlip.5", 256)  # noqa: E702
    conv("netcnnlip.8", (256, 256, 1, 3, 3)); bn("netcnnlip.9", 256)  # noqa: E702
    conv("netcnnlip.11", (256, 256, 1, 3, 3)); bn("netcnnlip.12", 256)  # noqa: E702
    conv("netcnnlip.14", (256, 256, 1, 3, 3)); bn("netcnnlip.15", 256)  # noqa: E702
    conv("netcnnlip.18", (512, 256, 1, 6, 6)); bn("netcnnlip.19", 512)  # noqa: E702
    for head in ("netfcaud", "netfclip"):
        conv(f"{head}.0", (512, 512)); bn(f"{head}.1", 512)  # noqa: E702
        conv(f"{head}.3", (1024, 512))
    return t


def randomize_bn(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return net


def test_official_names_and_shapes_match_the_published_model():
    ours = {k: tuple(v.shape) for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == official_table()
    assert SyncNetConfig().is_official and SyncNetConfig().lip_last_kernel == (6, 6)


def test_official_forward_shapes():
    torch.manual_seed(0)
    net = SyncNet().eval()
    with torch.no_grad():
        assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert net.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


def test_tiny_config_adapts_only_the_last_lip_kernel_and_trains():
    net = SyncNet(TINY)
    assert TINY.lip_last_kernel == (1, 2)
    assert net.netcnnlip[18].kernel_size == (1, 1, 2)
    assert net.netcnnaud[18].kernel_size == (5, 4)
    aud, lip = net(torch.randn(4, 1, 13, 20), torch.rand(4, 3, 5, 64, 96) * 255)
    assert aud.shape == lip.shape == (4, 16)
    (aud - lip).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_config_round_trip_and_errors():
    assert SyncNetConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="too small"):
        SyncNetConfig(image_size=40)
    with pytest.raises(ValueError, match="crop"):
        SyncNetConfig(crop=(0.5, 0.4, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown SyncNetConfig keys"):
        SyncNetConfig.from_dict({"widths": 3})
    with pytest.raises(ValueError, match="6 positive conv widths"):
        SyncNetConfig(audio_channels=(1, 2))


def test_forward_rejects_wrong_shapes():
    net = SyncNet(TINY).eval()
    with pytest.raises(ValueError, match=r"\(N, 1, 13, 20\)"):
        net.forward_aud(torch.randn(2, 13, 20))
    with pytest.raises(ValueError, match="BGR 0-255 windows"):
        net.forward_lip(torch.rand(2, 3, 5, 224, 224))


@pytest.mark.parametrize("config", [TINY, SyncNetConfig(image_size=(112, 112))], ids=["tiny", "112px"])
def test_fused_copy_matches_eval_mode(config):
    torch.manual_seed(1)
    net = randomize_bn(SyncNet(config)).eval()
    fused = FusedSyncNet(net)
    h, w = config.image_size
    lips, mfccs = torch.rand(3, 3, 5, h, w) * 255, torch.randn(3, 1, 13, 20) * 10
    with torch.no_grad():
        ref_l, ref_a = net.forward_lip(lips), net.forward_aud(mfccs)
        out_l, out_a = fused.forward_lip(lips), fused.forward_aud(mfccs)
    torch.testing.assert_close(out_l, ref_l, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_a, ref_a, rtol=1e-4, atol=1e-4)


def test_lip_frames_float_and_uint8_agree_and_are_bgr():
    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 256, size=(6, 224, 224, 3), dtype=np.uint8)
    official = SyncNetConfig()
    from_u8 = lip_frames(torch.from_numpy(rgb8), official)
    from_float = lip_frames(torch.from_numpy(rgb8).permute(0, 3, 1, 2).float() / 255.0, official)
    assert from_u8.shape == (6, 3, 224, 224)
    torch.testing.assert_close(from_u8, from_float)
    assert torch.equal(from_u8[:, 0], torch.from_numpy(rgb8[..., 2]).float())  # channel 0 = blue
    small = lip_frames(torch.from_numpy(rgb8), TINY)
    assert small.shape == (6, 3, 64, 96) and small.min() >= 0 and small.max() <= 255
    assert torch.equal(small, small.round())
    windows = lip_windows(small)
    assert windows.shape == (2, 3, 5, 64, 96)
    assert torch.equal(windows[1, :, 2], small[3])
    with pytest.raises(ValueError, match="float frames"):
        lip_frames(torch.rand(6, 224, 224, 3), official)


def test_audio_features_are_psf_mfcc_of_the_int16_signal():
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(0)
    audio = np.clip(rng.normal(0, 0.2, 16000), -1, 1).astype(np.float32)
    ints = quantize_int16(torch.from_numpy(audio))
    assert ints.dtype == torch.int32 and int(ints.abs().max()) <= 32768
    expected = psf.mfcc(ints.numpy().astype(np.int16), 16000)
    got = audio_features(torch.from_numpy(audio)).numpy()
    assert got.shape == expected.shape == (99, 13)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="mono"):
        audio_features(torch.zeros(2, 100))
