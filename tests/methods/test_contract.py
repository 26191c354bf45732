"""The method contract, checked for every registered method (`talkinghead.methods.registry`).

For each method: its tiny config (``experiments/<name>/tiny.yaml``) trains every stage on SynthTalk
with finite losses; a run killed (SIGKILL) mid-stage and rerun with the same command resumes at
its checkpoint's global step and ends with the same batches and weights as an uninterrupted run;
one stage runs under 2-process DDP (gloo) with the ranks in step; the command line answers
``--help`` and ``--print-config``; a method with a generator writes an mp4 with an audio stream of
the right length (once per declared control) and produces bench rows; the official importer
round-trips a random state dict saved in the official key layout.

Training, kill and DDP runs are real ``python -m talkinghead.cli train`` processes (Lightning's
DDP starts the second rank by re-running the command).
"""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from talkinghead import cli
from talkinghead.methods.registry import METHODS
from talkinghead.training.runner import final_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ALL = sorted(METHODS)
GENERATORS = sorted(name for name, m in METHODS.items() if m.generator is not None)


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    env.pop("LOCAL_RANK", None)
    return env


def train_command(name: str, store: Path, out: Path, *overrides: str, record: bool = False) -> list[str]:
    """``python -m talkinghead.cli train --method NAME --config tiny store=.. out=.. [overrides]``."""
    command = [sys.executable, "-m", "talkinghead.cli", "train", "--method", name, "--config", "tiny",
               f"store={store}", f"out={out}", *overrides]
    return command + (["--record"] if record else [])


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=str(cwd), env=_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def record(out: Path, stage: str, rank: int = 0) -> dict:
    return json.loads((out / stage / "record" / f"rank{rank}.json").read_text())


def loss_values(out: Path, stage: str) -> list[float]:
    values = []
    for path in sorted((out / stage / "logs").glob("version_*/metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                values += [float(v) for k, v in row.items() if k.startswith("train/loss") and v not in ("", None)]
    return values


@pytest.fixture(scope="module")
def tiny_runs(synth_vox2_store, tmp_path_factory) -> dict[str, Path]:
    """Every method's tiny config, all stages, trained once (the run folder per method)."""
    runs = {}
    for name in ALL:
        out = tmp_path_factory.mktemp(f"contract-{name}")
        run(train_command(name, synth_vox2_store, out), out)
        runs[name] = out
    return runs


@pytest.mark.parametrize("name", ALL)
def test_tiny_config_trains_every_stage(name, tiny_runs, synth_vox2_store):
    method, out = METHODS[name], tiny_runs[name]
    cfg = method.load_config("tiny")
    for stage in method.stages:
        done = json.loads((out / stage / "done.json").read_text())
        assert done["batches"] == cfg[stage].max_steps and done["skipped_steps"] == 0
        assert final_checkpoint(out, stage).is_file()
        losses = loss_values(out, stage)
        assert losses and all(math.isfinite(v) for v in losses), (stage, losses)
        saved = (out / stage / "config.yaml").read_text()
        assert "stages:" in saved and "module:" in saved  # resolved config + the module's hparams
    # a second run of the same command trains nothing more
    before = {s: final_checkpoint(out, s).stat().st_mtime_ns for s in method.stages}
    result = run(train_command(name, synth_vox2_store, out), out)
    assert all(final_checkpoint(out, s).stat().st_mtime_ns == before[s] for s in method.stages)
    assert result.stdout.count("already trained") == len(method.stages)


@pytest.mark.parametrize("name", ALL)
def test_killed_run_resumes_at_the_same_step(name, synth_vox2_store, tmp_path):
    """SIGKILL after the first epoch checkpoint, rerun the same command: the resumed run starts at
    the checkpoint's global step and draws the batches, and ends with the weights, of a run that
    was never interrupted."""
    method = METHODS[name]
    stage = method.stages[-1]
    schedule = [f"stages=[{stage}]", f"{stage}.max_steps=12", f"{stage}.epoch_batches=2", "validation.num_clips=0"]
    straight = tmp_path / "straight"
    run(train_command(name, synth_vox2_store, straight, *schedule, record=True), tmp_path)
    reference = record(straight, stage)

    killed = tmp_path / "killed"
    command = train_command(name, synth_vox2_store, killed, *schedule, record=True)
    process = subprocess.Popen(command, cwd=str(tmp_path), env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    last = final_checkpoint(killed, stage)
    deadline = time.monotonic() + 240
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-stage"
    assert not (killed / stage / "done.json").exists()
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert step > 0

    run(command, tmp_path)  # the same command again
    resumed = record(killed, stage)
    assert resumed["batches"][0]["step"] == step
    done = len(reference["batches"]) - len(resumed["batches"])
    assert 0 < done < len(reference["batches"])
    assert resumed["batches"] == reference["batches"][done:]  # same steps, same samples
    assert resumed["global_step"] == reference["global_step"]
    assert resumed["params_sha256"] == reference["params_sha256"]
    assert json.loads((killed / stage / "done.json").read_text())["batches"] == 12


@pytest.mark.parametrize("name", ALL)
def test_one_stage_under_two_process_ddp(name, synth_vox2_store, tmp_path):
    method = METHODS[name]
    stage = method.stages[-1]
    out = tmp_path / "ddp"
    run(train_command(name, synth_vox2_store, out, f"stages=[{stage}]", f"{stage}.max_steps=3",
                      f"{stage}.epoch_batches=3", f"{stage}.batch_size=2", "validation.num_clips=0",
                      "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", record=True), tmp_path)
    records = [record(out, stage, rank) for rank in (0, 1)]
    assert [r["world_size"] for r in records] == [2, 2]
    assert records[0]["global_step"] == records[1]["global_step"] > 0
    assert [len(r["batches"]) for r in records] == [3, 3]
    seen = [{s for b in r["batches"] for s in b["samples"]} for r in records]
    assert seen[0].isdisjoint(seen[1])  # each rank drew its own samples
    assert records[0]["params_sha256"] == records[1]["params_sha256"]  # gradients were averaged
    assert final_checkpoint(out, stage).is_file()


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_train_help_and_print_config(name, capsys):
    method = METHODS[name]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--method", name, "--", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"talkinghead train --method {name}" in text and " -> ".join(method.stages) in text
    assert cli.main(["train", "--method", name, "--config", "tiny", "--print-config",
                     f"{method.stages[0]}.max_steps=7"]) == 0
    import yaml

    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed[method.stages[0]]["max_steps"] == 7 and printed["name"] == method.load_config("tiny").name
    for config in method.config_files:  # every shipped config resolves against the schema
        method.load_config(config)


@pytest.mark.parametrize("name", GENERATORS)
def test_generate_help_lists_every_control(name, capsys):
    generator = METHODS[name].generator_class()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--method", name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(control.option in text for control in generator.controls)


def test_unknown_method_lists_the_registered_ones(capsys):
    assert cli.main(["train", "--method", "nope"]) == 2
    assert cli.main(["generate", "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("unknown method 'nope'") == 2 and all(name in err for name in ALL)


# ---------------------------------------------------------------------------------------------
# generation and bench rows
# ---------------------------------------------------------------------------------------------
def _control_values(generator, clip: Path) -> list[dict]:
    """One set of control values per declared control (a video control gets a driving clip)."""
    runs = [{}]
    for c in generator.controls:
        if c.kind == "video":
            runs.append({c.name: str(clip)})
        elif c.kind == "flag":
            runs.append({c.name: True})
        elif c.kind == "choice":
            runs += [{c.name: choice} for choice in c.choices if choice != c.default]
        elif c.kind == "float":
            runs.append({c.name: 0.5 * float(c.default or 1.0)})
        elif c.kind == "int":
            runs.append({c.name: 1})
        else:
            raise AssertionError(f"{generator.name}: control kind {c.kind!r} has no contract value")
    return runs


@pytest.mark.parametrize("name", GENERATORS)
def test_generate_writes_an_mp4_with_the_driving_audio(name, tiny_runs, raw_clips, audio_of, tmp_path, capsys):
    import av

    from talkinghead.generation import SAMPLE_RATE, num_frames_for, read_audio

    method = METHODS[name]
    generator = method.generator_class()
    clips, audio = raw_clips, audio_of(raw_clips[1])
    checkpoint = final_checkpoint(tiny_runs[name], method.last_stage)
    for i, values in enumerate(_control_values(generator, clips[2])):
        out = tmp_path / f"out{i}.mp4"
        argv = ["generate", "--method", name, "--checkpoint", str(checkpoint), "--reference", str(clips[0]),
                "--audio", str(audio), "--out", str(out)]
        for control in generator.controls:
            if control.name in values:
                value = values[control.name]
                argv += [control.option] if value is True else [control.option, str(value)]
        assert cli.main(argv) == 0, (values, capsys.readouterr().err)
        with av.open(str(out)) as container:
            assert len(container.streams.audio) == 1
            frames = sum(1 for _ in container.decode(container.streams.video[0]))
        driving = len(read_audio(audio)) / SAMPLE_RATE
        assert frames == num_frames_for(len(read_audio(audio))), (frames, driving)
        muxed = len(read_audio(out)) / SAMPLE_RATE
        assert abs(muxed - frames / 25) < 0.08, (muxed, frames)  # AAC pads by at most a frame of 1024 samples


@pytest.mark.parametrize("name", GENERATORS)
def test_bench_rows_score(name, tiny_runs, synth_vox2_store, tmp_path):
    from talkinghead.bench.harness import BenchConfig, run_benchmark

    method = METHODS[name]
    rows = [row for row, spec in method.bench.items() if spec.needs_checkpoint]
    assert rows, f"{name} declares no bench row that scores a trained checkpoint"
    checkpoint = str(final_checkpoint(tiny_runs[name], method.last_stage))
    result = run_benchmark(BenchConfig(
        protocol="synth", store=str(synth_vox2_store), split="train", num_clips=1, methods=rows,
        checkpoints={row: checkpoint for row in rows}, metrics=["ssim"], bench_root=str(tmp_path / "bench"),
        out=str(tmp_path / "bench" / "run"), wandb=False, progress=False, samples=0, command=["pytest"]))
    scored = {m.name: m for m in result.methods}
    assert not result.errors, result.errors
    for row in rows:
        assert scored[row].clips_ok == 1 and 0.0 < scored[row].values["SSIM"] <= 1.0
    assert all(row in (result.run_dir / "table.md").read_text() for row in rows)


# ---------------------------------------------------------------------------------------------
# official weights
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if m.official_import is not None))
def test_official_importer_round_trips(name, tmp_path):
    method = METHODS[name]
    assert method.official_state is not None, f"{name}: an importer without an official-layout fixture"
    path, expected, kwargs = method.official_state(tmp_path, seed=3)
    model = method.official_import(path, **kwargs)
    state = model.state_dict()
    missing = set(expected) - set(state)
    assert not missing, sorted(missing)[:5]
    for key, value in expected.items():
        assert torch.equal(state[key].cpu(), value.cpu()), key
