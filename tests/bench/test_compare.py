"""`talkinghead compare`: tables per protocol group, |NLSE-C| ranking, CSV, charts, copied videos, errors,
and the report opened in headless Chromium (every video decoded, every chart loaded)."""
from __future__ import annotations

import csv
import html
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from talkinghead.bench.compare import NotARunFolderError, compare_runs, latest_runs, load_run
from talkinghead.cli import main as talkinghead_main


# ---------------------------------------------------------------------------------------------
# hand-written run folders: exact numbers
# ---------------------------------------------------------------------------------------------
def _fake_run(root: Path, name: str, protocol: str, methods: dict[str, dict], checkpoint: dict | None = None,
              finished: str = "2026-01-01T00:00:00", status: str = "complete") -> Path:
    """A run folder as the harness writes it: run.json, results.json (column senses) and one
    results.jsonl line per method (`talkinghead.bench.records` schema)."""
    folder = root / name
    folder.mkdir(parents=True)
    columns = {"SSIM": True, "LSE-D": False, "NLSE-C": False}
    (folder / "run.json").write_text(json.dumps({"status": status, "finished": finished, "cwd": str(root),
                                                 "protocol": {"name": protocol, "seed": 0}}))
    (folder / "results.json").write_text(json.dumps({"columns": columns}))
    lines = []
    for method, results in methods.items():
        ckpt = (checkpoint or {}).get(method)
        lines.append({"schema": 2, "record_id": f"{name}/{method}", "run": name, "run_dir": str(folder),
                      "protocol": protocol, "dataset": "vox2", "split": "test", "setting": "self", "seed": 0,
                      "num_clips": 4, "store": "data/store/synth-vox2", "method": method, "checkpoint": ckpt,
                      "results": results, "na": {c: "no SyncNet" for c, v in results.items() if v is None},
                      "directions": {"SSIM": "higher", "LSE-D": "lower", "NLSE-C": "zero"},
                      "clips_ok": 4, "clips_failed": 0, "samples": [], "control_matrix": None})
    (folder / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def _staged_checkpoint(root: Path, run: str, stage: str, wandb_id: str) -> Path:
    stage_dir = root / "runs" / run / stage
    (stage_dir / "checkpoints").mkdir(parents=True)
    (stage_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (stage_dir / "wandb_id").write_text(wandb_id + "\n")
    return stage_dir / "checkpoints" / "last.ckpt"


@pytest.fixture
def fake_runs(tmp_path):
    ckpt = _staged_checkpoint(tmp_path, "pdfgc-s1", "expression", "wb123")
    a = _fake_run(tmp_path / "bench", "a-synth", "synth", {
        "ground_truth": {"SSIM": 1.0, "LSE-D": 7.0, "NLSE-C": -0.009},
        "static": {"SSIM": 0.6, "LSE-D": 12.0, "NLSE-C": -0.942}}, finished="2026-01-01T00:00:00")
    b = _fake_run(tmp_path / "bench", "b-synth", "synth", {
        "static": {"SSIM": 0.61, "LSE-D": 11.5, "NLSE-C": -0.95},
        "pdfgc": {"SSIM": 0.52, "LSE-D": 6.5, "NLSE-C": 0.2}}, checkpoint={"pdfgc": str(ckpt)},
        finished="2026-01-02T00:00:00")
    c = _fake_run(tmp_path / "bench", "c-pose", "synth-pose", {
        "static": {"SSIM": 0.5, "LSE-D": None, "NLSE-C": None}}, finished="2026-01-03T00:00:00")
    return tmp_path, [a, b, c], ckpt


def _groups(markdown: str) -> dict[str, list[list[str]]]:
    """{group heading: table rows (header first)} of compare.md."""
    groups: dict[str, list[list[str]]] = {}
    heading = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading = line[3:]
            groups[heading] = []
        elif line.startswith("### "):  # a run's control matrices follow its group's table
            heading = None
        elif line.startswith("|") and heading and not set(line) <= set("|:- "):
            groups[heading].append([c.strip() for c in line.strip("|").split("|")])
    return groups


def test_compare_tables_rank_nlse_by_absolute_value(fake_runs, monkeypatch):
    from matplotlib.figure import Figure

    tmp, runs, ckpt = fake_runs
    bars: dict[str, list[float]] = {}
    original = Figure.savefig

    def capture(fig, *args, **kwargs):  # record each chart's bar heights by title
        bars[fig.axes[0].get_title()] = [round(p.get_height(), 3) for p in fig.axes[0].patches]
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    outputs = compare_runs(runs, tmp / "cmp", log=lambda m: None)
    markdown = (tmp / "cmp" / "compare.md").read_text()
    groups = _groups(markdown)
    synth = next(rows for title, rows in groups.items() if title.startswith("`synth` "))
    pose = next(rows for title, rows in groups.items() if title.startswith("`synth-pose` "))
    assert len(groups) == 2  # different protocols: separate tables
    header, body = synth[0], synth[1:]
    assert header == ["Method", "run", "checkpoint", "clips", "SSIM ↑", "LSE-D ↓", "NLSE-C →0"]
    # rows grouped by method (first seen), then run in the order given
    assert [(r[0], r[1]) for r in body] == [("ground_truth", "a-synth"), ("static", "a-synth"),
                                            ("static", "b-synth"), ("pdfgc", "b-synth")]
    # NLSE-C ranked by |x|: ground truth's -0.009 is best, never static's -0.942 (nor pdfgc's +0.2)
    assert body[0][6] == "**-0.009**" and body[1][6] == "-0.942" and body[3][6] == "0.200"
    assert body[0][4] == "**1.000**" and body[3][5] == "**6.500**" and body[2][5] == "11.50"
    assert "closer to 0 is better (ranked by |x|) (NLSE-C)" in markdown
    # the checkpoint each row scored: training run and stage, footnoted with path and W&B id
    assert body[0][2] == "–" and body[3][2].startswith("pdfgc-s1/expression[^")
    note = body[3][2].split("[^")[1].rstrip("]")
    footnote = next(line for line in markdown.splitlines() if line.startswith(f"[^{note}]:"))
    assert str(ckpt) in footnote and "W&B id `wb123`" in footnote and "stage `expression`" in footnote
    assert pose[1][:2] == ["static", "c-pose"] and pose[1][5].startswith("n/a[^")  # n/a with its reason
    assert "no SyncNet" in markdown

    rows = list(csv.DictReader(io.StringIO((tmp / "cmp" / "compare.csv").read_text())))
    assert [(r["protocol"], r["method"], r["run"]) for r in rows] == [
        ("synth", "ground_truth", "a-synth"), ("synth", "static", "a-synth"), ("synth", "static", "b-synth"),
        ("synth", "pdfgc", "b-synth"), ("synth-pose", "static", "c-pose")]
    assert rows[0]["best"] == "SSIM;NLSE-C" and rows[3]["best"] == "LSE-D" and rows[1]["best"] == ""
    assert float(rows[1]["NLSE-C"]) == pytest.approx(-0.942)  # the CSV keeps the signed value
    assert rows[3]["wandb_id"] == "wb123" and rows[3]["stage"] == "expression" and rows[4]["best"] == "SSIM"

    charts = {Path(p).relative_to(tmp / "cmp").as_posix() for p in outputs["plots"]}
    assert charts == {"plots/synth/SSIM.png", "plots/synth/LSE-D.png", "plots/synth/NLSE-C.png",
                      "plots/synth-pose/SSIM.png"}  # nothing measured: no chart
    nlse = next(h for title, h in bars.items() if title.startswith("|NLSE-C| (closer to 0 is better"))
    assert sorted(nlse) == [0.009, 0.2, 0.942, 0.95]  # charted as |x|
    page = (tmp / "cmp" / "index.html").read_text()
    assert "plots/synth/NLSE-C.png" in page and "NLSE-C →0" in page and "<td class='num best'>-0.009" in page


def test_not_a_run_folder_errors(fake_runs, capsys):
    tmp, runs, _ = fake_runs
    with pytest.raises(NotARunFolderError, match="no such folder"):
        load_run(tmp / "absent")
    with pytest.raises(NotARunFolderError, match="a file, not a bench run folder"):
        load_run(runs[0] / "run.json")
    (tmp / "bench" / "results.jsonl").write_text((runs[0] / "results.jsonl").read_text())
    with pytest.raises(NotARunFolderError, match="the bench root"):
        load_run(tmp / "bench")
    running = _fake_run(tmp / "bench", "d-running", "synth", {}, status="running")
    (running / "results.jsonl").unlink()
    with pytest.raises(NotARunFolderError, match="no results.jsonl .*'running'"):
        load_run(running)
    with pytest.raises(NotARunFolderError, match="no run.json"):
        load_run(tmp / "runs")
    with pytest.raises(ValueError, match="given twice"):
        compare_runs([runs[0], runs[0]], tmp / "x")
    assert talkinghead_main(["compare", str(runs[0]), str(tmp / "absent"), "--out", str(tmp / "y")]) == 2
    assert "talkinghead compare: " in capsys.readouterr().err and not (tmp / "y").exists()
    (tmp / "taken").mkdir()
    (tmp / "taken" / "f").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        compare_runs(runs[:2], tmp / "taken")


def test_latest_complete_runs_by_default(fake_runs, monkeypatch, capsys):
    tmp, runs, _ = fake_runs
    _fake_run(tmp / "bench", "e-running", "synth", {}, finished="2027-01-01T00:00:00", status="running")
    assert latest_runs(tmp / "bench") == [runs[1], runs[2]]
    monkeypatch.chdir(tmp)
    assert talkinghead_main(["compare", "--bench-root", "bench"]) == 0
    (report,) = (tmp / "runs" / "compare").iterdir()  # default: runs/compare/<timestamp>
    assert "b-synth" in (report / "compare.md").read_text() and "a-synth" not in (report / "compare.md").read_text()
    with pytest.raises(FileNotFoundError, match="1 complete bench run"):
        latest_runs(_only(tmp, runs[0]))


def _only(tmp: Path, run: Path) -> Path:
    root = tmp / "one"
    shutil.copytree(run, root / run.name)
    return root


# ---------------------------------------------------------------------------------------------
# two real bench runs on the tiny store (ground_truth, static; sample videos; a control matrix)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_report(synth_vox2_store, tmp_path_factory):
    from talkinghead.bench.harness import BenchConfig, run_benchmark

    tmp = tmp_path_factory.mktemp("compare")
    runs = []
    for name, methods, control in (("r1", ["ground_truth", "static"], True), ("r2", ["static", "ground_truth"], False)):
        config = BenchConfig(protocol="synth", store=str(synth_vox2_store), split="train", num_clips=2,
                             bench_root=str(tmp / "bench"), out=str(tmp / "bench" / name), wandb=False,
                             progress=False, samples=1, metrics=["ssim", "psnr"], methods=methods,
                             control_matrix=control, control_clips=2, command=["pytest"])
        runs.append(run_benchmark(config, log=lambda m: None).run_dir)
    outputs = compare_runs(runs, tmp / "report", log=lambda m: None)
    return tmp / "report", runs, outputs


class _Media(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.media: list[dict] = []
        self.status = ""
        self._in_status = False

    def handle_starttag(self, tag, attrs):
        if tag in ("video", "img"):
            self.media.append({"tag": tag, **dict(attrs)})
        self._in_status = tag == "pre" and dict(attrs).get("id") == "media-status"

    def handle_data(self, data):
        if self._in_status:
            self.status += data

    def handle_endtag(self, tag):
        self._in_status = False


def test_report_of_real_runs_is_self_contained(real_report):
    report, runs, outputs = real_report
    page = _Media()
    page.feed((report / "index.html").read_text())
    videos = [m["src"] for m in page.media if m["tag"] == "video"]
    images = [m["src"] for m in page.media if m["tag"] == "img"]
    assert len(videos) == 2 and sorted(videos) == sorted(Path(p).relative_to(report).as_posix()
                                                         for p in outputs["samples"])
    for src in videos + images:  # relative links to files inside the folder
        assert not src.startswith(("/", "file:", "..")) and (report / src).is_file(), src
    for run in runs:  # copies: samples/<run>/<clip>.mp4
        (original,) = (run / "samples").glob("*.mp4")
        assert (report / "samples" / run.name / original.name).read_bytes() == original.read_bytes()
    assert "control/r1.png" in images and (report / "control" / "r1.md").is_file()
    assert "### Factor-control matrix — synth, run r1" in (report / "compare.md").read_text()
    assert {"plots/synth/SSIM.png", "plots/synth/PSNR.png"} <= set(images)
    # the videos are what browsers decode: H.264 (High at most), yuv420p, with AAC audio
    import av

    with av.open(str(report / videos[0])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.codec_context.profile in ("High", "Main", "Constrained Baseline", "Baseline")
        assert container.streams.audio and container.streams.audio[0].codec_context.name == "aac"
    groups = _groups((report / "compare.md").read_text())
    ((_, rows),) = groups.items()
    assert [(r[0], r[1]) for r in rows[1:]] == [("ground_truth", "r1"), ("ground_truth", "r2"), ("static", "r1"),
                                                ("static", "r2")]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run "
                                                  "installs it)")
def test_report_renders_in_headless_chromium(real_report, tmp_path):
    report, _, _ = real_report
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom",
               (report / "index.html").resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    page = _Media()
    page.feed(done.stdout)
    states = json.loads(html.unescape(page.status))
    assert len(states) == len(page.media) >= 2 + 3  # 2 videos, 2 charts, 1 control matrix
    videos = [m for m in page.media if m["tag"] == "video"]
    images = [m for m in page.media if m["tag"] == "img"]
    assert len(videos) == 2 and len(images) >= 3
    for video in videos:  # decoded: a first frame of real size
        assert video.get("data-state") == "loaded", (video, states)
        assert int(video["data-video-width"]) > 0 and int(video["data-ready-state"]) >= 2
    for image in images:
        assert image.get("data-state") == "loaded" and int(image["data-natural-width"]) > 0, (image, states)
    assert "media check: %d of %d loaded" % (len(states), len(states)) in done.stdout
