"""Pose transfer in the benchmark: `pose_landmarks` from the pose source, the `synth-pose` protocol
with LMD-pose, and the `pcavs_fixed_pose` method."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.bench.harness import BenchConfig, run_benchmark
from talkinghead.bench.methods import METHODS, GenerationRequest, build_method, method_names, method_spec
from talkinghead.bench.protocol import frames_tensor
from talkinghead.data.store import ClipStore
from talkinghead.metrics.base import METRICS, ClipMetric, metric_names, register_metric
from talkinghead.metrics.image import frames_to_uint8


class BenchTestPose(ClipMetric):
    """Records the landmark inputs it gets; its detector gives every point the frame's mean colour
    (cheap and exact), like LMD's ``landmarks(images)`` that the harness calls on the pose source."""

    inputs = ("fake", "pose_landmarks")
    optional_inputs = ("real_landmarks",)
    columns = {"POSETEST": False}
    received: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    detected_frames = 0

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    @staticmethod
    def points(images: np.ndarray) -> np.ndarray:
        return np.repeat(images.reshape(len(images), -1, 3).mean(1)[:, None, :2], 68, axis=1).astype(np.float32)

    def landmarks(self, images):
        BenchTestPose.detected_frames += len(images)
        return self.points(images), np.ones(len(images), bool)

    def update(self, fake, pose_landmarks, real_landmarks=None):
        BenchTestPose.received.append((pose_landmarks.cpu(), None if real_landmarks is None else real_landmarks.cpu()))
        self.total += 1.0

    def compute(self):
        return {"POSETEST": self.total.float()}


@pytest.fixture(scope="module", autouse=True)
def registered():
    metric_names()  # the built-in metrics first
    register_metric("bench_test_pose")(BenchTestPose)
    yield
    METRICS.pop("bench_test_pose", None)


def _config(store: Path, tmp: Path, **changes) -> BenchConfig:
    base = dict(protocol="synth-pose", store=str(store), split="train", num_clips=2, bench_root=str(tmp / "bench"),
                out=str(tmp / "bench" / "run"), wandb=False, progress=False, samples=0, command=["pytest"],
                methods=["ground_truth", "static"])
    base.update(changes)
    return BenchConfig(**base)


def _reset() -> None:
    BenchTestPose.received = []
    BenchTestPose.detected_frames = 0


def test_pose_landmarks_cross_all_come_from_the_other_clip(synth_vox2_store, tmp_path):
    _reset()
    result = run_benchmark(_config(synth_vox2_store, tmp_path, metrics=["bench_test_pose"], methods=["static"]),
                           log=lambda m: None)
    assert result.methods[0].clips_ok == 2 and result.methods[0].values["POSETEST"] == 2
    store = ClipStore(synth_vox2_store)
    for selection, (pose, real) in zip(result.selections, BenchTestPose.received):
        source = selection.source
        assert source["clip_id"] != selection.clip_id and real is None  # cross-driven: no real landmarks
        count = int(selection.entry["num_frames"])
        index = np.minimum(np.arange(count), int(source["num_frames"]) - 1)  # frame min(t, len - 1) at t
        source_frames = frames_tensor(store.load_frames(source, range(int(source["num_frames"]))))
        expected = BenchTestPose.points(frames_to_uint8(source_frames))[index]
        assert pose.shape == (count, 68, 2) and np.allclose(pose.numpy(), expected)
        own = BenchTestPose.points(store.load_frames(selection.entry, range(count)))
        assert not np.allclose(pose.numpy(), own)
    # each pose-source frame is detected once, not once per method or per repeat
    assert BenchTestPose.detected_frames == sum(int(s.source["num_frames"]) for s in result.selections)


def test_pose_landmarks_self_equal_real_landmarks(synth_vox2_store, tmp_path):
    _reset()
    config = _config(synth_vox2_store, tmp_path, protocol="synth", metrics=["bench_test_pose"],
                     methods=["ground_truth", "static"])
    result = run_benchmark(config, log=lambda m: None)
    assert len(BenchTestPose.received) == 4  # 2 methods x 2 clips
    for pose, real in BenchTestPose.received:
        assert real is not None and torch.equal(pose, real)
    # real and pose-source frames are the same frames here: detected once per clip for both methods
    assert BenchTestPose.detected_frames == sum(int(s.entry["num_frames"]) for s in result.selections)

    # store_landmarks: the store's landmarks of the pose source (here the clip itself)
    _reset()
    run_benchmark(_config(synth_vox2_store, tmp_path, protocol="synth", metrics=["bench_test_pose"],
                          methods=["static"], store_landmarks=True, out=str(tmp_path / "stored")), log=lambda m: None)
    assert BenchTestPose.detected_frames == 0
    for pose, real in BenchTestPose.received:
        assert torch.allclose(pose, real, equal_nan=True) and pose.abs().nanmean() > 20  # pixel coordinates


def test_synth_pose_run_fills_lmd_pose_and_leaves_lmd_na(synth_vox2_store, tmp_path):
    pytest.importorskip("dlib")
    result = run_benchmark(_config(synth_vox2_store, tmp_path, metrics=["pose_lmd", "lmd"]), log=lambda m: None)
    assert result.protocol.name == "synth-pose" and result.run_info["setting"] == "cross"
    assert list(result.columns) == ["LMD-pose", "LMD", "LMD-mouth", "LMD-contour"]
    assert result.metric_info["pose_lmd"]["status"] == "ok" and result.metric_info["lmd"]["status"] == "n/a"
    for m in result.methods:
        assert m.clips_ok == 2 and not m.errors
        assert isinstance(m.values["LMD-pose"], float) and m.values["LMD-pose"] > 0
        assert m.values["LMD"] is None and "cross-driven" in m.na["LMD"]
    table = (result.run_dir / "table.md").read_text()
    assert "LMD-pose ↓" in table


def test_lmd_and_lmd_pose_share_one_detection_per_frame(synth_vox2_store, tmp_path, monkeypatch):
    """Self-driven, LMD and LMD-pose need the real, pose-source and generated frames' landmarks;
    the real and pose-source frames are the same frames, and the generated ones are detected once
    for both metrics: 2 detections per frame, not 3."""
    pytest.importorskip("dlib")
    from talkinghead.metrics.lmd import LandmarkDistance

    detected = []
    original = LandmarkDistance.landmarks

    def counting(self, images):
        detected.append(len(images))
        return original(self, images)

    monkeypatch.setattr(LandmarkDistance, "landmarks", counting)
    result = run_benchmark(_config(synth_vox2_store, tmp_path, protocol="synth", metrics=["lmd", "pose_lmd"],
                                   methods=["static"]), log=lambda m: None)
    method = result.methods[0]
    assert method.clips_ok == 2 and not method.errors
    assert sum(detected) == 2 * sum(int(s.entry["num_frames"]) for s in result.selections)
    assert method.values["LMD-pose"] == pytest.approx(method.values["LMD-contour"])


# ---------------------------------------------------------------------------------------------
# pcavs_fixed_pose
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny PC-AVS as a Lightning-style checkpoint of the full stage, at the default
    location under a runs folder (``<runs>/pcavs/full/checkpoints/last.ckpt``)."""
    from talkinghead.methods.pcavs.networks import PCAVS, PCAVSConfig

    torch.manual_seed(0)
    config = PCAVSConfig.tiny(image_size=32, num_identities=3)
    model = PCAVS(config)
    path = tmp_path_factory.mktemp("runs") / "pcavs" / "full" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": config.to_dict(), "stage": "full", "name": "tiny"},
                "global_step": 0}, path)
    return path


def test_pcavs_fixed_pose_is_a_pcavs_bench_row(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("TALKINGHEAD_RUNS", str(tiny_checkpoint.parents[3]))
    spec = method_spec("pcavs_fixed_pose")  # declared in pcavs/method.py, listed through the registry
    assert spec.needs_checkpoint and "Ours-Fix Pose" in spec.description
    assert "pcavs_fixed_pose" in method_names() and METHODS["pcavs"].find_checkpoint == spec.find_checkpoint
    fixed = build_method("pcavs_fixed_pose")  # the default checkpoint, as pcavs
    driven = build_method("pcavs")
    assert fixed.checkpoint == driven.checkpoint == tiny_checkpoint
    assert fixed.name == "pcavs_fixed_pose" and fixed.pose_mode == "fixed" and driven.pose_mode == "source"
    assert "fixed pose" in fixed.description

    torch.manual_seed(1)
    frames = torch.rand(4, 3, 224, 224)

    def request(pose_source):
        return GenerationRequest(clip_id="c", reference=frames[0], audio=torch.zeros(4 * 640), num_frames=4,
                                 pose_source=pose_source)

    one, other = request(frames), request(torch.rand(4, 3, 224, 224))
    out = fixed.generate(one)
    assert out.shape == (4, 3, 224, 224) and 0 <= out.min() <= out.max() <= 1
    assert torch.equal(out, fixed.generate(other))  # the pose source is ignored
    assert not torch.equal(driven.generate(one), driven.generate(other))  # pcavs follows it
