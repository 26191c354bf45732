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
    plot_columns,
    published_rows,
    write_csv,
    write_report,
)


def _result(run_dir: Path, protocol: str = "vox2", samples: bool = True) -> BenchResult:
    selections = [Selection({"clip_id": f"id0000{i}/v/00001", "split": "test"}, "self",
                            {"clip_id": f"id0000{i}/v/00001"}) for i in range(3)]
    columns = {"SSIM": True, "CPBD": True, "LSE-C": True, "LSE-D": False, "NLSE-C": False, "CSIM": True}
    column_metric = {"SSIM": "ssim", "CPBD": "cpbd", "LSE-C": "lse", "LSE-D": "lse", "NLSE-C": "lse", "CSIM": "csim"}
    truth = MethodResult("ground_truth", {"name": "ground_truth", "checkpoint": None},
                         values={"SSIM": 1.0, "CPBD": 0.21, "LSE-C": 6.5, "LSE-D": 7.1, "NLSE-C": -0.009, "CSIM": None},
                         na={"CSIM": "MissingWeightsError: pretrained file for 'arcface_r100' not found"}, clips_ok=3)
    static = MethodResult("static", {"name": "static", "checkpoint": None},
                          values={"SSIM": 0.61, "CPBD": 0.25, "LSE-C": 0.4, "LSE-D": 12.3, "NLSE-C": -0.942,
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
    assert header == ["Method", "checkpoint", "clips", "SSIM ↑", "CPBD ↑", "LSE-C ↑", "LSE-D ↓", "NLSE-C →0", "CSIM ↑"]
    names = [row[0].split("[^")[0] for row in body]
    assert names[:2] == ["ground_truth", "static"]
    assert {"PC-AVS (published)", "PD-FGC (published)", "Rhythmic Head (published)",
            "Ground truth (published)"} <= set(names)
    assert all(len(row) == len(header) for row in body)
    pcavs = body[names.index("PC-AVS (published)")]
    assert pcavs[3:6] == ["0.886", "0.083", "5.900"]  # paper's Sync_conf is our LSE-C
    pdfgc = body[names.index("PD-FGC (published)")]
    assert pdfgc[5] == "7.260" and pdfgc[7] == "0.012" and pdfgc[3] == "–" and pdfgc[1] == "–"
    assert body[0][3] == "**1.000**" and body[0][2] == "3/3" and body[1][2].startswith("2/3[^")
    assert body[0][1] == body[1][1] == "–"  # baselines score no checkpoint
    assert body[0][8].startswith("n/a[^")
    # the best measured value per column in bold; NLSE-C by |x|: -0.009 beats -0.942; published never bold
    assert body[0][7] == "**-0.009**" and body[1][7] == "-0.942"
    assert body[1][4] == "**0.250**" and body[0][4] == "0.210"  # CPBD: higher is better
    assert body[0][6] == "**7.100**" and body[1][6] == "12.30"  # LSE-D: lower is better
    assert not any("**" in cell for row in body[2:] for cell in row)
    assert "→0 closer to 0 is better (ranked by |x|) (NLSE-C)" in table
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
    assert float(rows[1]["NLSE-C"]) == pytest.approx(-0.942)  # signed as measured; ranked by |x|
    assert rows[0]["best"] == "SSIM;LSE-C;LSE-D;NLSE-C" and rows[1]["best"] == "CPBD" and rows[2]["best"] == ""
    assert rows[0]["checkpoint"] == "" and rows[0]["training_run"] == ""
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


def test_table_names_each_rows_checkpoint_and_training_run(tmp_path):
    stage = tmp_path / "runs" / "pdfgc" / "expression"
    (stage / "checkpoints").mkdir(parents=True)
    checkpoint = stage / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(b"x")
    (stage / "wandb_id").write_text("w4nd8\n")
    result = _result(tmp_path / "run", samples=False)
    result.methods.append(MethodResult("pdfgc", {"name": "pdfgc", "checkpoint": str(checkpoint)},
                                       values={"SSIM": 0.5, "NLSE-C": 0.3}, clips_ok=3))
    table = markdown_table(result)
    body = _table_rows(table)[1:]
    assert body[2][0] == "pdfgc" and body[2][1].startswith("pdfgc/expression[^")
    note = body[2][1].split("[^")[1].rstrip("]")
    footnote = next(line for line in table.splitlines() if line.startswith(f"[^{note}]:"))
    assert f"`{checkpoint}`" in footnote and "stage `expression`" in footnote and "W&B id `w4nd8`" in footnote
    assert body[2][7] == "0.300"  # |0.3| is worse than |-0.009|
    write_csv(result, tmp_path / "r.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert rows[2]["checkpoint"] == str(checkpoint) and rows[2]["training_run"] == str(tmp_path / "runs" / "pdfgc")


def test_charts_show_closer_to_zero_columns_as_absolute_values(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    titles, heights = {}, {}
    original = Figure.savefig

    def capture(fig, *args, **kwargs):
        ax = fig.axes[0]
        title = ax.get_title()
        titles[title.split(" ")[0]] = title
        heights[title.split(" ")[0]] = [round(p.get_height(), 3) for p in ax.patches]
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    result = _result(tmp_path / "run", samples=False)
    paths = plot_columns(result, tmp_path / "plots")
    assert {p.name for p in paths} == {f"{c}.png" for c in result.columns}
    assert heights["|NLSE-C|"] == [0.009, 0.942] and "closer to 0 is better" in titles["|NLSE-C|"]
    assert heights["LSE-D"] == [7.1, 12.3] and "lower is better" in titles["LSE-D"]


def test_published_rows_only_on_their_own_dataset(tmp_path, monkeypatch):
    """A vox2 protocol run on a SynthTalk store shows no VoxCeleb2 paper rows, and says why."""
    from talkinghead.bench.report import published_for

    monkeypatch.setenv("WANDB_MODE", "disabled")
    result = _result(tmp_path / "bench" / "synth-as-vox2", samples=False)
    result.run_info["store_source"] = {"synthtalk": True, "evidence": "its clips carry SynthTalk ground truth"}
    rows, why = published_for(result)
    assert rows == [] and why.startswith("published VoxCeleb2 rows left out: the store data/store/vox2 is SynthTalk")
    write_report(result, log=lambda m: None)
    table = (result.run_dir / "table.md").read_text()
    assert "(published)" not in table and "published VoxCeleb2 rows left out" in table
    assert "published" not in (result.run_dir / "results.csv").read_text()

    result.run_info["store_source"] = {"synthtalk": False, "evidence": None}
    rows, why = published_for(result)
    assert why is None and {r["method"] for r in rows} >= {"PC-AVS (published)", "PD-FGC (published)"}

    # an older run.json without store_source: the store itself is looked at
    store = tmp_path / "store"
    (store / "clips").mkdir(parents=True)
    np.savez(store / "clips" / "a.npz", frames=np.zeros(1), truth_pose=np.zeros((1, 6)))
    (store / "index.json").write_text(json.dumps([{"clip_id": "a", "file": "clips/a.npz"}]))
    result = _result(tmp_path / "bench" / "old", samples=False)
    result.protocol = get_protocol("vox2", store=str(store))
    assert published_for(result)[0] == [] and "SynthTalk ground truth" in published_for(result)[1]
