"""Protocols with reference frames (`Protocol.reference_frames`): the clip's first P frames become the
request's reference video and only the rest is generated and scored; P = 0 leaves every existing
protocol as it was; the ``reference_replay`` baseline replays the reference video; the harness scores
such a protocol end to end (head-motion columns included)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.bench.methods import ReferenceReplay, build_method
from talkinghead.bench.protocol import PROTOCOLS, Protocol, get_protocol, load_clip, select_clips
from talkinghead.data.store import ClipStore
from talkinghead.generation import GenerationRequest


def test_registered_protocols_and_defaults():
    assert all(p.reference_frames == 0 for n, p in PROTOCOLS.items() if not n.endswith("rhythmic"))
    assert PROTOCOLS["synth-rhythmic"].reference_frames == 24
    assert PROTOCOLS["synth-large-rhythmic"].reference_frames == 64
    assert PROTOCOLS["synth-rhythmic"].store == PROTOCOLS["synth"].store
    with pytest.raises(ValueError, match="reference_frames"):
        Protocol("x", "vox2", "s", reference_frames=-1)


def test_a_clip_split_into_reference_video_and_scored_frames(synth_vox2_store):
    store = ClipStore(synth_vox2_store)
    plain = get_protocol("synth", store=str(synth_vox2_store), split="train", num_clips=1)
    (selection,), _ = select_clips(store, plain)
    whole = load_clip(store, selection)
    assert whole.request.reference_video is None and selection.reference_frames == 0
    p = 16
    protocol = plain.replace(reference_frames=p)
    (split_selection,), _ = select_clips(store, protocol)
    assert split_selection.clip_id == selection.clip_id and split_selection.reference_frames == p
    data = load_clip(store, split_selection)
    n = whole.request.num_frames
    request, video = data.request, data.request.reference_video
    assert request.num_frames == n - p and len(video) == p
    assert torch.equal(video.frames, whole.real_frames[:p]) and torch.equal(request.reference, whole.real_frames[0])
    arrays = store.load(selection.entry, ["landmarks", "pose"])
    assert np.allclose(video.landmarks.numpy(), arrays["landmarks"][:p])
    assert np.allclose(video.poses.numpy(), arrays["pose"][:p])
    assert torch.equal(video.audio, whole.request.audio[: p * 640])
    assert torch.equal(request.audio, whole.request.audio[p * 640:])
    assert torch.equal(data.real, whole.real[p:]) and torch.equal(data.real_frames, whole.real_frames[p:])
    assert torch.equal(request.pose_source, whole.request.pose_source[p:])
    assert torch.allclose(data.real_landmarks, whole.real_landmarks[p:], equal_nan=True)
    assert torch.equal(data.pose_frame_index, whole.pose_frame_index[p:])
    assert torch.allclose(data.driver_truth, whole.driver_truth[p:], equal_nan=True)
    # too short a clip for that many reference frames: not selected
    with pytest.raises(ValueError, match="no clip with >="):
        select_clips(store, protocol.replace(reference_frames=n))


def test_reference_replay_baseline():
    frames = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8) / 4
    from talkinghead.generation import ReferenceVideo

    video = ReferenceVideo(frames, torch.zeros(4, 68, 2), torch.zeros(4, 6), torch.zeros(4 * 640))
    request = GenerationRequest("c", frames[0], torch.zeros(9 * 640), 9, reference_video=video)
    out = build_method("reference_replay").generate(request)
    assert out[:, 0, 0, 0].mul(4).round().tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1]
    with pytest.raises(ValueError, match="needs a reference video"):
        ReferenceReplay().generate(GenerationRequest("c", frames[0], torch.zeros(640), 1))


def test_harness_scores_a_reference_frames_protocol(synth_vox2_store, tmp_path):
    from talkinghead.bench.harness import BenchConfig, run_benchmark

    result = run_benchmark(BenchConfig(
        protocol="synth-rhythmic", store=str(synth_vox2_store), split="train", num_clips=1,
        methods=["ground_truth", "static", "reference_replay"], metrics=["factor_control", "pose_lmd", "lmd", "ssim", "head_motion"],
        bench_root=str(tmp_path / "bench"), out=str(tmp_path / "bench" / "run"), wandb=False, progress=False,
        samples=0, command=["pytest"]))
    assert not result.errors, result.errors
    rows = {m.name: m for m in result.methods}
    assert all(m.clips_ok == 1 for m in rows.values())
    truth = rows["ground_truth"].values
    assert truth["SSIM"] == pytest.approx(1.0) and truth["HM-rot"] == pytest.approx(0.0, abs=1e-6)
    assert truth["HM-speed"] == pytest.approx(0.0, abs=1e-9)
    # the real frames' landmarks are cached by their frame numbers (24..), as the pose source's are:
    # the ground truth's landmark distances are exactly 0
    assert truth["LMD"] == pytest.approx(0.0, abs=1e-6) and truth["LMD-pose"] == pytest.approx(0.0, abs=1e-6)
    assert rows["static"].values["HM-rot"] > 0 and rows["reference_replay"].values["SSIM"] < 1.0
    assert result.run_info["clips"][0]["reference_frames"] == 24
