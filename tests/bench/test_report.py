"""The benchmark report: markdown table with published rows, CSV, JSON lines, plots, videos, W&B."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from talkinghead.bench.harness import BenchResult, MethodResult
from talkinghead.bench.protocol import Selection, get_protocol
from talkinghead.bench.report import (
    format_value,
    load_published,
    log_wandb,
    markdown_table,
    published_rows,
    write_report,
)


def _result(run_dir: Path, protocol: str = "vox2", samples: bool = True) -> BenchResult:
    selections = [Selection({"clip_id": f"id0000{i}/v/00001", "split": "test"}, "self",
                            {"clip_id": f"id0000{i}/v/00001"}) for i in range(3)]
    columns = {"SSIM": True, "CPBD": True, "LSE-C": True, "LSE-D": False, "NLSE-C": False, "CSIM": True}
    column_metric = {"SSIM": "ssim", "CPBD": "cpbd", "LSE-C": "lse", "LSE-D": "lse", "NLSE-C": "lse", "CSIM": "csim"}
    truth = MethodResult("ground_truth", {"name": "ground_truth", "checkpoint": None},
                         values={"SSIM": 1.0, "CPBD": 0.21, "LSE-C": 6.5, "LSE-D": 7.1, "NLSE-C": 0.01, "CSIM": None},
                         na={"CSIM": "MissingWeightsError: pretrained file for 'arcface_r100' not found"}, clips_ok=3)
    static = MethodResult("static", {"name": "static", "checkpoint": None},
                          values={"SSIM": 0.61, "CPBD": 0.25, "LSE-C": 0.4, "LSE-D": 12.3, "NLSE-C": -0.94,
                                  "CSIM": None},
                          na={"CSIM": "MissingWeightsError: pretrained file for 'arcface_r100' not found"},
                          clips_ok=2, clips_failed=1,
                          errors=[{"method": "static", "clip_id": "id00001/v/00001", "file": "x.npz",
                                   "stage": "generate", "error": "RuntimeError: boom"}])
    metric_info = {
        "ssim": {"columns": {"SSIM": True}, "status": "ok", "reason": None, "description": "SSIM", "uses_syncnet": False},
        "cpbd": {"columns": {"CPBD": True}, "status": "ok", "reason": None, "description": "CPBD", "uses_syncnet": False},
        "lse": {"columns": {"LSE-C": True, "LSE-D": False, "NLSE-C": False}, "status": "ok", "reason": None,
                "description": "LSE", "uses_syncnet": True},
        "csim": {"columns": {"CSIM": True}, "status": "ok", "reason": None,
                 "description": "dlib ResNet 128-d face descriptor", "uses_syncnet": False},
    }
    syncnet = {"name": "SyncNet expert (synth-vox2, 12 epochs)", "kind": "expert", "checkpoint": "runs/syncnet/e.ckpt",
               "sha256": "ab" * 32}
    run_info = {"config": {"bench_root": str(run_dir.parent)}, "nlse_reference": {"mean": 6.4, "clips": 5},
                "protocol": {"name": protocol}, "finished": "2026-01-01T00:00:00"}
    sample = {}
    if samples:
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
        sample = {"id00000/v/00001": {"audio": (0.1 * np.sin(np.arange(6400) / 5)).astype(np.float32),
                                      "frames": {"ground_truth": frames, "static": frames[:1].repeat(10, 0)}}}
    return BenchResult(run_dir, get_protocol(protocol), "test", selections, columns, column_metric,
                       [truth, static], metric_info, syncnet, run_info, sample)


def _table_rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if not set(line) <= set("|:- ")]


def test_markdown_table_shape_and_published_rows(tmp_path):
    result = _result(tmp_path / "run")
    rows = published_rows(list(result.columns), "vox2")
    table = markdown_table(result, rows)
    parsed = _table_rows(table)
    header, body = parsed[0], parsed[1:]
    assert header == ["Method", "clips", "SSIM ↑", "CPBD ↑", "LSE-C ↑", "LSE-D ↓", "NLSE-C ↓", "CSIM ↑"]
    names = [row[0].split("[^")[0] for row in body]
    assert names[:2] == ["ground_truth", "static"]
    assert {"PC-AVS (published)", "PD-FGC (published)", "Rhythmic Head (published)",
            "Ground truth (published)"} <= set(names)
    assert all(len(row) == len(header) for row in body)
    pcavs = body[names.index("PC-AVS (published)")]
    assert pcavs[2:5] == ["0.886", "0.083", "5.900"]  # paper's Sync_conf is our LSE-C
    pdfgc = body[names.index("PD-FGC (published)")]
    assert pdfgc[4] == "7.260" and pdfgc[6] == "0.012" and pdfgc[2] == "–"
    assert body[0][2] == "1.000" and body[0][1] == "3/3" and body[1][1].startswith("2/3[^")
    assert body[0][7].startswith("n/a[^")
    # footnotes: the n/a reason, the failed clip, the SyncNet, the CSIM embedding, the sources
    assert "arcface_r100" in table and "RuntimeError: boom" in table
    assert "SyncNet = SyncNet expert (synth-vox2, 12 epochs)" in table
    assert "CSIM: embedding = dlib ResNet 128-d face descriptor" in table and "PC-AVS (Zhou et al., CVPR 2021), Table 1" in table
    assert "NLSE-C reference: LSE-C of 5 real train-split clips = 6.400" in table


def test_published_rows_per_dataset():
    data = load_published()
    assert {"vox2", "lrw"} <= set(data)
    assert {"vox2", "lrw", "mead"} <= set(data)
    lrw = published_rows(["SSIM", "LMD-mouth", "LSE-C"], "lrw")
    assert [r["method"] for r in lrw] == ["PC-AVS (published)", "Rhythmic Head (published)"]
    assert lrw[0]["values"] == {"SSIM": 0.861, "LMD-mouth": 3.93, "LSE-C": 6.4}
    vox = {r["method"]: r["values"] for r in published_rows(["LMD", "LMD-mouth"], "vox2")}
    assert vox["PD-FGC (published)"] == {"LMD": 1.15, "LMD-mouth": 1.93}  # PD-FGC's LMDm is our LMD-mouth
    assert vox["PC-AVS (published)"] == {"LMD-mouth": 6.88}  # PC-AVS measures LMD around the mouth
    assert published_rows(["SSIM"], None) == []  # synthetic protocols have none
    assert published_rows(["PSNR"], "vox2") == []  # no paper reports PSNR


def test_published_yaml_validation(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vox2:\n  - method: X\n")
    with pytest.raises(ValueError, match="need `method` and a `values` mapping"):
        load_published(bad)
    assert load_published(tmp_path / "absent.yaml") == {}


def test_format_value():
    assert [format_value(v) for v in (0.8861, 6.88, 12.99, 147.0, None)] == ["0.886", "6.880", "12.99", "147.0", "n/a"]


def test_write_report_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = tmp_path / "bench" / "20260101-000000-vox2"
    result = _result(run_dir)
    outputs = write_report(result, log=lambda m: None)
    assert outputs["wandb"] is None
    assert (run_dir / "table.md").read_text().startswith("## Benchmark `vox2`")
    rows = list(csv.DictReader(io.StringIO((run_dir / "results.csv").read_text())))
    assert [r["method"] for r in rows[:2]] == ["ground_truth", "static"] and rows[2]["kind"] == "published"
    assert float(rows[1]["SSIM"]) == pytest.approx(0.61) and rows[0]["CSIM"] == ""
    lines = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in lines] == ["ground_truth", "static"]
    assert lines[1]["results"]["LSE-D"] == pytest.approx(12.3) and lines[1]["clips_failed"] == 1
    assert lines[0]["syncnet"].startswith("SyncNet expert") and lines[0]["protocol"] == "vox2"
    for column in result.columns:
        png = run_dir / "plots" / f"{column}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (video,) = outputs["samples"]
    from talkinghead.data.video import probe_video

    info = probe_video(video)
    assert (info.width, info.height, info.num_frames, info.has_audio) == (64, 56, 10, True)
    # the history file gains one line per method per run
    write_report(result, log=lambda m: None)
    history = (tmp_path / "bench" / "results.jsonl").read_text().splitlines()
    assert len(history) == 4 and len((run_dir / "results.jsonl").read_text().splitlines()) == 2


def test_wandb_offline_run_inside_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = _result(run_dir, samples=False)
    messages: list[str] = []
    folders = log_wandb(result, {"plots": [], "samples": []}, published=published_rows(list(result.columns), "vox2"),
                        log=messages.append)
    assert folders is not None and len(folders) == len(result.methods), messages  # one W&B run per method
    for folder in folders:
        assert Path(folder).parent == run_dir / "wandb" and Path(folder).name.startswith("offline-run-")
        assert list(Path(folder).glob("*.wandb"))
