"""W&B dashboards in code (`wandb_workspaces`): a methods-comparison report per protocol and a
training workspace, created or updated by ``talkinghead dashboard``.

Both read the one project training and bench runs share (`talkinghead.training.tracking`):

* `bench_report(entity, project, protocol)`: runs with ``job_type`` "bench" and ``config.protocol``
  = the protocol, grouped by ``config.method`` (repeated bench runs of a method are averaged, the
  bars show their min-max): one bar chart per metric column of the protocol (`protocol_columns`:
  the summary keys every bench run has), the papers' numbers for the protocol's dataset beside
  them (a markdown table from ``benchmarks/published.yaml``, in the charts' grid and as a block
  below), the factor-control matrix images
  and the side-by-side sample videos (media keys ``control_matrix`` and ``samples``).
* `training_workspace(entity, project)`: training runs (``job_type`` != "bench") grouped by their
  W&B group (``<method>-<config name>``): a losses section per method and stage (`STAGE_LOSSES`:
  the keys the modules log), learning rates (LearningRateMonitor's ``lr-*``), throughput (the
  Throughput callback's ``train/batches_per_s`` / ``train/samples_per_s``), validation
  (``val/<column>``) and the samples (``samples/<stage>`` grids, ``videos/<stage>`` videos).

Saving needs the W&B API (an API key: ``WANDB_API_KEY`` or ``wandb login``, and the network).
Without it, ``talkinghead dashboard`` says so, prints the ``wandb sync`` commands for the offline
runs under ``runs/`` (training runs first, then ``runs/bench``) and exits with status 1. A saved
report is found again by its title (updated in place); a saved workspace's URL is kept in
``<runs>/wandb_dashboards.json`` and updated on the next call.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "STAGE_LOSSES",
    "add_dashboard_parser",
    "bench_report",
    "bench_runset",
    "protocol_columns",
    "published_markdown",
    "run_dashboard",
    "training_workspace",
]

#: method -> stage -> the loss (and GAN / accuracy) keys its module logs in that stage (``self.log`` /
#: ``log_dict`` in talkinghead/methods/*/module.py; optional terms such as the VGG loss included)
STAGE_LOSSES: dict[str, dict[str, list[str]]] = {
    "syncnet": {"expert": ["train/loss", "train/acc_shift", "train/d_pos", "train/d_shift", "train/d_other"]},
    "pcavs": {
        "identity": ["train/loss_identity", "train/acc_identity"],
        "sync": ["train/loss_sync", "train/sync_loss", "train/sync_a2v", "train/sync_v2a", "train/sync_acc",
                 "train/sync_acc_shift"],
        "full": ["train/loss_G_total", "train/loss_G", "train/loss_D", "train/D_real", "train/D_fake", "train/loss_gan",
                 "train/loss_feat", "train/loss_vgg", "train/loss_l1", "train/loss_mouth_l1", "train/loss_sync",
                 "train/loss_identity", "train/l1_audio", "train/sync_acc"],
    },
    "pdfgc": {
        "motion": ["train/l1_recon", "train/loss_G", "train/loss_D", "train/D_real", "train/D_fake", "train/loss_gan",
                   "train/loss_feat", "train/loss_vgg", "train/loss_l1", "train/loss_mouth_l1", "train/loss_identity"],
        "fine": ["train/loss_lip", "train/lip_loss", "train/lip_a2v", "train/lip_v2a", "train/lip_acc", "train/eye_loss",
                 "train/eye_acc", "train/pose_loss", "train/pose_mae"],
        "expression": ["train/l1_recon", "train/loss_G", "train/loss_D", "train/D_real", "train/D_fake",
                       "train/loss_gan", "train/loss_feat", "train/loss_vgg", "train/loss_l1", "train/loss_mouth_l1",
                       "train/loss_motion", "train/loss_decorrelation"],
    },
    "rhythmic": {
        "expression": ["train/loss", "train/loss_pca", "train/landmark_error"],
        "head_motion": ["train/loss", "train/loss_motion", "train/loss_adversarial", "train/loss_D_motion"],
        "generator": ["train/l1_recon", "train/loss_G", "train/loss_D", "train/D_real", "train/D_fake",
                      "train/loss_gan_image", "train/loss_gan_raw", "train/loss_feat_image", "train/loss_feat_raw",
                      "train/loss_vgg_image", "train/loss_vgg_raw", "train/loss_warp", "train/loss_face_l1",
                      "train/loss_mouth_l1", "train/loss_l1"],
        "joint": ["train/l1_recon", "train/loss_G", "train/loss_D", "train/D_real", "train/D_fake",
                  "train/loss_gan_image", "train/loss_gan_raw", "train/loss_feat_image", "train/loss_feat_raw",
                  "train/loss_vgg_image", "train/loss_vgg_raw", "train/loss_warp", "train/loss_face_l1",
                  "train/loss_mouth_l1", "train/loss_l1"],
    },
}
THROUGHPUT_KEYS = ["train/batches_per_s", "train/samples_per_s"]
LR_REGEX = "^lr-.*"
VALIDATION_COLUMNS = ["val/SSIM", "val/LMD", "val/LMD-mouth", "val/LSE-C", "val/LSE-D", "val/PSNR"]
REPORT_TITLE = "talkinghead: methods on {protocol}"
WORKSPACE_NAME = "talkinghead training"
STATE_FILE = "wandb_dashboards.json"


# ---------------------------------------------------------------------------------------------
# what the dashboards show
# ---------------------------------------------------------------------------------------------
def protocol_columns(protocol: str) -> list[str]:
    """The metric columns a default bench run of `protocol` has (every registered metric, in the
    harness's order; NLSE-C after LSE-D): the summary keys of its W&B runs."""
    import inspect

    from talkinghead.bench.protocol import get_protocol
    from talkinghead.metrics import METRICS, metric_names

    get_protocol(protocol)  # unknown names raise here
    columns: list[str] = []
    for name in metric_names():
        cls = METRICS[name]
        columns += [c for c in cls.columns if c not in columns]
        if "real_confidence" in inspect.signature(cls.__init__).parameters and "NLSE-C" not in columns:
            columns.append("NLSE-C")
    return columns


def _directions(columns: list[str]) -> dict[str, str]:
    from talkinghead.bench.records import column_direction
    from talkinghead.metrics import METRICS, metric_names

    higher = {c: h for name in metric_names() for c, h in METRICS[name].columns.items()}
    return {c: column_direction(c, higher.get(c, False)) for c in columns}


def published_markdown(protocol: str, columns: list[str], published: str | Path | None = None) -> str:
    """The papers' numbers for the protocol's dataset as a markdown table (our column names), or a
    line saying there are none (synthetic protocols)."""
    from talkinghead.bench.protocol import get_protocol
    from talkinghead.bench.report import format_value, published_rows

    key = get_protocol(protocol).published
    rows = published_rows(columns, key, published)
    if not rows:
        return f"No published numbers for protocol `{protocol}` (its dataset has no paper rows)."
    shown = [c for c in columns if any(c in r["values"] for r in rows)]
    lines = ["| Method | " + " | ".join(shown) + " | source |", "|:---|" + "---:|" * len(shown) + ":---|"]
    for row in rows:
        cells = [format_value(row["values"][c]) if c in row["values"] else "–" for c in shown]
        source = row["source"] + (f"; {row['note']}" if row.get("note") else "")
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {source} |")
    return "\n".join(lines)


def bench_runset(entity: str, project: str, protocol: str):
    """Bench runs of `protocol` (``job_type`` = bench, ``config.protocol``), grouped by method."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    return wr.Runset(entity=entity, project=project, name=f"bench {protocol}",
                     filters=expr.And(expr.Metric("JobType") == "bench", expr.Config("protocol") == protocol),
                     groupby=["config.method"])


def bench_report(entity: str, project: str, protocol: str, columns: list[str] | None = None,
                 published: str | Path | None = None):
    """The methods-comparison report of `protocol` (module docstring); not saved."""
    import wandb_workspaces.reports.v2 as wr

    from talkinghead.bench.records import direction_label

    columns = list(columns) if columns is not None else protocol_columns(protocol)
    directions = _directions(columns)

    def runset():
        return bench_runset(entity, project, protocol)

    bars = [wr.BarPlot(title=f"{c} ({direction_label(directions[c])})", metrics=[wr.SummaryMetric(c)],
                       orientation="v", groupby_aggfunc="mean", groupby_rangefunc="minmax",
                       layout=wr.Layout(w=8, h=6))
            for c in columns]
    table = published_markdown(protocol, columns, published)
    beside = wr.MarkdownPanel(markdown="**Published numbers** (the papers' own pipelines)\n\n" + table,
                              layout=wr.Layout(w=24, h=8))
    blocks = [
        wr.H1(f"Methods on {protocol}"),
        wr.P(f"One W&B run per method and bench run (job_type bench, group {protocol}); bars average the bench "
             f"runs of a method. Written by `talkinghead dashboard`."),
        wr.H2("Metrics"),
        wr.PanelGrid(runsets=[runset()], panels=bars + [beside]),
        wr.H2("Published numbers"),
        wr.MarkdownBlock(table),
        wr.H2("Factor-control matrices"),
        wr.PanelGrid(runsets=[runset()], panels=[
            wr.MediaBrowser(title="control matrix", media_keys=["control_matrix"], num_columns=3,
                            layout=wr.Layout(w=24, h=10))]),
        wr.H2("Samples (methods side by side, with audio)"),
        wr.PanelGrid(runsets=[runset()], panels=[
            wr.MediaBrowser(title="samples", media_keys=["samples"], num_columns=2, layout=wr.Layout(w=24, h=12))]),
    ]
    return wr.Report(entity=entity, project=project, title=REPORT_TITLE.format(protocol=protocol),
                     description=f"talkinghead benchmark, protocol {protocol}: our methods and the papers' numbers",
                     blocks=blocks, width="fluid")


def training_workspace(entity: str, project: str, methods: list[str] | None = None):
    """The training workspace (module docstring); not saved."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    methods = list(methods) if methods is not None else list(STAGE_LOSSES)
    sections = []
    for method in methods:
        for stage, keys in STAGE_LOSSES[method].items():
            sections.append(ws.Section(name=f"Losses: {method} / {stage}", is_open=False, panels=[
                wr.LinePlot(title=key, x="Step", y=[key]) for key in keys]))
    sections.append(ws.Section(name="Learning rates", is_open=False, panels=[
        wr.LinePlot(title="learning rates", x="Step", metric_regex=LR_REGEX)]))
    sections.append(ws.Section(name="Throughput", is_open=True, panels=[
        wr.LinePlot(title=key, x="Step", y=[key]) for key in THROUGHPUT_KEYS]))
    sections.append(ws.Section(name="Validation", is_open=True, panels=[
        wr.LinePlot(title=key, x="Step", y=[key]) for key in VALIDATION_COLUMNS]))
    stages = list(dict.fromkeys(s for m in methods for s in STAGE_LOSSES[m]))
    sections.append(ws.Section(name="Samples", is_open=True, panels=[
        wr.MediaBrowser(title="sample grids", media_keys=[f"samples/{s}" for s in stages], num_columns=2),
        wr.MediaBrowser(title="validation videos (generated | real, with audio)",
                        media_keys=[f"videos/{s}" for s in stages], num_columns=2)]))
    return ws.Workspace(entity=entity, project=project, name=WORKSPACE_NAME, sections=sections,
                        runset_settings=ws.RunsetSettings(filters=expr.And(expr.Metric("JobType") != "bench"),
                                                          groupby=[expr.Metric("Group")]))


# ---------------------------------------------------------------------------------------------
# talkinghead dashboard
# ---------------------------------------------------------------------------------------------
def _api_key() -> str | None:
    """The W&B API key from WANDB_API_KEY or ~/.netrc (``wandb login``), else None."""
    key = os.environ.get("WANDB_API_KEY")
    if key:
        return key
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry else None


def _offline_reason() -> str | None:
    """Why the W&B API cannot be used (None when it can)."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return f"WANDB_MODE={os.environ['WANDB_MODE']}"
    if not _api_key():
        return "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    try:
        import wandb

        wandb.Api(timeout=15).viewer  # noqa: B018 - one request: is the API reachable with this key?
    except Exception as error:  # noqa: BLE001 - any failure means: not online
        return f"the W&B API is unreachable ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    return None


def _state(runs: Path) -> dict:
    path = runs / STATE_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _save_report(report) -> str:
    """Save `report`, over the project's report of the same title when there is one (loaded from
    its URL, its blocks replaced)."""
    import wandb
    import wandb_workspaces.reports.v2 as wr

    try:
        for existing in wandb.Api().reports(f"{report.entity}/{report.project}"):
            if getattr(existing, "display_name", None) == report.title and getattr(existing, "url", None):
                saved = wr.Report.from_url(existing.url)
                saved.blocks, saved.description, saved.width = report.blocks, report.description, report.width
                report = saved
                break
    except Exception:  # noqa: BLE001 - no listing or not loadable: save a new one
        pass
    report.save()
    return report.url


def _save_workspace(workspace, runs: Path) -> str:
    """Save `workspace`, over the one saved last time (its URL in ``<runs>/wandb_dashboards.json``)."""
    import wandb_workspaces.workspaces as ws

    from talkinghead.fileio import atomic_write_text

    state = _state(runs)
    key = f"{workspace.entity}/{workspace.project}"
    url = (state.get("workspaces") or {}).get(key)
    if url:
        try:
            saved = ws.Workspace.from_url(url)
            saved.sections, saved.runset_settings, saved.name = (workspace.sections, workspace.runset_settings,
                                                                workspace.name)
            workspace = saved
        except Exception:  # noqa: BLE001 - gone or unreadable: save a new one
            pass
    workspace.save()
    state.setdefault("workspaces", {})[key] = workspace.url
    runs.mkdir(parents=True, exist_ok=True)
    atomic_write_text(runs / STATE_FILE, json.dumps(state, indent=1))
    return workspace.url


def run_dashboard(args: argparse.Namespace) -> int:
    """``talkinghead dashboard``: 0 when every dashboard was saved, 1 when offline or a save failed,
    2 on bad arguments."""
    from talkinghead.bench.protocol import protocol_names
    from talkinghead.training.tracking import find_offline_runs, sync_commands, wandb_project

    project = wandb_project(args.project)
    protocols = args.protocol or protocol_names()
    unknown = [p for p in protocols if p not in protocol_names()]
    if unknown:
        print(f"talkinghead dashboard: unknown protocol(s) {', '.join(unknown)}; choose from "
              f"{', '.join(protocol_names())}", file=sys.stderr)
        return 2
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        print("talkinghead dashboard: wandb-workspaces is not installed (pip install wandb-workspaces)",
              file=sys.stderr)
        return 1
    runs = Path(args.runs)
    bench_root = Path(args.bench_root) if args.bench_root else runs / "bench"
    reason = _offline_reason()
    if reason is not None:
        commands = sync_commands(runs, bench_root, entity=args.entity)
        found = set(find_offline_runs(runs)) | set(find_offline_runs(bench_root))
        print(f"talkinghead dashboard: offline: {reason}. Nothing was created.", file=sys.stderr)
        if commands:
            print(f"{len(found)} offline W&B run(s) found under {runs} and {bench_root}; upload them (training runs "
                  f"first, so that the bench runs find their checkpoint artifacts), then run this command again:",
                  file=sys.stderr)
            for command in commands:
                print(f"  {command}", file=sys.stderr)
        else:
            print(f"No offline W&B runs under {runs}.", file=sys.stderr)
        return 1
    failed = 0
    for protocol in protocols:
        try:
            url = _save_report(bench_report(args.entity, project, protocol, published=args.published))
            print(f"report {protocol}: {url}")
        except Exception as error:  # noqa: BLE001 - report it, go on with the others
            failed += 1
            print(f"talkinghead dashboard: report {protocol} not saved: {type(error).__name__}: {error}",
                  file=sys.stderr)
    if not args.no_workspace:
        try:
            print(f"training workspace: {_save_workspace(training_workspace(args.entity, project), runs)}")
        except Exception as error:  # noqa: BLE001
            failed += 1
            print(f"talkinghead dashboard: workspace not saved: {type(error).__name__}: {error}", file=sys.stderr)
    return 1 if failed else 0


def add_dashboard_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `dashboard` command to a `parser.add_subparsers()` object; returns its parser."""
    p = subparsers.add_parser(
        "dashboard", help="create or update the W&B comparison reports (per protocol) and the training workspace",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entity", required=True, help="W&B entity (user or team) owning the project")
    p.add_argument("--project", default=None,
                   help="W&B project of the training and bench runs (default: $WANDB_PROJECT, else talkinghead)")
    p.add_argument("--protocol", nargs="+", default=None, help="protocols to report (default: every protocol)")
    p.add_argument("--runs", default="runs", help="where offline runs are looked for (default runs)")
    p.add_argument("--bench-root", default=None, help="bench runs' root (default <runs>/bench)")
    p.add_argument("--published", default=None, help="YAML of published numbers (default benchmarks/published.yaml)")
    p.add_argument("--no-workspace", action="store_true", help="reports only")
    p.set_defaults(func=run_dashboard)
    return p
