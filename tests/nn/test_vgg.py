"""VGG19 features (torchvision names), its ImageNet loading, and the pix2pixHD / PC-AVS perceptual loss."""
from __future__ import annotations

import pytest
import torch

from talkinghead import weights
from talkinghead.nn.vgg import VGG19, VGGPerceptualLoss, load_vgg19_imagenet


# torchvision's vgg19 `features`: conv index -> (in, out), written out from cfg "E"
# [64, 64, M, 128, 128, M, 256 x4, M, 512 x4, M, 512 x4, M] (conv, ReLU pairs; pools at 4, 9, 18, 27, 36).
TORCHVISION_CONVS = {
    0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256),
    16: (256, 256), 19: (256, 512), 21: (512, 512), 23: (512, 512), 25: (512, 512), 28: (512, 512),
    30: (512, 512), 32: (512, 512), 34: (512, 512),
}
TINY = (4, 8, 8, 16, 16)


def features_shapes(convs: dict) -> dict:
    t = {}
    for i, (cin, cout) in convs.items():
        t[f"features.{i}.weight"] = (cout, cin, 3, 3)
        t[f"features.{i}.bias"] = (cout,)
    return t


def tiny_convs() -> dict:
    """The same 16 convs with the TINY block widths (blocks: convs 0-2, 5-7, 10-16, 19-25, 28-34)."""
    block_of = {0: 0, 2: 0, 5: 1, 7: 1, 10: 2, 12: 2, 14: 2, 16: 2, 19: 3, 21: 3, 23: 3, 25: 3, 28: 4, 30: 4, 32: 4, 34: 4}
    out, prev = {}, 3
    for i in sorted(block_of):
        out[i] = (prev, TINY[block_of[i]])
        prev = TINY[block_of[i]]
    return out


def _shapes(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_vgg19_keys_equal_torchvision_features():
    assert _shapes(VGG19()) == features_shapes(TORCHVISION_CONVS)
    relus = [i for i, m in enumerate(VGG19().features) if isinstance(m, torch.nn.ReLU)]
    assert len(VGG19().features) == 37 and relus == [i + 1 for i in TORCHVISION_CONVS]
    # the loss keeps features up to relu5_1 (index 29): convs 0..28
    loss = VGGPerceptualLoss(pretrained=False)
    assert _shapes(loss) == {f"vgg.{k}": v for k, v in features_shapes(
        {i: c for i, c in TORCHVISION_CONVS.items() if i <= 28}).items()}
    assert not any(p.requires_grad for p in loss.parameters())


def test_loss_zero_for_identical_positive_otherwise_paper_widths():
    torch.manual_seed(0)
    loss = VGGPerceptualLoss(pretrained=False)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    with torch.no_grad():
        assert loss(x, x).item() == 0.0
        assert loss(x, y).item() > 0.0


def test_loss_layers_weights_and_gradient():
    torch.manual_seed(0)
    loss = VGGPerceptualLoss(pretrained=False, widths=TINY, imagenet_normalize=False)
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    value = loss(x, y)
    # written out: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 = features 1, 6, 11, 20, 29; weights 1/32 .. 1
    feats_x, feats_y, hx, hy = [], [], x.detach(), y
    with torch.no_grad():
        for i, module in enumerate(loss.vgg.features):
            hx, hy = module(hx.clone()), module(hy.clone())
            if i in (1, 6, 11, 20, 29):
                feats_x.append(hx)
                feats_y.append(hy)
    expected = sum(w * (a - b).abs().mean() for w, a, b in zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1), feats_x, feats_y))
    assert torch.allclose(value, expected, rtol=1e-5)
    assert feats_x[-1].shape == (2, 16, 2, 2)
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    # start_layer skips the first layers (official `layer` argument)
    with torch.no_grad():
        assert loss(x, y, start_layer=4) <= loss(x, y)
    # ImageNet normalisation changes what VGG sees
    normed = VGGPerceptualLoss(pretrained=False, widths=TINY)
    normed.load_state_dict(loss.state_dict())
    with torch.no_grad():
        assert not torch.allclose(normed(x, y), loss(x, y))
    loss.train()
    assert not loss.vgg.training


def test_missing_weights_file_raises(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.HOME_ENV, str(tmp_path))
    with pytest.raises(weights.MissingWeightsError, match="vgg19-dcbb9e9d.pth"):
        VGGPerceptualLoss()


def test_loads_torchvision_file_ignoring_classifier(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.HOME_ENV, str(tmp_path))
    torch.manual_seed(0)
    table = features_shapes(tiny_convs())  # all 16 convs, as torchvision's file
    table.update({"classifier.0.weight": (6, 5), "classifier.0.bias": (6,), "classifier.3.weight": (6, 6),
                  "classifier.3.bias": (6,), "classifier.6.weight": (4, 6), "classifier.6.bias": (4,)})
    state = {k: torch.randn(v) for k, v in table.items()}
    torch.save(state, tmp_path / weights.asset("vgg19").file)
    loss = VGGPerceptualLoss(widths=TINY)  # pretrained=True by default
    assert torch.equal(loss.vgg.features[28].weight, state["features.28.weight"])
    assert torch.equal(loss.vgg.features[0].bias, state["features.0.bias"])
    full = load_vgg19_imagenet(VGG19(TINY))
    assert torch.equal(full.features[34].weight, state["features.34.weight"])
    with pytest.raises(ValueError, match="widths"):
        load_vgg19_imagenet(VGG19((4, 8, 8, 16, 32)))
