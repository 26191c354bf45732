"""The benchmark harness end to end on the tiny SynthTalk store, the method registry, and the CLI."""
from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from talkinghead.bench import harness
from talkinghead.bench.cli import add_bench_parser, build_config, run_bench
from talkinghead.bench.harness import BenchConfig, StoreMissingError, run_benchmark
from talkinghead.bench.methods import (
    METHODS,
    GenerationRequest,
    UnknownMethodError,
    build_method,
    default_checkpoint,
    method_names,
    register_method,
)
from talkinghead.metrics.base import METRICS, ClipMetric, metric_names, register_metric
from talkinghead.metrics.image import frames_to_uint8
from talkinghead.weights import MissingWeightsError

# ---------------------------------------------------------------------------------------------
# test-only metrics and methods (registered for this module, removed afterwards)
# ---------------------------------------------------------------------------------------------


class _Mean(ClipMetric):
    """Mean of a per-clip score."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def _add(self, value: torch.Tensor) -> None:
        self.total += value.double()
        self.count += 1


class BenchTestMAE(_Mean):
    """Mean absolute error to the real frames (needs ground truth)."""

    inputs = ("fake", "real")
    columns = {"MAE": False}

    def update(self, fake, real):
        self._add((fake - real).abs().mean())

    def compute(self):
        return {"MAE": (self.total / self.count).float()}


class BenchTestRefDist(_Mean):
    """Mean absolute difference to the reference image (defined without ground truth)."""

    inputs = ("fake", "reference", "audio")
    columns = {"RefDist": False}

    def update(self, fake, reference, audio):
        assert audio.ndim == 1
        self._add((fake - reference[None]).abs().mean())

    def compute(self):
        return {"RefDist": (self.total / self.count).float()}


class BenchTestLandmarks(_Mean):
    """Like LMD: optional `real_landmarks`, and a `landmarks(images)` detector (here: each frame's mean
    colour as every point, cheap and exact) that the harness uses once per clip for all methods."""

    inputs = ("fake", "real")
    optional_inputs = ("real_landmarks",)
    columns = {"LMDTEST": False}
    real_calls = 0

    @staticmethod
    def _points(images):
        points = np.repeat(images.reshape(len(images), -1, 3).mean(1)[:, None, :2], 68, axis=1)
        return points.astype(np.float32), np.ones(len(images), bool)

    def landmarks(self, images):
        BenchTestLandmarks.real_calls += 1
        return self._points(images)

    def update(self, fake, real, real_landmarks=None):
        assert real_landmarks is not None and real_landmarks.shape == (len(fake), 68, 2)
        mine, _ = self._points(frames_to_uint8(fake))
        self._add(torch.from_numpy(mine - real_landmarks.numpy()).abs().mean())

    def compute(self):
        return {"LMDTEST": (self.total / self.count).float()}


class BenchTestMissing(ClipMetric):
    """A metric whose pretrained weights are absent."""

    inputs = ("fake",)
    columns = {"NEEDW-A": True, "NEEDW-B": False}

    def __init__(self) -> None:
        super().__init__()
        raise MissingWeightsError("pretrained file for 'bench_test_weights' not found: bench_test.pth")

    def update(self, fake):  # pragma: no cover - never built
        pass

    def compute(self):  # pragma: no cover
        return {}


class BenchTestSync(_Mean):
    """Takes a SyncNet like `lse`: LSE-C = the fake net's constant; NLSE-C (an instance column) only
    when given real_confidence."""

    inputs = ("fake", "audio")
    columns = {"LSE-C": True}

    def __init__(self, syncnet, syncnet_name, real_confidence=None) -> None:
        super().__init__()
        self.syncnet, self.syncnet_name, self.real_confidence = syncnet, syncnet_name, real_confidence
        self.columns = dict(type(self).columns)
        if real_confidence is not None:
            self.columns["NLSE-C"] = False

    def update(self, fake, audio):
        self._add(torch.tensor(self.syncnet.confidence))

    def compute(self):
        conf = (self.total / self.count).float()
        out = {"LSE-C": conf}
        if self.real_confidence is not None:
            out["NLSE-C"] = (conf - self.real_confidence) / self.real_confidence
        return out


class BenchTestSSIM(_Mean):
    """Fallback SSIM (torchmetrics), used only while the suite's `ssim` metric is not registered."""

    inputs = ("fake", "real")
    columns = {"SSIM": True}

    def update(self, fake, real):
        from torchmetrics.functional.image import structural_similarity_index_measure

        self._add(structural_similarity_index_measure(fake, real, data_range=1.0))

    def compute(self):
        return {"SSIM": (self.total / self.count).float()}


class BenchTestDupe(BenchTestMAE):
    """Fills the same column as bench_test_mae."""


STATS_CALLS: list = []


def store_real_statistics(store, clip_ids, frames_per_clip=None, folder=None, device="cpu", **options):
    """The hook the harness looks for in a pooled metric's module (as `talkinghead.metrics.fid`)."""
    from talkinghead.bench.protocol import frames_tensor

    STATS_CALLS.append((list(clip_ids), frames_per_clip, Path(folder)))
    return float(np.mean([float(frames_tensor(store.load_frames(c, [0])).mean()) for c in clip_ids]))


class BenchTestPooled(_Mean):
    """A pooled metric with precomputable real statistics (like FID): |mean first-frame brightness
    of fake - that of the real clips|."""

    inputs = ("fake", "real")
    columns = {"POOLED": False}

    def __init__(self, real_stats=None, frames_per_clip: int | None = 3):
        super().__init__()
        self.real_stats = real_stats

    def update(self, fake, real=None):
        assert self.real_stats is not None, "the harness did not precompute the real statistics"
        self._add(fake[0].mean().double())

    def compute(self):
        return {"POOLED": (self.total / self.count - self.real_stats).abs().float()}


class Flaky:
    """The static baseline, except that it raises on one chosen clip."""

    name = "bench_test_flaky"
    bad_clip: str | None = None

    def generate(self, request: GenerationRequest) -> torch.Tensor:
        if request.clip_id == Flaky.bad_clip:
            raise RuntimeError("flaky generator refuses this clip")
        assert request.ground_truth is None  # only the ground_truth baseline sees the real frames
        return request.reference.unsqueeze(0).repeat(request.num_frames, 1, 1, 1)


class WrongShape:
    name = "bench_test_wrong_shape"

    def generate(self, request):
        return torch.zeros(request.num_frames - 1, 3, *request.size)


TEST_METRICS = {"bench_test_mae": BenchTestMAE, "bench_test_refdist": BenchTestRefDist,
                "bench_test_missing": BenchTestMissing, "bench_test_sync": BenchTestSync,
                "bench_test_landmarks": BenchTestLandmarks, "bench_test_pooled": BenchTestPooled,
                "bench_test_dupe": BenchTestDupe}


@pytest.fixture(scope="module", autouse=True)
def test_registrations():
    metric_names()  # load the built-in metrics first
    added = dict(TEST_METRICS)
    if "ssim" not in METRICS:
        added["bench_test_ssim"] = BenchTestSSIM
    for name, cls in added.items():
        register_metric(name)(cls)
    register_method("bench_test_flaky")(lambda checkpoint, device: Flaky())
    register_method("bench_test_wrong_shape")(lambda checkpoint, device: WrongShape())
    register_method("bench_test_needs_ckpt", needs_checkpoint=True)(lambda checkpoint, device: Flaky())
    yield
    for name in added:
        METRICS.pop(name, None)
    for name in ("bench_test_flaky", "bench_test_wrong_shape", "bench_test_needs_ckpt"):
        METHODS.pop(name, None)


def _ssim_metric() -> str:
    return "ssim" if "ssim" in METRICS and METRICS["ssim"] is not BenchTestSSIM else "bench_test_ssim"


def _cheap_metrics() -> list[str]:
    names = [_ssim_metric()]
    if "psnr" in METRICS:
        names.append("psnr")
    return names + ["bench_test_mae", "bench_test_refdist", "bench_test_missing", "bench_test_landmarks"]


def _config(store: Path, tmp: Path, **changes) -> BenchConfig:
    base = dict(protocol="synth", store=str(store), split="train", num_clips=3, bench_root=str(tmp / "bench"),
                out=str(tmp / "bench" / "run"), wandb=False, progress=False, samples=1, metrics=_cheap_metrics(),
                command=["pytest"])
    base.update(changes)
    return BenchConfig(**base)


# ---------------------------------------------------------------------------------------------
# one end-to-end run shared by several tests
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def e2e(synth_vox2_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_e2e")
    from talkinghead.data.store import ClipStore

    clips = sorted(e["clip_id"] for e in ClipStore(synth_vox2_store).clips("train"))
    Flaky.bad_clip = clips[1]
    config = _config(synth_vox2_store, tmp, methods=["ground_truth", "static", "bench_test_flaky",
                                                     "bench_test_wrong_shape", "bench_test_needs_ckpt"])
    messages: list[str] = []
    result = run_benchmark(config, log=messages.append)
    return result, messages


def _method(result, name):
    return next(m for m in result.methods if m.name == name)


def test_ground_truth_beats_static(e2e):
    result, _ = e2e
    column = "SSIM"
    truth, static = _method(result, "ground_truth"), _method(result, "static")
    assert truth.values[column] == pytest.approx(1.0, abs=1e-4)
    assert static.values[column] < truth.values[column] - 0.05
    assert truth.values["MAE"] == pytest.approx(0.0, abs=1e-6) and static.values["MAE"] > 0.005
    assert static.values["RefDist"] == pytest.approx(0.0, abs=1e-6) and truth.values["RefDist"] > 0.005
    assert truth.values["LMDTEST"] == pytest.approx(0.0, abs=1e-6) and static.values["LMDTEST"] > 0.01
    assert truth.metric_seconds["bench_test_mae"] >= 0 and "generate" in truth.metric_seconds
    assert BenchTestLandmarks.real_calls == 3  # real landmarks: detected once per clip, shared by all methods
    if "PSNR" in result.columns:
        assert static.values["PSNR"] < truth.values["PSNR"]
    assert truth.clips_ok == static.clips_ok == 3 and not truth.errors and not static.errors


def test_failing_clip_recorded_and_others_continue(e2e):
    result, _ = e2e
    flaky = _method(result, "bench_test_flaky")
    assert flaky.clips_ok == 2 and flaky.clips_failed == 1
    (error,) = flaky.errors
    assert error["clip_id"] == Flaky.bad_clip and error["stage"] == "generate"
    assert error["file"].endswith(".npz") and Path(error["file"]).is_file()
    assert "flaky generator refuses this clip" in error["error"]
    # its numbers come from the two clips that worked, equal to the static baseline's on those clips
    assert flaky.values["RefDist"] == pytest.approx(0.0, abs=1e-6)
    assert flaky.metric_clips["bench_test_mae"] == 2

    wrong = _method(result, "bench_test_wrong_shape")
    assert wrong.clips_ok == 0 and wrong.clips_failed == 3
    assert all(e["stage"] == "output" and "expected (40, 3, 224, 224)" in e["error"] for e in wrong.errors)
    assert wrong.values["MAE"] is None and wrong.na["MAE"] == "no clip scored"

    unbuilt = _method(result, "bench_test_needs_ckpt")
    assert unbuilt.errors[0]["stage"] == "build" and "needs a checkpoint" in unbuilt.errors[0]["error"]
    assert all(v is None for v in unbuilt.values.values())


def test_missing_weights_metric_is_na_with_reason(e2e):
    result, messages = e2e
    info = result.metric_info["bench_test_missing"]
    assert info["status"] == "n/a" and "MissingWeightsError" in info["reason"] and "bench_test.pth" in info["reason"]
    for m in result.methods:
        assert m.values["NEEDW-A"] is None and "bench_test.pth" in m.na["NEEDW-B"]
    assert any("bench_test_missing n/a" in line for line in messages)
    table = (result.run_dir / "table.md").read_text()
    assert "n/a[^" in table and "bench_test.pth" in table


def test_run_folder_contents(e2e):
    result, _ = e2e
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["status"] == "complete" and run["command"] == ["pytest"]
    assert run["protocol"]["name"] == "synth" and run["split"] == "train" and run["setting"] == "self"
    assert [c["clip_id"] for c in run["clips"]] == [s.clip_id for s in result.selections]
    assert [m["name"] for m in run["methods"]] == ["ground_truth", "static", "bench_test_flaky",
                                                   "bench_test_wrong_shape", "bench_test_needs_ckpt"]
    assert set(run["metrics"]) == set(_cheap_metrics())
    assert "torch" in run["versions"] and run["errors"] == 5
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["methods"][0]["method"] == "ground_truth"

    table = (result.run_dir / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Method"))
    assert "SSIM ↑" in header and "MAE ↓" in header and "NEEDW-B ↓" in header
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == ["ground_truth", "static", "bench_test_flaky", "bench_test_wrong_shape", "bench_test_needs_ckpt"]
    assert "| bench_test_flaky | – | 2/3[^" in table  # failed clips are footnoted (no checkpoint: –)
    assert "(published)" not in table  # synthetic data: no paper rows

    csv_lines = (result.run_dir / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,kind,clips_ok,clips_failed,checkpoint,training_run,best") and len(csv_lines) == 6
    lines = (result.run_dir / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["method"] for line in lines][:2] == ["ground_truth", "static"]
    assert (Path(result.run_info["config"]["bench_root"]) / "results.jsonl").is_file()
    plots = sorted(p.name for p in (result.run_dir / "plots").iterdir())
    assert "SSIM.png" in plots and "MAE.png" in plots
    (video,) = list((result.run_dir / "samples").glob("*.mp4"))
    from talkinghead.data.video import probe_video

    info = probe_video(video)
    assert info.has_audio and info.num_frames == 40 and info.width == 5 * 224


def test_existing_run_folder_is_refused(e2e, synth_vox2_store):
    result, _ = e2e
    config = _config(synth_vox2_store, result.run_dir.parent.parent, out=str(result.run_dir))
    with pytest.raises(FileExistsError, match="already holds a benchmark run"):
        run_benchmark(config, log=lambda m: None)


# ---------------------------------------------------------------------------------------------
# settings and SyncNet
# ---------------------------------------------------------------------------------------------
def test_pooled_real_statistics_computed_once(synth_vox2_store, tmp_path):
    STATS_CALLS.clear()
    config = _config(synth_vox2_store, tmp_path, methods=["ground_truth", "static"], metrics=["bench_test_pooled"],
                     samples=0)
    result = run_benchmark(config, log=lambda m: None)
    ((clip_ids, frames_per_clip, folder),) = STATS_CALLS  # once for all methods
    assert clip_ids == [s.clip_id for s in result.selections] and frames_per_clip == 3
    assert folder == tmp_path / "bench" / "cache" / "bench_test_pooled"
    truth, static = result.methods
    assert truth.values["POOLED"] == pytest.approx(0.0, abs=1e-6) and static.values["POOLED"] == pytest.approx(0.0, abs=1e-6)


def test_second_metric_filling_a_column_is_left_out(synth_vox2_store, tmp_path):
    messages: list[str] = []
    config = _config(synth_vox2_store, tmp_path, methods=["static"], metrics=["bench_test_mae", "bench_test_dupe"],
                     samples=0)
    result = run_benchmark(config, log=messages.append)
    assert list(result.columns) == ["MAE"] and result.methods[0].values["MAE"] > 0
    assert result.metric_info["bench_test_dupe"]["reason"] == "column(s) MAE already filled by bench_test_mae"
    assert any("bench_test_dupe left out" in m for m in messages)


def test_cross_setting_marks_ground_truth_metrics_na(synth_vox2_store, tmp_path):
    config = _config(synth_vox2_store, tmp_path, setting="cross", methods=["static"], samples=0)
    result = run_benchmark(config, log=lambda m: None)
    static = result.methods[0]
    assert static.values["MAE"] is None and "cross-driven" in static.na["MAE"]
    assert static.values["SSIM"] is None
    assert static.values["RefDist"] == pytest.approx(0.0, abs=1e-6) and static.clips_ok == 3
    assert all(s.source["clip_id"] != s.clip_id for s in result.selections)


class _FakeSyncNet(torch.nn.Module):
    confidence = 4.0


def _fake_syncnet_api(tmp: Path, calls: list):
    checkpoint = tmp / "syncnet" / "expert.ckpt"

    def default_expert_path(store):
        return checkpoint

    def train_expert(config_path, store, out_dir, **options):
        calls.append(("train", Path(config_path), Path(store), Path(out_dir)))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"fake expert weights")
        return checkpoint

    def load_expert(path):
        calls.append(("load", Path(path)))
        return _FakeSyncNet(), "fake SyncNet expert (synth-vox2)"

    return types.SimpleNamespace(default_expert_path=default_expert_path, train_expert=train_expert,
                                 load_expert=load_expert)


def test_syncnet_expert_trained_when_missing_and_nlse_reference_cached(synth_vox2_store, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(harness, "_syncnet_api", lambda: _fake_syncnet_api(tmp_path, calls))
    scored: list = []

    def confidence(model, frames, audio):
        scored.append(frames.shape)
        return 5.0

    monkeypatch.setattr(harness, "_sync_confidence", confidence)
    yaml_config = tmp_path / "synth.yaml"
    yaml_config.write_text("stage: expert\n")
    messages: list[str] = []
    config = _config(synth_vox2_store, tmp_path, methods=["static"], metrics=["bench_test_sync"], samples=0,
                     syncnet_config=str(yaml_config), nlse_clips=2)
    result = run_benchmark(config, log=messages.append)
    assert calls[0] == ("train", yaml_config, Path(synth_vox2_store), tmp_path / "syncnet")
    assert any("training it first" in m for m in messages)
    assert result.syncnet["name"] == "fake SyncNet expert (synth-vox2)" and result.syncnet["trained_now"]
    assert len(scored) == 2 and scored[0] == (40, 3, 224, 224)
    static = result.methods[0]
    assert static.values["LSE-C"] == pytest.approx(4.0)
    assert static.values["NLSE-C"] == pytest.approx((4.0 - 5.0) / 5.0)
    assert list(result.columns) == ["LSE-C", "NLSE-C"] and result.columns["NLSE-C"] is False
    table = (result.run_dir / "table.md").read_text()
    assert "SyncNet = fake SyncNet expert (synth-vox2)" in table and "NLSE-C reference" in table
    (cache,) = list((tmp_path / "bench" / "cache").glob("nlse-real-*.json"))
    assert json.loads(cache.read_text())["mean"] == pytest.approx(5.0)

    # second run: the expert exists (no training) and the real LSE-C comes from the cache
    config = _config(synth_vox2_store, tmp_path, methods=["static"], metrics=["bench_test_sync"], samples=0,
                     syncnet_config=str(yaml_config), nlse_clips=2, out=str(tmp_path / "bench" / "run2"))
    result = run_benchmark(config, log=lambda m: None)
    assert [c[0] for c in calls] == ["train", "load", "load"] and len(scored) == 2
    assert result.run_info["nlse_reference"]["cached"] is True
    assert result.methods[0].values["NLSE-C"] == pytest.approx(-0.2)


def test_nlse_reference_failure_leaves_lse_c(synth_vox2_store, tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "_syncnet_api", lambda: _fake_syncnet_api(tmp_path, []))

    def too_short(model, frames, audio):
        raise ValueError("clip too short for SyncNet")

    monkeypatch.setattr(harness, "_sync_confidence", too_short)
    (tmp_path / "syncnet").mkdir()
    (tmp_path / "syncnet" / "expert.ckpt").write_bytes(b"weights")
    config = _config(synth_vox2_store, tmp_path, methods=["static"], metrics=["bench_test_sync"], samples=0)
    static = run_benchmark(config, log=lambda m: None).methods[0]
    assert static.values["LSE-C"] == pytest.approx(4.0)
    assert static.values["NLSE-C"] is None and "clip too short for SyncNet" in static.na["NLSE-C"]


def test_syncnet_missing_without_training_is_na(synth_vox2_store, tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "_syncnet_api", lambda: _fake_syncnet_api(tmp_path, []))
    config = _config(synth_vox2_store, tmp_path, methods=["static"], metrics=["bench_test_sync", "bench_test_refdist"],
                     samples=0, train_syncnet=False)
    result = run_benchmark(config, log=lambda m: None)
    static = result.methods[0]
    assert static.values["LSE-C"] is None and "no SyncNet (expert)" in static.na["LSE-C"]
    assert "no SyncNet (expert)" in static.na["NLSE-C"]
    assert static.values["RefDist"] is not None


def test_official_syncnet_missing_is_na(synth_vox2_store, tmp_path, monkeypatch):
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path / "empty_home"))
    config = _config(synth_vox2_store, tmp_path, methods=["static"], metrics=["bench_test_sync"], samples=0,
                     syncnet="official")
    result = run_benchmark(config, log=lambda m: None)
    reason = result.methods[0].na["LSE-C"]
    assert "MissingWeightsError" in reason and "syncnet_v2.model" in reason


# ---------------------------------------------------------------------------------------------
# setup errors
# ---------------------------------------------------------------------------------------------
def test_missing_store_says_how_to_make_it(tmp_path):
    config = _config(tmp_path / "nowhere", tmp_path)
    with pytest.raises(StoreMissingError, match="make data"):
        run_benchmark(config, log=lambda m: None)
    assert not (tmp_path / "bench").exists()


def test_unknown_names_fail_before_writing(synth_vox2_store, tmp_path):
    with pytest.raises(UnknownMethodError, match="choose from: .*ground_truth.*static"):
        run_benchmark(_config(synth_vox2_store, tmp_path, methods=["no_such_method"]), log=lambda m: None)
    with pytest.raises(KeyError, match="unknown metric.*no_such_metric"):
        run_benchmark(_config(synth_vox2_store, tmp_path, metrics=["no_such_metric"]), log=lambda m: None)
    with pytest.raises(KeyError, match="unknown protocol 'nope'; choose from: .*synth"):
        run_benchmark(_config(synth_vox2_store, tmp_path, protocol="nope"), log=lambda m: None)
    assert not (tmp_path / "bench").exists()
    with pytest.raises(ValueError, match="checkpoint given for method"):
        BenchConfig(methods=["static"], checkpoints={"pcavs": "x.ckpt"})


# ---------------------------------------------------------------------------------------------
# method registry
# ---------------------------------------------------------------------------------------------
def _request(num_frames=4):
    frames = torch.rand(num_frames, 3, 8, 8)
    return GenerationRequest(clip_id="c", reference=frames[0], audio=torch.zeros(640 * num_frames),
                             num_frames=num_frames, pose_source=frames, ground_truth=frames)


def test_builtin_methods():
    request = _request()
    assert torch.equal(build_method("ground_truth").generate(request), request.ground_truth)
    static = build_method("static").generate(request)
    assert static.shape == (4, 3, 8, 8) and torch.equal(static[3], request.reference)
    request.ground_truth = None
    with pytest.raises(ValueError, match="no ground-truth frames"):
        build_method("ground_truth").generate(request)
    with pytest.raises(ValueError, match="pose_source must be"):
        GenerationRequest(clip_id="c", reference=torch.zeros(3, 8, 8), audio=torch.zeros(10), num_frames=5,
                          pose_source=torch.zeros(4, 3, 8, 8))


def test_unknown_method_lists_choices():
    with pytest.raises(UnknownMethodError, match="unknown method 'nope'; choose from: .*ground_truth, .*static"):
        build_method("nope")


def test_registered_methods_bring_their_bench_rows(tmp_path, monkeypatch):
    """Every registered method's bench rows are methods here, with its final-stage default checkpoint;
    an ad-hoc `register_method` row without one falls back to the newest ``runs/<name>/*.ckpt``."""
    from talkinghead.methods.registry import METHODS as REGISTERED

    for method in REGISTERED.values():
        for row_name, row in method.bench.items():
            assert row_name in method_names() and METHODS[row_name].description == row.description
            if row.needs_checkpoint:
                assert METHODS[row_name].find_checkpoint == method.default_checkpoint
    runs = tmp_path / "runs"
    monkeypatch.setenv("TALKINGHEAD_RUNS", str(runs))
    register_method("bench_test_adhoc", needs_checkpoint=True)(lambda checkpoint, device: Flaky())
    try:
        with pytest.raises(FileNotFoundError, match="needs a checkpoint"):
            build_method("bench_test_adhoc")
        (runs / "bench_test_adhoc" / "v1").mkdir(parents=True)
        old, new = runs / "bench_test_adhoc" / "v1" / "a.ckpt", runs / "bench_test_adhoc" / "b.ckpt"
        old.write_bytes(b"1")
        new.write_bytes(b"2")
        import os

        os.utime(old, (1, 1))
        assert default_checkpoint("bench_test_adhoc") == new
        assert build_method("bench_test_adhoc").checkpoint == new
        with pytest.raises(FileNotFoundError, match="not found"):
            build_method("bench_test_adhoc", checkpoint=tmp_path / "missing.ckpt")
    finally:
        METHODS.pop("bench_test_adhoc", None)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _parse(argv):
    parser = argparse.ArgumentParser(prog="talkinghead")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_parses_and_runs(synth_vox2_store, tmp_path, capsys):
    args = _parse(["bench", "--dataset", "synth", "--methods", "ground_truth", "static", "--clips", "2",
                   "--checkpoint", "static=none.ckpt", "--metrics", "bench_test_refdist", "--store",
                   str(synth_vox2_store), "--out", str(tmp_path / "cli"), "--syncnet", "official", "--device", "cpu"])
    config = build_config(args)
    assert config.checkpoints == {"static": "none.ckpt"} and config.num_clips == 2 and config.syncnet == "official"
    with pytest.raises(SystemExit):
        _parse(["bench", "--checkpoint", "no-equals-sign"])

    args = _parse(["bench", "--dataset", "synth", "--methods", "ground_truth", "static", "--metrics",
                   "bench_test_refdist", "bench_test_mae", "--store", str(synth_vox2_store), "--split", "train",
                   "--bench-root", str(tmp_path / "bench"), "--out", str(tmp_path / "cli"), "--no-wandb",
                   "--no-progress", "--samples", "0"])
    assert run_bench(args) == 0
    assert (tmp_path / "cli" / "table.md").is_file()
    assert run_bench(_parse(["bench", "--store", str(tmp_path / "none"), "--no-wandb"])) == 2
    assert "make data" in capsys.readouterr().err
    assert run_bench(_parse(["bench", "--list"])) == 0
    listing = capsys.readouterr().out
    assert "synth" in listing and "ground_truth" in listing and "bench_test_mae" in listing


def test_cli_settings_layer_config_flags_and_overrides(tmp_path, capsys):
    """Bench settings resolve as every config: BenchConfig defaults < --config YAML < flags < KEY=VALUE."""
    import yaml

    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"num_clips": 7, "samples": 0, "methods": ["static"]}))
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump({"inherits": "base.yaml", "seed": 3, "device": "cpu"}))
    args = _parse(["bench", "--config", str(tmp_path / "bench.yaml"), "--clips", "5", "--methods", "static",
                   "ground_truth", "seed=4", "--no-wandb"])
    config = build_config(args)
    assert (config.num_clips, config.seed, config.samples, config.wandb) == (5, 4, 0, False)
    assert config.methods == ["static", "ground_truth"] and config.protocol == "synth"
    assert run_bench(_parse(["bench", "--config", str(tmp_path / "bench.yaml"), "--print-config"])) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["num_clips"] == 7 and printed["seed"] == 3 and printed["methods"] == ["static"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"num_clip": 7}))
    assert run_bench(_parse(["bench", "--config", str(tmp_path / "bad.yaml")])) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "num_clip" in err
    assert run_bench(_parse(["bench", "samples=many"])) == 2
    assert "samples" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the real LSE metric and SyncNet files (random weights: this checks the plumbing, not the scores)
# ---------------------------------------------------------------------------------------------
def _require_lse():
    if "lse" not in METRICS:
        pytest.skip("the lse metric is not in this tree")
    from talkinghead.metrics import syncnet_expert

    return syncnet_expert


def test_real_lse_with_an_expert_checkpoint(synth_vox2_store, tmp_path):
    syncnet = _require_lse()
    from talkinghead.nn.syncnet import SyncNet, SyncNetConfig

    torch.manual_seed(0)
    config = yaml.safe_load((Path(__file__).parents[2] / "experiments" / "syncnet" / "synth.yaml").read_text())
    expert = syncnet.save_expert(tmp_path / "expert.pt", SyncNet(SyncNetConfig.from_dict(config["model"])).eval(),
                                 "random", 0, synth_vox2_store)
    run = _config(synth_vox2_store, tmp_path, methods=["ground_truth", "static"], metrics=["lse"], samples=0,
                  syncnet_checkpoint=str(expert), nlse_clips=2, num_clips=2)
    result = run_benchmark(run, log=lambda m: None)
    assert list(result.columns) == ["LSE-C", "LSE-D", "NLSE-C"]
    assert result.syncnet["name"].startswith("SyncNet expert (random") and result.syncnet["kind"] == "expert"
    for m in result.methods:
        assert m.clips_ok == 2 and all(v is not None for v in m.values.values()), m.na
    assert "SyncNet = SyncNet expert (random" in (result.run_dir / "table.md").read_text()


def test_official_syncnet_file_is_used_when_asked(synth_vox2_store, tmp_path, monkeypatch):
    _require_lse()
    from talkinghead.nn.syncnet import SyncNet

    home = tmp_path / "home"
    home.mkdir()
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), home / "syncnet_v2.model")  # official layout, random weights
    monkeypatch.setenv("TALKINGHEAD_HOME", str(home))
    run = _config(synth_vox2_store, tmp_path, methods=["static"], metrics=["lse"], samples=0, syncnet="official",
                  nlse_clips=1, num_clips=1)
    result = run_benchmark(run, log=lambda m: None)
    assert result.syncnet["kind"] == "official" and "syncnet_v2" in result.syncnet["name"]
    assert result.methods[0].values["LSE-C"] is not None and result.methods[0].values["NLSE-C"] is not None


def test_mouth_only_pastes_the_real_mouth_on_the_reference():
    frames = torch.ones(3, 3, 224, 224)
    request = GenerationRequest(clip_id="c", reference=torch.zeros(3, 224, 224), audio=torch.zeros(640 * 3),
                                num_frames=3, ground_truth=frames)
    out = build_method("mouth_only").generate(request)
    assert out.shape == (3, 3, 224, 224)
    assert out[0, :, 120, 112].eq(1).all() and out[0, :, 40, 40].eq(0).all() and out[0, :, 60, 112].eq(0).all()
    request.ground_truth = None
    with pytest.raises(ValueError, match="no ground-truth frames"):
        build_method("mouth_only").generate(request)


def test_factor_control_separates_the_baselines(synth_vox2_store, tmp_path):
    config = _config(synth_vox2_store, tmp_path, methods=["ground_truth", "static", "mouth_only"],
                     metrics=["factor_control"])
    result = run_benchmark(config, log=lambda message: None)
    truth, static, mouth = (_method(result, n).values for n in ("ground_truth", "static", "mouth_only"))
    assert truth["ctl-pose"] > 0.5 and truth["ctl-mouth"] > 0.3 and truth["ctl-blink"] > 0.3
    assert static["ctl-pose"] == pytest.approx(0, abs=0.05) and static["ctl-mouth"] == pytest.approx(0, abs=0.05)
    assert mouth["ctl-mouth"] > 0.3 and mouth["ctl-pose"] < truth["ctl-pose"] - 0.3
    assert truth["err-pose"] < static["err-pose"]
    assert truth["acc-emotion"] is None  # no emotion source here: n/a, with the reason
    assert "emotion source" in _method(result, "ground_truth").na["acc-emotion"]
