"""Callbacks every staged run uses (see `talkinghead.training.runner`).

* `StageBudget`: ends the stage after ``max_steps`` training batches, or at the first epoch end
  after ``max_minutes`` of training in this invocation (a time stop leaves the stage unfinished:
  the next run resumes it). Setting ``trainer.should_stop`` on the stage's last batch also makes
  Lightning run validation there, so every stage ends with a validation.
* `Throughput`: ``train/batches_per_s`` and ``train/samples_per_s`` every ``log_every_n_steps``.
* `StageEndSamples`: the sample grid of the last batch at the end of the stage.
* `RecordBatches`: per-rank record of every batch and a digest of the final weights (tests).
* `ProgressLines`: plain progress lines, used instead of the TQDM bar when stdout is not a
  terminal (`talkinghead.progress`): ``[pdfgc motion] step 300/1000 (30%), 2.1 it/s, loss 0.41, eta 5 min``.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TextIO

import torch
from lightning.pytorch.callbacks import Callback

from talkinghead.progress import EVERY_PERCENT, EVERY_S, Ticker, format_duration, format_rate

__all__ = ["ProgressLines", "RecordBatches", "StageBudget", "StageEndSamples", "Throughput"]


class StageBudget(Callback):
    """Stop after `max_batches` training batches or (at an epoch end) after `minutes` of this run."""

    def __init__(self, max_batches: int, minutes: float | None, epoch_batches: int):
        self.max_batches = int(max_batches)
        self.minutes = minutes
        self.epoch_batches = int(epoch_batches)
        self._start: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    @property
    def elapsed_minutes(self) -> float:
        return (time.perf_counter() - self._start) / 60.0 if self._start is not None else 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.batches >= self.max_batches:
            trainer.should_stop = True
            return
        if self.minutes is None or (batch_idx + 1) % self.epoch_batches:
            return
        stop = trainer.strategy.reduce_boolean_decision(self.elapsed_minutes >= float(self.minutes), all=False)
        if stop:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("train/minutes", self.elapsed_minutes, on_step=False, on_epoch=True, sync_dist=False)


class Throughput(Callback):
    """Training batches and samples per second, logged every `every` batches."""

    def __init__(self, every: int):
        self.every = max(1, int(every))
        self._since: float | None = None
        self._batches = 0
        self._samples = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        first = next((v for v in batch.values() if hasattr(v, "shape")), None) if isinstance(batch, dict) else None
        self._batches += 1
        self._samples += int(first.shape[0]) if first is not None else 0
        if self._batches < self.every:
            return
        seconds = max(time.perf_counter() - self._since, 1e-9)
        pl_module.log_dict({"train/batches_per_s": self._batches / seconds,
                            "train/samples_per_s": self._samples / seconds}, on_step=True, sync_dist=False)
        self._since, self._batches, self._samples = time.perf_counter(), 0, 0


class StageEndSamples(Callback):
    """The last batch's sample grid at the end of the stage (`StagedModule.write_samples`)."""

    def on_train_end(self, trainer, pl_module) -> None:
        pl_module.write_samples()


class RecordBatches(Callback):
    """Debug record (DDP / resume tests): per rank, the (clip, frames) of every batch and a digest
    of the final parameters, written to `<folder>/rank<r>.json`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.batches: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        key = next(k for k in ("augmented", "frames", "lip") if k in batch)
        digests = [hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest()[:16] for x in batch[key]]
        index = {k: batch[k].tolist() for k in ("clip_index", "frame_index", "clip", "start") if k in batch}
        rng = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16]
        self.batches.append({"step": int(trainer.global_step), **index, "samples": digests, "torch_rng": rng})

    def on_train_end(self, trainer, pl_module) -> None:
        digest = hashlib.sha256()
        for name, p in sorted(pl_module.named_parameters()):
            digest.update(name.encode())
            digest.update(p.detach().cpu().float().numpy().tobytes())
        self.folder.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        (self.folder / f"rank{rank}.json").write_text(json.dumps({
            "rank": rank, "world_size": trainer.world_size, "global_step": int(trainer.global_step),
            "batches": self.batches, "params_sha256": digest.hexdigest()}))


class ProgressLines(Callback):
    """Training progress as plain lines (rank 0), one every `every_s` seconds or `every_percent` of
    `total` batches (`talkinghead.progress.Ticker`), plus one at the end of training. Rates and eta
    count the batches of this invocation (a resumed stage starts at its checkpoint's count); the
    values shown are the progress-bar metrics whose name holds "loss" (at most three)."""

    def __init__(self, label: str, total: int, every_s: float = EVERY_S, every_percent: float = EVERY_PERCENT,
                 stream: TextIO | None = None):
        self.label = label
        self.total = int(total)
        self.every_s, self.every_percent = every_s, every_percent
        self.stream = stream
        self._ticker: Ticker | None = None
        self._first = 0

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write(text + "\n")
        stream.flush()

    @staticmethod
    def _losses(trainer) -> str:
        items = []
        for key, value in (trainer.progress_bar_metrics or {}).items():
            if "loss" not in key:
                continue
            try:
                items.append(f"{key.removeprefix('train/')} {float(value):.3g}")
            except (TypeError, ValueError):
                continue
        return ", ".join(items[:3])

    def line(self, trainer, done: int) -> str:
        ran = done - self._first
        elapsed = self._ticker.elapsed
        text = (f"[{self.label}] step {done}/{self.total} ({100 * done / max(self.total, 1):.0f}%), "
                f"{format_rate(ran, elapsed, 'it')}")
        losses = self._losses(trainer)
        if losses:
            text += f", {losses}"
        if done < self.total and ran > 0:
            text += f", eta {format_duration(elapsed / ran * (self.total - done))}"
        return text

    def on_train_start(self, trainer, pl_module) -> None:
        self._first = int(getattr(pl_module, "batches", trainer.global_step))
        self._ticker = Ticker(self.total, self.every_s, self.every_percent)
        self._ticker.due(self._first)  # marks already passed by a resumed stage print nothing

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = int(getattr(pl_module, "batches", trainer.global_step))
        if trainer.is_global_zero and self._ticker is not None and self._ticker.due(done) and done < self.total:
            self._write(self.line(trainer, done))

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self._ticker is not None:
            self._write(self.line(trainer, int(getattr(pl_module, "batches", trainer.global_step)))
                        + f", {format_duration(self._ticker.elapsed)} this run")
