"""Writing a benchmark run: table, CSV, JSON lines, bar charts, sample videos, W&B.

`write_report(result)` writes into the run folder (every file atomically):

table.md        the results table shaped like the papers' Table 1: one row per method, the
                checkpoint it scored (its training run and stage; a footnote gives the path and
                W&B id), a "clips" column (scored / selected), one column per metric column with
                its direction (`ARROWS`: ↑ higher is better, ↓ lower is better, →0 closer to 0 is
                better: signed columns such as NLSE-C, ranked by |x|, `talkinghead.bench.records`),
                the best measured value of each column in bold, then the papers' numbers for the
                protocol's dataset as rows marked "(published)" (from benchmarks/published.yaml;
                VoxCeleb2, LRW and MEAD; never marked best) -- only when the store is that dataset:
                for a SynthTalk store (run.json ``store_source``, `published_for`) they are left out
                and a note says why. "n/a" cells carry a footnote with the reason; further footnotes
                name the protocol, the SyncNet behind LSE numbers, the CSIM embedding and any failed
                clips.
results.csv     the same rows (n/a cells empty; kind = measured | published; checkpoint and
                training_run columns; `best` lists the columns where the row is the best measured).
results.jsonl   one JSON line per measured method with all its numbers (stylegan3 style); the
                same lines are appended to <bench_root>/results.jsonl, the history of every run.
plots/<column>.png   one bar chart per column (matplotlib, Agg backend): measured methods, then
                published values hatched; closer-to-0 columns are charted as |x| (the signed value
                printed on the bar); the best measured bar is outlined and starred.
samples/<clip>.mp4   one file per sample clip: the methods side by side (columns, labelled), with
                the clip's audio (`talkinghead.data.video.write_video`).
wandb/          when wandb is installed: one W&B run per method (`log_wandb`: the same summary
                keys for every method, group = protocol, job_type = bench, the scored checkpoint
                as input artifact), offline unless WANDB_API_KEY is set (WANDB_MODE=disabled
                turns it off; `wandb sync` uploads offline runs).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from talkinghead.bench.records import column_direction, direction_label, rank_key, training_run
from talkinghead.fileio import atomic_write, atomic_write_text

__all__ = [
    "ARROWS",
    "PUBLISHED_FILE",
    "best_rows",
    "checkpoint_label",
    "checkpoint_note",
    "column_header",
    "format_value",
    "load_published",
    "log_wandb",
    "wandb_config",
    "wandb_run_name",
    "wandb_summary",
    "markdown_table",
    "plot_columns",
    "published_for",
    "published_rows",
    "write_csv",
    "write_jsonl",
    "write_report",
    "write_samples",
]

PUBLISHED_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "published.yaml"
#: header arrow per direction (`talkinghead.bench.records.column_direction`)
ARROWS = {"higher": "↑", "lower": "↓", "zero": "→0"}
_ALIASES = {"syncconf": "lsec", "lsec": "lsec", "confidence": "lsec"}


def _key(column: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", column.lower())
    return _ALIASES.get(key, key)


def format_value(value: float | None) -> str:
    """A table cell: 3 decimals below 10, 2 below 100, else 1 (n/a handled by the caller)."""
    if value is None:
        return "n/a"
    magnitude = abs(value)
    return f"{value:.3f}" if magnitude < 10 else f"{value:.2f}" if magnitude < 100 else f"{value:.1f}"


def column_header(column: str, direction: str) -> str:
    """A table header: the column and its direction's arrow (`ARROWS`), e.g. "NLSE-C →0"."""
    return f"{column} {ARROWS[direction]}"


def direction_legend(directions: dict[str, str]) -> str:
    """The line under a table explaining its arrows and bold cells."""
    parts = [f"{ARROWS[d]} {direction_label(d)}" + (f" ({', '.join(c for c, x in directions.items() if x == d)})"
                                                     if d == "zero" else "")
             for d in ("higher", "lower", "zero") if d in directions.values()]
    return "; ".join(parts) + ". **Bold**: the best measured value of the column."


def best_rows(values: list[float | None], direction: str) -> set[int]:
    """Indices of the best values (`talkinghead.bench.records.rank_key`: |x| for "zero" columns),
    compared as printed (`format_value`), so that cells that read the same are all marked; empty
    when no value is measured."""
    keys = [rank_key(direction, None if v is None else float(format_value(v))) for v in values]
    finite = [k for k in keys if k != math.inf]
    if not finite:
        return set()
    best = min(finite)
    return {i for i, k in enumerate(keys) if k == best}


def checkpoint_label(checkpoint: str | None, training: dict | None = None) -> str:
    """Short name of a scored checkpoint: "<training run>/<stage>" in the staged runner's layout,
    else the file or folder name; "–" for none (baselines)."""
    if not checkpoint:
        return "–"
    training = training if training is not None else training_run(checkpoint)
    if training and training.get("stage"):
        return f"{training['name']}/{training['stage']}"
    return Path(checkpoint).name or str(checkpoint)


def checkpoint_note(checkpoint: str | None, training: dict | None = None) -> str | None:
    """The footnote of a scored checkpoint: its path, training run folder, stage, W&B id and config."""
    if not checkpoint:
        return None
    training = training if training is not None else training_run(checkpoint)
    text = f"checkpoint `{checkpoint}`"
    if training:
        text += f"; training run `{training['run_dir']}`"
        if training.get("stage"):
            text += f", stage `{training['stage']}`"
        text += f", W&B id `{training['wandb_id']}`" if training.get("wandb_id") else ", no W&B id"
        if training.get("config"):
            text += f", config `{training['config']}`"
    return text


# ---------------------------------------------------------------------------------------------
# published numbers
# ---------------------------------------------------------------------------------------------
def load_published(path: str | Path | None = None) -> dict[str, list[dict]]:
    """{dataset key: [{method, source, values, note}]} from benchmarks/published.yaml ({} if absent)."""
    import yaml

    path = Path(path) if path is not None else PUBLISHED_FILE
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of dataset -> rows")
    for key, rows in data.items():
        for row in rows:
            if not isinstance(row, dict) or "method" not in row or not isinstance(row.get("values"), dict):
                raise ValueError(f"{path}: rows of {key!r} need `method` and a `values` mapping, got {row!r}")
    return data


def published_rows(columns: list[str], key: str | None, path: str | Path | None = None) -> list[dict]:
    """Published rows for dataset `key` restricted to `columns` (rows with none of them dropped).

    Each: {method: '<name> (published)', source, note, values: {our column: number}}.
    """
    if key is None:
        return []
    by_key = {_key(c): c for c in columns}
    rows = []
    for row in load_published(path).get(key, []):
        values = {by_key[_key(c)]: float(v) for c, v in row["values"].items() if _key(c) in by_key}
        if values:
            rows.append({"method": f"{row['method']} (published)", "source": row.get("source", ""),
                         "note": row.get("note"), "values": values})
    return rows


#: dataset names of the published keys, for the table's notes
PUBLISHED_NAMES = {"vox2": "VoxCeleb2", "lrw": "LRW", "mead": "MEAD"}


def published_for(result: Any, path: str | Path | None = None) -> tuple[list[dict], str | None]:
    """(published rows, None) for a run on the protocol's own dataset; ([], why) when the store is
    SynthTalk (run.json's ``store_source``, else `talkinghead.data.provenance.synthtalk_evidence`):
    papers' numbers on the real corpus are not shown beside numbers measured on synthetic clips."""
    key = result.protocol.published
    if key is None:
        return [], None
    source = (result.run_info or {}).get("store_source")
    if source is None:
        from talkinghead.data.provenance import synthtalk_evidence

        evidence = synthtalk_evidence(result.protocol.store)
    else:
        evidence = source.get("evidence") if source.get("synthtalk") else None
    if evidence:
        name = PUBLISHED_NAMES.get(key, key)
        return [], (f"published {name} rows left out: the store {result.protocol.store} is SynthTalk ({evidence}), "
                    f"and the papers measured {name}")
    return published_rows(list(result.columns), key, path), None


# ---------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------
def _footnotes() -> tuple[dict[str, int], Callable[[str], str]]:
    notes: dict[str, int] = {}

    def mark(text: str) -> str:
        if text not in notes:
            notes[text] = len(notes) + 1
        return f"[^{notes[text]}]"

    return notes, mark


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _metric_notes(result: Any) -> list[str]:
    lines = []
    lse = [name for name, info in result.metric_info.items() if info.get("uses_syncnet")]
    if lse:
        cols = ", ".join(c for c, m in result.column_metric.items() if m in lse)
        syncnet = result.syncnet or {}
        if syncnet.get("name"):
            lines.append(f"{cols}: SyncNet = {syncnet['name']} ({syncnet.get('kind')}, checkpoint "
                         f"`{syncnet.get('checkpoint')}`, sha256 {str(syncnet.get('sha256'))[:12]}).")
        else:
            lines.append(f"{cols}: no SyncNet ({syncnet.get('error', 'not resolved')}).")
        reference = result.run_info.get("nlse_reference") or {}
        if reference.get("mean") is not None:
            lines.append(f"NLSE-C reference: LSE-C of {reference.get('clips')} real "
                         f"{result.protocol.train_split}-split clips = {reference['mean']:.3f}.")
        if any(_key(c) == "nlsec" for c in result.columns):
            lines.append("NLSE-C = (LSE-C - LSE-C of real training clips) / the latter, signed: closer to 0 is "
                         "better (PD-FGC prints its absolute value).")
    for name, info in result.metric_info.items():
        if name.lower().startswith("csim") or any(_key(c).startswith("csim") for c in info["columns"]):
            if info.get("status") == "ok":
                lines.append(f"CSIM: embedding = {info.get('description') or name}.")
            else:
                lines.append(f"CSIM: not computed ({info.get('reason')}).")
    return lines



def _driving(protocol) -> str:
    """Which frames drive the non-lip motion, for the table's protocol note."""
    if protocol.setting != "cross":
        return "own frames as pose/eye/emotion source"
    frames = "its first frame" if protocol.cross_frames == "first" else "its frames"
    own = [s for s in ("pose", "eye", "emotion") if s not in protocol.cross_sources]
    text = f"{'/'.join(protocol.cross_sources)} from another clip ({frames})"
    return text + (f", own {'/'.join(own)}" if own else "")


def _directions(result: Any) -> dict[str, str]:
    return {column: column_direction(column, higher) for column, higher in result.columns.items()}


def _best_by_column(result: Any) -> dict[str, set[int]]:
    """column -> indices (into result.methods) of the best measured values."""
    return {column: best_rows([m.values.get(column) for m in result.methods], direction)
            for column, direction in _directions(result).items()}


def markdown_table(result: Any, published: list[dict] | None = None, notes_after: list[str] | None = None) -> str:
    """The run's table in GitHub markdown (see the module docstring); `notes_after`: more lines
    for the notes under it (e.g. why published rows are left out)."""
    columns = list(result.columns)
    directions = _directions(result)
    best = _best_by_column(result)
    notes, mark = _footnotes()
    header = ["Method", "checkpoint", "clips"] + [column_header(c, directions[c]) for c in columns]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---", ":---", "---:"] + ["---:"] * len(columns)) + "|"]
    total = len(result.selections)
    for i, m in enumerate(result.methods):
        checkpoint = (m.info or {}).get("checkpoint")
        note = checkpoint_note(checkpoint)
        cells = [_cell(m.name), _cell(checkpoint_label(checkpoint)) + (mark(_cell(note)) if note else ""),
                 f"{m.clips_ok}/{total}"]
        if m.clips_failed:
            cells[2] += mark(f"{m.name}: {m.clips_failed} of {total} clips failed; see errors in results.json "
                             f"(first: {m.errors[0]['clip_id'] or 'build'}: {m.errors[0]['error']})"
                             if m.errors else f"{m.name}: {m.clips_failed} clips failed")
        for column in columns:
            value = m.values.get(column)
            if value is None:
                cells.append("n/a" + mark(_cell(m.na.get(column, "not computed"))))
            else:
                cells.append(f"**{format_value(value)}**" if i in best[column] else format_value(value))
        lines.append("| " + " | ".join(cells) + " |")
    for row in published or []:
        source = mark(f"{row['source']}" + (f"; {row['note']}" if row.get("note") else ""))
        cells = [_cell(row["method"]) + source, "–", "–"] + [
            format_value(row["values"][c]) if c in row["values"] else "–" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")

    protocol = result.protocol
    about = [f"Protocol `{protocol.name}`: {protocol.description or protocol.dataset}; store `{protocol.store}`, "
             f"split `{result.split}`, {total} clips, {protocol.setting}-driven (reference = first frame, own "
             f"audio, {_driving(protocol)})."]
    about.append(direction_legend(directions) + (" Published rows are not ranked." if published else ""))
    about += _metric_notes(result)
    if published:
        about.append("(published) rows are the papers' numbers from their own pipelines (official SyncNet, "
                      "their landmark detector and LMD convention, ArcFace): context, not measured here.")
    about += list(notes_after or [])
    out = [f"## Benchmark `{protocol.name}` ({result.run_dir.name})", "", *lines, ""]
    out += [f"- {line}" for line in about]
    if notes:
        out.append("")
        out += [f"[^{n}]: {text}" for text, n in notes.items()]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# CSV / JSON lines
# ---------------------------------------------------------------------------------------------
def write_csv(result: Any, path: Path, published: list[dict] | None = None) -> Path:
    """The table's rows as CSV: signed values as measured (n/a empty); `best` = the columns (";"
    separated) where the row holds the best measured value (`best_rows`: |x| for NLSE-C)."""
    columns = list(result.columns)
    best = _best_by_column(result)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "kind", "clips_ok", "clips_failed", "checkpoint", "training_run", "best", *columns])
    for i, m in enumerate(result.methods):
        checkpoint = (m.info or {}).get("checkpoint")
        training = training_run(checkpoint)
        writer.writerow([m.name, "measured", m.clips_ok, m.clips_failed, checkpoint or "",
                         (training or {}).get("run_dir", ""), ";".join(c for c in columns if i in best[c]),
                         *["" if m.values.get(c) is None else repr(m.values[c]) for c in columns]])
    for row in published or []:
        writer.writerow([row["method"], "published", "", "", "", "", "", *[row["values"].get(c, "") for c in columns]])
    return atomic_write_text(path, buffer.getvalue())


def jsonl_records(result: Any, outputs: dict | None = None) -> list[dict]:
    """One record per measured method (what results.jsonl holds): `talkinghead.bench.records.run_record`."""
    from talkinghead.bench.records import run_record

    return [run_record(result, m, outputs) for m in result.methods]


def write_jsonl(records: list[dict], path: Path, append: bool = False) -> Path:
    """Write (or append to) a JSON-lines file; the whole file is replaced atomically."""
    old = path.read_text() if append and path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    return atomic_write_text(path, old + "".join(json.dumps(r, default=str) + "\n" for r in records))


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "column"


def chart_title(column: str, direction: str, context: str) -> str:
    """A chart's title: what the bars show (|x| for closer-to-0 columns) and the direction in words."""
    shown = f"|{column}|" if direction == "zero" else column
    return f"{shown} ({direction_label(direction)}) — {context}"


def bar_height(direction: str, value: float | None) -> float:
    """What a bar shows: |value| for closer-to-0 columns, the value otherwise; 0 for n/a."""
    if value is None:
        return 0.0
    return abs(value) if direction == "zero" else value


def plot_columns(result: Any, folder: Path, published: list[dict] | None = None) -> list[Path]:
    """One PNG bar chart per column: measured methods (n/a marked), then published values hatched;
    closer-to-0 columns charted as |x|; the best measured bar outlined and starred."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # Figure + Agg canvas, no pyplot: no global state, no GUI

    paths = []
    directions = _directions(result)
    best = _best_by_column(result)
    for column in result.columns:
        direction = directions[column]
        names, values, styles = [], [], []
        for m in result.methods:
            names.append(m.name)
            values.append(m.values.get(column))
            styles.append("measured")
        for row in published or []:
            if column in row["values"]:
                names.append(row["method"].replace(" (published)", "\n(published)"))
                values.append(row["values"][column])
                styles.append("published")
        fig = Figure(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        xs = np.arange(len(names))
        heights = [bar_height(direction, v) for v in values]
        colors = ["#4C72B0" if s == "measured" else "#BBBBBB" for s in styles]
        bars = ax.bar(xs, heights, color=colors, edgecolor="#333333")
        for i, (bar, value, style) in enumerate(zip(bars, values, styles)):
            if style == "published":
                bar.set_hatch("//")
            label = "n/a" if value is None else format_value(value)
            if style == "measured" and i in best[column]:
                label += " ★"
                bar.set_edgecolor("#C44E52")
                bar.set_linewidth(2.0)
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom" if bar.get_height() >= 0 else "top", fontsize=8,
                        xytext=(0, 2 if bar.get_height() >= 0 else -2), textcoords="offset points")
        ax.set_xticks(xs, names, rotation=20 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center",
                      fontsize=8)
        ax.set_title(chart_title(column, direction, result.protocol.name), fontsize=10)
        ax.axhline(0, color="#333333", linewidth=0.8)
        ax.margins(y=0.15)
        fig.tight_layout()
        path = folder / f"{_safe(column)}.png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# sample videos
# ---------------------------------------------------------------------------------------------
LABEL_HEIGHT = 24


def _tile(frames: np.ndarray | None, label: str, count: int, size: tuple[int, int]) -> np.ndarray:
    """(count, LABEL_HEIGHT + H, W, 3) uint8: a label band over the method's frames (grey if none)."""
    import cv2

    h, w = size
    body = np.full((count, h, w, 3), 96, np.uint8)
    if frames is not None:
        body[: min(count, len(frames))] = frames[:count]
    else:
        for t in range(count):
            cv2.putText(body[t], "failed", (w // 2 - 30, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (230, 230, 230), 1,
                        cv2.LINE_AA)
    band = np.full((LABEL_HEIGHT, w, 3), 20, np.uint8)
    text = label if len(label) <= 26 else label[:25] + "…"
    cv2.putText(band, text, (6, LABEL_HEIGHT - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([np.broadcast_to(band, (count, *band.shape)), body], axis=1)


def write_samples(result: Any, folder: Path, fps: float = 25.0, sample_rate: int = 16000) -> list[Path]:
    """One mp4 per sample clip: methods side by side (config order), the clip's audio muxed in."""
    from talkinghead.data.store import safe_name
    from talkinghead.data.video import write_video

    paths = []
    order = [m.name for m in result.methods]
    for clip_id, sample in result.samples.items():
        frames = sample["frames"]
        if not frames:
            continue
        count = min(len(f) for f in frames.values())
        size = next(iter(frames.values())).shape[1:3]
        tiles = [_tile(frames.get(name), name, count, size) for name in order]
        grid = np.concatenate(tiles, axis=2)
        if grid.shape[2] % 2:
            grid = np.pad(grid, ((0, 0), (0, 0), (0, 1), (0, 0)))
        if grid.shape[1] % 2:
            grid = np.pad(grid, ((0, 0), (0, 1), (0, 0), (0, 0)))
        audio = np.asarray(sample["audio"], np.float32)[: int(round(count / fps * sample_rate))]
        path = folder / f"{safe_name(clip_id)}.mp4"
        write_video(path, np.ascontiguousarray(grid), fps=fps, audio=audio if audio.size else None,
                    sample_rate=sample_rate, preset="fast")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Weights & Biases
# ---------------------------------------------------------------------------------------------
#: record fields copied into a bench W&B run's config as they are
CONFIG_FIELDS = ("record_id", "method", "checkpoint", "dataset", "protocol", "split", "setting", "seed", "num_clips",
                 "store", "git_commit", "syncnet", "timestamp", "directions", "na")


def wandb_mode() -> str:
    """W&B mode: $WANDB_MODE when set (e.g. disabled), else online with WANDB_API_KEY, else offline."""
    from talkinghead.training.tracking import wandb_mode as mode

    return mode()


def wandb_run_name(record: dict) -> str:
    """``<method>-<protocol>-<bench run folder>``."""
    return f"{record['method']}-{record['protocol']}-{record['run']}"


def wandb_config(record: dict) -> dict:
    """A bench W&B run's config: the record's fields (`CONFIG_FIELDS`), the bench run's name and
    folder, and the training run behind the checkpoint (``training_run_id`` / ``_name`` / ``_dir``,
    ``training_stage``; None for baselines)."""
    training = record.get("training_run") or {}
    config = {key: record.get(key) for key in CONFIG_FIELDS}
    config.update(bench_run=record.get("run"), bench_run_dir=record.get("run_dir"),
                  training_run_id=training.get("wandb_id"), training_run_name=training.get("name"),
                  training_run_dir=training.get("run_dir"), training_stage=training.get("stage"))
    return config


def wandb_summary(record: dict) -> dict:
    """The summary every bench W&B run has, whatever its method: one key per column of the run
    (exactly the column names; None where n/a), ``clips_ok`` and ``clips_failed``."""
    summary: dict[str, Any] = dict(record.get("results") or {})
    summary.update(clips_ok=record.get("clips_ok"), clips_failed=record.get("clips_failed"))
    return summary


def _checkpoint_artifact(record: dict):
    """The checkpoint's reference artifact (`talkinghead.training.tracking`) when the record's
    checkpoint is a staged training run's file, else None."""
    from talkinghead.training.tracking import checkpoint_artifact

    training = record.get("training_run") or {}
    checkpoint = record.get("checkpoint")
    if not training.get("stage") or not checkpoint or not Path(checkpoint).is_file():
        return None
    return checkpoint_artifact(checkpoint, training["run_dir"], training["stage"])


def log_wandb(result: Any, outputs: dict, records: list[dict] | None = None, published: list[dict] | None = None,
              log: Callable[[str], None] = print, project: str | None = None) -> list[str] | None:
    """One W&B run per record (method) of the bench run, under <run folder>/wandb.

    Each run: name `wandb_run_name`, ``group`` = protocol, ``tags`` = [method, protocol, dataset],
    ``job_type`` = "bench" (tags deduplicated: a protocol named as its dataset is one tag), config `wandb_config`, summary `wandb_summary` (the same keys for every
    method), media ``samples`` (the side-by-side sample videos with audio), ``plots`` (the bar
    charts), ``control_matrix`` (when measured) and ``results`` (the table, published rows
    included); a scored training checkpoint is declared as the run's input artifact. Project:
    `talkinghead.training.tracking.wandb_project` (`project`, default "talkinghead", the training
    runs' project; $WANDB_PROJECT overrides).

    Returns the W&B run folders, or None when wandb is not installed or disabled; a run that fails
    is skipped with a warning (the benchmark never fails because of W&B).
    """
    try:
        import wandb
    except ImportError:
        return None
    from talkinghead.training.tracking import use_checkpoint, wandb_project

    mode = wandb_mode()
    if mode == "disabled":
        return None
    records = records if records is not None else jsonl_records(result, outputs)
    project = wandb_project(project)
    columns = list(result.columns)
    folders = []
    for record in records:
        run = None
        try:
            settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False,
                                      x_disable_stats=True, x_disable_machine_info=True)
            config = wandb_config(record)
            artifact = _checkpoint_artifact(record)
            config["checkpoint_artifact"] = artifact.name if artifact is not None else None
            run = wandb.init(project=project, name=wandb_run_name(record), group=record["protocol"],
                             tags=list(dict.fromkeys([record["method"], record["protocol"], record["dataset"]])),
                             job_type="bench",
                             dir=str(result.run_dir), mode=mode, config=config, settings=settings,
                             reinit="create_new")
            if artifact is not None:
                use_checkpoint(run, artifact)
            table = wandb.Table(columns=["method", "kind", "clips_ok", *columns])
            for m in result.methods:
                table.add_data(m.name, "measured", m.clips_ok, *[m.values.get(c) for c in columns])
            for row in published or []:
                table.add_data(row["method"], "published", None, *[row["values"].get(c) for c in columns])
            payload: dict[str, Any] = {"results": table}
            if outputs.get("samples"):
                payload["samples"] = [wandb.Video(str(p), format="mp4", caption=Path(p).stem)
                                      for p in outputs["samples"]]
            if outputs.get("plots"):
                payload["plots"] = [wandb.Image(str(p), caption=Path(p).stem) for p in outputs["plots"]]
            if outputs.get("control_plot"):
                payload["control_matrix"] = wandb.Image(str(outputs["control_plot"]))
            run.log(payload)
            for key, value in wandb_summary(record).items():
                run.summary[key] = value
            folders.append(str(Path(run.dir).parent))
            run.finish()
        except Exception as error:  # noqa: BLE001 - W&B is a convenience, never a failure
            log(f"W&B logging of {record.get('method')} skipped: {type(error).__name__}: {error}")
            if run is not None:
                try:
                    run.finish(exit_code=1)
                except Exception:  # noqa: BLE001
                    pass
    return folders


# ---------------------------------------------------------------------------------------------
# everything
# ---------------------------------------------------------------------------------------------
def write_report(result: Any, published: str | Path | None = None, wandb_log: bool = True,
                 history: str | Path | None = None, log: Callable[[str], None] | None = None,
                 wandb_project: str | None = None) -> dict:
    """Write every report file of `result` into its run folder; returns {kind: path(s)}.

    history: the JSON-lines file every run appends to (default <bench_root>/results.jsonl).
    wandb_project: the W&B project of the bench runs (`log_wandb`).
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    run_dir = Path(result.run_dir)
    rows, left_out = published_for(result, published)
    outputs: dict[str, Any] = {}
    table = markdown_table(result, rows, [left_out] if left_out else None)
    outputs["table"] = str(atomic_write_text(run_dir / "table.md", table))
    outputs["csv"] = str(write_csv(result, run_dir / "results.csv", rows))
    try:
        outputs["plots"] = [str(p) for p in plot_columns(result, run_dir / "plots", rows)]
    except ImportError as error:
        log(f"plots skipped: {error} (pip install matplotlib)")
        outputs["plots"] = []
    if result.control:
        from talkinghead.bench.control import markdown_matrices, plot_matrices

        matrices = markdown_matrices(result.control, result.protocol.name)
        outputs["control_matrix"] = str(atomic_write_text(run_dir / "control_matrix.md", matrices))
        atomic_write_text(run_dir / "control_matrix.json",
                          json.dumps([m.to_dict() for m in result.control], indent=1))
        table = table + "\n\n" + matrices
        atomic_write_text(run_dir / "table.md", table)
        try:
            outputs["control_plot"] = str(plot_matrices(result.control, run_dir / "plots" / "control_matrix.png",
                                                        result.protocol.name))
        except ImportError as error:
            log(f"control-matrix plot skipped: {error} (pip install matplotlib)")
    try:
        outputs["samples"] = [str(p) for p in write_samples(result, run_dir / "samples")]
    except Exception as error:  # noqa: BLE001 - a video encoder problem must not lose the numbers
        log(f"sample videos skipped: {type(error).__name__}: {error}")
        outputs["samples"] = []
    records = jsonl_records(result, outputs)
    outputs["jsonl"] = str(write_jsonl(records, run_dir / "results.jsonl"))
    bench_root = Path(result.run_info.get("config", {}).get("bench_root") or run_dir.parent)
    history = Path(history) if history is not None else bench_root / "results.jsonl"
    outputs["history"] = str(write_jsonl(records, history, append=True))
    if wandb_log:
        outputs["wandb"] = log_wandb(result, outputs, records, rows, log, wandb_project)
    log(f"results: {run_dir}\n\n{table}")
    return outputs
