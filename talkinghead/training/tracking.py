"""W&B conventions shared by training runs, bench runs and the dashboards (`talkinghead.bench.dashboard`).

Project: one W&B project holds training and bench runs: ``$WANDB_PROJECT`` when set, else the
configured name (training: ``logger.project``, bench: ``BenchConfig.wandb_project``), both
"talkinghead" by default (`wandb_project`).

Mode (`wandb_mode`): ``$WANDB_MODE`` when set (``disabled`` turns W&B off), else online with
``WANDB_API_KEY``, else offline; offline runs are written under ``<folder>/wandb/offline-run-*``
and uploaded later with ``wandb sync`` (`find_offline_runs`, `sync_commands`).

Checkpoint lineage: a training stage logs its ``last.ckpt`` as a *reference* artifact of type
"model" named ``<run folder>-<stage>`` (`checkpoint_artifact_name`); it holds ``file://<absolute
path>`` and the file's MD5, never the file itself. The bench run that scores that checkpoint builds
the same artifact (same name, same reference, so the same digest: W&B resolves it to the version
the training run logged) and declares it as its input (`use_checkpoint`): W&B shows training run
-> checkpoint -> bench run. A checkpoint changed after the training run logged it (or moved) gives
a new version of the same artifact name.

Offline, ``Run.use_artifact`` refuses to run; `use_checkpoint` then writes the record an online
``use_artifact(<draft artifact>)`` sends (an artifact record with ``use_after_commit``) into the
offline run, which ``wandb sync`` replays: wandb-core's artifact saver finds the version with that
digest already committed (by the training run) and records the bench run's use of it (else it
creates the version and then uses it). Sync the training runs before the bench runs, so the
training run is the checkpoint's creator.

`offline_run(folder)` reads an offline run's ``.wandb`` transaction log (W&B's LevelDB-style log of
protobuf records; wandb >= 0.2x writes no ``wandb-summary.json`` / ``config.yaml`` offline) into
{id, project, name, group, job_type, tags, config, summary, history_keys, artifacts}.
"""
from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "DEFAULT_PROJECT",
    "checkpoint_artifact",
    "checkpoint_artifact_name",
    "find_offline_runs",
    "log_checkpoint",
    "offline_records",
    "offline_run",
    "sync_commands",
    "use_checkpoint",
    "wandb_mode",
    "wandb_project",
]

DEFAULT_PROJECT = "talkinghead"
ARTIFACT_TYPE = "model"


def wandb_project(configured: str | None = None) -> str:
    """``$WANDB_PROJECT``, else `configured`, else "talkinghead"."""
    return os.environ.get("WANDB_PROJECT") or configured or DEFAULT_PROJECT


def wandb_mode() -> str:
    """``$WANDB_MODE`` when set (e.g. disabled), else online with WANDB_API_KEY, else offline."""
    explicit = os.environ.get("WANDB_MODE")
    if explicit:
        return explicit
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def checkpoint_artifact_name(run_dir: str | Path, stage: str) -> str:
    """``<run folder name>-<stage>``, characters outside [A-Za-z0-9._-] replaced by "_"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{Path(run_dir).name}-{stage}").strip("_")


def checkpoint_artifact(checkpoint: str | Path, run_dir: str | Path, stage: str, metadata: dict | None = None):
    """The reference artifact (type "model") of a stage checkpoint: one entry named as the file,
    referencing ``file://<absolute path>`` with its MD5 (the digest both sides agree on)."""
    import wandb

    path = Path(checkpoint).resolve()
    artifact = wandb.Artifact(checkpoint_artifact_name(run_dir, stage), type=ARTIFACT_TYPE, metadata=metadata)
    artifact.add_reference(path.as_uri(), name=path.name, checksum=True)
    return artifact


def log_checkpoint(run: Any, checkpoint: str | Path, run_dir: str | Path, stage: str,
                   aliases: list[str] | None = None, metadata: dict | None = None):
    """Log a stage checkpoint as the training run's output artifact (aliases e.g. latest, <stage>)."""
    artifact = checkpoint_artifact(checkpoint, run_dir, stage, metadata)
    run.log_artifact(artifact, aliases=list(dict.fromkeys(aliases or ["latest", stage])))
    return artifact


def use_checkpoint(run: Any, artifact: Any) -> Any:
    """Declare `artifact` (`checkpoint_artifact`) an input of `run`, online or offline (module docstring)."""
    if getattr(run, "offline", False) or getattr(getattr(run, "settings", None), "_offline", False):
        return run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
    return run.use_artifact(artifact)


# ---------------------------------------------------------------------------------------------
# offline runs
# ---------------------------------------------------------------------------------------------
_BLOCK = 32768
_HEADER = struct.Struct("<4sHB")      # ":W&B", magic 0xBEE1, version
_CHUNK = struct.Struct("<IHB")        # crc32 of (type byte + data), length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def offline_records(path: str | Path) -> Iterator[Any]:
    """The protobuf records (`wandb.proto.wandb_internal_pb2.Record`) of a ``.wandb`` file, in order;
    ValueError on a file that is not a W&B log or has a corrupt chunk."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        raise ValueError(f"{path}: not a W&B transaction log (too short)")
    ident, magic, _ = _HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, pending = _HEADER.size, b""
    while pos + _CHUNK.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK.size:  # block trailer: zero padding
            pos += left
            continue
        crc, length, kind = _CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero-filled rest of a block (or of the file)
            pos += left
            continue
        chunk = data[pos + _CHUNK.size: pos + _CHUNK.size + length]
        if len(chunk) < length:
            break  # a run still writing: the last chunk is incomplete
        if zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: corrupt chunk at byte {pos}")
        pos += _CHUNK.size + length
        if kind == _FULL:
            payload = chunk
        elif kind == _FIRST:
            pending = chunk
            continue
        elif kind == _MIDDLE:
            pending += chunk
            continue
        elif kind == _LAST:
            payload, pending = pending + chunk, b""
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {pos}")
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _set(target: dict, item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = _json(item.value_json)


def offline_run(folder: str | Path, wait: float = 0.0) -> dict:
    """An offline run folder (``offline-run-*``, or its ``.wandb`` file) read back (module docstring).
    artifacts: [{name, type, digest, aliases, metadata, use_after_commit, references}] in order;
    complete: whether the log ends the run (its exit record).

    wait: seconds to wait for the exit record: W&B's service writes the log asynchronously, and
    ``Run.finish()`` offline may return before the file is complete."""
    import time

    folder = Path(folder)
    deadline = time.monotonic() + wait
    while True:
        files = [folder] if folder.is_file() else sorted(folder.glob("*.wandb"))
        records = list(offline_records(files[0])) if files else []
        complete = any(r.WhichOneof("record_type") == "exit" for r in records)
        if complete or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if not files:
        raise FileNotFoundError(f"{folder}: no .wandb file")
    run: dict[str, Any] = {"id": None, "project": None, "name": None, "group": None, "job_type": None, "tags": [],
                           "config": {}, "summary": {}, "history_keys": set(), "artifacts": [], "folder": str(folder),
                           "complete": complete}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, project=r.project, name=r.display_name, group=r.run_group, job_type=r.job_type,
                       tags=list(r.tags))
            for item in r.config.update:
                _set(run["config"], item)
        elif kind == "config":
            for item in record.config.update:
                _set(run["config"], item)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run["summary"], item)
            for item in record.summary.remove:
                run["summary"].pop((list(item.nested_key) or [item.key])[0], None)
        elif kind == "history":
            run["history_keys"].update((list(i.nested_key) or [i.key])[0] for i in record.history.item)
        elif kind == "artifact":
            a = record.artifact
            run["artifacts"].append({
                "name": a.name, "type": a.type, "digest": a.digest, "aliases": list(a.aliases),
                "metadata": _json(a.metadata) if a.metadata else {}, "use_after_commit": a.use_after_commit,
                "references": [c.ref for c in a.manifest.contents]})
    run["config"].pop("_wandb", None)
    run["config"] = {k: v.get("value", v) if isinstance(v, dict) and set(v) <= {"value", "desc"} else v
                     for k, v in run["config"].items()}
    return run


def find_offline_runs(root: str | Path) -> list[Path]:
    """Every ``offline-run-*`` folder under `root` (any depth), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("offline-run-*") if p.is_dir() and p.parent.name == "wandb")


def sync_commands(root: str | Path, bench_root: str | Path | None = None, entity: str | None = None) -> list[str]:
    """The ``wandb sync`` commands that upload the offline runs under `root`: the training runs
    first (they create the checkpoint artifacts), then the bench runs (under `bench_root`, default
    ``<root>/bench``); ``--entity`` when given (the runs carry their project)."""
    root = Path(root)
    bench_root = Path(bench_root) if bench_root is not None else root / "bench"
    training = [p for p in find_offline_runs(root) if bench_root.resolve() not in p.resolve().parents]
    bench = find_offline_runs(bench_root)
    prefix = "wandb sync" + (f" --entity {_quote(entity)}" if entity else "")
    return [prefix + " " + " ".join(_quote(p) for p in group) for group in (training, bench) if group]


def _quote(text: str | Path) -> str:
    import shlex

    return shlex.quote(str(text))
