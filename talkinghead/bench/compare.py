"""`talkinghead compare`: several bench runs side by side in one self-contained report folder.

  talkinghead compare runs/bench/20261206-054103-synth runs/bench/pdfgc-s1 [--out runs/compare/mine]
  talkinghead compare                       # the two latest complete runs under runs/bench

Reads each run folder's records (``results.jsonl``, `talkinghead.bench.records.read_records`) and
writes (default ``runs/compare/<timestamp>/``, every file atomically; a non-empty folder is refused):

compare.md      one table per protocol group: runs that differ in protocol, dataset, split or setting
                are never mixed in one table. Rows = (method, run, checkpoint), grouped by method in
                the order first seen; columns = the metric columns with their direction (↑ higher is
                better, ↓ lower is better, →0 closer to 0 is better: NLSE-C, ranked by |x|); the best
                measured value of each column in bold (`talkinghead.bench.report.best_rows`); footnotes
                give each checkpoint's path, training run, stage and W&B id, and the n/a reasons; then
                the runs (clips, seed, store, commit) and their factor-control matrices.
compare.csv     every row of every group (signed values as measured; `best` lists the columns where
                the row is the best of its group).
plots/<group>/<column>.png   one bar chart per metric column with a measured value: bars grouped
                by method, coloured by run (the same colour for a run in every chart); closer-to-0
                columns charted as |x| (the signed value printed); the best bar outlined and starred.
control/<run>.png, control/<run>.md   the factor-control matrices of the runs that measured them
                (re-rendered from their control_matrix.json).
samples/<run>/<clip>.mp4   copies of the runs' sample videos (each: the run's methods side by side).
index.html      the tables, charts, matrices and the sample videos of each group's runs side by side
                (HTML5 <video>); only relative links into the folder, so it can be moved or zipped. A
                small inline script records whether every video decoded and every image loaded
                (``data-state`` on each element, and the JSON list in ``#media-status``).
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from talkinghead.bench.records import column_direction, direction_label, read_records, training_run
from talkinghead.bench.report import (
    bar_height,
    best_rows,
    chart_title,
    checkpoint_label,
    checkpoint_note,
    column_header,
    direction_legend,
    format_value,
)
from talkinghead.fileio import atomic_write, atomic_write_text

__all__ = ["CompareGroup", "NotARunFolderError", "Run", "add_compare_parser", "compare_runs", "latest_runs",
           "load_run", "main"]

#: what makes two runs comparable in one table
GROUP_KEYS = ("protocol", "dataset", "split", "setting")
#: run colours, in the order runs are given (matplotlib's tab10)
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf")


class NotARunFolderError(FileNotFoundError):
    """A path given to compare is not a finished bench run folder."""


@dataclass
class Run:
    """One bench run folder: its records (directions from its results.json where present), run.json,
    sample videos and control matrices."""

    path: Path
    label: str
    info: dict
    records: list[dict]
    samples: list[Path] = field(default_factory=list)
    control: list[dict] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        first = self.records[0]
        return tuple(first.get(k) for k in GROUP_KEYS)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise NotARunFolderError(f"{path}: unreadable ({type(error).__name__}: {error})") from error


def load_run(path: str | Path) -> Run:
    """The run in folder `path`; NotARunFolderError saying why when it is not a finished bench run."""
    path = Path(path)
    hint = "give a bench run folder such as runs/bench/<timestamp>-<protocol>"
    if not path.exists():
        raise NotARunFolderError(f"{path}: no such folder ({hint})")
    if not path.is_dir():
        raise NotARunFolderError(f"{path}: a file, not a bench run folder ({hint})")
    run_json, jsonl = path / "run.json", path / "results.jsonl"
    if not run_json.is_file():
        if jsonl.is_file() and any((child / "run.json").is_file() for child in path.iterdir() if child.is_dir()):
            raise NotARunFolderError(f"{path}: the bench root (its results.jsonl is the history of every run), not "
                                     f"a run folder; give the runs inside it, e.g. {path}/<timestamp>-<protocol>")
        raise NotARunFolderError(f"{path}: not a bench run folder (no run.json; {hint})")
    info = _read_json(run_json)
    if not jsonl.is_file():
        raise NotARunFolderError(f"{path}: bench run has no results.jsonl (run.json status "
                                 f"{info.get('status')!r}: still running, or stopped before any method was scored)")
    try:
        records = read_records([path])
    except ValueError as error:
        raise NotARunFolderError(f"{path}: {error}") from error
    if not records:
        raise NotARunFolderError(f"{path}: results.jsonl holds no records")
    # results.json's column senses are the run's own: they replace directions guessed for older lines
    saved = _read_json(path / "results.json") if (path / "results.json").is_file() else None
    columns = saved.get("columns") if isinstance(saved, dict) else None
    if isinstance(columns, dict):
        for record in records:
            record["directions"] = {**record.get("directions", {}),
                                    **{c: column_direction(c, bool(up)) for c, up in columns.items()}}
    for record in records:
        _complete_record(record, info)
    samples = sorted((path / "samples").glob("*.mp4")) if (path / "samples").is_dir() else []
    control_file = path / "control_matrix.json"
    control = _read_json(control_file) if control_file.is_file() else []
    return Run(path, path.name, info, records, samples, control if isinstance(control, list) else [])


def _complete_record(record: dict, info: dict) -> None:
    """Fill what older records lack from run.json: the selection seed, the store, and the training run
    of a checkpoint path relative to the folder the bench ran in (run.json ``cwd``)."""
    protocol = info.get("protocol") if isinstance(info.get("protocol"), dict) else {}
    if record.get("seed") is None:
        record["seed"] = protocol.get("seed")
    if not record.get("store"):
        record["store"] = info.get("store") or protocol.get("store")
    checkpoint, cwd = record.get("checkpoint"), info.get("cwd")
    if not checkpoint:
        return
    path = Path(checkpoint)
    if cwd and not path.is_absolute() and not path.exists() and (Path(cwd) / path).exists():
        record["training_run"] = training_run(Path(cwd) / path)  # read where the bench ran
    elif not record.get("training_run"):
        record["training_run"] = training_run(path)


def latest_runs(bench_root: str | Path = "runs/bench", count: int = 2) -> list[Path]:
    """The `count` most recently finished complete runs under `bench_root` (run.json status
    "complete" and a results.jsonl), oldest first; FileNotFoundError when there are fewer."""
    root = Path(bench_root)
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        run_json = folder / "run.json"
        if not (run_json.is_file() and (folder / "results.jsonl").is_file()):
            continue
        try:
            info = json.loads(run_json.read_text())
        except (OSError, ValueError):
            continue
        if info.get("status") == "complete":
            found.append((str(info.get("finished") or ""), run_json.stat().st_mtime, folder))
    if len(found) < count:
        raise FileNotFoundError(f"{root}: {len(found)} complete bench run(s), {count} needed to compare; give the "
                                f"run folders (talkinghead compare RUN_DIR RUN_DIR ...) or run `make bench` first")
    return [folder for _, _, folder in sorted(found)[-count:]]


# ---------------------------------------------------------------------------------------------
# the tables
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    record: dict
    run: Run
    best: set[str] = field(default_factory=set)


@dataclass
class CompareGroup:
    """The runs sharing one protocol, dataset, split and setting, and their rows."""

    key: tuple
    slug: str
    runs: list[Run]
    columns: dict[str, str]  # column -> direction
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        protocol, dataset, split, setting = self.key
        return f"`{protocol}` — dataset {dataset}, split {split}, {setting}-driven"


def _unique_labels(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        count = seen.get(run.label, 0)
        seen[run.label] = count + 1
        if count:
            run.label = f"{run.label}-{count + 1}"


def build_groups(runs: list[Run]) -> list[CompareGroup]:
    """Runs grouped by (protocol, dataset, split, setting) in the order first given; rows ordered by
    method (first seen) then run; the best value of each column marked per group."""
    groups: dict[tuple, CompareGroup] = {}
    slugs: set[str] = set()
    for run in runs:
        if run.key not in groups:
            slug = _safe(str(run.key[0]))
            while slug in slugs:
                slug += "_"
            slugs.add(slug)
            groups[run.key] = CompareGroup(run.key, slug, [], {}, [])
        group = groups[run.key]
        group.runs.append(run)
        for record in run.records:
            for column, direction in (record.get("directions") or {}).items():
                if column not in group.columns:
                    group.columns[column] = direction
                elif group.columns[column] != direction:
                    group.warnings.append(f"{column}: {run.label} ranks it {direction_label(direction)}, an "
                                          f"earlier run {direction_label(group.columns[column])}; the latter is used")
            for column in record.get("results") or {}:
                group.columns.setdefault(column, column_direction(column, False))
    for group in groups.values():
        methods: list[str] = []
        for run in group.runs:
            methods += [r["method"] for r in run.records if r["method"] not in methods]
        group.rows = [Row(record, run) for method in methods for run in group.runs for record in run.records
                      if record["method"] == method]
        for column, direction in group.columns.items():
            values = [(row.record.get("results") or {}).get(column) for row in group.rows]
            for i in best_rows(values, direction):
                group.rows[i].best.add(column)
        for name in ("num_clips", "seed", "store"):
            seen = {run.label: run.records[0].get(name) for run in group.runs}
            if len(set(map(str, seen.values()))) > 1:
                group.warnings.append(f"the runs differ in {name} ({', '.join(f'{k}: {v}' for k, v in seen.items())}):"
                                      f" their numbers are not over the same clips")
    return list(groups.values())


def _footnotes() -> tuple[dict[str, int], Callable[[str], int]]:
    notes: dict[str, int] = {}

    def mark(text: str) -> int:
        return notes.setdefault(text, len(notes) + 1)

    return notes, mark


def _cells(group: CompareGroup) -> tuple[list[list[dict]], dict[str, int]]:
    """Per row: [{text, best, note}] for method, run, checkpoint, clips, then each column; the footnotes."""
    notes, mark = _footnotes()
    table = []
    for row in group.rows:
        r = row.record
        checkpoint, training = r.get("checkpoint"), r.get("training_run")
        note = checkpoint_note(checkpoint, training)
        total = r.get("num_clips")
        clips = f"{r.get('clips_ok')}/{total}" if total is not None else str(r.get("clips_ok"))
        cells = [{"text": r["method"]}, {"text": row.run.label},
                 {"text": checkpoint_label(checkpoint, training), "note": mark(note) if note else None},
                 {"text": clips, "note": mark(f"{r['method']} in {row.run.label}: {r['clips_failed']} clip(s) failed; "
                                              f"see {row.run.path / 'results.json'}")
                  if r.get("clips_failed") else None}]
        for column in group.columns:
            value = (r.get("results") or {}).get(column)
            if column not in (r.get("results") or {}):
                cells.append({"text": "–"})
            elif value is None:
                cells.append({"text": "n/a", "note": mark((r.get("na") or {}).get(column, "not computed"))})
            else:
                cells.append({"text": format_value(value), "best": column in row.best})
        table.append(cells)
    return table, notes


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _run_line(run: Run) -> str:
    r = run.records[0]
    commit = r.get("git_commit") or (run.info.get("versions") or {}).get("source_commit")
    parts = [f"{r.get('num_clips')} clips", f"seed {r.get('seed')}", f"store `{r.get('store') or run.info.get('store')}`"]
    if r.get("syncnet"):
        parts.append(f"SyncNet {r['syncnet']}")
    if commit:
        parts.append(f"commit {str(commit)[:12]}")
    finished = run.info.get("finished") or r.get("timestamp")
    if finished:
        parts.append(f"finished {finished}")
    return f"`{run.label}` ({run.path}): " + ", ".join(parts)


def markdown_group(group: CompareGroup, samples: dict[str, list[str]] | None = None) -> str:
    """The group's table and notes in GitHub markdown; `samples`: run label -> its copied videos
    (paths relative to the report folder)."""
    cells, notes = _cells(group)
    header = ["Method", "run", "checkpoint", "clips"] + [column_header(c, d) for c, d in group.columns.items()]
    lines = [f"## {group.title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] * 3 + ["---:"] * (1 + len(group.columns))) + "|"]
    for row in cells:
        texts = []
        for cell in row:
            text = _md(cell["text"])
            text = f"**{text}**" if cell.get("best") else text
            texts.append(text + (f"[^{cell['note']}]" if cell.get("note") else ""))
        lines.append("| " + " | ".join(texts) + " |")
    lines += ["", f"- {direction_legend(group.columns)}"]
    lines += [f"- Run {_run_line(run)}" for run in group.runs]
    lines += [f"- Warning: {w}" for w in group.warnings]
    for run in group.runs:
        if (samples or {}).get(run.label):
            lines.append(f"- Sample videos of `{run.label}` (its methods side by side): "
                         + ", ".join(f"[{Path(v).stem}]({quote(v)})" for v in samples[run.label]))
    if notes:
        lines += [""] + [f"[^{n}]: {_md(text)}" for text, n in notes.items()]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["protocol", "dataset", "split", "setting", "method", "run", "run_dir", "checkpoint", "training_run",
              "stage", "wandb_id", "clips_ok", "clips_failed", "num_clips", "best"]


def csv_text(groups: list[CompareGroup]) -> str:
    """Every row of every group; the metric columns are the union over groups (empty: absent or n/a)."""
    columns: list[str] = []
    for group in groups:
        columns += [c for c in group.columns if c not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS + columns)
    for group in groups:
        for row in group.rows:
            r, training = row.record, row.record.get("training_run") or {}
            results = r.get("results") or {}
            writer.writerow([*group.key, r["method"], row.run.label, str(row.run.path), r.get("checkpoint") or "",
                             training.get("run_dir") or "", training.get("stage") or "", training.get("wandb_id") or "",
                             r.get("clips_ok"), r.get("clips_failed"), r.get("num_clips"),
                             ";".join(c for c in group.columns if c in row.best),
                             *["" if results.get(c) is None else repr(results[c]) for c in columns]])
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# charts
# ---------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"


def plot_group(group: CompareGroup, folder: Path, colours: dict[str, str]) -> dict[str, Path]:
    """One PNG per metric column: bars grouped by method, one bar (colour) per run; {column: path}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    methods: list[str] = []
    for row in group.rows:
        if row.record["method"] not in methods:
            methods.append(row.record["method"])
    runs = [run.label for run in group.runs]
    width = 0.8 / len(runs)
    paths = {}
    for column, direction in group.columns.items():
        if all((row.record.get("results") or {}).get(column) is None for row in group.rows):
            continue  # nothing measured: no chart (the table says why)
        fig = Figure(figsize=(max(4.5, 0.9 * len(methods) * max(1, len(runs) / 2) + 1.5) + 1.8, 3.8), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for row in group.rows:
            results = row.record.get("results") or {}
            if column not in results:
                continue
            value = results[column]
            x = methods.index(row.record["method"]) + (runs.index(row.run.label) - (len(runs) - 1) / 2) * width
            best = column in row.best
            (bar,) = ax.bar([x], [bar_height(direction, value)], width=width * 0.95, color=colours[row.run.label],
                            edgecolor="#C44E52" if best else "#333333", linewidth=2.0 if best else 0.6)
            label = ("n/a" if value is None else format_value(value)) + (" ★" if best else "")
            up = bar.get_height() >= 0
            ax.annotate(label, (x, bar.get_height()), ha="center", va="bottom" if up else "top", fontsize=7,
                        xytext=(0, 2 if up else -2), textcoords="offset points")
        ax.set_xticks(range(len(methods)), methods, rotation=20 if len(methods) > 3 else 0,
                      ha="right" if len(methods) > 3 else "center", fontsize=8)
        ax.set_title(chart_title(column, direction, str(group.key[0])), fontsize=9)
        ax.axhline(0, color="#333333", linewidth=0.8)
        ax.margins(y=0.18)
        ax.legend(handles=[Patch(color=colours[r], label=r) for r in runs], fontsize=7, title="run",
                  title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
        path = folder / f"{_safe(column)}.png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
        paths[column] = path
    return paths


# ---------------------------------------------------------------------------------------------
# control matrices
# ---------------------------------------------------------------------------------------------
def _matrices(run: Run) -> list:
    from talkinghead.bench.control import ControlMatrix

    return [ControlMatrix(m["method"], m["values"], int(m.get("clips") or 0), list(m.get("errors") or []))
            for m in run.control if isinstance(m, dict) and "method" in m and "values" in m]


def write_control(run: Run, folder: Path, log: Callable[[str], None]) -> dict[str, Path]:
    """The run's control matrices as markdown and a heat map (copied from the run when it cannot be drawn)."""
    from talkinghead.bench.control import markdown_matrices, plot_matrices

    matrices = _matrices(run)
    if not matrices:
        return {}
    context = f"{run.records[0].get('protocol')}, run {run.label}"
    out = {"md": atomic_write_text(folder / f"{_safe(run.label)}.md", markdown_matrices(matrices, context))}
    png = folder / f"{_safe(run.label)}.png"
    try:
        out["png"] = plot_matrices(matrices, png, context)
    except Exception as error:  # noqa: BLE001 - the run's own heat map still shows it
        original = run.path / "plots" / "control_matrix.png"
        log(f"control matrix of {run.label}: re-rendering failed ({type(error).__name__}: {error})"
            + ("; copied the run's heat map" if original.is_file() else ""))
        if original.is_file():
            out["png"] = _copy(original, png)
    return out


def _copy(source: Path, target: Path) -> Path:
    return atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


# ---------------------------------------------------------------------------------------------
# index.html
# ---------------------------------------------------------------------------------------------
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #e8f4e8; }
.charts img { max-width: 480px; margin: 4px; border: 1px solid #eee; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin-right: 4px; }
video { max-width: 100%; background: #000; }
.samples td { vertical-align: top; }
.wide { overflow-x: auto; }
.notes, .meta { font-size: 12px; color: #444; }
"""

#: records each <video> / <img>'s state on its element (data-state: loaded | error, data-video-width /
#: data-natural-width, data-ready-state) and the whole list as JSON in #media-status
STATUS_SCRIPT = """
(function () {
  var status = document.getElementById("media-status");
  var media = Array.prototype.slice.call(document.querySelectorAll("video, img"));
  function report() {
    var states = media.map(function (el) {
      var video = el.tagName === "VIDEO";
      return {tag: el.tagName.toLowerCase(), src: el.getAttribute("src"), state: el.dataset.state || "pending",
              width: video ? el.videoWidth : el.naturalWidth, readyState: video ? el.readyState : null,
              error: video && el.error ? el.error.code + ": " + el.error.message : null};
    });
    status.textContent = JSON.stringify(states);
    var done = states.filter(function (s) { return s.state !== "pending"; }).length;
    var ok = states.filter(function (s) { return s.state === "loaded" && s.width > 0; }).length;
    status.dataset.done = done === states.length ? "yes" : "no";
    document.getElementById("media-summary").textContent =
      "media check: " + ok + " of " + states.length + " loaded" + (done < states.length ? " (still loading)" : "");
  }
  function mark(el, state) {
    el.dataset.state = state;
    if (el.tagName === "VIDEO") {
      el.dataset.videoWidth = el.videoWidth;
      el.dataset.readyState = el.readyState;
    } else {
      el.dataset.naturalWidth = el.naturalWidth;
    }
    report();
  }
  media.forEach(function (el) {
    if (el.tagName === "VIDEO") {
      el.addEventListener("loadeddata", function () { mark(el, "loaded"); });
      el.addEventListener("error", function () { mark(el, "error"); });
      if (el.readyState >= 2) { mark(el, "loaded"); } else if (el.error) { mark(el, "error"); }
    } else {
      el.addEventListener("load", function () { mark(el, el.naturalWidth > 0 ? "loaded" : "error"); });
      el.addEventListener("error", function () { mark(el, "error"); });
      if (el.complete) { mark(el, el.naturalWidth > 0 ? "loaded" : "error"); }
    }
  });
  report();
})();
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _href(path: Path, root: Path) -> str:
    return quote(path.relative_to(root).as_posix())


def html_group(group: CompareGroup, root: Path, charts: dict[str, Path], control: dict[str, dict],
               samples: dict[str, list[Path]], colours: dict[str, str]) -> str:
    cells, notes = _cells(group)
    parts = [f"<section id='{_e(group.slug)}'><h2>{_e(group.title.replace('`', ''))}</h2>"]
    header = ["Method", "run", "checkpoint", "clips"] + [column_header(c, d) for c, d in group.columns.items()]
    parts.append("<div class='wide'><table class='results'><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header)
                 + "</tr></thead><tbody>")
    for row in cells:
        tds = []
        for k, cell in enumerate(row):
            classes = (["num"] if k >= 3 else []) + (["best"] if cell.get("best") else [])
            note = f"<sup><a href='#{_e(group.slug)}-note-{cell['note']}'>{cell['note']}</a></sup>" if cell.get(
                "note") else ""
            text = _e(cell["text"])
            if k == 1:
                text = f"<span class='swatch' style='background:{colours[cell['text']]}'></span>{text}"
            tds.append(f"<td class='{' '.join(classes)}'>{text}{note}</td>")
        parts.append("<tr>" + "".join(tds) + "</tr>")
    parts.append("</tbody></table></div>")
    legend = _e(direction_legend(group.columns)).replace("**Bold**", "<b>Bold</b>")
    parts.append(f"<p class='meta'>{legend}</p><ul class='meta'>")
    parts += [f"<li>Run {_e(_run_line(run).replace('`', ''))}</li>" for run in group.runs]
    parts += [f"<li><b>Warning</b>: {_e(w)}</li>" for w in group.warnings]
    parts.append("</ul>")
    if notes:
        parts.append("<ol class='notes'>" + "".join(
            f"<li id='{_e(group.slug)}-note-{n}'>{_e(text.replace('`', ''))}</li>" for text, n in notes.items())
                     + "</ol>")
    if charts:
        parts.append("<h3>Charts</h3><div class='charts'>" + "".join(
            f"<img src='{_href(path, root)}' alt='{_e(column)}' title='{_e(column)}'>"
            for column, path in charts.items()) + "</div>")
    with_control = [run for run in group.runs if control.get(run.label)]
    if with_control:
        parts.append("<h3>Factor-control matrices</h3><p class='meta'>Change one driver (row): RMS change of each "
                     "estimated factor group (column) in units of its natural spread in real video; a disentangled "
                     "method moves only its diagonal.</p>")
        for run in with_control:
            parts.append(f"<h4>{_e(run.label)}</h4>")
            if control[run.label].get("png"):
                parts.append(f"<img src='{_href(control[run.label]['png'], root)}' alt='control matrix "
                             f"{_e(run.label)}'>")
            parts.append(f"<p class='meta'><a href='{_href(control[run.label]['md'], root)}'>as markdown</a></p>")
    clips: list[str] = []
    for run in group.runs:
        clips += [p.stem for p in samples.get(run.label, []) if p.stem not in clips]
    if clips:
        runs = [run for run in group.runs if samples.get(run.label)]
        parts.append("<h3>Sample videos</h3><p class='meta'>Each video: the run's methods side by side, with the "
                     "clip's audio.</p><table class='samples'><thead><tr><th>clip</th>"
                     + "".join(f"<th>{_e(run.label)}</th>" for run in runs) + "</tr></thead><tbody>")
        for clip in clips:
            row = [f"<td>{_e(clip)}</td>"]
            for run in runs:
                video = next((p for p in samples[run.label] if p.stem == clip), None)
                row.append(f"<td><video controls preload='auto' src='{_href(video, root)}'></video></td>"
                           if video else "<td>–</td>")
            parts.append("<tr>" + "".join(row) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("</section>")
    return "\n".join(parts)


def index_html(groups: list[CompareGroup], root: Path, charts: dict, control: dict, samples: dict,
               colours: dict[str, str], created: str) -> str:
    runs = [run for group in groups for run in group.runs]
    body = [f"<h1>Bench comparison</h1><p class='meta'>{len(runs)} runs, {len(groups)} protocol group(s); "
            f"written {_e(created)}. Tables: <a href='compare.md'>compare.md</a>, <a href='compare.csv'>compare.csv"
            f"</a>.</p>"]
    if len(groups) > 1:
        body.append("<p class='meta'>Runs of different protocols, datasets, splits or settings are in separate "
                    "tables: " + ", ".join(f"<a href='#{_e(g.slug)}'>{_e(g.title.replace('`', ''))}</a>"
                                           for g in groups) + ".</p>")
    body += [html_group(g, root, charts.get(g.slug, {}), control, samples, colours) for g in groups]
    body.append("<p id='media-summary' class='meta'>media check: not run (JavaScript off)</p>"
                "<pre id='media-status' data-done='no' hidden></pre>")
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>Bench comparison</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + f"\n<script>{STATUS_SCRIPT}</script>\n</body></html>\n")


# ---------------------------------------------------------------------------------------------
# everything
# ---------------------------------------------------------------------------------------------
def compare_runs(paths: list[str | Path], out: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> dict:
    """Write the comparison of the bench run folders `paths` into `out` (module docstring; default
    runs/compare/<timestamp>); returns {kind: path(s)}."""
    log = log or (lambda message: print(message, file=sys.stderr))
    if not paths:
        raise ValueError("no run folders to compare")
    resolved = [Path(p).resolve() for p in paths]
    twice = {str(p) for p in resolved if resolved.count(p) > 1}
    if twice:
        raise ValueError(f"run folder given twice: {', '.join(sorted(twice))}")
    runs = [load_run(p) for p in paths]
    _unique_labels(runs)
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    root = Path(out) if out is not None else Path("runs") / "compare" / time.strftime("%Y%m%d-%H%M%S")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root}: exists and is not empty; choose another --out")
    root.mkdir(parents=True, exist_ok=True)

    groups = build_groups(runs)
    colours = {run.label: RUN_COLOURS[i % len(RUN_COLOURS)] for i, run in enumerate(runs)}
    outputs: dict[str, Any] = {"folder": str(root)}
    markdown = ["# Bench comparison", "", f"{len(runs)} runs, written {created}; rows = (method, run, checkpoint), "
                "one table per protocol group.", ""]

    charts: dict[str, dict[str, Path]] = {}
    try:
        for group in groups:
            charts[group.slug] = plot_group(group, root / "plots" / group.slug, colours)
    except ImportError as error:
        log(f"charts skipped: {error} (pip install matplotlib)")
    outputs["plots"] = [str(p) for c in charts.values() for p in c.values()]

    samples: dict[str, list[Path]] = {}
    for run in runs:
        samples[run.label] = [_copy(video, root / "samples" / _safe(run.label) / video.name) for video in run.samples]
    outputs["samples"] = [str(p) for videos in samples.values() for p in videos]

    control: dict[str, dict] = {}
    for group in groups:  # each group's table, then the control matrices of its runs
        markdown.append(markdown_group(group, {label: [p.relative_to(root).as_posix() for p in videos]
                                               for label, videos in samples.items()}))
        for run in group.runs:
            if run.control:
                control[run.label] = write_control(run, root / "control", log)
                if control[run.label]:
                    markdown.append(Path(control[run.label]["md"]).read_text().replace(
                        "## Factor-control matrix", "### Factor-control matrix", 1))
    outputs["control"] = {label: {k: str(v) for k, v in files.items()} for label, files in control.items()}

    outputs["markdown"] = str(atomic_write_text(root / "compare.md", "\n".join(markdown)))
    outputs["csv"] = str(atomic_write_text(root / "compare.csv", csv_text(groups)))
    outputs["index"] = str(atomic_write_text(root / "index.html",
                                             index_html(groups, root, charts, control, samples, colours, created)))
    return outputs


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `compare` command to a `parser.add_subparsers()` object; returns its parser."""
    p = subparsers.add_parser("compare", help="several bench runs in one report (tables, charts, control "
                              "matrices, sample videos, index.html)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_options(p)
    p.set_defaults(func=run_compare)
    return p


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="bench run folders (default: the two latest complete runs under --bench-root)")
    p.add_argument("--out", default=None, help="report folder (default runs/compare/<timestamp>)")
    p.add_argument("--bench-root", default="runs/bench", help="where to look for the latest runs (default runs/bench)")


def run_compare(args: argparse.Namespace) -> int:
    """Exit status 0, or 2 with the reason when a path is not a run folder or --out is taken."""
    try:
        runs = list(args.runs) or latest_runs(args.bench_root)
        outputs = compare_runs(runs, args.out)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"talkinghead compare: {error}", file=sys.stderr)
        return 2
    print(f"compared {len(runs)} runs: {outputs['index']} (tables: {outputs['markdown']}, {outputs['csv']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="talkinghead compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_options(parser)
    return run_compare(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
