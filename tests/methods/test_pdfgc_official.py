"""Official PD-FGC checkpoint import: the key map covers every official tensor at paper size, it
skips exactly what the official loader skips, and official-format files load (random paper-size
tensors in memory; tiny stand-ins written to disk for the file path and a forward)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from talkinghead.methods.pdfgc.networks import PDFGC, PDFGCConfig
from talkinghead.methods.pdfgc.official import (
    ASSETS,
    FILES,
    KEY_MAP,
    KEYMAP,
    SKIP,
    check_key_map,
    load_official,
    map_key,
    map_state_dict,
    official_shapes,
    training_leftover_shapes,
)
from talkinghead.weights import asset


def official_loader_skips(component: str, key: str) -> bool:
    """The skip rules of the official ``lib/model_builder.py`` (substring tests), transcribed."""
    if component in ("net_appearance", "net_audio") and "fc" in key and "model" not in key:
        return True
    if component == "net_motion":
        return any(name in key for name in ("mouth_fc", "headpose_fc", "classifier", "to_feature", "to_embed"))
    if component == "net_audio":
        return any(name in key for name in ("model.layer4_exp", "model.attention_exp", "model.fc_exp", "exp_embed"))
    return False


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return PDFGC(PDFGCConfig.paper())


def test_files_and_assets():
    assert FILES == {"net_appearance": "appearance_model.pth", "net_motion": "motion_model.pth",
                     "net_audio": "audio_model.pth", "net_generator": "generator_model.pth"}
    assert set(FILES) == set(ASSETS) == set(KEY_MAP) == set(SKIP)
    for component, name in ASSETS.items():
        assert asset(name).file == f"pdfgc/{FILES[component]}"


def test_key_map_covers_every_official_tensor_at_paper_size(paper_model):
    shapes = official_shapes()
    assert set(shapes) == set(FILES)
    assert sum(len(s) for s in shapes.values()) > 1000
    # a few tensors of each file, as the official classes name them
    assert shapes["net_appearance"]["model.layer1.0.conv2.weight"] == (128, 4, 3, 3)
    assert shapes["net_appearance"]["fc.weight"] == (5995, 2048)
    assert shapes["net_motion"]["to_eye.2.running_var"] == (512,)
    assert shapes["net_motion"]["emo_embed.1.weight"] == (30, 512)
    assert shapes["net_motion"]["mouth_embed.1.weight"] == (500, 512)
    assert shapes["net_audio"]["mouth_embed.1.weight"] == (500, 512)
    assert shapes["net_audio"]["model.attention.0.weight"] == (128, 2560, 1)
    assert shapes["net_generator"]["style.8.weight"] == (2590, 2590)
    assert shapes["net_generator"]["convs.0.conv.modulation.weight"] == (512, 2590)
    report = check_key_map(paper_model, shapes)
    skipped = report.pop("skipped")
    assert report == {"unmapped": [], "missing": [], "mismatched": [], "uncovered": []}
    assert skipped == [f"{c}:{k}" for c, t in shapes.items() for k in t if official_loader_skips(c, k)]
    # without the assumed training leftovers, only the appearance classifier is skipped
    lean = check_key_map(paper_model, official_shapes(leftovers=False))
    assert lean["skipped"] == ["net_appearance:fc.weight", "net_appearance:fc.bias"]
    assert lean["uncovered"] == []


def test_skipped_keys_are_exactly_the_official_loaders():
    shapes = official_shapes()
    for component, tensors in shapes.items():
        for key in tensors:
            assert (map_key(component, key) is None) == official_loader_skips(component, key), f"{component}:{key}"
    # every name on the official skip list is exercised, and it is all the leftovers hold
    for component, prefixes in SKIP.items():
        for prefix in prefixes:
            assert any(k.startswith(prefix) for k in shapes[component]), f"{component}:{prefix}"
    for component, tensors in training_leftover_shapes().items():
        assert all(map_key(component, k) is None for k in tensors)


def test_map_key_is_explicit():
    assert map_key("net_appearance", "model.conv1.weight") == "net_appearance.model.conv1.weight"
    assert map_key("net_appearance", "model.fc.weight") == "net_appearance.model.fc.weight"  # kept officially
    assert map_key("net_appearance", "fc.weight") is None
    assert map_key("net_motion", "to_emo.2.running_mean") == "net_motion.to_emo.2.running_mean"
    assert map_key("net_motion", "to_feature.0.weight") is None
    assert map_key("net_audio", "model.layer1.0.se.fc.0.weight") == "net_audio.model.layer1.0.se.fc.0.weight"
    assert map_key("net_audio", "model.fc.bias") == "net_audio.model.fc.bias"
    assert map_key("net_audio", "model.layer4_exp.0.conv1.weight") is None  # under model., still skipped
    assert map_key("net_audio", "exp_embed.1.weight") is None
    assert map_key("net_generator", "noises.noise_3") == "net_generator.noises.noise_3"
    with pytest.raises(ValueError, match="generator_model.pth.*outside the PD-FGC key map"):
        map_key("net_generator", "something_else.weight")
    with pytest.raises(ValueError, match="motion_model.pth: keys outside the PD-FGC key map"):
        map_state_dict("net_motion", {"bogus.weight": torch.zeros(1)})


def test_paper_size_official_layout_loads(paper_model):
    """Random tensors in every official paper-size layout load through the key map: each mapped
    tensor lands in its place, skipped ones nowhere, our training-only heads keep their values."""
    torch.manual_seed(1)
    shapes = official_shapes()
    states = {c: {k: torch.randn(s) if s else torch.tensor(7) for k, s in t.items()} for c, t in shapes.items()}
    before = {k: v.clone() for k, v in paper_model.state_dict().items() if k.startswith("net_motion.classifier.")}
    skipped = KEYMAP.load_into(paper_model, states)
    assert {c: len(v) for c, v in skipped.items()} == {
        c: sum(official_loader_skips(c, k) for k in shapes[c]) for c in shapes}
    ours = paper_model.state_dict()
    for component, state in states.items():
        for key, value in state.items():
            target = map_key(component, key)
            if target is not None:
                assert torch.equal(ours[target], value), target
    for key, value in before.items():
        assert torch.equal(ours[key], value)


def _write_official_files(model: PDFGC, folder, drop_counters: bool = False) -> None:
    """Official-format files of `model`: plain state dicts per network without prefixes, holding
    what the official modules hold plus the training leftovers the official loader skips (tiny,
    any shape), and DataParallel's ``module.`` prefix on one of them."""
    extra = {"net_audio": {"fc.weight": torch.randn(5, 4), "model.layer4_exp.0.conv1.weight": torch.randn(2, 2),
                           "model.attention_exp.0.bias": torch.randn(3), "model.fc_exp.weight": torch.randn(2, 3),
                           "exp_embed.1.weight": torch.randn(3, 4)}}
    for component, name in FILES.items():
        state = {k: v for k, v in getattr(model, component).state_dict().items()}
        state.update(extra.get(component, {}))
        if drop_counters:  # files of old PyTorch have no BatchNorm counters
            state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        if component == "net_audio":
            state = {f"module.{k}": v for k, v in state.items()}
        torch.save(state, folder / name)


def test_load_official_files_and_forward(tmp_path):
    torch.manual_seed(0)
    config = PDFGCConfig.tiny(image_size=32, num_identities=6)
    source = PDFGC(config).eval()
    _write_official_files(source, tmp_path, drop_counters=True)
    torch.manual_seed(123)  # the loaded model's own initialisation differs from the source's
    loaded = load_official(tmp_path, config=config)
    assert not loaded.training
    ours, theirs = loaded.state_dict(), source.state_dict()
    for key, value in theirs.items():
        if key.endswith("num_batches_tracked"):
            continue
        unfilled = key.startswith(("net_appearance.fc.", "net_motion.classifier.", "net_motion.mouth_fc.",
                                   "net_motion.headpose_fc.", "net_motion.to_feature.", "net_motion.to_embed."))
        if unfilled and value.dim() == 2:  # Linear weights skipped as the official loader does: not loaded
            assert not torch.equal(ours[key], value), key
        elif not unfilled:
            assert torch.equal(ours[key], value), key
    # the loaded networks compute what the source networks compute
    ref = torch.rand(1, 3, 32, 32) * 2 - 1
    mel = torch.rand(4, 1, 80, 20)
    frames = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want = source(ref, mel, pose_frames=frames, emo_frames=frames, eye_frames=frames, noise_mode="const")
        got = loaded(ref, mel, pose_frames=frames, emo_frames=frames, eye_frames=frames, noise_mode="const")
        assert torch.equal(got, want)
        assert torch.equal(loaded.motion_codes(frames).emo, source.motion_codes(frames).emo)


def test_bad_files_name_the_file(tmp_path):
    torch.manual_seed(0)
    config = PDFGCConfig.tiny(image_size=32, num_identities=6)
    source = PDFGC(config)
    _write_official_files(source, tmp_path)
    load_official(tmp_path, config=config)  # the good set loads
    # a file of another size: wrong shapes, named
    other = PDFGC(replace(config, motion=replace(config.motion, emo_dim=config.emo_dim + 1),
                          generator=replace(config.generator, style_dim=config.style_dim + 1)))
    torch.save(other.net_motion.state_dict(), tmp_path / FILES["net_motion"])
    with pytest.raises(ValueError, match=r"motion_model.pth does not fit .*emo_embed"):
        load_official(tmp_path, config=config)
    torch.save(source.net_motion.state_dict(), tmp_path / FILES["net_motion"])
    # a tensor missing
    state = source.net_generator.state_dict()
    del state["to_rgbs.0.bias"]
    torch.save(state, tmp_path / FILES["net_generator"])
    with pytest.raises(ValueError, match="generator_model.pth lacks 1 tensors"):
        load_official(tmp_path, config=config)
    # a key outside the map
    mystery = {**source.net_generator.state_dict(), "mystery.weight": torch.zeros(1)}
    torch.save(mystery, tmp_path / FILES["net_generator"])
    with pytest.raises(ValueError, match="generator_model.pth: keys outside"):
        load_official(tmp_path, config=config)
    # not a state dict
    torch.save([torch.zeros(1)], tmp_path / FILES["net_generator"])
    with pytest.raises(ValueError, match="generator_model.pth: not a state dict"):
        load_official(tmp_path, config=config)
    # a missing file
    (tmp_path / FILES["net_generator"]).unlink()
    with pytest.raises(FileNotFoundError, match="generator_model.pth: missing"):
        load_official(tmp_path, config=config)
    # components load on their own
    part = load_official(tmp_path, components=("net_motion",), config=config)
    assert torch.equal(part.net_motion.emo_embed[1].weight, source.net_motion.emo_embed[1].weight)


def test_official_loader_crop_is_pasted_back_into_the_reference():
    from talkinghead.methods.pdfgc.generate import PDFGCGenerator

    torch.manual_seed(0)
    model = PDFGC(PDFGCConfig.tiny()).eval()
    reference = torch.rand(3, 224, 224)
    audio = torch.randn(3 * 640) * 0.1
    cropped = torch.cat(list(PDFGCGenerator(model, crop="loader").synthesize(reference, audio, 3)))
    plain = torch.cat(list(PDFGCGenerator(model).synthesize(reference, audio, 3)))
    assert cropped.shape == plain.shape == (3, 3, 224, 224)
    # outside rows 0:192, cols 16:208 the frame is the reference; inside, the model's output
    assert torch.equal(cropped[:, :, 192:], reference[None, :, 192:].expand(3, -1, -1, -1))
    assert torch.equal(cropped[:, :, :, :16], reference[None, :, :, :16].expand(3, -1, -1, -1))
    assert not torch.allclose(plain[:, :, 192:], reference[None, :, 192:].expand(3, -1, -1, -1), atol=0.05)
    assert float((cropped[:, :, 8:184, 24:200] - reference[None, :, 8:184, 24:200]).abs().mean()) > 0.05
    with pytest.raises(ValueError, match="crop"):
        PDFGCGenerator(model, crop="centre")
