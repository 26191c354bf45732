"""Official PC-AVS checkpoint import: the key map covers every official tensor at paper size, and
official-named files load (tiny stand-ins for the published ones, which are not on this machine)."""
from __future__ import annotations

import pytest
import torch

from talkinghead.methods.pcavs.generate import PCAVSGenerator
from talkinghead.methods.pcavs.networks import PCAVS, PCAVSConfig
from talkinghead.methods.pcavs.official import (
    FILES,
    KEY_MAP,
    check_key_map,
    load_official,
    map_key,
    map_state_dict,
    official_shapes,
)


def test_key_map_covers_every_official_tensor_at_paper_size():
    shapes = official_shapes()
    assert set(shapes) == set(FILES) == set(KEY_MAP)
    assert sum(len(s) for s in shapes.values()) > 1000
    # a few tensors of each file, as the official classes name them
    assert shapes["netV"]["model.layer1.0.conv2.weight"] == (128, 4, 3, 3)  # ResNeXt grouped conv
    assert shapes["netV"]["fc.weight"] == (5830, 2048)
    assert shapes["netE"]["model.fc.weight"] == (512, 784)
    assert shapes["netE"]["headpose_embed.1.weight"] == (12, 512)
    assert shapes["netA_sync"]["model.attention.0.weight"] == (128, 2560, 1)
    assert shapes["netG"]["style.8.weight"] == (2560, 2560)
    assert shapes["netG"]["convs.8.conv.blur.kernel"] == (4, 4)
    assert shapes["netG"]["noises.noise_10"] == (1, 1, 224, 224)
    report = check_key_map(PCAVS(PCAVSConfig.paper()), shapes)
    assert report == {"unmapped": [], "missing": [], "mismatched": [], "uncovered": []}


def test_map_key_is_explicit():
    assert map_key("netV", "model.conv1.weight") == "netV.model.conv1.weight"
    assert map_key("netE", "headpose_embed.1.bias") == "netE.headpose_embed.1.bias"
    assert map_key("netA_sync", "fc.weight") == "netA_sync.fc.weight"
    assert map_key("netG", "to_rgbs.0.upsample.kernel") == "netG.to_rgbs.0.upsample.kernel"
    assert map_key("netG", "something_else.weight") is None
    with pytest.raises(ValueError, match="outside the PC-AVS key map"):
        map_state_dict("netV", {"bogus.weight": torch.zeros(1)})


def _write_official_files(model: PCAVS, folder, drop_counters: bool = False) -> None:
    """Official-format files of `model`: plain state dicts per network, no prefixes (DataParallel's
    ``module.`` prefix on one of them, as some re-saved copies have)."""
    for component, name in FILES.items():
        state = getattr(model, component).state_dict()
        if drop_counters:  # PyTorch < 0.4.1 checkpoints have no BatchNorm counters
            state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        if component == "netA_sync":
            state = {f"module.{k}": v for k, v in state.items()}
        torch.save(state, folder / name)


def test_load_official_files(tmp_path):
    torch.manual_seed(0)
    config = PCAVSConfig.tiny(image_size=32, num_identities=6)
    source = PCAVS(config)
    _write_official_files(source, tmp_path, drop_counters=True)
    loaded = load_official(tmp_path, config=config)
    ours = loaded.state_dict()
    for key, value in source.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(ours[key], value), key
    # a file that does not fit is an error naming the mismatch
    other = PCAVS(PCAVSConfig.tiny(image_size=32, num_identities=9))
    torch.save(other.netV.state_dict(), tmp_path / FILES["netV"])
    with pytest.raises(ValueError, match="does not fit"):
        load_official(tmp_path, config=config)
    torch.save(source.netV.state_dict(), tmp_path / FILES["netV"])
    (tmp_path / FILES["netG"]).unlink()
    with pytest.raises(FileNotFoundError, match="latest_net_G.pth"):
        load_official(tmp_path, config=config)


def test_official_generation_uses_the_loader_crop(tmp_path):
    torch.manual_seed(0)
    config = PCAVSConfig.tiny(image_size=32, num_identities=6)
    _write_official_files(PCAVS(config), tmp_path)
    generator = PCAVSGenerator(load_official(tmp_path, config=config), crop="loader")
    reference = torch.rand(3, 224, 224)
    audio = torch.randn(16000 // 5) * 0.1
    frames = torch.cat(list(generator.synthesize(reference, audio, 5)))
    assert frames.shape == (5, 3, 224, 224)
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1
    # outside the official crop (rows 192:, cols :16 and 208:) the reference is kept
    assert torch.allclose(frames[:, :, 192:, :], reference[None, :, 192:, :].expand(5, -1, -1, -1), atol=1e-6)
    assert torch.allclose(frames[:, :, :, :16], reference[None, :, :, :16].expand(5, -1, -1, -1), atol=1e-6)
