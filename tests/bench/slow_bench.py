"""`python -m talkinghead.bench.cli` with two test methods, for the interrupt / resume tests.

Both return the reference frame repeated (the static baseline) and append the clip id to
``$BENCH_CALLS/<method>.txt`` at every generate call; ``bench_slow_static`` first sleeps
``$BENCH_SLOW`` seconds per clip (default 0), so a test can interrupt it mid-way.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from talkinghead.bench.cli import main
from talkinghead.bench.methods import register_method


class Counted:
    def __init__(self, name: str, sleep: float) -> None:
        self.name = name
        self.sleep = sleep

    def generate(self, request):
        with open(Path(os.environ["BENCH_CALLS"]) / f"{self.name}.txt", "a") as f:
            f.write(f"{request.clip_id}\n")
        time.sleep(self.sleep)
        return request.reference.unsqueeze(0).repeat(request.num_frames, 1, 1, 1)


register_method("bench_counted_static")(lambda checkpoint, device: Counted("bench_counted_static", 0.0))
register_method("bench_slow_static")(
    lambda checkpoint, device: Counted("bench_slow_static", float(os.environ.get("BENCH_SLOW", "0"))))

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when the test runner ignores SIGINT
    raise SystemExit(main(sys.argv[1:]))
