"""`talkinghead.nn.landmarks`: the soft-argmax reads positions in input pixels, and the landmark
network learns where a feature is and passes gradients to its input."""
from __future__ import annotations

import pytest
import torch

from talkinghead.nn.fan import FANConfig
from talkinghead.nn.landmarks import LandmarkNet, soft_argmax

SIZE = 32


def tiny_trunk(**kw) -> FANConfig:
    return FANConfig(**{"stem_width": 8, "widths": (8, 16, 16), "hourglass_depth": 1, "num_heatmaps": 68,
                        "feature_dim": 8, "image_size": SIZE, "dropout": 0.0, **kw})


def test_soft_argmax_reads_a_peak_at_its_cell_centre_in_input_pixels():
    maps = torch.full((1, 2, 8, 8), -20.0)
    maps[0, 0, 3, 5] = 20.0        # cell (row 3, col 5) of 8 x 8 maps over a 32-px image: 4 px cells
    maps[0, 1, 0, 0] = maps[0, 1, 0, 1] = 20.0  # two equal peaks: their midpoint
    points = soft_argmax(maps, 1.0, 32)
    assert torch.allclose(points[0, 0], torch.tensor([5.5 * 4 - 0.5, 3.5 * 4 - 0.5]))
    assert torch.allclose(points[0, 1], torch.tensor([(0.5 * 4 - 0.5 + 1.5 * 4 - 0.5) / 2, 0.5 * 4 - 0.5]))
    flat = soft_argmax(torch.zeros(1, 1, 8, 8), 1.0, 32)  # no peak: the image centre
    assert torch.allclose(flat, torch.full((1, 1, 2), 15.5))


def test_landmark_net_checks_its_input_and_heatmap_count():
    net = LandmarkNet(tiny_trunk())
    assert net(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 68, 2)
    with pytest.raises(ValueError, match="built for 32 px"):
        net(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="68 heatmaps"):
        LandmarkNet(tiny_trunk(num_heatmaps=8))
    assert not hasattr(net.trunk, "fc") and not hasattr(net.trunk, "conv6")  # only the heatmap part


def test_landmark_net_learns_where_a_spot_is_and_gives_its_input_a_gradient():
    torch.manual_seed(0)
    net = LandmarkNet(tiny_trunk())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xy = torch.randint(4, SIZE - 4, (n, 2))
        images = -torch.ones(n, 3, SIZE, SIZE)
        for k, (x, y) in enumerate(xy.tolist()):
            images[k, :, y - 1:y + 2, x - 1:x + 2] = 1.0
        return images, xy.float()[:, None, :].expand(n, 68, 2)

    test_images, test_xy = batch(32)
    with torch.no_grad():
        before = (net.eval()(test_images) - test_xy).abs().mean()
    net.train()
    for _ in range(150):
        images, xy = batch(16)
        loss = (net(images) - xy).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = (net.eval()(test_images) - test_xy).abs().mean()
    assert after < 0.5 * before and after < 3.0, (float(before), float(after))
    images = test_images[:2].clone().requires_grad_(True)
    net(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
