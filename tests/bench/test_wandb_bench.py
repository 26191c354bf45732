"""Bench runs on W&B (offline): one W&B run per method with the same summary keys, group = protocol,
tags, job_type, config from the run record, the run's media; a W&B failure never fails the bench."""
from __future__ import annotations

import pytest

from talkinghead.bench.harness import BenchConfig, run_benchmark
from talkinghead.training.tracking import find_offline_runs, offline_run

pytest.importorskip("wandb")


@pytest.fixture
def offline(monkeypatch, wandb_offline):
    wandb_offline(monkeypatch)


def _config(store, tmp, **changes) -> BenchConfig:
    base = dict(protocol="synth", store=str(store), split="train", num_clips=2, bench_root=str(tmp / "bench"),
                out=str(tmp / "bench" / "run"), methods=["ground_truth", "static"], metrics=["ssim", "psnr"],
                progress=False, samples=1, command=["pytest"])
    base.update(changes)
    return BenchConfig(**base)


@pytest.fixture(scope="module")
def bench_runs(synth_vox2_store, tmp_path_factory, wandb_offline):
    """One offline bench run of ground_truth and static with the control matrix: (result, W&B runs by method)."""
    mp = pytest.MonkeyPatch()
    wandb_offline(mp)
    try:
        tmp = tmp_path_factory.mktemp("bench_wandb")
        messages: list[str] = []
        result = run_benchmark(_config(synth_vox2_store, tmp, control_matrix=True, control_clips=2),
                               log=messages.append)
    finally:
        mp.undo()
    folders = find_offline_runs(result.run_dir)
    runs = {run["config"]["method"]: run for run in (offline_run(f, wait=60) for f in folders)}
    return result, runs, messages


def test_one_wandb_run_per_method_with_identical_summary_keys(bench_runs):
    result, runs, messages = bench_runs
    assert sorted(runs) == ["ground_truth", "static"], messages
    columns = list(result.columns)
    assert {"SSIM", "PSNR"} <= set(columns)
    expected = set(columns) | {"clips_ok", "clips_failed"}
    for method, run in runs.items():
        summary = {k for k in run["summary"] if not k.startswith("_") and k not in ("samples", "plots", "results",
                                                                                  "control_matrix")}
        assert summary == expected, (method, summary)
        values = next(m for m in result.methods if m.name == method).values
        assert all(run["summary"][c] == pytest.approx(values[c]) for c in columns if values[c] is not None)
        assert run["summary"]["clips_ok"] == 2 and run["summary"]["clips_failed"] == 0
    assert runs["ground_truth"]["summary"]["SSIM"] > runs["static"]["summary"]["SSIM"]


def test_bench_wandb_run_metadata(bench_runs):
    result, runs, _ = bench_runs
    name = result.run_dir.name
    for method, run in runs.items():
        assert run["project"] == "talkinghead" and run["job_type"] == "bench" and run["group"] == "synth"
        assert run["name"] == f"{method}-synth-{name}"
        config = run["config"]
        assert run["tags"] == [method, "synth", config["dataset"]]
        assert config["record_id"] == f"{name}/{method}" and config["bench_run"] == name
        assert (config["protocol"], config["dataset"], config["split"], config["setting"]) == ("synth", "vox2",
                                                                                                "train", "self")
        assert config["num_clips"] == 2 and config["seed"] == 0 and config["store"]
        assert config["checkpoint"] is None and config["training_run_id"] is None
        assert config["checkpoint_artifact"] is None
        assert "git_commit" in config and "syncnet" in config
        assert config["directions"]["SSIM"] == "higher"
        # media: the side-by-side sample video(s), the bar charts, the control matrix
        assert {"samples", "plots", "control_matrix", "results"} <= run["history_keys"]
        videos = run["summary"]["samples"]
        assert videos["_type"] == "videos" and videos["count"] == 1
        from pathlib import Path

        from talkinghead.data.video import probe_video

        (video,) = Path(run["folder"]).glob("files/media/videos/samples_*.mp4")
        info = probe_video(video)
        assert info.has_audio and info.num_frames > 0  # the side-by-side sample, its audio kept
        assert run["summary"]["plots"]["count"] == len(result.columns)
        assert not any(a["use_after_commit"] for a in run["artifacts"])  # baselines score no checkpoint


def test_wandb_project_setting_and_env_override(synth_vox2_store, tmp_path, offline, monkeypatch):
    result = run_benchmark(_config(synth_vox2_store, tmp_path, methods=["static"], num_clips=1, samples=0,
                                   wandb_project="mine"), log=lambda m: None)
    (folder,) = find_offline_runs(result.run_dir)
    assert offline_run(folder, wait=60)["project"] == "mine"
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    result = run_benchmark(_config(synth_vox2_store, tmp_path, methods=["static"], num_clips=1, samples=0,
                                   out=str(tmp_path / "bench" / "run2"), wandb_project="mine"), log=lambda m: None)
    (folder,) = find_offline_runs(result.run_dir)
    assert offline_run(folder, wait=60)["project"] == "from-env"


def test_a_wandb_failure_is_a_warning(synth_vox2_store, tmp_path, offline, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken)
    messages: list[str] = []
    result = run_benchmark(_config(synth_vox2_store, tmp_path, samples=0), log=messages.append)
    assert result.run_info["outputs"]["wandb"] == []
    assert sum("W&B logging of" in m and "W&B is down" in m for m in messages) == 2
    assert (result.run_dir / "results.jsonl").is_file() and not find_offline_runs(result.run_dir)


def test_wandb_disabled(synth_vox2_store, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    result = run_benchmark(_config(synth_vox2_store, tmp_path, samples=0), log=lambda m: None)
    assert result.run_info["outputs"]["wandb"] is None and not (result.run_dir / "wandb").exists()


def test_wandb_project_flag():
    import argparse

    from talkinghead.bench.cli import add_bench_parser, build_config

    parser = argparse.ArgumentParser(prog="talkinghead")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    assert build_config(parser.parse_args(["bench"])).wandb_project == "talkinghead"
    assert build_config(parser.parse_args(["bench", "--wandb-project", "zz"])).wandb_project == "zz"
    assert build_config(parser.parse_args(["bench", "wandb_project=yy"])).wandb_project == "yy"
