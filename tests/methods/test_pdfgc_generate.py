"""PD-FGC generation: which code drives each factor (the official inference conventions and the
bench's fixed-factor rows), checked on the codes the generator receives."""
from __future__ import annotations

import pytest
import torch

from talkinghead.generation import GenerationRequest
from talkinghead.methods.pdfgc.generate import FACTOR_SOURCES, PDFGCGenerator
from talkinghead.methods.pdfgc.networks import BLINK_DIMS, GAZE_DIMS, PDFGC, PDFGCConfig, smooth_pose

T = 5


@pytest.fixture(scope="module")
def recorded():
    """A tiny PD-FGC whose `generate` records the codes it is given; the reference, audio and three
    distinct driving videos."""
    torch.manual_seed(0)
    model = PDFGC(PDFGCConfig.tiny(image_size=32, num_identities=4)).eval()
    calls: list[dict] = []
    draw = model.generate

    def spy(appearance, appearance_map, lip, emo, eye, pose, noise_mode=None):
        calls.append({"lip": lip.clone(), "emo": emo.clone(), "eye": eye.clone(), "pose": pose.clone()})
        return draw(appearance, appearance_map, lip, emo, eye, pose, noise_mode=noise_mode)

    model.generate = spy
    reference = torch.rand(3, 32, 32)
    sources = {name: torch.rand(T, 3, 32, 32) for name in FACTOR_SOURCES.values()}
    audio = torch.randn(T * 640) * 0.1
    return model, calls, reference, sources, audio


def _codes(generator: PDFGCGenerator, calls: list, reference, audio, **kwargs) -> dict:
    calls.clear()
    frames = torch.cat(list(generator.synthesize(reference, audio, T, **kwargs)))
    assert frames.shape == (T, 3, 32, 32)
    return {k: torch.cat([c[k] for c in calls]) for k in calls[0]}


def test_each_factor_follows_its_own_source_with_the_official_scales(recorded):
    model, calls, reference, sources, audio = recorded
    generator = PDFGCGenerator(model, batch_size=2)
    cfg = model.config
    with torch.no_grad():
        ref = model.motion_codes(generator.prepare(reference[None], cfg.motion_input_size))
        own = {name: model.motion_codes(generator.prepare(frames, cfg.motion_input_size))
               for name, frames in sources.items()}
    driven = _codes(generator, calls, reference, audio, **sources)
    assert torch.allclose(driven["pose"], smooth_pose(own["pose_source"].pose), atol=1e-6)
    assert torch.allclose(driven["eye"], own["eye_source"].eye * cfg.eye_scale, atol=1e-6)
    assert torch.allclose(driven["emo"], own["emotion_source"].emo * cfg.emo_scale, atol=1e-6)
    # no source: the reference's own code for every frame
    alone = _codes(generator, calls, reference, audio)
    assert torch.allclose(alone["pose"], ref.pose.expand(T, -1), atol=1e-6)
    assert torch.allclose(alone["eye"], ref.eye.expand(T, -1) * cfg.eye_scale, atol=1e-6)
    assert torch.allclose(alone["emo"], ref.emo.expand(T, -1) * cfg.emo_scale, atol=1e-6)
    assert torch.allclose(alone["lip"], driven["lip"])  # the lip code comes from the audio alone
    # switches: a disabled factor's code is zero (only the named eye dimensions)
    off = _codes(generator, calls, reference, audio, **sources, frontal=True, neutral=True, no_blink=True)
    assert not off["pose"].any() and not off["emo"].any()
    assert not off["eye"][:, list(BLINK_DIMS)].any()
    assert torch.equal(off["eye"][:, list(GAZE_DIMS)], driven["eye"][:, list(GAZE_DIMS)])
    no_gaze = _codes(generator, calls, reference, audio, **sources, no_gaze=True)
    assert not no_gaze["eye"][:, list(GAZE_DIMS)].any()
    assert torch.equal(no_gaze["eye"][:, list(BLINK_DIMS)], driven["eye"][:, list(BLINK_DIMS)])


@pytest.mark.parametrize("factor", sorted(FACTOR_SOURCES))
def test_a_fixed_factor_ignores_the_requests_source_and_the_others_follow_theirs(recorded, factor):
    model, calls, reference, sources, audio = recorded
    request = GenerationRequest(clip_id="c", reference=reference, audio=audio, num_frames=T, **sources)
    codes = {"pose": "pose", "eye": "eye", "emotion": "emo"}
    driven = _codes(PDFGCGenerator(model), calls, reference, audio, **sources)
    alone = _codes(PDFGCGenerator(model), calls, reference, audio)
    calls.clear()
    PDFGCGenerator(model, fixed=(factor,)).generate(request)
    fixed = {k: torch.cat([c[k] for c in calls]) for k in calls[0]}
    for other, key in codes.items():
        assert not torch.allclose(driven[key], alone[key], atol=1e-4)  # the test can tell them apart
        expected = alone[key] if other == factor else driven[key]
        assert torch.allclose(fixed[key], expected, atol=1e-6), (factor, other)
    with pytest.raises(ValueError, match="fixed factors"):
        PDFGCGenerator(model, fixed=("lip",))


def test_fixed_factor_bench_rows_are_declared():
    from talkinghead.methods.registry import METHODS

    rows = METHODS["pdfgc"].bench
    assert {f"pdfgc_fixed_{factor}" for factor in FACTOR_SOURCES} <= set(rows)
