"""W&B tracking (offline): a training stage's run (group, job_type, samples, its checkpoint as a
reference "model" artifact) and the bench run that scores that checkpoint declaring the same
artifact (same name and digest) as its input; the offline log reader; sync commands."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from talkinghead.methods.registry import get_method
from talkinghead.training.runner import train
from talkinghead.training.tracking import (
    checkpoint_artifact_name,
    find_offline_runs,
    offline_records,
    offline_run,
    sync_commands,
    wandb_project,
)

pytest.importorskip("wandb")


@pytest.fixture(scope="module")
def trained(synth_vox2_store, tmp_path_factory, wandb_offline):
    """A 2-batch PC-AVS ``full`` stage (tiny config) with W&B offline and one validation clip."""
    mp = pytest.MonkeyPatch()
    wandb_offline(mp)
    out = tmp_path_factory.mktemp("tracking") / "pcavs-run"
    try:
        last = train(get_method("pcavs"), "tiny", [
            f"store={synth_vox2_store}", f"out={out}", "full.max_steps=2", "full.epoch_batches=2", "logger.wandb=true",
            "validation.num_clips=1", "validation.num_frames=6", "validation.metrics=[ssim]"], stage="full")
    finally:
        mp.undo()
    (folder,) = find_offline_runs(out)
    return out, last, offline_run(folder, wait=60)


def test_training_run_group_job_type_samples_and_checkpoint_artifact(trained):
    out, last, run = trained
    assert run["complete"] and run["project"] == "talkinghead" and run["name"] == "pcavs-tiny-full"
    assert run["group"] == "pcavs-tiny" and run["job_type"] == "full"
    assert run["id"] == (out / "full" / "wandb_id").read_text().strip()
    assert run["config"]["name"] == "tiny" and run["config"]["full"]["max_steps"] == 2  # the resolved config
    # losses, learning rates, throughput, validation, the sample grid and the validation video
    assert {"train/loss_G_total", "train/batches_per_s", "val/SSIM", "samples/full", "videos/full"} <= run["history_keys"]
    assert any(key.startswith("lr-") for key in run["history_keys"])
    from talkinghead.bench.dashboard import STAGE_LOSSES  # the training workspace's loss panels

    assert set(STAGE_LOSSES["pcavs"]["full"]) - run["history_keys"] == {"train/loss_vgg"}  # VGG19 weights absent
    folder = Path(run["folder"])
    assert list(folder.glob("files/media/videos/videos/full_*.mp4")) and list(folder.glob("files/media/images/samples/full_*.png"))
    (artifact,) = [a for a in run["artifacts"] if a["type"] == "model"]
    assert artifact["name"] == "pcavs-run-full" == checkpoint_artifact_name(out, "full")
    assert set(artifact["aliases"]) == {"latest", "full", "finished"} and not artifact["use_after_commit"]
    assert artifact["references"] == [last.resolve().as_uri()]
    assert artifact["metadata"]["stage"] == "full" and artifact["metadata"]["batches"] == 2


def test_bench_run_declares_the_checkpoint_it_scored_as_input(trained, tmp_path, monkeypatch):
    """The bench side builds the same reference artifact (name, digest) and records its use."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "bench"))
    from test_report import _result  # the report tests' two-method bench result

    from talkinghead.bench.report import log_wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out, last, training = trained
    result = _result(tmp_path / "bench" / "run", samples=False)
    result.methods[1].info["checkpoint"] = str(last)
    messages: list[str] = []
    folders = log_wandb(result, {}, log=messages.append)
    assert len(folders) == 2, messages
    runs = {r["config"]["method"]: r for r in (offline_run(f, wait=60) for f in folders)}
    produced = next(a for a in training["artifacts"] if a["type"] == "model")
    (used,) = [a for a in runs["static"]["artifacts"] if a["type"] == "model"]
    assert used["use_after_commit"] and used["name"] == produced["name"] and used["digest"] == produced["digest"]
    config = runs["static"]["config"]
    assert config["checkpoint"] == str(last) and config["checkpoint_artifact"] == produced["name"]
    assert config["training_run_id"] == training["id"] and config["training_stage"] == "full"
    assert config["training_run_name"] == "pcavs-run"
    assert not [a for a in runs["ground_truth"]["artifacts"] if a["type"] == "model"]


def test_offline_reader_and_sync_commands(trained, tmp_path):
    out, _, run = trained
    root = tmp_path / "runs"
    shutil.copytree(out, root / "pcavs-run")
    bench = root / "bench" / "20260101-synth" / "wandb" / "offline-run-20260101_000000-abc"
    bench.mkdir(parents=True)
    training, benches = sync_commands(root, entity="me")
    assert training.startswith("wandb sync --entity me ") and "pcavs-run/full/wandb/offline-run-" in training
    assert str(bench) not in training and benches == f"wandb sync --entity me {bench}"
    assert sync_commands(tmp_path / "none") == []
    bad = tmp_path / "bad.wandb"
    bad.write_bytes(b"not a log")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        list(offline_records(bad))
    kinds = [r.WhichOneof("record_type") for r in offline_records(next(Path(run["folder"]).glob("*.wandb")))]
    assert kinds[0] == "header" and "run" in kinds and "exit" in kinds


def test_project_name(monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    assert wandb_project() == "talkinghead" and wandb_project("x") == "x"
    monkeypatch.setenv("WANDB_PROJECT", "env")
    assert wandb_project("x") == "env"
