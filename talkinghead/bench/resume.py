"""Interrupted bench runs: their status, the methods they had scored, and resuming them.

Conventions:

* run.json records the process running it (``pid``, ``host``, ``pid_started``: the process's
  start time in clock ticks from ``/proc``, so a reused pid is not taken for it). Its ``status``
  is ``running``, then ``complete``; a run stopped by Ctrl-C / SIGTERM / SIGHUP
  (`interrupt_signals`) writes ``interrupted`` (another exception: ``failed``, with the error)
  before it exits. `run_status` reports a ``running`` run whose process no longer exists
  (SIGKILL, power loss) as ``interrupted``.
* Each method's results are kept as soon as it is scored: ``<run>/partial/<method>.json`` (its
  `MethodResult` as a dict, the scoring fingerprint) and ``<method>.npz`` (its sample frames and
  the sample clips' audio), both written atomically, the ``.npz`` first: a ``.json`` is only
  there when everything of the method is.
* `resume_key` hashes every setting that changes the numbers (protocol and its overrides, the
  resolved store, the selected clips, methods and their checkpoints, metrics and their options,
  SyncNet choice, device, samples, ...), not where the run is written nor how it is shown
  (out, bench_root, wandb, progress, published, command, resume). A new run with the key of the
  latest run under the same bench_root, when that run is resumable (`RESUMABLE`), continues it.
* `fingerprint` hashes what the metrics were once built (their status, columns, SyncNet bytes,
  NLSE-C reference): a kept method is reused only when the resumed run builds the same metrics.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from talkinghead.fileio import atomic_write, atomic_write_text

__all__ = [
    "RESUMABLE",
    "Interrupted",
    "fingerprint",
    "find_resumable",
    "interrupt_signals",
    "process_identity",
    "read_partial",
    "resume_key",
    "run_status",
    "scored_methods",
    "write_partial",
]

#: statuses of runs a rerun continues
RESUMABLE = ("interrupted", "failed")
PARTIAL = "partial"
#: BenchConfig keys that do not change what a run measures (left out of `resume_key`)
NOT_IN_KEY = ("out", "bench_root", "wandb", "progress", "published", "command", "resume")


class Interrupted(KeyboardInterrupt):
    """Raised by `interrupt_signals`'s handler; `signal` names the signal (e.g. "SIGTERM")."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal = name


@contextlib.contextmanager
def interrupt_signals(signals: tuple[str, ...] = ("SIGTERM", "SIGHUP")) -> Iterator[None]:
    """For the block's duration, `signals` raise `Interrupted` in the main thread (SIGINT raises
    KeyboardInterrupt already); the previous handlers come back afterwards. Elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(number: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(number).name)

    for name in signals:
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def _pid_started(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks after boot (Linux /proc), None elsewhere."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_identity() -> dict:
    """{pid, host, pid_started} of this process, recorded in run.json."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_started": _pid_started(pid)}


def _alive(info: dict) -> bool:
    """Whether the process recorded in `info` still runs; True when that cannot be told (another host)."""
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = info.get("pid_started")
    now = _pid_started(pid)
    return started is None or now is None or started == now


def _read(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None


def run_status(run_dir: str | Path) -> str | None:
    """The status of the bench run in `run_dir`: "complete", "running", "interrupted", "failed"
    (None without a readable run.json). A "running" run whose process is gone is "interrupted"."""
    info = _read(Path(run_dir))
    if info is None:
        return None
    status = info.get("status")
    if status == "running" and not _alive(info):
        return "interrupted"
    return status


def _checkpoint_id(path: str | None) -> Any:
    """A checkpoint's identity in the key: its resolved path, size and modification time."""
    if path is None:
        return None
    p = Path(path)
    try:
        stat = p.stat()
        return [str(p.resolve()), stat.st_size, stat.st_mtime_ns]
    except OSError:
        return [str(p), None, None]


def resume_key(config: Any, protocol: Any, selections: list, checkpoints: dict[str, str | None]) -> str:
    """sha256 (16 hex) of the settings that change what a run measures (module docstring);
    `checkpoints`: method -> the checkpoint it will be built from (None: none)."""
    settings = {k: v for k, v in vars(config).items() if k not in NOT_IN_KEY and k != "checkpoints"}
    blob = {
        "settings": settings,
        "protocol": protocol.to_dict() | {"store": str(Path(protocol.store).resolve())},
        "clips": [s.to_dict() for s in selections],
        "checkpoints": {name: _checkpoint_id(path) for name, path in checkpoints.items()},
    }
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def find_resumable(bench_root: str | Path, key: str) -> Path | None:
    """The latest run folder under `bench_root` with resume key `key`, when it is resumable."""
    latest: tuple[float, Path] | None = None
    root = Path(bench_root)
    if not root.is_dir():
        return None
    for path in root.glob("*/run.json"):
        info = _read(path.parent)
        if not info or info.get("resume_key") != key:
            continue
        when = float(info.get("started_epoch") or path.stat().st_mtime)
        if latest is None or when > latest[0]:
            latest = (when, path.parent)
    if latest is None or run_status(latest[1]) not in RESUMABLE:
        return None
    return latest[1]


def fingerprint(metric_info: dict, syncnet: dict | None, reference: dict | None) -> str:
    """sha256 (16 hex) of how the metrics were built (module docstring)."""
    blob = {"metrics": metric_info, "syncnet": (syncnet or {}).get("sha256") or (syncnet or {}).get("error"),
            "nlse": (reference or {}).get("mean")}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def scored_methods(run_dir: str | Path, methods: list[str]) -> list[str]:
    """The methods of `methods` (in that order) kept in `run_dir`'s partial/ folder."""
    folder = Path(run_dir) / PARTIAL
    return [m for m in methods if (folder / f"{_safe(m)}.json").is_file()]


def write_partial(run_dir: str | Path, result: dict, samples: dict[str, dict], print_: str) -> Path:
    """Keep one scored method: `result` (`MethodResult.to_dict()`), its sample frames
    {clip_id: {"audio": (S,) float32, "frames": {method: (T, H, W, 3) uint8}}} and the scoring
    fingerprint `print_`. Returns the .json path."""
    folder = Path(run_dir) / PARTIAL
    name = result["method"]
    arrays = {}
    clips = []
    for clip_id, sample in samples.items():
        frames = sample["frames"].get(name)
        if frames is None:
            continue
        clips.append(clip_id)
        arrays[f"frames_{len(clips) - 1}"] = frames
        arrays[f"audio_{len(clips) - 1}"] = np.asarray(sample["audio"], np.float32)
    atomic_write(folder / f"{_safe(name)}.npz", lambda tmp: np.savez(tmp, **arrays))
    return atomic_write_text(folder / f"{_safe(name)}.json", json.dumps(
        {"result": result, "sample_clips": clips, "fingerprint": print_,
         "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1, default=str) + "\n")


def read_partial(run_dir: str | Path, name: str, print_: str
                 ) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]] | None:
    """(result dict, {clip_id: (audio, frames)}) of a kept method, or None when it is not kept,
    unreadable, or was scored with other metrics (fingerprint differs from `print_`)."""
    folder = Path(run_dir) / PARTIAL
    try:
        kept = json.loads((folder / f"{_safe(name)}.json").read_text())
        if kept.get("fingerprint") != print_:
            return None
        with np.load(folder / f"{_safe(name)}.npz") as arrays:
            samples = {clip: (arrays[f"audio_{i}"], arrays[f"frames_{i}"])
                       for i, clip in enumerate(kept.get("sample_clips", []))}
    except (OSError, ValueError, KeyError):
        return None
    return kept["result"], samples
