"""Progress for terminals and for logs.

On a terminal (the output stream is a TTY) progress is a tqdm bar. Anywhere else (a log file,
a pipe, CI, ``nohup``) a bar would be one carriage-return line hundreds of KB long, so progress
is plain lines instead, without any carriage return::

    [pcavs synth] 12/50 clips (24%), 1.8 s/clip, eta 70 s

one when `every_s` seconds (default 30) have passed since the last one or the count crosses the
next `every_percent` (default 10) of the total, whichever comes first, and one at the end.
``TALKINGHEAD_PROGRESS=bar|lines|off`` forces a mode. `progress(iterable, desc, total)` is the
shared entry point (bench harness, NLSE reference, ...); `Ticker` is the timing rule, used by
the training runner's line callback (`talkinghead.training.callbacks.ProgressLines`) too.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

__all__ = ["Lines", "Ticker", "format_duration", "format_rate", "progress", "use_bar"]

ENV = "TALKINGHEAD_PROGRESS"
EVERY_S = 30.0
EVERY_PERCENT = 10.0


def use_bar(stream: TextIO | None = None) -> bool:
    """True for a tqdm bar (the stream is a TTY, or TALKINGHEAD_PROGRESS=bar), False for lines."""
    mode = os.environ.get(ENV, "").strip().lower()
    if mode in ("bar", "lines"):
        return mode == "bar"
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_off() -> bool:
    """TALKINGHEAD_PROGRESS=off: no progress at all."""
    return os.environ.get(ENV, "").strip().lower() == "off"


def format_duration(seconds: float) -> str:
    """"42 s", "5 min", "1.3 h"."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_rate(count: float, seconds: float, unit: str) -> str:
    """"1.8 s/clip" below one item per second, else "12.5 clip/s" ("2.1 it/s")."""
    if count <= 0 or seconds <= 0:
        return f"? {unit}/s"
    per_second = count / seconds
    return f"{1 / per_second:.1f} s/{unit}" if per_second < 1 else f"{per_second:.1f} {unit}/s"


class Ticker:
    """When to print the next line: after `every_s` seconds or each `every_percent` of `total`."""

    def __init__(self, total: int | None, every_s: float = EVERY_S, every_percent: float = EVERY_PERCENT):
        self.total = total if total else None
        self.every_s = float(every_s)
        self.step = max(1, math.ceil(self.total * every_percent / 100)) if self.total else None
        self.started = self.last = time.perf_counter()
        self.next_mark = self.step

    def due(self, done: int) -> bool:
        """Whether a line is due now that `done` items are done (resets the timer when it is)."""
        now = time.perf_counter()
        crossed = self.next_mark is not None and done >= self.next_mark
        if crossed or now - self.last >= self.every_s:
            self.last = now
            if crossed:
                while self.next_mark <= done:
                    self.next_mark += self.step
            return True
        return False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self, done: int) -> float:
        """Seconds left at the mean rate so far (inf when unknown)."""
        if not self.total or done <= 0:
            return math.inf
        return self.elapsed / done * max(0, self.total - done)


class Lines:
    """A tqdm-like progress that writes plain lines (module docstring): iterate it, or call
    `update(n)`; `close()` writes the final line."""

    def __init__(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None, unit: str = "it",
                 stream: TextIO | None = None, every_s: float = EVERY_S, every_percent: float = EVERY_PERCENT):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.stream = stream
        self.n = 0
        self.postfix = ""
        self.ticker = Ticker(total, every_s, every_percent)
        self.closed = False

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def line(self) -> str:
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        text = f"[{self.desc}] {count} {self.unit}s{percent}, {format_rate(self.n, self.ticker.elapsed, self.unit)}"
        if self.total and self.n < self.total:
            text += f", eta {format_duration(self.ticker.eta(self.n))}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def write(self, text: str) -> None:
        """A message line (as ``tqdm.write``)."""
        self._write(text)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.ticker.due(self.n) and not (self.total and self.n >= self.total):
            self._write(self.line())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.n:
            elapsed = self.ticker.elapsed
            count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
            self._write(f"[{self.desc}] {count} {self.unit}s in {format_duration(elapsed)} "
                        f"({format_rate(self.n, elapsed, self.unit)})" + (f", {self.postfix}" if self.postfix else ""))

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0


class _Silent:
    """No progress: iterates `iterable`; update / close / set_postfix_str do nothing."""

    def __init__(self, iterable: Iterable | None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def write(self, text: str) -> None:
        """Messages are still shown (as ``tqdm.write`` does with a disabled bar)."""
        print(text, file=sys.stderr, flush=True)


def progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None, unit: str = "it",
             disable: bool = False, stream: TextIO | None = None, leave: bool = False, **options: Any) -> Any:
    """A tqdm bar on a TTY, `Lines` elsewhere, nothing when `disable` (module docstring).

    options: `every_s` / `every_percent` for lines.
    """
    if disable or progress_off():
        return _Silent(iterable)
    stream = stream if stream is not None else sys.stderr
    if use_bar(stream):
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, file=stream, leave=leave)
    return Lines(iterable, desc, total, unit, stream, **options)
