"""Rhythmic Head generator Theta (`Composer`) and its official import.

Paper size: the config matches the official defaults and the state dict matches the official
``latest_net_G.pth`` layout tensor for tensor (built once; a 256 px forward is marked slow). Tiny
(64 px): forward shapes for K = 1 and K = n_shot in both official layouts, gradients reach every
trainable parameter (and exactly the documented parameters are dead), official-format files load
bit-identically, bad files are errors naming the file. The spectral-norm layers match
``torch.nn.utils.spectral_norm`` bit for bit.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.methods.rhythmic.composer import Composer, ComposerConfig, flow_warp
from talkinghead.methods.rhythmic.official import (
    ASSET,
    FILE,
    KEYMAP,
    SKIP,
    check_key_map,
    config_from_state_dict,
    load_official,
    map_state_dict,
    official_options,
    official_shapes,
)
from talkinghead.nn.spade import SNConv2d, SNLinear, per_sample_conv2d, per_sample_conv_transpose2d
from talkinghead.weights import MissingWeightsError, asset


def inputs(cfg: ComposerConfig, n: int = 2, k: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size

    def img(*shape):
        return torch.rand(*shape, generator=g) * 2 - 1

    def lab(*shape):
        return (torch.rand(*shape, generator=g) > 0.9).float()  # sparse 0/1 edge map

    return dict(label=lab(n, 1, s, s), ref_labels=lab(n, k, 1, s, s), ref_images=img(n, k, 3, s, s),
                warp_ref_label=lab(n, 1, s, s), warp_ref_image=img(n, 3, s, s), ani_label=lab(n, 1, s, s),
                ani_image=img(n, 3, s, s))


def random_official_state(cfg: ComposerConfig, seed: int = 1, temporal: bool = False) -> dict[str, torch.Tensor]:
    """Random tensors in the official layout of `cfg` (from the official shape table, not our model)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(**official_options(cfg), temporal=temporal)["netG"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("weight_u", "weight_v")):
            continue
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    for key in [k for k in state if k.endswith("weight_orig")]:  # u, v as a trained file holds them
        mat, prefix = state[key].flatten(1), key[: -len("weight_orig")]
        u = F.normalize(torch.randn(mat.shape[0], generator=g), dim=0)
        for _ in range(5):
            v = F.normalize(mat.t() @ u, dim=0)
            u = F.normalize(mat @ v, dim=0)
        state[prefix + "weight_u"], state[prefix + "weight_v"] = u, v
    return state


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return Composer(ComposerConfig.paper()).eval()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return Composer(ComposerConfig.tiny())


# ---------------------------------------------------------------------------------------------
# paper size
# ---------------------------------------------------------------------------------------------
def test_paper_config_is_the_official_default():
    cfg = ComposerConfig.paper()
    assert (cfg.image_size, cfg.ngf, cfg.n_downsample_G, cfg.n_downsample_A) == (256, 32, 5, 2)
    assert cfg.n_adaptive_layers == 4
    assert (cfg.n_fc_layers, cfg.embed_ks, cfg.spade_ks, cfg.n_sc_layers, cfg.n_shot) == (2, 1, 1, 2, 8)
    assert (cfg.nff, cfg.n_downsample_F, cfg.n_blocks_F, cfg.flow_multiplier) == (32, 3, 6, 20.0)
    assert cfg.hybrid and cfg.warp_ref and cfg.warp_ani and cfg.raw_output and cfg.label_nc == 1
    assert cfg.channels == [32, 64, 128, 256, 512, 1024, 1024]
    assert cfg.hidden_nc == [[32] * 4, [64] * 4, [128], [256], [512], [1024]]
    assert cfg.attention_size == 64
    assert ComposerConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_state_dict_is_the_official_layout(paper_model):
    shapes = official_shapes()["netG"]
    assert len(shapes) == 1124
    # a few tensors as the official modules name them
    assert shapes["netG.encoder.atten1.conv.weight_orig"] == (128, 128 * 8, 3, 3)
    assert shapes["netG.encoder.fusion.conv_s.weight_orig"] == (128, 256, 1, 1)
    assert shapes["netG.weight_gen.fc_spade_0_3.2.weight_orig"] == ((256 + 1) * 2, 512)
    assert shapes["netG.weight_gen.fc_spade_1_3.2.weight_u"] == (256 + 1,)
    assert shapes["netG.weight_gen.fc_spade_e_0.2.weight_v"] == (64,)
    assert shapes["netG.label_embedding.up_4.0.weight"] == (1024, 512, 3, 3)
    assert "netG.label_embedding.up_3.0.weight" not in shapes  # generated (adaptive) up-conv
    assert shapes["netG.up_0.bn_0_1.mlp_gamma.weight"] == (64, 32, 1, 1)
    assert "netG.up_0.bn_0_0.mlp_gamma.weight" not in shapes  # generated SPADE weights
    assert shapes["netG.up_0.bn_s.mlp_beta3.bias"] == (64,)
    assert shapes["netG.up_5.bn_0.batch_norm.running_var"] == (1024,)
    assert shapes["warp.flow_network_ani.down_flow.0.0.weight_orig"] == (32, 5, 3, 3)
    assert "warp.flow_network_ani.down_flow.0.0.bias" not in shapes
    assert shapes["warp.flow_network_ref.res_flow.5.bn_1.num_batches_tracked"] == ()
    assert shapes["img_ani_embedding.down_4.0.weight"] == (1024, 512, 3, 3)
    report = check_key_map(paper_model)
    assert report == {"unmapped": [], "missing": [], "mismatched": [], "uncovered": [], "skipped": []}
    ours = paper_model.state_dict()
    assert set(ours) == set(shapes)
    assert all(tuple(ours[k].shape) == v for k, v in shapes.items())
    # the temporal branch of a --n_frames_G > 1 model is the only thing skipped
    temporal = official_shapes(temporal=True)
    skipped = check_key_map(paper_model, temporal)["skipped"]
    assert skipped and all(k.split(":", 1)[1].startswith(SKIP["netG"]) for k in skipped)
    assert len(skipped) == len(temporal["netG"]) - len(shapes)


@pytest.mark.slow
def test_paper_size_forward(paper_model):
    cfg = paper_model.cfg
    x = inputs(cfg, n=1, k=1)
    with torch.no_grad():
        out = paper_model(**x)
    assert out.image.shape == out.raw.shape == (1, 3, 256, 256)
    assert out.flow_ref.shape == out.flow_ani.shape == (1, 2, 256, 256)
    assert out.attention.shape == (1, 1, 64 * 64)
    assert torch.isfinite(out.image).all() and out.image.abs().max() < 1


# ---------------------------------------------------------------------------------------------
# tiny: forward, gradients
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hybrid", [True, False])
@pytest.mark.parametrize("k", [1, 2])
def test_tiny_forward_shapes(hybrid, k):
    torch.manual_seed(0)
    cfg = ComposerConfig.tiny(hybrid=hybrid)
    model = Composer(cfg).eval()
    with torch.no_grad():
        out = model(**inputs(cfg, n=2, k=k))
    s = cfg.image_size
    for name in ("image", "raw", "warped_ref", "warped_ani"):
        assert getattr(out, name).shape == (2, 3, s, s), name
        assert torch.isfinite(getattr(out, name)).all()
    assert out.image.abs().max() < 1 and out.raw.abs().max() < 1
    assert out.flow_ref.shape == out.flow_ani.shape == (2, 2, s, s)
    assert out.weight_ref.shape == out.weight_ani.shape == (2, 1, s, s)
    assert ((out.weight_ref > 0) & (out.weight_ref < 1)).all()
    assert out.attention.shape == (2, k, cfg.attention_size ** 2)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(2, cfg.attention_size ** 2))
    assert out.ref_idx.shape == (2,) and out.ref_idx.max() < k


def test_map_order_is_a_config_choice(tiny_model):
    swapped = Composer(replace(tiny_model.cfg, ani_first=True)).eval()
    swapped.load_state_dict(tiny_model.state_dict())
    x = inputs(tiny_model.cfg)
    with torch.no_grad():
        a, b = tiny_model.eval()(**x), swapped(**x)
    assert torch.equal(a.raw, b.raw) and torch.equal(a.warped_ref, b.warped_ref)  # label-only / flow paths
    assert not torch.equal(a.image, b.image)


def test_missing_warp_inputs_skip_their_branch(tiny_model):
    x = inputs(tiny_model.cfg)
    del x["ani_label"], x["ani_image"]
    with torch.no_grad():
        out = tiny_model.eval()(**x)
    assert out.warped_ani is None and out.flow_ani is None and out.weight_ani is None
    assert out.warped_ref is not None and out.image.shape == (2, 3, 64, 64)


def test_hybrid_embedding_needs_its_k(tiny_model):
    with pytest.raises(ValueError, match="K = 2"):
        tiny_model(**inputs(tiny_model.cfg, k=3))
    with pytest.raises(ValueError, match=r"\(N, K, C, S, S\)"):
        x = inputs(tiny_model.cfg)
        tiny_model(x["label"], x["ref_labels"][:, 0], x["ref_images"][:, 0])


@pytest.mark.parametrize("overrides", [{}, {"hybrid": False}, {"warp_ani": False},
                                       {"warp_ref": False, "ani_first": True, "hybrid": False}])
def test_gradients_reach_every_trainable_parameter(overrides):
    torch.manual_seed(0)
    cfg = ComposerConfig.tiny(**overrides)
    model = Composer(cfg).train()
    unused = set(model.unused_parameter_names())
    assert unused and {n for n, p in model.named_parameters() if not p.requires_grad} == unused
    assert len(model.trained_parameters()) == sum(1 for _ in model.parameters()) - len(unused)
    # with everything trainable, exactly the documented parameters get no gradient
    for p in model.parameters():
        p.requires_grad_(True)
    out = model(**inputs(cfg, n=2, k=cfg.n_shot))
    loss = out.image.mean() + out.raw.mean()
    for warped in (out.warped_ref, out.warped_ani):
        if warped is not None:
            loss = loss + warped.mean()
    loss.backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert no_grad == unused
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the embedding networks that make the SPADE weights are trained through the generated weights
    assert model.netG.weight_gen.fc_spade_e_0[0].weight_orig.grad.abs().sum() > 0
    assert model.netG.atten_gen.atn_key_first.conv.weight_orig.grad.abs().sum() > 0


def test_copyable_after_a_training_forward(tiny_model):
    tiny_model.train()(**inputs(tiny_model.cfg))
    clone = copy.deepcopy(tiny_model).eval()
    x = inputs(tiny_model.cfg, seed=3)
    with torch.no_grad():
        assert torch.equal(clone(**x).image, tiny_model.eval()(**x).image)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        ComposerConfig.tiny(image_size=60)
    with pytest.raises(ValueError, match="n_adaptive_layers"):
        ComposerConfig.tiny(n_adaptive_layers=4)
    with pytest.raises(ValueError, match="odd"):
        ComposerConfig.tiny(spade_ks=2)
    with pytest.raises(ValueError, match="unknown"):
        ComposerConfig.from_dict({"ngff": 3})


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------
def test_spectral_norm_layers_match_the_torch_hook():
    torch.manual_seed(0)
    for ours, reference, x in (
        (SNConv2d(3, 5, 3, stride=2, padding=1), nn.utils.spectral_norm(nn.Conv2d(3, 5, 3, stride=2, padding=1)),
         torch.randn(2, 3, 9, 9)),
        (SNLinear(7, 4), nn.utils.spectral_norm(nn.Linear(7, 4)), torch.randn(3, 7)),
    ):
        assert list(ours.state_dict()) == list(reference.state_dict())
        ours.load_state_dict(reference.state_dict())
        for training in (True, True, False):
            ours.train(training), reference.train(training)
            assert torch.equal(ours(x), reference(x))
            assert torch.equal(ours.weight_u, reference.weight_u) and torch.equal(ours.weight_v, reference.weight_v)


def test_per_sample_convolutions_match_a_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, 6, generator=g)
    w, b = torch.randn(3, 5, 4, 3, 3, generator=g), torch.randn(3, 5, generator=g)
    loop = torch.cat([F.conv2d(x[i:i + 1], w[i], b[i], stride=2, padding=1) for i in range(3)])
    torch.testing.assert_close(per_sample_conv2d(x, w, b, stride=2), loop)
    wt = torch.randn(3, 4, 2, 1, 1, generator=g)  # (N, C_in, C_out, k, k)
    loop = torch.cat([F.conv_transpose2d(x[i:i + 1], wt[i], b[i, :2], stride=2, output_padding=1) for i in range(3)])
    out = per_sample_conv_transpose2d(x, wt, b[:, :2])
    assert out.shape == (3, 2, 12, 12)
    torch.testing.assert_close(out, loop)


def test_flow_warp():
    image = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6)
    assert torch.allclose(flow_warp(image, torch.zeros(2, 2, 5, 6)), image, atol=1e-4)
    flow = torch.zeros(2, 2, 5, 6)
    flow[:, 0] = 1.0  # sample one pixel to the right
    shifted = flow_warp(image, flow)
    assert torch.allclose(shifted[..., :-1], image[..., 1:], atol=1e-3)
    assert torch.allclose(shifted[..., -1], image[..., -1], atol=1e-3)  # border padding


# ---------------------------------------------------------------------------------------------
# official files
# ---------------------------------------------------------------------------------------------
def test_asset_and_key_map():
    assert asset(ASSET).file == f"rhythmic/{FILE}"
    assert KEYMAP.files == {"netG": FILE}
    assert SKIP == {"netG": ("img_prev_embedding.", "warp.flow_network_temp.")}


@pytest.mark.parametrize("overrides", [{}, {"hybrid": False}])
def test_official_file_loads_bit_identically(tmp_path, overrides):
    cfg = ComposerConfig.tiny(**overrides)
    state = random_official_state(cfg)
    # what the official saver might add: a DataParallel prefix, the temporal branch (skipped)
    extra = {k: v for k, v in random_official_state(cfg, temporal=True).items() if k.startswith(SKIP["netG"])}
    assert extra
    path = tmp_path / FILE
    torch.save({f"module.{k}": v for k, v in {**state, **extra}.items()}, path)
    assert config_from_state_dict(torch.load(path, weights_only=True), base=cfg) == cfg
    loaded = load_official(tmp_path, Composer(cfg))
    assert not loaded.training
    reference = Composer(cfg)
    reference.load_state_dict(state)
    reference.eval()
    x = inputs(cfg, k=cfg.n_shot)
    with torch.no_grad():
        a, b = loaded(**x), reference(**x)
        fresh = Composer(cfg).eval()(**x)
    assert torch.isfinite(a.image).all() and torch.isfinite(a.raw).all()
    for name in ("image", "raw", "warped_ref", "warped_ani", "flow_ref", "weight_ani", "attention"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.image, fresh.image)
    assert map_state_dict(state).keys() == state.keys()
    # the file path itself works too, and the model can come from the file
    assert torch.equal(load_official(path, Composer(cfg)).netG.conv_img.weight, reference.netG.conv_img.weight)


def test_model_built_from_the_file(tmp_path):
    cfg = ComposerConfig.tiny()
    state = random_official_state(cfg)
    torch.save(state, tmp_path / FILE)
    model = load_official(tmp_path)  # geometry from the tensors, image_size from the paper preset
    assert model.cfg == replace(cfg, image_size=256)
    assert config_from_state_dict(state, base=ComposerConfig.tiny(hybrid=False, n_shot=5)) == cfg
    reference = Composer(cfg)
    reference.load_state_dict(state)
    x = inputs(cfg)
    with torch.no_grad():  # fully convolutional: runs at 64 px as well
        assert torch.equal(model(**x).image, reference.eval()(**x).image)


def test_bad_files_name_the_file(tmp_path, monkeypatch):
    cfg = ComposerConfig.tiny()
    with pytest.raises(FileNotFoundError, match=FILE):
        load_official(tmp_path, Composer(cfg))
    bad = tmp_path / "garbage" / FILE
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=str(bad)):
        load_official(bad, Composer(cfg))
    state = random_official_state(cfg)
    cases = {
        "lacks": {k: v for k, v in state.items() if k != "netG.up_0.conv_1.bias"},
        "not a complete Rhythmic Head generator": {k: v for k, v in state.items() if "conv_img" not in k},
        "does not fit": {**state, "netG.conv_img.weight": torch.zeros(3, 8, 5, 5)},
        "outside the Rhythmic Head key map": {**state, "refiner.conv.weight": torch.zeros(1)},
        "not a Rhythmic Head generator": {k: v for k, v in state.items() if ".encoder." not in k},
    }
    for i, (message, broken) in enumerate(cases.items()):
        path = tmp_path / f"case{i}.pth"
        torch.save(broken, path)
        with pytest.raises(ValueError, match=message) as info:
            load_official(path, Composer(cfg))
        assert str(path) in str(info.value)
    # a model of the other layout / another K
    path = tmp_path / "ok.pth"
    torch.save(state, path)
    for other in (ComposerConfig.tiny(hybrid=False), ComposerConfig.tiny(n_shot=3)):
        with pytest.raises(ValueError, match="config_from_state_dict") as info:
            load_official(path, Composer(other))
        assert str(path) in str(info.value)
    # through the weights registry: missing asset, then present
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path / "home"))
    with pytest.raises(MissingWeightsError, match=FILE):
        load_official(None, Composer(cfg))
    (tmp_path / "home" / "rhythmic").mkdir(parents=True)
    torch.save(state, tmp_path / "home" / "rhythmic" / FILE)
    assert isinstance(load_official(None, Composer(cfg)), Composer)
