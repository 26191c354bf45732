"""Interrupted bench runs: the record says so, and the same command resumes them (subprocesses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from talkinghead.bench.resume import process_identity, run_status

HELPER = Path(__file__).with_name("slow_bench.py")
REPO = Path(__file__).resolve().parents[2]
FIRST, SLOW = "bench_counted_static", "bench_slow_static"


def _command(store: Path, bench_root: Path, *extra: str) -> list[str]:
    return [sys.executable, str(HELPER), "--dataset", "synth", "--store", str(store), "--split", "train",
            "--clips", "3", "--methods", FIRST, SLOW, "--metrics", "psnr", "ssim", "--bench-root", str(bench_root),
            "--no-wandb", "--no-progress", "--samples", "1", *extra]


def _env(calls: Path, slow: float) -> dict:
    calls.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO), "BENCH_CALLS": str(calls), "BENCH_SLOW": str(slow),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def _calls(calls: Path, method: str) -> list[str]:
    path = calls / f"{method}.txt"
    return path.read_text().split() if path.is_file() else []


def _start_and_wait_for_first(command: list[str], env: dict, bench_root: Path) -> tuple[subprocess.Popen, Path]:
    """Start a run; return it and its folder once the first method's partial file is there."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        found = list(bench_root.glob(f"*/partial/{FIRST}.json"))
        if found:
            return process, found[0].parent.parent
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {FIRST} was scored: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the first method was not scored in time")


def _comparable(run_dir: Path) -> list[dict]:
    """results.json per method without the timings, and the records' results."""
    saved = json.loads((run_dir / "results.json").read_text())
    methods = [{k: v for k, v in m.items() if k not in ("seconds", "metric_seconds")} for m in saved["methods"]]
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return methods + [{"method": r["method"], "results": r["results"], "na": r["na"], "clips_ok": r["clips_ok"]}
                      for r in records]


def test_killed_run_is_interrupted_and_the_same_command_resumes_it(synth_vox2_store, tmp_path):
    bench_root, calls = tmp_path / "bench", tmp_path / "calls"
    command = _command(synth_vox2_store, bench_root)
    process, run_dir = _start_and_wait_for_first(command, _env(calls, slow=3.0), bench_root)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "running" and record["pid"] == process.pid  # left as it was: nobody wrote it
    assert run_status(run_dir) == "interrupted"  # ... but its process is gone
    partial = run_dir / "partial" / f"{FIRST}.json"
    before = (partial.stat().st_mtime_ns, partial.read_bytes())
    assert len(_calls(calls, FIRST)) == 3

    done = subprocess.run(command, env=_env(calls, slow=0.0), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"resuming {run_dir}: {FIRST} already scored" in done.stderr
    assert len(_calls(calls, FIRST)) == 3  # not generated again
    assert (partial.stat().st_mtime_ns, partial.read_bytes()) == before
    assert sorted(p.name for p in bench_root.iterdir() if p.is_dir() and p.name != "cache") == [run_dir.name]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "complete" and run_status(run_dir) == "complete"
    assert record["store_source"]["synthtalk"] is True  # the report leaves published rows out for it
    assert record["resumed"][0]["reused"] == [FIRST] and record["resumed"][0]["previous_status"] == "interrupted"
    assert list((run_dir / "samples").glob("*.mp4"))

    # the same command once more: a complete run is not resumed, a new folder is made
    fresh = subprocess.run(command + ["--no-resume"], env=_env(calls, slow=0.0), capture_output=True, text=True,
                           timeout=600)
    assert fresh.returncode == 0, fresh.stderr and "resuming" not in fresh.stderr
    (other,) = [p for p in bench_root.iterdir() if p.is_dir() and p.name not in ("cache", run_dir.name)]
    assert _comparable(other) == _comparable(run_dir)  # the resumed run's numbers are an uninterrupted run's
    history = (bench_root / "results.jsonl").read_text().splitlines()
    assert len(history) == 4  # each complete run appended its two records once


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signalled_run_records_interrupted_and_resumes_in_its_out_folder(synth_vox2_store, tmp_path, sig):
    bench_root, calls = tmp_path / "bench", tmp_path / "calls"
    command = _command(synth_vox2_store, bench_root, "--out", str(bench_root / "mine"))
    process, run_dir = _start_and_wait_for_first(command, _env(calls, slow=3.0), bench_root)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert "run the same command again to resume" in err
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and run_status(run_dir) == "interrupted"
    assert record["interrupted"]["by"] == sig.name and record["interrupted"]["scored"] == [FIRST]
    assert record["interrupted"]["stage"] == "methods"
    if sig == signal.SIGINT:
        return
    # --out DIR holding an interrupted run with other settings is refused; with its own, it resumes
    other = subprocess.run(command + ["--clips", "2"], env=_env(calls, slow=0.0), capture_output=True, text=True,
                           timeout=600)
    assert other.returncode == 2 and "other settings" in other.stderr
    done = subprocess.run(command, env=_env(calls, slow=0.0), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"resuming {run_dir}: {FIRST} already scored" in done.stderr
    assert len(_calls(calls, FIRST)) == 3
    again = subprocess.run(command, env=_env(calls, slow=0.0), capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "already holds a benchmark run" in again.stderr


def test_run_status_of_a_live_a_dead_and_a_reused_pid(tmp_path):
    me = process_identity()
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", **me}))
    assert run_status(tmp_path) == "running"
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", **me, "pid_started": -1}))
    assert run_status(tmp_path) == "interrupted"  # this pid now belongs to another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", **me, "pid": child.pid}))
    assert run_status(tmp_path) == "interrupted"
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", **me, "host": "elsewhere", "pid": child.pid}))
    assert run_status(tmp_path) == "running"  # another machine: cannot tell
    assert run_status(tmp_path / "none") is None


def test_interrupted_while_training_the_syncnet_expert(synth_vox2_store, tmp_path):
    """The first user's case: SIGTERM while the bench trains the SyncNet expert (inside Lightning,
    which turns the interrupt into sys.exit) still leaves run.json "interrupted"."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(synth_vox2_store, store, ignore=shutil.ignore_patterns("experts"))
    config = tmp_path / "syncnet.yaml"
    config.write_text(f"inherits: {REPO / 'experiments' / 'syncnet' / 'tiny.yaml'}\n"
                      "expert: {max_steps: 100000, epoch_batches: 1}\ndata: {windows_per_clip: 2, max_shift: 6}\n")
    bench_root, calls = tmp_path / "bench", tmp_path / "calls"
    command = [sys.executable, str(HELPER), "--dataset", "synth", "--store", str(store), "--split", "train",
               "--clips", "2", "--methods", FIRST, "--metrics", "lse", "--syncnet-config", str(config),
               "--bench-root", str(bench_root), "--out", str(bench_root / "run"), "--no-wandb", "--no-progress",
               "--samples", "0"]
    process = subprocess.Popen(command, env=_env(calls, slow=0.0), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    checkpoint = store / "experts" / "syncnet" / "expert" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert checkpoint.is_file(), process.communicate() if process.poll() is not None else "no checkpoint in time"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    record = json.loads((bench_root / "run" / "run.json").read_text())
    assert record["status"] == "interrupted" and record["interrupted"]["by"] == "SIGTERM"
    assert record["interrupted"]["stage"] == "metrics" and record["interrupted"]["scored"] == []


def test_sigterm_that_lightning_alone_saw_is_an_interrupt(monkeypatch, tmp_path):
    """When only Lightning's SIGTERM flag survives (fit ends with SIGTERMException, a SystemExit of
    code None, i.e. exit 0), training the expert still ends as an interrupt by SIGTERM."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from talkinghead.bench import harness
    from talkinghead.bench.resume import Interrupted
    from talkinghead.training import runner

    def fit_ended_by_sigterm(*args, **kwargs):
        raise SIGTERMException

    monkeypatch.setattr(runner, "train", fit_ended_by_sigterm)
    with pytest.raises(Interrupted) as caught:
        harness._train_syncnet_expert(tmp_path / "syncnet.yaml", tmp_path / "store", tmp_path / "out", progress=False)
    assert caught.value.signal == "SIGTERM"

    def fit_failed(*args, **kwargs):
        raise SystemExit(2)

    monkeypatch.setattr(runner, "train", fit_failed)
    with pytest.raises(SystemExit) as failed:
        harness._train_syncnet_expert(tmp_path / "syncnet.yaml", tmp_path / "store", tmp_path / "out", progress=False)
    assert failed.value.code == 2
