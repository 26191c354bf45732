"""W&B dashboards in code, offline: the per-protocol comparison report (bar plot per column, runset
filtered to the protocol's bench runs and grouped by method, published numbers, control-matrix
and sample media), the training workspace (losses per stage, learning rates, throughput, samples),
and `talkinghead dashboard` without an API key / network (message, sync commands, status 1)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("wandb_workspaces")

import wandb_workspaces.reports.v2 as wr  # noqa: E402
import wandb_workspaces.workspaces as ws  # noqa: E402

from talkinghead.bench.dashboard import (  # noqa: E402
    STAGE_LOSSES,
    bench_report,
    protocol_columns,
    run_dashboard,
    training_workspace,
)

ROOT = Path(__file__).resolve().parents[2]


def _blocks(report, kind):
    return [b for b in report.blocks if isinstance(b, kind)]


def test_bench_report_bar_plots_filters_grouping_and_media():
    report = bench_report("me", "talkinghead", "vox2")
    assert report.entity == "me" and report.project == "talkinghead" and "vox2" in report.title
    metrics, media, grid_runsets = [], [], []
    for grid in _blocks(report, wr.PanelGrid):
        grid_runsets += grid.runsets
        metrics += [p for p in grid.panels if isinstance(p, wr.BarPlot)]
        media += [p for p in grid.panels if isinstance(p, wr.MediaBrowser)]
    columns = protocol_columns("vox2")
    assert {"SSIM", "LSE-C", "LSE-D", "NLSE-C", "LMD", "CSIM", "FID"} <= set(columns)
    # one bar plot per column, its metric the summary key every bench run has
    assert [p.metrics for p in metrics] == [[wr.SummaryMetric(c)] for c in columns]
    assert [p._to_model().config.metrics for p in metrics] == [[f"summary_metrics.{c}"] for c in columns]
    assert "higher is better" in metrics[columns.index("SSIM")].title
    assert "closer to 0" in metrics[columns.index("NLSE-C")].title
    for runset in grid_runsets:
        assert (runset.entity, runset.project) == ("me", "talkinghead")
        assert runset.filters == "Metric(\"JobType\") == 'bench' and Config(\"protocol\") == 'vox2'"
        assert runset.groupby == ["config.method"]
    assert sorted(k for p in media for k in p.media_keys) == ["control_matrix", "samples"]
    (beside,) = [p for g in _blocks(report, wr.PanelGrid) for p in g.panels if isinstance(p, wr.MarkdownPanel)]
    assert "PC-AVS (published)" in beside.markdown
    (published,) = _blocks(report, wr.MarkdownBlock)
    assert "PC-AVS (published)" in published.text and "| 0.886 |" in published.text  # PC-AVS's SSIM
    header = published.text.splitlines()[0]
    assert all(c.strip() in columns for c in header.strip("|").split("|")[1:-1])


def test_bench_report_of_a_synthetic_protocol_and_explicit_columns():
    report = bench_report("me", "p", "synth", columns=["SSIM", "PSNR"])
    bars = [p for g in _blocks(report, wr.PanelGrid) for p in g.panels if isinstance(p, wr.BarPlot)]
    assert [p.metrics[0].name for p in bars] == ["SSIM", "PSNR"]
    assert "No published numbers" in _blocks(report, wr.MarkdownBlock)[0].text
    runset = _blocks(report, wr.PanelGrid)[0].runsets[0]
    assert "Config(\"protocol\") == 'synth'" in runset.filters
    with pytest.raises(KeyError):
        bench_report("me", "p", "no-such-protocol")


def test_training_workspace_sections_and_keys():
    workspace = training_workspace("me", "talkinghead")
    names = [s.name for s in workspace.sections]
    for method, stages in STAGE_LOSSES.items():
        for stage, keys in stages.items():
            section = workspace.sections[names.index(f"Losses: {method} / {stage}")]
            assert [p.y for p in section.panels] == [[k] for k in keys]
    sections = dict(zip(names, workspace.sections))
    (lr,) = sections["Learning rates"].panels
    assert lr.metric_regex == "^lr-.*"
    assert [p.y for p in sections["Throughput"].panels] == [["train/batches_per_s"], ["train/samples_per_s"]]
    media = {k for p in sections["Samples"].panels for k in p.media_keys}
    assert {"samples/full", "videos/full", "samples/expression", "videos/joint"} <= media
    assert workspace.runset_settings.filters == "Metric(\"JobType\") != 'bench'"
    assert [g.name for g in workspace.runset_settings.groupby] == ["Group"]
    view = workspace._to_model()  # the spec that would be saved (no network needed)
    assert len(view.spec.section.panel_bank_config.sections) == len(workspace.sections)


def _logged(key: str, module: str, source: str) -> bool:
    """Whether `module` logs `key`: literally (``"train/x"``), or through an f-string key
    (``f"train/loss_{k}"``, ``f"train/{name}_{k}"``) whose parts are string literals of the method's
    sources (loss-dict keys such as ``"mouth_l1"``, or ``f"gan_{name}"`` with ``"image"``)."""
    if f'"{key}"' in module:
        return True
    name = key.split("/", 1)[1]

    def term(text: str) -> bool:  # a loss-dict key: a literal, or f"<a>_{x}" with a literal <b>
        head, _, tail = text.partition("_")
        return f'"{text}"' in source or bool(tail) and f'f"{head}_{{' in source and f'"{tail}"' in source

    for prefix in re.findall(r'f"train/([A-Za-z_]*)\{', module):
        if name.startswith(prefix) and term(name[len(prefix):]):
            return True
    if re.search(r'f"train/\{\w+\}_\{', module):
        branch, _, rest = name.partition("_")
        return f'"{branch}"' in source and term(rest)
    return False


def test_stage_losses_are_keys_the_modules_log():
    """Every key of STAGE_LOSSES is logged by its method's module, and its stages are the method's."""
    from talkinghead.methods.registry import get_method

    for method, stages in STAGE_LOSSES.items():
        assert list(stages) == list(get_method(method).stages), method
        folder = ROOT / "talkinghead" / "methods" / method
        module = (folder / "module.py").read_text()
        source = "".join(p.read_text() for p in sorted(folder.glob("*.py")))
        source += (ROOT / "talkinghead" / "nn" / "losses.py").read_text()
        for keys in stages.values():
            for key in keys:
                assert _logged(key, module, source), (method, key)
    assert not _logged("train/loss_nonsense", module, source)


def _dashboard_args(tmp_path, **changes):
    import argparse

    values = dict(entity="me", project=None, protocol=["synth"], runs=str(tmp_path / "runs"), bench_root=None,
                  published=None, no_workspace=False)
    values.update(changes)
    return argparse.Namespace(**values)


def _fake_offline_runs(root: Path) -> tuple[Path, Path]:
    training = root / "pcavs" / "full" / "wandb" / "offline-run-20260101_000000-aaaa"
    bench = root / "bench" / "20260101-synth" / "wandb" / "offline-run-20260101_000001-bbbb"
    for folder in (training, bench):
        folder.mkdir(parents=True)
    return training, bench


def test_dashboard_command_offline_prints_the_sync_commands(tmp_path):
    """The real command, no API key: the message, the sync commands, status 1, no traceback."""
    training, bench = _fake_offline_runs(tmp_path / "runs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(ROOT), NETRC=str(tmp_path / "no-netrc"), HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "talkinghead.cli", "dashboard", "--entity", "me", "--protocol",
                           "synth"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "offline: no W&B API key" in done.stderr
    lines = [line.strip() for line in done.stderr.splitlines()]
    assert f"wandb sync --entity me {training.relative_to(tmp_path)}" in lines
    assert f"wandb sync --entity me {bench.relative_to(tmp_path)}" in lines
    assert lines.index(f"wandb sync --entity me {training.relative_to(tmp_path)}") < lines.index(
        f"wandb sync --entity me {bench.relative_to(tmp_path)}")  # training runs first


def test_dashboard_unreachable_api(tmp_path, monkeypatch, capsys):
    import wandb

    class Unreachable:
        def __init__(self, *args, **kwargs):
            raise ConnectionError("no route to api.wandb.ai")

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb, "Api", Unreachable)
    _fake_offline_runs(tmp_path / "runs")
    assert run_dashboard(_dashboard_args(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "the W&B API is unreachable (ConnectionError: no route to api.wandb.ai)" in err
    assert err.count("wandb sync --entity me ") == 2
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert run_dashboard(_dashboard_args(tmp_path / "empty")) == 1
    assert "offline: WANDB_MODE=offline" in (err := capsys.readouterr().err) and "No offline W&B runs" in err
    assert run_dashboard(_dashboard_args(tmp_path, protocol=["nope"])) == 2


def test_dashboard_online_saves_reports_and_updates_the_workspace(tmp_path, monkeypatch, capsys):
    """The online path with W&B's saving stubbed out: one report per protocol and the workspace are
    saved; the workspace URL is kept and the next call loads that workspace and saves over it."""
    import wandb

    from talkinghead.bench import dashboard

    saved: list = []
    loaded: list[str] = []

    class FakeApi:
        def __init__(self, *args, **kwargs):
            pass

        def reports(self, path):
            return []

    def save(self):
        saved.append(self)
        return self

    def load(url):
        loaded.append(url)
        return training_workspace("me", "talkinghead", methods=["syncnet"])

    monkeypatch.setattr(dashboard, "_offline_reason", lambda: None)
    monkeypatch.setattr(wandb, "Api", FakeApi)
    monkeypatch.setattr(wr.Report, "save", save)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"https://wandb.test/report/{self.title}"))
    monkeypatch.setattr(ws.Workspace, "save", save)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: f"https://wandb.test/ws/{self.name}"))
    monkeypatch.setattr(ws.Workspace, "from_url", staticmethod(load))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    args = _dashboard_args(tmp_path, protocol=["synth", "vox2"])
    assert run_dashboard(args) == 0
    out = capsys.readouterr().out
    assert "report synth: https://wandb.test/report/" in out and "training workspace: https://wandb.test/ws/" in out
    reports = [s for s in saved if isinstance(s, wr.Report)]
    assert [r.title for r in reports] == ["talkinghead: methods on synth", "talkinghead: methods on vox2"]
    assert all(r.project == "talkinghead" and r.entity == "me" for r in reports) and not loaded
    assert run_dashboard(args) == 0  # again: the saved workspace is loaded and updated
    assert loaded == ["https://wandb.test/ws/talkinghead training"]
    second = [s for s in saved if isinstance(s, ws.Workspace)][-1]
    assert len(second.sections) == len(training_workspace("me", "talkinghead").sections)
