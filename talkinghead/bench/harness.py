"""The benchmark harness: protocol clips -> every method -> every metric -> a run folder.

`run_benchmark(BenchConfig(...))` does, in order:

1. opens the protocol's clip store and selects its clips (`talkinghead.bench.protocol`);
2. builds every metric once (`talkinghead.metrics.build_metric`). A metric whose construction
   fails (`MissingWeightsError` for absent pretrained files, or any other error) is reported
   "n/a" with the reason in every column it would fill; in the cross-driven setting, metrics
   that need ground truth (`real`, `real_landmarks`) are n/a as well (see the protocol module);
3. for metrics that take a SyncNet (constructor parameter ``syncnet``, i.e. LSE-C / LSE-D /
   NLSE-C) resolves the SyncNet (`resolve_syncnet`): the dataset's *expert* SyncNet trained by
   `talkinghead.methods.syncnet` (trained first, with ``experiments/syncnet/synth.yaml``, when its
   checkpoint is missing) or, with ``syncnet="official"``, the official ``syncnet_v2`` weights.
   For metrics that take ``real_confidence`` (NLSE-C) it measures LSE-C of real clips of the
   store's train split (the methods' training data) with the same SyncNet, cached in
   ``<bench_root>/cache/nlse-real-<key>.json`` (key: sha256 of the SyncNet checkpoint's bytes
   and the clip ids);
4. for each method and each clip (progress: `talkinghead.progress`, bars or plain lines): loads the clip, builds the
   request, generates, checks the frames ((T, 3, H, W) float in [0, 1]) and updates every
   metric with exactly the inputs it lists in ``inputs``, plus those of ``optional_inputs`` the
   harness has (``real_landmarks``, ``pose_landmarks``, ``fake_landmarks``: see below). A clip that fails (loading,
   generation or one metric's update) is recorded with its file, stage and message, and the run
   goes on; a method that fails to build is recorded and skipped;
5. computes each metric per method and writes the run folder (`talkinghead.bench.report`).

Metric updates run in worker processes beside this one (``BenchConfig.workers``, default one per
core beyond the first, at most 3; `talkinghead.bench.parallel`): each metric is updated in one
process in clip order and errors are recorded in clip order, so ``workers=0`` (the sequential path)
gives the same results.json with the same ``threads``.

Pooled metrics with a real side (FID) get the statistics of the real frames of all selected
clips computed once, before the methods run (`_Runner.real_statistics`, cached under
``<bench_root>/cache/<metric>/``), so every method is compared with the same real distribution
and the real frames are not fed through Inception again for each method.

``real_landmarks`` for a metric that accepts them (LMD): by default the landmarks of the real
frames found by *the metric's own detector* (its ``landmarks(images)`` method), computed once per
clip and shared by every method. The clip store also holds landmarks, but they are detected on
the raw video and mapped into the aligned frame, which puts them about 1.5 px (at 224 px) from
what the same detector finds on the aligned frames (ground truth would score LMD 1.5, not 0);
``BenchConfig(store_landmarks=True)`` uses them anyway (faster, biased).

``pose_landmarks`` (LMD-pose, `talkinghead.metrics.pose_lmd`), the landmarks of the pose-source
frame shown at each t (`protocol.ClipData.pose_landmarks`: the clip's own frames, or another
clip's in a cross protocol whose sources include the pose), are obtained the same way: the
metric's own detector on the pose-source frames (detected before the method generates, so a
method cannot change them), or the store's landmarks of the pose-source clip with
``store_landmarks=True`` or for a metric without a ``landmarks(images)`` method. Detections are
cached per detector (backend, or the metric when it has a custom detector), clip and frame, so
a frame that is both a real frame and a pose-source frame (self-driven) is detected once, and a
pose-source frame repeated or used by several clips too. ``fake_landmarks``, the generated
frames' landmarks, are detected the same way once per method and clip and given to every
landmark metric that accepts them (LMD and LMD-pose), so no generated frame is detected twice.

Run folder (default ``runs/bench/<YYYYmmdd-HHMMSS>-<protocol>/``)::

    run.json        what was run: protocol, store, split, clips, methods + checkpoints, metrics
                    (+ why n/a), SyncNet, versions, command line, timings, the process (pid, host),
                    the resume key and status: running, complete, interrupted (Ctrl-C, SIGTERM:
                    with the stage reached and the methods scored) or failed (`resume.run_status`
                    also reports a run whose process died as interrupted)
    partial/<method>.json, .npz   each method's results and sample frames, kept as soon as it is
                    scored: rerunning the command of an interrupted run resumes it (`talkinghead.bench.resume`)
    results.json    per method: values, n/a reasons, clip counts, errors
    table.md        the results table (Table-1 style, published rows, footnotes)
    results.csv     the same numbers
    results.jsonl   one JSON line per method (also appended to <bench_root>/results.jsonl)
    plots/<column>.png     one bar chart per metric column
    samples/<clip>.mp4     side-by-side videos (columns = methods) with the clip's audio
    wandb/          W&B runs, one per method, offline without an API key (see `report.log_wandb`)
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from talkinghead.bench import protocol as protocols
from talkinghead.bench.methods import build_method, describe, method_spec
from talkinghead.bench.parallel import MetricWorkers, assign_metrics, available_cores, default_workers, thread_limits
from talkinghead.bench.protocol import GROUND_TRUTH_INPUTS, Protocol, Selection, get_protocol, load_clip
from talkinghead.fileio import atomic_write_text, sha256_file
from talkinghead.progress import progress as progress_bar

__all__ = [
    "BenchConfig",
    "BenchResult",
    "MethodResult",
    "StoreMissingError",
    "SyncNetChoice",
    "real_sync_confidence",
    "resolve_syncnet",
    "run_benchmark",
    "validate",
]

DEFAULT_SYNCNET_CONFIG = "experiments/syncnet/synth.yaml"
VALUE_RANGE_TOLERANCE = 1e-3
#: the clip inputs a metric may list (`talkinghead.metrics.base`)
CLIP_INPUTS = ("fake", "real", "audio", "reference", "real_landmarks", "pose_landmarks", "fake_landmarks",
               "driver_truth", "emotion_targets", "emotion_target")
#: clip inputs the harness detects with the metric's own detector (module docstring)
LANDMARK_INPUTS = ("real_landmarks", "pose_landmarks", "fake_landmarks")
#: the column a metric taking ``real_confidence`` adds (PD-FGC's normalised LSE-C)
NLSE_COLUMN = "NLSE-C"


class StoreMissingError(FileNotFoundError):
    """The protocol's clip store does not exist; the message says how to make it."""


@dataclass
class BenchConfig:
    """What to benchmark (every None takes the protocol's / metric registry's default).

    protocol:           protocol name (`talkinghead.bench.protocol.PROTOCOLS`).
    methods:            method names (`talkinghead.bench.methods`).
    checkpoints:        method -> checkpoint path (others use their default checkpoint).
    metrics:            metric names; None = every registered metric.
    metric_options:     metric -> extra constructor keyword arguments.
    store, num_clips, setting, split, seed: protocol overrides.
    out:                the run folder; None = <bench_root>/<timestamp>-<protocol>.
    bench_root:         parent of run folders; holds results.jsonl (all runs) and cache/.
    syncnet:            "expert" (the dataset's SyncNet expert; trained when missing) or
                        "official" (syncnet_v2 weights from `talkinghead.weights`).
    syncnet_checkpoint: an expert checkpoint to use instead of the default one.
    syncnet_config:     config used to train the expert when its checkpoint is missing.
    train_syncnet:      train the expert when missing (False: LSE is n/a instead).
    nlse_clips:         real train-split clips measured for NLSE-C's reference LSE-C.
    device:             torch device for methods and metrics.
    samples:            clips written as side-by-side sample videos (0: none).
    sample_frames:      longest sample video, in frames.
    control_matrix:     also measure each method's factor-control matrix (`talkinghead.bench.control`:
                        change one driver, see which estimated factors move) on the first
                        `control_clips` clips; written to control_matrix.md / .json / .png.
    store_landmarks:    give metrics the store's landmarks as ``real_landmarks`` / ``pose_landmarks``
                        instead of the metric's own detection on the real / pose-source frames
                        (module docstring).
    wandb:              log to Weights & Biases when wandb is installed (offline without an API key):
                        one W&B run per method (`talkinghead.bench.report.log_wandb`).
    wandb_project:      the W&B project, shared with training runs (whose ``logger.project`` has the
                        same default, "talkinghead"); ``$WANDB_PROJECT`` overrides both.
    progress:           progress: tqdm bars on a terminal, periodic plain lines in a log (`talkinghead.progress`).
    published:          YAML of published numbers (default benchmarks/published.yaml).
    resume:             continue the latest interrupted run with the same settings under bench_root
                        (or in `out`), reusing the methods it had scored (`talkinghead.bench.resume`).
    command:            the command line, recorded in run.json (default sys.argv).
    workers:            metric worker processes beside the harness (`talkinghead.bench.parallel`): each
                        metric is updated in one process, clip by clip in clip order, so the numbers are
                        those of ``workers=0`` (everything in this process, one clip after another: the
                        sequential path) with the same `threads` (torch's float results may depend on its
                        thread count). Default 0: on 2 cores the one-process path already keeps both
                        busy (torch threads, threaded face detection), and benchmarks/perf/bench.py
                        measured a loss with a worker (quiet machine, ground_truth + static, 4 clips x 2
                        repeats, every metric: 3.97 s/clip sequential vs 4.76 with 1 worker). None: one
                        per core beyond the first, at most 3 (for machines with more cores); 0 off the CPU.
    threads:            torch intra-op / BLAS / OpenCV threads of the harness process while a method runs;
                        None: with workers, the cores not taken by them (at least 1), without, unchanged
                        (torch's default). Workers always run single-threaded.
    """

    protocol: str = "synth"
    methods: list[str] = field(default_factory=lambda: ["ground_truth", "static"])
    checkpoints: dict[str, str] = field(default_factory=dict)
    metrics: list[str] | None = None
    metric_options: dict[str, dict] = field(default_factory=dict)
    store: str | None = None
    num_clips: int | None = None
    setting: str | None = None
    split: str | None = None
    seed: int | None = None
    out: str | None = None
    bench_root: str = "runs/bench"
    syncnet: str = "expert"
    syncnet_checkpoint: str | None = None
    syncnet_config: str = DEFAULT_SYNCNET_CONFIG
    train_syncnet: bool = True
    nlse_clips: int = 50
    device: str = "cpu"
    samples: int = 2
    sample_frames: int = 250
    store_landmarks: bool = False
    control_matrix: bool = False
    control_clips: int = 10
    wandb: bool = True
    wandb_project: str = "talkinghead"
    progress: bool = True
    published: str | None = None
    resume: bool = True
    command: list[str] | None = None
    workers: int | None = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.syncnet not in ("expert", "official"):
            raise ValueError(f"syncnet must be 'expert' or 'official', got {self.syncnet!r}")
        if not self.methods:
            raise ValueError("no method to benchmark")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"a method is listed twice: {self.methods}")
        unknown = sorted(set(self.checkpoints) - set(self.methods))
        if unknown:
            raise ValueError(f"checkpoint given for method(s) not benchmarked: {', '.join(unknown)}")


@dataclass
class MethodResult:
    """One row of the table.

    values:        column -> number (None where n/a).
    na:            column -> why it is n/a.
    clips_ok:      clips generated and scored; clips_failed: clips recorded in `errors`.
    metric_clips:  metric -> clips its update succeeded on.
    metric_seconds: metric -> seconds spent in its updates and compute (generation: "generate").
    errors:        {method, clip_id, file, stage, error} per failure (stage: build, load,
                   generate, output, metric:<name>, compute:<name>).
    """

    name: str
    info: dict
    values: dict[str, float | None] = field(default_factory=dict)
    na: dict[str, str] = field(default_factory=dict)
    clips_ok: int = 0
    clips_failed: int = 0
    metric_clips: dict[str, int] = field(default_factory=dict)
    metric_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    errors: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"method": self.name, **{k: v for k, v in self.__dict__.items() if k != "name"}}


@dataclass
class BenchResult:
    """Everything a run produced (what the report writes)."""

    run_dir: Path
    protocol: Protocol
    split: str
    selections: list[Selection]
    columns: dict[str, bool]
    column_metric: dict[str, str]
    methods: list[MethodResult]
    metric_info: dict[str, dict]
    syncnet: dict | None
    run_info: dict
    samples: dict[str, dict] = field(default_factory=dict)
    control: list = field(default_factory=list)  # `talkinghead.bench.control.ControlMatrix` per method

    @property
    def errors(self) -> list[dict]:
        return [e for m in self.methods for e in m.errors]


# ---------------------------------------------------------------------------------------------
# SyncNet
# ---------------------------------------------------------------------------------------------
@dataclass
class SyncNetChoice:
    """The SyncNet scoring LSE: model, how to name it in the table, and its checkpoint."""

    model: Any
    name: str
    kind: str
    checkpoint: Path
    sha256: str
    trained_now: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "checkpoint": str(self.checkpoint), "sha256": self.sha256,
                "trained_now": self.trained_now}


def _train_syncnet_expert(config_path: Path, store: Path, out_dir: Path, progress: bool = True) -> Path:
    """Train a SyncNet expert on `store` with the registered ``syncnet`` method, run by
    `talkinghead.training.runner.train` (imported only when an expert is missing) as
    ``make train METHOD=syncnet`` does; returns the expert file it writes into `out_dir`."""
    from talkinghead.methods.registry import get_method
    from talkinghead.metrics.syncnet_expert import EXPERT_FILE
    from talkinghead.training.runner import train

    overrides = [f"store={Path(store)}", f"out={Path(out_dir)}", f"trainer.progress={str(bool(progress)).lower()}"]
    sigint = signal.getsignal(signal.SIGINT)
    try:
        train(get_method("syncnet"), config_path, overrides)
    except SystemExit as error:
        # Lightning answers Ctrl-C / SIGTERM during fit with its shutdown, then sys.exit(1): the bench
        # run is interrupted (run.json says so; the training resumes from its checkpoint next time)
        if isinstance(error.__context__, KeyboardInterrupt):
            raise error.__context__ from None
        # Lightning's own SIGTERM handler runs first and flags the trainer; when the bench's handler
        # (`resume.interrupt_signals`) lands where its exception is lost, fit ends at the next batch
        # with SIGTERMException, a SystemExit of code None (exit 0): still an interrupt by SIGTERM
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from talkinghead.bench.resume import Interrupted

        if isinstance(error, SIGTERMException):
            raise Interrupted("SIGTERM") from None
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after an interrupt
    return Path(out_dir) / EXPERT_FILE


def _syncnet_api() -> Any:
    """What the harness needs to get a SyncNet expert: ``default_expert_path`` and ``load_expert``
    (`talkinghead.metrics.syncnet_expert`) and ``train_expert(config_path, store, out_dir,
    progress)`` (`_train_syncnet_expert`)."""
    from talkinghead.metrics.syncnet_expert import default_expert_path, load_expert

    return SimpleNamespace(default_expert_path=default_expert_path, load_expert=load_expert,
                           train_expert=_train_syncnet_expert)


def _sync_confidence(model: Any, frames: torch.Tensor, audio: torch.Tensor) -> float:
    """LSE-C of one real clip (`talkinghead.metrics.lse.sync_scores`)."""
    from talkinghead.metrics.lse import sync_scores

    scores = sync_scores(model, frames, audio)
    if isinstance(scores, dict):
        for key in ("LSE-C", "confidence", "conf", "lse_c"):
            if key in scores:
                scores = scores[key]
                break
        else:
            raise TypeError(f"sync_scores returned keys {sorted(scores)}; none is the confidence")
    elif isinstance(scores, (tuple, list)):
        scores = scores[0]
    elif hasattr(scores, "confidence"):
        scores = scores.confidence
    return float(torch.as_tensor(scores).float().mean())


def _model_to(model: Any, device: str) -> Any:
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    return model


def resolve_syncnet(config: BenchConfig, store: Any, log: Callable[[str], None] = print) -> SyncNetChoice:
    """The SyncNet for LSE (see the module docstring); raises when it cannot be had.

    ``official``: `talkinghead.weights.resolve("syncnet_v2")` (MissingWeightsError naming where to
    get it when absent), loaded by `talkinghead.metrics.syncnet_expert.load_official`.
    ``expert``: ``config.syncnet_checkpoint`` or ``default_expert_path(store)``; when that file is
    missing and ``config.train_syncnet``, prints a message and trains it with the SyncNet method
    (config ``config.syncnet_config``, store `store`, out: the checkpoint's folder).
    """
    from talkinghead.metrics.syncnet_expert import ASSET, OFFICIAL_NAME, TRAIN_COMMAND, load_official

    trained = False
    if config.syncnet == "official":
        from talkinghead import weights

        checkpoint = weights.resolve(ASSET)  # MissingWeightsError: where to get it, where to put it

        def loader(path: Path) -> tuple[Any, str]:
            return load_official(path), OFFICIAL_NAME
    else:
        api = _syncnet_api()
        root = Path(store.root) if hasattr(store, "root") else Path(store)
        checkpoint = (Path(config.syncnet_checkpoint) if config.syncnet_checkpoint
                      else Path(api.default_expert_path(root)))
        if not checkpoint.is_file():
            if config.syncnet_checkpoint:
                raise FileNotFoundError(f"SyncNet checkpoint not found: {checkpoint}")
            if not config.train_syncnet:
                raise FileNotFoundError(
                    f"no SyncNet expert for {root} at {checkpoint}; train it with `{TRAIN_COMMAND}` (config "
                    f"{config.syncnet_config}) or run the benchmark with --syncnet official")
            syncnet_config = Path(config.syncnet_config)
            if not syncnet_config.is_file():
                raise FileNotFoundError(f"SyncNet expert missing ({checkpoint}) and its training config "
                                        f"{syncnet_config} does not exist")
            log(f"SyncNet expert for {root} not found at {checkpoint}: training it first with {syncnet_config} "
                f"(LSE-C / LSE-D / NLSE-C need it; use --syncnet official for the published weights)")
            checkpoint = Path(api.train_expert(syncnet_config, root, checkpoint.parent, progress=config.progress))
            trained = True
            if not checkpoint.is_file():
                raise FileNotFoundError(f"SyncNet training finished but wrote no checkpoint at {checkpoint}")
        loader = api.load_expert
    loaded = loader(checkpoint)
    model, name = loaded if isinstance(loaded, tuple) else (loaded, f"SyncNet ({checkpoint.name})")
    model = _model_to(model, config.device)
    return SyncNetChoice(model, str(name), config.syncnet, checkpoint, sha256_file(checkpoint), trained)


def real_sync_confidence(
    store: Any, entries: list[dict], syncnet: SyncNetChoice, cache_dir: Path, progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Mean LSE-C of real clips `entries` (NLSE-C's reference), cached by SyncNet + clip ids.

    Returns {mean, clips, failed, key, cache, syncnet}; clips that cannot be scored (too short,
    unreadable) are skipped and listed in `failed`. Raises ValueError when none can be scored.
    """
    ids = [e["clip_id"] for e in entries]
    key = hashlib.sha256((syncnet.sha256 + "\n" + "\n".join(ids)).encode("utf-8")).hexdigest()[:16]
    path = Path(cache_dir) / f"nlse-real-{key}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("clip_ids") == ids and cached.get("syncnet_sha256") == syncnet.sha256:
                return {**cached, "cache": str(path), "cached": True}
        except (OSError, ValueError):
            pass  # unreadable cache: measure again and overwrite it
    per_clip: dict[str, float] = {}
    failed: dict[str, str] = {}
    for entry in progress_bar(entries, desc="NLSE-C reference (real train clips)", unit="clip",
                              disable=not progress):
        try:
            count = int(len(store.load(entry, ["frame_offsets"])["frame_offsets"]) - 1)
            frames = protocols.frames_tensor(store.load_frames(entry, range(count)))
            audio = torch.from_numpy(np.asarray(store.load(entry, ["audio"])["audio"], np.float32).copy())
            with torch.no_grad():
                per_clip[entry["clip_id"]] = _sync_confidence(syncnet.model, frames, audio)
        except Exception as error:  # noqa: BLE001 - one bad clip must not stop the measurement
            failed[entry["clip_id"]] = f"{type(error).__name__}: {error}"
    if not per_clip:
        raise ValueError(f"no real train clip could be scored by SyncNet for NLSE-C ({len(failed)} failed: "
                         f"{next(iter(failed.values()), 'no train clips')})")
    result = {"mean": float(np.mean(list(per_clip.values()))), "clip_ids": ids, "per_clip": per_clip,
              "failed": failed, "syncnet": syncnet.name, "syncnet_checkpoint": str(syncnet.checkpoint),
              "syncnet_sha256": syncnet.sha256, "key": key}
    atomic_write_text(path, json.dumps(result, indent=1))
    if failed:
        log(f"NLSE-C reference: {len(failed)} of {len(ids)} real clips could not be scored")
    return {**result, "cache": str(path), "cached": False}


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def _reason(error: BaseException) -> str:
    """One line: the exception's message with its lines joined."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _metric_registry() -> tuple[Callable[..., Any], Callable[[], list[str]], dict]:
    from talkinghead.metrics import METRICS, build_metric, metric_names

    return build_metric, metric_names, METRICS


def metric_list(config: BenchConfig) -> list[str]:
    """The metric names a run uses (every registered metric by default); KeyError on unknown names."""
    _, metric_names, registry = _metric_registry()
    available = metric_names()  # imports the built-in metric modules
    names = list(config.metrics) if config.metrics else available
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise KeyError(f"unknown metric(s) {', '.join(unknown)}; choose from: {', '.join(available)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a metric is listed twice: {names}")
    return names


def _init_parameters(cls: type) -> set[str]:
    try:
        return set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        return set()


def _describe_metric(metric: Any) -> str:
    """What a built metric calls itself (e.g. the embedding CSIM uses)."""
    for attr in ("description", "embedding_name", "embedding", "backbone_name", "backbone"):
        value = getattr(metric, attr, None)
        if isinstance(value, str) and value:
            return value
    doc = (type(metric).__doc__ or "").strip().splitlines()
    return doc[0] if doc else type(metric).__name__


@dataclass
class _Metric:
    name: str
    columns: dict[str, bool]
    inputs: tuple[str, ...]
    optional_inputs: tuple[str, ...] = ()
    instance: Any = None
    reason: str | None = None  # why n/a (then instance is None)
    description: str = ""
    uses_syncnet: bool = False
    column_na: dict[str, str] = field(default_factory=dict)  # columns n/a although the metric is built


def _detector_key(m: _Metric) -> tuple[str, str]:
    """Which detections metric `m` may share: those of its landmark backend, unless it was given
    a detector callable of its own (then only its own)."""
    backend = getattr(m.instance, "backend", None)
    if isinstance(backend, str) and getattr(m.instance, "detector", None) is None:
        return ("backend", backend)
    return ("metric", m.name)


@dataclass
class _ClipOutcome:
    """One clip of one method until it is accounted (in clip order, `_Runner.run_method`).

    failure:        (file, stage, error) when loading or generating failed, else None.
    outcomes:       metric -> (error message or None, seconds of input preparation + update).
    prepared:       metric -> seconds its inputs took here, while its worker updates it.
    update_seconds: metric -> seconds of its update here (the first clip's share out the metrics).
    """

    selection: Selection
    file: str | None = None
    failure: tuple[str | None, str, BaseException] | None = None
    outcomes: dict[str, tuple[str | None, float]] = field(default_factory=dict)
    prepared: dict[str, float] = field(default_factory=dict)
    update_seconds: dict[str, float] = field(default_factory=dict)

    def complete(self, live: list[_Metric]) -> bool:
        return self.failure is not None or all(m.name in self.outcomes for m in live)


class _Runner:
    def __init__(self, config: BenchConfig, log: Callable[[str], None]):
        self.config = config
        self.log = log
        # seconds per clip outside the metric updates and of each metric's update, measured on the
        # run's first scored clip (`run_method` shares the metrics out among workers by them)
        self._costs: tuple[float, dict[str, float]] | None = None
        # (detector key, clip_id) -> {frame index: (68, 2) float32 landmarks, NaN when no face}
        self._landmarks: dict[tuple[tuple[str, str], str], dict[int, np.ndarray]] = {}

    def detected_landmarks(self, m: _Metric, clip_id: str, frames: torch.Tensor, index: torch.Tensor
                           ) -> torch.Tensor:
        """Landmarks (T, 68, 2) float32 (NaN rows: no face) that `m`'s ``landmarks(images)`` finds on
        `frames` (T, 3, H, W) in [0, 1], frame t being frame ``index[t]`` of clip `clip_id`; each
        frame is detected once per detector (`_detector_key`) and cached."""
        from talkinghead.metrics.image import frames_to_uint8

        cache = self._landmarks.setdefault((_detector_key(m), clip_id), {})
        index = [int(i) for i in index]
        if len(index) != len(frames):
            raise ValueError(f"{clip_id}: {len(frames)} frames but {len(index)} frame indices")
        first: dict[int, int] = {}  # frame index -> first position t showing it, for the frames to detect
        for t, i in enumerate(index):
            if i not in cache:
                first.setdefault(i, t)
        if first:
            positions = torch.tensor(list(first.values()), dtype=torch.long)
            points, found = m.instance.landmarks(frames_to_uint8(frames[positions]))
            points = np.array(points, dtype=np.float32)
            if points.shape != (len(positions), 68, 2):
                raise ValueError(f"{m.name}.landmarks returned {points.shape}, expected ({len(positions)}, 68, 2)")
            points[~np.asarray(found, bool)] = np.nan
            cache.update(zip(first, points))
        return torch.from_numpy(np.stack([cache[i] for i in index]))

    def real_landmarks(self, m: _Metric, data: protocols.ClipData) -> torch.Tensor | None:
        """``real_landmarks`` for metric `m` on this clip (module docstring), cached per clip."""
        if data.real is None:
            return None
        if self.config.store_landmarks:
            return data.real_landmarks
        if not callable(getattr(m.instance, "landmarks", None)):
            return None  # the metric detects on `real` itself
        # cached by the clip's own frame numbers (a protocol's reference frames come first): the same
        # cache holds the pose-source landmarks of self-driven clips, indexed by frame number too
        first = data.selection.reference_frames
        return self.detected_landmarks(m, data.selection.clip_id, data.real, first + torch.arange(len(data.real)))

    def pose_landmarks(self, m: _Metric, data: protocols.ClipData) -> torch.Tensor:
        """``pose_landmarks`` for metric `m` on this clip (module docstring): its detector on the
        request's pose-source frames, or the store's landmarks of the pose source."""
        if data.pose_landmarks is None or data.pose_clip_id is None or data.pose_frame_index is None:
            raise ValueError(f"{data.selection.clip_id}: the loaded clip has no pose-source landmarks")
        if self.config.store_landmarks or not callable(getattr(m.instance, "landmarks", None)):
            return data.pose_landmarks
        frames = data.request.pose_source
        if frames is None:
            raise ValueError(f"{data.selection.clip_id}: the request has no pose_source frames")
        return self.detected_landmarks(m, data.pose_clip_id, frames, data.pose_frame_index)

    def fake_landmarks(self, m: _Metric, method: str, data: protocols.ClipData, fake: torch.Tensor
                       ) -> torch.Tensor | None:
        """``fake_landmarks`` for metric `m`: its detector on the generated frames, detected once
        per method and clip for every metric sharing the detector (LMD and LMD-pose)."""
        if not callable(getattr(m.instance, "landmarks", None)):
            return None  # the metric detects on `fake` itself
        return self.detected_landmarks(m, f"{method}:generated:{data.selection.clip_id}", fake,
                                       torch.arange(len(fake)))

    # -- setup ---------------------------------------------------------------------------------
    def open_store(self, protocol: Protocol) -> Any:
        from talkinghead.data.store import ClipStore

        root = Path(protocol.store)
        if not (root / "index.json").is_file():
            if protocol.name.startswith("synth"):
                layout = protocol.dataset
                how = (f"make it with `make data` (all SynthTalk layouts) or "
                       f"`talkinghead data --out data --layouts {layout}`"
                       + ("" if str(root) == f"data/store/synth-{layout}" else f", then pass --store {root}"))
            else:
                how = (f"preprocess the corpus first: `talkinghead preprocess --dataset {protocol.dataset} "
                       f"--root <corpus> --store {root}`")
            raise StoreMissingError(f"clip store for protocol {protocol.name!r} not found at {root} "
                                    f"(no index.json): {how}")
        return ClipStore(root)

    def build_metrics(self, protocol: Protocol, store: Any, selections: list[Selection] | None = None
                      ) -> tuple[list[_Metric], dict | None, dict | None]:
        """(metrics, syncnet info, NLSE reference info)."""
        build_metric, _, registry = _metric_registry()
        names = metric_list(self.config)
        metrics: list[_Metric] = []
        need_syncnet = []
        for name in names:
            cls = registry[name]
            params = _init_parameters(cls)
            item = _Metric(name, dict(cls.columns), tuple(cls.inputs), tuple(getattr(cls, "optional_inputs", ())),
                           uses_syncnet="syncnet" in params)
            if "real_confidence" in params:  # LSE adds NLSE-C when given the real clips' LSE-C
                item.columns.setdefault(NLSE_COLUMN, False)
            if not item.columns:
                raise ValueError(f"metric {name!r} declares no columns")
            missing_truth = [i for i in item.inputs if i in GROUND_TRUTH_INPUTS]
            unknown_inputs = [i for i in item.inputs if i not in CLIP_INPUTS]
            if unknown_inputs:
                item.reason = f"asks for input(s) the harness does not provide: {', '.join(unknown_inputs)}"
            elif missing_truth and not protocols.ground_truth_available(protocol.setting):
                item.reason = (f"needs ground truth ({', '.join(missing_truth)}), undefined in the "
                               f"{protocol.setting}-driven setting")
            elif item.uses_syncnet:
                need_syncnet.append(item)
            metrics.append(item)

        syncnet = reference = None
        choice: SyncNetChoice | None = None
        if need_syncnet:
            try:
                choice = resolve_syncnet(self.config, store, self.log)
                syncnet = choice.to_dict()
                self.log(f"LSE scored by {choice.name} ({choice.checkpoint})")
            except Exception as error:  # noqa: BLE001 - LSE becomes n/a, the rest still runs
                why = f"no SyncNet ({self.config.syncnet}): {_reason(error)}"
                self.log(f"LSE metrics n/a: {why}")
                syncnet = {"kind": self.config.syncnet, "error": why}
                for item in need_syncnet:
                    item.reason = why

        for item in metrics:
            if item.reason is not None:
                continue
            cls = registry[item.name]
            params = _init_parameters(cls)
            kwargs = dict(self.config.metric_options.get(item.name, {}))
            try:
                if "syncnet" in params:
                    kwargs["syncnet"] = choice.model
                    if "syncnet_name" in params:
                        kwargs["syncnet_name"] = choice.name
                    if "real_confidence" in params:
                        if reference is None:
                            reference = self.nlse_reference(protocol, store, choice)
                        kwargs["real_confidence"] = reference.get("mean")
                if "real_stats" in params and "real_stats" not in kwargs and selections:
                    stats = self.real_statistics(cls, kwargs, store, selections, protocol.reference_frames)
                    if stats is not None:
                        kwargs["real_stats"] = stats
                        item.description = "real statistics of the selected clips, computed once (cached)"
                item.instance = build_metric(item.name, **kwargs).to(self.config.device)
                item.description = item.description or _describe_metric(item.instance)
                built = dict(getattr(item.instance, "columns", None) or item.columns)
                for column in item.columns:
                    if column not in built:
                        why = (reference or {}).get("error") if column == NLSE_COLUMN else None
                        item.column_na[column] = why or f"{item.name} does not report {column} as configured"
                item.columns = {**item.columns, **built}
            except Exception as error:  # noqa: BLE001 - MissingWeightsError and any other failure: n/a
                item.reason = _reason(error)
                self.log(f"metric {item.name} n/a: {item.reason}")
        return metrics, syncnet, reference

    def real_statistics(self, cls: type, kwargs: dict, store: Any, selections: list[Selection],
                        first_frame: int = 0) -> Any:
        """Real-side statistics of a pooled metric (FID), computed once for every method.

        For a metric whose constructor takes ``real_stats`` and whose module offers
        ``store_real_statistics`` (`talkinghead.metrics.fid`): the statistics of the real frames of
        all selected clips (from `first_frame` on: a protocol's ``reference_frames`` are not scored),
        sampled as the metric samples them (its ``frames_per_clip``), cached in
        ``<bench_root>/cache/<metric>/`` by a hash of the clips and the feature extractor. None
        (each method then feeds the real frames again) when that is not possible.
        """
        compute = getattr(sys.modules.get(cls.__module__), "store_real_statistics", None)
        if compute is None:
            return None
        try:
            default = inspect.signature(cls.__init__).parameters.get("frames_per_clip")
            frames_per_clip = kwargs.get("frames_per_clip", None if default is None else default.default)
            options = {k: kwargs[k] for k in ("feature", "batch_size") if k in kwargs}
            if first_frame:
                options["first_frame"] = int(first_frame)
            return compute(store, [s.clip_id for s in selections], frames_per_clip=frames_per_clip,
                           folder=Path(self.config.bench_root) / "cache" / cls.metric_name,
                           device=self.config.device, **options)
        except Exception as error:  # noqa: BLE001 - fall back to real frames per method
            self.log(f"{cls.metric_name}: real statistics not precomputed ({_reason(error)}); "
                     "each method feeds the real frames instead")
            return None

    def nlse_reference(self, protocol: Protocol, store: Any, choice: SyncNetChoice) -> dict:
        if protocol.train_store and Path(protocol.train_store).resolve() != Path(store.root).resolve():
            from talkinghead.data.store import ClipStore

            if not (Path(protocol.train_store) / "index.json").is_file():
                why = (f"the methods' training store {protocol.train_store} (for the real clips' LSE-C) "
                       "is not there")
                self.log(f"NLSE-C n/a: {why}")
                return {"mean": None, "error": why, "store": protocol.train_store}
            store = ClipStore(protocol.train_store)
        entries = protocols.train_clips(store, protocol, self.config.nlse_clips)
        if not entries:
            why = f"no clip in {store.root}'s {protocol.train_split!r} split to measure real LSE-C on"
            self.log(f"NLSE-C n/a: {why}")
            return {"mean": None, "error": why}
        try:
            info = real_sync_confidence(store, entries, choice, Path(self.config.bench_root) / "cache",
                                        self.config.progress, self.log)
        except Exception as error:  # noqa: BLE001 - NLSE-C n/a, LSE-C / LSE-D still computed
            why = _reason(error)
            self.log(f"NLSE-C n/a: {why}")
            return {"mean": None, "error": why}
        self.log(f"NLSE-C reference: LSE-C of {len(info['per_clip'])} real {protocol.train_split} clips = "
                 f"{info['mean']:.3f} ({'cached' if info['cached'] else 'measured'}: {info['cache']})")
        return ({k: v for k, v in info.items() if k not in ("per_clip", "clip_ids")}
                | {"clips": len(info["per_clip"]), "store": str(store.root)})

    # -- one method ------------------------------------------------------------------------------
    def check_output(self, frames: Any, data: protocols.ClipData) -> torch.Tensor:
        """Validated generated frames on the metrics' device."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"generate() returned {type(frames).__name__}, expected a tensor")
        expected = (data.request.num_frames, 3, *data.request.size)
        if tuple(frames.shape) != expected:
            raise ValueError(f"generate() returned shape {tuple(frames.shape)}, expected {expected} (T, 3, H, W)")
        if not frames.is_floating_point():
            raise TypeError(f"generate() returned dtype {frames.dtype}, expected float in [0, 1]")
        frames = frames.detach().to(self.config.device, torch.float32)
        if not torch.isfinite(frames).all():
            raise ValueError("generate() returned non-finite values")
        low, high = float(frames.min()), float(frames.max())
        if low < -VALUE_RANGE_TOLERANCE or high > 1 + VALUE_RANGE_TOLERANCE:
            raise ValueError(f"generate() returned values in [{low:.3f}, {high:.3f}], expected [0, 1]")
        return frames.clamp(0, 1)  # out of place: the ground_truth baseline returns the request's tensor

    def run_method(self, name: str, store: Any, selections: list[Selection], metrics: list[_Metric],
                   sample_ids: set[str], samples: dict) -> MethodResult:
        config = self.config
        start = time.perf_counter()
        live = [m for m in metrics if m.instance is not None]
        result = MethodResult(name, {"name": name, "checkpoint": config.checkpoints.get(name)})
        for m in metrics:
            for column in m.columns:
                result.values[column] = None
                if m.reason is not None:
                    result.na[column] = m.reason
                elif column in m.column_na:
                    result.na[column] = m.column_na[column]

        def fail(clip: Selection | None, file: str | None, stage: str, error: BaseException | str) -> None:
            record = {"method": name, "clip_id": clip.clip_id if clip else None, "file": file, "stage": stage,
                      "error": error if isinstance(error, str) else _reason(error)}
            result.errors.append(record)
            where = f"{record['clip_id']} ({file}) failed at {stage}" if clip else f"{stage} failed"
            self.log(f"[{name}] {where}: {record['error']}")

        try:
            generator = build_method(name, config.checkpoints.get(name), config.device)
            result.info = describe(generator)
        except Exception as error:  # noqa: BLE001 - the other methods still run
            fail(None, config.checkpoints.get(name), "build", error)
            result.clips_failed = len(selections)
            for column in result.values:
                result.na.setdefault(column, f"method failed to build: {_reason(error)}")
            result.seconds = time.perf_counter() - start
            return result
        give_truth = bool(getattr(generator, "needs_ground_truth", False))

        for m in live:
            m.instance.reset()
            result.metric_clips[m.name] = 0
        workers = self.worker_count(len(selections), live)
        threads = config.threads if config.threads is not None else (
            max(1, available_cores() - workers) if workers else None)
        pool: MetricWorkers | None = None
        owners: dict[str, int] = {}  # metric -> its worker (absent: scored here)
        ledger: dict[int, _ClipOutcome] = {}  # clips not accounted yet, by position in `selections`
        accounted = 0

        def account(entry: _ClipOutcome) -> None:
            """Record one clip's outcome; called in clip order (the sequential run's order)."""
            if entry.failure is not None:
                fail(entry.selection, *entry.failure)
                result.clips_failed += 1
                return
            clip_ok = True
            for m in live:
                error, seconds = entry.outcomes[m.name]
                if error is not None:
                    fail(entry.selection, entry.file, f"metric:{m.name}", error)
                    clip_ok = False
                    continue
                result.metric_clips[m.name] += 1
                result.metric_seconds[m.name] = result.metric_seconds.get(m.name, 0.0) + seconds
            if clip_ok:
                result.clips_ok += 1
            else:
                result.clips_failed += 1

        def settle(block: bool) -> None:
            nonlocal accounted
            if pool is not None:
                for index, outcomes in pool.receive(block):
                    entry = ledger[index]
                    entry.outcomes.update({k: (error, entry.prepared.pop(k) + seconds)
                                           for k, (error, seconds) in outcomes.items()})
            while accounted in ledger and ledger[accounted].complete(live):
                account(ledger.pop(accounted))
                accounted += 1

        def start_workers() -> tuple[MetricWorkers | None, dict[str, int]]:
            shares = {k: n for k, n in assign_metrics(*self._costs, workers).items() if n}
            if not shares:
                return None, {}
            started = MetricWorkers(shares, {m.name: m.instance for m in live})
            self.log(f"[{name}] {len(started.numbers)} metric worker process(es), torch threads here "
                     f"{torch.get_num_threads()}: " + "; ".join(
                         f"worker {n}: {', '.join(k for k in shares if shares[k] == n)}" for n in started.numbers))
            return started, shares

        with thread_limits(threads):
            try:
                if workers and self._costs is not None and set(self._costs[1]) == {m.name for m in live}:
                    pool, owners = start_workers()  # shared out by an earlier method's first clip
                bar = progress_bar(selections, desc=f"{name} {config.protocol}", unit="clip", disable=not config.progress)
                for index, selection in enumerate(bar):
                    entry = ledger[index] = _ClipOutcome(selection)
                    tick = time.perf_counter()
                    prepared = self.prepare_clip(generator, give_truth, store, entry, live, result)
                    if prepared is not None:
                        data, fake, pose = prepared
                        remote = self.score_clip(name, data, fake, pose, live, owners, entry)
                        if remote:
                            entry.outcomes.update(pool.submit(index, remote))
                        if selection.clip_id in sample_ids:
                            clip = samples.setdefault(selection.clip_id,
                                                      {"audio": data.request.audio.numpy(), "frames": {}})
                            count = min(len(fake), config.sample_frames)
                            clip["frames"][name] = (fake[:count].permute(0, 2, 3, 1).mul(255).round().byte()
                                                    .cpu().numpy())
                        if pool is None and workers and len(selections) - index > 2:
                            # the run's first scored clip measured every metric here: share them out, fork
                            self._costs = (time.perf_counter() - tick - sum(entry.update_seconds.values()),
                                           dict(entry.update_seconds))
                            pool, owners = start_workers()
                    settle(block=False)
                bar.close()
                while len(ledger):
                    settle(block=True)

                remote_values = pool.compute([m.name for m in live if m.name in owners
                                              and result.metric_clips.get(m.name, 0)]) if pool else {}
            finally:
                if pool is not None:
                    pool.close()

            for m in live:
                if result.metric_clips.get(m.name, 0) == 0:
                    for column in m.columns:
                        result.na.setdefault(column, "no clip scored")
                    continue
                if m.name in remote_values:
                    values, error, seconds, nan_reasons = remote_values[m.name]
                else:
                    tick = time.perf_counter()
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", UserWarning)
                            values, error = m.instance.compute(), None
                    except Exception as caught:  # noqa: BLE001
                        values, error = None, _reason(caught)
                    seconds = time.perf_counter() - tick
                    nan_reasons = getattr(m.instance, "nan_reasons", None) or {}
                if error is not None:
                    fail(None, None, f"compute:{m.name}", error)
                    for column in m.columns:
                        result.na[column] = f"compute failed: {error}"
                    continue
                result.metric_seconds[m.name] = result.metric_seconds.get(m.name, 0.0) + seconds
                for column in m.columns:
                    if column in m.column_na:
                        continue
                    value = values.get(column) if isinstance(values, dict) else None
                    if value is None:
                        result.na[column] = f"{m.name} returned no {column}"
                        continue
                    number = float(torch.as_tensor(value).float().mean())
                    if np.isfinite(number):
                        result.values[column] = number
                        result.na.pop(column, None)
                    else:  # a metric may say why a column can be undefined (`nan_reasons`)
                        why = nan_reasons.get(column)
                        result.na[column] = why or f"{m.name} returned {number}"
        result.seconds = time.perf_counter() - start
        return result

    def worker_count(self, clips: int, live: list[_Metric]) -> int:
        """Metric worker processes for one method (`BenchConfig.workers`, `talkinghead.bench.parallel`):
        none off the CPU, for fewer than 3 clips or without metrics; at most one per metric."""
        config = self.config
        wanted = config.workers if config.workers is not None else default_workers(config.device)
        if wanted and torch.device(config.device).type != "cpu":
            self.log(f"workers={wanted} ignored on {config.device}: metric workers are forked, CPU only")
            return 0
        return max(0, min(int(wanted), len(live))) if clips >= 3 else 0

    def prepare_clip(self, generator: Any, give_truth: bool, store: Any, entry: _ClipOutcome, live: list[_Metric],
                     result: MethodResult) -> tuple[protocols.ClipData, torch.Tensor, dict] | None:
        """Load, detect the pose-source landmarks, generate and check one clip: (clip data, generated
        frames, metric -> pose landmarks or the error detecting them); None after recording the
        failure (file, stage, error) in `entry`."""
        selection = entry.selection
        try:
            data = load_clip(store, selection)
            entry.file = data.file
        except Exception as error:  # noqa: BLE001
            entry.failure = (str(store.path(selection.entry)) if hasattr(store, "path") else None, "load", error)
            return None
        data.request.ground_truth = data.real_frames if give_truth else None
        # before generation: a method that writes into its request cannot change them
        pose: dict[str, torch.Tensor | BaseException] = {}
        for m in live:
            if "pose_landmarks" in m.inputs or "pose_landmarks" in m.optional_inputs:
                try:
                    pose[m.name] = self.pose_landmarks(m, data)
                except Exception as error:  # noqa: BLE001 - recorded as this metric's failure
                    pose[m.name] = error
        stage = "generate"
        try:
            tick = time.perf_counter()
            with torch.no_grad():
                raw = generator.generate(data.request)
            result.metric_seconds["generate"] = result.metric_seconds.get("generate", 0.0) + time.perf_counter() - tick
            stage = "output"
            fake = self.check_output(raw, data)
        except Exception as error:  # noqa: BLE001
            entry.failure = (data.file, stage, error)
            return None
        return data, fake, pose

    def metric_args(self, m: _Metric, method: str, data: protocols.ClipData, fake: torch.Tensor, pose: dict) -> dict:
        """The keyword arguments of `m.update` for one clip: exactly its ``inputs`` and the
        ``optional_inputs`` the harness has (landmarks detected here, module docstring)."""
        device = self.config.device
        inputs = data.metric_inputs(fake)
        args = {k: inputs[k].to(device) for k in m.inputs if k not in LANDMARK_INPUTS}
        if "real_landmarks" in m.inputs or "real_landmarks" in m.optional_inputs:
            landmarks = self.real_landmarks(m, data)
            if landmarks is None and "real_landmarks" in m.inputs:
                landmarks = data.real_landmarks  # required and not detectable here: the store's
            if landmarks is not None:
                args["real_landmarks"] = landmarks.to(device)
        if m.name in pose:
            if isinstance(pose[m.name], BaseException):
                raise pose[m.name]
            args["pose_landmarks"] = pose[m.name].to(device)
        if "fake_landmarks" in m.optional_inputs:
            landmarks = self.fake_landmarks(m, method, data, fake)
            if landmarks is not None:
                args["fake_landmarks"] = landmarks.to(device)
        args.update({k: inputs[k].to(device) for k in m.optional_inputs
                     if k not in LANDMARK_INPUTS and inputs.get(k) is not None})
        return args

    def score_clip(self, method: str, data: protocols.ClipData, fake: torch.Tensor, pose: dict, live: list[_Metric],
                   owners: dict[str, int], entry: _ClipOutcome) -> list[tuple[str, dict]]:
        """Prepare every metric's inputs in metric order, update the metrics scored here (outcomes
        and update seconds into `entry`); returns [(metric, args)] of those owned by a worker."""
        remote = []
        for m in live:
            tick = time.perf_counter()
            try:
                args = self.metric_args(m, method, data, fake, pose)
                if m.name in owners:
                    entry.prepared[m.name] = time.perf_counter() - tick
                    remote.append((m.name, args))
                    continue
                updating = time.perf_counter()
                with torch.no_grad():
                    m.instance.update(**args)
                entry.update_seconds[m.name] = time.perf_counter() - updating
                entry.outcomes[m.name] = (None, time.perf_counter() - tick)
            except Exception as error:  # noqa: BLE001 - the other metrics and clips go on
                entry.update_seconds[m.name] = time.perf_counter() - tick
                entry.outcomes[m.name] = (_reason(error), 0.0)
        return remote


# ---------------------------------------------------------------------------------------------
# run.json helpers
# ---------------------------------------------------------------------------------------------
def _versions() -> dict:
    from importlib import metadata

    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("talkinghead", "torch", "torchmetrics", "lightning", "numpy", "opencv-python-headless", "av",
                    "dlib-bin", "wandb", "matplotlib"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    commit = _source_commit()
    if commit:
        found["source_commit"] = commit
    return found


def _source_commit() -> str | None:
    """The checked-out commit of the source tree, read from .git files (no git process)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        head = parent / ".git" / "HEAD"
        if head.is_file():
            try:
                text = head.read_text().strip()
                if not text.startswith("ref: "):
                    return text
                ref = text[5:]
                loose = parent / ".git" / ref
                if loose.is_file():
                    return loose.read_text().strip()
                packed = parent / ".git" / "packed-refs"
                if packed.is_file():
                    for line in packed.read_text().splitlines():
                        if line.endswith(" " + ref):
                            return line.split()[0]
            except OSError:
                return None
            return None
    return None


def _run_folder(config: BenchConfig, protocol: Protocol) -> Path:
    if config.out:
        return Path(config.out)
    base = Path(config.bench_root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{protocol.name}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _store_source(store: str | Path) -> dict:
    """{synthtalk, evidence}: whether the store is SynthTalk and why (`talkinghead.data.provenance`);
    the report leaves out a protocol's published rows for a SynthTalk store."""
    from talkinghead.data.provenance import synthtalk_evidence

    evidence = synthtalk_evidence(store)
    return {"synthtalk": evidence is not None, "evidence": evidence}


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------
def _method_checkpoints(config: BenchConfig) -> dict[str, str | None]:
    """method -> the checkpoint it will be built from: the given one (which must exist), else its
    default (`default_checkpoint`) when it needs one, else None. Raises FileNotFoundError for a
    given checkpoint that is not there."""
    from talkinghead.bench.methods import default_checkpoint

    found: dict[str, str | None] = {}
    for name in config.methods:
        given = config.checkpoints.get(name)
        if given is not None:
            if not Path(given).exists():
                raise FileNotFoundError(f"checkpoint for method {name!r} not found: {given}")
            found[name] = str(given)
            continue
        path = None
        if method_spec(name).needs_checkpoint:
            try:
                path = default_checkpoint(name)
            except Exception:  # noqa: BLE001 - the build step records why
                path = None
        found[name] = None if path is None else str(path)
    return found


def validate(config: BenchConfig) -> Protocol:
    """Check what a run names before any long work (store generation, SyncNet training): the
    protocol, the methods, the metrics and the given checkpoints' existence. Raises KeyError /
    ValueError (listing the choices) or FileNotFoundError; returns the protocol."""
    protocol = get_protocol(config.protocol, store=config.store, num_clips=config.num_clips,
                            setting=config.setting, split=config.split, seed=config.seed)
    for name in config.methods:
        method_spec(name)
    metric_list(config)
    _method_checkpoints(config)
    return protocol


def _choose_folder(config: BenchConfig, protocol: Protocol, key: str) -> tuple[Path, dict | None]:
    """(run folder, the run.json of the interrupted run it continues or None); raises
    FileExistsError for a folder holding a complete, running or differently-set run."""
    from talkinghead.bench import resume as resuming

    if config.out:
        run_dir = Path(config.out)
        if not (run_dir / "run.json").exists():
            return run_dir, None
        status = resuming.run_status(run_dir)
        previous = json.loads((run_dir / "run.json").read_text()) if status else None
        if config.resume and status in resuming.RESUMABLE:
            if previous.get("resume_key") == key:
                return run_dir, previous
            raise FileExistsError(f"{run_dir} holds an {status} benchmark run with other settings: rerun it with "
                                  "its own settings to resume it, or choose another --out")
        if status == "running":
            raise FileExistsError(f"{run_dir} already holds a benchmark run (run.json), still running (pid "
                                  f"{previous.get('pid')} on {previous.get('host')}); choose another --out")
        raise FileExistsError(f"{run_dir} already holds a benchmark run (run.json); choose another --out")
    if config.resume:
        found = resuming.find_resumable(config.bench_root, key)
        if found is not None:
            return found, json.loads((found / "run.json").read_text())
    return _run_folder(config, protocol), None


def run_benchmark(config: BenchConfig, log: Callable[[str], None] | None = None, report: bool = True) -> BenchResult:
    """Run the benchmark described by `config`; returns the results and writes the run folder.

    Setup problems (unknown protocol / method / metric names, a missing checkpoint or store, a run
    folder that already holds a run) raise before anything is written; per-clip, per-method and
    per-metric problems are recorded and the run completes. An interrupted run with the same
    settings (`talkinghead.bench.resume`) is continued unless ``config.resume`` is False: the
    methods it had scored are reused, the others scored, and the report is the one an
    uninterrupted run writes.
    """
    from talkinghead.bench import resume as resuming

    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    protocol = validate(config)  # unknown names and missing checkpoints fail here, before anything is done
    runner = _Runner(config, log)
    store = runner.open_store(protocol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        selections, split = protocols.select_clips(store, protocol)
    for warning in caught:
        log(str(warning.message))
    checkpoints = _method_checkpoints(config)
    key = resuming.resume_key(config, protocol, selections, checkpoints)

    run_dir, previous = _choose_folder(config, protocol, key)
    kept = resuming.scored_methods(run_dir, config.methods) if previous else []
    if previous:
        log(f"resuming {run_dir}: " + (f"{', '.join(kept)} already scored" if kept else "no method scored yet"))
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run_info: dict[str, Any] = {
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "started_epoch": started,
        **resuming.process_identity(),
        "resume_key": key,
        "command": list(config.command if config.command is not None else sys.argv),
        "cwd": os.getcwd(),
        "protocol": protocol.to_dict(),
        "dataset": protocol.dataset,
        "store": str(Path(protocol.store).resolve()),
        "store_source": _store_source(protocol.store),
        "split": split,
        "setting": protocol.setting,
        "clips": [s.to_dict() for s in selections],
        "methods": [{"name": n, "checkpoint": config.checkpoints.get(n)} for n in config.methods],
        "config": {k: v for k, v in config.__dict__.items() if k != "command"},
        "versions": _versions(),
    }
    if previous:
        run_info.update(started=previous.get("started", run_info["started"]),
                        started_epoch=previous.get("started_epoch", started),
                        resumed=[*previous.get("resumed", []),
                                 {"at": run_info["started"], "previous_status": resuming.run_status(run_dir),
                                  "reused": kept}])
    _write_json(run_dir / "run.json", run_info)
    stage = {"now": "metrics", "scored": list(kept) if previous else []}
    try:
        with resuming.interrupt_signals():
            return _run(config, log, report, protocol, runner, store, selections, split, run_dir, run_info,
                        started, previous, stage)
    except KeyboardInterrupt as error:
        run_info.update(status="interrupted", interrupted={
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "by": getattr(error, "signal", "SIGINT"),
            "stage": stage["now"], "scored": stage["scored"]})
        _write_json(run_dir / "run.json", run_info)
        log(f"interrupted ({run_info['interrupted']['by']}) during {stage['now']}; scored: "
            f"{', '.join(stage['scored']) or 'none'}. Run the same command again to resume {run_dir}")
        raise
    except BaseException as error:
        run_info.update(status="failed", error=_reason(error), failed={
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stage": stage["now"], "scored": stage["scored"]})
        _write_json(run_dir / "run.json", run_info)
        raise


def _run(config: BenchConfig, log: Callable[[str], None], report: bool, protocol: Protocol, runner: "_Runner",
         store: Any, selections: list[Selection], split: str, run_dir: Path, run_info: dict, started: float,
         previous: dict | None, stage: dict) -> BenchResult:
    """The run after its folder is chosen (`run_benchmark`); `stage` says how far it got."""
    from talkinghead.bench import resume as resuming

    metrics, syncnet, reference = runner.build_metrics(protocol, store, selections)
    columns: dict[str, bool] = {}
    column_metric: dict[str, str] = {}
    left_out: set[str] = set()
    for m in metrics:
        clash = [c for c in m.columns if c in columns]
        if clash:  # two metrics filling one column: the later one is left out, with the reason
            m.reason = f"column(s) {', '.join(clash)} already filled by {column_metric[clash[0]]}"
            m.instance = None
            left_out.add(m.name)
            log(f"metric {m.name} left out: {m.reason}")
            continue
        for column, higher in m.columns.items():
            columns[column] = higher
            column_metric[column] = m.name
    metric_info = {m.name: {"columns": m.columns, "inputs": list(m.inputs), "status": "ok" if m.reason is None else "n/a",
                            "reason": m.reason, "description": m.description,
                            "uses_syncnet": m.uses_syncnet} for m in metrics}
    run_info.update(metrics=metric_info, syncnet=syncnet, nlse_reference=reference)
    _write_json(run_dir / "run.json", run_info)
    scoring = resuming.fingerprint(metric_info, syncnet, reference)

    sample_ids = {s.clip_id for s in selections[: max(0, config.samples)]}
    samples: dict[str, dict] = {}
    results = []
    stage["now"] = "methods"
    for name in progress_bar(config.methods, desc=f"bench {protocol.name}", unit="method", disable=not config.progress):
        kept = resuming.read_partial(run_dir, name, scoring) if previous else None
        if kept is not None:
            data, kept_samples = kept
            values = {k: v for k, v in data.items() if k != "method"}
            results.append(MethodResult(name, **values))
            for clip_id, (audio, frames) in kept_samples.items():
                samples.setdefault(clip_id, {"audio": audio, "frames": {}})["frames"][name] = frames
            continue
        if previous and name in stage["scored"]:
            log(f"{name}: scored with other metrics before the interruption; scoring it again")
            stage["scored"].remove(name)
        results.append(runner.run_method(name, store, selections, [m for m in metrics if m.name not in left_out],
                                         sample_ids, samples))
        resuming.write_partial(run_dir, results[-1].to_dict(), samples, scoring)
        stage["scored"].append(name)
        log(f"{name}: {results[-1].clips_ok}/{len(selections)} clips scored in {results[-1].seconds:.1f} s")
    order = [s.clip_id for s in selections]  # the same order however the methods were scored
    samples = {clip_id: samples[clip_id] for clip_id in order if clip_id in samples}

    stage["now"] = "control matrix"
    control = []
    if config.control_matrix:
        from talkinghead.bench.control import control_clips, control_matrix

        try:
            shared = control_clips(store, selections, config.control_clips)
            names = list(config.methods)
        except Exception as error:  # noqa: BLE001 - the table is still written
            log(f"control matrix skipped: {_reason(error)}")
            names = []
        for name in names:
            tick = time.perf_counter()
            try:
                generator = build_method(name, config.checkpoints.get(name), config.device)
                control.append(control_matrix(generator, shared, log))
                log(f"{name}: control matrix over {control[-1].clips} clips in {time.perf_counter() - tick:.1f} s")
            except Exception as error:  # noqa: BLE001 - the table is still written
                log(f"{name}: control matrix failed: {_reason(error)}")
        run_info["control_matrix"] = [m.to_dict() for m in control]

    stage["now"] = "report"
    run_info.update(
        status="complete",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(time.time() - started, 2),
        methods=[dict(r.info, seconds=round(r.seconds, 2), clips_ok=r.clips_ok, clips_failed=r.clips_failed)
                 for r in results],
        errors=sum(len(r.errors) for r in results),
    )
    result = BenchResult(run_dir, protocol, split, selections, columns, column_metric, results, metric_info,
                         syncnet, run_info, samples, control)
    _write_json(run_dir / "results.json", {
        "protocol": protocol.name, "dataset": protocol.dataset, "split": split, "setting": protocol.setting,
        "columns": columns, "column_metric": column_metric, "metrics": metric_info, "syncnet": syncnet,
        "nlse_reference": reference, "methods": [r.to_dict() for r in results],
    })
    if report:
        from talkinghead.bench.report import write_report

        run_info["outputs"] = write_report(result, published=config.published, wandb_log=config.wandb, log=log,
                                           wandb_project=config.wandb_project)
    _write_json(run_dir / "run.json", run_info)
    return result
