"""Uniform run records: one record per (bench run, method, protocol, checkpoint).

Every consumer of benchmark results (the run folder's ``results.jsonl``, the history
``<bench_root>/results.jsonl``, the W&B bench runs, ``talkinghead compare``) reads the same record,
so methods and runs compare on identical keys. A record (`run_record`) is a flat JSON object::

    schema          RECORD_SCHEMA (2); records without it are the older layout (`normalise` reads them)
    record_id       "<bench run folder name>/<method>": unique per run and method
    run, run_dir    the bench run folder's name and path
    timestamp       when the method's scoring finished (ISO 8601)
    status          "complete" (a record is only written for a method that was scored)
    protocol, dataset, split, setting, seed, num_clips, store
    method          registered method or baseline name
    checkpoint      the checkpoint file or folder scored (None for baselines)
    training_run    `training_run(checkpoint)`: the training run folder, stage, W&B id and config
                    that produced the checkpoint (None for baselines / unknown layouts)
    git_commit      the source commit of the suite that scored it (None outside a git checkout)
    syncnet         the SyncNet behind LSE columns (None when LSE was not measured)
    results         column -> number (None when n/a); the same column names for every method
    na              column -> why it is n/a
    directions      column -> "higher" | "lower" | "zero" (best at 0: ranked by |value|, NLSE-C)
    clips_ok, clips_failed
    samples         sample videos of the run (side by side, every method): paths
    control_matrix  the run's control_matrix.json path when measured, else None

`read_records(paths)` reads run folders and JSON-lines files into normalised records;
`rank_key(direction, value)` is the one ordering of "better" every table and chart uses.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "CLOSER_TO_ZERO",
    "RECORD_SCHEMA",
    "column_direction",
    "direction_label",
    "normalise",
    "rank_key",
    "read_records",
    "run_record",
    "training_run",
]

RECORD_SCHEMA = 2
#: signed columns whose best value is 0: ranked and charted by their absolute value
CLOSER_TO_ZERO = frozenset({"NLSE-C"})


def column_direction(column: str, higher_is_better: bool) -> str:
    """"zero" for the signed columns of `CLOSER_TO_ZERO`, else "higher" or "lower"."""
    if column in CLOSER_TO_ZERO:
        return "zero"
    return "higher" if higher_is_better else "lower"


def direction_label(direction: str) -> str:
    """Words for a table header / chart title: "higher is better", "lower is better", "|x| lower is better"."""
    return {"higher": "higher is better", "lower": "lower is better", "zero": "closer to 0 is better (ranked by |x|)"
            }[direction]


def rank_key(direction: str, value: float | None) -> float:
    """Sort key, smaller = better; n/a (None, NaN) sorts last."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.inf
    value = float(value)
    return -value if direction == "higher" else abs(value) if direction == "zero" else value


def training_run(checkpoint: str | Path | None) -> dict | None:
    """The training run behind `checkpoint`, from the staged runner's layout
    (``<out>/<stage>/checkpoints/<name>.ckpt``, `talkinghead.training.runner`):
    {run_dir, name, stage, wandb_id (the stage's ``wandb_id`` file, None when W&B was off), config}.
    A folder (e.g. official weights) gives {run_dir, name, stage: None, wandb_id: None, config: None}.
    None for no checkpoint or another layout."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    if path.is_dir():
        return {"run_dir": str(path), "name": path.name, "stage": None, "wandb_id": None, "config": None}
    if path.parent.name != "checkpoints":
        return None
    stage_dir = path.parent.parent
    run_dir = stage_dir.parent
    id_file = stage_dir / "wandb_id"
    try:
        wandb_id = id_file.read_text().strip() if id_file.is_file() else None
    except OSError:
        wandb_id = None
    config = stage_dir / "config.yaml"
    return {"run_dir": str(run_dir), "name": run_dir.name, "stage": stage_dir.name, "wandb_id": wandb_id or None,
            "config": str(config) if config.is_file() else None}


def run_record(result: Any, method: Any, outputs: dict | None = None) -> dict:
    """The record of one scored method (`talkinghead.bench.harness.MethodResult`) of bench result
    `result` (`talkinghead.bench.harness.BenchResult`); `outputs` = the report's files (samples,
    control_matrix) when written."""
    info = result.run_info
    protocol = result.protocol
    checkpoint = (method.info or {}).get("checkpoint")
    outputs = outputs or {}
    control = Path(result.run_dir) / "control_matrix.json"
    return {
        "schema": RECORD_SCHEMA,
        "record_id": f"{Path(result.run_dir).name}/{method.name}",
        "run": Path(result.run_dir).name,
        "run_dir": str(result.run_dir),
        "timestamp": info.get("finished") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "complete",
        "protocol": protocol.name,
        "dataset": protocol.dataset,
        "split": result.split,
        "setting": protocol.setting,
        "seed": getattr(protocol, "seed", None),
        "num_clips": len(result.selections),
        "store": info.get("store") or str(protocol.store),
        "method": method.name,
        "checkpoint": checkpoint,
        "training_run": training_run(checkpoint),
        "git_commit": (info.get("versions") or {}).get("source_commit"),
        "syncnet": (result.syncnet or {}).get("name"),
        "results": {column: method.values.get(column) for column in result.columns},
        "na": dict(method.na),
        "directions": {column: column_direction(column, higher) for column, higher in result.columns.items()},
        "clips_ok": method.clips_ok,
        "clips_failed": method.clips_failed,
        "samples": [str(p) for p in outputs.get("samples") or []],
        "control_matrix": str(control) if control.is_file() else None,
    }


def normalise(record: dict) -> dict:
    """A record in the current layout: older lines (no ``schema``) get the missing keys, with
    directions guessed from the column names' usual sense only where the record has none."""
    if record.get("schema") == RECORD_SCHEMA:
        return record
    out = dict(record)
    out.setdefault("schema", RECORD_SCHEMA)
    out.setdefault("record_id", f"{out.get('run')}/{out.get('method')}")
    out.setdefault("status", "complete")
    out.setdefault("seed", None)
    out.setdefault("store", None)
    out.setdefault("training_run", training_run(out.get("checkpoint")))
    out.setdefault("git_commit", None)
    results = out.get("results") or {}
    higher = {"LSE-C", "SSIM", "CPBD", "CSIM", "PSNR", "acc-emotion"}
    out.setdefault("directions", {c: column_direction(c, c in higher) for c in results})
    out.setdefault("samples", [])
    out.setdefault("control_matrix", None)
    return out


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(normalise(json.loads(line)))
        except ValueError as error:
            raise ValueError(f"{path}:{number}: not a JSON record ({error})") from error
    return records


def read_records(paths: Iterable[str | Path]) -> list[dict]:
    """Records of bench run folders (their ``results.jsonl``) and JSON-lines files, in the order
    given; raises FileNotFoundError naming a path that is neither."""
    records: list[dict] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            path = path / "results.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{item}: not a bench run folder with results.jsonl, nor a JSON-lines file")
        records += _read_jsonl(path)
    return records
