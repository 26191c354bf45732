"""Progress in non-terminal output is periodic plain lines, never carriage-return bars."""
from __future__ import annotations

import io
import re
import time

from talkinghead.progress import Lines, format_duration, progress


def test_lines_every_percent_with_rate_and_eta():
    out = io.StringIO()  # not a TTY
    bar = progress(range(50), desc="pcavs synth", unit="clip", stream=out)
    assert isinstance(bar, Lines)
    assert list(bar) == list(range(50))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10  # 10%, 20%, ..., 90%, then the final line
    assert re.fullmatch(r"\[pcavs synth\] 5/50 clips \(10%\), [\d.]+ (s/clip|clip/s), eta \d+ s", lines[0])
    assert lines[-1].startswith("[pcavs synth] 50/50 clips in ")


def test_lines_every_few_seconds_without_a_total():
    out = io.StringIO()
    bar = progress(desc="nlse", unit="clip", stream=out, every_s=0.05)
    for _ in range(4):
        time.sleep(0.06)
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[0].startswith("[nlse] 1 clips") and "eta" not in lines[0]


def test_bar_on_request_and_nothing_when_disabled(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setenv("TALKINGHEAD_PROGRESS", "bar")
    assert isinstance(progress(range(3), stream=io.StringIO()), tqdm)
    monkeypatch.setenv("TALKINGHEAD_PROGRESS", "off")
    out = io.StringIO()
    assert list(progress(range(3), stream=out)) == [0, 1, 2] and out.getvalue() == ""
    assert format_duration(70) == "70 s" and format_duration(300) == "5 min"


def test_bench_progress_in_a_log_is_lines(synth_vox2_store, tmp_path, capsys, monkeypatch):
    from talkinghead.bench.harness import BenchConfig, run_benchmark

    monkeypatch.delenv("TALKINGHEAD_PROGRESS", raising=False)
    config = BenchConfig(protocol="synth", store=str(synth_vox2_store), split="train", num_clips=3,
                         methods=["ground_truth", "static"], metrics=["psnr"], bench_root=str(tmp_path / "bench"),
                         wandb=False, progress=True, samples=0, command=["pytest"])
    run_benchmark(config)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "[static synth] 1/3 clips (33%)" in err and "[static synth] 3/3 clips in " in err
    assert "[bench synth] 1/2 methods (50%)" in err


def test_training_progress_in_a_log_is_lines(synth_vox2_store, tmp_path, capsys, monkeypatch):
    from talkinghead.methods.registry import get_method
    from talkinghead.training.runner import train

    monkeypatch.delenv("TALKINGHEAD_PROGRESS", raising=False)
    train(get_method("syncnet"), "tiny", [f"store={synth_vox2_store}", f"out={tmp_path / 'run'}",
                                          "expert.max_steps=10", "expert.epoch_batches=5", "data.windows_per_clip=2",
                                          "data.max_shift=6", "trainer.progress=true"])
    out = capsys.readouterr().out
    assert "\r" not in out
    steps = re.findall(r"^\[syncnet expert\] step (\d+)/10 \(\d+%\), [\d.]+ (?:it/s|s/it), loss [\d.e+-]+, eta",
                       out, re.M)
    assert steps == [str(n) for n in range(1, 10)]  # every 10% of 10 steps
    assert re.search(r"^\[syncnet expert\] step 10/10 \(100%\), .* this run$", out, re.M)
