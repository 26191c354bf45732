"""Metric worker processes (`BenchConfig.workers`, `talkinghead.bench.parallel`): the same numbers and
errors as the sequential path, failures recorded, thread settings applied."""
from __future__ import annotations

import json
import os

import cv2
import pytest
import torch

from talkinghead.bench.harness import BenchConfig, run_benchmark
from talkinghead.bench.methods import METHODS, register_method
from talkinghead.bench.parallel import assign_metrics, thread_limits
from talkinghead.data.store import ClipStore
from talkinghead.metrics.base import METRICS, ClipMetric, metric_names, register_metric

HOME = os.getpid()  # the test process (the harness's): updates elsewhere ran in a worker


class OrderProbe(ClipMetric):
    """Order-sensitive: folds each clip's mean into a running value (x <- 1.5 x + mean), so clips fed in
    another order or twice give another number; also counts updates made outside the test process."""

    inputs = ("fake", "real")
    optional_inputs = ("real_landmarks",)
    columns = {"ORDER": False, "CLIPS": True}

    def __init__(self):
        super().__init__()
        self.add_state("fold", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("elsewhere", torch.tensor(0), dist_reduce_fx="sum")

    def landmarks(self, images):  # a cheap exact "detector" (the harness detects with it and sends the result)
        import numpy as np

        points = np.repeat(images.reshape(len(images), -1, 3).mean(1)[:, None, :2], 68, axis=1)
        return points.astype(np.float32), np.ones(len(images), bool)

    def update(self, fake, real, real_landmarks=None):
        assert real_landmarks is not None and real_landmarks.shape == (len(fake), 68, 2)
        self.fold = self.fold * 1.5 + (fake - real).abs().mean().double() + real_landmarks.double().mean() / 1000
        self.clips += 1
        self.elsewhere += int(os.getpid() != HOME)

    def compute(self):
        return {"ORDER": self.fold.float(), "CLIPS": self.clips.float()}


class FailsOnClip(ClipMetric):
    """Raises on the clip whose first frame is brightest, else the mean of the reference."""

    inputs = ("fake", "reference")
    columns = {"REF": True}
    bad_mean: float | None = None
    bad_clip: str | None = None

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, fake, reference):
        if FailsOnClip.bad_mean is not None and abs(float(reference.mean()) - FailsOnClip.bad_mean) < 1e-7:
            raise ValueError("this metric refuses this clip")
        self.total += reference.double().mean()
        self.count += 1

    def compute(self):
        return {"REF": (self.total / self.count).float()}


class ThreadProbe(ClipMetric):
    """The fewest and most torch / OpenCV threads its updates ran with, and how many ran in a worker."""

    inputs = ("fake",)
    columns = {"TORCH-MIN": True, "TORCH-MAX": True, "CV2-MIN": True, "CV2-MAX": True, "ELSEWHERE": True}

    def __init__(self):
        super().__init__()
        self.add_state("seen", torch.tensor([1000, 0, 1000, 0]), dist_reduce_fx="max")
        self.add_state("elsewhere", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, fake):
        now = [torch.get_num_threads(), cv2.getNumThreads()]
        self.seen = torch.tensor([min(int(self.seen[0]), now[0]), max(int(self.seen[1]), now[0]),
                                  min(int(self.seen[2]), now[1]), max(int(self.seen[3]), now[1])])
        self.elsewhere += int(os.getpid() != HOME)

    def compute(self):
        return {**{c: self.seen[i].float() for i, c in enumerate(("TORCH-MIN", "TORCH-MAX", "CV2-MIN", "CV2-MAX"))},
                "ELSEWHERE": self.elsewhere.float()}


class Broken:
    """Static, except that generation fails on one clip (after the workers have started)."""

    name = "par_broken"
    bad_clip: str | None = None

    def generate(self, request):
        if request.clip_id == Broken.bad_clip:
            raise RuntimeError("generator refuses this clip")
        return request.reference.unsqueeze(0).repeat(request.num_frames, 1, 1, 1)


PROBES = {"par_order": OrderProbe, "par_fails": FailsOnClip, "par_threads": ThreadProbe}


@pytest.fixture(scope="module", autouse=True)
def registrations(synth_vox2_store):
    metric_names()
    for name, cls in PROBES.items():
        register_metric(name)(cls)
    register_method("par_broken")(lambda checkpoint, device: Broken())
    store = ClipStore(synth_vox2_store)
    clips = sorted(store.clips("train"), key=lambda e: e["clip_id"])
    assert len(clips) == 3
    Broken.bad_clip = clips[1]["clip_id"]  # clip 0 is scored before the workers start
    from talkinghead.bench.protocol import frames_tensor

    FailsOnClip.bad_clip = clips[2]["clip_id"]
    FailsOnClip.bad_mean = float(frames_tensor(store.load_frames(clips[2], [0]))[0].mean())
    yield
    for name in PROBES:
        METRICS.pop(name, None)
    METHODS.pop("par_broken", None)
    FailsOnClip.bad_mean = Broken.bad_clip = None


def _run(store, tmp_path, tag, **changes):
    config = dict(protocol="synth", store=str(store), split="train", num_clips=3, bench_root=str(tmp_path / "bench"),
                  out=str(tmp_path / tag), wandb=False, progress=False, samples=1, command=["pytest"],
                  methods=["ground_truth", "par_broken"], metrics=["par_order", "par_fails", "ssim"])
    config.update(changes)
    messages: list[str] = []
    result = run_benchmark(BenchConfig(**config), log=messages.append, report=False)
    saved = json.loads((tmp_path / tag / "results.json").read_text())
    return result, saved, messages


def _comparable(saved: dict) -> list[dict]:
    """results.json's methods without the timings."""
    return [{k: v for k, v in m.items() if k not in ("seconds", "metric_seconds")} for m in saved["methods"]]


@pytest.mark.parametrize("workers", [1, 4])
def test_workers_give_the_sequential_numbers_and_errors(synth_vox2_store, tmp_path, workers):
    sequential, seq_saved, _ = _run(synth_vox2_store, tmp_path, "seq", workers=0, threads=1)
    parallel, par_saved, messages = _run(synth_vox2_store, tmp_path, "par", workers=workers, threads=1)
    started = [m for m in messages if "metric worker process" in m]
    assert len(started) == 2, "\n".join(messages)  # one per method (the first: after its first clip)
    if workers == 4:  # capped at one per metric: each metric in a worker of its own
        assert all("worker 3" in m and "worker 4" not in m for m in started)
    assert _comparable(par_saved) == _comparable(seq_saved)
    for result in (sequential, parallel):
        gt, broken = result.methods
        # a metric failing in a worker and a generation failing after the fork: recorded, the run goes on
        assert [(e["clip_id"], e["stage"]) for e in gt.errors] == [(FailsOnClip.bad_clip, "metric:par_fails")]
        assert "this metric refuses this clip" in gt.errors[0]["error"] and gt.errors[0]["file"].endswith(".npz")
        assert gt.clips_ok == 2 and gt.clips_failed == 1 and gt.metric_clips["par_order"] == 3
        assert [e["stage"] for e in broken.errors] == ["generate", "metric:par_fails"]
        assert broken.errors[0]["clip_id"] == Broken.bad_clip and "refuses this clip" in broken.errors[0]["error"]
        assert broken.clips_ok == 1 and broken.clips_failed == 2 and broken.metric_clips["par_order"] == 2
        assert gt.values["SSIM"] == pytest.approx(1.0) and gt.values["CLIPS"] == 3
    # the order-sensitive fold is the sequential one, although the later clips were scored elsewhere
    assert parallel.methods[0].values["ORDER"] == sequential.methods[0].values["ORDER"]
    assert parallel.samples.keys() == sequential.samples.keys()
    for clip, sample in parallel.samples.items():
        for method, frames in sample["frames"].items():
            assert (frames == sequential.samples[clip]["frames"][method]).all()


def test_thread_settings_applied_and_restored(synth_vox2_store, tmp_path):
    before = torch.get_num_threads(), cv2.getNumThreads()
    result, _, _ = _run(synth_vox2_store, tmp_path, "seq", workers=0, threads=3, methods=["static"],
                        metrics=["par_threads"])
    values = result.methods[0].values
    assert [values[c] for c in ("TORCH-MIN", "TORCH-MAX", "CV2-MIN", "CV2-MAX", "ELSEWHERE")] == [3, 3, 3, 3, 0]
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    with thread_limits(2):
        from threadpoolctl import threadpool_info

        assert torch.get_num_threads() == 2 and cv2.getNumThreads() == 2
        assert all(pool["num_threads"] == 2 for pool in threadpool_info())
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


def test_workers_run_single_threaded(synth_vox2_store, tmp_path):
    before = torch.get_num_threads(), cv2.getNumThreads()
    result, _, messages = _run(synth_vox2_store, tmp_path, "par", workers=2, threads=3,
                               methods=["static", "ground_truth"], metrics=["par_threads", "par_order"])
    assert any("torch threads here 3" in m for m in messages), messages
    values = result.methods[0].values  # 2 workers, 2 metrics: each in a worker of its own after clip 0
    assert values["ELSEWHERE"] == 2 and values["CLIPS"] == 3
    # clip 0 here with threads=3, clips 1 and 2 in the worker with 1
    assert [values[c] for c in ("TORCH-MIN", "TORCH-MAX", "CV2-MIN", "CV2-MAX")] == [1, 3, 1, 3]
    values = result.methods[1].values  # the next method forks before its first clip: all in the worker
    assert values["ELSEWHERE"] == 3 and values["CLIPS"] == 3
    assert [values[c] for c in ("TORCH-MIN", "TORCH-MAX", "CV2-MIN", "CV2-MAX")] == [1, 1, 1, 1]
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


def test_assign_metrics_balances_and_is_deterministic():
    costs = {"csim": 7.0, "fid": 2.0, "ssim": 1.5, "factor": 1.7, "cpbd": 0.3}
    owners = assign_metrics(3.0, costs, 1)
    assert owners["csim"] == 1  # the heaviest goes to the idle worker
    loads = [3.0 + sum(c for k, c in costs.items() if owners[k] == 0), sum(c for k, c in costs.items() if owners[k])]
    assert abs(loads[0] - loads[1]) <= max(costs.values())
    assert assign_metrics(3.0, costs, 1) == owners
    assert set(assign_metrics(0.1, costs, 5).values()) == {1, 2, 3, 4, 5}
    assert set(assign_metrics(1.0, costs, 0).values()) == {0}


def test_workers_setting_is_validated():
    with pytest.raises(ValueError, match="workers"):
        BenchConfig(workers=-1)
    with pytest.raises(ValueError, match="threads"):
        BenchConfig(threads=0)
